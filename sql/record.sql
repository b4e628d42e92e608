-- pg_authaudit recording functions: the only write path into the auth log.
-- Reference: docs/sql-reference.md; errors: docs/errors.md.

-- Who is asking and what it may do (authaudit._authorise_event,
-- authaudit._writes_tenant, authaudit._writer_role) is answered in Rust
-- from the cached bindings: pg_authaudit/src/scope.rs.

-- The recording pipeline is Rust (pg_authaudit/src/record.rs):
-- authaudit._record, for the extension's own functions, which authorise
-- first (not executable by PUBLIC, so no writer can call it or reach it with
-- facts of its own), and authaudit.record_event, the writers' entry point.
REVOKE EXECUTE ON FUNCTION authaudit._record(uuid, text, text, text, text, text, inet, text, timestamptz, jsonb, text) FROM PUBLIC;

COMMENT ON FUNCTION authaudit.record_event(uuid, text, text, text, text, text, inet, text, timestamptz, jsonb) IS
    'Records one authentication event (idempotent on log_id) and returns the stored row.';

-- authaudit.record_events records a JSON array of events in one call and
-- one transaction, returning the stored rows in input order. Either every
-- event is recorded or none. The whole batch is checked and authorised
-- before anything is locked or written; at most authaudit.max_batch_events
-- events (54000 beyond). It is Rust (pg_authaudit/src/record_batch.rs),
-- SECURITY DEFINER like record_event. authaudit._record_events is the same
-- pipeline returning only the log ids.
REVOKE EXECUTE ON FUNCTION authaudit._record_events(jsonb) FROM PUBLIC;

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
    v_ids uuid[];
BEGIN
    -- The tenants' lockout state is held before the batch is chained
    -- (authaudit._hold_for_rebuild: taken after it, live recorders that
    -- appended meanwhile and the rebuild would wait for each other).
    IF rebuild THEN
        PERFORM authaudit._hold_for_rebuild(
            ARRAY(SELECT DISTINCT e ->> 'tenant_id'
                    FROM jsonb_array_elements(CASE jsonb_typeof(events) WHEN 'array' THEN events
                                              ELSE '[]' END) AS e
                   WHERE e ->> 'tenant_id' IS NOT NULL));
    END IF;
    v_ids := authaudit._import_events(events);
    IF rebuild THEN
        PERFORM authaudit._rebuild_after_import(
            ARRAY(SELECT DISTINCT e ->> 'tenant_id' FROM jsonb_array_elements(events) AS e));
    END IF;
    RETURN QUERY
        SELECT l.* FROM unnest(v_ids) WITH ORDINALITY AS u(id, ord)
          JOIN authaudit.auth_log l
            ON l.tenant_id = (events -> (u.ord::integer - 1)) ->> 'tenant_id' AND l.log_id = u.id
         ORDER BY u.ord;
END;
$$;

REVOKE EXECUTE ON FUNCTION authaudit._import_events(jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION authaudit._rebuild_after_import(text[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION authaudit._hold_for_rebuild(text[]) FROM PUBLIC;

COMMENT ON FUNCTION authaudit.import_events(jsonb, boolean) IS
    'Records historical events (any past occurred_at) without live lockout effects, then re-derives the lockout state in event-time order.';
COMMENT ON FUNCTION authaudit.rebuild_lockout(text) IS
    'Re-derives a tenant''s lockout tables from its events in event-time order (docs/lockout.md, "Event time").';
COMMENT ON FUNCTION authaudit.lockout_replay(text, timestamptz, timestamptz) IS
    'The lockout engine''s decision for each event of a tenant, in event-time order whatever the arrival order.';

COMMENT ON FUNCTION authaudit.account_key(text, text) IS
    'The key the tenant''s lockouts count a user_id against (docs/lockout.md).';
COMMENT ON FUNCTION authaudit.source_key(text, inet) IS
    'The key the tenant''s per-IP lockout rules count a source address against (docs/lockout.md).';

COMMENT ON FUNCTION authaudit.channels() IS
    'The channels events may carry: the built-in ones and those of authaudit.extra_channels (docs/configuration.md).';

COMMENT ON FUNCTION authaudit.record_events(jsonb) IS
    'Records a JSON array of events in one transaction; returns the stored rows in input order.';

-- The chain steps are internal: called on their own they would move a chain
-- without a row.
REVOKE EXECUTE ON FUNCTION authaudit._chain_append(text, bytea) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION authaudit._chain_unappend(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION authaudit._chain_settled_head(text) FROM PUBLIC;

-- Whether a login may be attempted now (docs/lockout.md): for the
-- application to call before verifying credentials.
CREATE FUNCTION authaudit.check_login(tenant_id text, user_id text, ip inet DEFAULT NULL)
RETURNS TABLE (allowed boolean, reason text, retry_after timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT authaudit._writes_tenant(check_login.tenant_id) THEN
        RAISE EXCEPTION 'pg_authaudit: role % may not check logins for tenant %',
            authaudit._writer_role(), check_login.tenant_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN QUERY SELECT c.allowed, c.reason, c.retry_after
                   FROM authaudit._check_login(check_login.tenant_id, check_login.user_id,
                                               host(check_login.ip)) c;
END;
$$;

-- Policy values are checked by the same rules as the engine applies.
CREATE FUNCTION authaudit._lockout_policy_valid() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM authaudit._lockout_policy_check(
        NEW.enabled, NEW.max_failures,
        (extract(epoch FROM NEW.failure_window) * 1000000)::bigint,
        (extract(epoch FROM NEW.lock_duration) * 1000000)::bigint,
        NEW.lock_increment,
        (extract(epoch FROM NEW.max_lock_duration) * 1000000)::bigint,
        NEW.permanent_after_locks,
        (extract(epoch FROM NEW.quick_failure_interval) * 1000000)::bigint,
        NEW.ip_max_failures,
        (extract(epoch FROM NEW.ip_block_duration) * 1000000)::bigint,
        NEW.ip_account_max_failures);
    -- A restore (pg_restore) inserts the rows as they were: only an UPDATE
    -- stamps the time.
    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER lockout_policy_valid BEFORE INSERT OR UPDATE ON authaudit.lockout_policy
    FOR EACH ROW EXECUTE FUNCTION authaudit._lockout_policy_valid();
-- The recording path caches policies per backend: a change is re-read.
CREATE TRIGGER lockout_policy_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON authaudit.lockout_policy
    FOR EACH STATEMENT EXECUTE FUNCTION authaudit._policy_changed();
