-- Investigation functions (docs/investigation.md). All run with the caller's
-- rights, so row-level security scopes them; each takes a tenant and a
-- half-open period [from_time, to_time) on occurred_at.
SET LOCAL check_function_bodies = off;

-- Accounts under attack: failures, distinct source IPs, first and last
-- attempt, locks in the period, and whether the account is locked now.
CREATE FUNCTION authaudit.targeted_accounts(tenant_id text, from_time timestamptz, to_time timestamptz)
RETURNS TABLE (user_id text, failures bigint, distinct_ips bigint, first_attempt timestamptz,
               last_attempt timestamptz, locks bigint, locked_now boolean)
LANGUAGE sql STABLE AS $$
    SELECT l.user_id,
           count(*) FILTER (WHERE l.event_type = 'login_failed'),
           count(DISTINCT l.ip) FILTER (WHERE l.event_type = 'login_failed'),
           min(l.occurred_at) FILTER (WHERE l.event_type = 'login_failed'),
           max(l.occurred_at) FILTER (WHERE l.event_type = 'login_failed'),
           count(*) FILTER (WHERE l.event_type = 'account_locked'),
           -- The state row is the account key's: the engine records the key
           -- with a failure whose user_id differs from it.
           coalesce((SELECT s.locked AND (s.locked_until IS NULL OR s.locked_until > now())
                       FROM authaudit.lockout_state s
                      WHERE s.tenant_id = targeted_accounts.tenant_id
                        AND s.user_id = coalesce(max(l.metadata #>> '{_authaudit,lockout,account_key}'),
                                                 l.user_id)), false)
      FROM authaudit.auth_log l
     WHERE l.tenant_id = targeted_accounts.tenant_id
       AND l.occurred_at >= targeted_accounts.from_time AND l.occurred_at < targeted_accounts.to_time
       AND l.event_type IN ('login_failed', 'account_locked')
     GROUP BY l.user_id
    HAVING count(*) FILTER (WHERE l.event_type = 'login_failed') > 0
     ORDER BY 2 DESC, 1
$$;

-- Attack sources: failures per IP, distinct accounts tried (credential
-- stuffing shows as one IP across many accounts), first and last seen, and
-- successes from the same IP.
CREATE FUNCTION authaudit.attack_sources(tenant_id text, from_time timestamptz, to_time timestamptz)
RETURNS TABLE (ip inet, failures bigint, distinct_accounts bigint, first_seen timestamptz,
               last_seen timestamptz, successes bigint)
LANGUAGE sql STABLE AS $$
    SELECT l.ip,
           count(*) FILTER (WHERE l.event_type = 'login_failed'),
           count(DISTINCT l.user_id) FILTER (WHERE l.event_type = 'login_failed'),
           min(l.occurred_at), max(l.occurred_at),
           count(*) FILTER (WHERE l.event_type = 'login_success')
      FROM authaudit.auth_log l
     WHERE l.tenant_id = attack_sources.tenant_id
       AND l.occurred_at >= attack_sources.from_time AND l.occurred_at < attack_sources.to_time
       AND l.ip IS NOT NULL
       AND l.event_type IN ('login_failed', 'login_success')
     GROUP BY l.ip
    HAVING count(*) FILTER (WHERE l.event_type = 'login_failed') > 0
     ORDER BY 2 DESC, 1
$$;

-- Every lock and reset, in chain order, with why and until when.
CREATE FUNCTION authaudit.lockout_timeline(tenant_id text, from_time timestamptz, to_time timestamptz)
RETURNS TABLE (seq bigint, occurred_at timestamptz, user_id text, event_type text, rule text,
               failures integer, locked_until timestamptz, permanent boolean, triggered_by uuid)
LANGUAGE sql STABLE AS $$
    SELECT l.seq, l.occurred_at, l.user_id, l.event_type,
           l.metadata ->> 'reason',
           (l.metadata ->> 'failures')::integer,
           (l.metadata ->> 'locked_until')::timestamptz,
           (l.metadata ->> 'permanent')::boolean,
           (l.metadata ->> 'triggered_by')::uuid
      FROM authaudit.auth_log l
     WHERE l.tenant_id = lockout_timeline.tenant_id
       AND l.occurred_at >= lockout_timeline.from_time AND l.occurred_at < lockout_timeline.to_time
       AND l.event_type IN ('account_locked', 'lockout_reset')
     ORDER BY l.seq
$$;

-- Successful logins that followed at least min_failures failures of the same
-- account, or happened while it was locked, with the IPs that failed.
CREATE FUNCTION authaudit.successes_after_failures(tenant_id text, from_time timestamptz,
                                                   to_time timestamptz, min_failures integer DEFAULT 1)
RETURNS TABLE (seq bigint, occurred_at timestamptz, user_id text, ip inet, preceding_failures integer,
               while_locked boolean, failing_ips inet[])
LANGUAGE sql STABLE AS $$
    SELECT l.seq, l.occurred_at, l.user_id, l.ip,
           coalesce((l.metadata #>> '{_authaudit,lockout,preceding_failures}')::integer, 0),
           coalesce((l.metadata #>> '{_authaudit,lockout,was_locked}')::boolean, false),
           (SELECT array_agg(DISTINCT f.ip ORDER BY f.ip)
              FROM authaudit.auth_log f
             WHERE f.tenant_id = l.tenant_id AND f.user_id = l.user_id
               AND f.event_type = 'login_failed' AND f.ip IS NOT NULL
               AND f.occurred_at <= l.occurred_at
               AND f.occurred_at > l.occurred_at - interval '1 day'
               AND f.seq < l.seq)
      FROM authaudit.auth_log l
     WHERE l.tenant_id = successes_after_failures.tenant_id
       AND l.occurred_at >= successes_after_failures.from_time
       AND l.occurred_at < successes_after_failures.to_time
       AND l.event_type = 'login_success'
       AND (coalesce((l.metadata #>> '{_authaudit,lockout,preceding_failures}')::integer, 0)
                >= successes_after_failures.min_failures
            OR coalesce((l.metadata #>> '{_authaudit,lockout,was_locked}')::boolean, false))
     ORDER BY l.seq
$$;

-- A tenant's period in numbers, for compliance reports: events by type and
-- channel. Pair it with authaudit.verify_chain(tenant_id) for integrity.
CREATE FUNCTION authaudit.compliance_summary(tenant_id text, from_time timestamptz, to_time timestamptz)
RETURNS TABLE (event_type text, channel text, events bigint, accounts bigint, first_event timestamptz,
               last_event timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT l.event_type, l.channel, count(*), count(DISTINCT l.user_id),
           min(l.occurred_at), max(l.occurred_at)
      FROM authaudit.auth_log l
     WHERE l.tenant_id = compliance_summary.tenant_id
       AND l.occurred_at >= compliance_summary.from_time AND l.occurred_at < compliance_summary.to_time
     GROUP BY l.event_type, l.channel
     ORDER BY 1, 2
$$;

SET LOCAL check_function_bodies = on;
