//! The SIEM destination end to end: the real sidecar, PostgreSQL's logical
//! replication, and a real rsyslog receiving RELP, octet-counted TCP and
//! TLS. Every recorded row arrives as the CEF line `authaudit.to_cef`
//! writes for it, pycef parses every line, and nothing is lost through
//! SIGKILLs of the sidecar and a restart of rsyslog.

use crate::support::{record, record_batch, run_python, Event};
use authaudit_tests::mirror::{log_rows, writers, Mirror, Store};
use authaudit_tests::{Cluster, Prometheus, Rsyslog, TestDb};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The CEF line `authaudit.to_cef` writes for every row, by log id.
pub(crate) fn to_cef(db: &TestDb) -> HashMap<String, String> {
    db.connect()
        .query(
            "SELECT l.log_id::text, authaudit.to_cef(l) FROM authaudit.auth_log l",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// `externalId` of a CEF line.
pub(crate) fn external_id(line: &str) -> Option<&str> {
    let at = line.find("externalId=")? + "externalId=".len();
    line.get(at..at + 36)
}

/// The lines of recorded rows (not campaign alerts) the collector's `input`
/// file holds.
pub(crate) fn event_lines(r: &Rsyslog, input: &str) -> Vec<String> {
    r.lines(input)
        .into_iter()
        .filter(|l| !l.contains("cat=/Authentication/Campaign"))
        .collect()
}

/// Waits until the collector's `input` file holds a line for every row.
pub(crate) fn wait_all(r: &Rsyslog, input: &str, db: &TestDb, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let want = to_cef(db);
        let lines = event_lines(r, input);
        let got: HashSet<&str> = lines.iter().filter_map(|l| external_id(l)).collect();
        if want.keys().all(|id| got.contains(id.as_str())) {
            return lines;
        }
        let missing = want.keys().filter(|id| !got.contains(id.as_str())).count();
        assert!(
            Instant::now() < deadline,
            "{missing} of {} rows never reached the {input} input",
            want.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every line is byte for byte `to_cef` of its row, and pycef parses it
/// with the row's log id and tenant. Returns the number of duplicates.
pub(crate) fn check_lines(db: &TestDb, lines: &[String]) -> usize {
    let want = to_cef(db);
    let mut seen = HashSet::new();
    for l in lines {
        let id = external_id(l).unwrap_or_else(|| panic!("no externalId: {l}"));
        assert_eq!(want.get(id), Some(l), "the SIEM's line differs from to_cef");
        seen.insert(id.to_string());
    }
    let out = run_python("tests/cef_parse.py", &(lines.join("\n") + "\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed.len(), lines.len());
    for (p, l) in parsed.iter().zip(lines) {
        assert_eq!(p["externalId"].as_str(), external_id(l), "pycef: {p}");
        assert_eq!(p["DeviceVendor"], "pg_authaudit", "pycef: {p}");
        // pycef names a custom field by its label.
        assert!(
            p["tenant"]
                .as_str()
                .is_some_and(|t| t.starts_with("tenant-")),
            "{p}"
        );
    }
    lines.len() - seen.len()
}

pub(crate) fn siem_mirror<'a>(db: &'a TestDb, store: &'a Store, target: String) -> Mirror<'a> {
    let mut m = Mirror::new(db, store);
    m.env = vec![
        ("AUTHAUDIT_SIEM_TARGET".into(), target),
        ("AUTHAUDIT_SIEM_TIMEOUT_MS".into(), "2000".into()),
    ];
    m
}

/// RELP: the rows from before the slot and from the stream arrive once
/// each without a crash; through 10 SIGKILLs of the sidecar and a restart
/// of rsyslog, none is missing, and a repeat is always a whole line that
/// carries its log id.
#[test]
fn every_row_reaches_rsyslog_over_relp_through_sigkills_and_a_restart() {
    let db = Cluster::shared().fresh_db_with_lockout("siem_relp");
    let store = Store::new("siem_relp");
    let mut rs = Rsyslog::start("relp");
    let mut c = db.connect();
    for i in 0..40 {
        let e = Event::failed("tenant-0", &format!("before{}", i % 7))
            .ip("203.0.113.7")
            .user_agent("agent=\"x\" | y")
            .metadata(serde_json::json!({"reason": "bad password"}));
        record(&mut c, &e);
    }
    let mut m = siem_mirror(&db, &store, format!("relp://127.0.0.1:{}", rs.relp_port));
    m.start();
    let stop = Arc::new(AtomicBool::new(false));
    let (count, handles) = writers(&db, 2, stop.clone(), 31);
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::Relaxed);
    handles.into_iter().for_each(|h| h.join().unwrap());
    assert!(count.load(Ordering::Relaxed) > 10);
    let lines = wait_all(&rs, "relp", &db, Duration::from_secs(60));
    assert_eq!(check_lines(&db, &lines), 0, "no crash, no duplicate");
    // The SIEM took every row once, and every alert the traffic raised.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sent = m.metric("authaudit_sidecar_siem_events_total");
        let want = log_rows(&db) as f64 + m.metric("authaudit_sidecar_alerts_total");
        if sent == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{sent} lines sent, {want} rows and alerts"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Crashes, and the collector restarted in the middle of them.
    let stop = Arc::new(AtomicBool::new(false));
    let (count, handles) = writers(&db, 4, stop.clone(), 32);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for k in 0..10 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::thread::sleep(Duration::from_millis(150 + x % 500));
        m.kill();
        if k == 5 {
            rs.restart();
        }
        m.start();
    }
    stop.store(true, Ordering::Relaxed);
    handles.into_iter().for_each(|h| h.join().unwrap());
    assert!(count.load(Ordering::Relaxed) > 50);
    let lines = wait_all(&rs, "relp", &db, Duration::from_secs(90));
    let duplicates = check_lines(&db, &lines);
    eprintln!("{} lines, {duplicates} repeated after crashes", lines.len());
    m.wait_identical(Duration::from_secs(60));
}

/// The slot never moves past what the collector acknowledged: with rsyslog
/// down, the store takes the rows but the position stays; once rsyslog is
/// back, every row arrives and the position moves on.
#[test]
fn the_position_waits_for_the_collector_as_for_the_store() {
    let db = Cluster::shared().fresh_db_with_lockout("siem_wait");
    let store = Store::new("siem_wait");
    let mut rs = Rsyslog::start("wait");
    let mut m = siem_mirror(&db, &store, format!("relp://127.0.0.1:{}", rs.relp_port));
    m.start();
    // Streaming, with an empty log.
    m.wait_streaming();
    rs.stop();
    let mut c = db.connect();
    for i in 0..20 {
        record(&mut c, &Event::failed("tenant-1", &format!("u{i}")));
    }
    let end: String = c
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .unwrap()
        .get(0);
    // The store has taken the first batch (the next waits for the
    // collector: one batch is outstanding at a time)...
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.count("auth_log") < 1 {
        assert!(Instant::now() < deadline, "the store never got the rows");
        std::thread::sleep(Duration::from_millis(50));
    }
    // ...and failed deliveries to the collector are counted...
    let deadline = Instant::now() + Duration::from_secs(30);
    while m.metric("authaudit_sidecar_errors_total{source=\"siem\"}") < 2.0 {
        assert!(Instant::now() < deadline, "no SIEM error counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    // ...while the slot stays before the rows.
    assert!(
        !m.flushed_to(&end),
        "the slot moved past rows the collector never took"
    );
    rs.restart();
    let lines = wait_all(&rs, "relp", &db, Duration::from_secs(60));
    assert_eq!(check_lines(&db, &lines), 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !m.flushed_to(&end) {
        assert!(Instant::now() < deadline, "the slot never moved on");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Octet-counted TCP and TLS (checked against the collector's CA; a
/// collector whose certificate does not chain to the given CA is refused).
#[test]
fn tcp_and_tls_collectors_receive_every_row() {
    let db = Cluster::shared().fresh_db_with_lockout("siem_tcp");
    let store = Store::new("siem_tcp");
    let rs = Rsyslog::start("tcp");
    let mut c = db.connect();
    for i in 0..30 {
        let kind = if i % 3 == 2 {
            "login_success"
        } else {
            "login_failed"
        };
        let e = Event::new("tenant-2", kind, "carol")
            .channel("vpn")
            .ip("2001:db8::7");
        record(&mut c, &e);
    }
    let mut tcp = siem_mirror(&db, &store, format!("tcp://127.0.0.1:{}", rs.tcp_port));
    tcp.start();
    let lines = wait_all(&rs, "tcp", &db, Duration::from_secs(60));
    assert_eq!(check_lines(&db, &lines), 0);
    tcp.kill();
    drop(tcp);

    let store = Store::new("siem_tls");
    let mut tls = siem_mirror(&db, &store, format!("tls://127.0.0.1:{}", rs.tls_port));
    tls.env.push((
        "AUTHAUDIT_SIEM_TLS_ROOTCERT".into(),
        rs.ca().display().to_string(),
    ));
    tls.start();
    let lines = wait_all(&rs, "tls", &db, Duration::from_secs(60));
    assert_eq!(check_lines(&db, &lines), 0);
    tls.kill();
    drop(tls);

    // Another CA: nothing is sent, the failure is counted.
    let other = Rsyslog::start("tls_other");
    let store = Store::new("siem_tls_bad");
    let mut bad = siem_mirror(&db, &store, format!("tls://127.0.0.1:{}", rs.tls_port));
    bad.env.push((
        "AUTHAUDIT_SIEM_TLS_ROOTCERT".into(),
        other.ca().display().to_string(),
    ));
    bad.start();
    let deadline = Instant::now() + Duration::from_secs(30);
    while bad.metric("authaudit_sidecar_errors_total{source=\"siem\"}") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "an unverified collector was not refused"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(bad.metric("authaudit_sidecar_siem_events_total"), 0.0);
}

/// A reason that is not a string (a number with trailing zeros, an object,
/// an array, a 23-digit integer, `1e400`, a boolean) reaches the SIEM as
/// `to_cef` writes it (PostgreSQL's `->>` text), and `verify_cef` accepts
/// the line as it arrived.
#[test]
fn reasons_of_every_json_type_reach_the_siem_as_to_cef_writes_them() {
    let db = Cluster::shared().fresh_db_with_lockout("siem_reasons");
    let store = Store::new("siem_reasons");
    let rs = Rsyslog::start("reasons");
    let mut m = siem_mirror(&db, &store, format!("relp://127.0.0.1:{}", rs.relp_port));
    m.start();
    m.wait_streaming();
    let reasons = [
        "1.50",
        r#"{"b": [1, 2.50], "a": {"x=y": "z\\"}}"#,
        r#"[1, "two", null, -0.0]"#,
        "12345678901234567890123",
        "1e400",
        "true",
        "null",
        r#""line\nbreak=é""#,
        "-0",
    ];
    let mut c = db.connect();
    for r in reasons {
        // The reason as written: its numbers keep their digits.
        let e = Event::failed("tenant-r", "alice")
            .ip("198.51.100.7")
            .metadata_text(&format!(r#"{{"reason": {r}}}"#));
        record(&mut c, &e);
    }
    let lines = wait_all(&rs, "relp", &db, Duration::from_secs(60));
    assert_eq!(check_lines(&db, &lines), 0);
    for l in &lines {
        let ok: Option<bool> = c
            .query_one("SELECT authaudit.verify_cef($1)", &[l])
            .unwrap()
            .get(0);
        assert_eq!(
            ok,
            Some(true),
            "verify_cef calls an untouched line altered: {l}"
        );
    }
    for want in [
        " reason=1.50 ",
        r#" reason={"a": {"x\=y": "z\\\\"}, "b": [1, 2.50]} "#,
        r#" reason=[1, "two", null, 0.0] "#,
        " reason=12345678901234567890123 ",
        " reason=true ",
        " reason=line\\nbreak\\=é ",
        " reason=0 ",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(want)),
            "no line holds {want}: {lines:#?}"
        );
    }
    assert!(lines
        .iter()
        .any(|l| l.contains(&format!(" reason=1{} ", "0".repeat(400)))));
    // Every failure but the one whose reason is null (the lock after the
    // fifth names its own).
    let with_reason = lines
        .iter()
        .filter(|l| l.contains(" act=login_failed ") && l.contains(" reason="))
        .count();
    assert_eq!(with_reason, 8, "{lines:#?}");
}

fn failed(c: &mut postgres::Client, tenant: &str, user: &str, ip: &str) {
    record(c, &Event::failed(tenant, user).ip(ip));
}

fn succeeded(c: &mut postgres::Client, tenant: &str, user: &str, ip: &str) {
    record(c, &Event::success(tenant, user).ip(ip));
}

/// Alerts by (tenant, rule): (accounts, sources).
type Alerts = HashMap<(String, String), (Vec<String>, Vec<String>)>;

/// The `alerts` collection, and its number of documents.
fn stored_alerts(store: &Store) -> (Alerts, usize) {
    let docs = store.documents("alerts", bson::doc! {});
    let list = |d: &bson::Document, k: &str| -> Vec<String> {
        d.get_array(k)
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let alerts = docs
        .iter()
        .map(|d| {
            (
                (
                    d.get_str("tenant_id").unwrap().to_string(),
                    d.get_str("rule").unwrap().to_string(),
                ),
                (list(d, "accounts"), list(d, "sources")),
            )
        })
        .collect();
    (alerts, docs.len())
}

/// Campaigns raise exactly the alerts they imply, with their accounts and
/// sources, in the store and as CEF in the SIEM; legitimate traffic raises
/// none; a spray that straddles a SIGKILL of the sidecar is one alert.
#[test]
fn campaigns_raise_their_alerts_in_the_store_and_the_siem() {
    let db = Cluster::shared().fresh_db_with_lockout("siem_alerts");
    let store = Store::new("siem_alerts");
    let rs = Rsyslog::start("alerts");
    let mut m = siem_mirror(&db, &store, format!("relp://127.0.0.1:{}", rs.relp_port));
    m.start();
    let mut c = db.connect();
    // Legitimate: ten users, each one typo then in, from their own address.
    for i in 0..10 {
        let ip = format!("10.0.0.{}", i + 1);
        failed(&mut c, "t-legit", &format!("staff{i}"), &ip);
        succeeded(&mut c, "t-legit", &format!("staff{i}"), &ip);
    }
    // A spray: one source, twelve accounts.
    for i in 0..12 {
        failed(&mut c, "t-spray", &format!("acct{i:02}"), "198.51.100.50");
    }
    // A distributed brute force: one account, six sources.
    for i in 0..6 {
        failed(&mut c, "t-dist", "ceo", &format!("192.0.2.{}", i + 1));
    }
    // In after three failures.
    for _ in 0..3 {
        failed(&mut c, "t-saf", "dave", "203.0.113.9");
    }
    succeeded(&mut c, "t-saf", "dave", "203.0.113.9");

    let spray_accounts: Vec<String> = (0..10).map(|i| format!("acct{i:02}")).collect();
    let dist_sources: Vec<String> = (1..=5).map(|i| format!("192.0.2.{i}")).collect();
    let want = HashMap::from([
        (
            ("t-spray".to_string(), "password_spray".to_string()),
            (spray_accounts, vec!["198.51.100.50".to_string()]),
        ),
        (
            ("t-dist".to_string(), "distributed_brute_force".to_string()),
            (vec!["ceo".to_string()], dist_sources),
        ),
        (
            ("t-saf".to_string(), "success_after_failures".to_string()),
            (vec!["dave".to_string()], vec!["203.0.113.9".to_string()]),
        ),
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (got, n) = stored_alerts(&store);
        if got == want && n == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alerts {got:?} ({n}), expected {want:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The SIEM has each alert as CEF, parsed by pycef.
    let deadline = Instant::now() + Duration::from_secs(30);
    let alert_lines = loop {
        let lines: Vec<String> = rs
            .lines("relp")
            .into_iter()
            .filter(|l| l.contains("/Authentication/Campaign"))
            .collect();
        if lines.len() >= 3 {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "alerts never reached the SIEM: {lines:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = run_python("tests/cef_parse.py", &(alert_lines.join("\n") + "\n"));
    let parsed: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let classes: HashSet<&str> = parsed
        .iter()
        .map(|p| p["DeviceEventClassID"].as_str().unwrap())
        .collect();
    assert_eq!(classes, HashSet::from(["201", "203", "204"]), "{parsed:?}");
    assert!(parsed
        .iter()
        .any(|p| p["externalId"] == "t-spray/password_spray/10" && p["src"] == "198.51.100.50"));
    assert_eq!(m.metric("authaudit_sidecar_alerts_total"), 3.0);

    // A spray split by a SIGKILL: six accounts before, six after.
    for i in 0..6 {
        failed(&mut c, "t-spray2", &format!("x{i}"), "198.51.100.60");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !rs.lines("relp").iter().any(|l| l.contains("duser=x5 ")) {
        assert!(Instant::now() < deadline, "the first half never arrived");
        std::thread::sleep(Duration::from_millis(50));
    }
    m.kill();
    for i in 6..12 {
        failed(&mut c, "t-spray2", &format!("x{i}"), "198.51.100.60");
    }
    m.start();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (got, n) = stored_alerts(&store);
        if let Some((accounts, _)) =
            got.get(&("t-spray2".to_string(), "password_spray".to_string()))
        {
            assert_eq!(accounts.len(), 10);
            assert_eq!(n, 4, "{got:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the split spray raised nothing: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Two evasions of the distributed brute force rule fail: an account
/// attacked by 20 sources under five spellings is one account to the
/// detections, as to the lockout engine (unless the tenant's policy keys
/// accounts exactly), and 29,000 failures on made-up accounts between the
/// victim's third and fourth source do not push the victim out of the
/// detector's memory.
#[test]
fn spellings_and_a_flood_of_junk_accounts_do_not_hide_a_distributed_brute_force() {
    let db = Cluster::shared().fresh_db_with_lockout("siem_evasion");
    let store = Store::new("siem_evasion");
    let mut c = db.connect();
    c.execute(
        "INSERT INTO authaudit.lockout_policy (tenant_id, account_key_folding) VALUES ('t-exact', 'exact')",
        &[],
    )
    .unwrap();
    let mut m = Mirror::new(&db, &store);
    m.start();
    m.wait_streaming();
    let spellings = [
        "Alice",
        "alice ",
        " ALICE",
        "\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}",
        "ALICE",
    ];
    for tenant in ["t-spell", "t-exact"] {
        for i in 0..20 {
            let ip = format!("198.51.100.{}", i + 1);
            failed(&mut c, tenant, spellings[i % spellings.len()], &ip);
        }
    }
    // The victim's first three sources, then the flood, then two more.
    for i in 1..=3 {
        failed(&mut c, "t-flood", "victim", &format!("192.0.2.{i}"));
    }
    for batch in 0..29 {
        let events: Vec<Event> = (0..1000)
            .map(|k| {
                let n = batch * 1000 + k;
                Event::failed("t-flood", &format!("junk{n}"))
                    .log_id(&format!("00000000-0000-4000-9000-{n:012x}"))
                    .ip(&format!("203.0.113.{}", n % 50))
            })
            .collect();
        record_batch(&mut c, &events);
    }
    for i in 4..=5 {
        failed(&mut c, "t-flood", "victim", &format!("192.0.2.{i}"));
    }
    let dist = |store: &Store, tenant: &str| -> Vec<(Vec<String>, Vec<String>)> {
        store
            .documents("alerts", bson::doc! {"_id": 1})
            .iter()
            .filter(|d| {
                d.get_str("tenant_id").ok() == Some(tenant)
                    && d.get_str("rule").ok() == Some("distributed_brute_force")
            })
            .map(|d| {
                let list = |k: &str| -> Vec<String> {
                    d.get_array(k)
                        .unwrap()
                        .iter()
                        .map(|v| v.as_str().unwrap().to_string())
                        .collect()
                };
                (list("accounts"), list("sources"))
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (spell, flood) = (dist(&store, "t-spell"), dist(&store, "t-flood"));
        if !spell.is_empty() && !flood.is_empty() {
            let sources: Vec<String> = (1..=5).map(|i| format!("198.51.100.{i}")).collect();
            assert_eq!(spell, [(vec!["alice".to_string()], sources)]);
            let sources: Vec<String> = (1..=5).map(|i| format!("192.0.2.{i}")).collect();
            assert_eq!(flood, [(vec!["victim".to_string()], sources)]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spellings: {spell:?}, flood: {flood:?} (evicted windows: {})",
            m.metric("authaudit_sidecar_detection_evictions_total")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(m.metric("authaudit_sidecar_detection_evictions_total") > 10_000.0);
    // Keyed exactly, the five spellings are five accounts of four sources.
    m.wait_identical(Duration::from_secs(60));
    assert!(dist(&store, "t-exact").is_empty());
}

/// The demo's campaign, played with the sidecar running: the detections
/// raise exactly the alerts its ground truth lists for the attacked tenant,
/// with the right accounts and sources, and none for the other tenant.
#[test]
fn the_demo_campaign_raises_exactly_the_alerts_of_its_ground_truth() {
    use authaudit_demo::campaign::{self, TENANT};
    use authaudit_demo::run;
    let db = Cluster::shared().fresh_db_with_lockout("siem_demo");
    let store = Store::new("siem_demo");
    let rs = Rsyslog::start("demo");
    let mut m = siem_mirror(&db, &store, format!("relp://127.0.0.1:{}", rs.relp_port));
    // The detections watch the stream: rows committed before the slot
    // exists are copied, not detected on (their event time is hours old).
    m.start();
    m.wait_streaming();
    let roles = run::Roles::new(&format!("{}_", db.name()));
    run::set_up(&mut db.connect(), &roles).unwrap();
    let now: i64 = db
        .connect()
        .query_one("SELECT extract(epoch FROM now())::int8", &[])
        .unwrap()
        .get(0);
    let (steps, truth) = campaign::campaign();
    run::play(&db.url(), &roles, &steps, now - 3 * 3600, 9, true).unwrap();
    m.wait_identical(Duration::from_secs(90));
    // Every row is mirrored; the alerts travel with them.
    let deadline = Instant::now() + Duration::from_secs(30);
    let docs = loop {
        let docs = store.documents("alerts", bson::doc! {"last_at": 1, "_id": 1});
        if docs.len() >= truth.alerts.len() || Instant::now() > deadline {
            break docs;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let got: Vec<(String, String, Option<String>, Option<String>)> = docs
        .iter()
        .map(|d| {
            let one = |k: &str| {
                let v = d.get_array(k).unwrap();
                (v.len() == 1).then(|| v[0].as_str().unwrap().to_string())
            };
            (
                d.get_str("tenant_id").unwrap().to_string(),
                d.get_str("rule").unwrap().to_string(),
                one("accounts"),
                one("sources"),
            )
        })
        .collect();
    let want: Vec<(String, String, Option<String>, Option<String>)> = truth
        .alerts
        .iter()
        .map(|a| {
            (
                TENANT.to_string(),
                a.rule.to_string(),
                a.account.clone(),
                a.source.clone(),
            )
        })
        .collect();
    assert_eq!(got, want, "{docs:#?}");
    // Each is in the SIEM too.
    let deadline = Instant::now() + Duration::from_secs(30);
    while rs
        .lines("relp")
        .iter()
        .filter(|l| l.contains("cat=/Authentication/Campaign"))
        .count()
        < want.len()
    {
        assert!(
            Instant::now() < deadline,
            "the alerts never reached the SIEM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A scrape passes `promtool check metrics` (the Prometheus project's own
/// linter, Debian package `prometheus`), with the SIEM, the alerts and the
/// opt-in per-tenant series present; without the option there is no
/// per-tenant series.
#[test]
fn the_metrics_pass_promtool_and_per_tenant_series_are_opt_in() {
    let db = Cluster::shared().fresh_db_with_lockout("siem_promtool");
    let store = Store::new("siem_promtool");
    let rs = Rsyslog::start("promtool");
    let mut m = siem_mirror(&db, &store, format!("relp://127.0.0.1:{}", rs.relp_port));
    m.env
        .push(("AUTHAUDIT_TENANT_METRICS".into(), "true".into()));
    m.start();
    // The series count streamed rows: record once the stream is open.
    m.wait_streaming();
    let mut c = db.connect();
    for i in 0..12 {
        failed(&mut c, "t-a.b_c", &format!("a{i}"), "198.51.100.70");
    }
    succeeded(&mut c, "t-ok", "bob", "10.0.0.1");
    let deadline = Instant::now() + Duration::from_secs(30);
    while m.metric("authaudit_sidecar_alerts_total") < 1.0
        || m.metric("authaudit_sidecar_tenant_events_total") < 13.0
    {
        assert!(Instant::now() < deadline, "{}", m.metrics());
        std::thread::sleep(Duration::from_millis(50));
    }
    let scrape = m.metrics();
    let body = scrape
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let check = |text: &str| {
        use std::io::Write;
        let mut p = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool (Debian package prometheus, scripts/setup.sh)");
        p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = p.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    assert_eq!(check(&body), (Some(0), String::new()), "{body}");
    assert!(
        body.contains("authaudit_sidecar_tenant_failures_total{tenant=\"t-a.b_c\"} 12"),
        "{body}"
    );
    assert!(
        body.contains("authaudit_sidecar_tenant_events_total{tenant=\"t-ok\"} 1"),
        "{body}"
    );
    // Asked for OpenMetrics, the same series come as the library encodes
    // them: the counter families named without `_total`, units, `# EOF`.
    let om = m.get_accepting("/metrics", "application/openmetrics-text; version=1.0.0");
    assert!(
        om.contains("application/openmetrics-text; version=1.0.0"),
        "{om}"
    );
    let om = om.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(
        om.contains("# TYPE authaudit_sidecar_tenant_failures counter\n"),
        "{om}"
    );
    assert!(
        om.contains("# UNIT authaudit_sidecar_commit_to_ack_seconds seconds\n"),
        "{om}"
    );
    let samples = |t: &str| -> HashSet<String> {
        t.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| Some(l.rsplit_once(' ')?.0.to_string()))
            .collect()
    };
    assert_eq!(samples(om), samples(&body));
    // The linter can fail: a counter without its _total suffix.
    let (code, out) = check("# HELP bad_counter x\n# TYPE bad_counter counter\nbad_counter 1\n");
    assert_eq!(code, Some(3), "{out}");
    m.kill();
    drop(m);

    let store = Store::new("siem_promtool_off");
    let mut off = siem_mirror(&db, &store, format!("relp://127.0.0.1:{}", rs.relp_port));
    off.start();
    off.wait_streaming();
    assert!(!off.metrics().contains("tenant_events_total"));
}

/// A real Prometheus scrapes the sidecar (it asks for OpenMetrics) and
/// stores every family with its type: the counters, the gauges computed
/// at each scrape, the latency histograms whose quantiles PromQL computes,
/// and a per-tenant series.
#[test]
fn a_real_prometheus_scrapes_every_family_with_its_type() {
    let db = Cluster::shared().fresh_db_with_lockout("siem_prometheus");
    let store = Store::new("siem_prometheus");
    let mut m = Mirror::new(&db, &store);
    m.env
        .push(("AUTHAUDIT_TENANT_METRICS".into(), "true".into()));
    m.start();
    m.wait_streaming();
    let mut c = db.connect();
    let tenant = "agency-1.west_2";
    for i in 0..5 {
        failed(&mut c, tenant, &format!("u{i}"), "198.51.100.9");
    }
    let prom = Prometheus::start("scrape", m.metrics_port);
    prom.wait_for("five failures of the tenant", |p| {
        p.query("authaudit_sidecar_tenant_failures_total")
            .iter()
            .any(|r| r["metric"]["tenant"] == tenant && r["value"][1] == "5")
    });
    let targets = prom.api("/api/v1/targets");
    let target = &targets["activeTargets"][0];
    assert_eq!(target["health"], "up", "{targets}");
    assert_eq!(target["lastError"], "", "{targets}");
    let meta = prom.api("/api/v1/metadata");
    for (family, kind) in [
        ("authaudit_sidecar_rows_mirrored", "counter"),
        ("authaudit_sidecar_alerts", "counter"),
        ("authaudit_sidecar_tenant_failures", "counter"),
        ("authaudit_sidecar_streaming", "gauge"),
        ("authaudit_sidecar_replication_lag_bytes", "gauge"),
        ("authaudit_sidecar_acked_lsn", "gauge"),
        ("authaudit_sidecar_commit_to_ack_seconds", "histogram"),
        ("authaudit_sidecar_commit_to_receive_seconds", "histogram"),
    ] {
        assert_eq!(meta[family][0]["type"], kind, "{family}: {meta}");
    }
    let rows = prom.query("authaudit_sidecar_rows_mirrored_total%7Btable%3D%22auth_log%22%7D");
    assert_eq!(rows[0]["value"][1], "5", "{rows:?}");
    let p99 =
        prom.query("histogram_quantile(0.99%2C%20authaudit_sidecar_commit_to_ack_seconds_bucket)");
    let p99: f64 = p99[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(p99 > 0.0 && p99 <= 60.0, "{p99}");
}
