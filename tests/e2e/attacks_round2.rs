//! The second adversarial review's attacks (release 0.8.0), kept in the
//! suite as the attacker wrote them, with the roles of `attacks.rs`: a
//! writer bound to no tenant, tenants' and organisations' writers, an
//! admin, a superuser who knows the algorithm, and the server's own log.

use crate::attacks::{expect_state, token, Agencies};
use crate::support::{record, sqlstate, try_record, verify, Event};
use authaudit_tests::Stored;
use postgres::error::SqlState;
use postgres::Client;

/// Attack 10: with statement logging on (`log_statement = 'all'`,
/// `log_min_duration_statement = 0`, `auto_explain` at 0 ms) and bound
/// values logged (`log_parameter_max_length` at its default, -1), a token
/// reached the log in `statement:`, `duration:`, `Query Text:` and
/// `parameters:` lines. With `log_parameter_max_length = 0` (what the docs
/// recommend) no bound value is logged at all.
#[test]
fn statement_logging_and_auto_explain_write_no_token_to_the_server_log() {
    let a = Agencies::new("atk2_log");
    let mut w = a.login("writer1");
    let marker = format!("{}-logged", a.p).replace('_', "-");
    let literal = token(&mut w, "u1", &format!("{marker}-literal"));
    let bound = token(&mut w, "u1", &format!("{marker}-bound"));
    let malformed = format!("{marker}-not-a-jws");
    let mut s = a.superuser();
    let setup = |s: &mut Client, parameter_max_length: i32| {
        s.batch_execute(&format!(
            "SET log_statement = 'all';
             SET log_min_duration_statement = 0;
             SET log_parameter_max_length = {parameter_max_length};
             SET log_parameter_max_length_on_error = -1;
             LOAD 'auto_explain';
             SET auto_explain.log_min_duration = 0;
             SET auto_explain.log_nested_statements = on;"
        ))
        .unwrap();
    };
    for parameter_max_length in [-1, 0] {
        setup(&mut s, parameter_max_length);
        s.batch_execute(&format!(
            "SELECT authaudit.record_token_issued(gen_random_uuid(), 'agency-1', NULL, 'u1', \
             '{literal}', NULL, NULL, 'web')"
        ))
        .ok();
        s.execute(
            "SELECT authaudit.record_token_issued(gen_random_uuid(), 'agency-1', NULL, 'u1', \
             $1, NULL, NULL, 'web')",
            &[&bound],
        )
        .ok();
        // A malformed token is refused, and still stays out of the log.
        let e = s
            .execute(
                "SELECT authaudit.record_token_issued(gen_random_uuid(), 'agency-1', NULL, 'u1', \
                 $1, NULL, NULL, 'web')",
                &[&malformed],
            )
            .unwrap_err();
        assert_eq!(sqlstate(&e), Some(SqlState::INVALID_TEXT_REPRESENTATION));
        // A token where PostgreSQL echoes input in its own error.
        let e = s.execute("SELECT $1::text::uuid", &[&literal]).unwrap_err();
        assert_eq!(sqlstate(&e), Some(SqlState::INVALID_TEXT_REPRESENTATION));
    }
    s.batch_execute("RESET ALL").unwrap();
    let log = std::fs::read_to_string(a.db.cluster().dir().join("server.log")).unwrap();
    // No part of any token, nor the malformed one, is there...
    for t in [&literal, &bound] {
        for part in t.split('.') {
            assert!(
                !log.contains(part),
                "a token part is in the server log: {part}"
            );
        }
    }
    assert!(
        !log.contains(&malformed),
        "the malformed token is in the server log"
    );
    // ...and the statements were logged (the hook left their timings).
    assert!(
        log.contains("statement hidden by pg_authaudit"),
        "no statement was logged: the test tests nothing"
    );
}

/// A writer whose binding is revoked while it holds a REPEATABLE READ
/// transaction with a transaction id: its bindings used to be read with the
/// transaction's old snapshot (a read-write SPI statement takes it), and
/// the stale scope was cached for the rest of the session.
#[test]
fn a_revoked_writer_is_refused_at_once_even_in_an_old_snapshot() {
    let a = Agencies::new("atk2_revoke");
    let mut w = a.login("writer1");
    let mut r = a.login("reader1");
    let record = |w: &mut Client| try_record(w, &Event::success("agency-1", "bob"));
    record(&mut w).unwrap();
    w.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT pg_current_xact_id();")
        .unwrap();
    r.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT pg_current_xact_id();")
        .unwrap();
    a.superuser()
        .batch_execute(&format!(
            "DELETE FROM authaudit.tenant_scope WHERE role_name IN ('{p}_writer1', '{p}_reader1')",
            p = a.p
        ))
        .unwrap();
    expect_state(
        record(&mut w),
        SqlState::INSUFFICIENT_PRIVILEGE,
        "inside the old snapshot",
    );
    w.batch_execute("ROLLBACK").unwrap();
    expect_state(record(&mut w), SqlState::INSUFFICIENT_PRIVILEGE, "after it");
    let seen: i64 = r
        .query_one("SELECT count(*) FROM authaudit.auth_log", &[])
        .unwrap()
        .get(0);
    assert_eq!(seen, 0, "a revoked reader inside an old snapshot");
    r.batch_execute("COMMIT").unwrap();
}

/// A chain head read back (not cached) inside a REPEATABLE READ transaction
/// used to come from the transaction's old snapshot: the append then took a
/// seq another session had committed (23505), and the stale head stayed
/// cached, so every later append of the tenant failed.
#[test]
fn a_chain_head_read_inside_an_old_snapshot_is_the_latest_one() {
    let a = Agencies::new("atk2_stale_head");
    let mut s1 = a.superuser();
    let mut s2 = a.superuser();
    let record = |c: &mut Client| -> Result<i64, postgres::Error> {
        try_record(c, &Event::success("agency-1", "bob")).map(|s| s.seq)
    };
    assert_eq!(record(&mut s2).unwrap(), 1);
    s1.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT pg_current_xact_id();")
        .unwrap();
    assert_eq!(record(&mut s2).unwrap(), 2);
    // The head is forgotten (as an eviction would): it is read back next.
    s2.batch_execute("SELECT authaudit._forget_chain_heads()")
        .unwrap();
    assert_eq!(record(&mut s1).unwrap(), 3, "the head s2 committed");
    s1.batch_execute("COMMIT").unwrap();
    assert_eq!(record(&mut s2).unwrap(), 4);
    assert!(verify(&mut s2, "agency-1").0);
}

/// `rebuild_lockout` of a tenant whose head is not cached (no event yet, or
/// none since the server started) used to fail with "RefCell already
/// borrowed": the rebuild's own event read the head with a statement while
/// the kept-plan cache was borrowed.
#[test]
fn a_rebuild_of_a_tenant_not_cached_records_its_event() {
    let a = Agencies::new("atk2_rebuild_uncached");
    let mut s = a.superuser();
    let r = s
        .query_one(
            "SELECT events, accounts FROM authaudit.rebuild_lockout('never-recorded')",
            &[],
        )
        .unwrap();
    assert_eq!((r.get::<_, i64>(0), r.get::<_, i64>(1)), (0, 0));
    assert!(verify(&mut s, "never-recorded").0);
}

/// Inputs PostgreSQL accepts at its extremes: a time in the last years
/// `timestamptz` holds used to overflow the conversion to Unix time; a
/// tenant id too long for the chain-head table reached it through
/// `checkpoint`; unknown fields are named, a few at most.
#[test]
fn extreme_inputs_are_refused_with_their_sqlstates() {
    let a = Agencies::new("atk2_extremes");
    let mut s = a.superuser();
    let e = s
        .execute(
            "SELECT count(*) FROM authaudit.import_events(jsonb_build_array(jsonb_build_object( \
             'log_id', gen_random_uuid(), 'tenant_id', 'agency-1', 'event_type', 'login_failed', \
             'user_id', 'u', 'channel', 'web', 'occurred_at', '294270-01-01T00:00:00Z')))",
            &[],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&e), Some(SqlState::DATETIME_FIELD_OVERFLOW), "{e}");
    let e = s
        .execute("SELECT authaudit.checkpoint(repeat('x', 65))", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&e), Some(SqlState::INVALID_PARAMETER_VALUE), "{e}");
    let e = s
        .execute(
            r#"SELECT count(*) FROM authaudit.record_events('[{"log_id": "00000000-0000-4000-8000-0000000000f1",
               "tenant_id": "agency-1", "event_type": "login_success", "user_id": "u", "channel": "web",
               "colour": 1, "k2": 1, "k3": 1, "k4": 1, "k5": 1, "k6": 1}]')"#,
            &[],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&e), Some(SqlState::INVALID_PARAMETER_VALUE));
    let message = e.as_db_error().unwrap().message();
    assert!(
        message.contains("colour, k2, k3, k4, k5 and 1 more"),
        "{message}"
    );
}

impl Agencies {
    /// A writer bound to agency-1's organisation hq.
    fn hq_writer(&self) -> Client {
        let p = &self.p;
        self.superuser()
            .batch_execute(&format!(
                "DO $$ BEGIN CREATE ROLE {p}_hq LOGIN IN ROLE authaudit_writer;
                 EXCEPTION WHEN duplicate_object THEN NULL; END $$;
                 INSERT INTO authaudit.tenant_scope (role_name, tenant_id, org_id, can_read, can_write)
                 VALUES ('{p}_hq', 'agency-1', 'hq', false, true) ON CONFLICT DO NOTHING;"
            ))
            .unwrap();
        self.login("hq")
    }
}

fn event(c: &mut Client, kind: &str, user: &str, org: &str) -> Result<Stored, postgres::Error> {
    try_record(
        c,
        &Event::new("agency-1", kind, user)
            .org(org)
            .ip("198.51.100.9"),
    )
}

/// Attack 4: an hq account that had only logged in successfully had no
/// state row, so the branch's writer failed it first and made it the
/// branch's: five failures locked it and hq's own writer was refused for it.
#[test]
fn an_account_belongs_to_the_organisation_of_its_first_event_success_included() {
    let a = Agencies::new("atk2_squat");
    let mut hq = a.hq_writer();
    let mut branch = a.login("branch");
    event(&mut hq, "login_success", "hq-user", "hq").unwrap();
    for _ in 0..6 {
        expect_state(
            event(&mut branch, "login_failed", "hq-user", "branch"),
            SqlState::INSUFFICIENT_PRIVILEGE,
            "the branch fails an hq account",
        );
    }
    // hq's writer keeps every right over its account.
    event(&mut hq, "login_failed", "hq-user", "hq").unwrap();
    event(&mut hq, "lockout_reset", "hq-user", "hq").unwrap();
    event(&mut hq, "login_success", "hq-user", "hq").unwrap();
    let row = a
        .superuser()
        .query_one(
            "SELECT org_id, failure_count, locked FROM authaudit.lockout_state \
              WHERE tenant_id = 'agency-1' AND user_id = 'hq-user'",
            &[],
        )
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, i32>(1),
            row.get::<_, bool>(2)
        ),
        ("hq".to_owned(), 0, false)
    );
    // A batch claims the same way.
    hq.execute(
        "SELECT count(*) FROM authaudit.record_events(jsonb_build_array(jsonb_build_object( \
         'log_id', gen_random_uuid(), 'tenant_id', 'agency-1', 'org_id', 'hq', \
         'event_type', 'login_success', 'user_id', 'hq-batch', 'channel', 'web')))",
        &[],
    )
    .unwrap();
    expect_state(
        event(&mut branch, "login_failed", "hq-batch", "branch"),
        SqlState::INSUFFICIENT_PRIVILEGE,
        "an account a batch claimed",
    );
}

/// Attack 5: the branch imported back-dated failures of an hq account
/// (`rebuild => false`, as an organisation's writer must); after one live
/// hq failure, an admin's routine rebuild locked the hq account on the
/// branch's failures.
#[test]
fn an_import_neither_crosses_organisations_nor_takes_an_account() {
    let a = Agencies::new("atk2_import_cross");
    let mut hq = a.hq_writer();
    let mut branch = a.login("branch");
    event(&mut hq, "login_success", "hq-user", "hq").unwrap();
    let history = |user: &str, org: &str| {
        format!(
            "SELECT count(*) FROM authaudit.import_events((SELECT jsonb_agg(jsonb_build_object( \
               'log_id', gen_random_uuid(), 'tenant_id', 'agency-1', 'org_id', '{org}', \
               'event_type', 'login_failed', 'user_id', '{user}', 'channel', 'web', \
               'ip', '203.0.113.' || g, \
               'occurred_at', now() - interval '1 hour' + g * interval '1 second')) \
               FROM generate_series(1, 10) g), rebuild => false)"
        )
    };
    expect_state(
        branch.execute(&history("hq-user", "branch"), &[]),
        SqlState::INSUFFICIENT_PRIVILEGE,
        "the branch imports an hq account's failures",
    );
    // An account nobody recorded yet becomes the importer's.
    branch.execute(&history("new-user", "branch"), &[]).unwrap();
    expect_state(
        event(&mut hq, "login_failed", "new-user", "hq"),
        SqlState::INSUFFICIENT_PRIVILEGE,
        "hq fails an account the branch imported first",
    );
    event(&mut hq, "login_failed", "hq-user", "hq").unwrap();
    a.login("admin")
        .query("SELECT * FROM authaudit.rebuild_lockout('agency-1')", &[])
        .unwrap();
    let row = a
        .superuser()
        .query_one(
            "SELECT org_id, failure_count, locked FROM authaudit.lockout_state \
              WHERE tenant_id = 'agency-1' AND user_id = 'hq-user'",
            &[],
        )
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, i32>(1),
            row.get::<_, bool>(2)
        ),
        ("hq".to_owned(), 1, false),
        "only hq's own failure counts"
    );
}

/// Attack 3: `rebuild_lockout` (and `import_events`, which rebuilds) held
/// every tenant's lockout tables until its transaction ended: agency-1's
/// failures waited while agency-2's writer kept its rebuild open.
#[test]
fn a_rebuild_holds_only_its_own_tenant() {
    let a = Agencies::new("atk2_rebuild_lock");
    let mut w2 = a.login("writer2");
    w2.batch_execute("BEGIN; SELECT * FROM authaudit.rebuild_lockout('agency-2');")
        .unwrap();
    let mut w1 = a.login("writer1");
    w1.batch_execute("SET lock_timeout = '2s'").unwrap();
    for user in ["alice", "bob"] {
        event(&mut w1, "login_failed", user, "hq").unwrap();
    }
    // An import that rebuilds, left open, holds agency-2 only too.
    w2.batch_execute(
        "COMMIT; BEGIN; SELECT count(*) FROM authaudit.import_events(jsonb_build_array(jsonb_build_object( \
         'log_id', gen_random_uuid(), 'tenant_id', 'agency-2', 'event_type', 'login_failed', \
         'user_id', 'old', 'channel', 'web', 'occurred_at', now() - interval '2 days')));",
    )
    .unwrap();
    event(&mut w1, "login_failed", "carol", "hq").unwrap();
    // agency-2's own live recording waits for the rebuild's end.
    let mut w2b = a.login("writer2");
    w2b.batch_execute("SET lock_timeout = '300ms'").unwrap();
    let x = Event::failed("agency-2", "x");
    expect_state(
        try_record(&mut w2b, &x),
        SqlState::LOCK_NOT_AVAILABLE,
        "its own tenant while the rebuild writes",
    );
    w2.batch_execute("COMMIT").unwrap();
    record(&mut w2b, &x);
}

/// Attack 3, the long rebuild: a rebuild of a long history used to hold the
/// lockout tables for its whole length. Its replay now runs without holding
/// anything; live events recorded meanwhile are applied after it, so the
/// tables end as a rebuild started afterwards leaves them.
#[test]
fn live_recording_goes_on_while_a_long_history_is_replayed() {
    let a = Agencies::new("atk2_long_rebuild");
    let mut su = a.superuser();
    // 60,000 events of 40 accounts over a year.
    for chunk in 0..60 {
        su.execute(
            &format!(
                "SELECT count(*) FROM authaudit.import_events((SELECT jsonb_agg(jsonb_build_object( \
                   'log_id', gen_random_uuid(), 'tenant_id', 'agency-1', 'org_id', 'hq', \
                   'event_type', CASE WHEN g % 7 = 0 THEN 'login_success' ELSE 'login_failed' END, \
                   'user_id', 'user' || (g % 40), 'channel', 'web', 'ip', '198.51.100.' || (g % 200), \
                   'occurred_at', now() - interval '365 days' + (({chunk} * 1000 + g) * interval '500 seconds'))) \
                   FROM generate_series(1, 1000) g), rebuild => false)"
            ),
            &[],
        )
        .unwrap();
    }
    let url = a.db.url();
    let rebuild = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let start = std::time::Instant::now();
        c.query("SELECT * FROM authaudit.rebuild_lockout('agency-1')", &[])
            .unwrap();
        start.elapsed()
    });
    let mut w = a.login("writer1");
    w.batch_execute("SET lock_timeout = '250ms'").unwrap();
    let (mut done, mut waited) = (0, 0);
    while !rebuild.is_finished() {
        match event(&mut w, "login_failed", "live-user", "hq") {
            Ok(_) => done += 1,
            Err(e) if sqlstate(&e) == Some(SqlState::LOCK_NOT_AVAILABLE) => waited += 1,
            Err(e) => panic!("{e}"),
        }
    }
    let took = rebuild.join().unwrap();
    assert!(
        done >= 5 && waited <= 2,
        "live failures during a {took:?} rebuild: {done} recorded, {waited} timed out"
    );
    // The tables hold what a rebuild started now would write.
    let state = |c: &mut Client| -> Vec<String> {
        c.query(
            "SELECT concat_ws(' ', user_id, failure_count, locked, locked_until, lock_count, org_id) \
               FROM authaudit.lockout_state WHERE tenant_id = 'agency-1' ORDER BY user_id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let after_live = state(&mut su);
    su.query("SELECT * FROM authaudit.rebuild_lockout('agency-1')", &[])
        .unwrap();
    assert_eq!(after_live, state(&mut su));
}

/// Attack 7: a tenant's writer imported a `lockout_reset` dated just before
/// a live failure that had locked the account: the event-time answers lost
/// the lock that was enforced. The chain's lock stays in every answer,
/// marked as enforced and not replayed.
#[test]
fn an_imported_reset_cannot_take_an_enforced_lock_out_of_the_investigation() {
    let a = Agencies::new("atk2_erase_lock");
    let mut w = a.login("writer1");
    for _ in 0..5 {
        event(&mut w, "login_failed", "victim", "hq").unwrap();
    }
    let reset_at: String = a
        .superuser()
        .query_one(
            "SELECT (max(occurred_at) - interval '1 millisecond')::text FROM authaudit.auth_log \
              WHERE tenant_id = 'agency-1' AND event_type = 'login_failed'",
            &[],
        )
        .unwrap()
        .get(0);
    w.execute(
        "SELECT count(*) FROM authaudit.import_events(jsonb_build_array(jsonb_build_object( \
         'log_id', gen_random_uuid(), 'tenant_id', 'agency-1', 'org_id', 'hq', \
         'event_type', 'lockout_reset', 'user_id', 'victim', 'channel', 'web', \
         'occurred_at', $1::text::timestamptz)))",
        &[&reset_at],
    )
    .unwrap();
    let mut r = a.login("reader1");
    let rows: Vec<(String, bool, bool)> = r
        .query(
            "SELECT event_type, enforced, replayed FROM authaudit.lockout_timeline('agency-1', '-infinity', 'infinity')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("lockout_reset".to_owned(), false, true),
            ("account_locked".to_owned(), true, false),
        ],
        "the imported reset is not enforced; the enforced lock is not replayed"
    );
    let (locks, enforced): (i64, i64) = {
        let row = r
            .query_one(
                "SELECT locks, enforced_locks FROM authaudit.targeted_accounts('agency-1', '-infinity', 'infinity') \
                  WHERE user_id = 'victim'",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((locks, enforced), (0, 1));
}

/// Attack 11: the chain-head table is server-wide; a writer bound to many
/// tenants held two open batches over 1,024 tenants and every other
/// writer, in any database, got 53400. Each transaction now has a share no
/// other session can take.
#[test]
fn no_session_can_take_another_sessions_share_of_the_chain_heads() {
    let a = Agencies::new("atk2_heads");
    let batch = |from: u32, to: u32| {
        format!(
            "SELECT count(*) FROM authaudit.record_events((SELECT jsonb_agg(jsonb_build_object( \
               'log_id', gen_random_uuid(), 'tenant_id', 'flood-' || g, 'event_type', 'login_success', \
               'user_id', 'u', 'channel', 'web')) FROM generate_series({from}, {to}) AS g))"
        )
    };
    // Sessions take tenants in flight, 50 then one at a time, each batch in
    // a savepoint, until the server refuses: whatever the table holds is
    // held by them.
    let mut holders = Vec::new();
    let mut refusals = Vec::new();
    let mut next = 1u32;
    for _ in 0..6 {
        let mut c = a.superuser();
        c.batch_execute("SET statement_timeout = '60s'; BEGIN")
            .unwrap();
        let mut took = 0;
        for chunk in [50u32, 1] {
            loop {
                c.batch_execute("SAVEPOINT s").unwrap();
                match c.execute(&batch(next, next + chunk - 1), &[]) {
                    Ok(_) => {
                        c.batch_execute("RELEASE SAVEPOINT s").unwrap();
                        next += chunk;
                        took += chunk;
                    }
                    Err(e) => {
                        refusals.push(e);
                        c.batch_execute("ROLLBACK TO SAVEPOINT s").unwrap();
                        break;
                    }
                }
            }
        }
        holders.push(c);
        if took == 0 {
            break;
        }
    }
    assert!(!refusals.is_empty(), "the table never filled");
    for e in &refusals {
        assert_eq!(
            sqlstate(e),
            Some(SqlState::CONFIGURATION_LIMIT_EXCEEDED),
            "{e}"
        );
    }
    // Every other writer still records, a batch of a few tenants too, in
    // this database and another.
    event(&mut a.login("writer1"), "login_failed", "alice", "hq").unwrap();
    a.superuser()
        .execute(
            "SELECT count(*) FROM authaudit.record_events((SELECT jsonb_agg(jsonb_build_object( \
               'log_id', gen_random_uuid(), 'tenant_id', 'agency-2-' || g, 'event_type', 'login_success', \
               'user_id', 'u', 'channel', 'web')) FROM generate_series(1, 3) AS g))",
            &[],
        )
        .expect("a batch within the share");
    let other = authaudit_tests::Cluster::shared().fresh_db("atk2_heads_other");
    event(&mut other.connect(), "login_failed", "alice", "hq").unwrap();
    for mut h in holders {
        h.batch_execute("COMMIT").unwrap();
    }
    // The pool is back once they end.
    let mut c = a.superuser();
    c.execute(&batch(9001, 9900), &[]).unwrap();
}

/// Attack 12: bindings were role names: `DROP ROLE` left the binding, and a
/// role created (or renamed) under that name read agency-2 at once.
#[test]
fn a_binding_follows_its_role_and_dies_with_it() {
    let a = Agencies::new("atk2_bindings");
    let p = &a.p;
    let mut su = a.superuser();
    su.batch_execute(&format!(
        "CREATE ROLE {p}_spy LOGIN IN ROLE authaudit_reader;
         INSERT INTO authaudit.tenant_scope (role_name, tenant_id, can_read) VALUES ('{p}_spy', 'agency-2', true);"
    ))
    .unwrap();
    let count = |role: &str| -> i64 {
        a.db.connect_as(role)
            .query_one("SELECT count(*) FROM authaudit.auth_log", &[])
            .unwrap()
            .get(0)
    };
    assert_eq!(count(&format!("{p}_spy")), 2);
    su.batch_execute(&format!(
        "ALTER ROLE {p}_spy RENAME TO {p}_analyst2;
         CREATE ROLE {p}_spy LOGIN IN ROLE authaudit_reader;"
    ))
    .unwrap();
    assert_eq!(count(&format!("{p}_analyst2")), 2, "renamed: still bound");
    assert_eq!(
        count(&format!("{p}_spy")),
        0,
        "a new role under the old name"
    );
    su.batch_execute(&format!(
        "DROP ROLE {p}_analyst2;
         ALTER ROLE {p}_spy RENAME TO {p}_analyst2;"
    ))
    .unwrap();
    assert_eq!(
        count(&format!("{p}_analyst2")),
        0,
        "renamed to a dropped role's name"
    );
    // A role that does not exist cannot be bound.
    let e = su
        .execute(
            "INSERT INTO authaudit.tenant_scope (role_name, tenant_id, can_read) VALUES ('nobody-yet', 'agency-2', true)",
            &[],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&e), Some(SqlState::UNDEFINED_OBJECT), "{e}");
    su.batch_execute(&format!("DROP ROLE {p}_analyst2"))
        .unwrap();
}

/// Attack 13: a superuser deleted rows 4 and 5 past checkpoint 5; the next
/// event took seq 6 and `checkpoint()` anchored seq 6 over the gap, while
/// `verify_chain` said seq 4 was missing.
#[test]
fn a_checkpoint_never_anchors_over_deleted_rows() {
    let a = Agencies::new("atk2_gap");
    let mut w = a.login("writer1");
    for _ in 0..5 {
        event(&mut w, "login_success", "u", "hq").unwrap();
    }
    w.execute("SELECT authaudit.checkpoint('agency-1')", &[])
        .unwrap();
    a.superuser()
        .batch_execute(
            "SET session_replication_role = replica;
             DELETE FROM authaudit.auth_log WHERE tenant_id = 'agency-1' AND seq IN (4, 5);
             RESET session_replication_role;",
        )
        .unwrap();
    event(&mut w, "login_success", "u", "hq").unwrap();
    let cps = a.count("SELECT count(*) FROM authaudit.checkpoints");
    expect_state(
        w.execute("SELECT authaudit.checkpoint('agency-1')", &[]),
        SqlState::DATA_CORRUPTED,
        "checkpoint over deleted rows",
    );
    assert_eq!(a.count("SELECT count(*) FROM authaudit.checkpoints"), cps);
    let mut su = a.superuser();
    let (ok, _, bad, _) = verify(&mut su, "agency-1");
    assert!(!ok);
    assert_eq!(bad, Some(4));
    let r = su
        .query_one(
            "SELECT ok, first_bad_seq FROM authaudit.verify_chain('agency-1', 6, 6)",
            &[],
        )
        .unwrap();
    assert_eq!(
        (r.get::<_, bool>(0), r.get::<_, Option<i64>>(1)),
        (false, Some(5))
    );
}
