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

-- Signed checkpoints that conflict with one stored before: the same
-- tenant, tree size and key, another note. A witness key never signs two
-- trees of one size: such a pair means the key, or the witness, cannot be
-- trusted for that size, and no evidence is built on it.
CREATE TABLE authaudit.witness_disagreements (
    tenant_id     text        NOT NULL,
    tree_size     bigint      NOT NULL,
    witness_key   text        NOT NULL,
    note          text        NOT NULL,
    stored_note   text        NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    recorded_by   name        NOT NULL,
    CONSTRAINT witness_disagreements_pkey PRIMARY KEY (tenant_id, tree_size, witness_key, note)
);
REVOKE ALL ON authaudit.witness_disagreements FROM PUBLIC;
COMMENT ON TABLE authaudit.witness_disagreements IS
    'Signed checkpoints that conflict with the stored note of the same tenant, size and key (record_witness_disagreement).';

CREATE TRIGGER witness_disagreements_append_only
    BEFORE UPDATE OR DELETE ON authaudit.witness_disagreements
    FOR EACH STATEMENT EXECUTE FUNCTION authaudit._refuse_change();
CREATE TRIGGER witness_disagreements_no_truncate
    BEFORE TRUNCATE ON authaudit.witness_disagreements
    FOR EACH STATEMENT EXECUTE FUNCTION authaudit._refuse_change();

-- Stores one signed checkpoint of a tenant's log: refused unless a key of
-- authaudit.witness_keys signed it (55000 when none is set, 22023
-- otherwise) and its origin names the tenant. Idempotent. A note that
-- conflicts with the stored one of the same size and key is refused
-- (XX001); record_witness_disagreement keeps it. For auditors and admins
-- (the sidecar's role is an auditor).
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
        IF v.root_hash IS DISTINCT FROM o.root_hash OR v.link_sha256 IS DISTINCT FROM o.link_sha256
           OR v.digest_sha512 IS DISTINCT FROM o.digest_sha512
           OR v.digest_sha3_256 IS DISTINCT FROM o.digest_sha3_256 THEN
            RAISE EXCEPTION 'pg_authaudit: witness key % signed two different trees of size % for tenant %',
                o.key_name, o.tree_size, record_witness_checkpoint.tenant_id
                USING ERRCODE = 'data_corrupted',
                      HINT = 'Keep the note with authaudit.record_witness_disagreement; no evidence is built on this size.';
        END IF;
    END IF;
    RETURN v;
END;
$$;

COMMENT ON FUNCTION authaudit.record_witness_checkpoint(text, text) IS
    'Stores a signed checkpoint of the witness after checking its signature against authaudit.witness_keys (auditors and admins).';

-- Keeps a signed checkpoint that record_witness_checkpoint refused because
-- it conflicts with the stored note of the same size and key (its
-- signature is checked the same way). Returns whether it was new.
CREATE FUNCTION authaudit.record_witness_disagreement(tenant_id text, note text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    o       record;
    v_note  text;
BEGIN
    IF NOT authaudit._writer_is_overseer() THEN
        RAISE EXCEPTION 'pg_authaudit: role % may not record witness checkpoints (authaudit_auditor or authaudit_admin only)',
            authaudit._writer_role()
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT * INTO o FROM authaudit._open_witness_checkpoint(record_witness_disagreement.tenant_id,
                                                            record_witness_disagreement.note);
    SELECT w.note INTO v_note FROM authaudit.witness_checkpoints w
     WHERE w.tenant_id = record_witness_disagreement.tenant_id
       AND w.tree_size = o.tree_size AND w.witness_key = o.witness_key
       AND w.root_hash IS DISTINCT FROM o.root_hash;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pg_authaudit: the note conflicts with no stored checkpoint of tenant % (size %)',
            record_witness_disagreement.tenant_id, o.tree_size
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Store an agreeing note with authaudit.record_witness_checkpoint.';
    END IF;
    INSERT INTO authaudit.witness_disagreements
        (tenant_id, tree_size, witness_key, note, stored_note, recorded_by)
    VALUES (record_witness_disagreement.tenant_id, o.tree_size, o.witness_key,
            record_witness_disagreement.note, v_note, authaudit._writer_role())
    ON CONFLICT ON CONSTRAINT witness_disagreements_pkey DO NOTHING;
    RETURN FOUND;
END;
$$;

COMMENT ON FUNCTION authaudit.record_witness_disagreement(text, text) IS
    'Keeps a signed checkpoint that conflicts with the stored one of the same size and key (auditors and admins).';

-- One event's evidence against the latest signed checkpoint that covers
-- it and agrees with the log: the tenant's row at its size holds the
-- signed digests now, and no conflicting note of that size and key was
-- recorded. inclusion_evidence at that tree size, with the signed note and
-- the key that signed it, so that tools/verify_evidence.py --key checks it
-- with nothing else. Caller's rights (its scope check and row-level
-- security apply); 55000 when no agreeing signed checkpoint covers the seq.
CREATE FUNCTION authaudit.witnessed_evidence(tenant_id text, seq bigint)
RETURNS jsonb
LANGUAGE plpgsql STABLE STRICT AS $$
DECLARE
    w record;
BEGIN
    SELECT c.tree_size, c.note, c.witness_key INTO w
      FROM authaudit.witness_checkpoints c
      JOIN authaudit.auth_log l ON l.tenant_id = c.tenant_id AND l.seq = c.tree_size
     WHERE c.tenant_id = witnessed_evidence.tenant_id AND c.tree_size >= witnessed_evidence.seq
       AND l.link_sha256 = c.link_sha256 AND l.digest_sha512 = c.digest_sha512
       AND l.digest_sha3_256 = c.digest_sha3_256
       AND NOT EXISTS (SELECT FROM authaudit.witness_disagreements d
                        WHERE d.tenant_id = c.tenant_id AND d.tree_size = c.tree_size
                          AND d.witness_key = c.witness_key)
     ORDER BY c.tree_size DESC, c.signed_at DESC LIMIT 1;
    IF NOT FOUND THEN
        -- Refused by the proof's scope check first for a caller without it.
        PERFORM authaudit.merkle_root(witnessed_evidence.tenant_id, NULL);
        RAISE EXCEPTION 'pg_authaudit: no signed checkpoint of tenant % that agrees with the log covers seq % yet',
            witnessed_evidence.tenant_id, witnessed_evidence.seq
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'The sidecar writes checkpoints back every --witness-every rows or --witness-interval-ms; a checkpoint that disagrees with the log is never used (run authaudit-sidecar witness-check).';
    END IF;
    RETURN authaudit.inclusion_evidence(witnessed_evidence.tenant_id, witnessed_evidence.seq, w.tree_size)
        || jsonb_build_object('checkpoint', w.note, 'witness_key', w.witness_key);
END;
$$;

COMMENT ON FUNCTION authaudit.witnessed_evidence(text, bigint) IS
    'One event with its audit path and the latest signed checkpoint that agrees with the log, for tools/verify_evidence.py --key.';
