-- pg_authaudit isolation: roles, scope bindings, row-level security.
-- Loaded last by CREATE EXTENSION; reference: docs/security.md.

-- Group roles are cluster-wide: create them once, whichever database first
-- installs the extension.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authaudit_writer') THEN
        CREATE ROLE authaudit_writer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authaudit_reader') THEN
        CREATE ROLE authaudit_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authaudit_auditor') THEN
        CREATE ROLE authaudit_auditor NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authaudit_admin') THEN
        CREATE ROLE authaudit_admin NOLOGIN;
    END IF;
END
$$;

ALTER TABLE authaudit.tenant_scope ENABLE ROW LEVEL SECURITY;
ALTER TABLE authaudit.tenant_scope FORCE ROW LEVEL SECURITY;
-- The role is named without a subquery: Citus replicates a reference
-- table only when its policies hold none (docs/scale-out.md).
CREATE POLICY own_bindings ON authaudit.tenant_scope FOR SELECT
    USING (role_oid OPERATOR(pg_catalog.=)
           pg_catalog.to_regrole(pg_catalog.quote_ident(current_user)));

-- A binding is written with its role's name and holds the role itself
-- (role_oid): an unknown name is refused (42704), a rename of the role is
-- followed, and a role created later under a dropped role's name is not
-- bound. A row that arrives with role_oid (a restored dump names the role
-- there) keeps it, and its role_name is the role's current name.
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
CREATE POLICY admin_manages ON authaudit.tenant_scope FOR ALL TO authaudit_admin
    USING (true) WITH CHECK (true);

-- The log: readers see their scope, auditors everything, nobody else anything.
ALTER TABLE authaudit.auth_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE authaudit.auth_log FORCE ROW LEVEL SECURITY;
-- The policy reads the caller's scope (cached per backend, see
-- pg_authaudit/src/scope.rs): authaudit._read_tenants() lists every tenant
-- it has a binding for, once each, and authaudit._may_read(tenant, org)
-- checks a row against its tenant-wide and organisation bindings. The
-- first conjunct is an index condition whose array is computed once per
-- index scan (a runtime key) and probes once per bound tenant, so rows of
-- other tenants are never even fetched (nothing to count in EXPLAIN
-- ANALYZE); the second runs only on rows of bound tenants. No subquery:
-- an InitPlan costs its set-up in every statement, rows or not.
CREATE POLICY reader_scope ON authaudit.auth_log FOR SELECT TO authaudit_reader
    USING (tenant_id = ANY (authaudit._read_tenants())
           AND authaudit._may_read(tenant_id, org_id));

CREATE TRIGGER tenant_scope_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON authaudit.tenant_scope
    FOR EACH STATEMENT EXECUTE FUNCTION authaudit._scope_changed();

CREATE POLICY auditor_all ON authaudit.auth_log FOR SELECT TO authaudit_auditor
    USING (true);

-- Lockout tables: tenant-wide readers and auditors read; admins set policies.
ALTER TABLE authaudit.lockout_policy ENABLE ROW LEVEL SECURITY;
ALTER TABLE authaudit.lockout_policy FORCE ROW LEVEL SECURITY;
ALTER TABLE authaudit.lockout_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE authaudit.lockout_state FORCE ROW LEVEL SECURITY;
ALTER TABLE authaudit.lockout_ip_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE authaudit.lockout_ip_state FORCE ROW LEVEL SECURITY;
ALTER TABLE authaudit.lockout_ip_account_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE authaudit.lockout_ip_account_state FORCE ROW LEVEL SECURITY;
CREATE POLICY reader_scope ON authaudit.lockout_ip_account_state FOR SELECT TO authaudit_reader
    USING (tenant_id = ANY (authaudit._read_tenants())
           AND authaudit._may_read(tenant_id, NULL));
CREATE POLICY auditor_all ON authaudit.lockout_ip_account_state FOR SELECT TO authaudit_auditor USING (true);
CREATE POLICY reader_scope ON authaudit.lockout_policy FOR SELECT TO authaudit_reader
    USING (tenant_id = ANY (authaudit._read_tenants())
           AND authaudit._may_read(tenant_id, NULL));
CREATE POLICY reader_scope ON authaudit.lockout_state FOR SELECT TO authaudit_reader
    USING (tenant_id = ANY (authaudit._read_tenants())
           AND authaudit._may_read(tenant_id, NULL));
CREATE POLICY reader_scope ON authaudit.lockout_ip_state FOR SELECT TO authaudit_reader
    USING (tenant_id = ANY (authaudit._read_tenants())
           AND authaudit._may_read(tenant_id, NULL));
CREATE POLICY auditor_all ON authaudit.lockout_policy FOR SELECT TO authaudit_auditor USING (true);
CREATE POLICY auditor_all ON authaudit.lockout_state FOR SELECT TO authaudit_auditor USING (true);
CREATE POLICY auditor_all ON authaudit.lockout_ip_state FOR SELECT TO authaudit_auditor USING (true);
CREATE POLICY admin_manages ON authaudit.lockout_policy FOR ALL TO authaudit_admin
    USING (true) WITH CHECK (true);
GRANT SELECT ON authaudit.lockout_policy, authaudit.lockout_state, authaudit.lockout_ip_state,
    authaudit.lockout_ip_account_state TO authaudit_reader, authaudit_auditor;
GRANT SELECT, INSERT, UPDATE, DELETE ON authaudit.lockout_policy TO authaudit_admin;

GRANT USAGE ON SCHEMA authaudit
    TO authaudit_writer, authaudit_reader, authaudit_auditor, authaudit_admin;
GRANT SELECT ON authaudit.tenant_scope
    TO authaudit_writer, authaudit_reader, authaudit_auditor;
GRANT SELECT, INSERT, UPDATE, DELETE ON authaudit.tenant_scope TO authaudit_admin;
GRANT SELECT ON authaudit.auth_log TO authaudit_reader, authaudit_auditor;
GRANT SELECT ON authaudit.event_rates TO authaudit_reader, authaudit_auditor;
GRANT EXECUTE ON FUNCTION authaudit._event_rates() TO authaudit_reader, authaudit_auditor;

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

-- Checkpoints: readers see their tenants' (tenant-wide bindings), auditors all.
ALTER TABLE authaudit.checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE authaudit.checkpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY reader_scope ON authaudit.checkpoints FOR SELECT TO authaudit_reader
    USING (tenant_id = ANY (authaudit._read_tenants())
           AND authaudit._may_read(tenant_id, NULL));
CREATE POLICY auditor_all ON authaudit.checkpoints FOR SELECT TO authaudit_auditor USING (true);
GRANT SELECT ON authaudit.checkpoints TO authaudit_reader, authaudit_auditor, authaudit_admin;
CREATE POLICY admin_reads ON authaudit.checkpoints FOR SELECT TO authaudit_admin USING (true);

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
-- Witness disagreements: the same readers as witness checkpoints.
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
REVOKE EXECUTE ON FUNCTION
    authaudit.record_witness_checkpoint(text, text),
    authaudit._open_witness_checkpoint(text, text),
    authaudit.witnessed_evidence(text, bigint)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION authaudit.record_witness_checkpoint(text, text)
    TO authaudit_auditor, authaudit_admin;
GRANT EXECUTE ON FUNCTION authaudit.witnessed_evidence(text, bigint)
    TO authaudit_reader, authaudit_auditor;

REVOKE EXECUTE ON FUNCTION
    authaudit.record_event(uuid, text, text, text, text, text, inet, text, timestamptz, jsonb),
    authaudit.record_events(jsonb),
    authaudit.record_events(text, jsonb),
    authaudit.verify_chain(text),
    authaudit.verify_chain(text, boolean),
    authaudit.verify_chain(text, bigint, bigint),
    authaudit.verify_chain_from_checkpoint(text, bigint),
    authaudit.merkle_root(text, bigint),
    authaudit.inclusion_proof(text, bigint, bigint),
    authaudit.consistency_proof(text, bigint, bigint),
    authaudit.inclusion_evidence(text, bigint, bigint),
    authaudit.record_token_issued(uuid, text, text, text, text, inet, text, text, timestamptz, jsonb),
    authaudit.checkpoint(text),
    authaudit.apply_retention(text, timestamptz)
    FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION authaudit.check_login(text, text, inet) FROM PUBLIC;
-- Internal: applied on its own it would change lockout state without an event.
GRANT EXECUTE ON FUNCTION
    authaudit.record_event(uuid, text, text, text, text, text, inet, text, timestamptz, jsonb),
    authaudit.record_events(jsonb),
    authaudit.record_events(text, jsonb),
    authaudit.check_login(text, text, inet),
    authaudit.record_token_issued(uuid, text, text, text, text, inet, text, text, timestamptz, jsonb),
    authaudit.checkpoint(text)
    TO authaudit_writer;
GRANT EXECUTE ON FUNCTION authaudit.checkpoint(text) TO authaudit_auditor, authaudit_admin;
-- The mirror's role is an auditor (docs/sidecar.md).
REVOKE EXECUTE ON FUNCTION authaudit.ensure_mirror_publication(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION authaudit.ensure_mirror_publication(text) TO authaudit_auditor;
GRANT EXECUTE ON FUNCTION authaudit.apply_retention(text, timestamptz) TO authaudit_admin;
-- History and event-time state (docs/lockout.md, "Event time").
REVOKE EXECUTE ON FUNCTION
    authaudit.import_events(jsonb, boolean),
    authaudit.rebuild_lockout(text),
    authaudit.lockout_replay(text, timestamptz, timestamptz)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION authaudit.import_events(jsonb, boolean) TO authaudit_writer;
GRANT EXECUTE ON FUNCTION authaudit.rebuild_lockout(text) TO authaudit_writer, authaudit_admin;
GRANT EXECUTE ON FUNCTION authaudit.lockout_replay(text, timestamptz, timestamptz)
    TO authaudit_reader, authaudit_auditor;
REVOKE EXECUTE ON FUNCTION
    authaudit.targeted_accounts(text, timestamptz, timestamptz),
    authaudit.attack_sources(text, timestamptz, timestamptz),
    authaudit.lockout_timeline(text, timestamptz, timestamptz),
    authaudit.successes_after_failures(text, timestamptz, timestamptz, integer),
    authaudit.compliance_summary(text, timestamptz, timestamptz),
    authaudit.to_cef(authaudit.auth_log),
    authaudit.export_cef(text, timestamptz, timestamptz),
    authaudit.verify_cef(text)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    authaudit.verify_chain(text),
    authaudit.verify_chain(text, boolean),
    authaudit.verify_chain(text, bigint, bigint),
    authaudit.verify_chain_from_checkpoint(text, bigint),
    authaudit.merkle_root(text, bigint),
    authaudit.inclusion_proof(text, bigint, bigint),
    authaudit.consistency_proof(text, bigint, bigint),
    authaudit.inclusion_evidence(text, bigint, bigint),
    authaudit.targeted_accounts(text, timestamptz, timestamptz),
    authaudit.attack_sources(text, timestamptz, timestamptz),
    authaudit.lockout_timeline(text, timestamptz, timestamptz),
    authaudit.successes_after_failures(text, timestamptz, timestamptz, integer),
    authaudit.compliance_summary(text, timestamptz, timestamptz),
    authaudit.to_cef(authaudit.auth_log),
    authaudit.export_cef(text, timestamptz, timestamptz),
    authaudit.verify_cef(text)
    TO authaudit_reader, authaudit_auditor;

-- A chain head cached in shared memory for an earlier install of the
-- extension in this database must not continue into this one's log.
SELECT authaudit._forget_chain_heads();
REVOKE EXECUTE ON FUNCTION authaudit._forget_chain_heads() FROM PUBLIC;

-- pg_dump keeps every row of the extension's tables (extension tables are
-- otherwise dumped as CREATE EXTENSION alone). A restore re-inserts them
-- as the restoring superuser: the append-only triggers refuse UPDATE,
-- DELETE and TRUNCATE only, and no other role may INSERT (docs/installation.md).
SELECT pg_catalog.pg_extension_config_dump('authaudit.auth_log', '');
SELECT pg_catalog.pg_extension_config_dump('authaudit.tenant_scope', '');
SELECT pg_catalog.pg_extension_config_dump('authaudit.lockout_policy', '');
SELECT pg_catalog.pg_extension_config_dump('authaudit.lockout_state', '');
SELECT pg_catalog.pg_extension_config_dump('authaudit.lockout_ip_state', '');
SELECT pg_catalog.pg_extension_config_dump('authaudit.lockout_ip_account_state', '');
SELECT pg_catalog.pg_extension_config_dump('authaudit.checkpoints', '');
SELECT pg_catalog.pg_extension_config_dump('authaudit.witness_checkpoints', '');
SELECT pg_catalog.pg_extension_config_dump('authaudit.witness_disagreements', '');

COMMENT ON FUNCTION authaudit.merkle_root(text, bigint) IS
    'The root of the RFC 9162 Merkle tree over the tenant''s first tree_size rows (docs/chain-format.md, "Merkle tree").';
COMMENT ON FUNCTION authaudit.inclusion_proof(text, bigint, bigint) IS
    'The RFC 9162 audit path of the row at seq in the tree of the tenant''s first tree_size rows.';
COMMENT ON FUNCTION authaudit.consistency_proof(text, bigint, bigint) IS
    'The RFC 9162 consistency proof between the trees of the tenant''s first old_size and new_size rows.';
