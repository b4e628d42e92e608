//! Extension upgrades: a database created at an earlier release (0.1.0,
//! 0.2.0, 0.3.0, 0.4.0, 0.5.0, 0.6.0, 0.7.0, 0.8.0: their install scripts,
//! as built then, are test fixtures that only `Cluster::releases` installs)
//! and holding that release's rows is updated with
//! `ALTER EXTENSION pg_authaudit UPDATE`; every chain still verifies,
//! recording continues at the next seq, and the upgraded schema equals a
//! fresh install of the current release, object for object. The previous
//! release's SQL records with this library until the update; an older
//! release's rows are fixtures (tests/fixtures/README.md), and its SQL is
//! refused until the update.

use crate::support::{sqlstate, verify};
use authaudit_tests::recording::{self, Event};
use authaudit_tests::{Cluster, TestDb};
use postgres::error::SqlState;
use postgres::Client;

const CURRENT: &str = env!("CARGO_PKG_VERSION");
/// The release before this one: the oldest whose SQL this library serves.
const PREVIOUS: &str = "0.8.0";

fn record(c: &mut Client, tenant: &str, kind: &str, user: &str) -> i64 {
    let e = Event::new(tenant, kind, user).org("hq").ip("198.51.100.7");
    recording::record(c, &e).seq
}

fn version(c: &mut Client) -> String {
    c.query_one(
        "SELECT extversion FROM pg_extension WHERE extname = 'pg_authaudit'",
        &[],
    )
    .unwrap()
    .get(0)
}

/// The extension's objects as `pg_dump --binary-upgrade` writes them (the
/// only mode that dumps an extension's members), without the catalog oids
/// and transaction ids that differ between any two databases.
fn schema(db: &TestDb) -> Vec<String> {
    let out = std::process::Command::new("/usr/lib/postgresql/15/bin/pg_dump")
        .args(["--schema-only", "--binary-upgrade", "--no-owner"])
        .args(["-h", "127.0.0.1", "-U", "postgres"])
        .args(["-p", &db.cluster().port().to_string(), "-d", db.name()])
        .output()
        .expect("pg_dump runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("--") && !l.trim().is_empty())
        .filter(|l| {
            ![
                "binary_upgrade_set_",
                "relfrozenxid",
                "WHERE oid = '",
                "UPDATE pg_catalog.pg_class",
                "\\restrict",
                "\\unrestrict",
            ]
            .iter()
            .any(|k| l.contains(k))
        })
        // The configuration tables are listed by oid; their names are
        // compared apart.
        .map(|l| match l.find("', '{") {
            Some(i) if l.contains("binary_upgrade_create_empty_extension") => {
                let rest = &l[i + 4..];
                let end = rest.find('}').map_or(0, |e| e + 1);
                format!("{}'{{config tables}}{}", &l[..i + 3], &rest[end..])
            }
            _ => l.to_owned(),
        })
        .collect()
}

/// The extension's configuration tables (what pg_dump dumps the rows of).
fn config_tables(db: &TestDb) -> String {
    db.connect()
        .query_one(
            "SELECT extconfig::regclass[]::text FROM pg_extension WHERE extname = 'pg_authaudit'",
            &[],
        )
        .unwrap()
        .get(0)
}

#[test]
fn an_upgrade_from_0_1_0_keeps_every_chain_and_equals_a_fresh_install() {
    upgrade_from("0.1.0", refused_until_update);
}

#[test]
fn an_upgrade_from_0_2_0_keeps_every_chain_and_equals_a_fresh_install() {
    upgrade_from("0.2.0", refused_until_update);
}

#[test]
fn an_upgrade_from_0_3_0_keeps_every_chain_and_equals_a_fresh_install() {
    upgrade_from("0.3.0", refused_until_update);
}

#[test]
fn an_upgrade_from_0_4_0_keeps_every_chain_and_equals_a_fresh_install() {
    upgrade_from("0.4.0", refused_until_update);
}

#[test]
fn an_upgrade_from_0_5_0_keeps_every_chain_and_equals_a_fresh_install() {
    upgrade_from("0.5.0", refused_until_update);
}

#[test]
fn an_upgrade_from_0_6_0_keeps_every_chain_and_equals_a_fresh_install() {
    upgrade_from("0.6.0", refused_until_update);
}

#[test]
fn an_upgrade_from_0_7_0_keeps_every_chain_and_equals_a_fresh_install() {
    upgrade_from("0.7.0", refused_until_update);
}

#[test]
fn an_upgrade_from_0_8_0_keeps_every_chain_and_equals_a_fresh_install() {
    upgrade_from("0.8.0", |c| {
        // Until the update a writer's bindings are read by role name (the
        // table has no role_oid yet), and it records with this library.
        let role = format!(
            "{}_w080",
            c.query_one("SELECT current_database()", &[])
                .unwrap()
                .get::<_, String>(0)
        );
        c.batch_execute(&format!(
            "CREATE ROLE {role} IN ROLE authaudit_writer;
             INSERT INTO authaudit.tenant_scope (role_name, tenant_id, can_write) VALUES ('{role}', 'agency-4', true);
             SET ROLE {role};
             SELECT authaudit.record_event(gen_random_uuid(), 'agency-4', 'login_failed', 'dan', 'web');
             RESET ROLE;"
        ))
        .unwrap();
        // Until the update the investigation is 0.8.0's: the timeline has
        // no enforcement columns yet, and still answers.
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM authaudit.lockout_timeline('agency-1', '-infinity', 'infinity')",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "the lock of the three failures");
        2
    });
}

/// 0.8.0's bindings name their role; after the update each holds the role
/// itself. A binding whose role was dropped binds nobody, not even a role
/// created later under its name.
#[test]
fn bindings_of_0_8_0_follow_their_roles_after_the_update() {
    let db = Cluster::releases().empty_db("upgrade_bindings_0_8_0");
    let p = db.name().to_string();
    let mut c = db.connect();
    c.batch_execute(&format!(
        "CREATE EXTENSION pg_authaudit VERSION '0.8.0';
         CREATE ROLE {p}_kept LOGIN IN ROLE authaudit_reader;
         CREATE ROLE {p}_dropped LOGIN IN ROLE authaudit_reader;
         INSERT INTO authaudit.tenant_scope (role_name, tenant_id, can_read) VALUES
           ('{p}_kept', 'agency-1', true), ('{p}_dropped', 'agency-1', true);
         DROP ROLE {p}_dropped;
         ALTER EXTENSION pg_authaudit UPDATE;
         CREATE ROLE {p}_dropped LOGIN IN ROLE authaudit_reader;
         ALTER ROLE {p}_kept RENAME TO {p}_renamed;"
    ))
    .unwrap();
    recording::record(&mut c, &Event::failed("agency-1", "alice"));
    let seen = |role: &str| -> i64 {
        db.connect_as(role)
            .query_one("SELECT count(*) FROM authaudit.auth_log", &[])
            .unwrap()
            .get(0)
    };
    assert_eq!(
        seen(&format!("{p}_renamed")),
        1,
        "the binding followed the rename"
    );
    assert_eq!(
        seen(&format!("{p}_dropped")),
        0,
        "a new role under a dropped name"
    );
    let orphans: i64 = c
        .query_one(
            "SELECT count(*) FROM authaudit.tenant_scope WHERE role_oid IS NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(orphans, 1);
    c.batch_execute(&format!("DROP ROLE {p}_renamed; DROP ROLE {p}_dropped;"))
        .ok();
}

/// 0.6.0's retention_applied event recorded the anchor's SHA-256 link only:
/// after the update its chain still verifies (the checkpoint supplies the
/// other two digests and must agree with the link), a new retention run
/// records all three, and the independent verifier says how each chain was
/// anchored.
#[test]
fn a_chain_retained_under_0_6_0_still_verifies_after_the_update() {
    let db = Cluster::releases().empty_db("upgrade_retention_0_6_0");
    let mut c = db.connect_dated();
    c.batch_execute("CREATE EXTENSION pg_authaudit VERSION '0.6.0'")
        .unwrap();
    let old_failures = |c: &mut Client, tenant: &str, n: i64| {
        for _ in 0..n {
            recording::record(c, &Event::failed(tenant, "alice").ago("400 days"));
        }
    };
    let retain = |c: &mut Client, tenant: &str| -> i64 {
        c.batch_execute(&format!("SELECT authaudit.checkpoint('{tenant}')"))
            .unwrap();
        c.query_one(
            "SELECT removed_rows FROM authaudit.apply_retention($1, now() - interval '1 year')",
            &[&tenant],
        )
        .unwrap()
        .get(0)
    };
    // Under 0.6.0, agency-1 recorded three failures 400 days old, a
    // checkpoint, and retention removed the three (the fixture).
    load_release_rows(&mut c, "0.6.0-retained");
    c.batch_execute("ALTER EXTENSION pg_authaudit UPDATE")
        .unwrap();
    assert_eq!(version(&mut c), CURRENT);
    let a = verify(&mut c, "agency-1");
    assert!(a.0, "{a:?}");
    old_failures(&mut c, "agency-2", 3);
    assert_eq!(retain(&mut c, "agency-2"), 3);
    let anchor: String = c
        .query_one(
            "SELECT (metadata #> '{_authaudit,retention,anchor}')::text FROM authaudit.auth_log \
             WHERE tenant_id = 'agency-2' AND event_type = 'retention_applied'",
            &[],
        )
        .unwrap()
        .get(0);
    let anchor: serde_json::Value = serde_json::from_str(&anchor).unwrap();
    assert!(
        anchor["digest_sha512"]
            .as_str()
            .is_some_and(|h| h.len() == 128),
        "{anchor}"
    );
    assert!(verify(&mut c, "agency-2").0);
    // The 0.6.0 cut must still match its checkpoint's link.
    c.batch_execute(
        "SET session_replication_role = replica; \
         UPDATE authaudit.checkpoints SET link_sha256 = sha256('forged') WHERE tenant_id = 'agency-1'; \
         RESET session_replication_role;",
    )
    .unwrap();
    let a = verify(&mut c, "agency-1");
    assert!(!a.0, "{a:?}");
    let out = crate::support::run_python(
        "tools/verify_chain.py",
        &db.psql(&[
            "-c",
            "COPY (SELECT * FROM authaudit.auth_log ORDER BY tenant_id, seq) TO STDOUT WITH (HEADER)",
        ]),
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("agency-1: ok, 1 rows (from seq 4, anchored at seq 3 by its retention_applied event (SHA-256 only"), "{text}");
    assert!(
        text.contains(
            "agency-2: ok, 1 rows (from seq 4, anchored at seq 3 by its retention_applied event)"
        ),
        "{text}"
    );
}

/// 0.4.0 counts lockouts against account and source keys: the state rows
/// 0.3.0 kept per spelling and per address are re-keyed by the update, and
/// the rows that now share a key merge into the most restrictive one.
#[test]
fn an_upgrade_from_0_3_0_merges_the_state_rows_of_one_key() {
    let db = Cluster::releases().empty_db("upgrade_rekeys_0_3_0");
    let mut c = db.connect();
    c.batch_execute(
        "CREATE EXTENSION pg_authaudit VERSION '0.3.0';
         INSERT INTO authaudit.lockout_state (tenant_id, user_id, failure_count, locked, locked_at,
                                             locked_until, lock_count)
         VALUES ('t', 'Carol', 4, false, NULL, NULL, 0),
                ('t', ' carol', 5, true, now(), now() + interval '1 hour', 1),
                ('t', 'CAROL', 1, false, NULL, NULL, 0),
                ('t', 'dave', 2, false, NULL, NULL, 0),
                ('u', 'Carol', 3, false, NULL, NULL, 0);
         INSERT INTO authaudit.lockout_ip_state (tenant_id, ip, failure_count, blocked_until)
         VALUES ('t', '::ffff:198.51.100.9', 100, now() + interval '1 hour'),
                ('t', '198.51.100.9', 7, NULL),
                ('t', '2001:db8:1:2::5', 2, NULL),
                ('t', '2001:db8:1:2::6', 3, NULL);
         INSERT INTO authaudit.lockout_ip_account_state (tenant_id, ip, user_id, failure_count)
         VALUES ('t', '2001:db8:1:2::5', 'Carol', 2), ('t', '2001:db8:1:2::6', 'carol', 1);
         ALTER EXTENSION pg_authaudit UPDATE;",
    )
    .unwrap();
    let accounts: Vec<(String, String, i32, bool)> = c
        .query(
            "SELECT tenant_id, user_id, failure_count, locked FROM authaudit.lockout_state ORDER BY 1, 2",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        accounts,
        vec![
            ("t".into(), "carol".into(), 5, true),
            ("t".into(), "dave".into(), 2, false),
            ("u".into(), "carol".into(), 3, false),
        ]
    );
    let sources: Vec<(String, i32)> = c
        .query(
            "SELECT ip::text, failure_count FROM authaudit.lockout_ip_state ORDER BY ip",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        sources,
        vec![
            ("198.51.100.9/32".into(), 100),
            ("2001:db8:1:2::/64".into(), 3)
        ]
    );
    let pairs: Vec<(String, String, i32)> = c
        .query(
            "SELECT ip::text, user_id, failure_count FROM authaudit.lockout_ip_account_state",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(pairs, vec![("2001:db8:1:2::/64".into(), "carol".into(), 2)]);
    // The merged lock holds for every spelling.
    let allowed: bool = c
        .query_one(
            "SELECT allowed FROM authaudit.check_login('t', 'CAROL')",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!allowed);
}

/// Between installing this library and updating, the SQL of a release
/// older than the window (`pg_authaudit/src/legacy.rs`) is refused with
/// 0A000 and the hint to update, and nothing is written: recording, the
/// login check, token issuance where the release has it. Returns the next
/// seq of agency-2.
fn refused_until_update(c: &mut Client) -> i64 {
    let before = c
        .query_one("SELECT count(*) FROM authaudit.auth_log", &[])
        .unwrap()
        .get::<_, i64>(0);
    let token_sql: bool = c
        .query_one(
            "SELECT to_regproc('authaudit.record_token_issued') IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0);
    let mut calls = vec![
        "SELECT authaudit.record_event(gen_random_uuid(), 'agency-2', 'login_failed', 'bob', 'web')",
        "SELECT * FROM authaudit.check_login('agency-1', 'alice')",
    ];
    if token_sql {
        calls.push(
            "SELECT authaudit.record_token_issued(gen_random_uuid(), 'agency-2', 'hq', 'bob', \
             'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2ln', NULL, NULL, 'web')",
        );
    }
    for call in calls {
        let err = c.batch_execute(call).unwrap_err();
        assert_eq!(
            sqlstate(&err),
            Some(SqlState::FEATURE_NOT_SUPPORTED),
            "{call}: {err:?}"
        );
        let hint = err.as_db_error().and_then(|e| e.hint().map(str::to_owned));
        assert!(
            hint.as_deref()
                .is_some_and(|h| h.contains("ALTER EXTENSION pg_authaudit UPDATE")),
            "{call}: {hint:?}"
        );
    }
    let after = c
        .query_one("SELECT count(*) FROM authaudit.auth_log", &[])
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(after, before, "nothing written");
    2
}

/// Loads `tests/fixtures/release-databases/NAME.copy` (the rows a database
/// of that release held; per table a line `COPY authaudit.TABLE`, its rows
/// in COPY's text format and a line `\.`) into the extension's tables as
/// they are, without their triggers, as a restore would.
fn load_release_rows(c: &mut Client, name: &str) {
    use std::io::Write;
    let path =
        authaudit_tests::repo_root().join(format!("tests/fixtures/release-databases/{name}.copy"));
    let text = std::fs::read_to_string(&path).unwrap();
    c.batch_execute("SET session_replication_role = replica")
        .unwrap();
    let mut lines = text.lines();
    while let Some(head) = lines.next() {
        assert!(head.starts_with("COPY authaudit."), "{head}");
        let mut w = c.copy_in(&format!("{head} FROM STDIN")).unwrap();
        for row in lines.by_ref().take_while(|l| *l != "\\.") {
            writeln!(w, "{row}").unwrap();
        }
        w.finish().unwrap();
    }
    c.batch_execute("RESET session_replication_role").unwrap();
}

/// Creates the extension at `old` with rows of that release in it (three
/// failures that lock alice, a success of bob, a checkpoint: recorded live
/// at the previous release, loaded from the fixture of an older one), lets
/// `between` use the old SQL with this library (returning the next seq of
/// agency-2), updates, and checks the chains, recording afterwards and the
/// schema against a fresh install.
fn upgrade_from(old: &str, between: impl FnOnce(&mut Client) -> i64) {
    let db = Cluster::releases().empty_db(&format!("upgrade_from_{}", old.replace('.', "_")));
    let mut c = db.connect();
    c.batch_execute(&format!(
        "ALTER DATABASE {} SET authaudit.lockout_max_failures = 3",
        db.name()
    ))
    .unwrap();
    let mut c = {
        drop(c);
        db.connect()
    };
    c.batch_execute(&format!("CREATE EXTENSION pg_authaudit VERSION '{old}'"))
        .unwrap();
    assert_eq!(version(&mut c), old);
    if old == PREVIOUS {
        for _ in 0..3 {
            record(&mut c, "agency-1", "login_failed", "alice");
        }
        record(&mut c, "agency-2", "login_success", "bob");
        c.batch_execute("SELECT authaudit.checkpoint('agency-1')")
            .unwrap();
    } else {
        load_release_rows(&mut c, old);
    }
    let (before_a, before_b) = (verify(&mut c, "agency-1"), verify(&mut c, "agency-2"));
    assert!(before_a.0 && before_b.0);
    assert_eq!(before_a.1, 4, "3 failures and the lock");
    let b_rows = between(&mut c);
    assert!(verify(&mut c, "agency-2").0);

    c.batch_execute("ALTER EXTENSION pg_authaudit UPDATE")
        .unwrap();
    assert_eq!(version(&mut c), CURRENT);
    let (a, b) = (verify(&mut c, "agency-1"), verify(&mut c, "agency-2"));
    assert!(a.0 && b.0, "{a:?} {b:?}");
    assert_eq!((a.1, b.1), (4, b_rows - 1));
    // Recording continues where each chain ended, with the current rules.
    assert_eq!(record(&mut c, "agency-1", "lockout_reset", "alice"), 5);
    assert_eq!(record(&mut c, "agency-2", "login_failed", "bob"), b_rows);
    let seq: i64 = c
        .query_one(
            "SELECT (authaudit.record_token_issued(gen_random_uuid(), 'agency-2', 'hq', 'bob', \
             'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2ln', NULL, NULL, 'web')).seq",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(seq, b_rows + 1);
    c.batch_execute("SELECT authaudit.checkpoint('agency-1')")
        .unwrap();
    assert!(verify(&mut c, "agency-1").0 && verify(&mut c, "agency-2").0);
    // A log id is unique within its tenant: agency-1's first one is a new
    // event in another tenant.
    let first: String = c
        .query_one(
            "SELECT log_id::text FROM authaudit.auth_log WHERE tenant_id = 'agency-1' AND seq = 1",
            &[],
        )
        .unwrap()
        .get(0);
    let carol = Event::failed("agency-3", "carol").log_id(&first);
    assert_eq!(recording::record(&mut c, &carol).seq, 1);

    // The sidecar creates the publication (0.1.0's CREATE EXTENSION did),
    // in the upgraded database as in a fresh one.
    c.batch_execute("SELECT authaudit.ensure_mirror_publication()")
        .unwrap();
    let fresh = Cluster::releases().empty_db(&format!("upgrade_fresh_{}", old.replace('.', "_")));
    fresh
        .connect()
        .batch_execute(
            "CREATE EXTENSION pg_authaudit; SELECT authaudit.ensure_mirror_publication();",
        )
        .unwrap();
    assert_eq!(config_tables(&db), config_tables(&fresh));
    let (up, new) = (schema(&db), schema(&fresh));
    // The dump holds the extension's members, bodies included.
    for member in [
        "CREATE FUNCTION authaudit._record(",
        "CREATE FUNCTION authaudit._record_events(",
        "ALTER EXTENSION pg_authaudit ADD TABLE authaudit.lockout_state;",
        "CREATE TRIGGER lockout_policy_changed",
        "    org_id text,",
        "CREATE POLICY reader_scope ON authaudit.auth_log",
    ] {
        assert!(
            new.iter().any(|l| l.contains(member)),
            "{member} not in the dump"
        );
    }
    let only_up: Vec<&String> = up.iter().filter(|l| !new.contains(l)).collect();
    let only_new: Vec<&String> = new.iter().filter(|l| !up.contains(l)).collect();
    assert!(
        only_up.is_empty() && only_new.is_empty(),
        "upgraded and fresh schemas differ\nonly upgraded:\n{}\nonly fresh:\n{}",
        only_up
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        only_new
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(up, new, "same objects in another order");
}

/// Where the extension is installed, only the current release can be
/// created: the install scripts of earlier releases are not installed.
#[test]
fn only_the_current_release_can_be_created_where_it_is_installed() {
    let db = Cluster::shared().empty_db("upgrade_no_old_install");
    let mut c = db.connect();
    let err = c
        .batch_execute("CREATE EXTENSION pg_authaudit VERSION '0.8.0'")
        .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        Some(SqlState::INVALID_PARAMETER_VALUE),
        "{err}"
    );
    let message = err.as_db_error().map(|e| e.message().to_owned());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("no installation script")),
        "{message:?}"
    );
    c.batch_execute("CREATE EXTENSION pg_authaudit").unwrap();
    assert_eq!(version(&mut c), CURRENT);
}
