//! Campaigns: the detections' alerts grouped as an investigator reads
//! them, without I/O.
//!
//! Two alerts belong to one campaign when their periods overlap (within
//! `slack_ms` of each other) and they share an account or a source, or
//! when either is tenant-wide (a stuffing or storm alert names no single
//! source) and the periods overlap. Grouping is transitive (a union of
//! such pairs), so a lockout storm and the spray that caused it are one
//! campaign, not thirty rows.
//!
//! Campaigns are ranked as an investigator triages: one with a success
//! while locked first, then by successes after failures, then by the
//! failures its alerts hold, then the latest first.

use crate::detection::{Alert, Rule};
use std::collections::BTreeSet;

/// One campaign: its alerts and what they add up to.
#[derive(Debug, Clone, PartialEq)]
pub struct Campaign {
    /// The rules of its alerts, in [`Rule::ALL`]'s order, without repeats.
    pub kinds: Vec<Rule>,
    pub first_ms: i64,
    pub last_ms: i64,
    /// Accounts and sources its alerts name (a sorted union).
    pub accounts: BTreeSet<String>,
    pub sources: BTreeSet<String>,
    /// The largest counts of one alert (an alert names at most
    /// [`crate::detection::MAX_NAMED`]; the union may be larger).
    pub account_count: usize,
    pub source_count: usize,
    /// Events its alerts' evidence holds (an event in two alerts counts twice).
    pub events: u64,
    pub first_seq: i64,
    pub last_seq: i64,
    /// Alerts of each kind: lockout storms, successes after failures and
    /// successes while locked.
    pub storms: usize,
    pub successes_after_failures: usize,
    pub successes_while_locked: usize,
    pub alerts: Vec<Alert>,
}

fn tenant_wide(rule: Rule) -> bool {
    matches!(rule, Rule::CredentialStuffing | Rule::LockoutStorm)
}

fn related(a: &Alert, b: &Alert, slack_ms: i64) -> bool {
    let overlap = a.first_ms <= b.last_ms + slack_ms && b.first_ms <= a.last_ms + slack_ms;
    if !overlap {
        return false;
    }
    if tenant_wide(a.rule) || tenant_wide(b.rule) {
        return true;
    }
    a.accounts.iter().any(|x| b.accounts.contains(x))
        || a.sources.iter().any(|x| b.sources.contains(x))
}

fn root(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// Groups `alerts` (of one tenant) into ranked campaigns.
pub fn group(alerts: Vec<Alert>, slack_ms: i64) -> Vec<Campaign> {
    let n = alerts.len();
    let mut parent: Vec<usize> = (0..n).collect();
    for i in 0..n {
        for j in i + 1..n {
            if related(&alerts[i], &alerts[j], slack_ms) {
                let (ri, rj) = (root(&mut parent, i), root(&mut parent, j));
                if ri != rj {
                    parent[rj] = ri;
                }
            }
        }
    }
    let mut groups: Vec<Vec<Alert>> = Vec::new();
    let mut slot: Vec<Option<usize>> = vec![None; n];
    for (i, alert) in alerts.into_iter().enumerate() {
        let r = root(&mut parent, i);
        let g = *slot[r].get_or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(alert);
    }
    let mut campaigns: Vec<Campaign> = groups.into_iter().map(summarise).collect();
    campaigns.sort_by(|a, b| {
        b.successes_while_locked
            .cmp(&a.successes_while_locked)
            .then(b.successes_after_failures.cmp(&a.successes_after_failures))
            .then(b.events.cmp(&a.events))
            .then(b.last_ms.cmp(&a.last_ms))
    });
    campaigns
}

fn summarise(alerts: Vec<Alert>) -> Campaign {
    let count = |r: Rule| alerts.iter().filter(|a| a.rule == r).count();
    Campaign {
        kinds: Rule::ALL
            .into_iter()
            .filter(|r| alerts.iter().any(|a| a.rule == *r))
            .collect(),
        first_ms: alerts.iter().map(|a| a.first_ms).min().unwrap_or(0),
        last_ms: alerts.iter().map(|a| a.last_ms).max().unwrap_or(0),
        accounts: alerts.iter().flat_map(|a| a.accounts.clone()).collect(),
        sources: alerts.iter().flat_map(|a| a.sources.clone()).collect(),
        account_count: alerts.iter().map(|a| a.account_count).max().unwrap_or(0),
        source_count: alerts.iter().map(|a| a.source_count).max().unwrap_or(0),
        events: alerts.iter().map(|a| a.events).sum(),
        first_seq: alerts.iter().map(|a| a.first_seq).min().unwrap_or(0),
        last_seq: alerts.iter().map(|a| a.last_seq).max().unwrap_or(0),
        storms: count(Rule::LockoutStorm),
        successes_after_failures: count(Rule::SuccessAfterFailures),
        successes_while_locked: count(Rule::SuccessWhileLocked),
        alerts,
    }
}

impl Campaign {
    /// The campaign's accounts counted as the larger of the union and the
    /// largest single alert's count.
    pub fn accounts_total(&self) -> usize {
        self.accounts.len().max(self.account_count)
    }

    pub fn sources_total(&self) -> usize {
        self.sources.len().max(self.source_count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(rule: Rule, accounts: &[&str], sources: &[&str], from: i64, to: i64) -> Alert {
        Alert {
            rule,
            tenant: "t".into(),
            accounts: accounts.iter().map(|s| s.to_string()).collect(),
            sources: sources.iter().map(|s| s.to_string()).collect(),
            account_count: accounts.len(),
            source_count: sources.len(),
            first_ms: from,
            last_ms: to,
            first_seq: from,
            last_seq: to,
            events: (to - from) as u64 + 1,
        }
    }

    #[test]
    fn a_lockout_storm_and_the_spray_behind_it_are_one_campaign() {
        let mut alerts = vec![alert(
            Rule::PasswordSpray,
            &["a", "b", "c"],
            &["10.0.0.1"],
            0,
            100,
        )];
        for u in ["a", "b", "c"] {
            alerts.push(alert(
                Rule::DistributedBruteForce,
                &[u],
                &["10.0.0.1"],
                10,
                90,
            ));
        }
        alerts.push(alert(Rule::LockoutStorm, &["a", "b", "c"], &[], 50, 60));
        let c = group(alerts, 0);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].alerts.len(), 5);
        assert_eq!(c[0].storms, 1);
        assert_eq!(c[0].accounts.len(), 3);
    }

    #[test]
    fn unrelated_or_distant_alerts_are_separate_campaigns() {
        let alerts = vec![
            alert(Rule::PasswordSpray, &["a"], &["10.0.0.1"], 0, 100),
            // same source, a day later
            alert(
                Rule::PasswordSpray,
                &["a"],
                &["10.0.0.1"],
                86_400_000,
                86_400_100,
            ),
            // same time, nothing shared
            alert(Rule::DistributedBruteForce, &["z"], &["10.9.9.9"], 0, 100),
        ];
        assert_eq!(group(alerts, 60_000).len(), 3);
    }

    #[test]
    fn a_success_while_locked_ranks_first_whatever_its_size() {
        let alerts = vec![
            alert(Rule::PasswordSpray, &["a", "b"], &["10.0.0.1"], 0, 10_000),
            alert(
                Rule::SuccessWhileLocked,
                &["q"],
                &["10.7.7.7"],
                5_000_000,
                5_000_000,
            ),
        ];
        let c = group(alerts, 0);
        assert_eq!(c[0].kinds, vec![Rule::SuccessWhileLocked]);
        assert_eq!(c[1].kinds, vec![Rule::PasswordSpray]);
    }

    #[test]
    fn grouping_is_transitive() {
        // a–b share an account, b–c share a source: one campaign.
        let alerts = vec![
            alert(Rule::DistributedBruteForce, &["a"], &["1.1.1.1"], 0, 10),
            alert(Rule::PasswordSpray, &["a", "x"], &["2.2.2.2"], 5, 20),
            alert(Rule::PasswordSpray, &["y"], &["2.2.2.2"], 15, 30),
        ];
        let c = group(alerts, 0);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].first_ms, 0);
        assert_eq!(c[0].last_ms, 30);
    }
}
