//! Campaign detections over the stream of recorded events, without I/O.
//!
//! Each rule watches a sliding window of event time (`occurred_at`) per
//! key and raises one alert when its threshold is crossed; the key then
//! stays quiet until it has seen no matching event for a whole window, so
//! an ongoing campaign is one alert, not one per event:
//!
//! | rule | key | raised when, within the window |
//! |---|---|---|
//! | password spray | tenant, source IP | failures from the source against `spray_accounts` distinct accounts |
//! | credential stuffing | tenant | failures against `stuffing_accounts` distinct accounts from `stuffing_sources` distinct sources, at most `stuffing_max_attempts` per account on average |
//! | distributed brute force | tenant, account | failures against the account from `distributed_sources` distinct sources |
//! | success after failures | each success | a `login_success` after `success_after_failures` failures (its `preceding_failures`) |
//! | success while locked | each success | a `login_success` while the account was locked (`was_locked`) |
//! | lockout storm | tenant | `storm_lockouts` distinct accounts locked (`account_locked`) |
//!
//! Events are fed in commit order; each tenant's events are taken once by
//! seq, so a replay after a restart raises nothing twice.
//!
//! Accounts and sources are keyed as the lockout engine keys them, by the
//! tenant's [`KeyRules`]: `Alice`, ` alice` and `ＡＬＩＣＥ` are one account
//! under canonical folding, and the addresses of one IPv6 prefix one
//! source. Alerts name the keys.
//!
//! Memory is bounded ([`MAX_KEYS`] windows per rule), and eviction keeps
//! the heavy keys: a key whose window has crossed half its rule's
//! threshold is never evicted for keys below half, however many of them
//! a flood brings (see [`MAX_KEYS`] for the exact guarantee).

use crate::identity::KeyRules;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// A rule's thresholds (one set per tenant; see the sidecar's detection
/// configuration).
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// The window of every windowed rule, milliseconds of event time.
    pub window_ms: i64,
    pub spray_accounts: usize,
    pub stuffing_accounts: usize,
    pub stuffing_sources: usize,
    pub stuffing_max_attempts: f64,
    pub distributed_sources: usize,
    pub success_after_failures: i32,
    pub storm_lockouts: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            window_ms: 10 * 60 * 1000,
            spray_accounts: 10,
            stuffing_accounts: 20,
            stuffing_sources: 10,
            stuffing_max_attempts: 3.0,
            distributed_sources: 5,
            success_after_failures: 3,
            storm_lockouts: 5,
        }
    }
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    PasswordSpray,
    CredentialStuffing,
    DistributedBruteForce,
    SuccessAfterFailures,
    SuccessWhileLocked,
    LockoutStorm,
}

impl Rule {
    pub const ALL: [Rule; 6] = [
        Rule::PasswordSpray,
        Rule::CredentialStuffing,
        Rule::DistributedBruteForce,
        Rule::SuccessAfterFailures,
        Rule::SuccessWhileLocked,
        Rule::LockoutStorm,
    ];

    /// Its name in documents and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::PasswordSpray => "password_spray",
            Rule::CredentialStuffing => "credential_stuffing",
            Rule::DistributedBruteForce => "distributed_brute_force",
            Rule::SuccessAfterFailures => "success_after_failures",
            Rule::SuccessWhileLocked => "success_while_locked",
            Rule::LockoutStorm => "lockout_storm",
        }
    }

    /// CEF signature id, name and severity.
    pub fn cef(self) -> (&'static str, &'static str, u8) {
        match self {
            Rule::PasswordSpray => ("201", "Password spray", 8),
            Rule::CredentialStuffing => ("202", "Credential stuffing", 8),
            Rule::DistributedBruteForce => ("203", "Distributed brute force", 8),
            Rule::SuccessAfterFailures => ("204", "Login succeeded after failures", 7),
            Rule::SuccessWhileLocked => ("205", "Login succeeded while locked", 9),
            Rule::LockoutStorm => ("206", "Lockout storm", 7),
        }
    }
}

/// One recorded event, as the detector sees it.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub tenant: &'a str,
    pub seq: i64,
    pub event_type: &'a str,
    /// The `user_id` as recorded (the detector keys it).
    pub account: &'a str,
    /// The `ip` as recorded, a host address (the detector keys it).
    pub source: Option<&'a str>,
    pub at_ms: i64,
    pub preceding_failures: Option<i32>,
    pub was_locked: Option<bool>,
}

/// The most accounts or sources an alert names (the count is exact).
pub const MAX_NAMED: usize = 100;

/// The most events a window keeps: beyond, the oldest are forgotten (a
/// key that sees this many events without crossing its threshold repeats
/// the same few accounts or sources).
pub const MAX_WINDOW_EVENTS: usize = 256;

/// The most keys a rule keeps windows for, so a flood of sources or
/// accounts cannot grow the detector's memory without bound. Beyond, half
/// are kept: the heaviest, ranked by (past half the threshold, progress
/// towards the threshold, most recent event); ties cut arbitrarily.
///
/// Guarantee: a key whose window holds more than half its threshold
/// (3 of 5 sources for a distributed brute force, 6 of 10 accounts for a
/// spray) is evicted only when `MAX_KEYS / 2` other keys are at least as
/// far towards their own thresholds. Keys below half never evict it,
/// whatever their number: 100,000 junk accounts with one failure each
/// leave it in place, and its next events complete the alert. A key below
/// half can be evicted by a flood (it then starts a new window); the
/// flood itself is what the spray and stuffing rules see. Windows idle
/// for longer than the window are dropped by the sweep first.
pub const MAX_KEYS: usize = 10_000;

/// A raised alert and the evidence it rests on.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub rule: Rule,
    pub tenant: String,
    /// Accounts and sources involved, sorted (at most [`MAX_NAMED`]).
    pub accounts: Vec<String>,
    pub sources: Vec<String>,
    pub account_count: usize,
    pub source_count: usize,
    /// Event time of the first and last event of the evidence.
    pub first_ms: i64,
    pub last_ms: i64,
    /// Seq of the first and last event of the evidence (in the tenant's chain).
    pub first_seq: i64,
    pub last_seq: i64,
    /// Events the evidence holds.
    pub events: u64,
}

impl Alert {
    /// Its identity: the same evidence always gives the same id, so a
    /// replay writes the same alert again, never another.
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.tenant, self.rule.as_str(), self.last_seq)
    }
}

/// One event of a window: its time, seq, and the account and source.
#[derive(Debug, Clone)]
struct Entry {
    at_ms: i64,
    seq: i64,
    /// Shared by the windows the event enters (one allocation each).
    account: Arc<str>,
    source: Arc<str>,
}

/// A sliding window with distinct counts of accounts and sources.
#[derive(Debug, Default)]
struct Window {
    entries: VecDeque<Entry>,
    accounts: HashMap<Arc<str>, usize>,
    sources: HashMap<Arc<str>, usize>,
    newest_ms: i64,
    /// Quiet until this event time after an alert.
    quiet_until_ms: Option<i64>,
    /// The threshold of the count its rule watches (kept for eviction).
    goal: usize,
}

fn bump(map: &mut HashMap<Arc<str>, usize>, key: &Arc<str>) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.clone(), 1);
        }
    }
}

/// Distinct non-empty keys (the empty key counts events without a source).
fn named_count(map: &HashMap<Arc<str>, usize>) -> usize {
    map.len() - usize::from(map.contains_key(""))
}

fn drop_one(map: &mut HashMap<Arc<str>, usize>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Window {
    /// Adds an event and forgets what fell out of the window; returns
    /// whether the key may alert (not quiet after an earlier alert).
    fn push(&mut self, e: Entry, window_ms: i64) -> bool {
        self.newest_ms = self.newest_ms.max(e.at_ms);
        bump(&mut self.accounts, &e.account);
        bump(&mut self.sources, &e.source);
        let at = e.at_ms;
        self.entries.push_back(e);
        self.expire(self.newest_ms - window_ms);
        while self.entries.len() > MAX_WINDOW_EVENTS {
            let f = self.entries.pop_front().expect("over the cap");
            drop_one(&mut self.accounts, &f.account);
            drop_one(&mut self.sources, &f.source);
        }
        match self.quiet_until_ms {
            Some(q) if at < q => {
                // The campaign goes on: stay quiet a window past it.
                self.quiet_until_ms = Some(q.max(at + window_ms));
                false
            }
            _ => {
                self.quiet_until_ms = None;
                true
            }
        }
    }

    fn expire(&mut self, before_ms: i64) {
        while self.entries.front().is_some_and(|f| f.at_ms < before_ms) {
            let f = self.entries.pop_front().expect("checked");
            drop_one(&mut self.accounts, &f.account);
            drop_one(&mut self.sources, &f.source);
        }
    }

    fn alert(&mut self, rule: Rule, tenant: &str, window_ms: i64) -> Alert {
        let named = |m: &HashMap<Arc<str>, usize>| {
            let mut v: Vec<String> = m
                .keys()
                .filter(|k| !k.is_empty())
                .map(|k| k.to_string())
                .collect();
            v.sort();
            v.truncate(MAX_NAMED);
            v
        };
        let first = self.entries.front().expect("an alert has evidence");
        let last = self.entries.back().expect("an alert has evidence");
        let a = Alert {
            rule,
            tenant: tenant.to_string(),
            accounts: named(&self.accounts),
            sources: named(&self.sources),
            account_count: named_count(&self.accounts),
            source_count: named_count(&self.sources),
            first_ms: self
                .entries
                .iter()
                .map(|e| e.at_ms)
                .min()
                .unwrap_or(first.at_ms),
            last_ms: self.newest_ms,
            first_seq: self
                .entries
                .iter()
                .map(|e| e.seq)
                .min()
                .unwrap_or(first.seq),
            last_seq: last.seq,
            events: self.entries.len() as u64,
        };
        self.quiet_until_ms = Some(self.newest_ms + window_ms);
        a
    }

    fn idle_since(&self, before_ms: i64) -> bool {
        self.newest_ms < before_ms && self.quiet_until_ms.is_none_or(|q| q < before_ms)
    }
}

/// Keeps the heavier half of `map` when it holds more than [`MAX_KEYS`]
/// windows (see there); `count` is the distinct count the rule watches.
/// Returns how many windows were dropped.
fn bound<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, Window>,
    count: impl Fn(&Window) -> usize,
) -> usize {
    if map.len() <= MAX_KEYS {
        return 0;
    }
    let rank = |w: &Window| {
        let (n, goal) = (count(w), w.goal.max(1));
        (2 * n > goal, n * 1_000_000 / goal, w.newest_ms)
    };
    let mut ranks: Vec<(bool, usize, i64)> = map.values().map(rank).collect();
    let keep = MAX_KEYS / 2;
    let at = ranks.len() - keep;
    let (_, cut, _) = ranks.select_nth_unstable(at);
    let cut = *cut;
    // Keys ranked as the cut are kept up to the half, in any order.
    let mut ties = keep.saturating_sub(ranks.iter().filter(|r| **r > cut).count());
    let before = map.len();
    map.retain(|_, w| {
        let r = rank(w);
        if r > cut {
            return true;
        }
        let tie = r == cut && ties > 0;
        ties -= usize::from(tie);
        tie
    });
    before - map.len()
}

/// `map`'s window for `tenant` and `part` (a source or an account),
/// created if new; the key is joined in `scratch` (tenant ids hold no NUL).
fn window<'m>(
    map: &'m mut HashMap<String, Window>,
    scratch: &mut String,
    tenant: &str,
    part: &str,
) -> &'m mut Window {
    scratch.clear();
    scratch.push_str(tenant);
    scratch.push('\0');
    scratch.push_str(part);
    keyed_window(map, scratch)
}

/// `map`'s window for `key`, created if new (allocating only then).
fn keyed_window<'m>(map: &'m mut HashMap<String, Window>, key: &str) -> &'m mut Window {
    if !map.contains_key(key) {
        map.insert(key.to_string(), Window::default());
    }
    map.get_mut(key).expect("just inserted")
}

/// Every rule's windows, for every tenant.
#[derive(Debug, Default)]
pub struct Detector {
    default: Thresholds,
    per_tenant: HashMap<String, Thresholds>,
    /// The key rules of tenants with a policy of their own, and of the rest.
    default_keys: KeyRules,
    keys: HashMap<String, KeyRules>,
    /// Windows dropped to stay within [`MAX_KEYS`].
    evicted: u64,
    /// The last seq taken per tenant.
    taken: HashMap<String, i64>,
    /// Keyed by tenant and source, joined by [`window`].
    spray: HashMap<String, Window>,
    stuffing: HashMap<String, Window>,
    /// Keyed by tenant and account, joined by [`window`].
    distributed: HashMap<String, Window>,
    storm: HashMap<String, Window>,
    /// The buffer keys are joined in (a key already held costs no
    /// allocation).
    scratch: String,
    since_sweep: u64,
    newest_ms: i64,
}

impl Detector {
    pub fn new(default: Thresholds, per_tenant: HashMap<String, Thresholds>) -> Detector {
        Detector {
            default,
            per_tenant,
            ..Detector::default()
        }
    }

    /// Sets the key rules: `default` for every tenant without rules of its
    /// own in `per_tenant` (as the lockout engine reads `lockout_policy`).
    pub fn set_key_rules(&mut self, default: KeyRules, per_tenant: HashMap<String, KeyRules>) {
        self.default_keys = default;
        self.keys = per_tenant;
    }

    /// The key rules of `tenant`.
    pub fn key_rules(&self, tenant: &str) -> KeyRules {
        self.keys.get(tenant).copied().unwrap_or(self.default_keys)
    }

    /// Windows dropped so far to stay within [`MAX_KEYS`].
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// The thresholds of `tenant`.
    pub fn thresholds(&self, tenant: &str) -> &Thresholds {
        self.per_tenant.get(tenant).unwrap_or(&self.default)
    }

    /// The longest window of any tenant.
    pub fn longest_window_ms(&self) -> i64 {
        self.per_tenant
            .values()
            .map(|t| t.window_ms)
            .chain([self.default.window_ms])
            .max()
            .unwrap_or(0)
    }

    /// Takes one event; returns the alerts it raises. An event of a seq
    /// already taken for its tenant raises nothing.
    pub fn observe(&mut self, e: &Event<'_>) -> Vec<Alert> {
        match self.taken.get_mut(e.tenant) {
            Some(last) if e.seq <= *last => return Vec::new(),
            Some(last) => *last = e.seq,
            None => {
                self.taken.insert(e.tenant.to_string(), e.seq);
            }
        }
        let t = self.thresholds(e.tenant).clone();
        let w = t.window_ms;
        let mut out = Vec::new();
        let rules = self.key_rules(e.tenant);
        let account_key = rules.account(e.account);
        let source_key = e.source.map(|s| rules.source(s));
        let (account, source): (Arc<str>, Arc<str>) = (
            (*account_key).into(),
            source_key.as_deref().unwrap_or_default().into(),
        );
        let entry = || Entry {
            at_ms: e.at_ms,
            seq: e.seq,
            account: account.clone(),
            source: source.clone(),
        };
        self.newest_ms = self.newest_ms.max(e.at_ms);
        match e.event_type {
            "login_failed" => {
                if let Some(src) = source_key.as_deref() {
                    let spray = window(&mut self.spray, &mut self.scratch, e.tenant, src);
                    spray.goal = t.spray_accounts;
                    if spray.push(entry(), w) && spray.accounts.len() >= t.spray_accounts {
                        out.push(spray.alert(Rule::PasswordSpray, e.tenant, w));
                    }
                    let dist = window(
                        &mut self.distributed,
                        &mut self.scratch,
                        e.tenant,
                        &account_key,
                    );
                    dist.goal = t.distributed_sources;
                    if dist.push(entry(), w) && dist.sources.len() >= t.distributed_sources {
                        out.push(dist.alert(Rule::DistributedBruteForce, e.tenant, w));
                    }
                }
                let stuff = keyed_window(&mut self.stuffing, e.tenant);
                let may = stuff.push(entry(), w);
                let accounts = stuff.accounts.len();
                let sources = named_count(&stuff.sources);
                if may
                    && accounts >= t.stuffing_accounts
                    && sources >= t.stuffing_sources
                    && stuff.entries.len() as f64 <= accounts as f64 * t.stuffing_max_attempts
                {
                    out.push(stuff.alert(Rule::CredentialStuffing, e.tenant, w));
                }
            }
            "login_success" => {
                let single = |rule| Alert {
                    rule,
                    tenant: e.tenant.to_string(),
                    accounts: vec![account.to_string()],
                    sources: source_key
                        .as_deref()
                        .map(|s| vec![s.to_string()])
                        .unwrap_or_default(),
                    account_count: 1,
                    source_count: usize::from(e.source.is_some()),
                    first_ms: e.at_ms,
                    last_ms: e.at_ms,
                    first_seq: e.seq,
                    last_seq: e.seq,
                    events: 1 + e.preceding_failures.unwrap_or(0).max(0) as u64,
                };
                if e.was_locked == Some(true) {
                    out.push(single(Rule::SuccessWhileLocked));
                } else if e.preceding_failures.unwrap_or(0) >= t.success_after_failures {
                    out.push(single(Rule::SuccessAfterFailures));
                }
            }
            "account_locked" => {
                let storm = keyed_window(&mut self.storm, e.tenant);
                if storm.push(entry(), w) && storm.accounts.len() >= t.storm_lockouts {
                    out.push(storm.alert(Rule::LockoutStorm, e.tenant, w));
                }
            }
            _ => {}
        }
        self.since_sweep += 1;
        if self.since_sweep >= 10_000 {
            self.sweep();
        }
        self.evicted += bound(&mut self.spray, |w| w.accounts.len()) as u64;
        self.evicted += bound(&mut self.distributed, |w| w.sources.len()) as u64;
        out
    }

    /// Forgets the windows of keys quiet for longer than the longest
    /// window (memory stays proportional to the keys active lately).
    pub fn sweep(&mut self) {
        self.since_sweep = 0;
        let before = self.newest_ms - self.longest_window_ms();
        self.spray.retain(|_, w| !w.idle_since(before));
        self.stuffing.retain(|_, w| !w.idle_since(before));
        self.distributed.retain(|_, w| !w.idle_since(before));
        self.storm.retain(|_, w| !w.idle_since(before));
    }

    /// Windows held (for the memory bound).
    pub fn windows(&self) -> usize {
        self.spray.len() + self.stuffing.len() + self.distributed.len() + self.storm.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Feed {
        d: Detector,
        seq: i64,
    }

    impl Feed {
        fn new(t: Thresholds) -> Feed {
            Feed {
                d: Detector::new(t, HashMap::new()),
                seq: 0,
            }
        }

        fn ev(&mut self, ty: &str, account: &str, source: &str, at_s: i64) -> Vec<Alert> {
            self.seq += 1;
            self.d.observe(&Event {
                tenant: "acme",
                seq: self.seq,
                event_type: ty,
                account,
                source: (!source.is_empty()).then_some(source),
                at_ms: at_s * 1000,
                preceding_failures: None,
                was_locked: None,
            })
        }
    }

    fn rules(a: &[Alert]) -> Vec<Rule> {
        a.iter().map(|a| a.rule).collect()
    }

    #[test]
    fn a_spray_from_one_source_alerts_once_with_its_accounts() {
        let mut f = Feed::new(Thresholds::default());
        let mut raised = Vec::new();
        for i in 0..30 {
            raised.extend(f.ev("login_failed", &format!("user{i:02}"), "198.51.100.7", i));
        }
        assert_eq!(
            rules(&raised),
            [Rule::PasswordSpray],
            "one campaign, one alert"
        );
        let a = &raised[0];
        assert_eq!(a.account_count, 10);
        assert_eq!(a.accounts.first().map(String::as_str), Some("user00"));
        assert_eq!(a.sources, ["198.51.100.7"]);
        assert_eq!((a.first_seq, a.last_seq, a.events), (1, 10, 10));
        assert_eq!(a.id(), "acme/password_spray/10");
    }

    #[test]
    fn a_quiet_window_rearms_a_key() {
        let mut f = Feed::new(Thresholds::default());
        let mut n = 0;
        for round in 0..2 {
            for i in 0..10 {
                n += f
                    .ev(
                        "login_failed",
                        &format!("u{i}"),
                        "203.0.113.1",
                        round * 3600 + i,
                    )
                    .len();
            }
        }
        assert_eq!(n, 2, "two campaigns an hour apart");
    }

    #[test]
    fn failures_spread_over_more_than_the_window_raise_nothing() {
        let mut f = Feed::new(Thresholds::default());
        for i in 0..50 {
            // One account a minute from one source; 10 minutes hold 10.
            assert!(f
                .ev("login_failed", &format!("u{i}"), "203.0.113.1", i * 70)
                .is_empty());
        }
    }

    #[test]
    fn many_sources_against_one_account_are_a_distributed_brute_force() {
        let mut f = Feed::new(Thresholds::default());
        let mut raised = Vec::new();
        for i in 0..8 {
            raised.extend(f.ev("login_failed", "alice", &format!("10.0.0.{i}"), i));
        }
        assert_eq!(rules(&raised), [Rule::DistributedBruteForce]);
        assert_eq!(raised[0].accounts, ["alice"]);
        assert_eq!(raised[0].source_count, 5);
    }

    #[test]
    fn stuffing_is_many_accounts_from_many_sources_with_few_attempts_each() {
        let mut f = Feed::new(Thresholds::default());
        let mut raised = Vec::new();
        for i in 0..25 {
            raised.extend(f.ev(
                "login_failed",
                &format!("victim{i}"),
                &format!("192.0.2.{}", i % 12),
                i,
            ));
        }
        assert_eq!(rules(&raised), [Rule::CredentialStuffing]);
        assert_eq!(raised[0].account_count, 20);
        assert_eq!(raised[0].source_count, 12);
        // Many attempts per account is not stuffing.
        let mut g = Feed::new(Thresholds::default());
        let mut raised = Vec::new();
        for i in 0..20 {
            for k in 0..5 {
                let s = format!("192.0.2.{}", (i * 5 + k) % 10);
                raised.extend(g.ev("login_failed", &format!("v{i}"), &s, i * 5 + k));
            }
        }
        assert!(
            !rules(&raised).contains(&Rule::CredentialStuffing),
            "{raised:?}"
        );
    }

    #[test]
    fn successes_after_failures_or_while_locked_alert_each_time() {
        let mut d = Detector::new(Thresholds::default(), HashMap::new());
        let ev = |seq, pf, locked| Event {
            tenant: "acme",
            seq,
            event_type: "login_success",
            account: "bob",
            source: Some("10.1.1.1"),
            at_ms: seq * 1000,
            preceding_failures: Some(pf),
            was_locked: Some(locked),
        };
        assert!(d.observe(&ev(1, 2, false)).is_empty());
        assert_eq!(
            rules(&d.observe(&ev(2, 3, false))),
            [Rule::SuccessAfterFailures]
        );
        assert_eq!(
            rules(&d.observe(&ev(3, 0, true))),
            [Rule::SuccessWhileLocked]
        );
        // A replay of seq 2 raises nothing.
        assert!(d.observe(&ev(2, 3, false)).is_empty());
    }

    #[test]
    fn a_lockout_storm_alerts_per_tenant() {
        let mut f = Feed::new(Thresholds::default());
        let mut raised = Vec::new();
        for i in 0..7 {
            raised.extend(f.ev("account_locked", &format!("a{i}"), "", i));
        }
        assert_eq!(rules(&raised), [Rule::LockoutStorm]);
        assert_eq!(raised[0].account_count, 5);
        assert!(raised[0].sources.is_empty());
    }

    #[test]
    fn thresholds_are_per_tenant() {
        let strict = Thresholds {
            spray_accounts: 3,
            ..Thresholds::default()
        };
        let mut d = Detector::new(
            Thresholds::default(),
            HashMap::from([("strict".to_string(), strict)]),
        );
        let mut n = HashMap::new();
        for tenant in ["strict", "lax"] {
            for i in 0..5 {
                let a = d.observe(&Event {
                    tenant,
                    seq: i + 1,
                    event_type: "login_failed",
                    account: &format!("u{i}"),
                    source: Some("10.9.9.9"),
                    at_ms: i * 1000,
                    preceding_failures: None,
                    was_locked: None,
                });
                *n.entry(tenant).or_insert(0) += a.len();
            }
        }
        assert_eq!(n["strict"], 1);
        assert_eq!(n["lax"], 0);
    }

    #[test]
    fn quiet_keys_are_forgotten() {
        let mut f = Feed::new(Thresholds::default());
        for i in 0..1000 {
            f.ev(
                "login_failed",
                &format!("u{i}"),
                &format!("10.{}.{}.1", i / 250, i % 250),
                i * 60,
            );
        }
        f.d.sweep();
        // Ten minutes of one event a minute: about ten keys per rule.
        assert!(f.d.windows() < 40, "{} windows", f.d.windows());
    }

    fn failed(d: &mut Detector, tenant: &str, seq: i64, account: &str, source: &str) -> Vec<Alert> {
        d.observe(&Event {
            tenant,
            seq,
            event_type: "login_failed",
            account,
            source: Some(source),
            at_ms: seq,
            preceding_failures: None,
            was_locked: None,
        })
    }

    #[test]
    fn spellings_of_one_account_are_one_key_as_in_the_lockout_engine() {
        use crate::identity::Folding;
        let spellings = ["Alice", "alice ", " ALICE", "ａｌｉｃｅ", "al\u{00AD}ice"];
        let mut d = Detector::new(Thresholds::default(), HashMap::new());
        let exact = KeyRules {
            folding: Folding::Exact,
            ..KeyRules::default()
        };
        d.set_key_rules(
            KeyRules::default(),
            HashMap::from([("exact".to_string(), exact)]),
        );
        for tenant in ["acme", "exact"] {
            let mut raised = Vec::new();
            for i in 0..20 {
                let who = spellings[i % spellings.len()];
                let from = format!("198.51.100.{}", i + 1);
                raised.extend(failed(&mut d, tenant, i as i64 + 1, who, &from));
            }
            let dist: Vec<&Alert> = raised
                .iter()
                .filter(|a| a.rule == Rule::DistributedBruteForce)
                .collect();
            if tenant == "acme" {
                assert_eq!(dist.len(), 1, "{raised:?}");
                assert_eq!(dist[0].accounts, ["alice"]);
                assert_eq!(dist[0].source_count, 5);
            } else {
                // Exact keys: five accounts of four sources each.
                assert!(dist.is_empty(), "{raised:?}");
            }
        }
    }

    #[test]
    fn the_addresses_of_one_ipv6_prefix_are_one_source() {
        let mut d = Detector::new(Thresholds::default(), HashMap::new());
        let mut raised = Vec::new();
        for i in 0..8 {
            let from = format!("2001:db8:1:2::{:x}", i + 1);
            raised.extend(failed(&mut d, "acme", i + 1, "bob", &from));
        }
        assert!(raised.is_empty(), "one /64 is one source: {raised:?}");
        for i in 0..5 {
            let from = format!("2001:db8:{:x}::1", i + 10);
            raised.extend(failed(&mut d, "acme", 100 + i, "bob", &from));
        }
        assert_eq!(rules(&raised), [Rule::DistributedBruteForce]);
        assert!(raised[0].sources.contains(&"2001:db8:1:2::/64".to_string()));
        // A spray from rotating addresses of one /64 is one source's spray.
        let mut raised = Vec::new();
        for i in 0..12 {
            let from = format!("2001:db8:9:9::{:x}", i + 1);
            raised.extend(failed(&mut d, "acme", 200 + i, &format!("u{i}"), &from));
        }
        assert_eq!(rules(&raised), [Rule::PasswordSpray]);
        assert_eq!(raised[0].sources, ["2001:db8:9:9::/64"]);
    }

    /// The guarantee of [`MAX_KEYS`]: 100,000 junk keys, each with one
    /// failure, do not evict a key past half its threshold; its next events
    /// raise its alert.
    #[test]
    fn a_flood_of_junk_keys_cannot_evict_a_key_past_half_its_threshold() {
        let mut d = Detector::new(Thresholds::default(), HashMap::new());
        let mut seq = 0;
        let mut next = || {
            seq += 1;
            seq
        };
        let mut raised = Vec::new();
        // Three of the five sources a distributed brute force needs, and six
        // of the ten accounts of a spray.
        for i in 0..3 {
            raised.extend(failed(
                &mut d,
                "acme",
                next(),
                "victim",
                &format!("192.0.2.{i}"),
            ));
        }
        for i in 0..6 {
            raised.extend(failed(
                &mut d,
                "acme",
                next(),
                &format!("target{i}"),
                "203.0.113.66",
            ));
        }
        for j in 0..100_000u32 {
            let junk = format!("junk{j}");
            let from = format!("10.{}.{}.{}", j >> 16, (j >> 8) & 255, j & 255);
            raised.extend(failed(&mut d, "acme", next(), &junk, &from));
        }
        assert!(
            d.evicted() > 150_000,
            "the flood was evicted: {}",
            d.evicted()
        );
        assert!(d.distributed.len() <= MAX_KEYS && d.spray.len() <= MAX_KEYS);
        raised.clear();
        for i in 3..5 {
            raised.extend(failed(
                &mut d,
                "acme",
                next(),
                "victim",
                &format!("192.0.2.{i}"),
            ));
        }
        for i in 6..10 {
            raised.extend(failed(
                &mut d,
                "acme",
                next(),
                &format!("target{i}"),
                "203.0.113.66",
            ));
        }
        let dist: Vec<&Alert> = raised
            .iter()
            .filter(|a| a.rule == Rule::DistributedBruteForce)
            .collect();
        assert_eq!(dist.len(), 1, "{raised:?}");
        assert_eq!(dist[0].accounts, ["victim"]);
        assert_eq!(dist[0].source_count, 5);
        let spray: Vec<&Alert> = raised
            .iter()
            .filter(|a| a.rule == Rule::PasswordSpray)
            .collect();
        assert_eq!(spray.len(), 1, "{raised:?}");
        assert_eq!(spray[0].sources, ["203.0.113.66"]);
        assert_eq!(spray[0].account_count, 10);
    }

    #[test]
    fn a_flood_of_sources_keeps_memory_bounded() {
        let mut f = Feed::new(Thresholds::default());
        for i in 0..(3 * MAX_KEYS) {
            f.ev(
                "login_failed",
                &format!("u{}", i % 7),
                &format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
                0,
            );
        }
        assert!(f.d.spray.len() <= MAX_KEYS, "{}", f.d.spray.len());
        // One hot key: its window keeps the newest events only.
        for i in 0..1000 {
            f.ev("login_failed", "same", "192.0.2.1", i);
        }
        let w = &f.d.spray["acme\u{0}192.0.2.1"];
        assert_eq!(w.entries.len(), MAX_WINDOW_EVENTS);
        assert_eq!(w.accounts.len(), 1);
    }
}
