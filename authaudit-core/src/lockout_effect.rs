//! What one event does to the lockout state it touches: one step of the
//! engine, decided from the rows as read under their locks. The extension
//! writes only the rows whose state changed, once each, and records `facts`
//! with the event (`metadata._authaudit.lockout`, docs/lockout.md).

use crate::lockout::{AccountState, FailureOutcome, IpState, LockRule, Policy};
use serde_json::{json, Map, Value};

/// The events the engine acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Failure,
    Success,
    Reset,
}

impl Kind {
    /// The engine's kind of an event type, `None` for events it ignores.
    pub fn of(event_type: &str) -> Option<Kind> {
        match event_type {
            "login_failed" => Some(Kind::Failure),
            "login_success" => Some(Kind::Success),
            "lockout_reset" => Some(Kind::Reset),
            _ => None,
        }
    }

    /// Whether the event touches the source IP's state too (a failure with
    /// an IP).
    pub fn counts_ip(self, has_ip: bool) -> bool {
        self == Kind::Failure && has_ip
    }
}

/// The state an event starts from. `ip` and `pair` are `Some` exactly for a
/// failure with a source IP; a row that does not exist yet reads as the
/// default state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Before {
    pub account: AccountState,
    pub ip: Option<IpState>,
    pub pair: Option<IpState>,
}

/// The lock a failure started: the engine appends an `account_locked` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lock {
    pub rule: LockRule,
    pub failures: i32,
    pub lock_count: i32,
    /// `None`: permanent.
    pub until_us: Option<i64>,
}

/// One event's effect: the states to write (`None`: unchanged, nothing to
/// write), the facts to record and the lock it started, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Effect {
    pub account: Option<AccountState>,
    pub ip: Option<IpState>,
    pub pair: Option<IpState>,
    pub facts: Value,
    pub lock: Option<Lock>,
}

/// Applies one event at `at_us` to `before` under `policy`.
pub fn step(policy: &Policy, kind: Kind, before: &Before, at_us: i64) -> Effect {
    let changed = |next: AccountState| (next != before.account).then_some(next);
    match kind {
        Kind::Failure => {
            let (next, outcome) = before.account.on_failure(policy, at_us);
            let ip = before.ip.map(|s| s.on_failure(policy, at_us));
            let pair = before.pair.map(|s| s.on_account_failure(policy, at_us));
            let mut facts = Map::new();
            let mut lock = None;
            match outcome {
                FailureOutcome::Counted { failures } => {
                    facts.insert("failures_in_window".into(), failures.into());
                }
                FailureOutcome::Locked {
                    failures,
                    rule,
                    lock_count,
                    until_us,
                } => {
                    facts.insert("failures_in_window".into(), failures.into());
                    facts.insert("locked_account".into(), true.into());
                    lock = Some(Lock {
                        rule,
                        failures,
                        lock_count,
                        until_us,
                    });
                }
                FailureOutcome::WhileLocked { until_us } => {
                    facts.insert("while_locked".into(), true.into());
                    facts.insert("locked_until_us".into(), until_us.into());
                }
            }
            facts.insert(
                "ip_blocked_until_us".into(),
                ip.and_then(|(_, blocked)| blocked).into(),
            );
            facts.insert(
                "ip_account_blocked_until_us".into(),
                pair.and_then(|(_, blocked)| blocked).into(),
            );
            Effect {
                // A failure always writes the account: its last failure, IP
                // and log id move even while the account is locked.
                account: Some(next),
                ip: ip.map(|(s, _)| s).filter(|s| Some(*s) != before.ip),
                pair: pair.map(|(s, _)| s).filter(|s| Some(*s) != before.pair),
                facts: Value::Object(facts),
                lock,
            }
        }
        Kind::Success => {
            let (next, f) = before.account.on_success(at_us);
            Effect {
                account: changed(next),
                ip: None,
                pair: None,
                facts: json!({
                    "preceding_failures": f.preceding_failures,
                    "was_locked": f.was_locked,
                }),
                lock: None,
            }
        }
        Kind::Reset => Effect {
            account: changed(before.account.on_reset()),
            ip: None,
            pair: None,
            facts: json!({ "was_locked": before.account.is_locked_at(at_us) }),
            lock: None,
        },
    }
}

impl Lock {
    /// The metadata of the `account_locked` event, `triggered_by` the
    /// failure's log id (text form).
    pub fn metadata(&self, triggered_by: &str) -> Value {
        json!({
            "reason": self.rule.as_str(),
            "failures": self.failures,
            "lock_count": self.lock_count,
            "permanent": self.until_us.is_none(),
            "locked_until": self.until_us.map(iso_utc),
            "triggered_by": triggered_by,
        })
    }
}

/// A Unix time in microseconds as ISO 8601 in UTC, the way PostgreSQL
/// writes a `timestamptz` into JSON (`2026-12-01T11:40:00.5+00:00`).
pub fn iso_utc(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        tod / 3600,
        tod / 60 % 60,
        tod % 60
    );
    if micros != 0 {
        let frac = format!("{micros:06}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push_str("+00:00");
    out
}

/// The proleptic Gregorian date (year, month, day) of a day count from
/// 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000_000;
    const MIN: i64 = 60_000_000;

    fn policy() -> Policy {
        Policy {
            max_failures: 3,
            ..Policy::default()
        }
    }

    fn with_ip() -> Before {
        Before {
            account: AccountState::default(),
            ip: Some(IpState::default()),
            pair: Some(IpState::default()),
        }
    }

    #[test]
    fn a_failure_writes_every_state_it_counts_in() {
        let e = step(&policy(), Kind::Failure, &with_ip(), T0);
        assert_eq!(e.account.unwrap().failure_count, 1);
        assert_eq!(e.ip.unwrap().failure_count, 1);
        assert_eq!(e.pair.unwrap().failure_count, 1);
        assert_eq!(
            e.facts,
            json!({"failures_in_window": 1, "ip_blocked_until_us": null,
                   "ip_account_blocked_until_us": null})
        );
        assert_eq!(e.lock, None);
    }

    #[test]
    fn a_failure_without_ip_touches_the_account_only() {
        let e = step(&policy(), Kind::Failure, &Before::default(), T0);
        assert!(e.account.is_some() && e.ip.is_none() && e.pair.is_none());
        assert_eq!(e.facts["ip_blocked_until_us"], Value::Null);
    }

    #[test]
    fn the_failure_that_reaches_the_limit_locks_and_says_so() {
        let mut before = with_ip();
        for i in 0..2 {
            let e = step(&policy(), Kind::Failure, &before, T0 + i * MIN);
            before.account = e.account.unwrap();
            before.ip = e.ip.or(before.ip);
            before.pair = e.pair.or(before.pair);
        }
        let e = step(&policy(), Kind::Failure, &before, T0 + 2 * MIN);
        let lock = e.lock.expect("third failure locks");
        assert_eq!(
            (lock.rule, lock.failures, lock.lock_count),
            (LockRule::MaxFailures, 3, 1)
        );
        assert_eq!(lock.until_us, Some(T0 + 2 * MIN + 15 * MIN));
        assert_eq!(e.facts["locked_account"], json!(true));
        assert!(e.account.unwrap().locked);
        let meta = lock.metadata("0196b9b8-0000-8000-8000-000000000001");
        assert_eq!(meta["permanent"], json!(false));
        assert_eq!(meta["reason"], json!("max_failures"));
        assert_eq!(meta["locked_until"], json!(iso_utc(T0 + 17 * MIN)));
    }

    #[test]
    fn a_failure_while_locked_is_flagged_and_a_blocked_ip_is_not_rewritten() {
        let before = Before {
            account: AccountState {
                locked: true,
                locked_at_us: Some(T0),
                locked_until_us: Some(T0 + 10 * MIN),
                lock_count: 1,
                ..AccountState::default()
            },
            ip: Some(IpState {
                blocked_until_us: Some(T0 + 10 * MIN),
                ..IpState::default()
            }),
            pair: Some(IpState::default()),
        };
        let e = step(&policy(), Kind::Failure, &before, T0 + MIN);
        assert_eq!(e.facts["while_locked"], json!(true));
        assert_eq!(e.facts["locked_until_us"], json!(T0 + 10 * MIN));
        assert!(e.account.is_some(), "the last failure is kept");
        assert_eq!(e.ip, None, "a blocked IP's state does not change");
        assert!(e.pair.is_some());
    }

    #[test]
    fn a_success_after_no_failure_writes_nothing() {
        let e = step(&policy(), Kind::Success, &Before::default(), T0);
        assert_eq!(e.account, None);
        assert_eq!(
            e.facts,
            json!({"preceding_failures": 0, "was_locked": false})
        );
    }

    #[test]
    fn a_success_after_failures_clears_them() {
        let before = Before {
            account: AccountState {
                failure_count: 2,
                first_failure_us: Some(T0),
                last_failure_us: Some(T0),
                failures_since_success: 2,
                ..AccountState::default()
            },
            ..Before::default()
        };
        let e = step(&policy(), Kind::Success, &before, T0 + MIN);
        assert_eq!(e.account.unwrap().failure_count, 0);
        assert_eq!(e.facts["preceding_failures"], json!(2));
    }

    #[test]
    fn a_reset_of_a_clean_account_writes_nothing_and_a_locked_one_is_cleared() {
        assert_eq!(
            step(&policy(), Kind::Reset, &Before::default(), T0).account,
            None
        );
        let locked = Before {
            account: AccountState {
                locked: true,
                locked_at_us: Some(T0),
                locked_until_us: None,
                lock_count: 2,
                ..AccountState::default()
            },
            ..Before::default()
        };
        let e = step(&policy(), Kind::Reset, &locked, T0 + MIN);
        let next = e.account.unwrap();
        assert!(!next.locked);
        assert_eq!(next.lock_count, 2, "escalation remembers earlier locks");
        assert_eq!(e.facts, json!({"was_locked": true}));
    }

    #[test]
    fn kinds_and_ip_counting() {
        assert_eq!(Kind::of("login_failed"), Some(Kind::Failure));
        assert_eq!(Kind::of("token_issued"), None);
        assert!(Kind::Failure.counts_ip(true));
        assert!(!Kind::Failure.counts_ip(false));
        assert!(!Kind::Success.counts_ip(true));
    }

    #[test]
    fn times_are_written_as_postgresql_writes_them_into_json() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00+00:00");
        assert_eq!(iso_utc(T0), "2023-11-14T22:13:20+00:00");
        assert_eq!(iso_utc(T0 + 500_000), "2023-11-14T22:13:20.5+00:00");
        assert_eq!(
            iso_utc(951_782_400_000_001),
            "2000-02-29T00:00:00.000001+00:00"
        );
        assert_eq!(iso_utc(-1), "1969-12-31T23:59:59.999999+00:00");
    }
}
