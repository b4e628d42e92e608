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

-- Records a JSON array of events in one call and one transaction, returning
-- the stored rows in input order. Either every event is recorded or none.
-- The whole batch is checked and authorised before anything is locked or
-- written; at most authaudit.max_batch_events events (54000 beyond).
CREATE FUNCTION authaudit.record_events(events jsonb)
RETURNS SETOF authaudit.auth_log
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ids     uuid[];
    v_orgs    text[];
    v_e       record;
    v_unknown text;
    v_n       integer;
    v_max     integer := pg_catalog.current_setting('authaudit.max_batch_events')::integer;
BEGIN
    IF events IS NULL OR jsonb_typeof(events) <> 'array' THEN
        RAISE EXCEPTION 'pg_authaudit: events must be a JSON array of event objects'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_n := jsonb_array_length(events);
    IF v_n > v_max THEN
        RAISE EXCEPTION 'pg_authaudit: a batch holds at most % events (authaudit.max_batch_events), this one %',
            v_max, v_n
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Split the events into several calls; each call is one transaction.';
    END IF;
    -- First every event's shape and the writer's right to record it, in
    -- input order: nothing is locked or written for a batch that fails here.
    FOR v_e IN SELECT e.value AS ev, e.ordinality AS ord
                 FROM jsonb_array_elements(events) WITH ORDINALITY AS e
    LOOP
        IF jsonb_typeof(v_e.ev) <> 'object' THEN
            RAISE EXCEPTION 'pg_authaudit: event % of the batch is not a JSON object', v_e.ord
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        SELECT string_agg(k, ', ' ORDER BY k) INTO v_unknown
          FROM jsonb_object_keys(v_e.ev) AS k
         WHERE k NOT IN ('log_id', 'tenant_id', 'org_id', 'event_type', 'user_id', 'ip',
                         'user_agent', 'channel', 'occurred_at', 'metadata');
        IF v_unknown IS NOT NULL THEN
            RAISE EXCEPTION 'pg_authaudit: event % of the batch has unknown field(s): %', v_e.ord, v_unknown
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_orgs[v_e.ord] := authaudit._authorise_event(
            v_e.ev ->> 'tenant_id', v_e.ev ->> 'org_id', v_e.ev ->> 'event_type',
            v_e.ev ->> 'channel', nullif(v_e.ev -> 'metadata', 'null'::jsonb));
        v_ids[v_e.ord] := (v_e.ev ->> 'log_id')::uuid;
        -- An organisation's writer affects accounts of its organisation only
        -- (checked again under the row lock by the lockout engine).
        IF v_orgs[v_e.ord] IS NOT NULL AND EXISTS (
               SELECT FROM authaudit.lockout_state s
                WHERE s.tenant_id = v_e.ev ->> 'tenant_id' AND s.user_id = v_e.ev ->> 'user_id'
                  AND s.org_id IS DISTINCT FROM v_orgs[v_e.ord]) THEN
            RAISE EXCEPTION 'pg_authaudit: account % of tenant % belongs to another organisation than the writer''s (%)',
                v_e.ev ->> 'user_id', v_e.ev ->> 'tenant_id', v_orgs[v_e.ord]
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END LOOP;
    -- Lock every account the batch touches, in one order, before the first
    -- append: concurrent writers then never wait for each other in a cycle.
    -- A new account belongs to the organisation of its first event.
    INSERT INTO authaudit.lockout_state (tenant_id, user_id, org_id)
    SELECT DISTINCT ON (e.value ->> 'tenant_id', e.value ->> 'user_id')
           e.value ->> 'tenant_id', e.value ->> 'user_id', e.value ->> 'org_id'
      FROM jsonb_array_elements(events) WITH ORDINALITY AS e
     WHERE e.value ->> 'event_type' IN ('login_failed', 'login_success', 'lockout_reset')
       AND e.value ->> 'tenant_id' IS NOT NULL AND e.value ->> 'user_id' IS NOT NULL
     ORDER BY e.value ->> 'tenant_id', e.value ->> 'user_id', e.ordinality
    ON CONFLICT DO NOTHING;
    PERFORM 1
       FROM authaudit.lockout_state s
       JOIN (SELECT DISTINCT e ->> 'tenant_id' AS t, e ->> 'user_id' AS u
               FROM jsonb_array_elements(events) AS e) k ON s.tenant_id = k.t AND s.user_id = k.u
      ORDER BY s.tenant_id, s.user_id
        FOR UPDATE OF s;
    -- Tenants in a fixed order, so that concurrent batches never wait for
    -- each other's chain heads in a cycle; each tenant's events keep their order.
    FOR v_e IN
        SELECT e.value AS ev, e.ordinality AS ord
          FROM jsonb_array_elements(events) WITH ORDINALITY AS e
         ORDER BY e.value ->> 'tenant_id', e.ordinality
    LOOP
        PERFORM authaudit._record(
            log_id      => v_ids[v_e.ord],
            tenant_id   => v_e.ev ->> 'tenant_id',
            event_type  => v_e.ev ->> 'event_type',
            user_id     => v_e.ev ->> 'user_id',
            channel     => v_e.ev ->> 'channel',
            org_id      => v_e.ev ->> 'org_id',
            ip          => (v_e.ev ->> 'ip')::inet,
            user_agent  => v_e.ev ->> 'user_agent',
            occurred_at => (v_e.ev ->> 'occurred_at')::timestamptz,
            metadata    => coalesce(nullif(v_e.ev -> 'metadata', 'null'::jsonb), '{}'::jsonb),
            p_writer_org => v_orgs[v_e.ord]);
    END LOOP;
    -- Every id now names its row (new, or the original of a retry).
    RETURN QUERY
        SELECT l.* FROM unnest(v_ids) WITH ORDINALITY AS u(id, ord)
          JOIN authaudit.auth_log l ON l.log_id = u.id
         ORDER BY u.ord;
END;
$$;

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
