-- pg_authaudit 0.6.0 -> 0.7.0 (docs/installation.md, "Upgrading").
--
-- Retention re-anchors all three chains: the retention_applied event
-- records the anchor's SHA-256 link and its SHA-512 and SHA3-256 digests
-- (0.6.0 recorded the link only; its events still verify with the
-- checkpoint). Rows and chains are unchanged.

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

