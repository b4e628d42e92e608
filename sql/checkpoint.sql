-- Checkpoints and retention. A checkpoint records a tenant's chain head
-- (seq and all three digests); verification checks the chain against every
-- checkpoint it passes, so rows removed from the tail after a checkpoint are
-- detected, and a chain whose older rows were removed by retention verifies
-- from the checkpoint it was cut at. Reference: docs/sql-reference.md,
-- docs/retention.md.

CREATE TABLE authaudit.checkpoints (
    tenant_id       text        NOT NULL,
    seq             bigint      NOT NULL,
    link_sha256     bytea       NOT NULL,
    digest_sha512   bytea       NOT NULL,
    digest_sha3_256 bytea       NOT NULL,
    head_log_id     uuid        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    created_by      name        NOT NULL,
    CONSTRAINT checkpoints_pkey PRIMARY KEY (tenant_id, seq)
);
REVOKE ALL ON authaudit.checkpoints FROM PUBLIC;
-- Changed rows reach the mirror whole (docs/sidecar.md, "Tamper alarms").
ALTER TABLE authaudit.checkpoints REPLICA IDENTITY FULL;

CREATE TRIGGER checkpoints_append_only
    BEFORE UPDATE OR DELETE ON authaudit.checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION authaudit._refuse_change();
CREATE TRIGGER checkpoints_no_truncate
    BEFORE TRUNCATE ON authaudit.checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION authaudit._refuse_change();

-- Records the tenant's current chain head as a checkpoint, after verifying
-- the rows since the previous checkpoint (a tampered chain is never
-- anchored: XX001). Returns the checkpoint (the existing one when the head
-- has not moved since).
CREATE FUNCTION authaudit.checkpoint(tenant_id text)
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

COMMENT ON FUNCTION authaudit.checkpoint(text) IS
    'Records the tenant''s verified chain head (seq and digests) in authaudit.checkpoints.';

-- Retention (SOC 2 CC7, GDPR Art. 5(1)(e)): removes a tenant's rows older
-- than a horizon up to the latest checkpoint before it, after verifying them,
-- and appends a retention_applied event saying what went (range, count,
-- and the anchor: the three digests every chain restarts from). Whole rows are deleted rather than their personal fields
-- redacted: see docs/retention.md. For authaudit_admin members only.
CREATE FUNCTION authaudit.apply_retention(tenant_id text, before timestamptz)
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
            apply_retention.before, justify_hours(make_interval(mins => authaudit._min_retention_minutes()))
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
    -- Replays start at the oldest row left now: no lockout snapshot made
    -- before this holds that (docs/lockout.md, "Snapshots").
    INSERT INTO authaudit.lockout_snapshot_invalidations (tenant_id, seq, from_at)
    VALUES (apply_retention.tenant_id, v_event.seq, '-infinity');
    DELETE FROM authaudit.lockout_snapshots s
     WHERE s.tenant_id = apply_retention.tenant_id AND s.max_seq < v_event.seq;
    -- The dashboard's counts are taken again from the rows left, by the
    -- rollup's next pass (one pass at a time: this waits for a running one).
    PERFORM pg_advisory_xact_lock(hashtext('pg_authaudit event rates'));
    DELETE FROM authaudit.event_minutes m WHERE m.tenant_id = apply_retention.tenant_id;
    DELETE FROM authaudit.event_minutes_rolled r WHERE r.tenant_id = apply_retention.tenant_id;
    RETURN QUERY SELECT v_n, v_first, v_cp.seq, v_cp.seq, v_id;
END;
$$;

COMMENT ON FUNCTION authaudit.apply_retention(text, timestamptz) IS
    'Removes a tenant''s rows older than a horizon up to a checkpoint and records a retention_applied event (authaudit_admin only).';

REVOKE EXECUTE ON FUNCTION authaudit._allow_retention(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION authaudit._end_retention() FROM PUBLIC;
