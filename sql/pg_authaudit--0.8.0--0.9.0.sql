-- pg_authaudit 0.8.0 -> 0.9.0 (docs/installation.md, "Upgrading").
--
-- Hostile input and hostile tenants: bindings follow the role (its oid),
-- not its name; a checkpoint is anchored only over a continuous chain;
-- evidence uses the latest signed checkpoint that agrees with the log, and
-- a conflicting signed checkpoint is refused and kept as a witness
-- disagreement; the investigation shows the locks the live engine enforced
-- beside the event-time replay's. Rows and chains are unchanged.

\echo Use "ALTER EXTENSION pg_authaudit UPDATE TO '0.9.0'" to load this file. \quit

-- Bindings hold the role itself (docs/security.md, "Bindings"): a binding
-- whose role no longer exists gets no role_oid and binds nobody.
ALTER TABLE authaudit.tenant_scope ADD COLUMN role_oid regrole;
UPDATE authaudit.tenant_scope s SET role_oid = r.oid::regrole
  FROM pg_catalog.pg_roles r WHERE r.rolname = s.role_name;
DROP INDEX authaudit.tenant_scope_key;
CREATE UNIQUE INDEX tenant_scope_role_key
    ON authaudit.tenant_scope (role_oid, tenant_id, (coalesce(org_id, '')));
DROP POLICY own_bindings ON authaudit.tenant_scope;
CREATE POLICY own_bindings ON authaudit.tenant_scope FOR SELECT
    USING (role_oid OPERATOR(pg_catalog.=)
           pg_catalog.to_regrole(pg_catalog.quote_ident(current_user)));
CREATE FUNCTION authaudit._tenant_scope_role() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_name name;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.role_name IS DISTINCT FROM OLD.role_name
       AND NEW.role_oid IS NOT DISTINCT FROM OLD.role_oid THEN
        NEW.role_oid := NULL;
    END IF;
    IF NEW.role_oid IS NULL THEN
        SELECT r.oid::regrole INTO NEW.role_oid FROM pg_catalog.pg_roles r
         WHERE r.rolname = NEW.role_name;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'pg_authaudit: role "%" does not exist', NEW.role_name
                USING ERRCODE = 'undefined_object',
                      HINT = 'Create the role before binding it: a binding holds the role itself, not its name.';
        END IF;
    ELSE
        SELECT r.rolname INTO v_name FROM pg_catalog.pg_roles r WHERE r.oid = NEW.role_oid;
        IF FOUND THEN
            NEW.role_name := v_name;
        END IF;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER tenant_scope_role
    BEFORE INSERT OR UPDATE ON authaudit.tenant_scope
    FOR EACH ROW EXECUTE FUNCTION authaudit._tenant_scope_role();

-- Witness checkpoints that conflict with a stored one are refused, and
-- kept apart; evidence uses the latest checkpoint that agrees with the log.
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

CREATE OR REPLACE FUNCTION authaudit.record_witness_checkpoint(tenant_id text, note text)
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

CREATE OR REPLACE FUNCTION authaudit.witnessed_evidence(tenant_id text, seq bigint)
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

ALTER TABLE authaudit.witness_disagreements ENABLE ROW LEVEL SECURITY;
ALTER TABLE authaudit.witness_disagreements FORCE ROW LEVEL SECURITY;
CREATE POLICY reader_scope ON authaudit.witness_disagreements FOR SELECT TO authaudit_reader
    USING (tenant_id = ANY (authaudit._read_tenants())
           AND authaudit._may_read(tenant_id, NULL));
CREATE POLICY auditor_all ON authaudit.witness_disagreements FOR SELECT TO authaudit_auditor USING (true);
CREATE POLICY admin_reads ON authaudit.witness_disagreements FOR SELECT TO authaudit_admin USING (true);
GRANT SELECT ON authaudit.witness_disagreements TO authaudit_reader, authaudit_auditor, authaudit_admin;
REVOKE EXECUTE ON FUNCTION authaudit.record_witness_disagreement(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION authaudit.record_witness_disagreement(text, text)
    TO authaudit_auditor, authaudit_admin;
SELECT pg_catalog.pg_extension_config_dump('authaudit.witness_disagreements', '');

-- The investigation shows the locks the live engine enforced beside the
-- event-time replay's (docs/investigation.md).
DROP FUNCTION authaudit.lockout_timeline(text, timestamptz, timestamptz);
DROP FUNCTION authaudit.targeted_accounts(text, timestamptz, timestamptz);
DROP FUNCTION authaudit.lockout_replay(text, timestamptz, timestamptz);
CREATE FUNCTION authaudit.lockout_replay(
	"tenant_id" TEXT, /* & str */
	"from_time" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"to_time" timestamp with time zone DEFAULT NULL /* Option < TimestampWithTimeZone > */
) RETURNS TABLE (
	"decision" bigint,  /* i64 */
	"seq" bigint,  /* i64 */
	"log_id" uuid,  /* Uuid */
	"occurred_at" timestamp with time zone,  /* TimestampWithTimeZone */
	"event_type" TEXT,  /* String */
	"user_id" TEXT,  /* String */
	"org_id" TEXT,  /* Option < String > */
	"ip" inet,  /* Option < Inet > */
	"account_key" TEXT,  /* String */
	"failures_in_window" INT,  /* Option < i32 > */
	"while_locked" bool,  /* bool */
	"locked_account" bool,  /* bool */
	"lock_rule" TEXT,  /* Option < String > */
	"lock_count" INT,  /* Option < i32 > */
	"locked_until" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"permanent" bool,  /* Option < bool > */
	"ip_blocked_until" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"ip_account_blocked_until" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"preceding_failures" INT,  /* Option < i32 > */
	"was_locked" bool,  /* Option < bool > */
	"failing_ips" inet[],  /* :: std :: option :: Option < Vec < Inet > > */
	"enforced_lock_seq" bigint  /* Option < i64 > */
)
STABLE SECURITY DEFINER PARALLEL RESTRICTED
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'lockout_replay_wrapper';
SET LOCAL check_function_bodies = off;
CREATE FUNCTION authaudit.targeted_accounts(tenant_id text, from_time timestamptz, to_time timestamptz)
RETURNS TABLE (user_id text, failures bigint, distinct_ips bigint, first_attempt timestamptz,
               last_attempt timestamptz, locks bigint, locked_now boolean, enforced_locks bigint)
LANGUAGE plpgsql STABLE
-- Each call is planned for its arguments, as a query with them written
-- in would be.
SET plan_cache_mode = force_custom_plan AS $$
#variable_conflict use_column
DECLARE
    v_users text[];
    v_locks bigint[];
    v_enforced bigint[];
BEGIN
    -- One replay for the call, in a statement of its own (on Citus the
    -- replay's reads are distributed queries, which may not run inside the
    -- shard query below).
    SELECT coalesce(array_agg(k.user_id), '{}'), coalesce(array_agg(k.n), '{}'),
           coalesce(array_agg(k.enforced), '{}')
      INTO v_users, v_locks, v_enforced
      FROM (SELECT r.user_id, count(*) FILTER (WHERE r.locked_account) AS n,
                   count(*) FILTER (WHERE r.enforced_lock_seq IS NOT NULL) AS enforced
              FROM authaudit.lockout_replay(targeted_accounts.tenant_id, targeted_accounts.from_time,
                                            targeted_accounts.to_time) r
             WHERE r.locked_account OR r.enforced_lock_seq IS NOT NULL
             GROUP BY r.user_id) k;
    RETURN QUERY
        WITH locks AS (SELECT * FROM unnest(v_users, v_locks, v_enforced) AS k(user_id, n, enforced))
        SELECT l.user_id,
               count(*),
               count(DISTINCT l.ip),
               min(l.occurred_at),
               max(l.occurred_at),
               coalesce((SELECT k.n FROM locks k WHERE k.user_id = l.user_id), 0),
               -- The state row is the account key's (docs/lockout.md).
               coalesce((SELECT s.locked AND (s.locked_until IS NULL OR s.locked_until > now())
                           FROM authaudit.lockout_state s
                          WHERE s.tenant_id = targeted_accounts.tenant_id
                            AND s.user_id = authaudit.account_key(targeted_accounts.tenant_id, l.user_id)),
                        false),
               coalesce((SELECT k.enforced FROM locks k WHERE k.user_id = l.user_id), 0)
          FROM authaudit.auth_log l
         WHERE l.tenant_id = targeted_accounts.tenant_id
           AND l.occurred_at >= targeted_accounts.from_time AND l.occurred_at < targeted_accounts.to_time
           AND l.event_type = 'login_failed'
         GROUP BY l.user_id
         ORDER BY 2 DESC, 1;
END;
$$;

CREATE FUNCTION authaudit.lockout_timeline(tenant_id text, from_time timestamptz, to_time timestamptz)
RETURNS TABLE (seq bigint, occurred_at timestamptz, user_id text, event_type text, rule text,
               failures integer, locked_until timestamptz, permanent boolean, triggered_by uuid,
               enforced boolean, replayed boolean)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    r record;
    v_lock jsonb;   -- the metadata of the account_locked event enforced live
    v_reset jsonb;  -- the metadata of a lockout_reset
BEGIN
    -- The replay is its own statement and each row it names is read by key
    -- (on Citus the replay's reads are distributed queries, which may not
    -- run inside a shard query).
    FOR r IN
        SELECT q.* FROM authaudit.lockout_replay(lockout_timeline.tenant_id, lockout_timeline.from_time,
                                                 lockout_timeline.to_time) q
         WHERE q.locked_account OR q.enforced_lock_seq IS NOT NULL OR q.event_type = 'lockout_reset'
         ORDER BY q.decision
    LOOP
        v_lock := NULL;
        v_reset := NULL;
        IF r.enforced_lock_seq IS NOT NULL THEN
            SELECT l.metadata INTO v_lock FROM authaudit.auth_log l
             WHERE l.tenant_id = lockout_timeline.tenant_id AND l.seq = r.enforced_lock_seq;
        END IF;
        IF r.event_type = 'lockout_reset' THEN
            SELECT l.metadata INTO v_reset FROM authaudit.auth_log l
             WHERE l.tenant_id = lockout_timeline.tenant_id AND l.log_id = r.log_id;
        END IF;
        seq := r.seq;
        occurred_at := r.occurred_at;
        user_id := r.user_id;
        event_type := CASE WHEN r.event_type = 'lockout_reset' THEN 'lockout_reset' ELSE 'account_locked' END;
        rule := CASE WHEN r.locked_account THEN r.lock_rule
                     WHEN r.event_type = 'lockout_reset' THEN v_reset ->> 'reason'
                     ELSE v_lock ->> 'reason' END;
        failures := CASE WHEN r.locked_account THEN r.failures_in_window
                         WHEN r.event_type <> 'lockout_reset' THEN (v_lock ->> 'failures')::integer END;
        locked_until := CASE WHEN r.locked_account THEN r.locked_until
                             WHEN r.event_type <> 'lockout_reset' THEN (v_lock ->> 'locked_until')::timestamptz END;
        permanent := CASE WHEN r.locked_account THEN r.permanent
                          WHEN r.event_type <> 'lockout_reset' THEN (v_lock ->> 'permanent')::boolean END;
        triggered_by := CASE WHEN r.event_type <> 'lockout_reset' THEN r.log_id END;
        enforced := CASE WHEN r.event_type = 'lockout_reset'
                         THEN (v_reset #>> '{_authaudit,imported}') IS NULL
                         ELSE r.enforced_lock_seq IS NOT NULL END;
        replayed := r.event_type = 'lockout_reset' OR r.locked_account;
        RETURN NEXT;
    END LOOP;
END;
$$;
SET LOCAL check_function_bodies = on;
REVOKE EXECUTE ON FUNCTION
    authaudit.lockout_replay(text, timestamptz, timestamptz),
    authaudit.targeted_accounts(text, timestamptz, timestamptz),
    authaudit.lockout_timeline(text, timestamptz, timestamptz)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    authaudit.lockout_replay(text, timestamptz, timestamptz),
    authaudit.targeted_accounts(text, timestamptz, timestamptz),
    authaudit.lockout_timeline(text, timestamptz, timestamptz)
    TO authaudit_reader, authaudit_auditor;
COMMENT ON FUNCTION authaudit.lockout_replay(text, timestamptz, timestamptz) IS
    'The lockout engine''s decision for each event of a tenant, in event-time order whatever the arrival order.';

-- Lockout answers replay from snapshots (docs/lockout.md, "Snapshots");
-- a retention invalidates the snapshots made before it.
-- Snapshots of the lockout engine's event-time replay (docs/lockout.md,
-- "Snapshots"): the engine's state after every event of a tenant up to a
-- point in event time, so that an answer about a period, or a rebuild,
-- replays from the snapshot before it. Derived data: written and read only
-- by the extension's functions, removed when history before their point
-- arrives, not dumped (a restored database makes them again).
CREATE TABLE authaudit.lockout_snapshots (
    tenant_id    text        NOT NULL,
    -- The last event the state covers, in event-time order.
    point_at     timestamptz NOT NULL,
    point_log_id uuid        NOT NULL,
    -- The highest seq of the tenant the replay saw: it holds every
    -- lockout event up to its point with a seq up to this one.
    max_seq      bigint      NOT NULL,
    events       bigint      NOT NULL,
    -- The policy and key rules it was replayed under (a fingerprint).
    rules        text        NOT NULL,
    state        bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT lockout_snapshots_pkey PRIMARY KEY (tenant_id, point_at, point_log_id)
);
REVOKE ALL ON authaudit.lockout_snapshots FROM PUBLIC;
ALTER TABLE authaudit.lockout_snapshots ENABLE ROW LEVEL SECURITY;
ALTER TABLE authaudit.lockout_snapshots FORCE ROW LEVEL SECURITY;
COMMENT ON TABLE authaudit.lockout_snapshots IS
    'The lockout engine''s replay state at points in event time, per tenant (docs/lockout.md, "Snapshots").';

-- History recorded behind snapshots: a statement that chained lockout
-- events of a tenant dated before a snapshot may have been made (imported
-- ones, live ones older than a day, a retention) leaves a row; a snapshot
-- that does not hold seq (max_seq < seq) and whose point is at or after
-- from_at is not used.
CREATE TABLE authaudit.lockout_snapshot_invalidations (
    tenant_id text        NOT NULL,
    -- The highest seq the statement chained for the tenant.
    seq       bigint      NOT NULL,
    -- The earliest event time among its events.
    from_at   timestamptz NOT NULL,
    CONSTRAINT lockout_snapshot_invalidations_pkey PRIMARY KEY (tenant_id, seq)
);
REVOKE ALL ON authaudit.lockout_snapshot_invalidations FROM PUBLIC;
ALTER TABLE authaudit.lockout_snapshot_invalidations ENABLE ROW LEVEL SECURITY;
ALTER TABLE authaudit.lockout_snapshot_invalidations FORCE ROW LEVEL SECURITY;
COMMENT ON TABLE authaudit.lockout_snapshot_invalidations IS
    'History recorded before lockout snapshots were made, which they do not hold (docs/lockout.md, "Snapshots").';

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

-- Verification from the latest checkpoint on (docs/sql-reference.md,
-- "verify_chain").
CREATE FUNCTION authaudit.verify_chain(
	"tenant_id" TEXT, /* & str */
	"full" bool /* bool */
) RETURNS TABLE (
	"ok" bool,  /* bool */
	"rows_checked" bigint,  /* i64 */
	"first_bad_seq" bigint,  /* Option < i64 > */
	"reason" TEXT,  /* Option < String > */
	"anchor_seq" bigint,  /* Option < i64 > */
	"checkpoints_checked" bigint,  /* i64 */
	"mode" TEXT  /* String */
)
STRICT STABLE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'verify_chain_mode_wrapper';
REVOKE EXECUTE ON FUNCTION authaudit.verify_chain(text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION authaudit.verify_chain(text, boolean) TO authaudit_reader, authaudit_auditor;

-- The dashboard's poll (docs/sql-reference.md, "event_rates") reads
-- per-minute counts kept by the rollup worker and the rows since, or,
-- for a tenant not rolled up, its last hour through the time index; the
-- BRIN index it used is gone.
DROP INDEX authaudit.auth_log_recorded_brin;

-- Per-minute counts of the last day, kept by the rollup worker
-- (authaudit.rollup_database, docs/configuration.md) or by
-- authaudit.roll_up_event_rates(): the dashboard's poll reads these and
-- the rows recorded since, not the hour's rows.
CREATE TABLE authaudit.event_minutes (
    tenant_id         text        NOT NULL,
    org_id            text,
    minute            timestamptz NOT NULL,
    event_type        text        NOT NULL,
    events            bigint      NOT NULL,
    imported          bigint      NOT NULL,
    max_recording_lag interval    NOT NULL,
    CONSTRAINT event_minutes_key UNIQUE NULLS NOT DISTINCT (tenant_id, minute, event_type, org_id)
);
-- Per tenant, the seq up to which its events are counted in
-- event_minutes (a tenant's committed events are a prefix of its seqs),
-- and when the rollup last looked at it.
CREATE TABLE authaudit.event_minutes_rolled (
    tenant_id  text        NOT NULL,
    seq        bigint      NOT NULL,
    checked_at timestamptz NOT NULL,
    CONSTRAINT event_minutes_rolled_pkey PRIMARY KEY (tenant_id)
);
REVOKE ALL ON authaudit.event_minutes, authaudit.event_minutes_rolled FROM PUBLIC;

-- One pass of the rollup: each tenant's events recorded since its last
-- pass (at most max_rows of them), counted into its minutes when they
-- occurred within the last day; a tenant seen the first time counts its
-- last day by event time. Minutes older than a day are dropped. Returns
-- the number of events read past the tenants' last seqs.
CREATE FUNCTION authaudit.roll_up_event_rates(max_rows bigint DEFAULT 100000) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cutoff constant timestamptz := date_trunc('minute', now()) - interval '1 day';
    t text;
    done bigint;
    checked timestamptz;
    top bigint;
    n bigint;
    total bigint := 0;
BEGIN
    IF max_rows IS NULL OR max_rows < 1 THEN
        RAISE EXCEPTION 'pg_authaudit: max_rows must be at least 1'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- One pass at a time (the worker's or a caller's): another returns 0.
    IF NOT pg_try_advisory_xact_lock(hashtext('pg_authaudit event rates')) THEN
        RETURN 0;
    END IF;
    FOR t IN
        WITH RECURSIVE tenants(tenant_id) AS (
            (SELECT l.tenant_id FROM authaudit.auth_log l ORDER BY l.tenant_id LIMIT 1)
            UNION ALL
            SELECT (SELECT l.tenant_id FROM authaudit.auth_log l
                     WHERE l.tenant_id > s.tenant_id ORDER BY l.tenant_id LIMIT 1)
              FROM tenants s WHERE s.tenant_id IS NOT NULL)
        SELECT tenants.tenant_id FROM tenants WHERE tenants.tenant_id IS NOT NULL
    LOOP
        SELECT r.seq, r.checked_at INTO done, checked
          FROM authaudit.event_minutes_rolled r WHERE r.tenant_id = t;
        IF NOT FOUND THEN
            -- Every seq up to top is committed (seqs commit in order), so
            -- the next statement sees each of them, whatever its snapshot.
            SELECT max(l.seq) INTO top FROM authaudit.auth_log l WHERE l.tenant_id = t;
            DELETE FROM authaudit.event_minutes m WHERE m.tenant_id = t;
            EXECUTE format(authaudit._event_minutes_insert(),
                           'l.tenant_id = $1 AND l.occurred_at >= $2 AND l.seq <= $3')
              USING t, cutoff, top;
            INSERT INTO authaudit.event_minutes_rolled (tenant_id, seq, checked_at)
                 VALUES (t, top, now());
            CONTINUE;
        END IF;
        -- One-shot plans (EXECUTE): planned for this tenant's seq, so the
        -- (tenant_id, seq) index reads only the rows since.
        EXECUTE 'SELECT max(s.seq), count(*) FROM (SELECT l.seq FROM authaudit.auth_log l
                  WHERE l.tenant_id = $1 AND l.seq > $2 ORDER BY l.seq LIMIT $3) s'
           INTO top, n USING t, done, max_rows;
        IF top IS NOT NULL THEN
            EXECUTE format(authaudit._event_minutes_insert(),
                           'l.tenant_id = $1 AND l.seq > $4 AND l.seq <= $3 AND l.occurred_at >= $2')
              USING t, cutoff, top, done;
            DELETE FROM authaudit.event_minutes m WHERE m.tenant_id = t AND m.minute < cutoff;
            UPDATE authaudit.event_minutes_rolled r SET seq = top, checked_at = now()
             WHERE r.tenant_id = t;
            total := total + n;
        ELSIF checked < now() - interval '1 minute' THEN
            DELETE FROM authaudit.event_minutes m WHERE m.tenant_id = t AND m.minute < cutoff;
            UPDATE authaudit.event_minutes_rolled r SET checked_at = now() WHERE r.tenant_id = t;
        END IF;
    END LOOP;
    RETURN total;
END;
$$;
REVOKE EXECUTE ON FUNCTION authaudit.roll_up_event_rates(bigint) FROM PUBLIC;

-- The rollup's INSERT, its WHERE clause left as %s.
CREATE FUNCTION authaudit._event_minutes_insert() RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
SELECT 'INSERT INTO authaudit.event_minutes AS m
            (tenant_id, org_id, minute, event_type, events, imported, max_recording_lag)
        SELECT l.tenant_id, l.org_id, date_trunc(''minute'', l.occurred_at), l.event_type, count(*),
               count(*) FILTER (WHERE l.metadata #>> ''{_authaudit,imported}'' = ''true''),
               max(l.recorded_at - l.occurred_at)
          FROM authaudit.auth_log l WHERE %s
         GROUP BY 1, 2, 3, 4
        ON CONFLICT ON CONSTRAINT event_minutes_key DO UPDATE
           SET events = m.events + excluded.events,
               imported = m.imported + excluded.imported,
               max_recording_lag = greatest(m.max_recording_lag, excluded.max_recording_lag)'
$$;
REVOKE EXECUTE ON FUNCTION authaudit._event_minutes_insert() FROM PUBLIC;

-- The poll, a function so that it runs without JIT: the planner cannot
-- know how few rows the per-tenant reads return, and compiling would cost
-- far more than the query (docs/configuration.md, "jit"). Invoker rights:
-- row-level security scopes it like the log itself.
CREATE FUNCTION authaudit._event_rates()
RETURNS TABLE (tenant_id text, minute timestamptz, event_type text, events bigint,
               minute_failures numeric, failure_ratio numeric, max_recording_lag interval,
               imported bigint)
LANGUAGE sql STABLE SET jit = off SET search_path = pg_catalog, pg_temp AS $$
WITH RECURSIVE tenants(tenant_id) AS (
    -- The tenants the caller sees, one index probe each (auth_log_pkey
    -- leads with tenant_id): the poll never reads the history.
    (SELECT l.tenant_id FROM authaudit.auth_log l ORDER BY l.tenant_id LIMIT 1)
    UNION ALL
    SELECT (SELECT l.tenant_id FROM authaudit.auth_log l
             WHERE l.tenant_id > t.tenant_id ORDER BY l.tenant_id LIMIT 1)
      FROM tenants t WHERE t.tenant_id IS NOT NULL),
since(minute) AS (SELECT date_trunc('minute', now()) - interval '59 minutes'),
-- A tenant the rollup looked at within five minutes is counted from its
-- minutes and the rows after its seq; any other from its last hour's rows.
-- Each per-tenant read is a LATERAL subquery kept whole (OFFSET 0): an
-- index scan per tenant, never a join over the log.
rolled AS (
    SELECT r.tenant_id, r.seq,
           (SELECT max(l.seq) FROM authaudit.auth_log l WHERE l.tenant_id = r.tenant_id) AS top
      FROM tenants t
      JOIN authaudit.event_minutes_rolled r ON r.tenant_id = t.tenant_id
     WHERE r.checked_at >= now() - interval '5 minutes'),
counts AS (
    SELECT m.tenant_id, m.minute, m.event_type, m.events, m.max_recording_lag, m.imported
      FROM rolled r, since,
           LATERAL (SELECT * FROM authaudit.event_minutes m
                     WHERE m.tenant_id = r.tenant_id AND m.minute >= since.minute OFFSET 0) m
    UNION ALL
    -- Rows after the rollup's seq, through auth_log_tenant_seq_key (the
    -- minute test is no index condition, so the time index is not used;
    -- the seq range between two parameters is costed as the few rows it
    -- is, and such a poll never crosses jit_above_cost).
    SELECT l.tenant_id, date_trunc('minute', l.occurred_at), l.event_type, 1,
           l.recorded_at - l.occurred_at,
           CASE WHEN l.metadata #>> '{_authaudit,imported}' = 'true' THEN 1 ELSE 0 END
      FROM rolled r, since,
           LATERAL (SELECT * FROM authaudit.auth_log l
                     WHERE l.tenant_id = r.tenant_id AND l.seq > r.seq AND l.seq <= r.top OFFSET 0) l
     WHERE date_trunc('minute', l.occurred_at) >= since.minute
    UNION ALL
    -- Tenants not rolled up: the last hour through auth_log_tenant_time_idx.
    SELECT l.tenant_id, date_trunc('minute', l.occurred_at), l.event_type, 1,
           l.recorded_at - l.occurred_at,
           CASE WHEN l.metadata #>> '{_authaudit,imported}' = 'true' THEN 1 ELSE 0 END
      FROM tenants t,
           LATERAL (SELECT * FROM authaudit.auth_log l
                     WHERE l.tenant_id = t.tenant_id
                       AND l.occurred_at >= date_trunc('minute', now()) - interval '59 minutes'
                    OFFSET 0) l
     WHERE t.tenant_id IS NOT NULL  -- the recursion's last row
       AND NOT EXISTS (SELECT FROM rolled r WHERE r.tenant_id = t.tenant_id))
SELECT r.tenant_id, r.minute, r.event_type, r.events,
       sum(r.events) FILTER (WHERE r.event_type = 'login_failed')
           OVER (PARTITION BY r.tenant_id, r.minute) AS minute_failures,
       round(coalesce(sum(r.events) FILTER (WHERE r.event_type = 'login_failed')
                          OVER (PARTITION BY r.tenant_id, r.minute), 0)
             / nullif(sum(r.events) FILTER (WHERE r.event_type IN ('login_failed', 'login_success'))
                          OVER (PARTITION BY r.tenant_id, r.minute), 0), 3) AS failure_ratio,
       r.max_recording_lag, r.imported
  FROM (SELECT c.tenant_id, c.minute, c.event_type, sum(c.events)::bigint AS events,
               max(c.max_recording_lag) AS max_recording_lag, sum(c.imported)::bigint AS imported
          FROM counts c
         GROUP BY 1, 2, 3) r
$$;
REVOKE EXECUTE ON FUNCTION authaudit._event_rates() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION authaudit._event_rates() TO authaudit_reader, authaudit_auditor;

CREATE OR REPLACE VIEW authaudit.event_rates WITH (security_invoker = true) AS
SELECT * FROM authaudit._event_rates();

-- The rollup behind event_rates: readers see their scope's minutes (by
-- organisation, like the rows) and their tenants' rollup positions.
ALTER TABLE authaudit.event_minutes ENABLE ROW LEVEL SECURITY;
ALTER TABLE authaudit.event_minutes FORCE ROW LEVEL SECURITY;
CREATE POLICY reader_scope ON authaudit.event_minutes FOR SELECT TO authaudit_reader
    USING (tenant_id = ANY (authaudit._read_tenants())
           AND authaudit._may_read(tenant_id, org_id));
CREATE POLICY auditor_all ON authaudit.event_minutes FOR SELECT TO authaudit_auditor USING (true);
ALTER TABLE authaudit.event_minutes_rolled ENABLE ROW LEVEL SECURITY;
ALTER TABLE authaudit.event_minutes_rolled FORCE ROW LEVEL SECURITY;
CREATE POLICY reader_scope ON authaudit.event_minutes_rolled FOR SELECT TO authaudit_reader
    USING (tenant_id = ANY (authaudit._read_tenants()));
CREATE POLICY auditor_all ON authaudit.event_minutes_rolled FOR SELECT TO authaudit_auditor
    USING (true);
GRANT SELECT ON authaudit.event_minutes, authaudit.event_minutes_rolled
    TO authaudit_reader, authaudit_auditor;
GRANT EXECUTE ON FUNCTION authaudit.roll_up_event_rates(bigint) TO authaudit_admin;

-- Retention's DELETE leaves the log's only dead rows, a month of a tenant
-- at a time. Vacuum them soon after, whatever the table's size (the default
-- waits for a fifth of the table, a year of a large log): their space is
-- then reused by later appends, and index scans from a tenant's oldest row
-- no longer step over them (docs/retention.md, "Space").
ALTER TABLE authaudit.auth_log SET (autovacuum_vacuum_scale_factor = 0.01,
                                    autovacuum_vacuum_threshold = 10000);

-- The append-only refusal names the table it protects.
CREATE OR REPLACE FUNCTION authaudit._refuse_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- apply_retention's own DELETE (a per-transaction grant, src/retention.rs).
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'auth_log' AND authaudit._retention_active() THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'pg_authaudit: % on %.% is not allowed: the table is append-only',
        TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = CASE TG_TABLE_NAME
                  WHEN 'auth_log' THEN 'Events are recorded through authaudit.record_event; history is never rewritten.'
                  ELSE 'Rows are added through the extension''s functions (authaudit.checkpoint, authaudit.record_witness_checkpoint); none is ever changed or removed.'
              END;
END;
$$;

-- import_events holds the batch's tenants' lockout state before it chains
-- the batch, not after (a live recorder that appended meanwhile and the
-- rebuild waited for each other: a deadlock).
CREATE FUNCTION authaudit."_hold_for_rebuild"(
	"tenants" TEXT[] /* Vec < String > */
) RETURNS bigint /* i64 */
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'hold_for_rebuild_wrapper';
REVOKE EXECUTE ON FUNCTION authaudit._hold_for_rebuild(text[]) FROM PUBLIC;

CREATE OR REPLACE FUNCTION authaudit.import_events(events jsonb, rebuild boolean DEFAULT true)
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

-- Scale-out on Citus (docs/scale-out.md). The bindings' policy names the
-- role without a subquery (above): Citus replicates a reference table only
-- when its policies hold none. record_events(tenant_id, events) takes the
-- tenant as its own argument, which Citus routes the call by.
CREATE FUNCTION authaudit."record_events"(
	"tenant_id" TEXT, /* Option < String > */
	"events" jsonb /* Option < Jsonb > */
) RETURNS SETOF authaudit.auth_log /* :: pgrx :: heap_tuple :: PgHeapTuple < '_, :: pgrx :: pgbox :: AllocatedByRust
> */
VOLATILE SECURITY DEFINER PARALLEL UNSAFE  
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'record_tenant_events_rows_wrapper';
REVOKE EXECUTE ON FUNCTION authaudit.record_events(text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION authaudit.record_events(text, jsonb) TO authaudit_writer;

COMMENT ON FUNCTION authaudit.record_events(text, jsonb) IS
    'Records a JSON array of one tenant''s events in one transaction; returns the stored rows in input order.';

-- Run once on the Citus coordinator, as a superuser, after
-- CREATE EXTENSION citus and pg_authaudit on every node and citus_add_node
-- for every worker. Idempotent: what is distributed already is left as it
-- is. Returns each object and what it became.
CREATE FUNCTION authaudit.distribute(shard_count integer DEFAULT 32)
RETURNS TABLE (object text, distributed_as text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- Every table keyed by tenant_id, colocated with the log: a tenant's
    -- rows of all of them are on one worker.
    by_tenant constant text[] := ARRAY[
        'authaudit.auth_log', 'authaudit.lockout_state', 'authaudit.lockout_ip_state',
        'authaudit.lockout_ip_account_state', 'authaudit.lockout_snapshots',
        'authaudit.lockout_snapshot_invalidations', 'authaudit.checkpoints',
        'authaudit.event_minutes', 'authaudit.event_minutes_rolled',
        'authaudit.witness_checkpoints', 'authaudit.witness_disagreements'];
    -- Read by every call on every worker.
    everywhere constant text[] := ARRAY['authaudit.tenant_scope', 'authaudit.lockout_policy'];
    -- The functions that write a tenant's rows, and their tenant argument:
    -- each runs on the worker holding the tenant's shards.
    delegated constant text[][] := ARRAY[
        ['authaudit.record_event(uuid, text, text, text, text, text, inet, text, timestamptz, jsonb)', '$2'],
        ['authaudit.record_events(text, jsonb)', '$1'],
        ['authaudit.check_login(text, text, inet)', '$1'],
        ['authaudit.record_token_issued(uuid, text, text, text, text, inet, text, text, timestamptz, jsonb)', '$2'],
        ['authaudit.checkpoint(text)', '$1']];
    t text;
    i integer;
    fresh boolean;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus') THEN
        RAISE EXCEPTION 'pg_authaudit: authaudit.distribute() needs the citus extension in this database'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'CREATE EXTENSION citus and pg_authaudit on every node, add the workers, then call authaudit.distribute() on the coordinator (docs/scale-out.md).';
    END IF;
    shard_count := coalesce(shard_count, 32);
    IF shard_count < 1 THEN
        RAISE EXCEPTION 'pg_authaudit: shard_count must be positive, not %', shard_count
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The append-only triggers go with the tables to their shards.
    PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
    -- A shard moves by logical replication, which needs every table's rows
    -- identified: the per-minute counts have a unique key over a nullable
    -- column, not a primary key.
    ALTER TABLE authaudit.event_minutes REPLICA IDENTITY FULL;
    FOREACH t IN ARRAY everywhere LOOP
        object := t;
        EXECUTE 'SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1::regclass)'
            INTO STRICT fresh USING t;
        IF fresh THEN
            EXECUTE 'SELECT pg_catalog.create_reference_table($1::regclass)' USING t;
        END IF;
        distributed_as := 'reference table';
        RETURN NEXT;
    END LOOP;
    FOREACH t IN ARRAY by_tenant LOOP
        object := t;
        EXECUTE 'SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1::regclass)'
            INTO STRICT fresh USING t;
        IF fresh THEN
            IF t = 'authaudit.auth_log' THEN
                EXECUTE 'SELECT pg_catalog.create_distributed_table($1::regclass, ''tenant_id'', shard_count => $2)'
                    USING t, shard_count;
            ELSE
                EXECUTE 'SELECT pg_catalog.create_distributed_table($1::regclass, ''tenant_id'', colocate_with => ''authaudit.auth_log'')'
                    USING t;
            END IF;
        END IF;
        distributed_as := 'distributed by tenant_id';
        RETURN NEXT;
    END LOOP;
    FOR i IN 1 .. array_length(delegated, 1) LOOP
        object := delegated[i][1];
        EXECUTE 'SELECT pg_catalog.create_distributed_function($1::regprocedure, $2, colocate_with => ''authaudit.auth_log'', force_delegation => true)'
            USING delegated[i][1], delegated[i][2];
        distributed_as := 'delegated by tenant_id';
        RETURN NEXT;
    END LOOP;
END;
$$;
REVOKE EXECUTE ON FUNCTION authaudit.distribute(integer) FROM PUBLIC;

COMMENT ON FUNCTION authaudit.distribute(integer) IS
    'On a Citus coordinator: distributes the tables by tenant_id and delegates the recording functions to the tenant''s worker (docs/scale-out.md).';

-- The investigation functions and export_cef are PL/pgSQL, planned for each
-- call's arguments: Citus cannot plan an SQL function's parameterized
-- queries over distributed tables (docs/scale-out.md). Same queries.

CREATE OR REPLACE FUNCTION authaudit.attack_sources(tenant_id text, from_time timestamptz, to_time timestamptz)
RETURNS TABLE (ip inet, failures bigint, distinct_accounts bigint, first_seen timestamptz,
               last_seen timestamptz, successes bigint)
LANGUAGE plpgsql STABLE
-- Each call is planned for its arguments, as a query with them written
-- in would be.
SET plan_cache_mode = force_custom_plan AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
        SELECT l.ip,
               count(*) FILTER (WHERE l.event_type = 'login_failed'),
               count(DISTINCT l.user_id) FILTER (WHERE l.event_type = 'login_failed'),
               min(l.occurred_at), max(l.occurred_at),
               count(*) FILTER (WHERE l.event_type = 'login_success')
          FROM authaudit.auth_log l
         WHERE l.tenant_id = attack_sources.tenant_id
           AND l.occurred_at >= attack_sources.from_time AND l.occurred_at < attack_sources.to_time
           AND l.ip IS NOT NULL
           AND l.event_type IN ('login_failed', 'login_success')
         GROUP BY l.ip
        HAVING count(*) FILTER (WHERE l.event_type = 'login_failed') > 0
         ORDER BY 2 DESC, 1;
END;
$$;

CREATE OR REPLACE FUNCTION authaudit.successes_after_failures(tenant_id text, from_time timestamptz,
                                                   to_time timestamptz, min_failures integer DEFAULT 1)
RETURNS TABLE (seq bigint, occurred_at timestamptz, user_id text, ip inet, preceding_failures integer,
               while_locked boolean, failing_ips inet[])
LANGUAGE plpgsql STABLE
-- Each call is planned for its arguments, as a query with them written
-- in would be.
SET plan_cache_mode = force_custom_plan AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
        SELECT r.seq, r.occurred_at, r.user_id, r.ip, r.preceding_failures, r.was_locked,
               nullif(r.failing_ips, '{}')
          FROM authaudit.lockout_replay(successes_after_failures.tenant_id,
                                        successes_after_failures.from_time,
                                        successes_after_failures.to_time) r
         WHERE r.event_type = 'login_success'
           AND (r.preceding_failures >= successes_after_failures.min_failures OR r.was_locked)
         ORDER BY r.decision;
END;
$$;

CREATE OR REPLACE FUNCTION authaudit.compliance_summary(tenant_id text, from_time timestamptz, to_time timestamptz)
RETURNS TABLE (event_type text, channel text, events bigint, accounts bigint, first_event timestamptz,
               last_event timestamptz)
LANGUAGE plpgsql STABLE
-- Each call is planned for its arguments, as a query with them written
-- in would be.
SET plan_cache_mode = force_custom_plan AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
        SELECT l.event_type, l.channel, count(*), count(DISTINCT l.user_id),
               min(l.occurred_at), max(l.occurred_at)
          FROM authaudit.auth_log l
         WHERE l.tenant_id = compliance_summary.tenant_id
           AND l.occurred_at >= compliance_summary.from_time AND l.occurred_at < compliance_summary.to_time
         GROUP BY l.event_type, l.channel
         ORDER BY 1, 2;
END;
$$;

CREATE OR REPLACE FUNCTION authaudit.export_cef(tenant_id text, from_time timestamptz, to_time timestamptz)
RETURNS SETOF text
LANGUAGE plpgsql STABLE
-- Each call is planned for its arguments, as a query with them written
-- in would be.
SET plan_cache_mode = force_custom_plan AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
        -- The row as the log's type (on Citus, l is a shard's row).
        SELECT authaudit.to_cef(ROW(l.*)::authaudit.auth_log)
          FROM authaudit.auth_log l
         WHERE l.tenant_id = export_cef.tenant_id
           AND l.occurred_at >= export_cef.from_time
           AND l.occurred_at < export_cef.to_time
         ORDER BY l.seq;
END;
$$;

CREATE OR REPLACE FUNCTION authaudit.verify_cef(cef_line text) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_tenant text := substring(cef_line FROM ' cs1=([A-Za-z0-9._-]+) cs1Label=tenant( |$)');
    v_id uuid := substring(cef_line
                           FROM 'externalId=([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})')::uuid;
    v_line text;
BEGIN
    -- The row as the log's type (on Citus, l is a shard's row).
    SELECT authaudit.to_cef(ROW(l.*)::authaudit.auth_log) INTO v_line
      FROM authaudit.auth_log l
     WHERE l.tenant_id = v_tenant AND l.log_id = v_id;
    RETURN authaudit._ct_eq(v_line, cef_line);
END;
$$;
