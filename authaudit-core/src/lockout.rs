//! Lockout policy maths: how failures count, when an account locks and for
//! how long, what a success or a reset clears, and whether a login may be
//! attempted now. Pure functions over explicit state and event times, so every
//! rule is tested without PostgreSQL (and without sleeping).
//!
//! Times are microseconds since the Unix epoch (the event's `occurred_at`).
//! The model follows Keycloak's brute-force detection (maximum failures, wait
//! increment, maximum wait, failure reset time, quick-login check, temporary,
//! permanent and mixed modes) and Auth0's per-IP blocks, with defaults that
//! satisfy OWASP ASVS 4.0.3 V2.2.1 (at most 100 failed attempts per hour per
//! account).

use std::fmt;

const MINUTE_US: i64 = 60_000_000;
const HOUR_US: i64 = 60 * MINUTE_US;

/// How successive temporary locks of one account grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Increment {
    /// Every lock lasts `lock_duration`.
    Constant,
    /// The n-th lock lasts n × `lock_duration`.
    Linear,
    /// The n-th lock lasts 2ⁿ⁻¹ × `lock_duration`.
    Multiple,
}

impl Increment {
    /// The name used in `authaudit.lockout_policy.lock_increment`.
    pub fn as_str(self) -> &'static str {
        match self {
            Increment::Constant => "constant",
            Increment::Linear => "linear",
            Increment::Multiple => "multiple",
        }
    }
}

impl std::str::FromStr for Increment {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "constant" => Ok(Increment::Constant),
            "linear" => Ok(Increment::Linear),
            "multiple" => Ok(Increment::Multiple),
            other => Err(PolicyError::UnknownIncrement(
                other.chars().take(40).collect(),
            )),
        }
    }
}

/// A tenant's lockout policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// When false, failures are recorded but nothing locks.
    pub enabled: bool,
    /// Failures within `failure_window` that lock the account.
    pub max_failures: i32,
    /// How long failures keep counting (Keycloak's failure reset time).
    pub failure_window_us: i64,
    /// Length of the first temporary lock.
    pub lock_duration_us: i64,
    /// How later locks grow.
    pub increment: Increment,
    /// Upper bound of a temporary lock.
    pub max_lock_duration_us: i64,
    /// After this many temporary locks the next lock is permanent (mixed mode);
    /// `Some(1)` makes every lock permanent; `None` never.
    pub permanent_after_locks: Option<i32>,
    /// Two failures closer than this lock at once for `lock_duration`
    /// (Keycloak's quick-login check); `None` disables it.
    pub quick_failure_interval_us: Option<i64>,
    /// Failures from one IP across all accounts within `failure_window` that
    /// block the IP (credential stuffing).
    pub ip_max_failures: i32,
    /// Failures of one account from one IP within `failure_window` that block
    /// that IP for that account (Auth0's per-(IP, account) rule).
    pub ip_account_max_failures: i32,
    /// How long a blocked IP (or IP for one account) stays blocked.
    pub ip_block_duration_us: i64,
}

/// The default policy's values, in one place: `Policy::default`, the
/// `authaudit.lockout_*` parameters' defaults (pg_authaudit's `gucs.rs`)
/// and `lockout_policy`'s column defaults (sql/schema.sql) are these;
/// `tests/e2e/lockout_defaults.rs` fails when the schema or the
/// parameters part from them.
pub mod defaults {
    pub const MAX_FAILURES: i32 = 5;
    pub const FAILURE_WINDOW_S: i32 = 15 * 60;
    pub const LOCK_DURATION_S: i32 = 15 * 60;
    pub const MAX_LOCK_DURATION_S: i32 = 24 * 60 * 60;
    pub const IP_MAX_FAILURES: i32 = 100;
    pub const IP_ACCOUNT_MAX_FAILURES: i32 = 10;
    pub const IP_BLOCK_DURATION_S: i32 = 60 * 60;
    /// The IPv6 prefix length by which sources are grouped.
    pub const IPV6_PREFIX: i32 = 64;
}

impl Default for Policy {
    /// 5 failures in 15 minutes lock the account for 15 minutes, doubling up
    /// to 24 hours; 100 failures from one IP in 15 minutes block it for an
    /// hour. At most 5 failures can be attempted per lock period, so well
    /// under ASVS V2.2.1's 100 per hour.
    fn default() -> Policy {
        Policy {
            enabled: true,
            max_failures: defaults::MAX_FAILURES,
            failure_window_us: i64::from(defaults::FAILURE_WINDOW_S) * 1_000_000,
            lock_duration_us: i64::from(defaults::LOCK_DURATION_S) * 1_000_000,
            increment: Increment::Multiple,
            max_lock_duration_us: i64::from(defaults::MAX_LOCK_DURATION_S) * 1_000_000,
            permanent_after_locks: None,
            quick_failure_interval_us: None,
            ip_max_failures: defaults::IP_MAX_FAILURES,
            ip_account_max_failures: defaults::IP_ACCOUNT_MAX_FAILURES,
            ip_block_duration_us: i64::from(defaults::IP_BLOCK_DURATION_S) * 1_000_000,
        }
    }
}

/// Why a policy is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("max_failures must be between 1 and 100 (ASVS V2.2.1), got {0}")]
    MaxFailures(i32),
    #[error("{0} must be positive")]
    NotPositive(&'static str),
    #[error("max_lock_duration must be at least lock_duration")]
    MaxBelowBase,
    #[error("permanent_after_locks must be at least 1, got {0}")]
    PermanentAfter(i32),
    #[error("ip_max_failures must be at least 1, got {0}")]
    IpMaxFailures(i32),
    #[error("unknown lock increment \"{0}\" (constant, linear or multiple)")]
    UnknownIncrement(String),
    #[error("the policy allows {0} failed attempts per hour per account; ASVS V2.2.1 allows at most 100")]
    TooPermissive(i64),
}

impl Policy {
    /// Checks every value, including that an attacker cannot make more than
    /// 100 attempts per hour against one account (ASVS V2.2.1).
    pub fn validate(&self) -> Result<(), PolicyError> {
        if !(1..=100).contains(&self.max_failures) {
            return Err(PolicyError::MaxFailures(self.max_failures));
        }
        for (name, v) in [
            ("failure_window", self.failure_window_us),
            ("lock_duration", self.lock_duration_us),
            ("max_lock_duration", self.max_lock_duration_us),
            ("ip_block_duration", self.ip_block_duration_us),
        ] {
            if v <= 0 {
                return Err(PolicyError::NotPositive(name));
            }
        }
        if let Some(q) = self.quick_failure_interval_us {
            if q <= 0 {
                return Err(PolicyError::NotPositive("quick_failure_interval"));
            }
        }
        if self.max_lock_duration_us < self.lock_duration_us {
            return Err(PolicyError::MaxBelowBase);
        }
        if let Some(n) = self.permanent_after_locks {
            if n < 1 {
                return Err(PolicyError::PermanentAfter(n));
            }
        }
        if self.ip_max_failures < 1 {
            return Err(PolicyError::IpMaxFailures(self.ip_max_failures));
        }
        if self.ip_account_max_failures < 1 {
            return Err(PolicyError::IpMaxFailures(self.ip_account_max_failures));
        }
        let per_hour = self.max_attempts_per_hour();
        if self.enabled && per_hour > 100 {
            return Err(PolicyError::TooPermissive(per_hour));
        }
        Ok(())
    }

    /// The most failed attempts one account can take in an hour under this
    /// policy: `max_failures` per lock cycle, and a cycle lasts at least the
    /// first lock (locks only grow).
    pub fn max_attempts_per_hour(&self) -> i64 {
        let cycles = (HOUR_US + self.lock_duration_us - 1) / self.lock_duration_us + 1;
        i64::from(self.max_failures) * cycles
    }

    /// Length of the `lock_count`-th lock (1-based); `None` means permanent.
    pub fn lock_duration(&self, lock_count: i32) -> Option<i64> {
        if let Some(n) = self.permanent_after_locks {
            if lock_count > n || n == 1 {
                return None;
            }
        }
        let n = i64::from(lock_count.max(1));
        let d = match self.increment {
            Increment::Constant => self.lock_duration_us,
            Increment::Linear => self.lock_duration_us.saturating_mul(n),
            Increment::Multiple => {
                let shift = (n - 1).min(62) as u32;
                self.lock_duration_us.saturating_mul(1i64 << shift)
            }
        };
        Some(d.min(self.max_lock_duration_us))
    }
}

/// Lockout state of one account, as kept in `authaudit.lockout_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccountState {
    pub failure_count: i32,
    pub first_failure_us: Option<i64>,
    pub last_failure_us: Option<i64>,
    pub locked: bool,
    pub locked_at_us: Option<i64>,
    /// End of the current lock; `None` while locked means permanent.
    pub locked_until_us: Option<i64>,
    /// Locks so far (for escalation); a help-desk reset keeps it.
    pub lock_count: i32,
    /// Failures since the account's last success or reset, whatever the
    /// window and locks did meanwhile: what a success reports as its
    /// `preceding_failures`.
    pub failures_since_success: i32,
}

/// Why an account locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockRule {
    /// `max_failures` within `failure_window`.
    MaxFailures,
    /// Two failures within `quick_failure_interval`.
    QuickSuccession,
}

impl LockRule {
    /// The name written into the `account_locked` event's metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            LockRule::MaxFailures => "max_failures",
            LockRule::QuickSuccession => "quick_succession",
        }
    }
}

impl fmt::Display for LockRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a failed login did to an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    /// Counted; the account is not locked.
    Counted { failures: i32 },
    /// This failure locked the account: append one `account_locked` event.
    Locked {
        failures: i32,
        rule: LockRule,
        lock_count: i32,
        /// `None`: permanent.
        until_us: Option<i64>,
    },
    /// The account was already locked; the failure is recorded and flagged
    /// but does not extend the lock.
    WhileLocked { until_us: Option<i64> },
}

impl AccountState {
    /// Whether the account is locked at `at_us` (a temporary lock that has
    /// run out no longer counts, without any background job).
    pub fn is_locked_at(&self, at_us: i64) -> bool {
        self.locked && self.locked_until_us.is_none_or(|until| at_us < until)
    }

    /// Applies a failed login at `at_us`.
    pub fn on_failure(&self, policy: &Policy, at_us: i64) -> (AccountState, FailureOutcome) {
        let mut s = *self;
        s.failures_since_success = s.failures_since_success.saturating_add(1);
        if s.is_locked_at(at_us) {
            s.last_failure_us = Some(at_us);
            return (
                s,
                FailureOutcome::WhileLocked {
                    until_us: s.locked_until_us,
                },
            );
        }
        if s.locked {
            // The temporary lock ran out: failures count afresh.
            s.locked = false;
            s.locked_at_us = None;
            s.locked_until_us = None;
            s.failure_count = 0;
            s.first_failure_us = None;
        }
        let in_window = s
            .first_failure_us
            .is_some_and(|first| at_us.saturating_sub(first) < policy.failure_window_us);
        let quick = match (policy.quick_failure_interval_us, s.last_failure_us) {
            (Some(q), Some(last)) if s.failure_count > 0 => at_us.saturating_sub(last) < q,
            _ => false,
        };
        if in_window {
            s.failure_count += 1;
        } else {
            s.failure_count = 1;
            s.first_failure_us = Some(at_us);
        }
        s.last_failure_us = Some(at_us);
        let failures = s.failure_count;
        let rule = if !policy.enabled {
            None
        } else if failures >= policy.max_failures {
            Some(LockRule::MaxFailures)
        } else if quick {
            Some(LockRule::QuickSuccession)
        } else {
            None
        };
        let Some(rule) = rule else {
            return (s, FailureOutcome::Counted { failures });
        };
        s.lock_count += 1;
        let until_us = match rule {
            LockRule::MaxFailures => policy
                .lock_duration(s.lock_count)
                .map(|d| at_us.saturating_add(d)),
            LockRule::QuickSuccession => Some(at_us.saturating_add(policy.lock_duration_us)),
        };
        s.locked = true;
        s.locked_at_us = Some(at_us);
        s.locked_until_us = until_us;
        s.failure_count = 0;
        s.first_failure_us = None;
        (
            s,
            FailureOutcome::Locked {
                failures,
                rule,
                lock_count: s.lock_count,
                until_us,
            },
        )
    }

    /// Applies a successful login: returns the facts the event records (the
    /// failures since the account's last success or reset, those that led
    /// to a lock included, and whether the account was locked at that
    /// moment, a forensic signal) and clears the failure count. A success
    /// while locked does not unlock the account.
    pub fn on_success(&self, at_us: i64) -> (AccountState, SuccessFacts) {
        let facts = SuccessFacts {
            preceding_failures: self.failures_since_success,
            was_locked: self.is_locked_at(at_us),
        };
        let mut s = *self;
        s.failure_count = 0;
        s.failures_since_success = 0;
        s.first_failure_us = None;
        if s.locked && !s.is_locked_at(at_us) {
            s.locked = false;
            s.locked_at_us = None;
            s.locked_until_us = None;
        }
        (s, facts)
    }

    /// Applies a help-desk or automatic reset: clears the lock and the
    /// failure count, keeps `lock_count` so that repeat offenders escalate.
    pub fn on_reset(&self) -> AccountState {
        AccountState {
            lock_count: self.lock_count,
            ..AccountState::default()
        }
    }
}

/// Facts recorded with a successful login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuccessFacts {
    pub preceding_failures: i32,
    pub was_locked: bool,
}

/// Failures from one source IP across all accounts of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IpState {
    pub failure_count: i32,
    pub first_failure_us: Option<i64>,
    pub blocked_until_us: Option<i64>,
}

impl IpState {
    /// Whether the IP is blocked at `at_us`.
    pub fn is_blocked_at(&self, at_us: i64) -> bool {
        self.blocked_until_us.is_some_and(|until| at_us < until)
    }

    /// Applies a failure from this IP (across accounts); returns the new
    /// state and, when this failure blocked the IP, the end of the block.
    pub fn on_failure(&self, policy: &Policy, at_us: i64) -> (IpState, Option<i64>) {
        self.on_failure_limited(policy, policy.ip_max_failures, at_us)
    }

    /// Applies a failure of one account from this IP (the per-(IP, account)
    /// rule, `ip_account_max_failures`).
    pub fn on_account_failure(&self, policy: &Policy, at_us: i64) -> (IpState, Option<i64>) {
        self.on_failure_limited(policy, policy.ip_account_max_failures, at_us)
    }

    fn on_failure_limited(
        &self,
        policy: &Policy,
        max_failures: i32,
        at_us: i64,
    ) -> (IpState, Option<i64>) {
        let mut s = *self;
        if s.is_blocked_at(at_us) {
            return (s, None);
        }
        let in_window = s
            .first_failure_us
            .is_some_and(|first| at_us.saturating_sub(first) < policy.failure_window_us);
        if in_window {
            s.failure_count += 1;
        } else {
            s.failure_count = 1;
            s.first_failure_us = Some(at_us);
        }
        if policy.enabled && s.failure_count >= max_failures {
            let until = at_us.saturating_add(policy.ip_block_duration_us);
            s.blocked_until_us = Some(until);
            s.failure_count = 0;
            s.first_failure_us = None;
            return (s, Some(until));
        }
        (s, None)
    }
}

/// Whether a login may be attempted now, and if not, why and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Allowed,
    /// The account is locked (`None`: permanently).
    AccountLocked {
        until_us: Option<i64>,
    },
    /// The source IP is blocked.
    IpBlocked {
        until_us: i64,
    },
    /// The source IP is blocked for this account.
    IpAccountBlocked {
        until_us: i64,
    },
}

/// The check an application makes before verifying credentials.
pub fn check(
    account: &AccountState,
    ip: Option<&IpState>,
    ip_account: Option<&IpState>,
    at_us: i64,
) -> Access {
    if account.is_locked_at(at_us) {
        return Access::AccountLocked {
            until_us: account.locked_until_us,
        };
    }
    if let Some(ip) = ip.filter(|ip| ip.is_blocked_at(at_us)) {
        return Access::IpBlocked {
            until_us: ip.blocked_until_us.unwrap_or(at_us),
        };
    }
    match ip_account {
        Some(pair) if pair.is_blocked_at(at_us) => Access::IpAccountBlocked {
            until_us: pair.blocked_until_us.unwrap_or(at_us),
        },
        _ => Access::Allowed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_767_225_600_000_000; // 2026-01-01 00:00:00 UTC
    const S: i64 = 1_000_000;

    fn fail_n(
        p: &Policy,
        mut s: AccountState,
        n: i32,
        start: i64,
        step: i64,
    ) -> (AccountState, Vec<FailureOutcome>) {
        let mut out = Vec::new();
        for i in 0..n {
            let (next, o) = s.on_failure(p, start + i64::from(i) * step);
            s = next;
            out.push(o);
        }
        (s, out)
    }

    #[test]
    fn defaults_are_valid_and_within_asvs() {
        let p = Policy::default();
        p.validate().unwrap();
        assert!(p.max_attempts_per_hour() <= 100);
    }

    #[test]
    fn the_fifth_failure_in_the_window_locks_for_fifteen_minutes() {
        let p = Policy::default();
        let (s, out) = fail_n(&p, AccountState::default(), 5, T0, 10 * S);
        assert_eq!(out[3], FailureOutcome::Counted { failures: 4 });
        assert_eq!(
            out[4],
            FailureOutcome::Locked {
                failures: 5,
                rule: LockRule::MaxFailures,
                lock_count: 1,
                until_us: Some(T0 + 40 * S + 15 * 60 * S),
            }
        );
        assert!(s.is_locked_at(T0 + 40 * S + 15 * 60 * S - 1));
        assert!(!s.is_locked_at(T0 + 40 * S + 15 * 60 * S));
    }

    #[test]
    fn failures_outside_the_window_start_a_new_count() {
        let p = Policy::default();
        let (s, _) = fail_n(&p, AccountState::default(), 4, T0, S);
        let (s, o) = s.on_failure(&p, T0 + 16 * 60 * S);
        assert_eq!(o, FailureOutcome::Counted { failures: 1 });
        assert_eq!(s.first_failure_us, Some(T0 + 16 * 60 * S));
    }

    #[test]
    fn failures_while_locked_are_flagged_and_do_not_extend_the_lock() {
        let p = Policy::default();
        let (s, _) = fail_n(&p, AccountState::default(), 5, T0, S);
        let until = s.locked_until_us;
        let (s2, o) = s.on_failure(&p, T0 + 60 * S);
        assert_eq!(o, FailureOutcome::WhileLocked { until_us: until });
        assert_eq!(s2.locked_until_us, until);
        assert_eq!(s2.lock_count, 1);
    }

    #[test]
    fn locks_escalate_by_doubling_up_to_the_maximum() {
        let p = Policy::default();
        let mut s = AccountState::default();
        let mut at = T0;
        let mut durations = Vec::new();
        for _ in 0..9 {
            let (next, out) = fail_n(&p, s, 5, at, S);
            let FailureOutcome::Locked {
                until_us: Some(until),
                ..
            } = out[4]
            else {
                panic!("no lock: {out:?}");
            };
            durations.push((until - (at + 4 * S)) / (60 * S));
            s = next;
            at = until; // the next attack starts when the lock runs out
        }
        assert_eq!(durations, [15, 30, 60, 120, 240, 480, 960, 1440, 1440]);
    }

    #[test]
    fn linear_and_constant_increments() {
        let linear = Policy {
            increment: Increment::Linear,
            ..Policy::default()
        };
        assert_eq!(linear.lock_duration(3), Some(45 * 60 * S));
        let constant = Policy {
            increment: Increment::Constant,
            ..Policy::default()
        };
        assert_eq!(constant.lock_duration(7), Some(15 * 60 * S));
    }

    #[test]
    fn mixed_mode_turns_permanent_after_n_temporary_locks() {
        let p = Policy {
            permanent_after_locks: Some(2),
            ..Policy::default()
        };
        assert_eq!(p.lock_duration(1), Some(15 * 60 * S));
        assert_eq!(p.lock_duration(2), Some(30 * 60 * S));
        assert_eq!(p.lock_duration(3), None);
        let permanent = Policy {
            permanent_after_locks: Some(1),
            ..Policy::default()
        };
        let (s, out) = fail_n(&permanent, AccountState::default(), 5, T0, S);
        assert!(matches!(
            out[4],
            FailureOutcome::Locked { until_us: None, .. }
        ));
        assert!(s.is_locked_at(i64::MAX - 1));
    }

    #[test]
    fn quick_succession_locks_at_once() {
        let p = Policy {
            quick_failure_interval_us: Some(S),
            ..Policy::default()
        };
        let (s, o1) = AccountState::default().on_failure(&p, T0);
        assert_eq!(o1, FailureOutcome::Counted { failures: 1 });
        let (_, o2) = s.on_failure(&p, T0 + S / 2);
        assert!(matches!(
            o2,
            FailureOutcome::Locked {
                rule: LockRule::QuickSuccession,
                ..
            }
        ));
    }

    #[test]
    fn a_disabled_policy_counts_but_never_locks() {
        let p = Policy {
            enabled: false,
            ..Policy::default()
        };
        let (s, out) = fail_n(&p, AccountState::default(), 50, T0, S);
        assert_eq!(out[49], FailureOutcome::Counted { failures: 50 });
        assert!(!s.locked);
    }

    #[test]
    fn success_reports_what_preceded_it_and_clears_failures() {
        let p = Policy::default();
        let (s, _) = fail_n(&p, AccountState::default(), 3, T0, S);
        let (s, facts) = s.on_success(T0 + 10 * S);
        assert_eq!(
            facts,
            SuccessFacts {
                preceding_failures: 3,
                was_locked: false
            }
        );
        assert_eq!(s.failure_count, 0);
        // A success while locked is a signal and does not unlock.
        let (locked, _) = fail_n(&p, AccountState::default(), 5, T0, S);
        let (locked, _) = fail_n(&p, locked, 2, T0 + 30 * S, S);
        let (after, facts) = locked.on_success(T0 + 60 * S);
        assert!(facts.was_locked);
        assert_eq!(
            facts.preceding_failures, 7,
            "the failures that led to the lock and those made while locked"
        );
        assert!(after.is_locked_at(T0 + 61 * S));
    }

    #[test]
    fn preceding_failures_do_not_age_with_the_window() {
        let p = Policy::default();
        let (s, _) = fail_n(&p, AccountState::default(), 2, T0, S);
        let (s, _) = fail_n(&p, s, 1, T0 + 3 * 60 * 60 * S, S);
        assert_eq!(s.failure_count, 1, "the window started afresh");
        let (s, facts) = s.on_success(T0 + 4 * 60 * 60 * S);
        assert_eq!(facts.preceding_failures, 3);
        assert_eq!(s.failures_since_success, 0);
        let (s, _) = fail_n(&p, s, 2, T0 + 5 * 60 * 60 * S, S);
        assert_eq!(s.on_reset().failures_since_success, 0);
    }

    #[test]
    fn reset_clears_the_lock_and_keeps_the_escalation_count() {
        let p = Policy::default();
        let (s, _) = fail_n(&p, AccountState::default(), 5, T0, S);
        let r = s.on_reset();
        assert!(!r.is_locked_at(T0 + 5 * S));
        assert_eq!(r.lock_count, 1);
        let (_, out) = fail_n(&p, r, 5, T0 + 10 * S, S);
        assert!(matches!(
            out[4],
            FailureOutcome::Locked { lock_count: 2, .. }
        ));
    }

    #[test]
    fn an_ip_failing_across_many_accounts_is_blocked() {
        let p = Policy::default();
        let mut ip = IpState::default();
        let mut blocked = None;
        for i in 0..100 {
            let (next, b) = ip.on_failure(&p, T0 + i * S);
            ip = next;
            if let Some(until) = b {
                blocked = Some((i, until));
                break;
            }
        }
        assert_eq!(blocked, Some((99, T0 + 99 * S + 60 * 60 * S)));
        assert_eq!(
            check(&AccountState::default(), Some(&ip), None, T0 + 100 * S),
            Access::IpBlocked {
                until_us: T0 + 99 * S + 60 * 60 * S
            }
        );
        assert_eq!(
            check(
                &AccountState::default(),
                Some(&ip),
                None,
                T0 + 2 * 60 * 60 * S
            ),
            Access::Allowed
        );
    }

    #[test]
    fn one_ip_failing_on_one_account_is_blocked_for_that_account() {
        let p = Policy {
            max_failures: 50,
            lock_duration_us: 60 * 60 * S,
            ..Policy::default()
        };
        let mut pair = IpState::default();
        let mut blocked = None;
        for i in 0..10 {
            let (next, b) = pair.on_account_failure(&p, T0 + i * S);
            pair = next;
            blocked = blocked.or(b);
        }
        assert_eq!(blocked, Some(T0 + 9 * S + 60 * 60 * S));
        assert!(matches!(
            check(&AccountState::default(), None, Some(&pair), T0 + 10 * S),
            Access::IpAccountBlocked { .. }
        ));
    }

    #[test]
    fn invalid_policies_are_refused() {
        let bad = |p: Policy| p.validate().unwrap_err();
        assert_eq!(
            bad(Policy {
                max_failures: 0,
                ..Policy::default()
            }),
            PolicyError::MaxFailures(0)
        );
        assert_eq!(
            bad(Policy {
                lock_duration_us: 0,
                ..Policy::default()
            }),
            PolicyError::NotPositive("lock_duration")
        );
        assert_eq!(
            bad(Policy {
                max_lock_duration_us: 60 * S,
                ..Policy::default()
            }),
            PolicyError::MaxBelowBase
        );
        assert!(matches!(
            bad(Policy {
                max_failures: 100,
                lock_duration_us: 60 * S,
                ..Policy::default()
            }),
            PolicyError::TooPermissive(_)
        ));
        assert!("sometimes".parse::<Increment>().is_err());
    }
}

/// A log id derived from another (a UUID of version 8, RFC 9562): the
/// `account_locked` event that a failure triggers gets the same id however
/// often the failure is retried.
pub fn derived_log_id(trigger: &[u8; 16], purpose: &str) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"pg_authaudit.derived.v1.");
    h.update(purpose.as_bytes());
    h.update([0u8]);
    h.update(trigger);
    let d = h.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&d[..16]);
    id[6] = (id[6] & 0x0f) | 0x80; // version 8
    id[8] = (id[8] & 0x3f) | 0x80; // RFC 9562 variant
    id
}

#[cfg(test)]
mod derived_tests {
    use super::derived_log_id;

    #[test]
    fn derived_ids_are_stable_distinct_and_version_8() {
        let a = derived_log_id(&[1; 16], "account_locked");
        assert_eq!(a, derived_log_id(&[1; 16], "account_locked"));
        assert_ne!(a, derived_log_id(&[2; 16], "account_locked"));
        assert_ne!(a, derived_log_id(&[1; 16], "other"));
        assert_eq!(a[6] >> 4, 8);
        assert_eq!(a[8] >> 6, 0b10);
    }
}
