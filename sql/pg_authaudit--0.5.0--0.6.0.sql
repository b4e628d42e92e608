-- pg_authaudit 0.5.0 -> 0.6.0 (docs/installation.md, "Upgrading").
--
-- A log id is unique within its tenant: the log's primary key becomes
-- (tenant_id, log_id), so one log can be recorded into two tenants and no
-- tenant learns whether an id exists in another. Every unique key of the
-- log leads with tenant_id. The functions that find a row by its log id
-- look in its tenant. The log and its checkpoints replicate whole old rows
-- (REPLICA IDENTITY FULL) for the mirror's tamper alarms. Each tenant's
-- log is an RFC 9162 Merkle tree: merkle_root, inclusion_proof and
-- consistency_proof. Channels: a deployment adds its own with
-- authaudit.extra_channels; authaudit.channels() lists them. Rows and
-- chains are unchanged.
--
-- The primary key is rebuilt under an ACCESS EXCLUSIVE lock on
-- authaudit.auth_log: recording waits while the new index is built.

\echo Use "ALTER EXTENSION pg_authaudit UPDATE TO '0.6.0'" to load this file. \quit

ALTER TABLE authaudit.auth_log
    DROP CONSTRAINT auth_log_pkey,
    ADD CONSTRAINT auth_log_pkey PRIMARY KEY (tenant_id, log_id);
COMMENT ON COLUMN authaudit.auth_log.log_id IS 'Caller-supplied idempotency key, unique within the tenant.';

-- An UPDATE or DELETE of the log or its checkpoints is tampering unless it
-- is retention's: replication carries the whole old row, so the mirror
-- names its tenant and seq (docs/sidecar.md, "Tamper alarms").
ALTER TABLE authaudit.auth_log REPLICA IDENTITY FULL;
ALTER TABLE authaudit.checkpoints REPLICA IDENTITY FULL;


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
    -- A statement of its own: it sees the rows the call above inserted. A
    -- log id is unique within its tenant: the n-th id is the n-th event's.
    RETURN QUERY
        SELECT l.* FROM unnest(v_ids) WITH ORDINALITY AS u(id, ord)
          JOIN authaudit.auth_log l
            ON l.tenant_id = (events -> (u.ord::integer - 1)) ->> 'tenant_id' AND l.log_id = u.id
         ORDER BY u.ord;
END;
$$;

CREATE OR REPLACE FUNCTION authaudit.import_events(events jsonb, rebuild boolean DEFAULT true)
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
            ARRAY(SELECT DISTINCT e ->> 'tenant_id' FROM jsonb_array_elements(events) AS e));
    END IF;
    RETURN QUERY
        SELECT l.* FROM unnest(v_ids) WITH ORDINALITY AS u(id, ord)
          JOIN authaudit.auth_log l
            ON l.tenant_id = (events -> (u.ord::integer - 1)) ->> 'tenant_id' AND l.log_id = u.id
         ORDER BY u.ord;
END;
$$;

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

CREATE OR REPLACE FUNCTION authaudit.lockout_timeline(tenant_id text, from_time timestamptz, to_time timestamptz)
RETURNS TABLE (seq bigint, occurred_at timestamptz, user_id text, event_type text, rule text,
               failures integer, locked_until timestamptz, permanent boolean, triggered_by uuid)
LANGUAGE sql STABLE AS $$
    SELECT r.seq, r.occurred_at, r.user_id,
           CASE WHEN r.locked_account THEN 'account_locked' ELSE 'lockout_reset' END,
           CASE WHEN r.locked_account THEN r.lock_rule
                ELSE (SELECT l.metadata ->> 'reason' FROM authaudit.auth_log l
                       WHERE l.tenant_id = lockout_timeline.tenant_id AND l.log_id = r.log_id) END,
           CASE WHEN r.locked_account THEN r.failures_in_window END,
           CASE WHEN r.locked_account THEN r.locked_until END,
           CASE WHEN r.locked_account THEN r.permanent END,
           CASE WHEN r.locked_account THEN r.log_id END
      FROM authaudit.lockout_replay(lockout_timeline.tenant_id, lockout_timeline.from_time,
                                    lockout_timeline.to_time) r
     WHERE r.locked_account OR r.event_type = 'lockout_reset'
     ORDER BY r.decision
$$;

CREATE OR REPLACE FUNCTION authaudit.verify_cef(cef_line text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT authaudit._ct_eq(authaudit.to_cef(l), verify_cef.cef_line)
      FROM authaudit.auth_log l
     WHERE l.tenant_id = substring(verify_cef.cef_line FROM ' cs1=([A-Za-z0-9._-]+) cs1Label=tenant( |$)')
       AND l.log_id = substring(verify_cef.cef_line
                                FROM 'externalId=([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})')::uuid
$$;

CREATE FUNCTION "channels"() RETURNS TABLE (
	"channel" TEXT,  /* String */
	"built_in" bool,  /* bool */
	"writable" bool  /* bool */
)
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'channels_wrapper';

COMMENT ON FUNCTION authaudit.channels() IS
    'The channels events may carry: the built-in ones and those of authaudit.extra_channels (docs/configuration.md).';

-- The tenant's Merkle tree (docs/chain-format.md, "Merkle tree").
CREATE FUNCTION "consistency_proof"(
	"tenant_id" TEXT, /* & str */
	"old_size" bigint, /* i64 */
	"new_size" bigint /* i64 */
) RETURNS TABLE (
	"old_size" bigint,  /* i64 */
	"new_size" bigint,  /* i64 */
	"old_root" bytea,  /* Vec < u8 > */
	"new_root" bytea,  /* Vec < u8 > */
	"proof" bytea[]  /* Vec < Vec < u8 > > */
)
STRICT STABLE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'consistency_proof_wrapper';

CREATE FUNCTION "inclusion_proof"(
	"tenant_id" TEXT, /* & str */
	"seq" bigint, /* i64 */
	"tree_size" bigint /* i64 */
) RETURNS TABLE (
	"leaf_index" bigint,  /* i64 */
	"tree_size" bigint,  /* i64 */
	"leaf_hash" bytea,  /* Vec < u8 > */
	"root_hash" bytea,  /* Vec < u8 > */
	"path" bytea[]  /* Vec < Vec < u8 > > */
)
STRICT STABLE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'inclusion_proof_wrapper';

CREATE FUNCTION "merkle_root"(
	"tenant_id" TEXT, /* & str */
	"tree_size" bigint DEFAULT NULL /* Option < i64 > */
) RETURNS TABLE (
	"tree_size" bigint,  /* i64 */
	"root_hash" bytea  /* Vec < u8 > */
)
STABLE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'merkle_root_wrapper';

-- Evidence of one event for someone without the rest of the log: the row
-- as text, its place in the tenant's Merkle tree and the audit path to the
-- root. tools/verify_evidence.py checks it offline (docs/chain-format.md,
-- "Merkle tree"). Runs with the caller's rights: inclusion_proof's scope
-- check and row-level security apply.
CREATE FUNCTION authaudit.inclusion_evidence(tenant_id text, seq bigint, tree_size bigint)
RETURNS jsonb
LANGUAGE plpgsql STABLE STRICT
SET DateStyle = 'ISO' SET bytea_output = 'hex'
AS $$
DECLARE
    p record;
    v_row jsonb;
BEGIN
    -- The proof first: its scope check refuses before any row is read.
    SELECT * INTO p FROM authaudit.inclusion_proof(inclusion_evidence.tenant_id,
                                                   inclusion_evidence.seq,
                                                   inclusion_evidence.tree_size);
    SELECT jsonb_build_object(
            'tenant_id', l.tenant_id, 'log_id', l.log_id::text, 'org_id', l.org_id,
            'seq', l.seq::text, 'event_type', l.event_type, 'user_id', l.user_id,
            'ip', l.ip::text, 'user_agent', l.user_agent, 'channel', l.channel,
            'occurred_at', l.occurred_at::text, 'recorded_at', l.recorded_at::text,
            'metadata', l.metadata::text, 'format_version', l.format_version::text,
            'prev_link', l.prev_link::text, 'link_sha256', l.link_sha256::text,
            'digest_sha512', l.digest_sha512::text, 'digest_sha3_256', l.digest_sha3_256::text)
      INTO v_row
      FROM authaudit.auth_log l
     WHERE l.tenant_id = inclusion_evidence.tenant_id AND l.seq = inclusion_evidence.seq;
    RETURN jsonb_build_object(
        'format', 'pg_authaudit.evidence.v1',
        'row', v_row,
        'tree_size', p.tree_size,
        'leaf_index', p.leaf_index,
        'root_hash', encode(p.root_hash, 'hex'),
        'path', (SELECT coalesce(jsonb_agg(encode(h, 'hex') ORDER BY i), '[]'::jsonb)
                   FROM unnest(p.path) WITH ORDINALITY AS u(h, i)));
END;
$$;

COMMENT ON FUNCTION authaudit.inclusion_evidence(text, bigint, bigint) IS
    'One event with its RFC 9162 audit path, for tools/verify_evidence.py (docs/chain-format.md, "Merkle tree").';

REVOKE EXECUTE ON FUNCTION
    authaudit.merkle_root(text, bigint),
    authaudit.inclusion_proof(text, bigint, bigint),
    authaudit.consistency_proof(text, bigint, bigint),
    authaudit.inclusion_evidence(text, bigint, bigint)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    authaudit.merkle_root(text, bigint),
    authaudit.inclusion_proof(text, bigint, bigint),
    authaudit.consistency_proof(text, bigint, bigint),
    authaudit.inclusion_evidence(text, bigint, bigint)
    TO authaudit_reader, authaudit_auditor;
COMMENT ON FUNCTION authaudit.merkle_root(text, bigint) IS
    'The root of the RFC 9162 Merkle tree over the tenant''s first tree_size rows (docs/chain-format.md, "Merkle tree").';
COMMENT ON FUNCTION authaudit.inclusion_proof(text, bigint, bigint) IS
    'The RFC 9162 audit path of the row at seq in the tree of the tenant''s first tree_size rows.';
COMMENT ON FUNCTION authaudit.consistency_proof(text, bigint, bigint) IS
    'The RFC 9162 consistency proof between the trees of the tenant''s first old_size and new_size rows.';
