//! Prometheus metrics (text exposition format 0.0.4) and the health check,
//! served on `--metrics-listen`: `GET /metrics`, `GET /health`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The mirror's counters and gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    pub rows_auth_log: AtomicU64,
    pub rows_lockout_state: AtomicU64,
    pub rows_checkpoints: AtomicU64,
    pub rows_copied: AtomicU64,
    pub batches: AtomicU64,
    pub mongodb_errors: AtomicU64,
    /// Failed deliveries to the SIEM collector, and CEF lines it took.
    pub siem_errors: AtomicU64,
    pub siem_events: AtomicU64,
    /// Campaign alerts raised, by rule (in `Rule::ALL` order).
    pub alerts: [AtomicU64; 6],
    /// Per tenant: log rows and failures streamed (`--tenant-metrics`);
    /// None while off (one series per tenant: opt-in for cardinality).
    pub tenants: Option<std::sync::Mutex<std::collections::BTreeMap<String, (u64, u64)>>>,
    pub postgres_errors: AtomicU64,
    pub chain_gaps: AtomicU64,
    pub decode_errors: AtomicU64,
    /// Changes to the log that are tampering, seen by this process.
    pub tamper_events: AtomicU64,
    /// Tamper alarms in the store no operator has resolved, and those seen
    /// since the store was last counted.
    pub tamper_unresolved: AtomicI64,
    /// Signed checkpoints written back to PostgreSQL, and those PostgreSQL
    /// disagreed with (its row at the signed size holds other digests, or
    /// is gone).
    pub witness_written_back: AtomicU64,
    pub witness_disagreements: AtomicU64,
    /// Last position acknowledged to PostgreSQL.
    pub acked_lsn: AtomicU64,
    /// Latest WAL end the server reported.
    pub server_wal_end: AtomicU64,
    /// Commit time (Unix µs) of the last acknowledged transaction.
    pub acked_commit_unix_us: AtomicI64,
    /// WAL the slot retains (bytes), sampled periodically.
    pub slot_retained_wal_bytes: AtomicI64,
    /// Unix seconds of the last successful MongoDB write or idle check.
    pub last_progress_unix: AtomicI64,
    /// 1 while the replication stream is connected.
    pub streaming: AtomicI64,
    /// Documents waiting to be written (memory bound check).
    pub pending_rows: AtomicI64,
    /// Commit-to-acknowledgement latencies (µs) of recent transactions.
    pub latencies: std::sync::Mutex<Latencies>,
    /// Commit-to-arrival latencies (µs): the PostgreSQL side of the above.
    pub arrivals: std::sync::Mutex<Latencies>,
}

/// The last 10,000 latencies (at 1,000 transactions/s, the last 10 s), for quantiles.
#[derive(Debug, Default)]
pub struct Latencies {
    ring: Vec<u64>,
    next: usize,
}

impl Latencies {
    const CAPACITY: usize = 10_000;

    pub fn record(&mut self, micros: u64) {
        if self.ring.len() < Self::CAPACITY {
            self.ring.push(micros);
        } else {
            self.ring[self.next] = micros;
            self.next = (self.next + 1) % Self::CAPACITY;
        }
    }

    /// The q-quantile (0..=1) in seconds, if any were recorded.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.ring.is_empty() {
            return None;
        }
        let mut v = self.ring.clone();
        v.sort_unstable();
        let i = ((v.len() - 1) as f64 * q).round() as usize;
        Some(v[i] as f64 / 1e6)
    }

    pub fn clear(&mut self) {
        self.ring.clear();
        self.next = 0;
    }
}

pub fn unix_now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// A label value with `\`, `"` and newlines escaped (the text format's rule).
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Metrics with the per-tenant series on or off.
    pub fn new(per_tenant: bool) -> Metrics {
        Metrics {
            tenants: per_tenant.then(Default::default),
            ..Metrics::default()
        }
    }

    /// Counts a streamed log row of `tenant` in the per-tenant series.
    pub fn tenant_row(&self, tenant: &str, event_type: &str) {
        let Some(t) = &self.tenants else { return };
        let mut t = t.lock().unwrap_or_else(|e| e.into_inner());
        let failed = u64::from(event_type == "login_failed");
        match t.get_mut(tenant) {
            Some(c) => {
                c.0 += 1;
                c.1 += failed;
            }
            None => {
                t.insert(tenant.to_string(), (1, failed));
            }
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let lag_bytes = g(&self.server_wal_end).saturating_sub(g(&self.acked_lsn));
        let acked_at = self.acked_commit_unix_us.load(Ordering::Relaxed);
        let lag_seconds = if acked_at == 0 {
            0.0
        } else {
            ((unix_now_us() - acked_at).max(0)) as f64 / 1e6
        };
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(String, String)]| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, value) in lines {
                out.push_str(&format!("{name}{labels} {value}\n"));
            }
        };
        metric(
            "authaudit_sidecar_rows_mirrored_total",
            "counter",
            "Rows written to MongoDB from the replication stream, by table.",
            &[
                (
                    "{table=\"auth_log\"}".into(),
                    g(&self.rows_auth_log).to_string(),
                ),
                (
                    "{table=\"lockout_state\"}".into(),
                    g(&self.rows_lockout_state).to_string(),
                ),
                (
                    "{table=\"checkpoints\"}".into(),
                    g(&self.rows_checkpoints).to_string(),
                ),
            ],
        );
        let one = |v: String| vec![(String::new(), v)];
        metric(
            "authaudit_sidecar_rows_copied_total",
            "counter",
            "Rows copied by the initial snapshot.",
            &one(g(&self.rows_copied).to_string()),
        );
        metric(
            "authaudit_sidecar_batches_total",
            "counter",
            "Batches written to MongoDB.",
            &one(g(&self.batches).to_string()),
        );
        metric(
            "authaudit_sidecar_errors_total",
            "counter",
            "Errors by source (each retried with back-off).",
            &[
                (
                    "{source=\"mongodb\"}".into(),
                    g(&self.mongodb_errors).to_string(),
                ),
                ("{source=\"siem\"}".into(), g(&self.siem_errors).to_string()),
                (
                    "{source=\"postgres\"}".into(),
                    g(&self.postgres_errors).to_string(),
                ),
                (
                    "{source=\"decode\"}".into(),
                    g(&self.decode_errors).to_string(),
                ),
            ],
        );
        metric(
            "authaudit_sidecar_siem_events_total",
            "counter",
            "CEF lines the SIEM collector took (acknowledged over RELP; written to the socket over TCP and TLS).",
            &one(g(&self.siem_events).to_string()),
        );
        let alerts: Vec<(String, String)> = authaudit_core::detection::Rule::ALL
            .iter()
            .zip(&self.alerts)
            .map(|(r, n)| (format!("{{rule=\"{}\"}}", r.as_str()), g(n).to_string()))
            .collect();
        metric(
            "authaudit_sidecar_alerts_total",
            "counter",
            "Campaign alerts raised by the detections, by rule (a replay after a restart can raise one again, under the same _id).",
            &alerts,
        );
        if let Some(t) = &self.tenants {
            let t = t.lock().unwrap_or_else(|e| e.into_inner());
            let series = |f: fn(&(u64, u64)) -> u64| -> Vec<(String, String)> {
                t.iter()
                    .map(|(k, v)| {
                        (
                            format!("{{tenant=\"{}\"}}", label_value(k)),
                            f(v).to_string(),
                        )
                    })
                    .collect()
            };
            metric(
                "authaudit_sidecar_tenant_events_total",
                "counter",
                "Log rows streamed, by tenant (--tenant-metrics).",
                &series(|v| v.0),
            );
            metric(
                "authaudit_sidecar_tenant_failures_total",
                "counter",
                "login_failed rows streamed, by tenant (--tenant-metrics).",
                &series(|v| v.1),
            );
        }
        metric(
            "authaudit_sidecar_chain_gaps_total",
            "counter",
            "Log rows whose seq or prev_link does not continue the tenant's chain as mirrored.",
            &one(g(&self.chain_gaps).to_string()),
        );
        metric(
            "authaudit_sidecar_tamper_events_total",
            "counter",
            "Updates, deletes and truncates of log rows or checkpoints that arrived over replication outside the recording and retention paths.",
            &one(g(&self.tamper_events).to_string()),
        );
        metric(
            "authaudit_sidecar_tamper_unresolved",
            "gauge",
            "Tamper alarms in the tamper_events collection without a resolved field.",
            &one(self.tamper_unresolved.load(Ordering::Relaxed).to_string()),
        );
        metric(
            "authaudit_sidecar_witness_written_back_total",
            "counter",
            "Signed checkpoints written back to PostgreSQL (authaudit.witness_checkpoints).",
            &one(g(&self.witness_written_back).to_string()),
        );
        metric(
            "authaudit_sidecar_witness_disagreements_total",
            "counter",
            "Signed checkpoints whose tenant row in PostgreSQL no longer holds the signed digests.",
            &one(g(&self.witness_disagreements).to_string()),
        );
        metric(
            "authaudit_sidecar_acked_lsn",
            "gauge",
            "WAL position acknowledged to PostgreSQL (flushed to MongoDB).",
            &one(g(&self.acked_lsn).to_string()),
        );
        metric(
            "authaudit_sidecar_replication_lag_bytes",
            "gauge",
            "Server WAL end minus the acknowledged position.",
            &one(lag_bytes.to_string()),
        );
        metric(
            "authaudit_sidecar_replication_lag_seconds",
            "gauge",
            "Age of the commit last acknowledged.",
            &one(format!("{lag_seconds:.3}")),
        );
        metric(
            "authaudit_sidecar_slot_retained_wal_bytes",
            "gauge",
            "WAL held by the slot (pg_current_wal_lsn() - restart_lsn).",
            &one(self
                .slot_retained_wal_bytes
                .load(Ordering::Relaxed)
                .to_string()),
        );
        metric(
            "authaudit_sidecar_pending_rows",
            "gauge",
            "Decoded rows not yet written.",
            &one(self.pending_rows.load(Ordering::Relaxed).to_string()),
        );
        metric(
            "authaudit_sidecar_streaming",
            "gauge",
            "1 while the replication stream is connected.",
            &one(self.streaming.load(Ordering::Relaxed).to_string()),
        );
        for (name, help, window) in [
            (
                "authaudit_sidecar_commit_to_ack_seconds",
                "From a transaction's commit in PostgreSQL to MongoDB's acknowledgement of its rows (last 10,000 transactions).",
                &self.latencies,
            ),
            (
                "authaudit_sidecar_commit_to_receive_seconds",
                "From a transaction's commit to the arrival of its Commit message (the PostgreSQL and network share of the latency).",
                &self.arrivals,
            ),
        ] {
            let window = window.lock().unwrap_or_else(|e| e.into_inner());
            let lines: Vec<(String, String)> = [0.5, 0.99, 1.0]
                .iter()
                .map(|x| {
                    let v = window.quantile(*x).map_or("NaN".to_string(), |v| format!("{v:.6}"));
                    (format!("{{quantile=\"{x}\"}}"), v)
                })
                .collect();
            metric(name, "summary", help, &lines);
        }
        out
    }

    /// Why the mirror is not healthy (`None`: streaming, progress within
    /// the last 60 seconds, and no unresolved tamper alarm).
    pub fn health(&self) -> Option<String> {
        let now = unix_now_us() / 1_000_000;
        let tampers = self.tamper_unresolved.load(Ordering::Relaxed);
        if tampers > 0 {
            return Some(format!(
                "degraded: {tampers} unresolved tamper alarm(s) in tamper_events (docs/sidecar.md, \"Tamper alarms\")\n"
            ));
        }
        let streaming = self.streaming.load(Ordering::Relaxed) == 1
            && now - self.last_progress_unix.load(Ordering::Relaxed) < 60;
        (!streaming).then(|| "not streaming or no progress\n".to_string())
    }
}

/// Serves `/metrics` and `/health` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let m = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = socket.read(&mut buf).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, body, ctype) = match path {
                "/metrics" => ("200 OK", m.render(), "text/plain; version=0.0.4"),
                "/health" => match m.health() {
                    None => ("200 OK", "ok\n".to_string(), "text/plain"),
                    Some(why) => ("503 Service Unavailable", why, "text/plain"),
                },
                _ => ("404 Not Found", "not found\n".to_string(), "text/plain"),
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(reply.as_bytes()).await;
        });
    }
}
