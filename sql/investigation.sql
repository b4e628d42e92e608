-- Investigation functions (docs/investigation.md). All run with the caller's
-- rights, so row-level security scopes them; each takes a tenant and a
-- half-open period [from_time, to_time) on occurred_at. PL/pgSQL, so that
-- Citus can plan their queries too (docs/scale-out.md).
SET LOCAL check_function_bodies = off;

-- Accounts under attack: failures, distinct source IPs, first and last
-- attempt, locks in the period (decided in event-time order, see
-- lockout_replay), the locks the live engine enforced in the period (the
-- chain's account_locked events: history imported later can make the two
-- differ), and whether the account is locked now.
CREATE FUNCTION authaudit.targeted_accounts(tenant_id text, from_time timestamptz, to_time timestamptz)
RETURNS TABLE (user_id text, failures bigint, distinct_ips bigint, first_attempt timestamptz,
               last_attempt timestamptz, locks bigint, locked_now boolean, enforced_locks bigint)
LANGUAGE plpgsql STABLE
-- Each call is planned for its arguments, as a query with them written
-- in would be.
SET plan_cache_mode = force_custom_plan AS $$
#variable_conflict use_column
DECLARE
    v_users text[];
    v_locks bigint[];
    v_enforced bigint[];
BEGIN
    -- One replay for the call, in a statement of its own (on Citus the
    -- replay's reads are distributed queries, which may not run inside the
    -- shard query below).
    SELECT coalesce(array_agg(k.user_id), '{}'), coalesce(array_agg(k.n), '{}'),
           coalesce(array_agg(k.enforced), '{}')
      INTO v_users, v_locks, v_enforced
      FROM (SELECT r.user_id, count(*) FILTER (WHERE r.locked_account) AS n,
                   count(*) FILTER (WHERE r.enforced_lock_seq IS NOT NULL) AS enforced
              FROM authaudit.lockout_replay(targeted_accounts.tenant_id, targeted_accounts.from_time,
                                            targeted_accounts.to_time) r
             WHERE r.locked_account OR r.enforced_lock_seq IS NOT NULL
             GROUP BY r.user_id) k;
    RETURN QUERY
        WITH locks AS (SELECT * FROM unnest(v_users, v_locks, v_enforced) AS k(user_id, n, enforced))
        SELECT l.user_id,
               count(*),
               count(DISTINCT l.ip),
               min(l.occurred_at),
               max(l.occurred_at),
               coalesce((SELECT k.n FROM locks k WHERE k.user_id = l.user_id), 0),
               -- The state row is the account key's (docs/lockout.md).
               coalesce((SELECT s.locked AND (s.locked_until IS NULL OR s.locked_until > now())
                           FROM authaudit.lockout_state s
                          WHERE s.tenant_id = targeted_accounts.tenant_id
                            AND s.user_id = authaudit.account_key(targeted_accounts.tenant_id, l.user_id)),
                        false),
               coalesce((SELECT k.enforced FROM locks k WHERE k.user_id = l.user_id), 0)
          FROM authaudit.auth_log l
         WHERE l.tenant_id = targeted_accounts.tenant_id
           AND l.occurred_at >= targeted_accounts.from_time AND l.occurred_at < targeted_accounts.to_time
           AND l.event_type = 'login_failed'
         GROUP BY l.user_id
         ORDER BY 2 DESC, 1;
END;
$$;

-- Attack sources: failures per IP, distinct accounts tried (credential
-- stuffing shows as one IP across many accounts), first and last seen, and
-- successes from the same IP.
CREATE FUNCTION authaudit.attack_sources(tenant_id text, from_time timestamptz, to_time timestamptz)
RETURNS TABLE (ip inet, failures bigint, distinct_accounts bigint, first_seen timestamptz,
               last_seen timestamptz, successes bigint)
LANGUAGE plpgsql STABLE
-- Each call is planned for its arguments, as a query with them written
-- in would be.
SET plan_cache_mode = force_custom_plan AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
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
         ORDER BY 2 DESC, 1;
END;
$$;

-- Every lock and reset in the period, in event-time order: the locks the
-- engine decides over the tenant's events taken in (occurred_at, log_id)
-- order, whatever order they were recorded in (lockout_replay), and the
-- locks the live engine enforced (the chain's account_locked events). A
-- lock's seq, occurred_at and triggered_by are those of the failure that
-- locked. enforced: the lock was enforced live, or the reset was recorded
-- live (not imported); replayed: the event-time replay decides it. A row
-- where the two differ is one that imported history changed.
CREATE FUNCTION authaudit.lockout_timeline(tenant_id text, from_time timestamptz, to_time timestamptz)
RETURNS TABLE (seq bigint, occurred_at timestamptz, user_id text, event_type text, rule text,
               failures integer, locked_until timestamptz, permanent boolean, triggered_by uuid,
               enforced boolean, replayed boolean)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    r record;
    v_lock jsonb;   -- the metadata of the account_locked event enforced live
    v_reset jsonb;  -- the metadata of a lockout_reset
BEGIN
    -- The replay is its own statement and each row it names is read by key
    -- (on Citus the replay's reads are distributed queries, which may not
    -- run inside a shard query).
    FOR r IN
        SELECT q.* FROM authaudit.lockout_replay(lockout_timeline.tenant_id, lockout_timeline.from_time,
                                                 lockout_timeline.to_time) q
         WHERE q.locked_account OR q.enforced_lock_seq IS NOT NULL OR q.event_type = 'lockout_reset'
         ORDER BY q.decision
    LOOP
        v_lock := NULL;
        v_reset := NULL;
        IF r.enforced_lock_seq IS NOT NULL THEN
            SELECT l.metadata INTO v_lock FROM authaudit.auth_log l
             WHERE l.tenant_id = lockout_timeline.tenant_id AND l.seq = r.enforced_lock_seq;
        END IF;
        IF r.event_type = 'lockout_reset' THEN
            SELECT l.metadata INTO v_reset FROM authaudit.auth_log l
             WHERE l.tenant_id = lockout_timeline.tenant_id AND l.log_id = r.log_id;
        END IF;
        seq := r.seq;
        occurred_at := r.occurred_at;
        user_id := r.user_id;
        event_type := CASE WHEN r.event_type = 'lockout_reset' THEN 'lockout_reset' ELSE 'account_locked' END;
        rule := CASE WHEN r.locked_account THEN r.lock_rule
                     WHEN r.event_type = 'lockout_reset' THEN v_reset ->> 'reason'
                     ELSE v_lock ->> 'reason' END;
        failures := CASE WHEN r.locked_account THEN r.failures_in_window
                         WHEN r.event_type <> 'lockout_reset' THEN (v_lock ->> 'failures')::integer END;
        locked_until := CASE WHEN r.locked_account THEN r.locked_until
                             WHEN r.event_type <> 'lockout_reset' THEN (v_lock ->> 'locked_until')::timestamptz END;
        permanent := CASE WHEN r.locked_account THEN r.permanent
                          WHEN r.event_type <> 'lockout_reset' THEN (v_lock ->> 'permanent')::boolean END;
        triggered_by := CASE WHEN r.event_type <> 'lockout_reset' THEN r.log_id END;
        enforced := CASE WHEN r.event_type = 'lockout_reset'
                         THEN (v_reset #>> '{_authaudit,imported}') IS NULL
                         ELSE r.enforced_lock_seq IS NOT NULL END;
        replayed := r.event_type = 'lockout_reset' OR r.locked_account;
        RETURN NEXT;
    END LOOP;
END;
$$;

-- Successful logins that followed at least min_failures failures of the same
-- account since its last success or reset, or happened while it was locked,
-- with the IPs those failures came from; decided in event-time order.
CREATE FUNCTION authaudit.successes_after_failures(tenant_id text, from_time timestamptz,
                                                   to_time timestamptz, min_failures integer DEFAULT 1)
RETURNS TABLE (seq bigint, occurred_at timestamptz, user_id text, ip inet, preceding_failures integer,
               while_locked boolean, failing_ips inet[])
LANGUAGE plpgsql STABLE
-- Each call is planned for its arguments, as a query with them written
-- in would be.
SET plan_cache_mode = force_custom_plan AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
        SELECT r.seq, r.occurred_at, r.user_id, r.ip, r.preceding_failures, r.was_locked,
               nullif(r.failing_ips, '{}')
          FROM authaudit.lockout_replay(successes_after_failures.tenant_id,
                                        successes_after_failures.from_time,
                                        successes_after_failures.to_time) r
         WHERE r.event_type = 'login_success'
           AND (r.preceding_failures >= successes_after_failures.min_failures OR r.was_locked)
         ORDER BY r.decision;
END;
$$;

-- A tenant's period in numbers, for compliance reports: events by type and
-- channel. Pair it with authaudit.verify_chain(tenant_id) for integrity.
CREATE FUNCTION authaudit.compliance_summary(tenant_id text, from_time timestamptz, to_time timestamptz)
RETURNS TABLE (event_type text, channel text, events bigint, accounts bigint, first_event timestamptz,
               last_event timestamptz)
LANGUAGE plpgsql STABLE
-- Each call is planned for its arguments, as a query with them written
-- in would be.
SET plan_cache_mode = force_custom_plan AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
        SELECT l.event_type, l.channel, count(*), count(DISTINCT l.user_id),
               min(l.occurred_at), max(l.occurred_at)
          FROM authaudit.auth_log l
         WHERE l.tenant_id = compliance_summary.tenant_id
           AND l.occurred_at >= compliance_summary.from_time AND l.occurred_at < compliance_summary.to_time
         GROUP BY l.event_type, l.channel
         ORDER BY 1, 2;
END;
$$;

SET LOCAL check_function_bodies = on;
