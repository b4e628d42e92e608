//! The lockout engine in the recording transaction: thresholds, exact lock
//! times, escalation, failures while locked, successes after failures,
//! resets, retries, per-IP blocks and concurrent failures.

use crate::support::{log_id, record, sqlstate, try_record, verify, Event};
use authaudit_tests::{Cluster, TestDb};
use postgres::error::SqlState;
use postgres::Client;
use std::sync::{Arc, Barrier};
use std::thread;

fn db(hint: &str) -> TestDb {
    Cluster::shared().fresh_db_with_lockout(hint)
}

/// Records `event_type` for `user` at `T0 + offset_s` seconds (T0 is two
/// days ago, so that every event lies in the past) and returns the row's seq
/// and its `_authaudit.lockout` facts as text.
fn event(c: &mut Client, id: &str, event_type: &str, user: &str, offset_s: i64) -> (i64, String) {
    let e = Event::new("acme", event_type, user)
        .log_id(id)
        .ip("203.0.113.5")
        .after_start_of("day", "2 days", offset_s as f64);
    let seq = record(c, &e).seq;
    // The facts as the server prints them (jsonb text).
    let facts = c
        .query_one(
            "SELECT coalesce(metadata -> '_authaudit' ->> 'lockout', '') FROM authaudit.auth_log \
              WHERE tenant_id = 'acme' AND seq = $1",
            &[&seq],
        )
        .unwrap()
        .get(0);
    (seq, facts)
}

fn locks(c: &mut Client, user: &str) -> Vec<(String, String)> {
    c.query(
        "SELECT metadata ->> 'locked_until', metadata ->> 'triggered_by' FROM authaudit.auth_log
          WHERE event_type = 'account_locked' AND user_id = $1 ORDER BY seq",
        &[&user],
    )
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.get::<_, Option<String>>(0).unwrap_or_default(),
            r.get::<_, Option<String>>(1).unwrap_or_default(),
        )
    })
    .collect()
}

fn t(c: &mut Client, offset_s: i64) -> String {
    c.query_one(
        "SELECT to_jsonb(date_trunc('day', now()) - interval '2 days' + $1 * interval '1 second') #>> '{}'",
        &[&(offset_s as f64)],
    )
    .unwrap()
    .get(0)
}

#[test]
fn a_brute_force_run_locks_at_the_threshold_with_exact_times_and_escalates() {
    let db = db("lock_sequence");
    let mut c = db.connect_dated();
    for n in 0..4 {
        let (_, facts) = event(
            &mut c,
            &log_id(1, n),
            "login_failed",
            "alice",
            i64::from(n) * 10,
        );
        assert!(
            facts.contains(&format!("\"failures_in_window\": {}", n + 1)),
            "{facts}"
        );
    }
    // The fifth failure (at +40 s) locks for 15 minutes; the lock is the next link.
    let (seq, facts) = event(&mut c, &log_id(1, 4), "login_failed", "alice", 40);
    assert_eq!(seq, 5);
    assert!(facts.contains("\"locked_account\": true"), "{facts}");
    let lock_row: (i64, String, String) = {
        let r = c
            .query_one(
                "SELECT seq, log_id::text, channel FROM authaudit.auth_log WHERE event_type = 'account_locked'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(lock_row.0, 6);
    assert_eq!(lock_row.2, "system");
    let derived: String = c
        .query_one(
            "SELECT authaudit._derived_log_id($1::text::uuid, 'account_locked')::text",
            &[&log_id(1, 4)],
        )
        .unwrap()
        .get(0);
    assert_eq!(lock_row.1, derived);
    let until = t(&mut c, 40 + 15 * 60);
    assert_eq!(locks(&mut c, "alice"), [(until.clone(), log_id(1, 4))]);
    // Failures while locked are flagged and do not extend the lock.
    let (_, facts) = event(&mut c, &log_id(1, 5), "login_failed", "alice", 100);
    assert!(facts.contains("\"while_locked\": true"), "{facts}");
    assert_eq!(locks(&mut c, "alice").len(), 1);
    // After the lock runs out the next run locks for 30 minutes.
    let start = 40 + 15 * 60;
    for n in 0..5 {
        event(
            &mut c,
            &log_id(2, n),
            "login_failed",
            "alice",
            start + i64::from(n),
        );
    }
    let second = t(&mut c, start + 4 + 30 * 60);
    assert_eq!(locks(&mut c, "alice")[1].0, second);
    let state: (bool, i32, i64, Option<String>) = {
        let r = c
            .query_one(
                "SELECT locked, lock_count, last_seq, host(first_failure_ip)
                   FROM authaudit.lockout_state WHERE user_id = 'alice'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3))
    };
    // The second run's fifth failure is seq 12 (6: first lock, 7: failure
    // while locked, 8-12: second run); the lock cleared the failure window.
    assert_eq!(state, (true, 2, 12, None));
    assert!(verify(&mut c, "acme").0);
}

#[test]
fn a_success_records_the_failures_before_it_and_whether_the_account_was_locked() {
    let db = db("lock_success");
    let mut c = db.connect_dated();
    for n in 0..3 {
        event(&mut c, &log_id(1, n), "login_failed", "bob", i64::from(n));
    }
    let (_, facts) = event(&mut c, &log_id(1, 9), "login_success", "bob", 5);
    assert!(
        facts.contains("\"preceding_failures\": 3") && facts.contains("\"was_locked\": false"),
        "{facts}"
    );
    for n in 0..5 {
        event(
            &mut c,
            &log_id(2, n),
            "login_failed",
            "bob",
            10 + i64::from(n),
        );
    }
    let (_, facts) = event(&mut c, &log_id(2, 9), "login_success", "bob", 20);
    assert!(
        facts.contains("\"was_locked\": true"),
        "a success while locked is flagged: {facts}"
    );
}

#[test]
fn a_retried_failure_counts_once() {
    let db = db("lock_retry");
    let mut c = db.connect_dated();
    for _ in 0..6 {
        event(&mut c, &log_id(1, 1), "login_failed", "carol", 0);
    }
    let n: i32 = c
        .query_one(
            "SELECT failure_count FROM authaudit.lockout_state WHERE user_id = 'carol'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    assert!(locks(&mut c, "carol").is_empty());
}

#[test]
fn check_login_reports_a_lock_and_a_reset_clears_it_at_once() {
    let db = db("lock_check");
    let mut c = db.connect_dated();
    let record = |c: &mut Client, id: &str, ty: &str| {
        record(
            c,
            &Event::new("acme", ty, "dave").log_id(id).ip("198.51.100.1"),
        );
    };
    let check = |c: &mut Client| -> (bool, Option<String>, bool) {
        let r = c
            .query_one(
                "SELECT allowed, reason, retry_after > now() + interval '14 minutes'
                   FROM authaudit.check_login('acme', 'dave', '198.51.100.1')",
                &[],
            )
            .unwrap();
        (
            r.get(0),
            r.get(1),
            r.get::<_, Option<bool>>(2).unwrap_or(false),
        )
    };
    assert_eq!(check(&mut c), (true, None, false));
    for n in 0..5 {
        record(&mut c, &log_id(1, n), "login_failed");
    }
    assert_eq!(check(&mut c), (false, Some("account_locked".into()), true));
    record(&mut c, &log_id(1, 9), "lockout_reset");
    assert_eq!(check(&mut c), (true, None, false));
}

#[test]
fn one_ip_failing_across_many_accounts_is_blocked() {
    let db = db("lock_ip");
    let mut c = db.connect_dated();
    c.batch_execute(
        "INSERT INTO authaudit.lockout_policy (tenant_id, ip_max_failures) VALUES ('acme', 10)",
    )
    .unwrap();
    for n in 0..10u32 {
        let e = Event::failed("acme", &format!("victim{n}"))
            .log_id(&log_id(1, n))
            .ip("192.0.2.66");
        record(&mut c, &e);
    }
    let r = c
        .query_one(
            "SELECT allowed, reason FROM authaudit.check_login('acme', 'fresh-user', '192.0.2.66')",
            &[],
        )
        .unwrap();
    assert_eq!(
        (r.get::<_, bool>(0), r.get::<_, Option<String>>(1)),
        (false, Some("ip_blocked".into()))
    );
    let r = c
        .query_one(
            "SELECT allowed FROM authaudit.check_login('acme', 'fresh-user', '192.0.2.67')",
            &[],
        )
        .unwrap();
    assert!(r.get::<_, bool>(0));
}

#[test]
fn concurrent_failures_around_the_threshold_lock_exactly_once() {
    let db = db("lock_concurrent");
    let start = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8u32)
        .map(|n| {
            let (url, start) = (db.url(), start.clone());
            thread::spawn(move || {
                let mut c = Client::connect(&url, postgres::NoTls).unwrap();
                start.wait();
                let e = Event::failed("acme", "erin")
                    .log_id(&log_id(5, n))
                    .channel("mobile");
                record(&mut c, &e);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut c = db.connect_dated();
    assert_eq!(locks(&mut c, "erin").len(), 1);
    let r = c
        .query_one(
            "SELECT locked, lock_count FROM authaudit.lockout_state WHERE user_id = 'erin'",
            &[],
        )
        .unwrap();
    assert_eq!((r.get::<_, bool>(0), r.get::<_, i32>(1)), (true, 1));
    let (ok, rows, _, _) = verify(&mut c, "acme");
    assert!(ok);
    assert_eq!(rows, 9);
}

#[test]
fn refused_input_and_policies_change_no_lockout_state() {
    let db = db("lock_refused");
    let mut c = db.connect_dated();
    let err = try_record(&mut c, &Event::failed("acme", "bad\nuser")).unwrap_err();
    assert_eq!(sqlstate(&err), Some(SqlState::INVALID_PARAMETER_VALUE));
    let n: i64 = c
        .query_one("SELECT count(*) FROM authaudit.lockout_state", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    for bad in [
        "INSERT INTO authaudit.lockout_policy (tenant_id, max_failures) VALUES ('acme', 0)",
        "INSERT INTO authaudit.lockout_policy (tenant_id, max_failures, lock_duration) VALUES ('acme', 100, '1 minute')",
        "INSERT INTO authaudit.lockout_policy (tenant_id, lock_increment) VALUES ('acme', 'sometimes')",
    ] {
        let err = c.batch_execute(bad).unwrap_err();
        assert_eq!(sqlstate(&err), Some(SqlState::INVALID_PARAMETER_VALUE), "{bad}: {err}");
    }
}

#[test]
fn one_ip_failing_on_one_account_is_blocked_for_that_account_only() {
    let db = db("lock_pair");
    let mut c = db.connect_dated();
    c.batch_execute(
        "INSERT INTO authaudit.lockout_policy (tenant_id, max_failures, lock_duration, ip_account_max_failures)
         VALUES ('acme', 50, '1 hour', 3)",
    )
    .unwrap();
    for n in 0..3u32 {
        let e = Event::failed("acme", "frank")
            .log_id(&log_id(1, n))
            .ip("192.0.2.77");
        record(&mut c, &e);
    }
    let check = |c: &mut Client, user: &str, ip: &str| -> (bool, Option<String>) {
        let r = c
            .query_one(
                "SELECT allowed, reason FROM authaudit.check_login('acme', $1, $2::text::inet)",
                &[&user, &ip],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(
        check(&mut c, "frank", "192.0.2.77"),
        (false, Some("ip_account_blocked".into()))
    );
    assert_eq!(check(&mut c, "frank", "192.0.2.78"), (true, None));
    assert_eq!(check(&mut c, "gina", "192.0.2.77"), (true, None));
}

#[test]
fn mixed_mode_locks_permanently_and_quick_succession_locks_at_once() {
    let db = db("lock_modes");
    let mut c = db.connect_dated();
    c.batch_execute(
        "INSERT INTO authaudit.lockout_policy (tenant_id, max_failures, permanent_after_locks, quick_failure_interval)
         VALUES ('acme', 3, 1, NULL)",
    )
    .unwrap();
    for n in 0..3u32 {
        event(
            &mut c,
            &log_id(1, n),
            "login_failed",
            "henry",
            i64::from(n) * 60,
        );
    }
    let permanent: Option<bool> = c
        .query_one(
            "SELECT (metadata ->> 'permanent')::boolean FROM authaudit.auth_log WHERE event_type = 'account_locked'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(permanent, Some(true));
    let until: Option<String> = c
        .query_one(
            "SELECT locked_until::text FROM authaudit.lockout_state WHERE user_id = 'henry'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(until, None, "a permanent lock has no end");
    c.batch_execute(
        "UPDATE authaudit.lockout_policy SET permanent_after_locks = NULL, quick_failure_interval = '2 seconds'",
    )
    .unwrap();
    event(&mut c, &log_id(2, 0), "login_failed", "iris", 0);
    let (_, facts) = event(&mut c, &log_id(2, 1), "login_failed", "iris", 1);
    assert!(facts.contains("\"locked_account\": true"), "{facts}");
    let reason: String = c
        .query_one(
            "SELECT metadata ->> 'reason' FROM authaudit.auth_log WHERE event_type = 'account_locked' AND user_id = 'iris'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(reason, "quick_succession");
}

#[test]
fn the_default_policy_comes_from_the_configuration_parameters() {
    let db = db("lock_gucs");
    let mut c = db.connect_dated();
    c.batch_execute(
        "SET authaudit.lockout_max_failures = 3; SET authaudit.lockout_duration = '2min'",
    )
    .unwrap();
    for n in 0..3u32 {
        event(&mut c, &log_id(1, n), "login_failed", "jack", i64::from(n));
    }
    let until = t(&mut c, 2 + 120);
    assert_eq!(locks(&mut c, "jack"), [(until, log_id(1, 2))]);
    // A default that would allow more than 100 attempts an hour is refused.
    c.batch_execute(
        "SET authaudit.lockout_max_failures = 100; SET authaudit.lockout_duration = '1min'",
    )
    .unwrap();
    let err = try_record(&mut c, &Event::failed("acme", "kate")).unwrap_err();
    assert_eq!(
        sqlstate(&err),
        Some(SqlState::INVALID_PARAMETER_VALUE),
        "{err}"
    );
}
