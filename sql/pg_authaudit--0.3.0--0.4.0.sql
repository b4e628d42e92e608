-- pg_authaudit 0.3.0 -> 0.4.0 (docs/installation.md, "Upgrading").
--
-- Account and source keys (docs/lockout.md, "Account and source keys"):
-- lockouts count against a key of the user_id (by default Unicode NFKC,
-- case folding, default-ignorable characters removed, dashes as '-', white
-- space trimmed) and of the source IP (an IPv4-mapped IPv6 address as its
-- IPv4 address, IPv6 grouped by a prefix, /64 by default). The lockout
-- policy gets the two settings, and the state rows are re-keyed: rows of
-- spellings that now share a key are merged into the most restrictive one
-- (locked before unlocked, permanent before temporary, the later lock end,
-- more locks, more failures). The log and its chains are unchanged.

\echo Use "ALTER EXTENSION pg_authaudit UPDATE TO '0.4.0'" to load this file. \quit

ALTER TABLE authaudit.lockout_policy
    ADD COLUMN account_key_folding text NOT NULL DEFAULT 'canonical'
        CHECK (account_key_folding IN ('canonical', 'exact')),
    ADD COLUMN ipv6_prefix smallint NOT NULL DEFAULT 64
        CHECK (ipv6_prefix BETWEEN 32 AND 128);

CREATE FUNCTION "account_key"(
	"tenant_id" TEXT,
	"user_id" TEXT
) RETURNS TEXT
STRICT STABLE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'account_key_sql_wrapper';

CREATE FUNCTION "source_key"(
	"tenant_id" TEXT,
	"ip" inet
) RETURNS inet
STRICT STABLE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'source_key_sql_wrapper';

COMMENT ON FUNCTION authaudit.account_key(text, text) IS
    'The key the tenant''s lockouts count a user_id against (docs/lockout.md).';
COMMENT ON FUNCTION authaudit.source_key(text, inet) IS
    'The key the tenant''s per-IP lockout rules count a source address against (docs/lockout.md).';

-- A spelling's lock is its key's state row.
CREATE OR REPLACE FUNCTION authaudit.targeted_accounts(tenant_id text, from_time timestamptz, to_time timestamptz)
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

-- Accounts: one row per key, the most restrictive kept, then renamed.
WITH keyed AS (
    SELECT s.ctid AS row_id,
           row_number() OVER (
               PARTITION BY s.tenant_id, authaudit.account_key(s.tenant_id, s.user_id)
               ORDER BY s.locked DESC, (s.locked AND s.locked_until IS NULL) DESC,
                        s.locked_until DESC NULLS LAST, s.lock_count DESC, s.failure_count DESC,
                        s.last_failure_at DESC NULLS LAST, s.user_id) AS rank
      FROM authaudit.lockout_state s)
DELETE FROM authaudit.lockout_state s USING keyed
 WHERE s.ctid = keyed.row_id AND keyed.rank > 1;
UPDATE authaudit.lockout_state
   SET user_id = authaudit.account_key(tenant_id, user_id)
 WHERE user_id <> authaudit.account_key(tenant_id, user_id);

-- Sources: one row per key, the longest block kept.
WITH keyed AS (
    SELECT s.ctid AS row_id,
           row_number() OVER (
               PARTITION BY s.tenant_id, authaudit.source_key(s.tenant_id, s.ip)
               ORDER BY s.blocked_until DESC NULLS LAST, s.failure_count DESC, s.ip) AS rank
      FROM authaudit.lockout_ip_state s)
DELETE FROM authaudit.lockout_ip_state s USING keyed
 WHERE s.ctid = keyed.row_id AND keyed.rank > 1;
UPDATE authaudit.lockout_ip_state
   SET ip = authaudit.source_key(tenant_id, ip)
 WHERE ip IS DISTINCT FROM authaudit.source_key(tenant_id, ip);

-- (Source, account) pairs: the same, by both keys.
WITH keyed AS (
    SELECT s.ctid AS row_id,
           row_number() OVER (
               PARTITION BY s.tenant_id, authaudit.source_key(s.tenant_id, s.ip),
                            authaudit.account_key(s.tenant_id, s.user_id)
               ORDER BY s.blocked_until DESC NULLS LAST, s.failure_count DESC, s.ip, s.user_id) AS rank
      FROM authaudit.lockout_ip_account_state s)
DELETE FROM authaudit.lockout_ip_account_state s USING keyed
 WHERE s.ctid = keyed.row_id AND keyed.rank > 1;
UPDATE authaudit.lockout_ip_account_state
   SET ip = authaudit.source_key(tenant_id, ip),
       user_id = authaudit.account_key(tenant_id, user_id)
 WHERE user_id <> authaudit.account_key(tenant_id, user_id)
    OR ip IS DISTINCT FROM authaudit.source_key(tenant_id, ip);
