-- pg_authaudit recording functions: the only write path into the auth log.
-- Reference: docs/sql-reference.md; errors: docs/errors.md.

-- Who is asking and what it may do (authaudit._authorise_event,
-- authaudit._writes_tenant, authaudit._writer_role) is answered in Rust
-- from the cached bindings: pg_authaudit/src/scope.rs.

-- The recording pipeline, for the extension's own functions only (not
-- executable by PUBLIC, so no writer can call it or reach it with facts of
-- its own): it trusts its caller to have authorised the event. Facts under
-- metadata "_authaudit" are the caller's; p_writer_org confines lockout
-- effects to accounts of that organisation (NULL: no confinement).
--
-- Upsert on log_id: a new id appends one row to the tenant's chain; the same
-- id with the same content returns the original row and changes nothing; the
-- same id with other content raises 23505 and changes nothing.
CREATE FUNCTION authaudit._record(
    log_id      uuid,
    tenant_id   text,
    event_type  text,
    user_id     text,
    channel     text,
    org_id      text,
    ip          inet,
    user_agent  text,
    occurred_at timestamptz,
    metadata    jsonb,
    p_writer_org text
) RETURNS authaudit.auth_log
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_recorded timestamptz := clock_timestamp();
    v_ua       text := _record.user_agent;
    v_meta     jsonb := coalesce(_record.metadata, '{}'::jsonb);
    v_body     bytea;
    v_row      authaudit.auth_log;
    v_lock     record;
    v_counted  boolean := false;
BEGIN
    -- An attacker controls the user agent: an oversized one is kept (cut to
    -- 512 characters) rather than refused, and the cut is recorded.
    IF char_length(v_ua) > 512 THEN
        v_meta := v_meta || jsonb_build_object('_authaudit',
            coalesce(v_meta -> '_authaudit', '{}'::jsonb) || jsonb_build_object(
            'user_agent_truncated', jsonb_build_object(
                'chars', char_length(v_ua),
                'sha256', encode(sha256(convert_to(v_ua, 'UTF8')), 'hex'))));
        v_ua := left(v_ua, 512);
    END IF;

    v_body := authaudit._event_body(
        _record.log_id, _record.tenant_id, _record.org_id,
        _record.event_type, _record.user_id, _record.ip::text, v_ua,
        _record.channel, _record.occurred_at, v_recorded, v_meta::text);

    -- Lockout effects, in this transaction (docs/lockout.md). The input is
    -- valid (checked just above); a retry must not count twice, so the
    -- log_id is looked up first.
    IF _record.event_type IN ('login_failed', 'login_success', 'lockout_reset') THEN
        SELECT l.* INTO v_row FROM authaudit.auth_log l WHERE l.log_id = _record.log_id;
        IF NOT FOUND THEN
            SELECT * INTO v_lock FROM authaudit._lockout_apply(
                _record.tenant_id, _record.user_id, _record.ip::text,
                _record.event_type, coalesce(_record.occurred_at, v_recorded),
                _record.log_id, _record.org_id, p_writer_org);
            v_meta := v_meta || jsonb_build_object('_authaudit',
                coalesce(v_meta -> '_authaudit', '{}'::jsonb) || jsonb_build_object('lockout', v_lock.facts));
            v_counted := true;
            v_body := authaudit._event_body(
                _record.log_id, _record.tenant_id, _record.org_id,
                _record.event_type, _record.user_id, _record.ip::text, v_ua,
                _record.channel, _record.occurred_at, v_recorded, v_meta::text);
        END IF;
    END IF;

    -- Append to the tenant's chain (shared-memory head, see docs/architecture.md)
    -- and insert the row in the same statement.
    INSERT INTO authaudit.auth_log AS l (
        log_id, tenant_id, org_id, seq, event_type, user_id, ip, user_agent, channel,
        occurred_at, recorded_at, metadata, format_version,
        prev_link, link_sha256, digest_sha512, digest_sha3_256)
    SELECT _record.log_id, _record.tenant_id, _record.org_id, a.seq,
           _record.event_type, _record.user_id, _record.ip, v_ua,
           _record.channel, coalesce(_record.occurred_at, v_recorded), v_recorded,
           v_meta, 1, a.prev_link, a.link_sha256, a.digest_sha512, a.digest_sha3_256
      FROM authaudit._chain_append(_record.tenant_id, v_body) AS a
    ON CONFLICT ON CONSTRAINT auth_log_pkey DO NOTHING
    RETURNING l.* INTO v_row;
    IF FOUND THEN
        IF v_counted THEN
            UPDATE authaudit.lockout_state st SET last_seq = v_row.seq
             WHERE st.tenant_id = _record.tenant_id AND st.user_id = _record.user_id;
        END IF;
        -- (Nested: v_lock is unassigned when nothing was counted.)
        IF v_counted THEN IF v_lock.new_lock THEN
            -- This failure locked the account: the lock is the next link,
            -- with an id derived from the failure's (a retry finds it).
            PERFORM authaudit._record(
                log_id      => authaudit._derived_log_id(_record.log_id, 'account_locked'),
                tenant_id   => _record.tenant_id,
                event_type  => 'account_locked',
                user_id     => _record.user_id,
                channel     => 'system',
                org_id      => _record.org_id,
                ip          => _record.ip,
                user_agent  => NULL,
                occurred_at => coalesce(_record.occurred_at, v_recorded),
                p_writer_org => NULL,
                metadata    => jsonb_build_object(
                    'reason', v_lock.lock_rule,
                    'failures', v_lock.lock_failures,
                    'lock_count', v_lock.lock_count,
                    'permanent', v_lock.locked_until_us IS NULL,
                    'locked_until', 'epoch'::timestamptz + v_lock.locked_until_us * interval '1 microsecond',
                    'triggered_by', _record.log_id));
        END IF; END IF;
        RETURN v_row;
    END IF;
    IF v_counted THEN
        -- Another session committed the same log_id meanwhile; the error
        -- undoes this call's lockout changes and its append.
        RAISE EXCEPTION 'pg_authaudit: log_id % is being recorded concurrently', _record.log_id
            USING ERRCODE = 'serialization_failure',
                  HINT = 'Retry: the retry returns the row the other session recorded.';
    END IF;

    -- The log_id exists: take the append back (this transaction still owns
    -- the tenant's chain, so it is the latest link).
    PERFORM authaudit._chain_unappend(_record.tenant_id);

    -- A retry returns the original row; a reused id with other content is refused.
    SELECT l.* INTO v_row FROM authaudit.auth_log l WHERE l.log_id = _record.log_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pg_authaudit: log_id % is being recorded concurrently', _record.log_id
            USING ERRCODE = 'serialization_failure',
                  HINT = 'Retry: the retry returns the row the other session recorded.';
    END IF;
    IF v_row.tenant_id = _record.tenant_id
       AND v_row.org_id IS NOT DISTINCT FROM _record.org_id
       AND v_row.event_type = _record.event_type
       AND v_row.user_id = _record.user_id
       AND v_row.channel = _record.channel
       AND v_row.ip IS NOT DISTINCT FROM _record.ip
       AND v_row.user_agent IS NOT DISTINCT FROM v_ua
       AND (v_row.metadata - '_authaudit') = (v_meta - '_authaudit')
       AND (_record.occurred_at IS NULL OR v_row.occurred_at = _record.occurred_at)
    THEN
        RETURN v_row;
    END IF;
    RAISE EXCEPTION 'pg_authaudit: log_id % was already recorded with different content',
        _record.log_id
        USING ERRCODE = 'unique_violation',
              HINT = 'A retry must repeat the original event exactly; a new event needs a new log_id.';
END;
$$;

REVOKE EXECUTE ON FUNCTION authaudit._record(uuid, text, text, text, text, text, inet, text, timestamptz, jsonb, text) FROM PUBLIC;

-- Records one authentication event and returns the stored row (upsert on
-- log_id, see authaudit._record). The writer must be bound to the tenant
-- and organisation (42501); events only the extension appends, the system
-- channel and the "_authaudit" metadata key are refused (22023).
CREATE FUNCTION authaudit.record_event(
    log_id      uuid,
    tenant_id   text,
    event_type  text,
    user_id     text,
    channel     text,
    org_id      text        DEFAULT NULL,
    ip          inet        DEFAULT NULL,
    user_agent  text        DEFAULT NULL,
    occurred_at timestamptz DEFAULT NULL,
    metadata    jsonb       DEFAULT '{}'
) RETURNS authaudit.auth_log
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_org text := authaudit._authorise_event(record_event.tenant_id, record_event.org_id,
                      record_event.event_type, record_event.channel, record_event.metadata);
BEGIN
    RETURN authaudit._record(
        record_event.log_id, record_event.tenant_id, record_event.event_type, record_event.user_id,
        record_event.channel, record_event.org_id, record_event.ip, record_event.user_agent,
        record_event.occurred_at, record_event.metadata, v_org);
END;
$$;

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
