//! Account and source keys, attacked: the spellings of one account and the
//! addresses of one source must not each get their own count. Every variant
//! here was allowed past a lock before the keys existed (each counted
//! separately); the recorded `user_id` and `ip` stay as given.

use crate::support::{record, sqlstate, verify, Event, StoredExt};
use authaudit_tests::Cluster;
use postgres::error::SqlState;
use postgres::Client;

/// Spellings of `victim-lk` an attacker (or a sloppy client) may send.
const SPELLINGS: [&str; 9] = [
    "Victim-LK",
    " victim-lk",
    "victim-lk ",
    "\u{a0}victim-lk",
    "ｖｉｃｔｉｍ－ｌｋ",
    "victim\u{2010}lk",
    "vic\u{200b}tim-lk",
    "VICTIM-LK\u{feff}",
    "victim\u{2212}lk",
];

fn fail(c: &mut Client, tenant: &str, user: &str, ip: &str) -> String {
    let stored = record(c, &Event::failed(tenant, user).ip(ip));
    stored.lockout()["account_key"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn check(c: &mut Client, tenant: &str, user: &str, ip: Option<&str>) -> (bool, Option<String>) {
    let r = c
        .query_one(
            "SELECT allowed, reason FROM authaudit.check_login($1, $2, $3::text::inet)",
            &[&tenant, &user, &ip],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

fn state_rows(c: &mut Client, tenant: &str) -> Vec<String> {
    c.query(
        "SELECT user_id FROM authaudit.lockout_state WHERE tenant_id = $1 ORDER BY 1",
        &[&tenant],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[test]
fn spellings_of_one_account_share_its_count_and_its_lock() {
    let db = Cluster::shared().fresh_db_with_lockout("keys_spellings");
    let mut c = db.connect();
    // Five failures, each spelled differently, four of them one by one and
    // the fifth in a batch: the account locks at the fifth, as one account.
    for (i, user) in SPELLINGS[..4].iter().enumerate() {
        let key = fail(&mut c, "acme", user, &format!("203.0.113.{}", i + 1));
        assert_eq!(key, "victim-lk", "{user:?}");
        assert_eq!(check(&mut c, "acme", "victim-lk", None), (true, None));
    }
    c.execute(
        "SELECT count(*) FROM authaudit.record_events(jsonb_build_array(jsonb_build_object( \
           'log_id', gen_random_uuid(), 'tenant_id', 'acme', 'event_type', 'login_failed', \
           'user_id', $1::text, 'channel', 'web', 'ip', '203.0.113.9')))",
        &[&SPELLINGS[4]],
    )
    .unwrap();
    assert_eq!(state_rows(&mut c, "acme"), vec!["victim-lk".to_owned()]);
    let locks: i64 = c
        .query_one(
            "SELECT count(*) FROM authaudit.auth_log WHERE event_type = 'account_locked'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(locks, 1);
    let lock_key: Option<String> = c
        .query_one(
            "SELECT metadata ->> 'account_key' FROM authaudit.auth_log WHERE event_type = 'account_locked'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(lock_key.as_deref(), Some("victim-lk"));
    // The investigation lists each spelling as recorded, every one locked.
    let listed: Vec<(String, bool)> = c
        .query(
            "SELECT user_id, locked_now FROM authaudit.targeted_accounts('acme', now() - interval '1 day', \
                                                                         now() + interval '1 hour')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(listed.len(), 5, "{listed:?}");
    assert!(listed.iter().all(|(_, locked)| *locked), "{listed:?}");
    // Every spelling is locked out, and a further failure under any of them
    // counts against the same row.
    for user in SPELLINGS.iter().chain(&["victim-lk"]) {
        assert_eq!(
            check(&mut c, "acme", user, None),
            (false, Some("account_locked".into())),
            "{user:?}"
        );
    }
    fail(&mut c, "acme", SPELLINGS[8], "203.0.113.10");
    assert_eq!(state_rows(&mut c, "acme"), vec!["victim-lk".to_owned()]);
    // The evidence keeps each spelling exactly as given.
    let recorded: Vec<String> = c
        .query(
            "SELECT user_id FROM authaudit.auth_log WHERE event_type = 'login_failed' ORDER BY seq",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut given: Vec<String> = SPELLINGS[..5].iter().map(|s| s.to_string()).collect();
    given.push(SPELLINGS[8].to_owned());
    assert_eq!(recorded, given);
    // Other accounts stay other accounts.
    assert_eq!(check(&mut c, "acme", "victim-lk2", None), (true, None));
    assert_eq!(check(&mut c, "acme", "victimlk", None), (true, None));
    assert!(verify(&mut c, "acme").0);
}

#[test]
fn a_tenant_that_keys_accounts_exactly_counts_each_spelling_apart() {
    let db = Cluster::shared().fresh_db_with_lockout("keys_exact");
    let mut c = db.connect();
    c.batch_execute(
        "INSERT INTO authaudit.lockout_policy (tenant_id, account_key_folding) VALUES ('exact', 'exact')",
    )
    .unwrap();
    for user in &SPELLINGS[..5] {
        assert_eq!(fail(&mut c, "exact", user, "203.0.113.1"), "");
    }
    assert_eq!(state_rows(&mut c, "exact").len(), 5);
    assert_eq!(check(&mut c, "exact", SPELLINGS[0], None), (true, None));
    // A folding other than the two is refused, and changes nothing.
    let err = c
        .batch_execute(
            "UPDATE authaudit.lockout_policy SET account_key_folding = 'lower' WHERE tenant_id = 'exact'",
        )
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some(SqlState::CHECK_VIOLATION), "{err}");
    let err = c
        .batch_execute(
            "UPDATE authaudit.lockout_policy SET ipv6_prefix = 16 WHERE tenant_id = 'exact'",
        )
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some(SqlState::CHECK_VIOLATION), "{err}");
    let key: String = c
        .query_one("SELECT authaudit.account_key('exact', ' Victim-LK')", &[])
        .unwrap()
        .get(0);
    assert_eq!(key, " Victim-LK");
}

#[test]
fn a_mapped_ipv4_address_and_the_addresses_of_one_ipv6_network_are_one_source() {
    let db = Cluster::shared().fresh_db_with_lockout("keys_sources");
    let mut c = db.connect();
    c.batch_execute(
        "INSERT INTO authaudit.lockout_policy (tenant_id, ip_max_failures) VALUES ('acme', 3)",
    )
    .unwrap();
    // Credential stuffing from one IPv4 address, half of it written as its
    // IPv4-mapped IPv6 form.
    for (user, ip) in [
        ("u1", "198.51.100.250"),
        ("u2", "::ffff:198.51.100.250"),
        ("u3", "::ffff:198.51.100.250"),
    ] {
        fail(&mut c, "acme", user, ip);
    }
    for ip in ["198.51.100.250", "::ffff:198.51.100.250"] {
        assert_eq!(
            check(&mut c, "acme", "u9", Some(ip)),
            (false, Some("ip_blocked".into())),
            "{ip}"
        );
    }
    // Rotating through one /64 is one source; the next /64 is another.
    for (user, ip) in [
        ("v1", "2001:db8:1:2::1"),
        ("v2", "2001:db8:1:2:aaaa::2"),
        ("v3", "2001:db8:1:2:ffff:ffff:ffff:3"),
    ] {
        fail(&mut c, "acme", user, ip);
    }
    assert_eq!(
        check(&mut c, "acme", "v9", Some("2001:db8:1:2:1234::9")),
        (false, Some("ip_blocked".into()))
    );
    assert_eq!(
        check(&mut c, "acme", "v9", Some("2001:db8:1:3::1")),
        (true, None)
    );
    let sources: Vec<String> = c
        .query(
            "SELECT ip::text FROM authaudit.lockout_ip_state WHERE tenant_id = 'acme' ORDER BY ip",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(sources, vec!["198.51.100.250/32", "2001:db8:1:2::/64"]);
    let facts: Vec<Option<String>> = c
        .query(
            "SELECT metadata #>> '{_authaudit,lockout,source_key}' FROM authaudit.auth_log \
              WHERE event_type = 'login_failed' ORDER BY seq",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(facts[0], None, "an IPv4 address is its own key");
    assert_eq!(facts[1].as_deref(), Some("198.51.100.250/32"));
    assert_eq!(facts[3].as_deref(), Some("2001:db8:1:2::/64"));
    let key: String = c
        .query_one(
            "SELECT authaudit.source_key('acme', '2001:db8:1:2:aaaa::2')::text",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(key, "2001:db8:1:2::/64");
    assert!(verify(&mut c, "acme").0);
}
