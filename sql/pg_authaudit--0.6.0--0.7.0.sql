-- pg_authaudit 0.6.0 -> 0.7.0 (docs/installation.md, "Upgrading").
--
-- Retention re-anchors all three chains: the retention_applied event
-- records the anchor's SHA-256 link and its SHA-512 and SHA3-256 digests
-- (0.6.0 recorded the link only; its events still verify with the
-- checkpoint). The witness's signed checkpoints are written back to
-- authaudit.witness_checkpoints by the sidecar (record_witness_checkpoint,
-- checked against the new parameter authaudit.witness_keys), and
-- witnessed_evidence bundles one event with the signed checkpoint that
-- covers it. Rows and chains are unchanged.

\echo Use "ALTER EXTENSION pg_authaudit UPDATE TO '0.7.0'" to load this file. \quit

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
                                         'link_sha256', encode(v_cp.link_sha256, 'hex'),
                                         'digest_sha512', encode(v_cp.digest_sha512, 'hex'),
                                         'digest_sha3_256', encode(v_cp.digest_sha3_256, 'hex'))))));
    RETURN QUERY SELECT v_n, v_first, v_cp.seq, v_cp.seq, v_id;
END;
$$;

-- The witness (docs/sidecar.md, "The witness").
CREATE FUNCTION "_open_witness_checkpoint"(
	"tenant_id" TEXT, /* & str */
	"note" TEXT /* & str */
) RETURNS TABLE (
	"tree_size" bigint,  /* i64 */
	"root_hash" bytea,  /* Vec < u8 > */
	"link_sha256" bytea,  /* Vec < u8 > */
	"digest_sha512" bytea,  /* Vec < u8 > */
	"digest_sha3_256" bytea,  /* Vec < u8 > */
	"signed_at" TEXT,  /* String */
	"key_name" TEXT,  /* String */
	"witness_key" TEXT,  /* String */
	"agrees" bool  /* Option < bool > */
)
STRICT STABLE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'open_witness_checkpoint_wrapper';

-- The witness's signed checkpoints, written back by the sidecar for
-- analysts (docs/sidecar.md, "The witness"). PostgreSQL holds copies only:
-- a row is evidence because its note verifies with the witness's published
-- key, which PostgreSQL cannot forge; the witness's store and log hold the
-- originals. Reference: docs/sql-reference.md.

CREATE TABLE authaudit.witness_checkpoints (
    tenant_id       text        NOT NULL,
    tree_size       bigint      NOT NULL,
    root_hash       bytea       NOT NULL,
    link_sha256     bytea       NOT NULL,
    digest_sha512   bytea       NOT NULL,
    digest_sha3_256 bytea       NOT NULL,
    signed_at       timestamptz NOT NULL,
    key_name        text        NOT NULL,
    witness_key     text        NOT NULL,
    note            text        NOT NULL,
    agrees          boolean,
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    recorded_by     name        NOT NULL,
    CONSTRAINT witness_checkpoints_pkey PRIMARY KEY (tenant_id, tree_size, witness_key)
);
REVOKE ALL ON authaudit.witness_checkpoints FROM PUBLIC;
COMMENT ON TABLE authaudit.witness_checkpoints IS
    'Signed checkpoints of the witness (C2SP signed notes), checked against authaudit.witness_keys when written.';
COMMENT ON COLUMN authaudit.witness_checkpoints.agrees IS
    'Whether the tenant''s row at seq tree_size held the signed digests when the checkpoint was written (NULL: retention had removed it).';

CREATE TRIGGER witness_checkpoints_append_only
    BEFORE UPDATE OR DELETE ON authaudit.witness_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION authaudit._refuse_change();
CREATE TRIGGER witness_checkpoints_no_truncate
    BEFORE TRUNCATE ON authaudit.witness_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION authaudit._refuse_change();

-- Stores one signed checkpoint of a tenant's log: refused unless a key of
-- authaudit.witness_keys signed it (55000 when none is set, 22023
-- otherwise) and its origin names the tenant. Idempotent. For auditors and
-- admins (the sidecar's role is an auditor).
CREATE FUNCTION authaudit.record_witness_checkpoint(tenant_id text, note text)
RETURNS authaudit.witness_checkpoints
LANGUAGE plpgsql VOLATILE STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    o   record;
    v   authaudit.witness_checkpoints;
BEGIN
    IF NOT authaudit._writer_is_overseer() THEN
        RAISE EXCEPTION 'pg_authaudit: role % may not record witness checkpoints (authaudit_auditor or authaudit_admin only)',
            authaudit._writer_role()
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT * INTO o FROM authaudit._open_witness_checkpoint(record_witness_checkpoint.tenant_id,
                                                            record_witness_checkpoint.note);
    INSERT INTO authaudit.witness_checkpoints AS w
        (tenant_id, tree_size, root_hash, link_sha256, digest_sha512, digest_sha3_256,
         signed_at, key_name, witness_key, note, agrees, recorded_by)
    VALUES (record_witness_checkpoint.tenant_id, o.tree_size, o.root_hash, o.link_sha256,
            o.digest_sha512, o.digest_sha3_256, o.signed_at::timestamptz, o.key_name,
            o.witness_key, record_witness_checkpoint.note, o.agrees, authaudit._writer_role())
    ON CONFLICT ON CONSTRAINT witness_checkpoints_pkey DO NOTHING
    RETURNING w.* INTO v;
    IF NOT FOUND THEN
        SELECT w.* INTO v FROM authaudit.witness_checkpoints w
         WHERE w.tenant_id = record_witness_checkpoint.tenant_id
           AND w.tree_size = o.tree_size AND w.witness_key = o.witness_key;
    END IF;
    RETURN v;
END;
$$;

COMMENT ON FUNCTION authaudit.record_witness_checkpoint(text, text) IS
    'Stores a signed checkpoint of the witness after checking its signature against authaudit.witness_keys (auditors and admins).';

-- One event's evidence against the latest signed checkpoint that covers
-- it: inclusion_evidence at that tree size, with the signed note and the
-- key that signed it, so that tools/verify_evidence.py --key checks it
-- with nothing else. Caller's rights (its scope check and row-level
-- security apply); 55000 when no signed checkpoint covers the seq yet.
CREATE FUNCTION authaudit.witnessed_evidence(tenant_id text, seq bigint)
RETURNS jsonb
LANGUAGE plpgsql STABLE STRICT AS $$
DECLARE
    w record;
BEGIN
    SELECT c.tree_size, c.note, c.witness_key INTO w
      FROM authaudit.witness_checkpoints c
     WHERE c.tenant_id = witnessed_evidence.tenant_id AND c.tree_size >= witnessed_evidence.seq
     ORDER BY c.tree_size DESC, c.signed_at DESC LIMIT 1;
    IF NOT FOUND THEN
        -- Refused by the proof's scope check first for a caller without it.
        PERFORM authaudit.merkle_root(witnessed_evidence.tenant_id, NULL);
        RAISE EXCEPTION 'pg_authaudit: no signed checkpoint of tenant % covers seq % yet',
            witnessed_evidence.tenant_id, witnessed_evidence.seq
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'The sidecar writes checkpoints back every --witness-every rows or --witness-interval-ms.';
    END IF;
    RETURN authaudit.inclusion_evidence(witnessed_evidence.tenant_id, witnessed_evidence.seq, w.tree_size)
        || jsonb_build_object('checkpoint', w.note, 'witness_key', w.witness_key);
END;
$$;

COMMENT ON FUNCTION authaudit.witnessed_evidence(text, bigint) IS
    'One event with its audit path and the signed checkpoint it leads to, for tools/verify_evidence.py --key.';

-- Witness checkpoints: the same readers as checkpoints; written through
-- record_witness_checkpoint only.
ALTER TABLE authaudit.witness_checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE authaudit.witness_checkpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY reader_scope ON authaudit.witness_checkpoints FOR SELECT TO authaudit_reader
    USING (tenant_id = ANY (authaudit._read_tenants())
           AND authaudit._may_read(tenant_id, NULL));
CREATE POLICY auditor_all ON authaudit.witness_checkpoints FOR SELECT TO authaudit_auditor USING (true);
CREATE POLICY admin_reads ON authaudit.witness_checkpoints FOR SELECT TO authaudit_admin USING (true);
GRANT SELECT ON authaudit.witness_checkpoints TO authaudit_reader, authaudit_auditor, authaudit_admin;
REVOKE EXECUTE ON FUNCTION
    authaudit.record_witness_checkpoint(text, text),
    authaudit._open_witness_checkpoint(text, text),
    authaudit.witnessed_evidence(text, bigint)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION authaudit.record_witness_checkpoint(text, text)
    TO authaudit_auditor, authaudit_admin;
GRANT EXECUTE ON FUNCTION authaudit.witnessed_evidence(text, bigint)
    TO authaudit_reader, authaudit_auditor;

SELECT pg_catalog.pg_extension_config_dump('authaudit.witness_checkpoints', '');
