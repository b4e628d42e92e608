//! Many sessions writing at once: chains never fork or gap, and no event is
//! lost or duplicated, with single calls, batches, retries and rollbacks.

use crate::support::{db, gapless, log_id, record, record_batch, try_record, verify, Event};
use postgres::Client;
use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::thread;

const SESSIONS: u32 = 8;
const ROUNDS: u32 = 60;

/// Session `s`'s single failure with log id `id` in `tenant`.
fn failure(id: &str, tenant: &str, s: u32) -> Event {
    Event::failed(tenant, &format!("u{s}"))
        .log_id(id)
        .channel("mobile")
        .ip("203.0.113.50")
}

/// One session's work: every fourth round is a batch of three, every fifth
/// is rolled back on purpose, every seventh retries an earlier event.
/// Returns the log ids it committed.
fn session(url: String, s: u32, tenants: Vec<String>, start: Arc<Barrier>) -> Vec<String> {
    let mut c = Client::connect(&url, postgres::NoTls).unwrap();
    let mut committed = Vec::new();
    start.wait();
    for r in 0..ROUNDS {
        let tenant = &tenants[(r as usize + s as usize) % tenants.len()];
        let id = log_id(s, r * 4);
        let mut tx = c.transaction().unwrap();
        let ids: Vec<String> = if r % 4 == 3 {
            let ids: Vec<String> = (0..3).map(|k| log_id(s, r * 4 + k)).collect();
            let batch: Vec<Event> = ids
                .iter()
                .map(|id| Event::failed(tenant, &format!("u{s}")).log_id(id))
                .collect();
            record_batch(&mut tx, &batch);
            ids
        } else {
            record(&mut tx, &failure(&id, tenant, s));
            vec![id]
        };
        if r % 5 == 4 {
            tx.rollback().unwrap();
        } else {
            tx.commit().unwrap();
            committed.extend(ids);
        }
        if r % 7 == 6 && !committed.is_empty() {
            // A retry of an earlier committed single event must not duplicate it.
            let earlier = log_id(s, 0);
            if committed.contains(&earlier) {
                let first_tenant = &tenants[s as usize % tenants.len()];
                record(&mut c, &failure(&earlier, first_tenant, s));
            }
        }
    }
    committed
}

fn run(hint: &str, tenants: &[&str]) {
    let db = db(hint);
    let tenants: Vec<String> = tenants.iter().map(|t| t.to_string()).collect();
    let start = Arc::new(Barrier::new(SESSIONS as usize));
    let handles: Vec<_> = (1..=SESSIONS)
        .map(|s| {
            let (url, tenants, start) = (db.url(), tenants.clone(), start.clone());
            thread::spawn(move || session(url, s, tenants, start))
        })
        .collect();
    let mut expected = BTreeSet::new();
    for h in handles {
        for id in h.join().expect("session panicked") {
            assert!(expected.insert(id), "a log id was committed twice");
        }
    }
    let mut c = db.connect();
    let stored: BTreeSet<String> = c
        .query("SELECT log_id::text FROM authaudit.auth_log", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored, expected, "lost or extra events");
    for t in &tenants {
        let (ok, rows, bad, reason) = verify(&mut c, t);
        assert!(ok, "tenant {t}: first bad seq {bad:?}: {reason:?}");
        assert_eq!(rows, gapless(&mut c, t));
    }
}

#[test]
fn concurrent_writers_on_one_hot_tenant_keep_one_gapless_chain() {
    run("hot_tenant", &["hot"]);
}

#[test]
fn concurrent_writers_over_many_tenants_keep_every_chain_intact() {
    run("many_tenants", &["t1", "t2", "t3", "t4", "t5"]);
}

/// Serializable writers that conflict fail at commit, some after they have
/// let the next writer chain onto them: every failed transaction is retried
/// by its client, and the chain still holds each event exactly once.
#[test]
fn serializable_writers_failing_at_commit_leave_an_intact_chain() {
    let db = db("serializable");
    db.connect()
        .batch_execute("CREATE TABLE public.tally (k int)")
        .unwrap();
    let start = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (1..=4u32)
        .map(|s| {
            let (url, start) = (db.url(), start.clone());
            thread::spawn(move || {
                let mut c = Client::connect(&url, postgres::NoTls).unwrap();
                let mut failures = 0;
                start.wait();
                for r in 0..40 {
                    let id = log_id(s, r);
                    loop {
                        let attempt = (|| -> Result<(), postgres::Error> {
                            let mut tx = c
                                .build_transaction()
                                .isolation_level(postgres::IsolationLevel::Serializable)
                                .start()?;
                            tx.query_one("SELECT count(*) FROM public.tally", &[])?;
                            try_record(&mut tx, &failure(&id, "hot", s))?;
                            tx.execute("INSERT INTO public.tally VALUES (1)", &[])?;
                            tx.commit()
                        })();
                        match attempt {
                            Ok(()) => break,
                            Err(e)
                                if e.code()
                                    == Some(
                                        &postgres::error::SqlState::T_R_SERIALIZATION_FAILURE,
                                    ) =>
                            {
                                failures += 1
                            }
                            Err(e) => panic!("unexpected error: {e}"),
                        }
                    }
                }
                failures
            })
        })
        .collect();
    let failures: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let mut c = db.connect();
    let (ok, rows, bad, reason) = verify(&mut c, "hot");
    assert!(ok, "first bad seq {bad:?}: {reason:?}");
    assert_eq!(rows, 160);
    assert_eq!(gapless(&mut c, "hot"), 160);
    assert!(
        failures > 0,
        "the workload produced no serialization failure to test"
    );
}

/// History imported (with its lockout rebuild) while live failures are
/// recorded into the same tenant: neither side fails, both are chained,
/// and the lockout state is the one the whole history gives.
#[test]
fn an_import_with_rebuild_beside_live_recording_never_deadlocks() {
    let db = crate::support::db_with_lockout("import_beside_live");
    let url = db.url();
    let start = Arc::new(Barrier::new(3));
    let live: Vec<thread::JoinHandle<Vec<String>>> = (0..2u32)
        .map(|w| {
            let (url, start) = (url.clone(), start.clone());
            thread::spawn(move || {
                let mut c = Client::connect(&url, postgres::NoTls).unwrap();
                start.wait();
                let mut errors = Vec::new();
                for n in 0..150u32 {
                    let e = Event::failed("hot", &format!("live{}", n % 20))
                        .log_id(&log_id(w, n))
                        .ip("198.51.100.7");
                    if let Err(e) = try_record(&mut c, &e) {
                        errors.push(format!("live: {e:?}"));
                    }
                }
                errors
            })
        })
        .collect();
    let mut c = Client::connect(&url, postgres::NoTls).unwrap();
    start.wait();
    let mut errors = Vec::new();
    for b in 0..15u32 {
        let batch: Vec<serde_json::Value> = (0..20u32)
            .map(|i| {
                serde_json::json!({"log_id": log_id(100 + b, i), "tenant_id": "hot",
                    "event_type": "login_failed", "user_id": format!("old{}", i % 4),
                    "channel": "web", "ip": "203.0.113.5",
                    "occurred_at": format!("2026-01-01T00:{:02}:{:02}Z", b, i)})
            })
            .collect();
        if let Err(e) = c.execute(
            "SELECT count(*) FROM authaudit.import_events($1::text::jsonb)",
            &[&serde_json::Value::Array(batch).to_string()],
        ) {
            errors.push(format!("import: {e:?}"));
        }
    }
    for h in live {
        errors.extend(h.join().unwrap());
    }
    assert!(
        errors.is_empty(),
        "{} failures, first: {}",
        errors.len(),
        errors[0]
    );
    let (ok, rows, _, reason) = verify(&mut c, "hot");
    assert!(ok, "{reason:?}");
    assert!(rows >= 2 * 150 + 15 * 20);
    // The state equals a rebuild from the whole history.
    let state = |c: &mut Client| -> Vec<(String, i32, bool)> {
        c.query(
            "SELECT user_id, failure_count, locked FROM authaudit.lockout_state WHERE tenant_id = 'hot' ORDER BY user_id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
    };
    let before = state(&mut c);
    c.execute("SELECT * FROM authaudit.rebuild_lockout('hot')", &[])
        .unwrap();
    assert_eq!(state(&mut c), before);
}
