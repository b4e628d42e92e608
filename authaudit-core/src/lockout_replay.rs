//! Lockout decisions in event-time order (docs/lockout.md, "Event time").
//!
//! The live engine decides each event as it arrives. History imported late,
//! or files imported newest first, arrive out of order; the decisions of a
//! tenant are therefore defined as those of the engine applied to the
//! tenant's events sorted by `(occurred_at, log_id)`, whatever order they
//! were recorded in. This module is that definition: the investigation
//! functions report it and `authaudit.rebuild_lockout` writes its final
//! state into the lockout tables.
//!
//! Each event goes through the same [`step`] as a live event, with the same
//! conventions for which rows exist: a failure creates its account's row
//! and, with a source IP, the source's and the (source, account) pair's;
//! the first event of an organisation creates its account's row too (the
//! account belongs to that organisation); a success or reset changes an
//! account's row only when it has one.

use crate::engine_state::{AccountEntry, AccountRowState, EngineState};
use crate::identity::SourceKey;
use crate::lockout::{AccountState, IpState, Policy};
use crate::lockout_effect::{step, Before, Effect, Kind};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;
use std::net::IpAddr;

/// One recorded event the engine acts on, with the keys its tenant's rules
/// give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input<S> {
    pub log_id: [u8; 16],
    pub at_us: i64,
    pub kind: Kind,
    /// The account key (`identity::account_key`).
    pub account: String,
    /// The recorded source address.
    pub ip: Option<IpAddr>,
    /// The source key (`identity::source_key`); `Some` exactly when `ip` is.
    pub source: Option<S>,
    pub org: Option<String>,
}

/// Event-time order: `occurred_at`, then `log_id` (bytes, as PostgreSQL
/// orders `uuid`). Arrival order (`seq`) plays no part.
pub fn event_time_order<S>(a: &Input<S>, b: &Input<S>) -> Ordering {
    a.at_us.cmp(&b.at_us).then_with(|| a.log_id.cmp(&b.log_id))
}

/// What the engine decided for one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The event's position in the input.
    pub index: usize,
    pub effect: Effect,
    /// For a success: the distinct (address, organisation) of the failures
    /// its `preceding_failures` counts.
    pub failing_sources: Vec<(IpAddr, Option<String>)>,
}

/// An account's state row as the replay leaves it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountRow {
    pub state: AccountState,
    pub first_failure_ip: Option<IpAddr>,
    pub last_failure_ip: Option<IpAddr>,
    /// The organisation of the event that created the row: the account's
    /// first failure, or its first event of an organisation.
    pub org: Option<String>,
}

/// The decisions in event-time order and the state rows they leave.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay<S: Ord> {
    pub decisions: Vec<Decision>,
    pub accounts: BTreeMap<String, AccountRow>,
    pub sources: BTreeMap<S, IpState>,
    pub pairs: BTreeMap<(S, String), IpState>,
}

impl Replayer<SourceKey> {
    /// The engine's state now: what `restore` continues from.
    pub fn state(&self) -> EngineState {
        let mut names: Vec<&str> = vec![""; self.accounts.len()];
        for (name, n) in &self.numbers {
            names[*n] = name;
        }
        EngineState {
            accounts: self
                .accounts
                .iter()
                .zip(&self.runs)
                .zip(&names)
                .map(|((row, run), name)| AccountEntry {
                    key: (*name).to_owned(),
                    row: row.as_ref().map(|r| AccountRowState {
                        state: r.state,
                        first_failure_ip: r.first_failure_ip,
                        last_failure_ip: r.last_failure_ip,
                    }),
                    run: run.iter().cloned().collect(),
                })
                .collect(),
            orgs: self
                .accounts
                .iter()
                .map(|r| r.as_ref().and_then(|r| r.org.clone()))
                .collect(),
            sources: self.sources.iter().map(|(k, s)| (*k, *s)).collect(),
            pairs: self
                .pairs
                .iter()
                .map(|((k, a), s)| (*k, *a as u32, *s))
                .collect(),
            last: self.last,
            applied: self.applied(),
        }
    }

    /// An engine that continues from `state` under `policy` (the policy the
    /// state was replayed under: the caller checks it).
    pub fn restore(policy: Policy, state: EngineState) -> Replayer<SourceKey> {
        let mut r = Replayer::new(policy);
        for (n, (a, org)) in state.accounts.into_iter().zip(state.orgs).enumerate() {
            r.numbers.insert(a.key, n);
            r.accounts.push(a.row.map(|row| AccountRow {
                state: row.state,
                first_failure_ip: row.first_failure_ip,
                last_failure_ip: row.last_failure_ip,
                org,
            }));
            r.runs.push(a.run.into_iter().collect());
        }
        r.sources = state.sources.into_iter().collect();
        r.pairs = state
            .pairs
            .into_iter()
            .map(|(k, a, s)| ((k, a as usize), s))
            .collect();
        r.last = state.last;
        r.restored = state.applied;
        r
    }
}

/// Applies `events` in event-time order under `policy`.
pub fn replay<S: Ord + Hash + Clone>(policy: &Policy, events: &[Input<S>]) -> Replay<S> {
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by(|a, b| event_time_order(&events[*a], &events[*b]));
    let mut r = Replayer::new(*policy);
    for index in order {
        r.apply(&events[index], index);
    }
    r.finish()
}

/// The engine replaying a tenant's events one at a time, in event-time
/// order: `replay` is its run over a whole history, and a rebuild feeds it
/// the events committed after its first read as they come, as long as they
/// follow every event applied so far (`follows`).
pub struct Replayer<S> {
    policy: Policy,
    /// Accounts by number while replaying (a tenant's history repeats few
    /// keys many times); the maps the caller gets are built at the end.
    numbers: HashMap<String, usize>,
    accounts: Vec<Option<AccountRow>>,
    /// The failures each account's run counts, since its last success or reset.
    runs: Vec<BTreeSet<(IpAddr, Option<String>)>>,
    sources: HashMap<S, IpState>,
    pairs: HashMap<(S, usize), IpState>,
    decisions: Vec<Decision>,
    /// The event-time key of the last event applied.
    last: Option<(i64, [u8; 16])>,
    /// Events applied before the state this engine was restored from.
    restored: u64,
    /// Events applied since.
    decided: u64,
    /// Whether decisions are kept for `finish` (see `keep_decisions`).
    keep: bool,
}

impl<S: Ord + Hash + Clone> Replayer<S> {
    /// An engine with no event applied yet.
    pub fn new(policy: Policy) -> Replayer<S> {
        Replayer {
            policy,
            numbers: HashMap::new(),
            accounts: Vec::new(),
            runs: Vec::new(),
            sources: HashMap::new(),
            pairs: HashMap::new(),
            decisions: Vec::new(),
            last: None,
            restored: 0,
            decided: 0,
            keep: true,
        }
    }

    /// Whether the decisions of the events applied from now on are kept
    /// for `finish` (by default they are); a caller that needs only the
    /// state, or the decisions from some point on, spares their memory.
    pub fn keep_decisions(&mut self, keep: bool) {
        self.keep = keep;
    }

    /// Whether `e` comes after every event applied so far in event-time
    /// order (so that applying it now keeps the order).
    pub fn follows(&self, e: &Input<S>) -> bool {
        self.last.is_none_or(|last| (e.at_us, e.log_id) > last)
    }

    /// How many events were applied (those before a restored state
    /// included).
    pub fn applied(&self) -> u64 {
        self.restored + self.decided
    }

    /// The event-time key of the last event applied.
    pub fn last(&self) -> Option<(i64, [u8; 16])> {
        self.last
    }

    /// Applies one event, the input's `index`-th, after every event applied
    /// so far in event-time order. A failure creates its account's row, and
    /// so does the first event of an organisation (the account belongs to
    /// it: docs/security.md); a success or reset changes an account's row
    /// only when it has one.
    pub fn apply(&mut self, e: &Input<S>, index: usize) {
        debug_assert!(self.follows(e), "events are applied in event-time order");
        self.last = Some((e.at_us, e.log_id));
        let a = match self.numbers.get(e.account.as_str()) {
            Some(a) => *a,
            None => {
                self.accounts.push(None);
                self.runs.push(BTreeSet::new());
                let a = self.accounts.len() - 1;
                self.numbers.insert(e.account.clone(), a);
                a
            }
        };
        let failure = e.kind == Kind::Failure;
        let source = e.source.as_ref().filter(|_| failure);
        let pair_key = source.map(|s| (s.clone(), a));
        let before = Before {
            account: self.accounts[a]
                .as_ref()
                .map(|r| r.state)
                .unwrap_or_default(),
            ip: source.map(|s| self.sources.get(s).copied().unwrap_or_default()),
            pair: pair_key
                .as_ref()
                .map(|k| self.pairs.get(k).copied().unwrap_or_default()),
        };
        let effect = step(&self.policy, e.kind, &before, e.at_us);
        let mut failing_sources = Vec::new();
        match e.kind {
            Kind::Failure => {
                if let Some(ip) = e.ip {
                    self.runs[a].insert((ip, e.org.clone()));
                }
            }
            Kind::Success => {
                failing_sources = std::mem::take(&mut self.runs[a]).into_iter().collect();
            }
            Kind::Reset => self.runs[a].clear(),
        }
        if self.accounts[a].is_none() && (failure || e.org.is_some()) {
            self.accounts[a] = Some(AccountRow {
                org: e.org.clone(),
                ..AccountRow::default()
            });
        }
        if let (Some(next), Some(row)) = (effect.account, self.accounts[a].as_mut()) {
            row.state = next;
            let failure_ip = e.ip.filter(|_| failure);
            if next.failure_count == 0 {
                row.first_failure_ip = None;
            } else if let (1, Some(ip)) = (next.failure_count, failure_ip) {
                row.first_failure_ip = Some(ip);
            }
            if failure_ip.is_some() {
                row.last_failure_ip = failure_ip;
            }
        }
        if let Some(s) = source {
            let next = effect.ip.unwrap_or(before.ip.unwrap_or_default());
            self.sources.insert(s.clone(), next);
        }
        if let (Some(next), Some(k)) = (effect.pair, pair_key) {
            self.pairs.insert(k, next);
        }
        self.decided += 1;
        if self.keep {
            self.decisions.push(Decision {
                index,
                effect,
                failing_sources,
            });
        }
    }

    /// The decisions and the state rows they leave.
    pub fn finish(self) -> Replay<S> {
        let mut names: Vec<String> = vec![String::new(); self.accounts.len()];
        for (name, n) in self.numbers {
            names[n] = name;
        }
        Replay {
            decisions: self.decisions,
            accounts: self
                .accounts
                .into_iter()
                .enumerate()
                .filter_map(|(n, row)| row.map(|r| (names[n].clone(), r)))
                .collect(),
            sources: self.sources.into_iter().collect(),
            pairs: self
                .pairs
                .into_iter()
                .map(|((s, n), state)| ((s, names[n].clone()), state))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{source_key, SourceKey};
    use crate::lockout::LockRule;
    use std::net::Ipv4Addr;

    const T0: i64 = 1_767_225_600_000_000;
    const S: i64 = 1_000_000;

    /// A small deterministic generator (xorshift64*), so the property runs
    /// the same cases everywhere.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn shuffle<T>(&mut self, v: &mut [T]) {
            for i in (1..v.len()).rev() {
                v.swap(i, self.below(i as u64 + 1) as usize);
            }
        }
    }

    fn event(n: u128, at_us: i64, kind: Kind, account: &str, ip: Option<u8>) -> Input<SourceKey> {
        let ip = ip.map(|o| IpAddr::V4(Ipv4Addr::new(198, 51, 100, o)));
        Input {
            log_id: n.to_be_bytes(),
            at_us,
            kind,
            account: account.to_owned(),
            ip,
            source: ip.map(|a| source_key(a, 64)),
            org: None,
        }
    }

    /// A campaign: bursts of failures against a few accounts from a few
    /// addresses, with successes and resets, many events sharing a second.
    fn campaign(rng: &mut Rng, n: usize) -> Vec<Input<SourceKey>> {
        let accounts = ["root", "admin", "oracle", "alice"];
        let mut at = T0;
        (0..n)
            .map(|i| {
                at += (rng.below(4) as i64) * 20 * S * i64::from(rng.below(5) == 0)
                    + (rng.below(3) as i64) * S;
                let kind = match rng.below(20) {
                    0 => Kind::Success,
                    1 if rng.below(4) == 0 => Kind::Reset,
                    _ => Kind::Failure,
                };
                let ip = (kind == Kind::Failure && rng.below(10) != 0).then(|| rng.below(6) as u8);
                event(i as u128, at, kind, accounts[rng.below(4) as usize], ip)
            })
            .collect()
    }

    /// The decisions by log id, and the state, independent of input order.
    type Outcome = (
        BTreeMap<[u8; 16], (Effect, Vec<(IpAddr, Option<String>)>)>,
        Vec<(String, AccountState, Option<IpAddr>, Option<IpAddr>)>,
        BTreeMap<SourceKey, IpState>,
        BTreeMap<(SourceKey, String), IpState>,
    );

    fn outcome(policy: &Policy, events: &[Input<SourceKey>]) -> Outcome {
        let r = replay(policy, events);
        let decisions = r
            .decisions
            .iter()
            .map(|d| {
                (
                    events[d.index].log_id,
                    (d.effect.clone(), d.failing_sources.clone()),
                )
            })
            .collect();
        let accounts = r
            .accounts
            .iter()
            .map(|(k, a)| (k.clone(), a.state, a.first_failure_ip, a.last_failure_ip))
            .collect();
        (decisions, accounts, r.sources, r.pairs)
    }

    #[test]
    fn decisions_are_a_function_of_the_events_in_time_order_whatever_the_arrival_order() {
        let policy = Policy {
            ip_account_max_failures: 4,
            ip_max_failures: 9,
            permanent_after_locks: Some(4),
            ..Policy::default()
        };
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut locks, mut blocks, mut locked_successes) = (0, 0, 0);
        for case in 0..200 {
            let events = campaign(&mut rng, 20 + case);
            let expected = outcome(&policy, &events);
            for (effect, _) in expected.0.values() {
                locks += usize::from(effect.lock.is_some());
                blocks += usize::from(!effect.facts["ip_account_blocked_until_us"].is_null());
                locked_successes += usize::from(
                    effect.facts["was_locked"] == true
                        && effect.facts.get("preceding_failures").is_some(),
                );
            }
            let mut reversed = events.clone();
            reversed.reverse();
            assert_eq!(
                outcome(&policy, &reversed),
                expected,
                "case {case} reversed"
            );
            let mut shuffled = events.clone();
            rng.shuffle(&mut shuffled);
            assert_eq!(
                outcome(&policy, &shuffled),
                expected,
                "case {case} shuffled"
            );
        }
        assert!(locks > 100 && blocks > 100 && locked_successes > 10, "the campaigns lock, block and succeed while locked: {locks} {blocks} {locked_successes}");
    }

    #[test]
    fn the_replay_of_events_in_order_is_the_live_engine_step_by_step() {
        // The live engine: one step per event against the rows it keeps.
        let policy = Policy::default();
        let mut rng = Rng(7);
        let events = campaign(&mut rng, 400);
        let r = replay(&policy, &events);
        let mut account: BTreeMap<String, AccountState> = BTreeMap::new();
        for (i, (d, e)) in r.decisions.iter().zip(&events).enumerate() {
            assert_eq!(d.index, i, "generated in time order");
            let before = Before {
                account: account.get(&e.account).copied().unwrap_or_default(),
                ..Before::default()
            };
            let live = step(&policy, e.kind, &before, e.at_us);
            assert_eq!(live.lock, d.effect.lock);
            if e.kind != Kind::Failure {
                assert_eq!(live.facts, d.effect.facts);
            }
            if let Some(next) = live.account {
                if e.kind == Kind::Failure || account.contains_key(&e.account) {
                    account.insert(e.account.clone(), next);
                }
            }
        }
        let replayed: BTreeMap<String, AccountState> = r
            .accounts
            .iter()
            .map(|(k, a)| (k.clone(), a.state))
            .collect();
        assert_eq!(replayed, account);
    }

    #[test]
    fn an_old_success_imported_late_does_not_clear_later_failures() {
        // Four failures now, then a success of a year ago arrives.
        let year = 365 * 24 * 3600 * S;
        let mut events: Vec<_> = (0..4)
            .map(|i| {
                event(
                    i,
                    T0 + year + i as i64 * S,
                    Kind::Failure,
                    "victim",
                    Some(1),
                )
            })
            .collect();
        events.push(event(9, T0, Kind::Success, "victim", Some(1)));
        events.push(event(
            10,
            T0 + year + 10 * S,
            Kind::Failure,
            "victim",
            Some(1),
        ));
        let r = replay(&Policy::default(), &events);
        let success = r.decisions.iter().find(|d| d.index == 4).unwrap();
        assert_eq!(success.effect.facts["preceding_failures"], 0);
        let lock = r.decisions.iter().find(|d| d.index == 5).unwrap();
        assert_eq!(
            lock.effect.lock.map(|l| l.rule),
            Some(LockRule::MaxFailures)
        );
        assert!(r.accounts["victim"].state.locked);
    }

    #[test]
    fn a_success_while_locked_reports_the_failures_that_led_to_the_lock_and_their_sources() {
        let mut events: Vec<_> = (0..5)
            .map(|i| {
                event(
                    i,
                    T0 + i as i64 * S,
                    Kind::Failure,
                    "victim",
                    Some(i as u8 % 2),
                )
            })
            .collect();
        events.push(event(5, T0 + 60 * S, Kind::Success, "victim", Some(7)));
        let r = replay(&Policy::default(), &events);
        let success = r.decisions.last().unwrap();
        assert_eq!(success.effect.facts["preceding_failures"], 5);
        assert_eq!(success.effect.facts["was_locked"], true);
        let ips: Vec<IpAddr> = success.failing_sources.iter().map(|(ip, _)| *ip).collect();
        assert_eq!(
            ips,
            vec![
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, 0)),
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1))
            ]
        );
    }

    #[test]
    fn the_first_event_of_an_organisation_gives_the_account_its_row() {
        let of = |mut e: Input<SourceKey>, org: &str| {
            e.org = Some(org.to_owned());
            e
        };
        let events = vec![
            of(event(1, T0, Kind::Success, "hq-only", Some(1)), "hq"),
            of(
                event(2, T0 + S, Kind::Failure, "hq-only", Some(2)),
                "branch",
            ),
            event(3, T0 + S, Kind::Success, "nobody", None),
        ];
        let r = replay(&Policy::default(), &events);
        assert_eq!(r.accounts.keys().collect::<Vec<_>>(), vec!["hq-only"]);
        let row = &r.accounts["hq-only"];
        assert_eq!(
            row.org.as_deref(),
            Some("hq"),
            "the first event's organisation"
        );
        assert_eq!(row.state.failure_count, 1);
    }

    #[test]
    fn an_engine_restored_from_its_state_decides_as_the_one_that_went_on() {
        let mut rng = Rng(0x5eed_ab1e);
        for round in 0..50 {
            let mut events = campaign(&mut rng, 120);
            events.sort_by(event_time_order);
            let policy = Policy::default();
            let cut = rng.below(events.len() as u64) as usize;
            let mut whole = Replayer::new(policy);
            let mut first = Replayer::new(policy);
            for (i, e) in events.iter().enumerate() {
                whole.apply(e, i);
                if i < cut {
                    first.apply(e, i);
                }
            }
            let bytes = first.state().encode();
            let mut restored = Replayer::restore(policy, EngineState::decode(&bytes).unwrap());
            assert_eq!(restored.applied(), cut as u64, "round {round}");
            for (i, e) in events.iter().enumerate().skip(cut) {
                assert!(restored.follows(e));
                restored.apply(e, i);
            }
            let (a, b) = (whole.finish(), restored.finish());
            assert_eq!(a.accounts, b.accounts, "round {round}");
            assert_eq!(a.sources, b.sources, "round {round}");
            assert_eq!(a.pairs, b.pairs, "round {round}");
            assert_eq!(a.decisions[cut..], b.decisions[..], "round {round}");
        }
    }

    #[test]
    fn events_fed_one_by_one_after_a_first_replay_end_where_the_whole_replay_ends() {
        let mut rng = Rng(0xfeed_5eed);
        for round in 0..50 {
            let mut events = campaign(&mut rng, 80);
            events.sort_by(event_time_order);
            let policy = Policy::default();
            let cut = (rng.below(events.len() as u64)) as usize;
            let mut r = Replayer::new(policy);
            for (i, e) in events[..cut].iter().enumerate() {
                r.apply(e, i);
            }
            for (i, e) in events.iter().enumerate().skip(cut) {
                assert!(r.follows(e), "round {round}");
                r.apply(e, i);
            }
            assert_eq!(r.applied(), events.len() as u64);
            assert_eq!(r.finish(), replay(&policy, &events), "round {round}");
        }
    }

    #[test]
    fn rows_exist_as_the_live_engine_creates_them() {
        let events = vec![
            event(1, T0, Kind::Success, "quiet", Some(1)),
            event(2, T0, Kind::Reset, "quiet", None),
            event(3, T0 + S, Kind::Failure, "noisy", None),
            event(4, T0 + 2 * S, Kind::Failure, "noisy", Some(3)),
        ];
        let r = replay(&Policy::default(), &events);
        assert_eq!(r.accounts.keys().collect::<Vec<_>>(), vec!["noisy"]);
        let noisy = &r.accounts["noisy"];
        assert_eq!(noisy.state.failure_count, 2);
        assert_eq!(
            noisy.first_failure_ip, None,
            "the run's first failure had none"
        );
        assert_eq!(noisy.last_failure_ip, events[3].ip);
        assert_eq!(r.sources.len(), 1);
        assert_eq!(r.pairs.len(), 1);
    }
}
