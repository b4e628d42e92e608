-- pg_authaudit 0.1.0 -> 0.2.0 (docs/installation.md, "Upgrading").
--
-- Security (docs/security.md): the recording pipeline becomes the internal
-- function _record, the facts grant of 0.1.0 is gone, writers' organisation
-- bindings are enforced (lockout_state.org_id), security decisions move to
-- Rust, checkpoints check the live chain head, token-id locks are keyed,
-- retention keeps authaudit.min_retention. Rows and chains are unchanged.

\echo Use "ALTER EXTENSION pg_authaudit UPDATE TO '0.2.0'" to load this file. \quit

-- The organisation an account belongs to (of its first event). Accounts
-- recorded by 0.1.0 have none: only tenant-wide writers affect them.
ALTER TABLE authaudit.lockout_state ADD COLUMN org_id text;

-- Replaced by Rust functions of the same purpose, or gone.
DROP FUNCTION authaudit._may_checkpoint(text);
DROP FUNCTION authaudit._may_verify(text);
DROP FUNCTION authaudit._may_write(text);
DROP FUNCTION authaudit._writer_role();
DROP FUNCTION authaudit._grant_facts(uuid);
DROP FUNCTION authaudit._take_facts_grant(uuid);
DROP FUNCTION authaudit._lockout_apply(text, text, text, text, timestamptz, uuid);

CREATE  FUNCTION "_authorise_event"(
	"tenant_id" TEXT, /* Option < & str > */
	"org_id" TEXT, /* Option < & str > */
	"event_type" TEXT, /* Option < & str > */
	"channel" TEXT, /* Option < & str > */
	"metadata" jsonb /* Option < pgrx :: JsonB > */
) RETURNS TEXT /* SqlResult < Option < String > > */
STABLE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'authorise_event_wrapper';

CREATE  FUNCTION "_writes_tenant"(
	"tenant" TEXT /* & str */
) RETURNS bool /* bool */
STRICT STABLE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'writes_tenant_wrapper';

CREATE  FUNCTION "_writer_is_overseer"() RETURNS bool /* bool */
STRICT STABLE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'writer_is_overseer_wrapper';

CREATE  FUNCTION "_writer_is_admin"() RETURNS bool /* bool */
STRICT STABLE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'writer_is_admin_wrapper';

CREATE  FUNCTION "_writer_role"() RETURNS TEXT /* String */
STRICT STABLE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'writer_role_wrapper';

CREATE  FUNCTION "_may_verify"(
	"tenant" TEXT /* & str */
) RETURNS bool /* bool */
STRICT STABLE PARALLEL RESTRICTED 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'may_verify_wrapper';

CREATE  FUNCTION "_chain_settled_head"(
	"tenant_id" TEXT /* & str */
) RETURNS TABLE (
	"seq" bigint,  /* i64 */
	"link_sha256" bytea  /* Vec < u8 > */
)
STRICT VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'chain_settled_head_wrapper';

CREATE  FUNCTION "_lock_token_id"(
	"tenant_id" TEXT, /* & str */
	"jti" TEXT /* & str */
) RETURNS void
STRICT VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'lock_token_id_wrapper';

CREATE  FUNCTION "_min_retention_minutes"() RETURNS INT /* i32 */
STRICT STABLE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'min_retention_minutes_wrapper';

CREATE  FUNCTION "_lockout_apply"(
	"tenant_id" TEXT, /* & str */
	"user_id" TEXT, /* & str */
	"ip" TEXT, /* Option < & str > */
	"event_type" TEXT, /* & str */
	"at" timestamp with time zone, /* TimestampWithTimeZone */
	"log_id" uuid, /* Uuid */
	"org_id" TEXT, /* Option < & str > */
	"writer_org" TEXT /* Option < & str > */
) RETURNS TABLE (
	"facts" jsonb,  /* Option < pgrx :: JsonB > */
	"new_lock" bool,  /* bool */
	"locked_until_us" bigint,  /* Option < i64 > */
	"lock_rule" TEXT,  /* Option < String > */
	"lock_failures" INT,  /* Option < i32 > */
	"lock_count" INT  /* Option < i32 > */
)
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'lockout_apply_scoped_wrapper';

-- The read checks build the scope cache with the latest snapshot, which a
-- parallel worker may not take: they run in the leader.
ALTER FUNCTION authaudit._read_tenants() PARALLEL RESTRICTED;
ALTER FUNCTION authaudit._may_read(text, text) PARALLEL RESTRICTED;

-- The recording functions (sql/record.sql).
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
CREATE OR REPLACE FUNCTION authaudit.record_event(
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
CREATE OR REPLACE FUNCTION authaudit.record_events(events jsonb)
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

REVOKE EXECUTE ON FUNCTION authaudit._chain_settled_head(text) FROM PUBLIC;

-- Whether a login may be attempted now (docs/lockout.md): for the
-- application to call before verifying credentials.
CREATE OR REPLACE FUNCTION authaudit.check_login(tenant_id text, user_id text, ip inet DEFAULT NULL)
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
CREATE OR REPLACE FUNCTION authaudit._lockout_policy_valid() RETURNS trigger
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
-- Token issuance (sql/token.sql).
-- Records the issuance of a session token (a compact JWS) after a login.
-- Refuses, writing nothing: a malformed token (22P02), alg "none", a missing
-- sub or one that differs from user_id (22023), a jti already recorded for
-- the tenant (23505), a locked account (55000). Idempotent on log_id like
-- record_event: a retry with the same token returns the stored row.
CREATE OR REPLACE FUNCTION authaudit.record_token_issued(
    log_id      uuid,
    tenant_id   text,
    org_id      text,
    user_id     text,
    token       text,
    ip          inet,
    user_agent  text,
    channel     text,
    occurred_at timestamptz DEFAULT NULL,
    metadata    jsonb       DEFAULT '{}'
) RETURNS authaudit.auth_log
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_facts jsonb;
    v_meta  jsonb := coalesce(record_token_issued.metadata, '{}'::jsonb);
    v_row   authaudit.auth_log;
    v_login record;
    v_check record;
BEGIN
    -- The writer's binding covers the tenant and organisation (42501); the
    -- system channel and the "_authaudit" metadata key are refused (22023).
    PERFORM authaudit._authorise_event(record_token_issued.tenant_id, record_token_issued.org_id,
        NULL, record_token_issued.channel, v_meta);
    -- Parses and checks the token (the message never contains it).
    v_facts := authaudit._token_facts(record_token_issued.token, record_token_issued.user_id);

    SELECT l.* INTO v_row FROM authaudit.auth_log l WHERE l.log_id = record_token_issued.log_id;
    IF FOUND THEN
        -- A retry must carry the same token; record_event compares the rest.
        IF v_row.event_type <> 'token_issued'
           OR v_row.metadata #>> '{_authaudit,token,fingerprint_sha256}'
              IS DISTINCT FROM v_facts ->> 'fingerprint_sha256' THEN
            RAISE EXCEPTION 'pg_authaudit: log_id % was already recorded with different content',
                record_token_issued.log_id
                USING ERRCODE = 'unique_violation',
                      HINT = 'A retry must repeat the original event exactly; a new event needs a new log_id.';
        END IF;
        v_meta := v_meta || jsonb_build_object('_authaudit', v_row.metadata -> '_authaudit');
    ELSE
        -- A jti is issued once per tenant: a second record is a replay.
        -- Concurrent issuers of one jti take turns on an advisory lock.
        IF v_facts ? 'jti' THEN
            PERFORM authaudit._lock_token_id(record_token_issued.tenant_id, v_facts ->> 'jti');
            IF EXISTS (SELECT FROM authaudit.auth_log l
                        WHERE l.tenant_id = record_token_issued.tenant_id
                          AND l.event_type = 'token_issued'
                          AND l.metadata #>> '{_authaudit,token,jti}' = v_facts ->> 'jti') THEN
                RAISE EXCEPTION 'pg_authaudit: token jti was already recorded for tenant % (replay)',
                    record_token_issued.tenant_id
                    USING ERRCODE = 'unique_violation',
                          HINT = 'Each issued token needs a fresh jti.';
            END IF;
        END IF;
        -- No session for a locked account.
        SELECT c.* INTO v_check
          FROM authaudit._check_login(record_token_issued.tenant_id, record_token_issued.user_id) c;
        IF NOT v_check.allowed THEN
            RAISE EXCEPTION 'pg_authaudit: account % of tenant % is locked; no session token may be issued',
                record_token_issued.user_id, record_token_issued.tenant_id
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'The lock clears at its time or by a lockout_reset event.';
        END IF;
        -- The login this session follows: the user's latest success.
        SELECT l.log_id, l.seq, l.link_sha256 INTO v_login
          FROM authaudit.auth_log l
         WHERE l.tenant_id = record_token_issued.tenant_id
           AND l.user_id = record_token_issued.user_id
           AND l.event_type = 'login_success'
         ORDER BY l.seq DESC LIMIT 1;
        v_meta := v_meta || jsonb_build_object('_authaudit', jsonb_build_object(
            'token', v_facts,
            'follows_login', CASE WHEN v_login.log_id IS NULL THEN NULL ELSE jsonb_build_object(
                'log_id', v_login.log_id,
                'seq', v_login.seq,
                'link_sha256', encode(v_login.link_sha256, 'hex')) END));
    END IF;
    RETURN authaudit._record(
        log_id      => record_token_issued.log_id,
        tenant_id   => record_token_issued.tenant_id,
        event_type  => 'token_issued',
        user_id     => record_token_issued.user_id,
        channel     => record_token_issued.channel,
        org_id      => record_token_issued.org_id,
        ip          => record_token_issued.ip,
        user_agent  => record_token_issued.user_agent,
        occurred_at => record_token_issued.occurred_at,
        metadata    => v_meta,
        p_writer_org => NULL);
END;
$$;

REVOKE EXECUTE ON FUNCTION authaudit._lock_token_id(text, text) FROM PUBLIC;

-- Checkpoints and retention (sql/checkpoint.sql).
-- Records the tenant's current chain head as a checkpoint, after verifying
-- the rows since the previous checkpoint (a tampered chain is never
-- anchored: XX001). Returns the checkpoint (the existing one when the head
-- has not moved since).
CREATE OR REPLACE FUNCTION authaudit.checkpoint(tenant_id text)
RETURNS authaudit.checkpoints
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_head  record;
    v_live  bigint;
    v_past  bigint;
    v_from  bigint;
    v_check record;
    v_cp    authaudit.checkpoints;
BEGIN
    -- Its writers, auditors, admins and superusers may checkpoint a tenant.
    IF NOT (authaudit._writes_tenant(checkpoint.tenant_id) OR authaudit._writer_is_overseer()) THEN
        RAISE EXCEPTION 'pg_authaudit: role % may not checkpoint tenant %',
            authaudit._writer_role(), checkpoint.tenant_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- The head the extension appended last, once its appender has ended,
    -- must be the table's last row (XX001 when the tail was cut or padded).
    SELECT h.seq INTO v_live FROM authaudit._chain_settled_head(checkpoint.tenant_id) h;
    SELECT l.seq, l.log_id, l.link_sha256, l.digest_sha512, l.digest_sha3_256 INTO v_head
      FROM authaudit.auth_log l WHERE l.tenant_id = checkpoint.tenant_id AND l.seq = v_live;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pg_authaudit: tenant % has no events to checkpoint', checkpoint.tenant_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- A checkpoint past the head: rows it anchored are gone.
    SELECT c.seq INTO v_past FROM authaudit.checkpoints c
     WHERE c.tenant_id = checkpoint.tenant_id AND c.seq > v_head.seq
     ORDER BY c.seq DESC LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'pg_authaudit: tenant % chain ends at seq % but a checkpoint anchors seq %: rows were removed',
            checkpoint.tenant_id, v_head.seq, v_past
            USING ERRCODE = 'data_corrupted',
                  HINT = 'A checkpoint never anchors a tampered chain; investigate with authaudit.verify_chain.';
    END IF;
    SELECT c.* INTO v_cp FROM authaudit.checkpoints c
     WHERE c.tenant_id = checkpoint.tenant_id AND c.seq = v_head.seq;
    IF FOUND THEN
        RETURN v_cp;
    END IF;
    -- From the previous checkpoint's own row (re-checked against it), or
    -- just after it when retention removed that row.
    SELECT coalesce(max(c.seq), 1) INTO v_from FROM authaudit.checkpoints c
     WHERE c.tenant_id = checkpoint.tenant_id AND c.seq < v_head.seq;
    IF NOT EXISTS (SELECT FROM authaudit.auth_log l
                    WHERE l.tenant_id = checkpoint.tenant_id AND l.seq = v_from) THEN
        v_from := v_from + 1;
    END IF;
    SELECT v.* INTO v_check
      FROM authaudit.verify_chain(checkpoint.tenant_id, v_from, v_head.seq) v;
    IF NOT v_check.ok THEN
        RAISE EXCEPTION 'pg_authaudit: tenant % chain fails verification at seq %: %',
            checkpoint.tenant_id, v_check.first_bad_seq, v_check.reason
            USING ERRCODE = 'data_corrupted',
                  HINT = 'A checkpoint never anchors a tampered chain; investigate with authaudit.verify_chain.';
    END IF;
    INSERT INTO authaudit.checkpoints AS c
        (tenant_id, seq, link_sha256, digest_sha512, digest_sha3_256, head_log_id, created_by)
    VALUES (checkpoint.tenant_id, v_head.seq, v_head.link_sha256, v_head.digest_sha512,
            v_head.digest_sha3_256, v_head.log_id, authaudit._writer_role())
    ON CONFLICT ON CONSTRAINT checkpoints_pkey DO NOTHING
    RETURNING c.* INTO v_cp;
    IF NOT FOUND THEN
        SELECT c.* INTO v_cp FROM authaudit.checkpoints c
         WHERE c.tenant_id = checkpoint.tenant_id AND c.seq = v_head.seq;
    END IF;
    RETURN v_cp;
END;
$$;

-- Retention (SOC 2 CC7, GDPR Art. 5(1)(e)): removes a tenant's rows older
-- than a horizon up to the latest checkpoint before it, after verifying them,
-- and appends a retention_applied event saying what went (range, count,
-- anchor). Whole rows are deleted rather than their personal fields
-- redacted: see docs/retention.md. For authaudit_admin members only.
CREATE OR REPLACE FUNCTION authaudit.apply_retention(tenant_id text, before timestamptz)
RETURNS TABLE (removed_rows bigint, removed_from_seq bigint, removed_to_seq bigint,
               anchor_seq bigint, event_log_id uuid)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_actor  name := authaudit._writer_role();
    v_first  bigint;
    v_young  bigint;
    v_cp     authaudit.checkpoints;
    v_check  record;
    v_n      bigint;
    v_oldest timestamptz;
    v_newest timestamptz;
    v_event  authaudit.auth_log;
    v_id     uuid;
BEGIN
    IF NOT authaudit._writer_is_admin() THEN
        RAISE EXCEPTION 'pg_authaudit: role % may not apply retention (authaudit_admin only)', v_actor
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF apply_retention.before IS NULL OR NOT isfinite(apply_retention.before)
       OR apply_retention.before > clock_timestamp() THEN
        RAISE EXCEPTION 'pg_authaudit: retention horizon must be a finite time in the past'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- History younger than authaudit.min_retention stays (lowered only by a superuser).
    IF apply_retention.before > clock_timestamp() - make_interval(mins => authaudit._min_retention_minutes()) THEN
        RAISE EXCEPTION 'pg_authaudit: retention horizon % is younger than authaudit.min_retention (%)',
            apply_retention.before, make_interval(mins => authaudit._min_retention_minutes())
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Events are kept at least authaudit.min_retention; only a superuser can lower it.';
    END IF;
    SELECT min(l.seq) INTO v_first FROM authaudit.auth_log l WHERE l.tenant_id = apply_retention.tenant_id;
    SELECT min(l.seq) INTO v_young FROM authaudit.auth_log l
     WHERE l.tenant_id = apply_retention.tenant_id AND l.occurred_at >= apply_retention.before;
    -- The latest checkpoint with every row up to it older than the horizon.
    SELECT c.* INTO v_cp FROM authaudit.checkpoints c
     WHERE c.tenant_id = apply_retention.tenant_id
       AND c.seq >= v_first
       AND (v_young IS NULL OR c.seq < v_young)
     ORDER BY c.seq DESC LIMIT 1;
    IF v_first IS NULL OR NOT FOUND THEN
        RETURN QUERY SELECT 0::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::uuid;
        RETURN;
    END IF;
    SELECT v.* INTO v_check FROM authaudit.verify_chain(apply_retention.tenant_id, v_first, v_cp.seq) v;
    IF NOT v_check.ok THEN
        RAISE EXCEPTION 'pg_authaudit: tenant % chain fails verification at seq %: %; nothing removed',
            apply_retention.tenant_id, v_check.first_bad_seq, v_check.reason
            USING ERRCODE = 'data_corrupted';
    END IF;
    PERFORM authaudit._allow_retention(apply_retention.tenant_id);
    WITH gone AS (
        DELETE FROM authaudit.auth_log l
         WHERE l.tenant_id = apply_retention.tenant_id AND l.seq <= v_cp.seq
        RETURNING l.occurred_at)
    SELECT count(*), min(g.occurred_at), max(g.occurred_at) INTO v_n, v_oldest, v_newest FROM gone g;
    PERFORM authaudit._end_retention();
    v_id := gen_random_uuid();
    v_event := authaudit._record(
        log_id     => v_id,
        tenant_id  => apply_retention.tenant_id,
        event_type => 'retention_applied',
        user_id    => v_actor::text,
        channel    => 'system',
        org_id     => NULL,
        ip         => NULL,
        user_agent => NULL,
        occurred_at => NULL,
        p_writer_org => NULL,
        metadata   => jsonb_build_object('_authaudit', jsonb_build_object('retention', jsonb_build_object(
            'before', apply_retention.before,
            'removed_rows', v_n,
            'removed_from_seq', v_first,
            'removed_to_seq', v_cp.seq,
            'oldest_removed', v_oldest,
            'newest_removed', v_newest,
            'mode', 'delete',
            'anchor', jsonb_build_object('seq', v_cp.seq,
                                         'link_sha256', encode(v_cp.link_sha256, 'hex'))))));
    RETURN QUERY SELECT v_n, v_first, v_cp.seq, v_cp.seq, v_id;
END;
$$;

-- Grants (sql/security.sql).
REVOKE EXECUTE ON FUNCTION authaudit._lockout_apply(text, text, text, text, timestamptz, uuid, text, text) FROM PUBLIC;

-- The mirror's publication is the sidecar's to create (sql/mirror.sql); an
-- existing one stays as it is.
-- Creates the publication if it is missing, or puts the mirrored tables
-- back into it (after DROP and CREATE EXTENSION); returns its name.
CREATE FUNCTION authaudit.ensure_mirror_publication(publication text DEFAULT 'authaudit_mirror')
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF publication IS NULL OR publication !~ '^[a-z_][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'pg_authaudit: publication name must be lowercase letters, digits and _'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_publication p WHERE p.pubname = publication) THEN
        EXECUTE format('CREATE PUBLICATION %I FOR TABLE authaudit.auth_log, '
                       'authaudit.lockout_state, authaudit.checkpoints '
                       'WITH (publish = %L)', publication, 'insert, update, delete, truncate');
    ELSIF (SELECT count(*) FROM pg_catalog.pg_publication_tables t
            WHERE t.pubname = publication AND t.schemaname = 'authaudit'
              AND t.tablename IN ('auth_log', 'lockout_state', 'checkpoints')) < 3 THEN
        EXECUTE format('ALTER PUBLICATION %I SET TABLE authaudit.auth_log, '
                       'authaudit.lockout_state, authaudit.checkpoints', publication);
    END IF;
    RETURN publication;
END;
$$;

COMMENT ON FUNCTION authaudit.ensure_mirror_publication(text) IS
    'Creates the mirror''s publication (authaudit_mirror) if missing; the sidecar calls it at start.';
REVOKE EXECUTE ON FUNCTION authaudit.ensure_mirror_publication(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION authaudit.ensure_mirror_publication(text) TO authaudit_auditor;

-- pg_dump keeps every row of the extension's tables (sql/security.sql).
SELECT pg_catalog.pg_extension_config_dump('authaudit.auth_log', '');
SELECT pg_catalog.pg_extension_config_dump('authaudit.tenant_scope', '');
SELECT pg_catalog.pg_extension_config_dump('authaudit.lockout_policy', '');
SELECT pg_catalog.pg_extension_config_dump('authaudit.lockout_state', '');
SELECT pg_catalog.pg_extension_config_dump('authaudit.lockout_ip_state', '');
SELECT pg_catalog.pg_extension_config_dump('authaudit.lockout_ip_account_state', '');
SELECT pg_catalog.pg_extension_config_dump('authaudit.checkpoints', '');
