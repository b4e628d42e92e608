//! Many sessions writing at once: chains never fork or gap, and no event is
//! lost or duplicated, with single calls, batches, retries and rollbacks.

use crate::support::{db, gapless, log_id, verify};
use postgres::Client;
use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::thread;

const SESSIONS: u32 = 8;
const ROUNDS: u32 = 60;

fn record_sql() -> &'static str {
    "SELECT authaudit.record_event(log_id => $1::text::uuid, tenant_id => $2, \
     event_type => 'login_failed', user_id => $3, channel => 'mobile', ip => '203.0.113.50')"
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
            let batch: Vec<String> = ids
                .iter()
                .map(|id| {
                    format!(
                        r#"{{"log_id":"{id}","tenant_id":"{tenant}","event_type":"login_failed","user_id":"u{s}","channel":"web"}}"#
                    )
                })
                .collect();
            tx.query(
                "SELECT * FROM authaudit.record_events($1::text::jsonb)",
                &[&format!("[{}]", batch.join(","))],
            )
            .unwrap();
            ids
        } else {
            tx.execute(record_sql(), &[&id, tenant, &format!("u{s}")])
                .unwrap();
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
                c.execute(record_sql(), &[&earlier, first_tenant, &format!("u{s}")])
                    .unwrap();
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
                            tx.execute(record_sql(), &[&id, &"hot", &format!("u{s}")])?;
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
