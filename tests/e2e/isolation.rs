//! Tenant and organisation isolation, attacked from a reader's and a
//! writer's session: no row of tenant B may reach a reader of tenant A by any
//! route.

use crate::support::{db, log_id, record, sqlstate, try_record, Event};
use authaudit_tests::TestDb;
use postgres::error::SqlState;
use postgres::Client;

/// A database with two tenants' events and login roles bound to them.
struct Scene {
    db: TestDb,
    prefix: String,
}

impl Scene {
    fn new(hint: &str) -> Scene {
        let db = db(hint);
        let prefix = db.name().to_string();
        let mut c = db.connect();
        let p = &prefix;
        c.batch_execute(&format!(
            "CREATE ROLE {p}_writer_a LOGIN IN ROLE authaudit_writer;
             CREATE ROLE {p}_reader_a LOGIN IN ROLE authaudit_reader;
             CREATE ROLE {p}_reader_b LOGIN IN ROLE authaudit_reader;
             CREATE ROLE {p}_reader_hq LOGIN IN ROLE authaudit_reader;
             CREATE ROLE {p}_auditor LOGIN IN ROLE authaudit_auditor;
             CREATE ROLE {p}_nobody LOGIN;
             INSERT INTO authaudit.tenant_scope (role_name, tenant_id, org_id, can_read, can_write) VALUES
               ('{p}_writer_a', 'tenant-a', NULL, false, true),
               ('{p}_reader_a', 'tenant-a', NULL, true, false),
               ('{p}_reader_b', 'tenant-b', NULL, true, false),
               ('{p}_reader_hq', 'tenant-a', 'hq', true, false);"
        ))
        .unwrap();
        for (n, (tenant, org, user)) in [
            ("tenant-a", "hq", "alice"),
            ("tenant-a", "branch", "bob"),
            ("tenant-a", "hq", "carol"),
            ("tenant-b", "hq", "secret-b-user"),
            ("tenant-b", "ops", "secret-b-admin"),
        ]
        .iter()
        .enumerate()
        {
            let e = Event::failed(tenant, user)
                .log_id(&log_id(7, n as u32))
                .org(org)
                .ip("192.0.2.1");
            record(&mut c, &e);
        }
        Scene { db, prefix }
    }

    fn login(&self, who: &str) -> Client {
        let url = format!(
            "host=127.0.0.1 port={} user={}_{who} dbname={}",
            self.db.cluster().port(),
            self.prefix,
            self.db.name()
        );
        Client::connect(&url, postgres::NoTls).expect("log in")
    }
}

fn users(c: &mut Client, sql: &str) -> Vec<String> {
    let mut v: Vec<String> = c
        .query(sql, &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    v.sort();
    v
}

const A_USERS: [&str; 3] = ["alice", "bob", "carol"];

#[test]
fn a_reader_sees_only_its_tenant_through_queries_joins_prepared_statements_and_cursors() {
    let s = Scene::new("iso_reader");
    let mut a = s.login("reader_a");
    assert_eq!(
        users(&mut a, "SELECT user_id FROM authaudit.auth_log"),
        A_USERS
    );
    assert!(users(
        &mut a,
        "SELECT user_id FROM authaudit.auth_log WHERE tenant_id = 'tenant-b'"
    )
    .is_empty());
    assert_eq!(
        users(
            &mut a,
            "SELECT x.user_id FROM authaudit.auth_log x JOIN authaudit.auth_log y ON y.ip = x.ip AND y.seq = 1"
        ),
        A_USERS
    );
    a.batch_execute(
        "PREPARE q(text) AS SELECT user_id FROM authaudit.auth_log WHERE tenant_id = $1",
    )
    .unwrap();
    assert!(users(&mut a, "EXECUTE q('tenant-b')").is_empty());
    let mut tx = a.transaction().unwrap();
    tx.batch_execute(
        "DECLARE c CURSOR FOR SELECT user_id FROM authaudit.auth_log ORDER BY user_id",
    )
    .unwrap();
    let fetched: Vec<String> = tx
        .query("FETCH ALL FROM c", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(fetched, A_USERS);
    tx.rollback().unwrap();
    let mut b = s.login("reader_b");
    assert_eq!(
        users(&mut b, "SELECT user_id FROM authaudit.auth_log"),
        ["secret-b-admin", "secret-b-user"]
    );
}

#[test]
fn settings_set_config_and_set_role_do_not_widen_a_readers_scope() {
    let s = Scene::new("iso_settings");
    let mut a = s.login("reader_a");
    a.batch_execute("SET authaudit.tenant = 'tenant-b'; SET app.tenant_id = 'tenant-b'")
        .unwrap();
    assert_eq!(
        users(&mut a, "SELECT user_id FROM authaudit.auth_log"),
        A_USERS
    );
    let err = a
        .batch_execute(&format!(
            "SELECT set_config('role', '{}_reader_b', false)",
            s.prefix
        ))
        .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        Some(SqlState::INSUFFICIENT_PRIVILEGE),
        "{err}"
    );
    let err = a
        .batch_execute(&format!("SET ROLE {}_reader_b", s.prefix))
        .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        Some(SqlState::INSUFFICIENT_PRIVILEGE),
        "{err}"
    );
    // Acting as the bare group role the reader belongs to shows nothing.
    a.batch_execute("SET ROLE authaudit_reader").unwrap();
    assert!(users(&mut a, "SELECT user_id FROM authaudit.auth_log").is_empty());
    a.batch_execute("RESET ROLE").unwrap();
    // The bindings table shows a reader its own bindings only.
    let tenants = users(&mut a, "SELECT tenant_id FROM authaudit.tenant_scope");
    assert_eq!(tenants, ["tenant-a"]);
    let err = a
        .batch_execute(&format!(
            "INSERT INTO authaudit.tenant_scope (role_name, tenant_id) VALUES ('{}_reader_a', 'tenant-b')",
            s.prefix
        ))
        .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        Some(SqlState::INSUFFICIENT_PRIVILEGE),
        "{err}"
    );
}

#[test]
fn copy_and_explain_analyze_reveal_nothing_of_another_tenant() {
    let s = Scene::new("iso_copy");
    let copy = |sql: &str| {
        let out = std::process::Command::new("/usr/lib/postgresql/15/bin/psql")
            .args([
                "-X",
                "-At",
                "-h",
                "127.0.0.1",
                "-p",
                &s.db.cluster().port().to_string(),
            ])
            .args(["-U", &format!("{}_reader_a", s.prefix), "-d", s.db.name()])
            .args(["-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        copy("COPY (SELECT user_id FROM authaudit.auth_log ORDER BY 1) TO STDOUT"),
        "alice\nbob\ncarol\n"
    );
    let mut whole: Vec<String> = copy("COPY authaudit.auth_log (user_id) TO STDOUT")
        .lines()
        .map(str::to_string)
        .collect();
    whole.sort();
    assert_eq!(whole, A_USERS);
    let mut a = s.login("reader_a");
    // The tenant list is an index condition: rows of tenant B are never
    // fetched, so no row count of theirs shows up in the plan.
    a.batch_execute("SET enable_seqscan = off").unwrap();
    for q in [
        "SELECT * FROM authaudit.auth_log WHERE tenant_id = 'tenant-b'",
        "SELECT * FROM authaudit.auth_log WHERE tenant_id = 'tenant-b' AND user_id = 'secret-b-user'",
    ] {
        let plan: String = a
            .query(&format!("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) {q}"), &[])
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0) + "\n")
            .collect();
        assert!(plan.contains("actual rows=0"), "{plan}");
        assert!(!plan.contains("Rows Removed by Filter: 1"), "{plan}");
        assert!(!plan.contains("Rows Removed by Filter: 2"), "{plan}");
    }
}

#[test]
fn an_organisation_reader_sees_only_its_organisation() {
    let s = Scene::new("iso_org");
    // A row of the tenant without organisation: tenant-wide readers only.
    let no_org = Event::failed("tenant-a", "no-org-user").log_id(&log_id(7, 99));
    record(&mut s.db.connect(), &no_org);
    let mut hq = s.login("reader_hq");
    assert_eq!(
        users(&mut hq, "SELECT user_id FROM authaudit.auth_log"),
        ["alice", "carol"]
    );
    // Lockout state is per tenant, not per organisation: none of it.
    assert!(users(&mut hq, "SELECT user_id FROM authaudit.lockout_state").is_empty());
    // The row check answers for the caller's own bindings only.
    let may: Vec<bool> = hq
        .query(
            "SELECT authaudit._may_read(t, o) FROM (VALUES ('tenant-a', 'hq'), ('tenant-a', 'branch'), \
             ('tenant-a', NULL), ('tenant-b', 'hq')) v(t, o)",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(may, [true, false, false, false]);
    let mut a = s.login("reader_a");
    assert_eq!(
        users(&mut a, "SELECT user_id FROM authaudit.auth_log"),
        ["alice", "bob", "carol", "no-org-user"]
    );
    // Verifying needs every row of the tenant: refused, not misleadingly "ok".
    let err = hq
        .query("SELECT * FROM authaudit.verify_chain('tenant-a')", &[])
        .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        Some(SqlState::INSUFFICIENT_PRIVILEGE),
        "{err}"
    );
}

#[test]
fn verification_is_scoped_and_auditors_see_every_tenant() {
    let s = Scene::new("iso_verify");
    let mut a = s.login("reader_a");
    let ok: bool = a
        .query_one("SELECT ok FROM authaudit.verify_chain('tenant-a')", &[])
        .unwrap()
        .get(0);
    assert!(ok);
    for q in [
        "SELECT * FROM authaudit.verify_chain('tenant-b')",
        "SELECT * FROM authaudit.verify_chain('tenant-b', 1, 2)",
    ] {
        let err = a.query(q, &[]).unwrap_err();
        assert_eq!(
            sqlstate(&err),
            Some(SqlState::INSUFFICIENT_PRIVILEGE),
            "{err}"
        );
        assert!(!err.to_string().contains("secret"), "{err}");
    }
    let mut auditor = s.login("auditor");
    assert_eq!(
        users(&mut auditor, "SELECT user_id FROM authaudit.auth_log").len(),
        5
    );
    let ok: bool = auditor
        .query_one("SELECT ok FROM authaudit.verify_chain('tenant-b')", &[])
        .unwrap()
        .get(0);
    assert!(ok);
}

#[test]
fn a_writer_records_only_for_its_tenant_and_reads_nothing() {
    let s = Scene::new("iso_writer");
    let mut w = s.login("writer_a");
    let mallory =
        |id: &str, tenant: &str| Event::failed(tenant, "mallory").log_id(id).channel("api");
    let seq = record(&mut w, &mallory(&log_id(8, 1), "tenant-a")).seq;
    assert_eq!(seq, 4);
    let err = try_record(&mut w, &mallory(&log_id(8, 2), "tenant-b")).unwrap_err();
    assert_eq!(
        sqlstate(&err),
        Some(SqlState::INSUFFICIENT_PRIVILEGE),
        "{err}"
    );
    // Another tenant's log id is no oracle: in this tenant it is a new
    // event like any other.
    let seq = record(&mut w, &mallory(&log_id(7, 3), "tenant-a")).seq;
    assert_eq!(seq, 5);
    for sql in [
        "SELECT count(*) FROM authaudit.auth_log",
        "INSERT INTO authaudit.auth_log (log_id) VALUES (gen_random_uuid())",
        "SELECT authaudit._chain_append('tenant-a', '\\x00')",
        "SELECT * FROM authaudit.verify_chain('tenant-a')",
    ] {
        let err = w.batch_execute(sql).unwrap_err();
        assert_eq!(
            sqlstate(&err),
            Some(SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {err}"
        );
    }
    // A role that is in no authaudit group can neither record nor read.
    let mut nobody = s.login("nobody");
    for sql in [
        "SELECT count(*) FROM authaudit.auth_log",
        "SELECT authaudit.record_event(gen_random_uuid(), 'tenant-a', 'login_failed', 'x', 'web')",
    ] {
        let err = nobody.batch_execute(sql).unwrap_err();
        assert_eq!(
            sqlstate(&err),
            Some(SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {err}"
        );
    }
}

#[test]
fn views_over_the_log_must_be_security_invoker() {
    let s = Scene::new("iso_views");
    let p = &s.prefix;
    s.db.connect()
        .batch_execute(&format!(
            "CREATE VIEW public.events_invoker WITH (security_invoker = true) AS
                 SELECT tenant_id, user_id FROM authaudit.auth_log;
             CREATE VIEW public.events_definer AS
                 SELECT tenant_id, user_id FROM authaudit.auth_log;
             GRANT SELECT ON public.events_invoker, public.events_definer TO {p}_reader_a;"
        ))
        .unwrap();
    let mut a = s.login("reader_a");
    assert_eq!(
        users(&mut a, "SELECT user_id FROM public.events_invoker"),
        A_USERS
    );
    // A view owned by a superuser without security_invoker reads as its
    // owner: docs/security.md says to create views with security_invoker.
    assert_eq!(
        users(&mut a, "SELECT user_id FROM public.events_definer").len(),
        5
    );
}

#[test]
fn changed_bindings_take_effect_in_open_sessions() {
    let s = Scene::new("iso_rebind");
    let p = &s.prefix;
    let mut a = s.login("reader_a");
    assert_eq!(
        users(&mut a, "SELECT user_id FROM authaudit.auth_log"),
        A_USERS
    );
    let mut admin = s.db.connect();
    admin
        .batch_execute(&format!(
            "DELETE FROM authaudit.tenant_scope WHERE role_name = '{p}_reader_a'"
        ))
        .unwrap();
    assert!(users(&mut a, "SELECT user_id FROM authaudit.auth_log").is_empty());
    // A binding added in a transaction counts only once it commits.
    let mut tx = admin.transaction().unwrap();
    tx.batch_execute(&format!(
        "INSERT INTO authaudit.tenant_scope (role_name, tenant_id) VALUES ('{p}_reader_a', 'tenant-b')"
    ))
    .unwrap();
    assert!(users(&mut a, "SELECT user_id FROM authaudit.auth_log").is_empty());
    tx.commit().unwrap();
    assert_eq!(
        users(&mut a, "SELECT user_id FROM authaudit.auth_log"),
        ["secret-b-admin", "secret-b-user"]
    );
}

#[test]
fn cef_export_and_check_honour_the_readers_scope() {
    let s = Scene::new("iso_cef");
    let mut a = s.login("reader_a");
    let export = "SELECT l FROM authaudit.export_cef($1, now() - interval '1 day', now() + interval '1 day') l";
    assert_eq!(a.query(export, &[&"tenant-a"]).unwrap().len(), 3);
    assert!(a.query(export, &[&"tenant-b"]).unwrap().is_empty());
    // A line of tenant B checked by a reader of tenant A: unknown, not "false".
    let line: String = s
        .db
        .connect()
        .query_one(
            "SELECT authaudit.to_cef(l) FROM authaudit.auth_log l WHERE tenant_id = 'tenant-b' LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    let seen: Option<bool> = a
        .query_one("SELECT authaudit.verify_cef($1)", &[&line])
        .unwrap()
        .get(0);
    assert_eq!(seen, None);
}

#[test]
fn checkpoints_tokens_retention_and_rates_stay_within_scope() {
    let s = Scene::new("iso_evidence");
    let mut admin = s.db.connect();
    admin
        .batch_execute(
            "SELECT authaudit.checkpoint('tenant-a'); SELECT authaudit.checkpoint('tenant-b');",
        )
        .unwrap();
    // A reader sees its own tenant's checkpoints and rates, never another's.
    let mut b = s.login("reader_b");
    assert_eq!(
        users(
            &mut b,
            "SELECT DISTINCT tenant_id FROM authaudit.checkpoints"
        ),
        ["tenant-b"]
    );
    assert_eq!(
        users(
            &mut b,
            "SELECT DISTINCT tenant_id FROM authaudit.event_rates"
        ),
        ["tenant-b"]
    );
    // Verification from another tenant's checkpoint is refused.
    let err = b
        .query(
            "SELECT * FROM authaudit.verify_chain_from_checkpoint('tenant-a', 1)",
            &[],
        )
        .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        Some(SqlState::INSUFFICIENT_PRIVILEGE),
        "{err}"
    );
    // A writer bound to tenant-a cannot checkpoint tenant-b, record a token
    // for it, or apply retention anywhere; nothing changes.
    let mut w = s.login("writer_a");
    let before: i64 = admin
        .query_one("SELECT count(*) FROM authaudit.checkpoints", &[])
        .unwrap()
        .get(0);
    let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzZWNyZXQtYi11c2VyIn0.c2lnbmF0dXJl";
    for sql in [
        "SELECT authaudit.checkpoint('tenant-b')".to_string(),
        format!(
            "SELECT authaudit.record_token_issued(gen_random_uuid(), 'tenant-b', NULL, 'secret-b-user', '{token}', NULL, NULL, 'web')"
        ),
        "SELECT * FROM authaudit.apply_retention('tenant-a', now() - interval '1 day')".to_string(),
    ] {
        let err = w.batch_execute(&sql).unwrap_err();
        assert_eq!(sqlstate(&err), Some(SqlState::INSUFFICIENT_PRIVILEGE), "{sql}: {err}");
        assert!(!err.to_string().contains("secret-b"), "{err}");
    }
    let after: i64 = admin
        .query_one("SELECT count(*) FROM authaudit.checkpoints", &[])
        .unwrap()
        .get(0);
    assert_eq!(before, after);
    // Nobody edits checkpoints, not even through a bound writer.
    let err = w
        .batch_execute("DELETE FROM authaudit.checkpoints")
        .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        Some(SqlState::INSUFFICIENT_PRIVILEGE),
        "{err}"
    );
}

#[test]
fn roles_with_quotes_case_and_spaces_see_only_their_own_bindings() {
    // The bindings' policy names the caller's role by quoting its name:
    // names a bare identifier would fold or split must still match only
    // themselves.
    let db = db("odd_role_names");
    let p = db.name().to_string();
    let names = [
        format!("{p} Spaced"),
        format!("{p}_Q\"uote"),
        format!("{p}_CASE"),
        format!("{p}_case"),
    ];
    let mut c = db.connect();
    for (i, name) in names.iter().enumerate() {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        c.batch_execute(&format!(
            "CREATE ROLE {quoted} LOGIN IN ROLE authaudit_writer, authaudit_reader"
        ))
        .unwrap();
        c.execute(
            "INSERT INTO authaudit.tenant_scope (role_name, tenant_id, can_read, can_write) \
             VALUES ($1, $2, true, true)",
            &[name, &format!("tenant-{i}")],
        )
        .unwrap();
    }
    for (i, name) in names.iter().enumerate() {
        let mut who = postgres::Config::new();
        who.host("127.0.0.1")
            .port(db.cluster().port())
            .user(name)
            .dbname(db.name());
        let mut me = who.connect(postgres::NoTls).expect("log in");
        let seen = users(&mut me, "SELECT tenant_id FROM authaudit.tenant_scope");
        assert_eq!(
            seen,
            vec![format!("tenant-{i}")],
            "{name:?} sees its binding only"
        );
        let own = Event::failed(&format!("tenant-{i}"), "alice").log_id(&log_id(90, i as u32));
        try_record(&mut me, &own).unwrap_or_else(|e| panic!("{name:?} records: {e:?}"));
        let other = Event::failed(&format!("tenant-{}", (i + 1) % names.len()), "alice")
            .log_id(&log_id(91, i as u32));
        let e = try_record(&mut me, &other).expect_err("another role's tenant");
        assert_eq!(
            sqlstate(&e),
            Some(SqlState::INSUFFICIENT_PRIVILEGE),
            "{name:?}"
        );
    }
    for name in &names {
        c.execute(
            "DELETE FROM authaudit.tenant_scope WHERE role_name = $1",
            &[name],
        )
        .unwrap();
        c.batch_execute(&format!("DROP ROLE \"{}\"", name.replace('"', "\"\"")))
            .unwrap();
    }
}
