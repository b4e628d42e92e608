-- JWT (RFC 7519) session issuance: the token's header fields, registered
-- claims and SHA-256 fingerprint go into the chained record, never the token
-- or its signature. Reference: docs/sql-reference.md; errors: docs/errors.md.

-- Finds replayed jti values without scanning the tenant's log.
CREATE INDEX auth_log_token_jti_idx ON authaudit.auth_log
    (tenant_id, (metadata #>> '{_authaudit,token,jti}'))
    WHERE event_type = 'token_issued';

-- Records the issuance of a session token (a compact JWS) after a login.
-- Refuses, writing nothing: a malformed token (22P02), alg "none", a missing
-- sub or one that differs from user_id (22023), a jti already recorded for
-- the tenant (23505), a locked account (55000). Idempotent on log_id like
-- record_event: a retry with the same token returns the stored row.
CREATE FUNCTION authaudit.record_token_issued(
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

    SELECT l.* INTO v_row FROM authaudit.auth_log l
     WHERE l.tenant_id = record_token_issued.tenant_id AND l.log_id = record_token_issued.log_id;
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

COMMENT ON FUNCTION authaudit.record_token_issued(uuid, text, text, text, text, inet, text, text, timestamptz, jsonb) IS
    'Records a JWT session issuance by its header, registered claims and SHA-256 fingerprint (never the token).';

REVOKE EXECUTE ON FUNCTION authaudit._lock_token_id(text, text) FROM PUBLIC;
