-- pg_authaudit 0.2.0 -> 0.3.0 (docs/installation.md, "Upgrading").
--
-- Recording speed (docs/architecture.md, "Recording"): the recording
-- pipeline (_record, record_event) becomes one Rust function each,
-- record_events records its batch set-wise through _record_events, the
-- lockout engine writes each state row once per event and caches policies
-- per backend (a trigger on lockout_policy tells every backend to re-read).
-- Tables, rows and chains are unchanged.

\echo Use "ALTER EXTENSION pg_authaudit UPDATE TO '0.3.0'" to load this file. \quit

-- The engine's statements are part of the recording pipeline now.
DROP FUNCTION authaudit._lockout_apply(text, text, text, text, timestamptz, uuid, text, text);

-- Same signatures, grants and comments: replaced in place.
CREATE OR REPLACE FUNCTION "_record"(
	"log_id" uuid,
	"tenant_id" TEXT,
	"event_type" TEXT,
	"user_id" TEXT,
	"channel" TEXT,
	"org_id" TEXT,
	"ip" inet,
	"user_agent" TEXT,
	"occurred_at" timestamp with time zone,
	"metadata" jsonb,
	"p_writer_org" TEXT
) RETURNS auth_log
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'record_internal_wrapper';

CREATE OR REPLACE FUNCTION "record_event"(
	"log_id" uuid,
	"tenant_id" TEXT,
	"event_type" TEXT,
	"user_id" TEXT,
	"channel" TEXT,
	"org_id" TEXT DEFAULT NULL,
	"ip" inet DEFAULT NULL,
	"user_agent" TEXT DEFAULT NULL,
	"occurred_at" timestamp with time zone DEFAULT NULL,
	"metadata" jsonb DEFAULT '{}'
) RETURNS auth_log
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'record_event_wrapper';

CREATE  FUNCTION "_record_events"(
	"events" jsonb
) RETURNS uuid[]
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'record_events_wrapper';
REVOKE EXECUTE ON FUNCTION authaudit._record_events(jsonb) FROM PUBLIC;

CREATE OR REPLACE FUNCTION authaudit.record_events(events jsonb)
RETURNS SETOF authaudit.auth_log
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ids uuid[] := authaudit._record_events(events);
BEGIN
    -- A statement of its own: it sees the rows the call above inserted.
    RETURN QUERY
        SELECT l.* FROM unnest(v_ids) WITH ORDINALITY AS u(id, ord)
          JOIN authaudit.auth_log l ON l.log_id = u.id
         ORDER BY u.ord;
END;
$$;

CREATE FUNCTION "_policy_changed"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', '_policy_changed_wrapper';
-- The recording path caches policies per backend: a change is re-read.
CREATE TRIGGER lockout_policy_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON authaudit.lockout_policy
    FOR EACH STATEMENT EXECUTE FUNCTION authaudit._policy_changed();
