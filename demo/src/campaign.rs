//! The brute-force campaign the demo injects, as a timeline of attempts,
//! and the ground truth an investigator should reconstruct from the log.
//!
//! Everything is deterministic (a fixed seed), and event times are relative
//! to a start time: lockout rules run on event time, so the outcome (which
//! accounts lock, when, how often) is known in advance under the default
//! policy (5 failures in 15 minutes lock for 15 minutes, doubling).

/// What happens at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A login attempt; `ok` = the password was right.
    Login { ok: bool },
    /// A session token issued after a successful login.
    Token,
    /// A help-desk lockout reset.
    Reset { ticket: String },
}

/// One step of the campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Seconds after the campaign's start.
    pub at_s: i64,
    pub tenant: &'static str,
    pub user: String,
    pub ip: String,
    /// "web" or "mobile" (the two application paths); "api" for the help desk.
    pub channel: &'static str,
    pub action: Action,
    /// Which part of the campaign it belongs to.
    pub phase: &'static str,
}

/// What an investigator must find for the attacked tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroundTruth {
    pub tenant: &'static str,
    pub targeted_accounts: usize,
    pub failure_ips: usize,
    pub lockouts: usize,
    pub resets: usize,
    pub success_after_failures: Vec<String>,
    pub tokens: usize,
    pub stuffing_ip: String,
    pub stuffing_accounts: usize,
    /// The campaign alerts the sidecar's detections raise for the attacked
    /// tenant under their default thresholds (docs/sidecar.md, "Campaign
    /// detections"), in time order. The detections name a pattern by its
    /// sources: the spray rounds (80 accounts, each attempt from another
    /// address) are many accounts from many sources with one attempt each,
    /// credential stuffing, one alert per round; the stuffing run (one
    /// address, 120 accounts) is one source across many accounts, a
    /// password spray. The focused attack (four accounts, three addresses)
    /// stays under every threshold; the other tenant raises nothing.
    pub alerts: Vec<ExpectedAlert>,
}

/// One alert the detections must raise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedAlert {
    pub rule: &'static str,
    /// The one account or source the alert names, when it names one.
    pub account: Option<String>,
    pub source: Option<String>,
}

/// The attacked tenant and a second tenant with ordinary traffic.
pub const TENANT: &str = "agency-1";
pub const OTHER_TENANT: &str = "agency-2";

const FOCUSED: [&str; 4] = ["admin", "finance.lead", "ceo", "it.ops"];
const FOCUSED_IPS: [&str; 3] = ["45.155.205.10", "45.155.205.11", "45.155.205.12"];
const STUFFING_IP: &str = "185.220.101.7";
const COMPROMISED: &str = "j.smith";
const COMPROMISED_IP: &str = "203.0.113.66";
pub const RESET_ACCOUNT: &str = "finance.lead";

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The campaign, in time order, and its ground truth.
pub fn campaign() -> (Vec<Step>, GroundTruth) {
    let mut rng = Rng(0x5DEE_CE66_D1CE_4E5B);
    let mut steps = Vec::new();
    let mut push = |at_s: i64, tenant, user: String, ip: String, channel, action, phase| {
        steps.push(Step {
            at_s,
            tenant,
            user,
            ip,
            channel,
            action,
            phase,
        })
    };

    // Legitimate users of both tenants log in normally (web and mobile),
    // each login followed by a session token.
    for (tenant, users, net) in [(TENANT, 30, "10.20"), (OTHER_TENANT, 12, "10.30")] {
        for u in 1..=users {
            for k in 0..2 {
                let at = rng.below(170 * 60) as i64;
                let user = format!("emp{u:03}");
                let ip = format!("{net}.{}.{}", u / 250, u % 250 + 1);
                let channel = if (u + k) % 2 == 0 { "web" } else { "mobile" };
                push(
                    at,
                    tenant,
                    user.clone(),
                    ip.clone(),
                    channel,
                    Action::Login { ok: true },
                    "legitimate",
                );
                push(
                    at + 1,
                    tenant,
                    user,
                    ip,
                    channel,
                    Action::Token,
                    "legitimate",
                );
            }
        }
    }

    // Password spray: 80 accounts, three rounds 20 minutes apart (never two
    // failures of one account within 15 minutes: no lock), every attempt
    // from another address: 240 IPs.
    for round in 0..3i64 {
        for a in 0..80i64 {
            let n = round * 80 + a;
            push(
                20 * 60 + round * 20 * 60 + a * 5,
                TENANT,
                format!("staff.{:03}", a + 1),
                format!("198.51.100.{}", n + 1),
                if a % 2 == 0 { "web" } else { "mobile" },
                Action::Login { ok: false },
                "password spray",
            );
        }
    }

    // Focused attack: four accounts, five failures a minute apart (lock 1,
    // 15 min), then five more once the lock ran out (lock 2, 30 min: the
    // escalation), rotating over three IPs.
    for (i, user) in FOCUSED.iter().enumerate() {
        let base = 60 * 60 + i as i64 * 30;
        for k in 0..10i64 {
            let at = base
                + if k < 5 {
                    k * 60
                } else {
                    20 * 60 + (k - 5) * 60
                };
            push(
                at,
                TENANT,
                user.to_string(),
                FOCUSED_IPS[(k as usize + i) % 3].to_string(),
                "web",
                Action::Login { ok: false },
                "focused attack",
            );
        }
    }
    // The help desk resets one of them during its second lock.
    push(
        60 * 60 + 30 * 60,
        TENANT,
        RESET_ACCOUNT.to_string(),
        "10.20.9.9".to_string(),
        "api",
        Action::Reset {
            ticket: "HD-20417".into(),
        },
        "help-desk reset",
    );

    // Credential stuffing: one IP, 120 accounts, one attempt each, six
    // seconds apart (the IP is blocked after 100 failures in 15 minutes).
    for a in 0..120i64 {
        push(
            110 * 60 + a * 6,
            TENANT,
            format!("customer{:04}", 1000 + a * 7),
            STUFFING_IP.to_string(),
            "mobile",
            Action::Login { ok: false },
            "credential stuffing",
        );
    }

    // The compromise: four failures below the threshold, then a success
    // from the same address, and a session token.
    for k in 0..4 {
        push(
            150 * 60 + k * 60,
            TENANT,
            COMPROMISED.into(),
            COMPROMISED_IP.into(),
            "web",
            Action::Login { ok: false },
            "compromise",
        );
    }
    push(
        154 * 60,
        TENANT,
        COMPROMISED.into(),
        COMPROMISED_IP.into(),
        "web",
        Action::Login { ok: true },
        "compromise",
    );
    push(
        154 * 60 + 1,
        TENANT,
        COMPROMISED.into(),
        COMPROMISED_IP.into(),
        "web",
        Action::Token,
        "compromise",
    );

    // Ordinary failures of the other tenant (isolation: never in agency-1's report).
    for a in 0..10i64 {
        push(
            30 * 60 + a * 97,
            OTHER_TENANT,
            format!("emp{:03}", 50 + a),
            format!("192.0.2.{}", a + 1),
            "web",
            Action::Login { ok: false },
            "other tenant",
        );
    }

    steps.sort_by_key(|s| s.at_s);
    let truth = GroundTruth {
        tenant: TENANT,
        targeted_accounts: 80 + FOCUSED.len() + 120 + 1,
        failure_ips: 240 + FOCUSED_IPS.len() + 1 + 1,
        lockouts: FOCUSED.len() * 2,
        resets: 1,
        success_after_failures: vec![COMPROMISED.to_string()],
        tokens: 30 * 2 + 1,
        stuffing_ip: STUFFING_IP.to_string(),
        stuffing_accounts: 120,
        alerts: {
            let alert = |rule, account: Option<&str>, source: Option<&str>| ExpectedAlert {
                rule,
                account: account.map(str::to_string),
                source: source.map(str::to_string),
            };
            vec![
                alert("credential_stuffing", None, None),
                alert("credential_stuffing", None, None),
                alert("credential_stuffing", None, None),
                alert("password_spray", None, Some(STUFFING_IP)),
                alert(
                    "success_after_failures",
                    Some(COMPROMISED),
                    Some(COMPROMISED_IP),
                ),
            ]
        },
    };
    (steps, truth)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_ground_truth_counts_what_the_steps_inject() {
        let (steps, truth) = campaign();
        let failures: Vec<&Step> = steps
            .iter()
            .filter(|s| s.tenant == TENANT && s.action == Action::Login { ok: false })
            .collect();
        let accounts: HashSet<&str> = failures.iter().map(|s| s.user.as_str()).collect();
        let ips: HashSet<&str> = failures.iter().map(|s| s.ip.as_str()).collect();
        assert_eq!(accounts.len(), truth.targeted_accounts);
        assert_eq!(ips.len(), truth.failure_ips);
        let tokens = steps
            .iter()
            .filter(|s| s.tenant == TENANT && s.action == Action::Token)
            .count();
        assert_eq!(tokens, truth.tokens);
        assert!(steps.windows(2).all(|w| w[0].at_s <= w[1].at_s));
        // Legitimate users never fail: the only success after failures is
        // the compromised account.
        let failed: HashSet<(&str, &str)> = failures
            .iter()
            .map(|s| (s.tenant, s.user.as_str()))
            .collect();
        let succeeded_after: HashSet<&str> = steps
            .iter()
            .filter(|s| {
                s.action == Action::Login { ok: true }
                    && failed.contains(&(s.tenant, s.user.as_str()))
            })
            .map(|s| s.user.as_str())
            .collect();
        assert_eq!(succeeded_after, HashSet::from([COMPROMISED]));
    }
}
