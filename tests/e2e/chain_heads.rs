//! Shared-memory chain heads: rollbacks to savepoints, errors caught by the
//! caller, restarts, databases that reuse tenant ids, and races on one log_id.

use crate::support::{db, fail, gapless, log_id, record, sqlstate, try_record, verify, Event};
use postgres::error::SqlState;
use postgres::Client;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Instant;

#[test]
fn a_rolled_back_savepoint_leaves_no_gap() {
    let db = db("savepoint");
    let mut c = db.connect();
    let mut tx = c.transaction().unwrap();
    fail(&mut tx, &log_id(1, 1), "acme", "alice");
    tx.batch_execute("SAVEPOINT s").unwrap();
    fail(&mut tx, &log_id(1, 2), "acme", "alice");
    fail(&mut tx, &log_id(1, 3), "acme", "bob");
    tx.batch_execute("ROLLBACK TO SAVEPOINT s").unwrap();
    assert_eq!(fail(&mut tx, &log_id(1, 4), "acme", "carol"), 2);
    tx.commit().unwrap();
    assert_eq!(fail(&mut c, &log_id(1, 5), "acme", "carol"), 3);
    assert_eq!(gapless(&mut c, "acme"), 3);
    assert!(verify(&mut c, "acme").0);
}

#[test]
fn an_error_caught_by_the_caller_rewinds_the_chain() {
    let db = db("caught_error");
    let mut c = db.connect();
    fail(&mut c, &log_id(1, 1), "acme", "alice");
    // The application records an event, then fails and catches the error in
    // a PL/pgSQL block: the event's append is rolled back with the block.
    c.batch_execute(&format!(
        "DO $$ BEGIN
             BEGIN
                 PERFORM authaudit.record_event(log_id => '{}', tenant_id => 'acme',
                     event_type => 'login_failed', user_id => 'bob', channel => 'web');
                 PERFORM 1 / 0;
             EXCEPTION WHEN division_by_zero THEN NULL;
             END;
             PERFORM authaudit.record_event(log_id => '{}', tenant_id => 'acme',
                 event_type => 'login_failed', user_id => 'carol', channel => 'web');
         END $$",
        log_id(1, 2),
        log_id(1, 3)
    ))
    .unwrap();
    assert_eq!(gapless(&mut c, "acme"), 2);
    let users: Vec<String> = c
        .query("SELECT user_id FROM authaudit.auth_log ORDER BY seq", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(users, ["alice", "carol"]);
    assert!(verify(&mut c, "acme").0);
}

#[test]
fn databases_reusing_a_tenant_id_have_separate_chains() {
    let (a, b) = (db("tenant_db_a"), db("tenant_db_b"));
    let (mut ca, mut cb) = (a.connect(), b.connect());
    assert_eq!(fail(&mut ca, &log_id(1, 1), "shared-name", "u"), 1);
    assert_eq!(fail(&mut cb, &log_id(1, 1), "shared-name", "u"), 1);
    assert_eq!(fail(&mut ca, &log_id(1, 2), "shared-name", "u"), 2);
    assert_eq!(fail(&mut cb, &log_id(1, 2), "shared-name", "u"), 2);
    assert!(verify(&mut ca, "shared-name").0 && verify(&mut cb, "shared-name").0);
}

#[test]
fn racing_retries_of_one_log_id_record_it_once() {
    let db = db("log_id_race");
    let id = log_id(9, 9);
    let start = Arc::new(Barrier::new(6));
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let (url, id, start) = (db.url(), id.clone(), start.clone());
            thread::spawn(move || {
                let mut c = Client::connect(&url, postgres::NoTls).unwrap();
                start.wait();
                // A client retries on serialization failures, as documented.
                let e = Event::failed("acme", "alice").log_id(&id);
                for _ in 0..10 {
                    match try_record(&mut c, &e) {
                        Ok(row) => return row.seq,
                        Err(e) if sqlstate(&e) == Some(SqlState::T_R_SERIALIZATION_FAILURE) => {
                            continue
                        }
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
                panic!("no success after 10 tries");
            })
        })
        .collect();
    let seqs: Vec<i64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(seqs.iter().all(|s| *s == 1), "{seqs:?}");
    let mut c = db.connect();
    assert_eq!(gapless(&mut c, "acme"), 1);
    assert!(verify(&mut c, "acme").0);
}

#[test]
fn chains_continue_after_a_backend_crash_and_restart() {
    let db = authaudit_tests::Cluster::dedicated("crash").fresh_db("crash_restart");
    let mut c = db.connect();
    for n in 1..=5 {
        fail(&mut c, &log_id(1, n), "acme", "alice");
    }
    // Leave an open transaction with an uncommitted append, then crash a
    // backend: the postmaster resets shared memory and recovers.
    let mut open = db.connect();
    open.batch_execute("BEGIN").unwrap();
    fail(&mut open, &log_id(1, 6), "acme", "mallory");
    let victim: i32 = open
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let status = std::process::Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    drop(open);
    // The postmaster ends every other session when it sees the crash: wait
    // (bounded) until the first session is gone, then until the cluster
    // accepts connections again.
    let gone = (0..300).any(|_| {
        let dead = c.simple_query("SELECT 1").is_err();
        if !dead {
            thread::sleep(std::time::Duration::from_millis(100));
        }
        dead
    });
    assert!(gone, "the crash restart did not happen within 30 s");
    let mut c = (0..300)
        .find_map(|_| {
            let ready = postgres::Client::connect(&db.url(), postgres::NoTls)
                .ok()
                .and_then(|mut c| c.simple_query("SELECT 1").is_ok().then_some(c));
            if ready.is_none() {
                thread::sleep(std::time::Duration::from_millis(100));
            }
            ready
        })
        .expect("cluster back within 30 s");
    assert_eq!(fail(&mut c, &log_id(1, 7), "acme", "alice"), 6);
    assert_eq!(gapless(&mut c, "acme"), 6);
    assert!(verify(&mut c, "acme").0);
    // The harness's crash check sees this crash in the server's log (on a
    // shared cluster it would fail the test).
    let lines = db.cluster().crash_lines();
    assert!(
        lines.iter().any(|l| l.contains("terminated by signal 9")),
        "the crash check missed a SIGKILLed backend: {lines:?}"
    );
}

/// Sixteen clients record into one tenant as fast as they can, and every
/// server process is killed at once in the middle: after recovery every
/// event a client had been told was committed is there, and the chain
/// verifies without a gap (a link's commit is never kept without its
/// predecessor's, whatever the order their flushes finished in).
#[test]
fn a_crash_under_sixteen_clients_on_one_tenant_keeps_every_acknowledged_event() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    let cluster = authaudit_tests::Cluster::dedicated("hot_crash");
    let db = cluster.fresh_db_with_lockout("hot_crash");
    let acked: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..16u32)
        .map(|t| {
            let (url, acked, stop) = (db.url(), acked.clone(), stop.clone());
            thread::spawn(move || {
                let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let id = log_id(t + 1, n);
                    let kind = if n % 5 == 4 {
                        "login_success"
                    } else {
                        "login_failed"
                    };
                    let e = Event::new("hot", kind, &format!("user{}", n % 40))
                        .log_id(&id)
                        .ip(&format!("198.51.100.{}", n % 50 + 1));
                    let r = try_record(&mut c, &e);
                    match r {
                        Ok(_) => acked.lock().unwrap().push(id),
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    while acked.lock().unwrap().len() < 2000 {
        assert!(Instant::now() < deadline, "the load did not start");
        thread::yield_now();
    }
    cluster.crash();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let mut c = db.connect();
    let found: i64 = c
        .query_one(
            "SELECT count(*) FROM authaudit.auth_log \
              WHERE tenant_id = 'hot' AND log_id = ANY($1::text[]::uuid[])",
            &[&acked],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        found,
        acked.len() as i64,
        "acknowledged events lost in the crash"
    );
    let n = gapless(&mut c, "hot");
    assert!(n >= acked.len() as i64);
    let (ok, checked, bad, reason) = verify(&mut c, "hot");
    assert!(ok, "the chain after the crash: {bad:?} {reason:?}");
    assert_eq!(checked, n);
    // Recording goes on at the next seq.
    assert_eq!(fail(&mut c, &log_id(99, 0), "hot", "after"), n + 1);
}

/// Outside a transaction block a recording call releases its tenants as
/// soon as it has chained its links. A statement that records one tenant's
/// events through several calls, with another session's append between
/// them, would interleave its links with the other's (each commit would
/// wait for the other): its second append is refused (40001). Its first
/// link is then rolled back, and so is the link chained onto it: that
/// session fails at its commit (40001) and its retry records the event.
/// Without another append between its calls, the same statement records
/// both.
#[test]
fn a_statement_whose_appends_would_interleave_with_another_sessions_is_refused() {
    let db = db("interleave");
    let mut holder = db.connect();
    holder
        .batch_execute("SELECT pg_advisory_lock(4242)")
        .unwrap();
    let url = db.url();
    let statement =
        "SELECT authaudit.record_event($1::text::uuid, 'acme', 'login_success', 'a', 'web'), \
                     pg_advisory_lock_shared(4242), \
                     authaudit.record_event($2::text::uuid, 'acme', 'login_success', 'a', 'web')";
    let (first, second) = (log_id(1, 1), log_id(1, 2));
    let writer = thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.execute(statement, &[&first, &second]).map(|_| ())
    });
    // Wait (bounded) until the statement has made its first append and
    // waits on the advisory lock.
    let mut c = db.connect();
    let waiting = |c: &mut Client, lock: &str| -> i64 {
        c.query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = $1 AND NOT granted",
            &[&lock],
        )
        .unwrap()
        .get(0)
    };
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while waiting(&mut c, "advisory") == 0 {
        assert!(Instant::now() < deadline, "the statement never waited");
        thread::yield_now();
    }
    // Another session appends to the tenant meanwhile; its commit waits for
    // the statement's transaction (its predecessor).
    let url = db.url();
    let other = thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        try_record(&mut c, &Event::success("acme", "b").log_id(&log_id(2, 1))).map(|r| r.seq)
    });
    while waiting(&mut c, "transactionid") == 0 {
        assert!(Instant::now() < deadline, "the other session never waited");
        thread::yield_now();
    }
    holder
        .batch_execute("SELECT pg_advisory_unlock(4242)")
        .unwrap();
    let err = writer.join().unwrap().unwrap_err();
    assert_eq!(
        sqlstate(&err),
        Some(SqlState::T_R_SERIALIZATION_FAILURE),
        "{err}"
    );
    let err = other.join().unwrap().unwrap_err();
    assert_eq!(
        sqlstate(&err),
        Some(SqlState::T_R_SERIALIZATION_FAILURE),
        "{err}"
    );
    assert_eq!(gapless(&mut c, "acme"), 0, "nothing of either stays");
    // The retry records the other session's event; the statement, run
    // without an append between its calls, records both.
    let retried = record(&mut c, &Event::success("acme", "b").log_id(&log_id(2, 1))).seq;
    assert_eq!(retried, 1);
    let n = c
        .execute(
            "SELECT authaudit.record_event($1::text::uuid, 'acme', 'login_success', 'a', 'web'), \
             authaudit.record_event($2::text::uuid, 'acme', 'login_success', 'a', 'web')",
            &[&log_id(3, 1), &log_id(3, 2)],
        )
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(gapless(&mut c, "acme"), 3);
    assert!(verify(&mut c, "acme").0);
}
