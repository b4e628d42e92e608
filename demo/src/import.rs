//! `authaudit-demo import-sshd`: OpenSSH/PAM syslog files into a tenant's
//! log as history (docs/import.md), through `authaudit.import_events`, then
//! one `authaudit.rebuild_lockout`. Parsing is `sshd.rs`.

use crate::sshd::{uuid_text, Reader, Skip};
use authaudit_core::lockout_effect::iso_utc;
use postgres::Client;
use std::collections::BTreeMap;
use std::path::Path;

/// Events per `import_events` call (below `authaudit.max_batch_events`).
const BATCH: usize = 500;

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub lines: usize,
    pub failures: usize,
    pub successes: usize,
    /// Events this run recorded; the rest were recorded by an earlier run.
    pub recorded: i64,
    pub already_recorded: i64,
    pub skipped: BTreeMap<Skip, usize>,
    /// `rebuild_lockout`'s (events, accounts, sources, pairs), when run.
    pub rebuilt: Option<(i64, i64, i64, i64)>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} lines: {} failures and {} successes; {} recorded now, {} recorded before",
            self.lines, self.failures, self.successes, self.recorded, self.already_recorded
        )?;
        for (why, n) in &self.skipped {
            writeln!(f, "skipped {n}: {why}")?;
        }
        match self.rebuilt {
            Some((e, a, s, p)) => write!(
                f,
                "lockout state rebuilt from {e} events: {a} accounts, {s} sources, {p} (source, account) pairs"
            ),
            None => write!(f, "lockout state not rebuilt (call authaudit.rebuild_lockout)"),
        }
    }
}

/// Where the events go and how year-less times are read.
pub struct Options<'a> {
    pub tenant: &'a str,
    pub org: Option<&'a str>,
    /// The year of each file's first year-less line.
    pub year: i32,
    pub utc_offset_s: i64,
    pub rebuild: bool,
}

fn send(
    c: &mut Client,
    events: &mut Vec<serde_json::Value>,
    r: &mut Report,
) -> Result<(), postgres::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let json = serde_json::Value::Array(std::mem::take(events)).to_string();
    let row = c.query_one(
        "SELECT count(*) FILTER (WHERE recorded_at >= statement_timestamp()), count(*) \
           FROM authaudit.import_events($1::text::jsonb, rebuild => false)",
        &[&json],
    )?;
    let (new, all): (i64, i64) = (row.get(0), row.get(1));
    r.recorded += new;
    r.already_recorded += all - new;
    Ok(())
}

/// Imports `files` (each read from its first line on) into `o.tenant`.
pub fn import(
    c: &mut Client,
    files: &[&Path],
    o: &Options<'_>,
) -> Result<Report, Box<dyn std::error::Error>> {
    let mut r = Report::default();
    let mut events = Vec::with_capacity(BATCH);
    for path in files {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut reader = Reader::new(o.tenant, o.year, o.utc_offset_s);
        for line in text.lines() {
            r.lines += 1;
            match reader.line(line) {
                Err(why) => *r.skipped.entry(why).or_default() += 1,
                Ok(attempts) => {
                    for a in attempts {
                        if a.success {
                            r.successes += 1;
                        } else {
                            r.failures += 1;
                        }
                        events.push(serde_json::json!({
                            "log_id": uuid_text(&a.log_id),
                            "tenant_id": o.tenant,
                            "org_id": o.org,
                            "event_type": if a.success { "login_success" } else { "login_failed" },
                            "user_id": a.user,
                            "channel": "ssh",
                            "ip": a.ip.to_string(),
                            "occurred_at": iso_utc(a.at_us),
                            "metadata": {
                                "source": "sshd", "host": a.host, "method": a.method,
                                "port": a.port, "invalid_user": a.invalid_user,
                            },
                        }));
                        if events.len() == BATCH {
                            send(c, &mut events, &mut r)?;
                        }
                    }
                }
            }
        }
    }
    send(c, &mut events, &mut r)?;
    if o.rebuild {
        let row = c.query_one(
            "SELECT events, accounts, sources, pairs FROM authaudit.rebuild_lockout($1)",
            &[&o.tenant],
        )?;
        r.rebuilt = Some((row.get(0), row.get(1), row.get(2), row.get(3)));
    }
    Ok(r)
}

/// `+HH:MM` / `-HH:MM` as seconds east of UTC.
pub fn parse_offset(s: &str) -> Option<i64> {
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = s[1..].split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 14 && m < 60).then_some(sign * (h * 3600 + m * 60))
}
