//! Investigation functions reconstruct a brute-force campaign: targeted
//! accounts, attack sources, the lockout timeline, successes after failures
//! and the period's summary.

use crate::support::log_id;
use authaudit_tests::recording::{self, Event};
use authaudit_tests::Cluster;
use postgres::Client;

fn record(c: &mut Client, n: u32, ty: &str, user: &str, ip: &str, minute: i32) {
    let e = Event::new("agency", ty, user)
        .log_id(&log_id(3, n))
        .ip(ip)
        .after_start_of("hour", "3 hours", f64::from(minute) * 60.0);
    recording::record(c, &e);
}

const PERIOD: &str = "'agency', now() - interval '1 day', now() + interval '1 day'";

#[test]
fn a_campaign_is_reconstructed() {
    let db = Cluster::shared().fresh_db_with_lockout("investigation");
    let mut c = db.connect_dated();
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    for i in 0..6 {
        record(&mut c, next(), "login_failed", "alice", "198.51.100.1", i);
    }
    for i in 0..8 {
        record(
            &mut c,
            next(),
            "login_failed",
            &format!("user{i}"),
            "203.0.113.66",
            10,
        );
    }
    for i in 0..3 {
        record(&mut c, next(), "login_failed", "bob", "192.0.2.7", 20 + i);
    }
    record(&mut c, next(), "login_success", "bob", "192.0.2.7", 25);
    record(&mut c, next(), "lockout_reset", "alice", "10.0.0.1", 40);
    record(&mut c, next(), "login_success", "carol", "10.0.0.2", 41);

    let targeted: Vec<(String, i64, i64, i64)> = c
        .query(&format!("SELECT user_id, failures, distinct_ips, locks FROM authaudit.targeted_accounts({PERIOD})"), &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(targeted[0], ("alice".to_string(), 6, 1, 1));
    assert_eq!(targeted[1], ("bob".to_string(), 3, 1, 0));
    assert_eq!(targeted.len(), 10);

    let sources: Vec<(String, i64, i64, i64)> = c
        .query(
            &format!("SELECT host(ip), failures, distinct_accounts, successes FROM authaudit.attack_sources({PERIOD})"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        sources,
        [
            ("203.0.113.66".to_string(), 8, 8, 0),
            ("198.51.100.1".to_string(), 6, 1, 0),
            ("192.0.2.7".to_string(), 3, 1, 1),
        ]
    );

    let timeline: Vec<(String, String, Option<String>)> = c
        .query(
            &format!("SELECT user_id, event_type, rule FROM authaudit.lockout_timeline({PERIOD})"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        timeline,
        [
            (
                "alice".to_string(),
                "account_locked".to_string(),
                Some("max_failures".to_string())
            ),
            ("alice".to_string(), "lockout_reset".to_string(), None),
        ]
    );

    let after: Vec<(String, i32, bool, Vec<String>)> = c
        .query(
            &format!(
                "SELECT user_id, preceding_failures, while_locked, array(SELECT host(x) FROM unnest(failing_ips) x)
                   FROM authaudit.successes_after_failures({PERIOD})"
            ),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        after,
        [("bob".to_string(), 3, false, vec!["192.0.2.7".to_string()])]
    );

    let summary: Vec<(String, i64)> = c
        .query(
            &format!("SELECT event_type, events FROM authaudit.compliance_summary({PERIOD})"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        summary.contains(&("login_failed".to_string(), 17)),
        "{summary:?}"
    );
    assert!(
        summary.contains(&("account_locked".to_string(), 1)),
        "{summary:?}"
    );
    assert!(
        summary.contains(&("login_success".to_string(), 2)),
        "{summary:?}"
    );
}
