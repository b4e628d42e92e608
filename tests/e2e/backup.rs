//! Logical backups: `pg_dump` keeps every row of the extension's tables, a
//! restore into a fresh database (custom format with `pg_restore`, plain
//! format with `psql`) runs without an error, every chain verifies and
//! recording continues at the next seq; the door the restore uses (INSERT
//! as the restoring superuser) is closed to writers.

use crate::support::{record, sqlstate, verify, Event};
use authaudit_tests::{Cluster, TestDb};
use postgres::error::SqlState;
use postgres::Client;
use std::process::Command;

const BIN: &str = "/usr/lib/postgresql/15/bin";

/// Every extension table, in a fixed order, as one digest per table.
const CONTENT: &str = "SELECT 'auth_log', md5(coalesce(string_agg(t::text, '|' ORDER BY t.tenant_id, t.seq), '')) FROM authaudit.auth_log t
    UNION ALL SELECT 'tenant_scope', md5(coalesce(string_agg(t::text, '|' ORDER BY t.role_name, t.tenant_id, t.org_id), '')) FROM authaudit.tenant_scope t
    UNION ALL SELECT 'lockout_policy', md5(coalesce(string_agg(t::text, '|' ORDER BY t.tenant_id), '')) FROM authaudit.lockout_policy t
    UNION ALL SELECT 'lockout_state', md5(coalesce(string_agg(t::text, '|' ORDER BY t.tenant_id, t.user_id), '')) FROM authaudit.lockout_state t
    UNION ALL SELECT 'lockout_ip_state', md5(coalesce(string_agg(t::text, '|' ORDER BY t.tenant_id, t.ip), '')) FROM authaudit.lockout_ip_state t
    UNION ALL SELECT 'lockout_ip_account_state', md5(coalesce(string_agg(t::text, '|' ORDER BY t.tenant_id, t.ip, t.user_id), '')) FROM authaudit.lockout_ip_account_state t
    UNION ALL SELECT 'checkpoints', md5(coalesce(string_agg(t::text, '|' ORDER BY t.tenant_id, t.seq), '')) FROM authaudit.checkpoints t";

fn content(c: &mut Client) -> Vec<(String, String)> {
    c.query(CONTENT, &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ERROR") && !stderr.contains("error"),
        "{cmd:?}: {stderr}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn conn_args(db: &TestDb) -> Vec<String> {
    [
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
        "-p",
        &db.cluster().port().to_string(),
        "-d",
        db.name(),
    ]
    .map(String::from)
    .to_vec()
}

fn seed(db: &TestDb) {
    let mut c = db.connect();
    c.batch_execute(
        "DO $$ BEGIN CREATE ROLE some_app; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
         INSERT INTO authaudit.lockout_policy (tenant_id, max_failures) VALUES ('agency-1', 3);
         INSERT INTO authaudit.tenant_scope (role_name, tenant_id, can_read, can_write)
              VALUES ('some_app', 'agency-1', false, true);
         SELECT authaudit.ensure_mirror_publication();",
    )
    .unwrap();
    for (tenant, kind, user) in [
        ("agency-1", "login_failed", "alice"),
        ("agency-1", "login_failed", "alice"),
        ("agency-1", "login_failed", "alice"),
        ("agency-1", "lockout_reset", "alice"),
        ("agency-1", "login_success", "alice"),
        ("agency-2", "login_failed", "bob"),
        ("agency-2", "login_success", "bob"),
    ] {
        let e = Event::new(tenant, kind, user)
            .org("hq")
            .ip("203.0.113.9")
            .metadata(serde_json::json!({"k": [1, "two"]}));
        record(&mut c, &e);
    }
    c.batch_execute(
        "SELECT authaudit.checkpoint('agency-1'); SELECT authaudit.checkpoint('agency-2');
         SELECT authaudit.record_token_issued(gen_random_uuid(), 'agency-2', 'hq', 'bob',
           'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IiLCJqdGkiOiJqMSJ9.c2ln', NULL, NULL, 'web');",
    )
    .unwrap();
}

fn assert_restored(source: &mut Client, restored: &TestDb) {
    let mut r = restored.connect();
    assert_eq!(content(&mut r), content(source), "restored rows differ");
    let (a, b) = (verify(&mut r, "agency-1"), verify(&mut r, "agency-2"));
    assert!(a.0 && b.0, "{a:?} {b:?}");
    assert_eq!((a.1, b.1), (6, 3), "every row verified");
    // Recording continues at the next seq, and the chain still verifies.
    let seq = record(&mut r, &Event::failed("agency-1", "alice").org("hq")).seq;
    assert_eq!(seq, 7);
    assert!(verify(&mut r, "agency-1").0);
    r.batch_execute("SELECT authaudit.checkpoint('agency-1')")
        .unwrap();
    // The publication comes back with the dump, without its tables (pg_dump
    // leaves out the membership of an extension's tables); the sidecar's
    // call at start puts them back.
    let count = |r: &mut Client, sql: &str| -> i64 { r.query_one(sql, &[]).unwrap().get(0) };
    assert_eq!(
        count(
            &mut r,
            "SELECT count(*) FROM pg_publication WHERE pubname = 'authaudit_mirror'"
        ),
        1
    );
    r.batch_execute("SELECT authaudit.ensure_mirror_publication()")
        .unwrap();
    assert_eq!(
        count(
            &mut r,
            "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'authaudit_mirror'"
        ),
        3
    );
}

#[test]
fn a_dump_and_restore_keeps_every_row_and_the_chains_continue() {
    let source = Cluster::shared().fresh_db_with_lockout("backup_source");
    seed(&source);
    let mut src = source.connect();
    let dir = source
        .cluster()
        .dir()
        .join(format!("dump-{}", source.name()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();

    // Custom format, restored by pg_restore (stopping at the first error).
    let custom = dir.join("custom.dump");
    run(Command::new(format!("{BIN}/pg_dump"))
        .args(conn_args(&source))
        .args(["-Fc", "-f"])
        .arg(&custom));
    let restored = Cluster::shared().empty_db("backup_custom");
    run(Command::new(format!("{BIN}/pg_restore"))
        .args(conn_args(&restored))
        .arg("--exit-on-error")
        .arg(&custom));
    assert_restored(&mut src, &restored);

    // Plain format, replayed by psql (stopping at the first error).
    let plain = run(Command::new(format!("{BIN}/pg_dump")).args(conn_args(&source)));
    assert!(
        plain.contains("COPY authaudit.auth_log"),
        "no rows in the dump"
    );
    let replayed = Cluster::shared().empty_db("backup_plain");
    let file = dir.join("plain.sql");
    std::fs::write(&file, plain).unwrap();
    run(Command::new(format!("{BIN}/psql"))
        .args(conn_args(&replayed))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(&file));
    assert_restored(&mut src, &replayed);
}

#[test]
fn the_restores_door_is_closed_to_writers() {
    let db = Cluster::shared().fresh_db("backup_door");
    let p = db.name().to_string();
    let mut su = db.connect();
    su.batch_execute(&format!(
        "CREATE ROLE {p}_w LOGIN IN ROLE authaudit_writer;
         INSERT INTO authaudit.tenant_scope (role_name, tenant_id, can_read, can_write)
              VALUES ('{p}_w', 'agency-1', false, true);"
    ))
    .unwrap();
    record(&mut su, &Event::failed("agency-1", "alice"));
    let mut w = Client::connect(
        &format!(
            "host=127.0.0.1 port={} user={p}_w dbname={p}",
            db.cluster().port()
        ),
        postgres::NoTls,
    )
    .unwrap();
    // What a restore does (COPY, INSERT of a chained row), as a writer.
    for sql in [
        "COPY authaudit.auth_log FROM STDIN",
        "INSERT INTO authaudit.auth_log SELECT * FROM authaudit.auth_log",
        "INSERT INTO authaudit.checkpoints (tenant_id, seq, link_sha256, digest_sha512, digest_sha3_256, head_log_id, created_by) \
         VALUES ('agency-1', 9, '', '', '', gen_random_uuid(), 'x')",
        "INSERT INTO authaudit.lockout_state (tenant_id, user_id) VALUES ('agency-1', 'mallory')",
        "SET session_replication_role = replica",
    ] {
        let err = w.batch_execute(sql).unwrap_err();
        assert_eq!(
            sqlstate(&err),
            Some(SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {err}"
        );
    }
    assert!(verify(&mut su, "agency-1").0);
}
