//! The attacks of an adversarial review, kept in the suite as the attacker
//! wrote them: two agencies, the roles docs/security.md describes (tenant
//! writers, a writer bound to one organisation, tenant and organisation
//! readers, an auditor, an admin and an outsider), cancellation inside
//! savepoints, REPEATABLE READ snapshots, views owned by other roles,
//! shadowing functions, the server log and `pg_locks`.

use crate::support::{log_state, record, sqlstate, try_record, verify, Event};
use authaudit_tests::{Cluster, TestDb};
use postgres::error::SqlState;
use postgres::Client;
use std::time::{Duration, Instant};

/// Two agencies and login roles bound the way docs/security.md describes.
pub(crate) struct Agencies {
    pub(crate) db: TestDb,
    pub(crate) p: String,
}

impl Agencies {
    pub(crate) fn new(hint: &str) -> Agencies {
        let db = Cluster::shared().fresh_db_with_lockout(hint);
        let p = db.name().to_string();
        db.connect()
            .batch_execute(&format!(
                "CREATE ROLE {p}_writer1 LOGIN IN ROLE authaudit_writer;
                 CREATE ROLE {p}_writer2 LOGIN IN ROLE authaudit_writer;
                 CREATE ROLE {p}_branch LOGIN IN ROLE authaudit_writer;
                 CREATE ROLE {p}_reader1 LOGIN IN ROLE authaudit_reader;
                 CREATE ROLE {p}_reader_hq LOGIN IN ROLE authaudit_reader;
                 CREATE ROLE {p}_auditor LOGIN IN ROLE authaudit_auditor;
                 CREATE ROLE {p}_admin LOGIN IN ROLE authaudit_admin;
                 CREATE ROLE {p}_outsider LOGIN;
                 INSERT INTO authaudit.tenant_scope (role_name, tenant_id, org_id, can_read, can_write) VALUES
                   ('{p}_writer1', 'agency-1', NULL, false, true),
                   ('{p}_writer2', 'agency-2', NULL, false, true),
                   ('{p}_branch', 'agency-1', 'branch', false, true),
                   ('{p}_reader1', 'agency-1', NULL, true, false),
                   ('{p}_reader_hq', 'agency-1', 'hq', true, false);"
            ))
            .unwrap();
        let a = Agencies { db, p };
        let mut w2 = a.login("writer2");
        for (n, user) in ["secret-2a", "secret-2b"].iter().enumerate() {
            let e = Event::failed("agency-2", user)
                .org("ops")
                .ip("192.0.2.20")
                .ago(&format!("{n} seconds"));
            record(&mut w2, &e);
        }
        a
    }

    pub(crate) fn login(&self, who: &str) -> Client {
        self.db.connect_as(&format!("{}_{who}", self.p))
    }

    pub(crate) fn superuser(&self) -> Client {
        self.db.connect()
    }

    pub(crate) fn count(&self, sql: &str) -> i64 {
        self.superuser().query_one(sql, &[]).unwrap().get(0)
    }
}

pub(crate) fn expect_state(r: Result<impl Sized, postgres::Error>, state: SqlState, what: &str) {
    match r {
        Ok(_) => panic!("{what}: succeeded, expected {state:?}"),
        Err(e) => assert_eq!(sqlstate(&e), Some(state.clone()), "{what}: {e}"),
    }
}

/// A compact JWS with the given subject and id (the extension parses claims;
/// it does not check signatures), built server-side.
pub(crate) fn token(c: &mut Client, sub: &str, jti: &str) -> String {
    let mut b64 = |s: &str| -> String {
        c.query_one(
            "SELECT rtrim(translate(encode(convert_to($1, 'UTF8'), 'base64'), E'+/\\n', '-_'), '=')",
            &[&s],
        )
        .unwrap()
        .get(0)
    };
    format!(
        "{}.{}.c2lnbmF0dXJlLW9mLXRoZS1pc3N1ZXI",
        b64(r#"{"alg":"HS256","typ":"JWT"}"#),
        b64(&format!(
            r#"{{"sub":"{sub}","jti":"{jti}","iat":1795000000}}"#
        ))
    )
}

/// Tries of the cancellation sweep.
const TRIES: u32 = 234;

/// Attack 1: a writer of agency-1 cancels record_token_issued at varying
/// points (statement timeouts after a busy-wait of varying length, caught
/// in savepoints) and after each try forges, under the same log id,
/// extension facts, engine event types and the system channel into
/// agency-2. The grant of release 0.1.0 survived the cancelled
/// subtransaction and let some tries through; nothing may get through now.
#[test]
fn a_cancelled_token_issuance_lets_no_writer_forge_into_another_tenant() {
    let a = Agencies::new("atk_forge");
    let mut w = a.login("writer1");
    let tok = token(&mut w, "u1", "seed");
    w.batch_execute("SET statement_timeout = 0").unwrap();
    let before = a.count("SELECT count(*) FROM authaudit.auth_log WHERE tenant_id = 'agency-2'");
    let mut cancelled = 0;
    let mut forged = 0;
    let mut refusals = std::collections::BTreeSet::new();
    for i in 0..TRIES {
        // A fresh session each time: the first call compiles the functions,
        // which spreads the moments a 1 ms timeout can land on.
        let mut s = a.login("writer1");
        let mut tx = s.transaction().unwrap();
        let id = format!("00000000-0000-4000-8000-{i:012x}");
        // Timeouts of 2 to 14 ms after a busy-wait of 0 to about 4 ms: the
        // span a fresh session's first call takes to reach its grant.
        let timeout_ms = 2 + i % 13;
        let spin = 4000 * ((i / 13) % 6);
        tx.batch_execute(&format!(
            "SAVEPOINT try; SET LOCAL statement_timeout = '{timeout_ms}ms'"
        ))
        .unwrap();
        let r = tx.execute(
            &format!(
                "SELECT authaudit.record_token_issued($2::text::uuid, 'agency-1', NULL, 'u1', $1, \
                 NULL, NULL, 'web', metadata => jsonb_build_object('spin', \
                 (SELECT count(*) FROM generate_series(1, {spin}))))"
            ),
            &[&tok, &id],
        );
        match r {
            Err(e) if sqlstate(&e) == Some(SqlState::QUERY_CANCELED) => {
                cancelled += 1;
                tx.batch_execute("ROLLBACK TO SAVEPOINT try").unwrap();
            }
            Err(_) => tx.batch_execute("ROLLBACK TO SAVEPOINT try").unwrap(),
            Ok(_) => tx.batch_execute("RELEASE SAVEPOINT try").unwrap(),
        }
        tx.batch_execute("SET LOCAL statement_timeout = 0").unwrap();
        // The same log id: what a grant of the cancelled call was keyed by.
        let attempt = tx.execute(
            "SELECT authaudit.record_event($2::text::uuid, 'agency-2', \
             (ARRAY['login_success', 'token_issued', 'retention_applied', 'account_locked'])[1 + $1 % 4], \
             'secret-2a', (ARRAY['web', 'system'])[1 + $1 % 2], 'ops', \
             metadata => '{\"_authaudit\": {\"token\": {\"sub\": \"secret-2a\"}}}')",
            &[&(i as i32), &id],
        );
        match attempt {
            Ok(_) => forged += 1,
            Err(e) => {
                refusals.insert(format!(
                    "{:?}: {}",
                    sqlstate(&e),
                    e.as_db_error().map_or("", |d| d.message())
                ));
            }
        }
        tx.commit().ok();
    }
    assert!(cancelled > 0, "the sweep never cancelled a call");
    assert_eq!(
        forged, 0,
        "forged rows into agency-2 ({cancelled} cancellations)"
    );
    assert!(
        refusals
            .iter()
            .all(|r| r.starts_with("Some(SqlState(E42501))")),
        "{refusals:?}"
    );
    assert_eq!(
        a.count("SELECT count(*) FROM authaudit.auth_log WHERE tenant_id = 'agency-2'"),
        before
    );
    // The pipeline behind the recording functions is not the writer's to call.
    let err = w
        .batch_execute(
            "SELECT authaudit._record(gen_random_uuid(), 'agency-2', 'login_failed', 'x', 'web', \
             NULL, NULL, NULL, NULL, '{}', NULL)",
        )
        .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        Some(SqlState::INSUFFICIENT_PRIVILEGE),
        "{err}"
    );
    assert!(verify(&mut a.superuser(), "agency-2").0);
}

/// Attack 2: a writer of agency-2 holds one of its own accounts locked in an
/// open transaction and sends a batch that names an agency-1 account first.
/// The landed code locked the agency-1 account before refusing the batch,
/// and agency-1's own writer then waited (55P03 under lock_timeout).
#[test]
fn a_refused_batch_never_blocks_another_tenants_writer() {
    let a = Agencies::new("atk_block");
    let mut holder = a.login("writer2");
    let mut tx = holder.transaction().unwrap();
    record(&mut tx, &Event::failed("agency-2", "secret-2a").org("ops"));
    let url = format!(
        "host=127.0.0.1 port={} user={}_writer2 dbname={}",
        a.db.cluster().port(),
        a.p,
        a.db.name()
    );
    let batch = std::thread::spawn(move || {
        let mut c = Client::connect(&url, postgres::NoTls).unwrap();
        c.query(
            "SELECT seq FROM authaudit.record_events(jsonb_build_array(
               jsonb_build_object('log_id', gen_random_uuid(), 'tenant_id', 'agency-1', 'event_type', 'login_failed',
                                  'user_id', 'user1', 'channel', 'web'),
               jsonb_build_object('log_id', gen_random_uuid(), 'tenant_id', 'agency-2', 'event_type', 'login_failed',
                                  'user_id', 'secret-2a', 'channel', 'web', 'org_id', 'ops')))",
            &[],
        )
        .map(|_| ())
    });
    // Until the batch has ended, or is waiting on a lock.
    let mut watcher = a.superuser();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !batch.is_finished() && Instant::now() < deadline {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND query LIKE '%record_events%' AND pid <> pg_backend_pid()",
                &[],
            )
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut w1 = a.login("writer1");
    w1.batch_execute("SET lock_timeout = '3s'").unwrap();
    let r = try_record(&mut w1, &Event::failed("agency-1", "user1"));
    assert!(r.is_ok(), "agency-1's writer was blocked: {r:?}");
    tx.rollback().unwrap();
    let refused = batch.join().unwrap();
    expect_state(
        refused,
        SqlState::INSUFFICIENT_PRIVILEGE,
        "cross-tenant batch",
    );
    assert_eq!(
        a.count("SELECT count(*) FROM authaudit.auth_log WHERE tenant_id = 'agency-1'"),
        1
    );
}

/// Attack 3: a reader inside REPEATABLE READ keeps reading after an admin
/// revoked its binding; the landed code rebuilt its cache from the old
/// snapshot, stamped it current, and kept reading after COMMIT.
#[test]
fn a_revoked_reader_reads_nothing_even_from_an_old_snapshot() {
    let a = Agencies::new("atk_revoke");
    record(&mut a.login("writer1"), &Event::failed("agency-1", "user1"));
    let mut r = a.login("reader1");
    let mut tx = r
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .start()
        .unwrap();
    let seen: i64 = tx
        .query_one("SELECT count(*) FROM authaudit.auth_log", &[])
        .unwrap()
        .get(0);
    assert_eq!(seen, 1);
    a.login("admin")
        .execute(
            "DELETE FROM authaudit.tenant_scope WHERE role_name = $1",
            &[&format!("{}_reader1", a.p)],
        )
        .unwrap();
    let during: i64 = tx
        .query_one("SELECT count(*) FROM authaudit.auth_log", &[])
        .unwrap()
        .get(0);
    assert_eq!(during, 0, "a revocation takes effect at once");
    tx.commit().unwrap();
    for _ in 0..3 {
        let after: i64 = r
            .query_one("SELECT count(*) FROM authaudit.auth_log", &[])
            .unwrap()
            .get(0);
        assert_eq!(after, 0, "read after its binding was revoked");
    }
}

/// Leaving the reader group ends reading at once for an open session (the
/// membership check is cached, and forgotten when roles change).
#[test]
fn a_reader_taken_out_of_the_reader_group_reads_nothing() {
    let a = Agencies::new("atk_group");
    record(&mut a.login("writer1"), &Event::failed("agency-1", "user1"));
    let mut r = a.login("reader1");
    let count = |r: &mut Client| -> i64 {
        r.query_one("SELECT count(*) FROM authaudit.auth_log", &[])
            .unwrap()
            .get(0)
    };
    assert_eq!(count(&mut r), 1);
    a.superuser()
        .batch_execute(&format!("REVOKE authaudit_reader FROM {}_reader1", a.p))
        .unwrap();
    // Without the group it has no SELECT on the table at all.
    let err = r
        .query_one("SELECT count(*) FROM authaudit.auth_log", &[])
        .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        Some(SqlState::INSUFFICIENT_PRIVILEGE),
        "{err}"
    );
    // Through a view of a reader that still is one, the row check asks the
    // same role, which no longer is a reader.
    let p = &a.p;
    a.superuser()
        .batch_execute(&format!(
            "CREATE SCHEMA {p}_v AUTHORIZATION {p}_reader_hq;
             INSERT INTO authaudit.tenant_scope (role_name, tenant_id, can_read) VALUES ('{p}_reader_hq', 'agency-1', true);"
        ))
        .unwrap();
    a.login("reader_hq")
        .batch_execute(&format!(
            "CREATE VIEW {p}_v.log AS SELECT * FROM authaudit.auth_log;
             GRANT USAGE ON SCHEMA {p}_v TO {p}_reader1; GRANT SELECT ON {p}_v.log TO {p}_reader1;"
        ))
        .unwrap();
    let n: i64 = r
        .query_one(&format!("SELECT count(*) FROM {p}_v.log"), &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

/// The scope is read with the latest snapshot, which a parallel worker may
/// not take: a reader's forced parallel scan still works and sees its scope.
#[test]
fn a_readers_parallel_scan_sees_exactly_its_scope() {
    let a = Agencies::new("atk_parallel");
    a.login("writer1")
        .execute(
            "SELECT count(*) FROM authaudit.record_events((SELECT jsonb_agg(jsonb_build_object(
               'log_id', gen_random_uuid(), 'tenant_id', 'agency-1', 'event_type', 'login_success',
               'user_id', 'u' || g, 'channel', 'web')) FROM generate_series(1, 500) g))",
            &[],
        )
        .unwrap();
    let mut r = a.login("reader1");
    r.batch_execute(
        "SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
         SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2;
         SET enable_indexscan = off; SET enable_bitmapscan = off;",
    )
    .unwrap();
    let n: i64 = r
        .query_one("SELECT count(*) FROM authaudit.auth_log", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 500);
}

/// Attack 4: a writer bound to organisation "branch" records events of
/// "hq" or without organisation, and resets (unlocks) an hq account.
#[test]
fn an_organisation_writer_writes_and_affects_its_organisation_only() {
    let a = Agencies::new("atk_org");
    let mut w1 = a.login("writer1");
    for _ in 0..5 {
        record(&mut w1, &Event::failed("agency-1", "hq-boss").org("hq"));
    }
    let locked = |a: &Agencies| -> (bool, i32) {
        let r = a
            .superuser()
            .query_one(
                "SELECT locked, failure_count FROM authaudit.lockout_state WHERE user_id = 'hq-boss'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    let hq_state = locked(&a);
    assert!(hq_state.0);
    let rows = a.count("SELECT count(*) FROM authaudit.auth_log");
    let mut b = a.login("branch");
    for (what, e) in [
        ("event of hq", Event::failed("agency-1", "x").org("hq")),
        ("event without org", Event::failed("agency-1", "x")),
        (
            "reset of an hq account",
            Event::new("agency-1", "lockout_reset", "hq-boss")
                .channel("api")
                .org("branch"),
        ),
        (
            "success of an hq account",
            Event::success("agency-1", "hq-boss").org("branch"),
        ),
        (
            "failure of an hq account",
            Event::failed("agency-1", "hq-boss").org("branch"),
        ),
    ] {
        expect_state(
            try_record(&mut b, &e),
            SqlState::INSUFFICIENT_PRIVILEGE,
            what,
        );
    }
    for (what, sql) in [
        ("batch reset of an hq account", "SELECT * FROM authaudit.record_events(jsonb_build_array(jsonb_build_object(
            'log_id', gen_random_uuid(), 'tenant_id', 'agency-1', 'org_id', 'branch', 'event_type', 'lockout_reset',
            'user_id', 'hq-boss', 'channel', 'api')))"),
        ("token for hq", "SELECT authaudit.record_token_issued(gen_random_uuid(), 'agency-1', 'hq', 'x', 'a.b.c', NULL, NULL, 'web')"),
    ] {
        expect_state(b.execute(sql, &[]), SqlState::INSUFFICIENT_PRIVILEGE, what);
    }
    assert_eq!(a.count("SELECT count(*) FROM authaudit.auth_log"), rows);
    assert_eq!(locked(&a), hq_state, "the hq account's lock is untouched");
    // Its own organisation's accounts it records and resets.
    record(&mut b, &Event::failed("agency-1", "clerk").org("branch"));
    let reset = Event::new("agency-1", "lockout_reset", "clerk")
        .channel("api")
        .org("branch");
    record(&mut b, &reset);
    let org: Option<String> = a
        .superuser()
        .query_one(
            "SELECT org_id FROM authaudit.lockout_state WHERE user_id = 'clerk'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(org.as_deref(), Some("branch"));
}

/// Attack 5: PostgreSQL picks policies by a view owner's roles. An admin
/// that binds itself to agency-2 reads through a plain view owned by an
/// organisation reader of agency-1. The row check now asks the same role
/// the query runs as, and that role must be a reader itself.
#[test]
fn a_view_owned_by_a_reader_shows_its_caller_nothing_beyond_the_callers_own_scope() {
    let a = Agencies::new("atk_view");
    let p = &a.p;
    a.superuser()
        .batch_execute(&format!(
            "CREATE SCHEMA {p}_hq_views AUTHORIZATION {p}_reader_hq;"
        ))
        .unwrap();
    record(
        &mut a.login("writer1"),
        &Event::failed("agency-1", "hq-user").org("hq"),
    );
    a.login("reader_hq")
        .batch_execute(&format!(
            "CREATE VIEW {p}_hq_views.log AS SELECT * FROM authaudit.auth_log;
             GRANT USAGE ON SCHEMA {p}_hq_views TO {p}_admin, {p}_reader1, {p}_outsider;
             GRANT SELECT ON {p}_hq_views.log TO {p}_admin, {p}_reader1, {p}_outsider;"
        ))
        .unwrap();
    let mut admin = a.login("admin");
    admin
        .execute(
            "INSERT INTO authaudit.tenant_scope (role_name, tenant_id, can_read) VALUES ($1, 'agency-2', true)",
            &[&format!("{p}_admin")],
        )
        .unwrap();
    let users = |c: &mut Client| -> Vec<String> {
        let mut v: Vec<String> = c
            .query(&format!("SELECT user_id FROM {p}_hq_views.log"), &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        v.sort();
        v
    };
    assert!(users(&mut admin).is_empty(), "admin read through the view");
    assert!(users(&mut a.login("outsider")).is_empty());
    // The owner sees its organisation; a tenant reader its own scope.
    assert_eq!(users(&mut a.login("reader_hq")), ["hq-user"]);
    assert_eq!(users(&mut a.login("reader1")), ["hq-user"]);
}

/// Attack 6: a refused record_token_issued with a literal token used to
/// leave the whole JWT, signature included, in the server log.
#[test]
fn a_refused_token_call_leaves_no_token_in_the_server_log() {
    let a = Agencies::new("atk_log");
    let mut w = a.login("writer1");
    let marker = format!("{}-sig", a.p).replace('_', "-");
    let tok = format!(
        "{}.{}",
        token(&mut w, "u1", &marker).rsplit_once('.').unwrap().0,
        "U0lHTkFUVVJFLXNpZ25hdHVyZS1zZWNyZXQ"
    );
    let call = format!(
        "SELECT authaudit.record_token_issued(gen_random_uuid(), 'agency-1', NULL, 'u1', '{tok}', NULL, NULL, 'web')"
    );
    w.batch_execute(&call).unwrap();
    // Replayed jti (23505), wrong subject (22023), other tenant (42501).
    for (sql, state) in [
        (call.clone(), SqlState::UNIQUE_VIOLATION),
        (
            call.replace("'u1'", "'u2'"),
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            call.replace("'agency-1'", "'agency-2'"),
            SqlState::INSUFFICIENT_PRIVILEGE,
        ),
    ] {
        expect_state(w.batch_execute(&sql), state, &sql);
    }
    // A failure elsewhere in a statement that carries a token.
    expect_state(
        w.batch_execute(&format!("SELECT 1/0, '{tok}'")),
        SqlState::DIVISION_BY_ZERO,
        "division",
    );
    // The errors are in the log, the token's parts are not.
    let mut admin = a.superuser();
    admin
        .batch_execute("SELECT pg_catalog.pg_current_logfile()")
        .ok();
    let log = std::fs::read_to_string(a.db.cluster().dir().join("server.log")).unwrap();
    assert!(log.contains("was already recorded for tenant agency-1 (replay)"));
    assert!(
        !log.contains("U0lHTkFUVVJFLXNpZ25hdHVyZS1zZWNyZXQ"),
        "signature in the log"
    );
    assert!(
        !log.contains(tok.split('.').nth(1).unwrap()),
        "claims in the log"
    );
}

/// Attack 7: a superuser removes rows past a checkpoint; a checkpoint taken
/// then used to anchor the shortened chain.
#[test]
fn a_checkpoint_never_anchors_a_chain_whose_tail_was_cut() {
    let a = Agencies::new("atk_cut");
    let mut w = a.login("writer1");
    let rec = |w: &mut Client, n: i32| {
        for _ in 0..n {
            record(w, &Event::success("agency-1", "u"));
        }
    };
    rec(&mut w, 5);
    w.execute("SELECT authaudit.checkpoint('agency-1')", &[])
        .unwrap();
    rec(&mut w, 3);
    let mut su = a.superuser();
    su.batch_execute(
        "SET session_replication_role = replica;
         DELETE FROM authaudit.auth_log WHERE tenant_id = 'agency-1' AND seq > 6;
         RESET session_replication_role;",
    )
    .unwrap();
    let cps = a.count("SELECT count(*) FROM authaudit.checkpoints");
    expect_state(
        w.execute("SELECT authaudit.checkpoint('agency-1')", &[]),
        SqlState::DATA_CORRUPTED,
        "checkpoint after a cut tail",
    );
    // Deeper than the checkpoint: refused too.
    su.batch_execute(
        "SET session_replication_role = replica;
         DELETE FROM authaudit.auth_log WHERE tenant_id = 'agency-1' AND seq > 3;
         RESET session_replication_role;",
    )
    .unwrap();
    expect_state(
        w.execute("SELECT authaudit.checkpoint('agency-1')", &[]),
        SqlState::DATA_CORRUPTED,
        "checkpoint below a checkpoint",
    );
    assert_eq!(a.count("SELECT count(*) FROM authaudit.checkpoints"), cps);
}

/// Attack 8: an organisation reader that owns a schema shadows
/// pg_has_role and current_user ahead of pg_catalog to pass verify_chain's
/// scope check; every security-definer function pins its search_path.
#[test]
fn shadowed_catalog_functions_do_not_pass_a_scope_check() {
    let a = Agencies::new("atk_path");
    let p = &a.p;
    a.superuser()
        .batch_execute(&format!(
            "CREATE SCHEMA {p}_evil AUTHORIZATION {p}_reader_hq;"
        ))
        .unwrap();
    let mut r = a.login("reader_hq");
    r.batch_execute(&format!(
        "CREATE FUNCTION {p}_evil.pg_has_role(text, text) RETURNS boolean LANGUAGE sql AS 'SELECT true';
         CREATE FUNCTION {p}_evil.pg_has_role(name, text, text) RETURNS boolean LANGUAGE sql AS 'SELECT true';
         CREATE FUNCTION {p}_evil.current_setting(text) RETURNS text LANGUAGE sql AS 'SELECT ''authaudit_auditor''';
         SET search_path = {p}_evil, pg_catalog, authaudit;"
    ))
    .unwrap();
    expect_state(
        r.query("SELECT * FROM authaudit.verify_chain('agency-1')", &[]),
        SqlState::INSUFFICIENT_PRIVILEGE,
        "verify as an organisation reader",
    );
    expect_state(
        r.query("SELECT * FROM authaudit.checkpoint('agency-1')", &[]),
        SqlState::INSUFFICIENT_PRIVILEGE,
        "checkpoint as a reader",
    );
    // Every security-definer function of the extension pins search_path.
    let unpinned: Vec<String> = a
        .superuser()
        .query(
            "SELECT p.oid::regprocedure::text FROM pg_proc p
              WHERE p.pronamespace = 'authaudit'::regnamespace AND p.prosecdef
                AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(unpinned.is_empty(), "unpinned: {unpinned:?}");
}

/// Attack 9: a writer records what only the engine records: locks (even on
/// channel "system" with engine-looking metadata), token issuance, retention.
#[test]
fn writers_cannot_forge_engine_events() {
    let a = Agencies::new("atk_engine");
    let mut w = a.login("writer1");
    let mut su = a.superuser();
    let before = log_state(&mut su, "agency-1");
    let lock = Event::new("agency-1", "account_locked", "u");
    for (what, e) in [
        (
            "lock on system",
            lock.clone()
                .channel("system")
                .metadata(serde_json::json!({"reason": "max_failures", "permanent": true})),
        ),
        ("lock on web", lock),
        (
            "failure on system",
            Event::failed("agency-1", "u").channel("system"),
        ),
        (
            "reset on system",
            Event::new("agency-1", "lockout_reset", "u").channel("system"),
        ),
        ("token event", Event::new("agency-1", "token_issued", "u")),
        (
            "retention event",
            Event::new("agency-1", "retention_applied", "u"),
        ),
    ] {
        expect_state(
            try_record(&mut w, &e),
            SqlState::INVALID_PARAMETER_VALUE,
            what,
        );
    }
    expect_state(
        w.execute(
            "SELECT * FROM authaudit.record_events(jsonb_build_array(jsonb_build_object(
               'log_id', gen_random_uuid(), 'tenant_id', 'agency-1', 'event_type', 'account_locked',
               'user_id', 'u', 'channel', 'system')))",
            &[],
        ),
        SqlState::INVALID_PARAMETER_VALUE,
        "batched lock",
    );
    // A writer's missing tenant keeps its documented SQLSTATE.
    expect_state(
        w.execute(
            "SELECT authaudit.record_event(gen_random_uuid(), NULL, 'login_failed', 'u', 'web')",
            &[],
        ),
        SqlState::NULL_VALUE_NOT_ALLOWED,
        "no tenant",
    );
    assert_eq!(log_state(&mut su, "agency-1"), before);
    let locks = a.count(
        "SELECT count(*) FROM authaudit.lockout_timeline('agency-1', '-infinity', 'infinity')",
    );
    assert_eq!(locks, 0);
}

/// The landed ownership-lock key: FNV-1a over the database oid and tenant.
fn fnv(dboid: u32, tenant: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in dboid.to_le_bytes().iter().chain(tenant.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Attack 10: anyone can read pg_locks; a lock key computed from a tenant
/// name told an outsider when that tenant writes.
#[test]
fn lock_keys_in_pg_locks_cannot_be_computed_from_a_tenant_name() {
    let a = Agencies::new("atk_locks");
    let mut w = a.login("writer1");
    let mut tx = w.transaction().unwrap();
    record(&mut tx, &Event::failed("agency-1", "u"));
    let mut outsider = a.login("outsider");
    let dboid: u32 = outsider
        .query_one(
            "SELECT oid::int8 FROM pg_database WHERE datname = current_database()",
            &[],
        )
        .map(|r| r.get::<_, i64>(0) as u32)
        .unwrap();
    let locks: Vec<(i64, i64)> = outsider
        .query(
            "SELECT classid::int8, objid::int8 FROM pg_locks WHERE locktype = 'advisory' AND (objsubid::int4 & 65535) = 43521",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(!locks.is_empty(), "the writer's ownership lock is visible");
    let h = fnv(dboid, "agency-1");
    assert!(
        !locks.contains(&((h >> 32) as i64, (h as u32) as i64)),
        "the lock key is the FNV-1a of the tenant"
    );
    tx.rollback().unwrap();
}

/// Attack 11: one call of record_events held the tenant's chain for as long
/// as the caller liked; batches are bounded.
#[test]
fn batches_are_bounded_and_the_bound_is_the_superusers() {
    let a = Agencies::new("atk_batch");
    let mut w = a.login("writer1");
    let mut su = a.superuser();
    let before = log_state(&mut su, "agency-1");
    let big = "SELECT count(*) FROM authaudit.record_events((SELECT jsonb_agg(jsonb_build_object(
        'log_id', gen_random_uuid(), 'tenant_id', 'agency-1', 'event_type', 'login_failed',
        'user_id', 'u', 'channel', 'web')) FROM generate_series(1, 1001)))";
    expect_state(
        w.execute(big, &[]),
        SqlState::PROGRAM_LIMIT_EXCEEDED,
        "1001 events",
    );
    expect_state(
        w.batch_execute("SET authaudit.max_batch_events = 100000"),
        SqlState::INSUFFICIENT_PRIVILEGE,
        "a writer raising the bound",
    );
    assert_eq!(log_state(&mut su, "agency-1"), before);
    let n: i64 = w
        .query_one(&big.replace("1001", "1000"), &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1000);
}

/// Attack 12: checkpoint, then apply_retention one second back, erased a
/// tenant's whole history at once.
#[test]
fn retention_keeps_the_minimum_retention_period() {
    let a = Agencies::new("atk_retention");
    let mut w = a.login("writer1");
    w.execute(
        "SELECT count(*) FROM authaudit.import_events(jsonb_build_array(jsonb_build_object( \
           'log_id', gen_random_uuid(), 'tenant_id', 'agency-1', 'event_type', 'login_failed', \
           'user_id', 'u', 'channel', 'web', 'occurred_at', now() - interval '30 days')), \
           rebuild => false)",
        &[],
    )
    .unwrap();
    w.execute("SELECT authaudit.checkpoint('agency-1')", &[])
        .unwrap();
    record(&mut w, &Event::failed("agency-1", "u"));
    let mut admin = a.login("admin");
    let rows = a.count("SELECT count(*) FROM authaudit.auth_log WHERE tenant_id = 'agency-1'");
    for horizon in ["now() - interval '1 second'", "now() - interval '364 days'"] {
        expect_state(
            admin.query(
                &format!("SELECT * FROM authaudit.apply_retention('agency-1', {horizon})"),
                &[],
            ),
            SqlState::INVALID_PARAMETER_VALUE,
            horizon,
        );
    }
    expect_state(
        admin.batch_execute("SET authaudit.min_retention = 0"),
        SqlState::INSUFFICIENT_PRIVILEGE,
        "an admin lowering the minimum",
    );
    assert_eq!(
        a.count("SELECT count(*) FROM authaudit.auth_log WHERE tenant_id = 'agency-1'"),
        rows
    );
    // A superuser may lower it for a database.
    a.superuser()
        .batch_execute(&format!(
            "ALTER DATABASE {} SET authaudit.min_retention = 0",
            a.db.name()
        ))
        .unwrap();
    let mut admin = a.login("admin");
    let removed: i64 = admin
        .query_one(
            "SELECT removed_rows FROM authaudit.apply_retention('agency-1', now() - interval '1 second')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(removed, 1, "the 30-day-old event, up to its checkpoint");
}
