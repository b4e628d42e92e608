//! The recording pipeline's own guarantees, attacked where it caches or
//! decides in memory: a policy cached by a long-lived session, a policy read
//! inside an old snapshot, exact metadata next to the engine's facts, state
//! written only when it changes, batches with lockout effects and retries in
//! order, first failures racing on a new source IP, and more tenants than
//! the chain-head cache holds.

use crate::support::{record, record_batch, sqlstate, try_record, verify, Event, StoredExt};
use authaudit_tests::{Cluster, TestDb};
use postgres::error::SqlState;
use postgres::{Client, IsolationLevel};
use std::sync::{Arc, Barrier};
use std::thread;

fn db(hint: &str) -> TestDb {
    Cluster::shared().fresh_db_with_lockout(hint)
}

fn fail(c: &mut Client, tenant: &str, user: &str) -> serde_json::Value {
    record(c, &Event::failed(tenant, user).ip("203.0.113.9")).lockout()
}

fn locked(c: &mut Client, tenant: &str, user: &str) -> bool {
    c.query_opt(
        "SELECT locked FROM authaudit.lockout_state WHERE tenant_id = $1 AND user_id = $2",
        &[&tenant, &user],
    )
    .unwrap()
    .is_some_and(|r| r.get(0))
}

#[test]
fn a_policy_change_reaches_a_session_that_cached_the_old_policy() {
    let db = db("policy_cache");
    let mut writer = db.connect();
    // The writer's backend caches acme's policy (the default: 5 failures).
    assert_eq!(fail(&mut writer, "acme", "alice")["failures_in_window"], 1);
    db.connect()
        .batch_execute(
            "INSERT INTO authaudit.lockout_policy (tenant_id, max_failures) VALUES ('acme', 2)",
        )
        .unwrap();
    let facts = fail(&mut writer, "acme", "alice");
    assert_eq!(facts["locked_account"], true, "{facts}");
    // And back: the deletion reaches it too.
    db.connect()
        .batch_execute("DELETE FROM authaudit.lockout_policy WHERE tenant_id = 'acme'")
        .unwrap();
    for n in 1..=4 {
        assert_eq!(fail(&mut writer, "acme", "bob")["failures_in_window"], n);
    }
    assert!(!locked(&mut writer, "acme", "bob"), "the default allows 5");
}

#[test]
fn a_policy_read_inside_an_old_snapshot_is_not_kept_past_it() {
    let db = db("policy_snapshot");
    let mut writer = db.connect();
    fail(&mut writer, "acme", "warmup");
    let mut tx = writer
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .unwrap();
    tx.query_one("SELECT 1", &[]).unwrap(); // the snapshot is taken here
    db.connect()
        .batch_execute(
            "INSERT INTO authaudit.lockout_policy (tenant_id, max_failures) VALUES ('acme', 2)",
        )
        .unwrap();
    // Inside the old snapshot the policy row is not there yet: the default
    // applies, and must not be remembered under the new configuration.
    let facts = record(&mut tx, &Event::failed("acme", "carol")).lockout();
    assert_eq!(facts["failures_in_window"], 1);
    tx.commit().unwrap();
    let facts = fail(&mut writer, "acme", "carol");
    assert_eq!(
        facts["locked_account"], true,
        "the new policy applies: {facts}"
    );
}

#[test]
fn metadata_numbers_keep_their_exact_form_next_to_the_engines_facts() {
    let db = db("metadata_exact");
    let mut c = db.connect();
    let meta = r#"{"amount": 1.50, "big": 123456789012345678901234567890, "tiny": 1e-30}"#;
    let alice = Event::failed("acme", "alice").metadata_text(meta);
    let single = record(&mut c, &alice).metadata.get().to_owned();
    let bob = Event::failed("acme", "bob").metadata_text(meta);
    let batch = record_batch(&mut c, &[bob])[0].metadata.get().to_owned();
    for stored in [&single, &batch] {
        assert!(
            stored.contains(r#""amount": 1.50"#)
                && stored.contains(r#""big": 123456789012345678901234567890"#)
                && stored.contains(r#""tiny": 0.000000000000000000000000000001"#)
                && stored.contains(r#""failures_in_window": 1"#),
            "{stored}"
        );
    }
    assert!(verify(&mut c, "acme").0);
}

#[test]
fn a_success_that_follows_no_failure_writes_no_state() {
    let db = db("success_no_write");
    let mut c = db.connect();
    let success = |c: &mut Client, user: &str| {
        record(c, &Event::success("acme", user));
    };
    let row = |c: &mut Client, user: &str| {
        c.query_opt(
            "SELECT failure_count, last_seq, xmin::text FROM authaudit.lockout_state
              WHERE tenant_id = 'acme' AND user_id = $1",
            &[&user],
        )
        .unwrap()
        .map(|r| {
            (
                r.get::<_, i32>(0),
                r.get::<_, Option<i64>>(1),
                r.get::<_, String>(2),
            )
        })
    };
    success(&mut c, "alice");
    assert_eq!(
        row(&mut c, "alice"),
        None,
        "no state for an account that never failed"
    );
    fail(&mut c, "acme", "bob");
    success(&mut c, "bob");
    let cleared = row(&mut c, "bob").unwrap();
    assert_eq!(
        (cleared.0, cleared.1),
        (0, Some(3)),
        "the success cleared the failure"
    );
    success(&mut c, "bob");
    assert_eq!(
        row(&mut c, "bob").unwrap(),
        cleared,
        "nothing left to clear: not rewritten"
    );
    assert!(verify(&mut c, "acme").0);
}

#[test]
fn a_batch_applies_lockout_effects_and_retries_in_input_order() {
    let db = db("batch_order");
    let mut c = db.connect();
    c.batch_execute(
        "INSERT INTO authaudit.lockout_policy (tenant_id, max_failures) VALUES ('acme', 3)",
    )
    .unwrap();
    let id = |n: u32| format!("00000000-0000-4000-8000-0000000000{n:02}");
    let ev = |n: u32, kind: &str, user: &str| {
        format!(
            r#"{{"log_id": "{}", "tenant_id": "acme", "event_type": "{kind}", "user_id": "{user}", "channel": "web", "ip": "198.51.100.{n}"}}"#,
            id(n)
        )
    };
    // Three failures lock erin; a fourth comes while locked; the second is
    // repeated (a client retrying inside its batch); other tenants' events
    // interleave; frank's success after no failure writes nothing.
    let batch = format!(
        "[{}, {}, {}, {}, {}, {}, {}, {}]",
        ev(1, "login_failed", "erin"),
        ev(2, "login_failed", "erin"),
        r#"{"log_id": "00000000-0000-4000-8000-000000000090", "tenant_id": "other", "event_type": "login_failed", "user_id": "erin", "channel": "web"}"#,
        ev(2, "login_failed", "erin"),
        ev(3, "login_failed", "erin"),
        ev(4, "login_failed", "erin"),
        ev(5, "login_success", "frank"),
        ev(6, "login_success", "erin"),
    );
    let rows: Vec<(String, i64, String, String)> = c
        .query(
            "SELECT tenant_id, seq, event_type, coalesce(metadata #>> '{_authaudit,lockout}', '')
               FROM authaudit.record_events($1::text::jsonb)",
            &[&batch],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let seqs: Vec<(&str, i64)> = rows.iter().map(|r| (r.0.as_str(), r.1)).collect();
    // The lock is seq 4, right after the failure that caused it.
    assert_eq!(
        seqs,
        [
            ("acme", 1),
            ("acme", 2),
            ("other", 1),
            ("acme", 2),
            ("acme", 3),
            ("acme", 5),
            ("acme", 6),
            ("acme", 7)
        ]
    );
    assert!(rows[4].3.contains(r#""locked_account": true"#), "{rows:?}");
    assert!(rows[5].3.contains(r#""while_locked": true"#), "{rows:?}");
    assert!(rows[7].3.contains(r#""was_locked": true"#), "{rows:?}");
    let lock: (i64, String) = c
        .query_one(
            "SELECT seq, metadata ->> 'triggered_by' FROM authaudit.auth_log
              WHERE tenant_id = 'acme' AND event_type = 'account_locked'",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(lock, (4, id(3)));
    let state: (i32, bool, i64, String) = c
        .query_one(
            "SELECT failure_count, locked, last_seq, host(last_failure_ip) FROM authaudit.lockout_state
              WHERE tenant_id = 'acme' AND user_id = 'erin'",
            &[],
        )
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .unwrap();
    // The last change is the success while locked (seq 7): it stays
    // locked and clears the run of failures it reported.
    assert_eq!(state, (0, true, 7, "198.51.100.4".into()));
    let frank: i64 = c
        .query_one(
            "SELECT count(*) FROM authaudit.lockout_state WHERE user_id = 'frank'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(frank, 0);
    assert!(verify(&mut c, "acme").0 && verify(&mut c, "other").0);

    // A retry of the whole batch changes nothing; a reused id with other
    // content fails it, and nothing of it is written.
    let again: i64 = c
        .query_one(
            "SELECT count(*) FROM authaudit.record_events($1::text::jsonb)",
            &[&batch],
        )
        .unwrap()
        .get(0);
    assert_eq!(again, 8);
    let reused = format!(
        "[{}, {}]",
        ev(7, "login_failed", "gina"),
        ev(1, "login_failed", "henry")
    );
    let err = c
        .query(
            "SELECT * FROM authaudit.record_events($1::text::jsonb)",
            &[&reused],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some(SqlState::UNIQUE_VIOLATION), "{err}");
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM authaudit.auth_log WHERE tenant_id = 'acme'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 7);
    assert!(!locked(&mut c, "acme", "gina"));
}

#[test]
fn concurrent_first_failures_from_one_new_source_ip_are_all_counted() {
    let db = db("ip_race");
    let clients = 8;
    let rounds = 4; // below the default 5: no account locks
    let start = Arc::new(Barrier::new(clients));
    let handles: Vec<_> = (0..clients)
        .map(|n| {
            let (url, start) = (db.url(), start.clone());
            thread::spawn(move || {
                let mut c = Client::connect(&url, postgres::NoTls).unwrap();
                start.wait();
                for r in 0..rounds {
                    // Each round a source IP nobody has seen, every client
                    // on another account: the IP's row is created by a race.
                    let e = Event::failed("acme", &format!("user{n}")).ip(&format!("192.0.2.{r}"));
                    record(&mut c, &e);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut c = db.connect();
    let counts: Vec<i32> = c
        .query(
            "SELECT failure_count FROM authaudit.lockout_ip_state ORDER BY ip",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(counts, vec![clients as i32; rounds]);
    assert_eq!(verify(&mut c, "acme").1, (clients * rounds) as i64);
}

#[test]
fn more_tenants_than_the_head_cache_holds_keep_every_chain() {
    let db = db("many_tenants");
    let mut c = db.connect();
    let batch = |from: u32, to: u32| {
        format!(
            "SELECT count(*) FROM authaudit.record_events((SELECT jsonb_agg(jsonb_build_object(
                 'log_id', gen_random_uuid(), 'tenant_id', 'tenant-' || g, 'event_type', 'login_success',
                 'user_id', 'u', 'channel', 'web')) FROM generate_series({from}, {to}) AS g))"
        )
    };
    // 1,000 tenants in flight in one transaction, then 1,000 more: the
    // first thousand's heads are evicted (1,024 are cached at once).
    for (from, to) in [(1, 1000), (1001, 2000)] {
        let n: i64 = c.query_one(&batch(from, to), &[]).unwrap().get(0);
        assert_eq!(n, 1000);
    }
    // Their second events continue their chains from the table.
    let seqs: Vec<i64> = c
        .query(
            "SELECT seq FROM authaudit.record_events((SELECT jsonb_agg(jsonb_build_object(
                 'log_id', gen_random_uuid(), 'tenant_id', 'tenant-' || g, 'event_type', 'login_success',
                 'user_id', 'u', 'channel', 'web')) FROM generate_series(1, 2000, 97) AS g))",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(seqs.len() > 20 && seqs.iter().all(|s| *s == 2), "{seqs:?}");
    for t in [1, 98, 1000, 1001, 1940] {
        assert!(verify(&mut c, &format!("tenant-{t}")).0);
    }
}

#[test]
fn a_failure_recorded_inside_an_old_snapshot_never_loses_a_newer_count() {
    let db = db("old_snapshot_count");
    let mut a = db.connect();
    let mut b = db.connect();
    fail(&mut a, "acme", "dave");
    let mut tx = a
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .unwrap();
    tx.query_one("SELECT 1", &[]).unwrap(); // the snapshot is taken here
                                            // Another session counts a failure after that snapshot.
    assert_eq!(fail(&mut b, "acme", "dave")["failures_in_window"], 2);
    // Counting from the old snapshot would write 2 over 2: refused instead.
    let err = try_record(&mut tx, &Event::failed("acme", "dave")).unwrap_err();
    assert_eq!(
        sqlstate(&err),
        Some(SqlState::T_R_SERIALIZATION_FAILURE),
        "{err}"
    );
    drop(tx);
    assert_eq!(fail(&mut a, "acme", "dave")["failures_in_window"], 3);
    assert!(verify(&mut a, "acme").0);
}
