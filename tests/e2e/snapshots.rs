//! Lockout snapshots, attacked (docs/lockout.md, "Snapshots"): answers and
//! rebuilds that replay from a snapshot equal a replay from the tenant's
//! first event, after history is imported behind the snapshots (inside
//! the history, and before the oldest one), recorded live behind them,
//! imported while a snapshot is being made, removed by retention, and for
//! a reader whose snapshot of the database is older than the snapshots.

use crate::support::{log_id, record, Event, Rng};
use authaudit_core::lockout_effect::iso_utc;
use authaudit_tests::{Cluster, TestDb};
use postgres::Client;

pub(crate) const T: &str = "agency-snap";
const DAYS: i64 = 14;

/// Midnight UTC `DAYS` + 2 days ago, in Unix microseconds.
fn start_us(c: &mut Client) -> i64 {
    c.query_one(
        "SELECT (extract(epoch FROM date_trunc('day', now() AT TIME ZONE 'UTC') \
                 - make_interval(days => $1)) * 1000000)::bigint",
        &[&((DAYS + 2) as i32)],
    )
    .unwrap()
    .get(0)
}

const DAY_US: i64 = 86_400_000_000;
const MIN_US: i64 = 60_000_000;

/// One event: (microseconds, type, account, address).
pub(crate) type Ev = (i64, &'static str, String, Option<String>);

/// `DAYS` days of history from `start`: each day bursts of failures
/// against a handful of accounts (locks, escalating lock durations),
/// credential stuffing from one address, successes after failures, and a
/// help-desk reset.
pub(crate) fn history(start: i64) -> Vec<Ev> {
    let mut rng = Rng(0x51a9_5e0d);
    let mut v: Vec<Ev> = Vec::new();
    for d in 0..DAYS {
        let day = start + d * DAY_US;
        for burst in 0..12 {
            let user = format!("acct{:02}", rng.below(8));
            let at = day + (burst * 110 + rng.below(60) as i64) * MIN_US;
            let n = 3 + rng.below(5) as i64;
            for k in 0..n {
                let ip = format!("203.0.113.{}", 10 + rng.below(20));
                v.push((at + k * 20_000_000, "login_failed", user.clone(), Some(ip)));
            }
            if rng.below(3) == 0 {
                v.push((
                    at + n * 20_000_000 + 5_000_000,
                    "login_success",
                    user.clone(),
                    Some("192.0.2.5".into()),
                ));
            }
        }
        for k in 0..40 {
            v.push((
                day + 20 * 60 * MIN_US + k * 3_000_000,
                "login_failed",
                format!("user{:03}", rng.below(200)),
                Some("198.51.100.66".into()),
            ));
        }
        v.push((
            day + 23 * 60 * MIN_US,
            "lockout_reset",
            format!("acct{:02}", rng.below(8)),
            None,
        ));
    }
    v.sort_by_key(|e| e.0);
    v
}

fn as_json(tag: u32, events: &[Ev]) -> String {
    serde_json::Value::Array(
        events
            .iter()
            .enumerate()
            .map(|(n, (at, ty, user, ip))| {
                serde_json::json!({
                    "log_id": log_id(tag, n as u32 + 1),
                    "tenant_id": T,
                    "event_type": ty,
                    "user_id": user,
                    "channel": "api",
                    "ip": ip,
                    "occurred_at": iso_utc(*at),
                })
            })
            .collect(),
    )
    .to_string()
}

pub(crate) fn import(c: &mut Client, tag: u32, events: &[Ev], rebuild: bool) {
    c.query_one(
        "SELECT count(*) FROM authaudit.import_events($1::text::jsonb, rebuild => $2)",
        &[&as_json(tag, events), &rebuild],
    )
    .unwrap();
}

/// A database with the history imported and rebuilt, snapshots made every
/// 200 events (its superuser sessions: `connect`).
fn setup(hint: &str) -> (TestDb, Client, i64) {
    setup_with_checkpoint(hint, None)
}

/// A database whose snapshots are made every 200 events, a superuser
/// session of it and the start of its history (`history`, not imported).
pub(crate) fn fresh(hint: &str) -> (TestDb, Client, i64) {
    let db = Cluster::shared().fresh_db_with_lockout(hint);
    Cluster::shared()
        .admin()
        .batch_execute(&format!(
            "ALTER DATABASE {} SET authaudit.lockout_snapshot_interval = 200",
            db.name()
        ))
        .unwrap();
    let mut c = db.connect();
    let start = start_us(&mut c);
    (db, c, start)
}

/// `setup`, with a checkpoint after the events of the first `days` days.
fn setup_with_checkpoint(hint: &str, days: Option<i64>) -> (TestDb, Client, i64) {
    let (db, mut c, start) = fresh(hint);
    let events = history(start);
    let cut = days.map_or(0, |d| {
        events
            .iter()
            .take_while(|e| e.0 < start + d * DAY_US)
            .count()
    });
    let (first, rest) = events.split_at(cut);
    if !first.is_empty() {
        import(&mut c, 999, first, false);
    }
    if days.is_some() {
        c.query("SELECT authaudit.checkpoint($1)", &[&T]).unwrap();
    }
    for (n, chunk) in rest.chunks(500).enumerate() {
        import(&mut c, 1000 + n as u32, chunk, false);
    }
    c.query("SELECT * FROM authaudit.rebuild_lockout($1)", &[&T])
        .unwrap();
    (db, c, start)
}

pub(crate) fn snapshots(c: &mut Client) -> i64 {
    c.query_one(
        "SELECT count(*) FROM authaudit.lockout_snapshots WHERE tenant_id = $1",
        &[&T],
    )
    .unwrap()
    .get(0)
}

/// Every row of `lockout_replay` for [from, to) as text, decision numbers
/// and seqs included.
fn replay(c: &mut Client, from: i64, to: i64) -> Vec<String> {
    c.query(
        "SELECT to_jsonb(r)::text FROM authaudit.lockout_replay($1, $2::text::timestamptz, \
                $3::text::timestamptz) r ORDER BY r.decision",
        &[&T, &iso_utc(from), &iso_utc(to)],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// The periods asked about: each day, a week, and one that starts at noon.
fn periods(start: i64) -> Vec<(i64, i64)> {
    let mut p: Vec<(i64, i64)> = (0..DAYS + 2)
        .map(|d| (start + d * DAY_US, start + (d + 1) * DAY_US))
        .collect();
    p.push((start + 5 * DAY_US, start + 12 * DAY_US));
    p.push((start + 9 * DAY_US + DAY_US / 2, start + 10 * DAY_US));
    p
}

/// What `lockout_replay` answers about every period, with snapshots (asked
/// twice: the first answer may make one) and without any, which must agree.
pub(crate) fn assert_answers_agree(c: &mut Client, start: i64, what: &str) -> Vec<Vec<String>> {
    let mut with = Vec::new();
    for (from, to) in periods(start) {
        let first = replay(c, from, to);
        let again = replay(c, from, to);
        assert_eq!(first, again, "{what}: asked twice about {}", iso_utc(from));
        with.push(first);
    }
    c.batch_execute("SET authaudit.lockout_snapshot_interval = 0")
        .unwrap();
    for ((from, to), w) in periods(start).into_iter().zip(&with) {
        let without = replay(c, from, to);
        assert_eq!(
            *w,
            without,
            "{what}: the period from {} answers otherwise from a snapshot",
            iso_utc(from)
        );
    }
    c.batch_execute("RESET authaudit.lockout_snapshot_interval")
        .unwrap();
    with
}

/// The tenant's lockout tables as a rebuild leaves them (without the
/// rebuild's own event ids).
fn tables(c: &mut Client) -> Vec<String> {
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
        for r in c.query(q, &[&T]).unwrap() {
            out.push(r.get::<_, String>(0));
        }
    }
    out
}

/// A rebuild from the snapshots leaves the tables and the event count a
/// rebuild from the first event leaves.
fn assert_rebuilds_agree(c: &mut Client, what: &str) {
    let with: i64 = c
        .query_one("SELECT events FROM authaudit.rebuild_lockout($1)", &[&T])
        .unwrap()
        .get(0);
    let with_tables = tables(c);
    c.batch_execute("SET authaudit.lockout_snapshot_interval = 0")
        .unwrap();
    let without: i64 = c
        .query_one("SELECT events FROM authaudit.rebuild_lockout($1)", &[&T])
        .unwrap()
        .get(0);
    assert_eq!(with, without, "{what}: events replayed");
    assert_eq!(with_tables, tables(c), "{what}: lockout tables");
    c.batch_execute("RESET authaudit.lockout_snapshot_interval")
        .unwrap();
}

/// Five failures against `acct00` from one address at `at`: a lock, and
/// one more lock on the account's count (longer locks after it).
fn burst(at: i64) -> Vec<Ev> {
    (0..5)
        .map(|k| {
            (
                at + k * 10_000_000,
                "login_failed",
                "acct00".to_owned(),
                Some("198.18.0.9".to_owned()),
            )
        })
        .collect()
}

#[test]
fn answers_and_rebuilds_from_snapshots_equal_a_replay_from_the_first_event() {
    let (_db, mut c, start) = setup("snap_equal");
    assert!(
        snapshots(&mut c) >= 3,
        "a rebuild every 200 events makes snapshots"
    );
    assert_answers_agree(&mut c, start, "imported history");
    assert_rebuilds_agree(&mut c, "imported history");
}

#[test]
fn a_late_import_inside_the_history_invalidates_the_snapshots_after_it() {
    let (_db, mut c, start) = setup("snap_late_import");
    let before = assert_answers_agree(&mut c, start, "before the import");
    // Locks of acct00 on day 4, late in the evening: every later lock of
    // the account lasts longer, so answers about later days change.
    let mut late = Vec::new();
    for k in 0..3 {
        late.extend(burst(start + 4 * DAY_US + (22 * 60 + k * 20) * MIN_US));
    }
    import(&mut c, 7, &late, true);
    let after = assert_answers_agree(&mut c, start, "after the import");
    let changed = (6..DAYS as usize)
        .filter(|d| before[*d] != after[*d])
        .count();
    assert!(
        changed > 0,
        "the import changes answers about days after it (else this test proves nothing)"
    );
    assert_rebuilds_agree(&mut c, "after the import");
}

#[test]
fn an_import_before_the_oldest_snapshot_invalidates_them_all() {
    let (_db, mut c, start) = setup("snap_before_oldest");
    let before = assert_answers_agree(&mut c, start, "before the import");
    let oldest: String = c
        .query_one(
            "SELECT min(point_at)::text FROM authaudit.lockout_snapshots WHERE tenant_id = $1",
            &[&T],
        )
        .unwrap()
        .get(0);
    let mut early = Vec::new();
    for k in 0..4 {
        early.extend(burst(start - DAY_US + k * 40 * MIN_US));
    }
    import(&mut c, 8, &early, true);
    let after = assert_answers_agree(&mut c, start, "after the import");
    assert_ne!(before, after, "four earlier locks lengthen later ones");
    let stale: i64 = c
        .query_one(
            "SELECT count(*) FROM authaudit.lockout_snapshots \
              WHERE tenant_id = $1 AND point_at <= $2::text::timestamptz AND max_seq < \
                    (SELECT max(seq) FROM authaudit.auth_log WHERE tenant_id = $1 \
                        AND metadata #>> '{_authaudit,imported}' IS NOT NULL)",
            &[&T, &oldest],
        )
        .unwrap()
        .get(0);
    assert_eq!(stale, 0, "snapshots from before the import are gone");
    assert_rebuilds_agree(&mut c, "after an import before the oldest snapshot");
}

#[test]
fn live_events_recorded_behind_a_snapshot_invalidate_it() {
    let (db, mut c, start) = setup("snap_live_behind");
    let before = assert_answers_agree(&mut c, start, "before");
    // A superuser widened the past skew: live events dated day 3.
    let mut dated = db.connect_dated();
    for (n, (at, ty, user, ip)) in burst(start + 3 * DAY_US + 22 * 60 * MIN_US)
        .into_iter()
        .enumerate()
    {
        let e = Event::new(T, ty, &user)
            .set("ip", ip.as_deref())
            .log_id(&log_id(9, n as u32 + 1))
            .channel("api")
            .occurred_at(&iso_utc(at));
        record(&mut dated, &e);
    }
    let after = assert_answers_agree(&mut c, start, "after live events behind the snapshots");
    assert_ne!(before, after, "the dated lock changes later answers");
}

#[test]
fn a_snapshot_made_while_history_is_imported_is_not_used_once_it_commits() {
    let (db, mut c, start) = setup("snap_race_import");
    // No snapshot yet: the answer about day 10 makes the one it uses.
    c.batch_execute("DELETE FROM authaudit.lockout_snapshots")
        .unwrap();
    let mut importer = db.connect();
    importer.batch_execute("BEGIN").unwrap();
    let mut late = Vec::new();
    for k in 0..3 {
        late.extend(burst(start + 6 * DAY_US + (20 * 60 + k * 20) * MIN_US));
    }
    import(&mut importer, 10, &late, false);
    // Made from the history without the import (not committed yet).
    let (from, to) = (start + 10 * DAY_US, start + 11 * DAY_US);
    let unaware = replay(&mut c, from, to);
    assert!(snapshots(&mut c) >= 1, "the answer made a snapshot");
    importer.batch_execute("COMMIT").unwrap();
    let asked = replay(&mut c, from, to);
    c.batch_execute("SET authaudit.lockout_snapshot_interval = 0")
        .unwrap();
    assert_eq!(
        asked,
        replay(&mut c, from, to),
        "the answer holds the import"
    );
    c.batch_execute("RESET authaudit.lockout_snapshot_interval")
        .unwrap();
    let after = assert_answers_agree(&mut c, start, "after the import committed");
    assert_ne!(
        unaware, after[10],
        "the import changes the answer (else this test proves nothing)"
    );
}

#[test]
fn a_reader_with_an_older_snapshot_answers_from_what_it_sees() {
    let (db, mut c, start) = setup("snap_old_reader");
    let (from, to) = (start + 11 * DAY_US, start + 12 * DAY_US);
    let seen = replay(&mut c, from, to);
    let mut reader = db.connect();
    reader
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1")
        .unwrap();
    // History imported and rebuilt after the reader's snapshot: new
    // snapshots hold it.
    let mut late = Vec::new();
    for k in 0..3 {
        late.extend(burst(start + 7 * DAY_US + (21 * 60 + k * 20) * MIN_US));
    }
    import(&mut c, 11, &late, true);
    for (f, t) in periods(start) {
        replay(&mut c, f, t);
    }
    assert_eq!(
        replay(&mut reader, from, to),
        seen,
        "the reader answers from the history it sees"
    );
    reader.batch_execute("COMMIT").unwrap();
    let now = assert_answers_agree(&mut c, start, "after the reader");
    assert_ne!(now[11], seen, "the import changed the answer");
}

#[test]
fn retention_makes_answers_start_at_the_oldest_row_left() {
    let (_db, mut c, start) = setup_with_checkpoint("snap_retention", Some(4));
    assert_answers_agree(&mut c, start, "before retention");
    c.batch_execute("SET authaudit.min_retention = '1min'")
        .unwrap();
    let removed: i64 = c
        .query_one(
            "SELECT removed_rows FROM authaudit.apply_retention($1, $2::text::timestamptz)",
            &[&T, &iso_utc(start + 4 * DAY_US)],
        )
        .unwrap()
        .get(0);
    assert!(removed > 0, "retention removed the oldest days");
    assert_answers_agree(&mut c, start, "after retention");
    assert_rebuilds_agree(&mut c, "after retention");
}
