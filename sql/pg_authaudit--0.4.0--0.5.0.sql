-- pg_authaudit 0.4.0 -> 0.5.0 (docs/installation.md, "Upgrading").
--
-- Event time (docs/lockout.md, "Event time"): live recording refuses events
-- older than authaudit.max_past_skew; history is recorded with
-- import_events, and rebuild_lockout re-derives a tenant's lockout tables
-- from its events in event-time order. The investigation functions report
-- the engine's decisions in event-time order (lockout_replay), whatever
-- order the events were recorded in. A success reports the failures since
-- the account's last success or reset (lockout_state.failures_since_success).
-- event_rates counts by minute of occurred_at, with the recording lag and
-- the imported events; CEF lines of imported events carry their import
-- time (deviceCustomDate1, label importedAt). The log and its chains are
-- unchanged.

\echo Use "ALTER EXTENSION pg_authaudit UPDATE TO '0.5.0'" to load this file. \quit

-- The run counter starts from each account's failures in its current
-- window: what 0.4.0 reported as preceding_failures.
ALTER TABLE authaudit.lockout_state
    ADD COLUMN failures_since_success integer NOT NULL DEFAULT 0;
UPDATE authaudit.lockout_state SET failures_since_success = failure_count;

CREATE FUNCTION "_import_events"(
	"events" jsonb /* Option < Jsonb > */
) RETURNS uuid[] /* Result < Vec < Uuid > , pgrx :: pg_sys :: panic :: ErrorReport > */
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'import_events_wrapper';

CREATE FUNCTION "_rebuild_after_import"(
	"tenants" TEXT[] /* Vec < String > */
) RETURNS bigint /* Result < i64, ErrorReport > */
STRICT VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'rebuild_after_import_wrapper';

CREATE FUNCTION "lockout_replay"(
	"tenant_id" TEXT, /* & str */
	"from_time" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"to_time" timestamp with time zone DEFAULT NULL /* Option < TimestampWithTimeZone > */
) RETURNS TABLE (
	"decision" bigint,  /* i64 */
	"seq" bigint,  /* i64 */
	"log_id" uuid,  /* Uuid */
	"occurred_at" timestamp with time zone,  /* TimestampWithTimeZone */
	"event_type" TEXT,  /* String */
	"user_id" TEXT,  /* String */
	"org_id" TEXT,  /* Option < String > */
	"ip" inet,  /* Option < Inet > */
	"account_key" TEXT,  /* String */
	"failures_in_window" INT,  /* Option < i32 > */
	"while_locked" bool,  /* bool */
	"locked_account" bool,  /* bool */
	"lock_rule" TEXT,  /* Option < String > */
	"lock_count" INT,  /* Option < i32 > */
	"locked_until" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"permanent" bool,  /* Option < bool > */
	"ip_blocked_until" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"ip_account_blocked_until" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"preceding_failures" INT,  /* Option < i32 > */
	"was_locked" bool,  /* Option < bool > */
	"failing_ips" inet[]  /* :: std :: option :: Option < Vec < Inet > > */
)
STABLE SECURITY DEFINER PARALLEL RESTRICTED
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'lockout_replay_wrapper';

CREATE FUNCTION "rebuild_lockout"(
	"tenant_id" TEXT /* & str */
) RETURNS TABLE (
	"events" bigint,  /* i64 */
	"accounts" bigint,  /* i64 */
	"sources" bigint,  /* i64 */
	"pairs" bigint  /* i64 */
)
STRICT VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'rebuild_lockout_wrapper';

-- History: events older than authaudit.max_past_skew (rotated log files, a
-- SIEM's archive, another system's log). Recorded and chained like live
-- events, marked metadata._authaudit.imported, with no live lockout effect;
-- then, unless rebuild => false, every tenant of the batch has its lockout
-- state re-derived in event-time order (authaudit.rebuild_lockout). The Rust
-- half is authaudit._import_events (pg_authaudit/src/record_batch.rs).
CREATE FUNCTION authaudit.import_events(events jsonb, rebuild boolean DEFAULT true)
RETURNS SETOF authaudit.auth_log
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ids uuid[] := authaudit._import_events(events);
BEGIN
    IF rebuild THEN
        PERFORM authaudit._rebuild_after_import(
            ARRAY(SELECT DISTINCT l.tenant_id FROM authaudit.auth_log l WHERE l.log_id = ANY (v_ids)));
    END IF;
    RETURN QUERY
        SELECT l.* FROM unnest(v_ids) WITH ORDINALITY AS u(id, ord)
          JOIN authaudit.auth_log l ON l.log_id = u.id
         ORDER BY u.ord;
END;
$$;

REVOKE EXECUTE ON FUNCTION authaudit._import_events(jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION authaudit._rebuild_after_import(text[]) FROM PUBLIC;

COMMENT ON FUNCTION authaudit.import_events(jsonb, boolean) IS
    'Records historical events (any past occurred_at) without live lockout effects, then re-derives the lockout state in event-time order.';
COMMENT ON FUNCTION authaudit.rebuild_lockout(text) IS
    'Re-derives a tenant''s lockout tables from its events in event-time order (docs/lockout.md, "Event time").';
COMMENT ON FUNCTION authaudit.lockout_replay(text, timestamptz, timestamptz) IS
    'The lockout engine''s decision for each event of a tenant, in event-time order whatever the arrival order.';

-- Accounts under attack: failures, distinct source IPs, first and last
-- attempt, locks in the period (decided in event-time order, see
-- lockout_replay), and whether the account is locked now.
CREATE OR REPLACE FUNCTION authaudit.targeted_accounts(tenant_id text, from_time timestamptz, to_time timestamptz)
RETURNS TABLE (user_id text, failures bigint, distinct_ips bigint, first_attempt timestamptz,
               last_attempt timestamptz, locks bigint, locked_now boolean)
LANGUAGE sql STABLE AS $$
    -- MATERIALIZED: one replay for the call, not one per account.
    WITH locks AS MATERIALIZED (
        SELECT r.user_id, count(*) AS n
          FROM authaudit.lockout_replay(targeted_accounts.tenant_id, targeted_accounts.from_time,
                                        targeted_accounts.to_time) r
         WHERE r.locked_account
         GROUP BY r.user_id)
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
                    false)
      FROM authaudit.auth_log l
     WHERE l.tenant_id = targeted_accounts.tenant_id
       AND l.occurred_at >= targeted_accounts.from_time AND l.occurred_at < targeted_accounts.to_time
       AND l.event_type = 'login_failed'
     GROUP BY l.user_id
     ORDER BY 2 DESC, 1
$$;

-- Every lock and reset in the period, in event-time order: the locks the
-- engine decides over the tenant's events taken in (occurred_at, log_id)
-- order, whatever order they were recorded in (lockout_replay). A lock's
-- seq, occurred_at and triggered_by are those of the failure that locked.
CREATE OR REPLACE FUNCTION authaudit.lockout_timeline(tenant_id text, from_time timestamptz, to_time timestamptz)
RETURNS TABLE (seq bigint, occurred_at timestamptz, user_id text, event_type text, rule text,
               failures integer, locked_until timestamptz, permanent boolean, triggered_by uuid)
LANGUAGE sql STABLE AS $$
    SELECT r.seq, r.occurred_at, r.user_id,
           CASE WHEN r.locked_account THEN 'account_locked' ELSE 'lockout_reset' END,
           CASE WHEN r.locked_account THEN r.lock_rule
                ELSE (SELECT l.metadata ->> 'reason' FROM authaudit.auth_log l WHERE l.log_id = r.log_id) END,
           CASE WHEN r.locked_account THEN r.failures_in_window END,
           CASE WHEN r.locked_account THEN r.locked_until END,
           CASE WHEN r.locked_account THEN r.permanent END,
           CASE WHEN r.locked_account THEN r.log_id END
      FROM authaudit.lockout_replay(lockout_timeline.tenant_id, lockout_timeline.from_time,
                                    lockout_timeline.to_time) r
     WHERE r.locked_account OR r.event_type = 'lockout_reset'
     ORDER BY r.decision
$$;

-- Successful logins that followed at least min_failures failures of the same
-- account since its last success or reset, or happened while it was locked,
-- with the IPs those failures came from; decided in event-time order.
CREATE OR REPLACE FUNCTION authaudit.successes_after_failures(tenant_id text, from_time timestamptz,
                                                   to_time timestamptz, min_failures integer DEFAULT 1)
RETURNS TABLE (seq bigint, occurred_at timestamptz, user_id text, ip inet, preceding_failures integer,
               while_locked boolean, failing_ips inet[])
LANGUAGE sql STABLE AS $$
    SELECT r.seq, r.occurred_at, r.user_id, r.ip, r.preceding_failures, r.was_locked,
           nullif(r.failing_ips, '{}')
      FROM authaudit.lockout_replay(successes_after_failures.tenant_id,
                                    successes_after_failures.from_time,
                                    successes_after_failures.to_time) r
     WHERE r.event_type = 'login_success'
       AND (r.preceding_failures >= successes_after_failures.min_failures OR r.was_locked)
     ORDER BY r.decision
$$;

-- History and event-time state (docs/lockout.md, "Event time").
REVOKE EXECUTE ON FUNCTION
    authaudit.import_events(jsonb, boolean),
    authaudit.rebuild_lockout(text),
    authaudit.lockout_replay(text, timestamptz, timestamptz)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION authaudit.import_events(jsonb, boolean) TO authaudit_writer;
GRANT EXECUTE ON FUNCTION authaudit.rebuild_lockout(text) TO authaudit_writer, authaudit_admin;
GRANT EXECUTE ON FUNCTION authaudit.lockout_replay(text, timestamptz, timestamptz)
    TO authaudit_reader, authaudit_auditor;

-- CEF: the line function takes the import time; 0.4.0's _cef_line goes.
CREATE FUNCTION "_cef_event_line"(
	"event_type" TEXT, /* & str */
	"user_id" TEXT, /* & str */
	"ip" TEXT, /* Option < & str > */
	"user_agent" TEXT, /* Option < & str > */
	"occurred_at" timestamp with time zone, /* TimestampWithTimeZone */
	"log_id" uuid, /* Uuid */
	"tenant_id" TEXT, /* & str */
	"org_id" TEXT, /* Option < & str > */
	"channel" TEXT, /* & str */
	"seq" bigint, /* i64 */
	"link_sha256" bytea, /* & [u8] */
	"reason" TEXT, /* Option < & str > */
	"preceding_failures" INT, /* Option < i32 > */
	"was_locked" bool, /* Option < bool > */
	"token_fingerprint" TEXT, /* Option < & str > */
	"imported_at" timestamp with time zone /* Option < TimestampWithTimeZone > */
) RETURNS TEXT /* String */
IMMUTABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'cef_event_line_wrapper';

-- One CEF version 0 line for a stored row.
CREATE OR REPLACE FUNCTION authaudit.to_cef(r authaudit.auth_log) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT authaudit._cef_event_line(
        r.event_type, r.user_id, r.ip::text, r.user_agent, r.occurred_at, r.log_id,
        r.tenant_id, r.org_id, r.channel, r.seq, r.link_sha256,
        r.metadata ->> 'reason',
        (r.metadata #>> '{_authaudit,lockout,preceding_failures}')::integer,
        (r.metadata #>> '{_authaudit,lockout,was_locked}')::boolean,
        r.metadata #>> '{_authaudit,token,fingerprint_sha256}',
        CASE WHEN r.metadata #>> '{_authaudit,imported}' = 'true' THEN r.recorded_at END)
$$;

DROP FUNCTION authaudit._cef_line(text, text, text, text, timestamptz, uuid, text, text, text, bigint,
                                  bytea, text, integer, boolean, text);

CREATE OR REPLACE VIEW authaudit.event_rates WITH (security_invoker = true) AS
SELECT r.tenant_id, r.minute, r.event_type, r.events,
       sum(r.events) FILTER (WHERE r.event_type = 'login_failed')
           OVER (PARTITION BY r.tenant_id, r.minute) AS minute_failures,
       round(coalesce(sum(r.events) FILTER (WHERE r.event_type = 'login_failed')
                          OVER (PARTITION BY r.tenant_id, r.minute), 0)
             / nullif(sum(r.events) FILTER (WHERE r.event_type IN ('login_failed', 'login_success'))
                          OVER (PARTITION BY r.tenant_id, r.minute), 0), 3) AS failure_ratio,
       r.max_recording_lag, r.imported
  FROM (SELECT l.tenant_id, date_trunc('minute', l.occurred_at) AS minute, l.event_type,
               count(*) AS events,
               max(l.recorded_at - l.occurred_at) AS max_recording_lag,
               count(*) FILTER (WHERE l.metadata #>> '{_authaudit,imported}' = 'true') AS imported
          FROM authaudit.auth_log l
         -- Minutes of event time. An event is recorded at most
         -- authaudit.max_future_skew (at most a day) before it happens, so
         -- the BRIN index on recorded_at bounds the pages to read.
         WHERE l.occurred_at >= date_trunc('minute', now()) - interval '59 minutes'
           AND l.recorded_at >= date_trunc('minute', now()) - interval '59 minutes' - interval '1 day'
         GROUP BY 1, 2, 3) r;

COMMENT ON VIEW authaudit.event_rates IS
    'Events per tenant, minute of occurred_at and type over the last hour, with the tenant-minute login failure ratio, the largest recording lag and the imported events (RLS applies).';
