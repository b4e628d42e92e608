//! The reconstruction an investigator makes, through the investigation
//! functions, as a tenant reader (row-level security applies), and its
//! comparison with what the campaign injected.

use crate::campaign::GroundTruth;
use postgres::Client;

#[derive(Debug, Clone)]
pub struct Account {
    pub user: String,
    pub failures: i64,
    pub distinct_ips: i64,
    pub locks: i64,
    pub locked_now: bool,
}

#[derive(Debug, Clone)]
pub struct Source {
    pub ip: String,
    pub failures: i64,
    pub accounts: i64,
    pub first_seen: String,
    pub last_seen: String,
}

#[derive(Debug, Clone)]
pub struct LockEvent {
    pub at: String,
    pub minute_unix: i64,
    pub user: String,
    pub kind: String,
    pub rule: Option<String>,
    pub failures: Option<i32>,
    pub until: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Success {
    pub at: String,
    pub user: String,
    pub ip: String,
    pub preceding_failures: i32,
    pub while_locked: bool,
    pub failing_ips: Vec<String>,
}

/// A campaign alert of the period, as the sidecar's detections raise it.
#[derive(Debug, Clone)]
pub struct CampaignAlert {
    pub rule: &'static str,
    pub name: &'static str,
    pub first_at: String,
    pub last_at: String,
    pub accounts: Vec<String>,
    pub account_count: usize,
    pub sources: Vec<String>,
    pub source_count: usize,
    pub events: u64,
    pub first_seq: i64,
    pub last_seq: i64,
}

/// A campaign: the alerts that overlap in time and share an account or a
/// source (`authaudit_core::campaign`), as one line of the report.
#[derive(Debug, Clone)]
pub struct CampaignLine {
    pub kinds: String,
    pub first_at: String,
    pub last_at: String,
    /// The first accounts and sources it names, and how many in all.
    pub accounts: Vec<String>,
    pub account_count: usize,
    pub sources: Vec<String>,
    pub source_count: usize,
    /// Lockouts of its accounts in the period.
    pub locks: usize,
    pub successes: usize,
    pub alerts: usize,
}

/// Everything the report shows.
#[derive(Debug, Clone)]
pub struct Reconstruction {
    pub tenant: String,
    pub from: String,
    pub to: String,
    pub accounts: Vec<Account>,
    pub sources: Vec<Source>,
    pub timeline: Vec<LockEvent>,
    pub successes: Vec<Success>,
    pub tokens: i64,
    pub events: i64,
    /// (minute as Unix seconds, failures)
    pub failures_per_minute: Vec<(i64, i64)>,
    pub verified: bool,
    pub verified_rows: i64,
    pub verify_reason: Option<String>,
    /// The latest checkpoint: (seq, link hex, created).
    pub checkpoint: Option<(i64, String, String)>,
    /// The campaign alerts of the period: the sidecar's rules
    /// (`authaudit_core::detection`, default thresholds) over its events.
    pub alerts: Vec<CampaignAlert>,
    /// The alerts grouped into campaigns, most urgent first.
    pub campaigns: Vec<CampaignLine>,
}

/// UTC text of milliseconds since the Unix epoch, as the report shows times.
fn utc_ms(ms: i64) -> String {
    let s = ms.div_euclid(1000);
    let (days, rest) = (s.div_euclid(86_400), s.rem_euclid(86_400));
    let (year, month, day) = authaudit_core::lockout_effect::civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The detections' alerts over the tenant's events of the period, in seq
/// order, as rows and as the detector raised them.
fn campaign_alerts(
    c: &mut Client,
    tenant: &str,
    f: f64,
    t: f64,
) -> Result<(Vec<CampaignAlert>, Vec<authaudit_core::detection::Alert>), postgres::Error> {
    use authaudit_core::detection::{Detector, Event, Thresholds};
    let rows = c.query(
        "SELECT seq, event_type, user_id, host(ip), (extract(epoch FROM occurred_at) * 1000)::int8,
                (metadata #>> '{_authaudit,lockout,preceding_failures}')::int4,
                (metadata #>> '{_authaudit,lockout,was_locked}')::bool
           FROM authaudit.auth_log
          WHERE tenant_id = $1 AND occurred_at >= to_timestamp($2) AND occurred_at < to_timestamp($3)
            AND event_type IN ('login_failed', 'login_success', 'account_locked')
          ORDER BY seq",
        &[&tenant, &f, &t],
    )?;
    let mut d = Detector::new(Thresholds::default(), Default::default());
    let mut out = Vec::new();
    let mut raised = Vec::new();
    for r in &rows {
        let source: Option<String> = r.get(3);
        for a in d.observe(&Event {
            tenant,
            seq: r.get(0),
            event_type: r.get(1),
            account: r.get(2),
            source: source.as_deref(),
            at_ms: r.get(4),
            preceding_failures: r.get(5),
            was_locked: r.get(6),
        }) {
            out.push(CampaignAlert {
                rule: a.rule.as_str(),
                name: a.rule.cef().1,
                first_at: utc_ms(a.first_ms),
                last_at: utc_ms(a.last_ms),
                accounts: a.accounts.clone(),
                account_count: a.account_count,
                sources: a.sources.clone(),
                source_count: a.source_count,
                events: a.events,
                first_seq: a.first_seq,
                last_seq: a.last_seq,
            });
            raised.push(a);
        }
    }
    Ok((out, raised))
}

/// Alerts within this of each other still join one campaign.
const CAMPAIGN_SLACK_MS: i64 = 5 * 60 * 1000;

/// The alerts grouped into campaigns, with the lockouts of their accounts.
fn campaign_lines(
    raised: Vec<authaudit_core::detection::Alert>,
    timeline: &[LockEvent],
) -> Vec<CampaignLine> {
    authaudit_core::campaign::group(raised, CAMPAIGN_SLACK_MS)
        .into_iter()
        .map(|k| CampaignLine {
            kinds: k
                .kinds
                .iter()
                .map(|r| r.cef().1)
                .collect::<Vec<_>>()
                .join(", "),
            first_at: utc_ms(k.first_ms),
            last_at: utc_ms(k.last_ms),
            accounts: k.accounts.iter().take(5).cloned().collect(),
            account_count: k.accounts_total(),
            sources: k.sources.iter().take(5).cloned().collect(),
            source_count: k.sources_total(),
            locks: timeline
                .iter()
                .filter(|e| e.kind == "account_locked" && k.accounts.contains(&e.user))
                .count(),
            successes: k.successes_after_failures + k.successes_while_locked,
            alerts: k.alerts.len(),
        })
        .collect()
}

/// Reads the reconstruction for `tenant` over [from_unix, to_unix).
pub fn reconstruct(
    c: &mut Client,
    tenant: &str,
    from_unix: i64,
    to_unix: i64,
) -> Result<Reconstruction, postgres::Error> {
    let (f, t) = (from_unix as f64, to_unix as f64);
    let range = "to_timestamp($2), to_timestamp($3)";
    let ts = |col: &str| format!("to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')");
    let accounts = c
        .query(
            &format!("SELECT user_id, failures, distinct_ips, locks, locked_now FROM authaudit.targeted_accounts($1, {range})"),
            &[&tenant, &f, &t],
        )?
        .iter()
        .map(|r| Account { user: r.get(0), failures: r.get(1), distinct_ips: r.get(2), locks: r.get(3), locked_now: r.get(4) })
        .collect();
    let sources = c
        .query(
            &format!(
                "SELECT host(ip), failures, distinct_accounts, {}, {} FROM authaudit.attack_sources($1, {range})",
                ts("first_seen"),
                ts("last_seen")
            ),
            &[&tenant, &f, &t],
        )?
        .iter()
        .map(|r| Source { ip: r.get(0), failures: r.get(1), accounts: r.get(2), first_seen: r.get(3), last_seen: r.get(4) })
        .collect();
    let timeline: Vec<LockEvent> = c
        .query(
            &format!(
                "SELECT {}, extract(epoch FROM date_trunc('minute', occurred_at))::int8, user_id, event_type, rule, failures, {}
                   FROM authaudit.lockout_timeline($1, {range})",
                ts("occurred_at"),
                ts("locked_until")
            ),
            &[&tenant, &f, &t],
        )?
        .iter()
        .map(|r| LockEvent {
            at: r.get(0),
            minute_unix: r.get(1),
            user: r.get(2),
            kind: r.get(3),
            rule: r.get(4),
            failures: r.get(5),
            until: r.get(6),
        })
        .collect();
    let successes = c
        .query(
            &format!(
                "SELECT {}, user_id, host(ip), preceding_failures, while_locked,
                        (SELECT coalesce(array_agg(host(x)), '{{}}') FROM unnest(failing_ips) x)
                   FROM authaudit.successes_after_failures($1, {range})",
                ts("occurred_at")
            ),
            &[&tenant, &f, &t],
        )?
        .iter()
        .map(|r| Success {
            at: r.get(0),
            user: r.get(1),
            ip: r.get(2),
            preceding_failures: r.get(3),
            while_locked: r.get(4),
            failing_ips: r.get(5),
        })
        .collect();
    let summary = c.query(&format!("SELECT event_type, sum(events)::int8 FROM authaudit.compliance_summary($1, {range}) GROUP BY 1"), &[&tenant, &f, &t])?;
    let tokens = summary
        .iter()
        .filter(|r| r.get::<_, String>(0) == "token_issued")
        .map(|r| r.get::<_, i64>(1))
        .sum();
    let events = summary.iter().map(|r| r.get::<_, i64>(1)).sum();
    let failures_per_minute = c
        .query(
            "SELECT extract(epoch FROM date_trunc('minute', occurred_at))::int8, count(*)
               FROM authaudit.auth_log
              WHERE tenant_id = $1 AND event_type = 'login_failed'
                AND occurred_at >= to_timestamp($2) AND occurred_at < to_timestamp($3)
              GROUP BY 1 ORDER BY 1",
            &[&tenant, &f, &t],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let v = c.query_one(
        "SELECT ok, rows_checked, reason FROM authaudit.verify_chain($1)",
        &[&tenant],
    )?;
    let checkpoint = c
        .query_opt(
            &format!(
                "SELECT seq, encode(link_sha256, 'hex'), {} FROM authaudit.checkpoints WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1",
                ts("created_at")
            ),
            &[&tenant],
        )?
        .map(|r| (r.get(0), r.get(1), r.get(2)));
    let (alerts, raised) = campaign_alerts(c, tenant, f, t)?;
    let campaigns = campaign_lines(raised, &timeline);
    let bounds = c.query_one(
        &format!(
            "SELECT {}, {}",
            ts("to_timestamp($1)"),
            ts("to_timestamp($2)")
        ),
        &[&f, &t],
    )?;
    Ok(Reconstruction {
        tenant: tenant.to_string(),
        from: bounds.get(0),
        to: bounds.get(1),
        accounts,
        sources,
        timeline,
        successes,
        tokens,
        events,
        failures_per_minute,
        verified: v.get(0),
        verified_rows: v.get(1),
        verify_reason: v.get(2),
        checkpoint,
        alerts,
        campaigns,
    })
}

/// One line of the comparison with the ground truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub what: &'static str,
    pub injected: String,
    pub found: String,
}

impl Check {
    pub fn ok(&self) -> bool {
        self.injected == self.found
    }
}

/// What the investigator found against what was injected.
pub fn compare(r: &Reconstruction, truth: &GroundTruth) -> Vec<Check> {
    let locks = r
        .timeline
        .iter()
        .filter(|e| e.kind == "account_locked")
        .count();
    let resets = r
        .timeline
        .iter()
        .filter(|e| e.kind == "lockout_reset")
        .count();
    let stuffing = r
        .sources
        .iter()
        .max_by_key(|s| s.accounts)
        .map(|s| format!("{} ({} accounts)", s.ip, s.accounts))
        .unwrap_or_default();
    let saf: Vec<String> = r.successes.iter().map(|s| s.user.clone()).collect();
    let one = |v: &[String]| (v.len() == 1).then(|| v[0].clone());
    let alert_text = |rule: &str, account: Option<String>, source: Option<String>| {
        let mut t = rule.to_string();
        if let Some(a) = account {
            t += &format!(" ({a})");
        }
        if let Some(s) = source {
            t += &format!(" [{s}]");
        }
        t
    };
    let alerts_found: Vec<String> = r
        .alerts
        .iter()
        .map(|a| alert_text(a.rule, one(&a.accounts), one(&a.sources)))
        .collect();
    let alerts_injected: Vec<String> = truth
        .alerts
        .iter()
        .map(|a| alert_text(a.rule, a.account.clone(), a.source.clone()))
        .collect();
    vec![
        Check {
            what: "targeted accounts",
            injected: truth.targeted_accounts.to_string(),
            found: r.accounts.len().to_string(),
        },
        Check {
            what: "attacking IPs",
            injected: truth.failure_ips.to_string(),
            found: r.sources.len().to_string(),
        },
        Check {
            what: "lockouts",
            injected: truth.lockouts.to_string(),
            found: locks.to_string(),
        },
        Check {
            what: "help-desk resets",
            injected: truth.resets.to_string(),
            found: resets.to_string(),
        },
        Check {
            what: "credential stuffing source",
            injected: format!(
                "{} ({} accounts)",
                truth.stuffing_ip, truth.stuffing_accounts
            ),
            found: stuffing,
        },
        Check {
            what: "successes after failures",
            injected: truth.success_after_failures.join(", "),
            found: saf.join(", "),
        },
        Check {
            what: "session tokens issued",
            injected: truth.tokens.to_string(),
            found: r.tokens.to_string(),
        },
        Check {
            what: "campaign alerts",
            injected: alerts_injected.join(", "),
            found: alerts_found.join(", "),
        },
    ]
}

/// The reconstruction as text for the terminal.
pub fn print(r: &Reconstruction, checks: &[Check]) -> String {
    let mut o = String::new();
    let mut line = |s: String| {
        o.push_str(&s);
        o.push('\n');
    };
    line(format!(
        "== Reconstruction of tenant {} from {} to {} UTC ({} events) ==",
        r.tenant, r.from, r.to, r.events
    ));
    line(format!(
        "\nTargeted accounts: {} (top 10)",
        r.accounts.len()
    ));
    line(format!(
        "  {:<16} {:>8} {:>6} {:>6} {:>7}",
        "account", "failures", "IPs", "locks", "locked"
    ));
    for a in r.accounts.iter().take(10) {
        line(format!(
            "  {:<16} {:>8} {:>6} {:>6} {:>7}",
            a.user,
            a.failures,
            a.distinct_ips,
            a.locks,
            if a.locked_now { "yes" } else { "no" }
        ));
    }
    line(format!("\nSource IPs: {} (top 10)", r.sources.len()));
    line(format!(
        "  {:<16} {:>8} {:>9}  {:<19}  {:<19}",
        "ip", "failures", "accounts", "first seen", "last seen"
    ));
    for s in r.sources.iter().take(10) {
        line(format!(
            "  {:<16} {:>8} {:>9}  {}  {}",
            s.ip, s.failures, s.accounts, s.first_seen, s.last_seen
        ));
    }
    line("\nLockouts and resets:".to_string());
    for e in &r.timeline {
        let detail = match e.kind.as_str() {
            "account_locked" => format!(
                "locked after {} failures ({}) until {}",
                e.failures.unwrap_or(0),
                e.rule.as_deref().unwrap_or("?"),
                e.until.as_deref().unwrap_or("(permanent)")
            ),
            _ => "reset by the help desk".to_string(),
        };
        line(format!("  {}  {:<14} {}", e.at, e.user, detail));
    }
    line("\nSuccessful logins after failures:".to_string());
    for s in &r.successes {
        line(format!(
            "  {}  {} from {} after {} failures{} (failing IPs: {})",
            s.at,
            s.user,
            s.ip,
            s.preceding_failures,
            if s.while_locked { ", WHILE LOCKED" } else { "" },
            s.failing_ips.join(", ")
        ));
    }
    line("\nCampaign alerts (the sidecar's detections, default thresholds):".to_string());
    for a in &r.alerts {
        line(format!(
            "  {} to {}  {:<30} {} account(s), {} source(s), {} events, seq {}-{}",
            a.first_at,
            a.last_at,
            a.name,
            a.account_count,
            a.source_count,
            a.events,
            a.first_seq,
            a.last_seq
        ));
    }
    line(format!("\nSession tokens issued: {}", r.tokens));
    line(format!(
        "Chain verification: {} ({} rows{})",
        if r.verified { "ok" } else { "FAILED" },
        r.verified_rows,
        r.checkpoint
            .as_ref()
            .map(|c| format!(", latest checkpoint at seq {}", c.0))
            .unwrap_or_default()
    ));
    line("\nAgainst the injected campaign:".to_string());
    for c in checks {
        line(format!(
            "  {} {:<28} injected {:<28} found {}",
            if c.ok() { "ok  " } else { "DIFF" },
            c.what,
            c.injected,
            c.found
        ));
    }
    o
}
