-- pg_authaudit schema: the chained authentication log. The end of each
-- tenant's chain lives in shared memory (pg_authaudit/src/heads.rs).
-- Loaded first by CREATE EXTENSION (bootstrap); reference: docs/sql-reference.md.

-- Recording needs the library preloaded (chain heads in shared memory):
-- say so now, not at the first event.
DO $$
BEGIN
    IF current_setting('shared_preload_libraries') !~ 'pg_authaudit' THEN
        RAISE WARNING 'pg_authaudit: the library is not in shared_preload_libraries: recording fails with SQLSTATE 55000 until it is'
            USING HINT = 'Add pg_authaudit to shared_preload_libraries in postgresql.conf and restart the server (docs/configuration.md).';
    END IF;
END
$$;

CREATE TABLE authaudit.auth_log (
    log_id          uuid        NOT NULL,
    tenant_id       text        NOT NULL,
    org_id          text,
    seq             bigint      NOT NULL,
    event_type      text        NOT NULL,
    user_id         text        NOT NULL,
    ip              inet,
    user_agent      text,
    channel         text        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL,
    metadata        jsonb       NOT NULL DEFAULT '{}',
    format_version  smallint    NOT NULL,
    prev_link       bytea       NOT NULL,
    link_sha256     bytea       NOT NULL,
    digest_sha512   bytea       NOT NULL,
    digest_sha3_256 bytea       NOT NULL,
    CONSTRAINT auth_log_pkey PRIMARY KEY (tenant_id, log_id),
    CONSTRAINT auth_log_tenant_seq_key UNIQUE (tenant_id, seq)
);
-- No CHECK constraints: every value is validated by authaudit._event_body
-- before it is chained, and PostgreSQL re-parses CHECK expressions for every
-- statement (measured: 2-3% of record_event's CPU). Rows written around the
-- recording functions fail verification instead.

-- A change other than an append is tampering (docs/sidecar.md, "Tamper
-- alarms"): replication carries the whole old row of an UPDATE or DELETE,
-- so the mirror names its tenant and seq. Appends log no more than before.
ALTER TABLE authaudit.auth_log REPLICA IDENTITY FULL;

-- Retention's DELETE leaves the log's only dead rows, a month of a tenant
-- at a time. Vacuum them soon after, whatever the table's size (the default
-- waits for a fifth of the table, a year of a large log): their space is
-- then reused by later appends, and index scans from a tenant's oldest row
-- no longer step over them (docs/retention.md, "Space").
ALTER TABLE authaudit.auth_log SET (autovacuum_vacuum_scale_factor = 0.01,
                                    autovacuum_vacuum_threshold = 10000);

COMMENT ON TABLE authaudit.auth_log IS
    'Append-only authentication events, one hash chain per tenant (see docs/chain-format.md).';
COMMENT ON COLUMN authaudit.auth_log.log_id IS 'Caller-supplied idempotency key, unique within the tenant.';
COMMENT ON COLUMN authaudit.auth_log.seq IS 'Position in the tenant''s chain: 1, 2, 3 ... without gaps.';
COMMENT ON COLUMN authaudit.auth_log.recorded_at IS 'Server time when the event was recorded.';
COMMENT ON COLUMN authaudit.auth_log.prev_link IS 'link_sha256 of the previous row (the genesis for seq 1).';
COMMENT ON COLUMN authaudit.auth_log.link_sha256 IS 'SHA-256 chain link over the canonical record.';
COMMENT ON COLUMN authaudit.auth_log.digest_sha512 IS 'SHA-512 chain digest over the same canonical record.';
COMMENT ON COLUMN authaudit.auth_log.digest_sha3_256 IS 'SHA3-256 chain digest over the same canonical record.';

-- The investigation queries: by tenant and time, by user, by source IP.
CREATE INDEX auth_log_tenant_time_idx ON authaudit.auth_log (tenant_id, occurred_at);
CREATE INDEX auth_log_tenant_user_idx ON authaudit.auth_log (tenant_id, user_id, occurred_at);
CREATE INDEX auth_log_tenant_ip_idx ON authaudit.auth_log (tenant_id, ip, occurred_at);

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

-- Which role may read or write which tenant (and organisation). Maintained
-- by authaudit_admin; a role sees only its own bindings. A binding holds the
-- role itself (role_oid, set from role_name when it is written): it follows
-- the role through a rename, and binds nobody once the role is dropped,
-- whatever role takes the name later.
CREATE TABLE authaudit.tenant_scope (
    role_name  name        NOT NULL,
    tenant_id  text        NOT NULL,
    org_id     text,                      -- NULL: the whole tenant
    can_read   boolean     NOT NULL DEFAULT true,
    can_write  boolean     NOT NULL DEFAULT false,
    granted_at timestamptz NOT NULL DEFAULT now(),
    role_oid   regrole
);
CREATE UNIQUE INDEX tenant_scope_role_key
    ON authaudit.tenant_scope (role_oid, tenant_id, (coalesce(org_id, '')));
COMMENT ON TABLE authaudit.tenant_scope IS
    'Role bindings to a tenant (and optionally one organisation); see docs/security.md.';

-- Lockout policy per tenant (a tenant without a row gets the documented
-- defaults, docs/lockout.md). Checked by authaudit._lockout_policy_check.
CREATE TABLE authaudit.lockout_policy (
    tenant_id              text        NOT NULL PRIMARY KEY,
    enabled                boolean     NOT NULL DEFAULT true,
    max_failures           integer     NOT NULL DEFAULT 5,
    failure_window         interval    NOT NULL DEFAULT '15 minutes',
    lock_duration          interval    NOT NULL DEFAULT '15 minutes',
    lock_increment         text        NOT NULL DEFAULT 'multiple',
    max_lock_duration      interval    NOT NULL DEFAULT '24 hours',
    permanent_after_locks  integer,
    quick_failure_interval interval,
    ip_max_failures        integer     NOT NULL DEFAULT 100,
    ip_block_duration      interval    NOT NULL DEFAULT '1 hour',
    ip_account_max_failures integer    NOT NULL DEFAULT 10,
    updated_at             timestamptz NOT NULL DEFAULT now(),
    -- How a user_id becomes the key lockouts count against, and how many
    -- bits of an IPv6 source are its key (docs/lockout.md, "Account and
    -- source keys").
    account_key_folding    text        NOT NULL DEFAULT 'canonical'
        CHECK (account_key_folding IN ('canonical', 'exact')),
    ipv6_prefix            smallint    NOT NULL DEFAULT 64
        CHECK (ipv6_prefix BETWEEN 32 AND 128)
);

-- Lockout state per (tenant, account), changed in the same transaction as
-- the event that changes it.
CREATE TABLE authaudit.lockout_state (
    tenant_id        text        NOT NULL,
    user_id          text        NOT NULL,
    failure_count    integer     NOT NULL DEFAULT 0,
    first_failure_at timestamptz,
    last_failure_at  timestamptz,
    first_failure_ip inet,
    last_failure_ip  inet,
    locked           boolean     NOT NULL DEFAULT false,
    locked_at        timestamptz,
    locked_until     timestamptz,          -- NULL while locked: permanent
    lock_count       integer     NOT NULL DEFAULT 0,
    last_log_id      uuid,
    last_seq         bigint,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    org_id           text,                 -- the organisation of its first event
    -- Failures since the last login_success or lockout_reset: a success
    -- reports it as preceding_failures (docs/lockout.md).
    failures_since_success integer NOT NULL DEFAULT 0,
    CONSTRAINT lockout_state_pkey PRIMARY KEY (tenant_id, user_id)
);

-- Failures per (tenant, source IP) across accounts, for credential stuffing.
CREATE TABLE authaudit.lockout_ip_state (
    tenant_id        text        NOT NULL,
    ip               inet        NOT NULL,
    failure_count    integer     NOT NULL DEFAULT 0,
    first_failure_at timestamptz,
    blocked_until    timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT lockout_ip_state_pkey PRIMARY KEY (tenant_id, ip)
);

-- Failures per (tenant, source IP, account): the per-(IP, account) rule.
CREATE TABLE authaudit.lockout_ip_account_state (
    tenant_id        text        NOT NULL,
    ip               inet        NOT NULL,
    user_id          text        NOT NULL,
    failure_count    integer     NOT NULL DEFAULT 0,
    first_failure_at timestamptz,
    blocked_until    timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT lockout_ip_account_state_pkey PRIMARY KEY (tenant_id, ip, user_id)
);

REVOKE ALL ON authaudit.lockout_policy, authaudit.lockout_state, authaudit.lockout_ip_state,
    authaudit.lockout_ip_account_state FROM PUBLIC;

-- Append-only: no UPDATE, DELETE or TRUNCATE, whoever asks.
CREATE FUNCTION authaudit._refuse_change() RETURNS trigger
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

CREATE TRIGGER auth_log_append_only
    BEFORE UPDATE OR DELETE ON authaudit.auth_log
    FOR EACH STATEMENT EXECUTE FUNCTION authaudit._refuse_change();
CREATE TRIGGER auth_log_no_truncate
    BEFORE TRUNCATE ON authaudit.auth_log
    FOR EACH STATEMENT EXECUTE FUNCTION authaudit._refuse_change();
REVOKE ALL ON authaudit.auth_log FROM PUBLIC;
