//! Event time, attacked and replayed (docs/lockout.md, "Event time"):
//! back-dated live events are refused, history goes through import_events,
//! and one campaign recorded in order, in reverse, in shuffled batches, as
//! history into a live tenant and live in time order gives the same
//! investigation answers and the same lockout tables.

use crate::support::{log_id, record, sqlstate, try_record, Event, Rng, StoredExt};
use authaudit_core::lockout_effect::iso_utc;
use authaudit_tests::{Cluster, TestDb};
use postgres::error::SqlState;
use postgres::Client;

/// One event of the campaign: seconds after its start, type, account, IP.
#[derive(Clone)]
struct Attempt {
    n: u32,
    at_s: i64,
    event_type: &'static str,
    user: String,
    ip: Option<String>,
}

/// An sshd-style campaign of a few hundred attempts: a brute force against
/// root (a lock, failures while locked, a per-(IP, account) block, a second
/// and longer lock, a help-desk reset), credential stuffing from one IP
/// (a per-IP block), a success after failures, a success while locked,
/// "message repeated" failures sharing one second, an IPv6 /64 rotation,
/// failures without an IP, and background noise.
fn campaign() -> Vec<Attempt> {
    let mut v = Vec::new();
    let mut push = |at_s: i64, event_type: &'static str, user: &str, ip: Option<&str>| {
        let n = v.len() as u32 + 1;
        v.push(Attempt {
            n,
            at_s,
            event_type,
            user: user.to_owned(),
            ip: ip.map(str::to_owned),
        });
    };
    for i in 0..12 {
        push(i * 20, "login_failed", "root", Some("203.0.113.10"));
    }
    for i in 0..5 {
        push(1000 + i * 10, "login_failed", "root", Some("203.0.113.11"));
    }
    for i in 0..120 {
        push(
            2000 + i * 5,
            "login_failed",
            &format!("user{i:03}"),
            Some("198.51.100.66"),
        );
    }
    for i in 0..4 {
        push(3000 + i * 15, "login_failed", "alice", Some("192.0.2.5"));
    }
    push(3100, "login_success", "alice", Some("192.0.2.5"));
    for i in 0..5 {
        push(4000 + i * 10, "login_failed", "oracle", Some("192.0.2.77"));
    }
    push(4100, "login_success", "oracle", Some("192.0.2.78"));
    for _ in 0..3 {
        push(4500, "login_failed", "admin", Some("192.0.2.99"));
    }
    push(4500, "login_success", "admin", Some("192.0.2.99"));
    push(5000, "lockout_reset", "root", None);
    for i in 0..20 {
        push(
            6000 + i * 7,
            "login_failed",
            "bob",
            Some(&format!("2001:db8:1:2::{:x}", i + 1)),
        );
    }
    for i in 0..3 {
        push(7000 + i, "login_failed", "carol", None);
    }
    let mut rng = Rng(0x5eed);
    for _ in 0..150 {
        let at = 8000 + rng.below(4 * 3600) as i64;
        let user = format!("staff{:02}", rng.below(40));
        let ip = format!("203.0.113.{}", 100 + rng.below(30));
        let ty = if rng.below(8) == 0 {
            "login_success"
        } else {
            "login_failed"
        };
        push(at, ty, &user, Some(&ip));
    }
    v.sort_by_key(|a| (a.at_s, a.n));
    v
}

/// The campaign's events of tenant `slot` as a JSON array for
/// record_events / import_events, starting at `base_us`.
fn batch(slot: u32, tenant: &str, base_us: i64, events: &[Attempt]) -> String {
    let items: Vec<serde_json::Value> = events
        .iter()
        .map(|a| {
            serde_json::json!({
                "log_id": log_id(slot, a.n),
                "tenant_id": tenant,
                "event_type": a.event_type,
                "user_id": a.user,
                "channel": "api",
                "ip": a.ip,
                "occurred_at": iso_utc(base_us + a.at_s * 1_000_000),
                "metadata": {"source": "sshd"},
            })
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

fn import(c: &mut Client, json: &str, rebuild: bool) -> i64 {
    c.query_one(
        "SELECT count(*) FROM authaudit.import_events($1::text::jsonb, rebuild => $2)",
        &[&json, &rebuild],
    )
    .unwrap()
    .get(0)
}

fn rebuild(c: &mut Client, tenant: &str) {
    c.execute("SELECT * FROM authaudit.rebuild_lockout($1)", &[&tenant])
        .unwrap();
}

/// Every investigation answer about the campaign's period, without the
/// chain positions (seq) that differ with arrival order by nature; log ids
/// lose their tenant slot.
fn answers(c: &mut Client, tenant: &str) -> Vec<String> {
    let period = "now() - interval '30 days', now() - interval '2 days'";
    let mut out = Vec::new();
    for (name, q) in [
        // What the event-time replay decides; what the live engine
        // enforced differs with the recording path by nature.
        ("timeline", format!("SELECT concat((to_jsonb(r) - 'seq' - 'triggered_by' - 'enforced' - 'replayed')::text, right(r.triggered_by::text, 8)) FROM authaudit.lockout_timeline($1, {period}) r WHERE r.replayed")),
        ("successes", format!("SELECT (to_jsonb(r) - 'seq')::text FROM authaudit.successes_after_failures($1, {period}) r")),
        ("targeted", format!("SELECT (to_jsonb(r) - 'enforced_locks')::text FROM authaudit.targeted_accounts($1, {period}) r")),
        ("sources", format!("SELECT to_jsonb(r)::text FROM authaudit.attack_sources($1, {period}) r")),
        ("replay", format!(
            "SELECT concat((to_jsonb(r) - 'decision' - 'seq' - 'log_id' - 'enforced_lock_seq')::text, right(r.log_id::text, 8)) \
               FROM authaudit.lockout_replay($1, {period}) r")),
    ] {
        for r in c.query(&q, &[&tenant]).unwrap() {
            out.push(format!("{name} {}", r.get::<_, String>(0)));
        }
    }
    out
}

/// The tenant's lockout tables, without the columns arrival order, the
/// clock or a rebuild decide (last_log_id, last_seq, updated_at).
fn tables(c: &mut Client, tenant: &str) -> Vec<String> {
    let mut out = Vec::new();
    for q in [
        "SELECT concat_ws(' ', user_id, failure_count, first_failure_at, last_failure_at, \
                host(first_failure_ip), host(last_failure_ip), locked, locked_at, locked_until, \
                lock_count, org_id, failures_since_success) \
           FROM authaudit.lockout_state WHERE tenant_id = $1 ORDER BY user_id",
        "SELECT concat_ws(' ', ip, failure_count, first_failure_at, blocked_until) \
           FROM authaudit.lockout_ip_state WHERE tenant_id = $1 ORDER BY ip",
        "SELECT concat_ws(' ', ip, user_id, failure_count, first_failure_at, blocked_until) \
           FROM authaudit.lockout_ip_account_state WHERE tenant_id = $1 ORDER BY ip, user_id",
    ] {
        for r in c.query(q, &[&tenant]).unwrap() {
            out.push(r.get::<_, String>(0));
        }
    }
    out
}

fn base_us(c: &mut Client) -> i64 {
    c.query_one(
        "SELECT (extract(epoch FROM date_trunc('day', now()) - interval '10 days') * 1000000)::bigint",
        &[],
    )
    .unwrap()
    .get(0)
}

#[test]
fn one_campaign_gives_the_same_answers_in_any_arrival_order() {
    let db = Cluster::shared().fresh_db_with_lockout("event_time_orders");
    let mut c = db.connect();
    let base = base_us(&mut c);
    let events = campaign();
    assert!(events.len() > 300, "a few hundred attempts");

    // In time order, in batches of 100, rebuilt by each import.
    for chunk in events.chunks(100) {
        import(&mut c, &batch(1, "in-order", base, chunk), true);
    }
    // Newest first (rotated files imported backwards), rebuilt once.
    let mut reversed = events.clone();
    reversed.reverse();
    for chunk in reversed.chunks(100) {
        import(&mut c, &batch(2, "reversed", base, chunk), false);
    }
    rebuild(&mut c, "reversed");
    // Shuffled batches of 37.
    let mut shuffled = events.clone();
    Rng(42).shuffle(&mut shuffled);
    for chunk in shuffled.chunks(37) {
        import(&mut c, &batch(3, "shuffled", base, chunk), false);
    }
    rebuild(&mut c, "shuffled");
    // History into a tenant with live events: live failures of root now,
    // then the campaign, shuffled.
    for n in 0..3 {
        let e = Event::failed("live", "root")
            .log_id(&log_id(4, 10_000 + n))
            .channel("api")
            .ip("203.0.113.200");
        record(&mut c, &e);
    }
    for chunk in shuffled.chunks(50) {
        import(&mut c, &batch(4, "live", base, chunk), true);
    }
    // Live, in time order, step by step (a superuser's session with a
    // year of past skew): the live engine's own decisions.
    let mut dated = db.connect_dated();
    for chunk in events.chunks(100) {
        dated
            .execute(
                "SELECT count(*) FROM authaudit.record_events($1::text::jsonb)",
                &[&batch(5, "live-order", base, chunk)],
            )
            .unwrap();
    }

    let expected = answers(&mut c, "in-order");
    for tenant in ["reversed", "shuffled", "live", "live-order"] {
        let got = answers(&mut c, tenant);
        let diff: Vec<_> = got
            .iter()
            .filter(|l| !expected.contains(l))
            .take(5)
            .collect();
        assert_eq!(got.len(), expected.len(), "{tenant}: {diff:?}");
        assert_eq!(got, expected, "{tenant}: {diff:?}");
    }
    let state = tables(&mut c, "in-order");
    for tenant in ["reversed", "shuffled"] {
        assert_eq!(tables(&mut c, tenant), state, "{tenant}");
    }
    // The live engine, fed in time order, holds what the replay derives.
    let live = tables(&mut c, "live-order");
    assert_eq!(live, state);
    rebuild(&mut c, "live-order");
    assert_eq!(tables(&mut c, "live-order"), live);

    // And the answers are the campaign's: root locked twice (the second
    // lock twice as long), blocked per (IP, account); the stuffing IP
    // blocked; alice's success after 4 failures; oracle's success while
    // locked reports the 5 failures that locked it; bob's /64 is one source.
    let locks: Vec<(String, i32, f64)> = c
        .query(
            "SELECT user_id, failures, extract(epoch FROM locked_until - occurred_at)::float8 \
               FROM authaudit.lockout_timeline('in-order', now() - interval '30 days', now()) \
              WHERE event_type = 'account_locked' AND user_id IN ('root', 'oracle') ORDER BY occurred_at",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        locks,
        vec![
            ("root".into(), 5, 900.0),
            ("root".into(), 5, 1800.0),
            ("oracle".into(), 5, 900.0)
        ]
    );
    let blocks: Vec<(String, bool, bool)> = c
        .query(
            "SELECT user_id, ip_blocked_until IS NOT NULL, ip_account_blocked_until IS NOT NULL \
               FROM authaudit.lockout_replay('in-order') \
              WHERE ip_blocked_until IS NOT NULL OR ip_account_blocked_until IS NOT NULL \
                AND user_id = 'root' ORDER BY decision",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(blocks.contains(&("root".into(), false, true)), "{blocks:?}");
    assert!(
        blocks.contains(&("user099".into(), true, false)),
        "{blocks:?}"
    );
    let successes: Vec<(String, i32, bool, Vec<String>)> = c
        .query(
            "SELECT user_id, preceding_failures, while_locked, \
                    array(SELECT host(x) FROM unnest(failing_ips) x) \
               FROM authaudit.successes_after_failures('in-order', now() - interval '30 days', now()) \
              WHERE user_id IN ('alice', 'oracle', 'admin') ORDER BY occurred_at",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        successes,
        vec![
            ("alice".into(), 4, false, vec!["192.0.2.5".into()]),
            ("oracle".into(), 5, true, vec!["192.0.2.77".into()]),
            ("admin".into(), 3, false, vec!["192.0.2.99".into()]),
        ]
    );
    let bob: Vec<(String, i32)> = c
        .query(
            "SELECT ip::text, failure_count FROM authaudit.lockout_ip_state \
              WHERE tenant_id = 'in-order' AND family(ip) = 6",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(bob, vec![("2001:db8:1:2::/64".into(), 20)]);
    // Imported rows say so, and no lock was appended to the chain for them.
    let (imported, locked_rows): (i64, i64) = {
        let r = c
            .query_one(
                "SELECT count(*) FILTER (WHERE metadata #>> '{_authaudit,imported}' = 'true'), \
                        count(*) FILTER (WHERE event_type = 'account_locked') \
                   FROM authaudit.auth_log WHERE tenant_id = 'in-order'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((imported, locked_rows), (events.len() as i64, 0));
}

/// Login roles for the refusals: a tenant writer, a writer of one
/// organisation, another tenant's writer and a reader.
fn roles(db: &TestDb) -> String {
    let p = db.name().to_string();
    db.connect()
        .batch_execute(&format!(
            "CREATE ROLE {p}_w LOGIN IN ROLE authaudit_writer;
             CREATE ROLE {p}_branch LOGIN IN ROLE authaudit_writer;
             CREATE ROLE {p}_other LOGIN IN ROLE authaudit_writer;
             CREATE ROLE {p}_r LOGIN IN ROLE authaudit_reader;
             INSERT INTO authaudit.tenant_scope (role_name, tenant_id, org_id, can_read, can_write) VALUES
               ('{p}_w', 'agency', NULL, true, true),
               ('{p}_branch', 'agency', 'branch', false, true),
               ('{p}_other', 'elsewhere', NULL, false, true),
               ('{p}_r', 'agency', NULL, true, false);"
        ))
        .unwrap();
    p
}

fn expect(r: Result<impl Sized, postgres::Error>, state: SqlState, what: &str) -> String {
    match r {
        Ok(_) => panic!("{what}: succeeded, expected {state:?}"),
        Err(e) => {
            assert_eq!(sqlstate(&e), Some(state), "{what}: {e}");
            e.as_db_error()
                .and_then(|d| d.hint())
                .unwrap_or_default()
                .to_owned()
        }
    }
}

fn counts(c: &mut Client) -> (i64, i64) {
    let r = c
        .query_one(
            "SELECT (SELECT count(*) FROM authaudit.auth_log), \
                    (SELECT count(*) FROM authaudit.lockout_state)",
            &[],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

/// The bypass: 20 failures back-dated two days, 20 minutes apart, each in a
/// window of its own, left the count at 1 and check_login allowing.
#[test]
fn back_dated_live_events_are_refused_and_point_to_the_import_path() {
    let db = Cluster::shared().fresh_db_with_lockout("event_time_backdating");
    let p = roles(&db);
    let mut w = db.connect_as(&format!("{p}_w"));
    let mut su = db.connect();
    let before = counts(&mut su);
    let back_dated = Event::failed("agency", "victim")
        .ip("198.51.100.9")
        .ago("2 days");
    let hint = expect(
        try_record(&mut w, &back_dated),
        SqlState::DATETIME_FIELD_OVERFLOW,
        "a back-dated record_event",
    );
    assert!(hint.contains("authaudit.import_events"), "{hint}");
    let events: String = w
        .query_one(
            "SELECT jsonb_agg(jsonb_build_object('log_id', gen_random_uuid(), 'tenant_id', 'agency', \
                    'event_type', 'login_failed', 'user_id', 'victim', 'channel', 'web', \
                    'occurred_at', now() - interval '2 days' + g * interval '20 minutes'))::text \
               FROM generate_series(1, 20) g",
            &[],
        )
        .unwrap()
        .get(0);
    expect(
        w.execute(
            "SELECT count(*) FROM authaudit.record_events($1::text::jsonb)",
            &[&events],
        ),
        SqlState::DATETIME_FIELD_OVERFLOW,
        "a back-dated batch",
    );
    assert_eq!(counts(&mut su), before, "nothing written, no state row");
    // The writer cannot widen its own skew.
    expect(
        w.batch_execute("SET authaudit.max_past_skew = '30d'"),
        SqlState::INSUFFICIENT_PRIVILEGE,
        "a writer widening the skew",
    );
    // Within the skew, live recording goes on.
    record(&mut w, &Event::failed("agency", "victim").ago("4 minutes"));
    // As history the same 20 failures are recorded, and the replay decides
    // them in their own time: 20 minutes apart, none locks; the live lock
    // state is untouched by the import.
    let n: i64 = w
        .query_one(
            "SELECT count(*) FROM authaudit.import_events($1::text::jsonb)",
            &[&events],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 20);
    let (allowed, failures): (bool, i32) = {
        let r = su
            .query_one(
                "SELECT (SELECT allowed FROM authaudit._check_login('agency', 'victim', NULL)), \
                        (SELECT failure_count FROM authaudit.lockout_state WHERE user_id = 'victim')",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(allowed);
    assert_eq!(failures, 1, "the live failure, in a window of its own");
}

#[test]
fn rebuilding_and_importing_are_scoped() {
    let db = Cluster::shared().fresh_db_with_lockout("event_time_scope");
    let p = roles(&db);
    let one = |tenant: &str, org: Option<&str>, user: &str| {
        serde_json::json!([{
            "log_id": uuid_for(user),
            "tenant_id": tenant, "org_id": org, "event_type": "login_failed",
            "user_id": user, "channel": "web", "occurred_at": "2025-06-01T10:00:00Z",
        }])
        .to_string()
    };
    let mut w = db.connect_as(&format!("{p}_w"));
    record(&mut w, &Event::failed("agency", "hq-user").org("hq"));
    let mut other = db.connect_as(&format!("{p}_other"));
    expect(
        other.execute("SELECT * FROM authaudit.rebuild_lockout('agency')", &[]),
        SqlState::INSUFFICIENT_PRIVILEGE,
        "another tenant's writer rebuilding",
    );
    expect(
        other.execute(
            "SELECT count(*) FROM authaudit.import_events($1::text::jsonb)",
            &[&one("agency", None, "x")],
        ),
        SqlState::INSUFFICIENT_PRIVILEGE,
        "another tenant's writer importing",
    );
    let mut r = db.connect_as(&format!("{p}_r"));
    expect(
        r.execute("SELECT * FROM authaudit.rebuild_lockout('agency')", &[]),
        SqlState::INSUFFICIENT_PRIVILEGE,
        "a reader rebuilding",
    );
    let mut branch = db.connect_as(&format!("{p}_branch"));
    expect(
        branch.execute(
            "SELECT count(*) FROM authaudit.import_events($1::text::jsonb, rebuild => false)",
            &[&one("agency", Some("branch"), "hq-user")],
        ),
        SqlState::INSUFFICIENT_PRIVILEGE,
        "an organisation's writer importing history of another organisation's account",
    );
    let hint = expect(
        branch.execute(
            "SELECT count(*) FROM authaudit.import_events($1::text::jsonb)",
            &[&one("agency", Some("branch"), "branch-user")],
        ),
        SqlState::INSUFFICIENT_PRIVILEGE,
        "an organisation's writer rebuilding the tenant",
    );
    assert!(hint.contains("rebuild => false"), "{hint}");
    branch
        .execute(
            "SELECT count(*) FROM authaudit.import_events($1::text::jsonb, rebuild => false)",
            &[&one("agency", Some("branch"), "branch-user")],
        )
        .unwrap();
    // A snapshot older than the lock would miss committed events.
    w.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .unwrap();
    expect(
        w.execute("SELECT * FROM authaudit.rebuild_lockout('agency')", &[]),
        SqlState::INVALID_TRANSACTION_STATE,
        "a rebuild in REPEATABLE READ",
    );
    w.batch_execute("ROLLBACK").unwrap();
    let (events, accounts): (i64, i64) = {
        let row = w
            .query_one(
                "SELECT events, accounts FROM authaudit.rebuild_lockout('agency')",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((events, accounts), (2, 2));
    // The rebuild is in the chain: who, how much; the rows' last change.
    let mut su = db.connect();
    let rebuilt = su
        .query_one(
            "SELECT l.user_id, l.metadata #>> '{_authaudit,rebuild,events}', l.seq, \
                    (SELECT min(s.last_seq) FROM authaudit.lockout_state s WHERE s.tenant_id = 'agency'), \
                    (SELECT ok FROM authaudit.verify_chain('agency')) \
               FROM authaudit.auth_log l WHERE l.tenant_id = 'agency' AND l.event_type = 'lockout_rebuilt' \
              ORDER BY l.seq DESC LIMIT 1",
            &[],
        )
        .unwrap();
    assert_eq!(rebuilt.get::<_, String>(0), format!("{p}_w"));
    assert_eq!(rebuilt.get::<_, String>(1), "2");
    assert_eq!(rebuilt.get::<_, i64>(2), rebuilt.get::<_, i64>(3));
    assert!(rebuilt.get::<_, bool>(4));
    // Only the extension appends it.
    expect(
        try_record(&mut w, &Event::new("agency", "lockout_rebuilt", "x")),
        SqlState::INVALID_PARAMETER_VALUE,
        "a writer recording lockout_rebuilt",
    );
    // A reader sees the replay of its tenant only.
    let mine: i64 = r
        .query_one(
            "SELECT count(*) FROM authaudit.lockout_replay('agency')",
            &[],
        )
        .unwrap()
        .get(0);
    let theirs: i64 = r
        .query_one(
            "SELECT count(*) FROM authaudit.lockout_replay('elsewhere')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!((mine, theirs), (2, 0));
}

fn uuid_for(user: &str) -> String {
    let h = authaudit_core::chain::sha256_hex(user.as_bytes());
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// History into a live tenant: a year-old success must neither be reported
/// "after" the failures of today nor reset them; a year-old failure must
/// not lock anyone today.
#[test]
fn history_imported_into_a_live_tenant_keeps_the_live_count() {
    let db = Cluster::shared().fresh_db_with_lockout("event_time_history");
    let mut c = db.connect();
    let fail = |c: &mut Client| {
        record(c, &Event::failed("agency", "victim").ip("198.51.100.3"));
    };
    for _ in 0..4 {
        fail(&mut c);
    }
    c.execute(
        "SELECT count(*) FROM authaudit.import_events(jsonb_build_array( \
           jsonb_build_object('log_id', gen_random_uuid(), 'tenant_id', 'agency', 'event_type', 'login_success', \
                              'user_id', 'victim', 'channel', 'web', 'occurred_at', now() - interval '365 days'), \
           jsonb_build_object('log_id', gen_random_uuid(), 'tenant_id', 'agency', 'event_type', 'login_failed', \
                              'user_id', 'other', 'channel', 'web', 'occurred_at', now() - interval '365 days')))",
        &[],
    )
    .unwrap();
    fail(&mut c);
    let r = c
        .query_one(
            "SELECT allowed, reason FROM authaudit._check_login('agency', 'victim', NULL)",
            &[],
        )
        .unwrap();
    assert!(!r.get::<_, bool>(0), "the fifth live failure locks");
    let listed: i64 = c
        .query_one(
            "SELECT count(*) FROM authaudit.successes_after_failures('agency', now() - interval '2 years', now())",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(listed, 0, "the old success followed no failure and no lock");
    let old_locks: i64 = c
        .query_one(
            "SELECT count(*) FROM authaudit.lockout_timeline('agency', now() - interval '2 years', now()) \
              WHERE user_id = 'other'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(old_locks, 0);
    let other_locked: bool = c
        .query_one(
            "SELECT locked FROM authaudit.lockout_state WHERE user_id = 'other'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!other_locked);
}

/// A success while locked reports the failures that led to the lock, live
/// and in the investigation.
#[test]
fn a_success_while_locked_reports_the_failures_that_locked() {
    let db = Cluster::shared().fresh_db_with_lockout("event_time_locked_success");
    let mut c = db.connect();
    for _ in 0..6 {
        record(
            &mut c,
            &Event::failed("agency", "victim").ip("198.51.100.4"),
        );
    }
    let success = Event::success("agency", "victim").ip("198.51.100.5");
    let facts = record(&mut c, &success).lockout();
    assert_eq!(facts["preceding_failures"], 6, "{facts}");
    assert_eq!(facts["was_locked"], true);
    let r = c
        .query_one(
            "SELECT preceding_failures, while_locked FROM authaudit.successes_after_failures( \
               'agency', now() - interval '1 hour', now() + interval '1 hour')",
            &[],
        )
        .unwrap();
    assert_eq!((r.get::<_, i32>(0), r.get::<_, bool>(1)), (6, true));
}
