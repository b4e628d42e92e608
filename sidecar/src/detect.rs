//! Campaign detections in the mirror: every streamed log row goes through
//! `authaudit_core::detection`; each alert becomes a document of the
//! `alerts` collection, a CEF line for the SIEM, and a count in
//! `authaudit_sidecar_alerts_total{rule}`.
//!
//! The thresholds are those of `authaudit_core::detection::Thresholds`,
//! changed for every tenant or one tenant by `--detection-config`:
//!
//! ```toml
//! [default]
//! window_seconds = 600
//! spray_accounts = 10
//!
//! [tenant."agency-1"]
//! spray_accounts = 5
//! ```
//!
//! At each start the rows of the last window are read from PostgreSQL
//! first, so a window that straddles a restart is whole; the stream's
//! replay of rows already taken raises nothing twice (by seq), and an alert
//! raised again has the same `_id`.
//!
//! Accounts and sources are keyed as the lockout engine keys them: each
//! tenant's `account_key_folding` and `ipv6_prefix` are read from
//! `authaudit.lockout_policy`, and the defaults of tenants without a row
//! from the `authaudit.lockout_account_key_folding` and
//! `authaudit.lockout_ipv6_prefix` settings as the sidecar's session sees
//! them, at start and again every few seconds ([`Detections::load_key_rules`]).

use crate::config::DetectionsConfig;
use crate::documents::{self, Get};
use crate::metrics::Metrics;
use crate::siem::SiemEvent;
use authaudit_core::cef::MetadataFields;
use authaudit_core::detection::{Alert, Detector, Event, Rule, Thresholds};
use authaudit_core::identity::{KeyRules, IPV6_PREFIX_RANGE};
use bson::{RawArrayBuf, RawDocumentBuf};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Why the detection configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum DetectionError {
    #[error("detection config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("detection warm-up: {0}")]
    Postgres(#[from] tokio_postgres::Error),
}

/// A table of the configuration file: any threshold, the rest inherited.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Overrides {
    window_seconds: Option<u32>,
    spray_accounts: Option<usize>,
    stuffing_accounts: Option<usize>,
    stuffing_sources: Option<usize>,
    stuffing_max_attempts: Option<f64>,
    distributed_sources: Option<usize>,
    success_after_failures: Option<i32>,
    storm_lockouts: Option<usize>,
}

impl Overrides {
    fn over(&self, base: &Thresholds) -> Thresholds {
        Thresholds {
            window_ms: self
                .window_seconds
                .map_or(base.window_ms, |s| i64::from(s) * 1000),
            spray_accounts: self.spray_accounts.unwrap_or(base.spray_accounts),
            stuffing_accounts: self.stuffing_accounts.unwrap_or(base.stuffing_accounts),
            stuffing_sources: self.stuffing_sources.unwrap_or(base.stuffing_sources),
            stuffing_max_attempts: self
                .stuffing_max_attempts
                .unwrap_or(base.stuffing_max_attempts),
            distributed_sources: self.distributed_sources.unwrap_or(base.distributed_sources),
            success_after_failures: self
                .success_after_failures
                .unwrap_or(base.success_after_failures),
            storm_lockouts: self.storm_lockouts.unwrap_or(base.storm_lockouts),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    default: Overrides,
    #[serde(default)]
    tenant: HashMap<String, Overrides>,
}

/// The thresholds a configuration file sets: for every tenant, and per
/// tenant (each over the file's defaults).
pub fn thresholds(
    path: &Path,
) -> Result<(Thresholds, HashMap<String, Thresholds>), DetectionError> {
    let bad = |message: String| DetectionError::Config {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let file: ConfigFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let default = file.default.over(&Thresholds::default());
    let check = |t: &Thresholds, whose: &str| {
        let positive = t.window_ms > 0
            && t.spray_accounts > 0
            && t.stuffing_accounts > 0
            && t.stuffing_sources > 0
            && t.stuffing_max_attempts > 0.0
            && t.distributed_sources > 0
            && t.success_after_failures > 0
            && t.storm_lockouts > 0;
        if positive {
            Ok(())
        } else {
            Err(bad(format!("{whose}: every threshold must be positive")))
        }
    };
    check(&default, "default")?;
    let mut per = HashMap::new();
    for (tenant, o) in &file.tenant {
        let t = o.over(&default);
        check(&t, &format!("tenant {tenant}"))?;
        per.insert(tenant.clone(), t);
    }
    Ok((default, per))
}

/// The mirror's detector.
pub struct Detections {
    detector: Detector,
    /// Windows evicted, as last reported.
    evictions_reported: u64,
}

/// The key rules `lockout_policy` and the defaults give: (default, per
/// tenant). Values the extension refuses fall back to the default.
fn key_rules_of(
    default_folding: Option<&str>,
    default_prefix: Option<&str>,
    policies: &[(String, Option<String>, Option<String>)],
) -> (KeyRules, HashMap<String, KeyRules>) {
    let base = KeyRules::default();
    let prefix = |p: Option<&str>, or: u8| {
        p.and_then(|p| p.trim().parse::<u8>().ok())
            .filter(|p| IPV6_PREFIX_RANGE.contains(p))
            .unwrap_or(or)
    };
    let default = KeyRules {
        folding: default_folding
            .and_then(|f| f.parse().ok())
            .unwrap_or(base.folding),
        ipv6_prefix: prefix(default_prefix, base.ipv6_prefix),
    };
    let per = policies
        .iter()
        .map(|(tenant, folding, p)| {
            let rules = KeyRules {
                folding: folding
                    .as_deref()
                    .and_then(|f| f.parse().ok())
                    .unwrap_or(default.folding),
                ipv6_prefix: prefix(p.as_deref(), default.ipv6_prefix),
            };
            (tenant.clone(), rules)
        })
        .collect();
    (default, per)
}

impl Detections {
    /// The detector `[detections]` configures (`None` with `--detections
    /// false`).
    pub fn from_config(config: &DetectionsConfig) -> Result<Option<Detections>, DetectionError> {
        if !config.enabled {
            return Ok(None);
        }
        let (default, per) = match &config.config {
            Some(p) => thresholds(p)?,
            None => (Thresholds::default(), HashMap::new()),
        };
        Ok(Some(Detections {
            detector: Detector::new(default, per),
            evictions_reported: 0,
        }))
    }

    /// Reads every tenant's key rules from PostgreSQL (`lockout_policy`,
    /// through its JSON so that any release's table reads) and the
    /// defaults' settings.
    pub async fn load_key_rules(
        &mut self,
        pg: &tokio_postgres::Client,
    ) -> Result<(), DetectionError> {
        let defaults = pg
            .query_one(
                "SELECT current_setting('authaudit.lockout_account_key_folding', true), \
                        current_setting('authaudit.lockout_ipv6_prefix', true)",
                &[],
            )
            .await?;
        let policies: Vec<(String, Option<String>, Option<String>)> = pg
            .query(
                "SELECT p.tenant_id, to_jsonb(p) ->> 'account_key_folding', \
                        to_jsonb(p) ->> 'ipv6_prefix' \
                   FROM authaudit.lockout_policy p",
                &[],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let (default, per) = key_rules_of(
            defaults.get::<_, Option<&str>>(0),
            defaults.get::<_, Option<&str>>(1),
            &policies,
        );
        self.detector.set_key_rules(default, per);
        Ok(())
    }

    /// Windows evicted to stay within the detector's memory since the last
    /// call.
    pub fn take_evictions(&mut self) -> u64 {
        let now = self.detector.evicted();
        std::mem::replace(&mut self.evictions_reported, now).abs_diff(now)
    }

    /// Takes one log row (as text columns); returns its alerts.
    pub fn row(&mut self, get: Get<'_, '_>) -> Vec<Alert> {
        let (Some(tenant), Some(seq), Some(ty), Some(user), Some(at)) = (
            get("tenant_id"),
            get("seq").and_then(|s| s.parse().ok()),
            get("event_type"),
            get("user_id"),
            get("occurred_at").and_then(documents::parse_timestamptz),
        ) else {
            return Vec::new();
        };
        // Only a success's lockout facts feed a rule: other rows' metadata
        // is not read.
        let facts = (ty == "login_success")
            .then(|| get("metadata").map(MetadataFields::read))
            .flatten()
            .unwrap_or_default();
        let source = get("ip").map(documents::host_ip);
        self.detector.observe(&Event {
            tenant,
            seq,
            event_type: ty,
            account: user,
            source,
            at_ms: at.div_euclid(1000),
            preceding_failures: facts.preceding_failures,
            was_locked: facts.was_locked,
        })
    }

    /// Feeds the rows of the last window from PostgreSQL (before the stream
    /// starts); returns the alerts they raise.
    pub async fn warm_up(
        &mut self,
        pg: &tokio_postgres::Client,
    ) -> Result<Vec<Alert>, DetectionError> {
        self.load_key_rules(pg).await?;
        let window_ms = self.detector.longest_window_ms();
        let rows = pg
            .query_raw(
                "SELECT l.tenant_id, l.seq::text, l.event_type, l.user_id, l.ip::text, \
                        l.occurred_at::text, l.metadata::text \
                   FROM authaudit.auth_log l \
                  WHERE l.occurred_at >= now() - $1::int8 * interval '1 millisecond' \
                    AND l.event_type IN ('login_failed', 'login_success', 'account_locked') \
                  ORDER BY l.tenant_id, l.seq",
                [window_ms],
            )
            .await?;
        futures_util::pin_mut!(rows);
        let names = [
            "tenant_id",
            "seq",
            "event_type",
            "user_id",
            "ip",
            "occurred_at",
            "metadata",
        ];
        let mut out = Vec::new();
        // Row by row: the window can hold the whole backlog of a flood.
        while let Some(r) = futures_util::TryStreamExt::try_next(&mut rows).await? {
            let values: Vec<Option<&str>> = (0..names.len()).map(|i| r.get(i)).collect();
            let get = |c: &str| names.iter().position(|n| *n == c).and_then(|i| values[i]);
            out.extend(self.row(&get));
        }
        Ok(out)
    }
}

/// The document of an alert in the `alerts` collection.
pub fn document(a: &Alert, raised_at_us: i64) -> RawDocumentBuf {
    let mut d = RawDocumentBuf::new();
    d.append("_id", a.id());
    d.append("rule", a.rule.as_str());
    d.append("tenant_id", a.tenant.as_str());
    let list = |v: &[String]| {
        let mut arr = RawArrayBuf::new();
        for s in v {
            arr.push(s.as_str());
        }
        arr
    };
    d.append("accounts", list(&a.accounts));
    d.append("sources", list(&a.sources));
    d.append("account_count", a.account_count as i64);
    d.append("source_count", a.source_count as i64);
    d.append("first_at", bson::DateTime::from_millis(a.first_ms));
    d.append("last_at", bson::DateTime::from_millis(a.last_ms));
    d.append("first_seq", a.first_seq);
    d.append("last_seq", a.last_seq);
    d.append("events", a.events as i64);
    d.append("severity", i32::from(a.rule.cef().2));
    d.append(
        "raised_at",
        bson::DateTime::from_millis(raised_at_us.div_euclid(1000)),
    );
    d
}

/// The CEF line of an alert, for the SIEM.
pub fn siem_event(a: &Alert, raised_at_us: i64) -> SiemEvent {
    SiemEvent {
        line: authaudit_core::cef::alert_line(a, env!("CARGO_PKG_VERSION")),
        severity: a.rule.cef().2,
        time_ms: raised_at_us.div_euclid(1000),
    }
}

/// Counts an alert in `authaudit_sidecar_alerts_total{rule}`.
pub fn count(a: &Alert, metrics: &Metrics) {
    let i = Rule::ALL.iter().position(|r| *r == a.rule).unwrap_or(0);
    metrics.alerts[i].inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_sets_defaults_and_tenants_over_them() {
        let dir = std::env::temp_dir().join(format!("authaudit-detect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("d.toml");
        std::fs::write(
            &p,
            "[default]\nwindow_seconds = 60\nspray_accounts = 7\n[tenant.\"agency-1\"]\nspray_accounts = 3\n",
        )
        .unwrap();
        let (d, per) = thresholds(&p).unwrap();
        assert_eq!((d.window_ms, d.spray_accounts), (60_000, 7));
        let a = &per["agency-1"];
        assert_eq!(
            (a.window_ms, a.spray_accounts, a.storm_lockouts),
            (60_000, 3, 5)
        );
        std::fs::write(&p, "[default]\nspray_acounts = 7\n").unwrap();
        assert!(thresholds(&p)
            .unwrap_err()
            .to_string()
            .contains("spray_acounts"));
        std::fs::write(&p, "[tenant.x]\nstorm_lockouts = 0\n").unwrap();
        assert!(thresholds(&p).unwrap_err().to_string().contains("tenant x"));
    }

    #[test]
    fn key_rules_come_from_the_policies_over_the_defaults() {
        let policies = [
            ("exact".to_string(), Some("exact".to_string()), None),
            ("wide".to_string(), None, Some("48".to_string())),
            (
                "bad".to_string(),
                Some("lower".to_string()),
                Some("8".to_string()),
            ),
        ];
        let (d, per) = key_rules_of(Some("canonical"), Some("56"), &policies);
        assert_eq!(d.ipv6_prefix, 56);
        assert_eq!(
            per["exact"].folding,
            authaudit_core::identity::Folding::Exact
        );
        assert_eq!(per["exact"].ipv6_prefix, 56);
        assert_eq!(per["wide"].ipv6_prefix, 48);
        assert_eq!(per["bad"], d, "values the extension refuses: the default");
        let (d, _) = key_rules_of(None, Some(""), &[]);
        assert_eq!(d, KeyRules::default());
    }

    #[test]
    fn rows_as_text_feed_the_detector() {
        let mut d = Detections {
            detector: Detector::new(Thresholds::default(), HashMap::new()),
            evictions_reported: 0,
        };
        let mut raised = Vec::new();
        for i in 0..12 {
            let seq = (i + 1).to_string();
            let user = format!("u{i}");
            let get = |c: &str| match c {
                "tenant_id" => Some("acme"),
                "seq" => Some(seq.as_str()),
                "event_type" => Some("login_failed"),
                "user_id" => Some(user.as_str()),
                "ip" => Some("198.51.100.7/32"),
                "occurred_at" => Some("2026-12-02 10:00:00+00"),
                "metadata" => Some("{}"),
                _ => None,
            };
            raised.extend(d.row(&get));
        }
        assert_eq!(raised.len(), 1);
        assert_eq!(raised[0].sources, ["198.51.100.7"]);
        let doc = document(&raised[0], 1_000_000);
        assert_eq!(doc.get_str("_id").unwrap(), "acme/password_spray/10");
        assert!(siem_event(&raised[0], 0)
            .line
            .contains("|201|Password spray|8|"));
    }
}
