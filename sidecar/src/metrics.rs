//! The mirror's Prometheus metrics, kept in a `prometheus-client` registry,
//! and the health check. `http.rs` serves them.
//!
//! The registry encodes OpenMetrics 1.0 text; [`Metrics::render`] gives it
//! to scrapers that ask for OpenMetrics (Prometheus does) and, through
//! [`classic`], the Prometheus text format 0.0.4 to the others (promtool,
//! agents that read only 0.0.4).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A series' labels: one static name and value.
type Label = [(&'static str, &'static str); 1];
/// A per-tenant series' label.
type TenantLabel = [(&'static str, String); 1];

/// The latency histograms' bucket bounds, in seconds: fine from 1 ms to
/// 100 ms (the range of a healthy mirror), coarse up to a minute.
const LATENCY_BUCKETS: [f64; 21] = [
    0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Why the HTTP endpoint refused or closed a connection (`http.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpRefusal {
    /// Past `--metrics-max-connections`: closed once accepted.
    ConnectionLimit,
    /// An accept failed for want of resources (file descriptors, memory).
    AcceptError,
    /// A request head longer than `--metrics-max-header-bytes` (431).
    HeaderTooLarge,
    /// No complete request head within `--metrics-header-timeout-ms`.
    HeaderTimeout,
    /// Open longer than `http::CONNECTION_LIFETIME`.
    Lifetime,
}

impl HttpRefusal {
    pub const ALL: [HttpRefusal; 5] = [
        HttpRefusal::ConnectionLimit,
        HttpRefusal::AcceptError,
        HttpRefusal::HeaderTooLarge,
        HttpRefusal::HeaderTimeout,
        HttpRefusal::Lifetime,
    ];

    /// Its label value.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpRefusal::ConnectionLimit => "connection_limit",
            HttpRefusal::AcceptError => "accept_error",
            HttpRefusal::HeaderTooLarge => "header_too_large",
            HttpRefusal::HeaderTimeout => "header_timeout",
            HttpRefusal::Lifetime => "lifetime",
        }
    }
}

/// The mirror's counters, gauges and histograms (handles into the
/// registry), and the state the health check reads.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub rows_auth_log: Counter,
    pub rows_lockout_state: Counter,
    pub rows_checkpoints: Counter,
    pub rows_copied: Counter,
    pub batches: Counter,
    pub mongodb_errors: Counter,
    /// Failed deliveries to the SIEM collector, and CEF lines it took.
    pub siem_errors: Counter,
    pub siem_events: Counter,
    pub postgres_errors: Counter,
    pub decode_errors: Counter,
    /// Campaign alerts raised, by rule (in `Rule::ALL` order).
    pub alerts: [Counter; 6],
    /// Detection windows dropped to keep the detector's memory bounded.
    pub detection_evictions: Counter,
    /// Per tenant: log rows and failures streamed (`--tenant-metrics`);
    /// None while off (one series per tenant: opt-in for cardinality).
    tenants: Option<(Family<TenantLabel, Counter>, Family<TenantLabel, Counter>)>,
    pub chain_gaps: Counter,
    /// Log rows mirrored in a fallback form, by reason (in
    /// `documents::Fallback::ALL` order).
    pub fallback_rows: [Counter; 5],
    /// Changes to the log that are tampering, seen by this process.
    pub tamper_events: Counter,
    /// Tamper alarms in the store no operator has resolved, and those seen
    /// since the store was last counted.
    pub tamper_unresolved: Gauge,
    /// Signed checkpoints written back to PostgreSQL, and those PostgreSQL
    /// disagreed with (its row at the signed size holds other digests, or
    /// is gone).
    pub witness_written_back: Counter,
    pub witness_disagreements: Counter,
    /// WAL the slot retains (bytes), sampled periodically.
    pub slot_retained_wal_bytes: Gauge,
    /// 1 while the replication stream is connected.
    pub streaming: Gauge,
    /// Documents waiting to be written (memory bound check).
    pub pending_rows: Gauge,
    /// Commit to acknowledgement by every destination, per transaction.
    pub commit_to_ack: Histogram,
    /// Commit to the arrival of its Commit message: the PostgreSQL side of
    /// the above.
    pub commit_to_receive: Histogram,
    /// The positions the lag gauges are computed from at each scrape.
    pub positions: Arc<Positions>,
    /// Whether each destination answers (`destination_up`, `/health`).
    pub destinations: Arc<Destinations>,
    /// Log rows restored from the mirror by the documented procedure
    /// (`restore`), recorded as resolved alarms.
    pub restorations: Counter,
    /// Findings of the store's custody check (a store that lost or
    /// replaced what was acknowledged to it), raised as tamper alarms.
    pub store_findings: Counter,
    /// Unix seconds of the last successful MongoDB write or idle check.
    pub last_progress_unix: AtomicI64,
    /// Open connections of the HTTP endpoint, and those it refused or
    /// closed, by reason (in `HttpRefusal::ALL` order).
    pub http_connections: Gauge,
    pub(crate) http_refused: [Counter; 5],
}

/// Positions of the stream, read at each scrape for the acknowledged
/// position and the replication lag.
#[derive(Debug)]
pub struct Positions {
    /// Last position acknowledged to PostgreSQL.
    pub acked_lsn: AtomicU64,
    /// Latest WAL end the server reported.
    pub server_wal_end: AtomicU64,
    /// Commit time (Unix µs) of the last acknowledged transaction.
    pub acked_commit_unix_us: AtomicI64,
    /// `pg_current_wal_lsn() - confirmed_flush_lsn` of the slot, as last
    /// sampled on a connection of its own (-1: not sampled yet). The lag
    /// the server sees, whatever the stream is doing.
    pub slot_lag_bytes: AtomicI64,
}

impl Default for Positions {
    fn default() -> Self {
        Positions {
            acked_lsn: AtomicU64::new(0),
            server_wal_end: AtomicU64::new(0),
            acked_commit_unix_us: AtomicI64::new(0),
            slot_lag_bytes: AtomicI64::new(-1),
        }
    }
}

/// A destination of the batches, as `/health` and `destination_up` see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestinationKind {
    /// The document store (MongoDB).
    Store,
    /// The SIEM collector.
    Siem,
}

impl DestinationKind {
    pub const ALL: [DestinationKind; 2] = [DestinationKind::Store, DestinationKind::Siem];

    /// Its label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Store => "mongodb",
            DestinationKind::Siem => "siem",
        }
    }

    fn described(self) -> &'static str {
        match self {
            DestinationKind::Store => "the document store",
            DestinationKind::Siem => "the SIEM collector",
        }
    }
}

/// One destination's state: failing since when, an attempt in flight
/// since when, and the last error.
#[derive(Debug, Default)]
pub struct DestinationState {
    /// Unix µs of the first failed attempt (or ping) since the last
    /// success; 0 while it answers.
    failing_since: AtomicI64,
    /// Unix µs the delivery in flight started; 0 when none is.
    attempt_since: AtomicI64,
    /// Unix µs of the first failed ping since the last answer; 0 while
    /// pings are answered (the store only: `monitor.rs`).
    ping_failing_since: AtomicI64,
    /// Whether the destination is configured (the SIEM is optional).
    configured: std::sync::atomic::AtomicBool,
    last_error: Mutex<String>,
    ping_error: Mutex<String>,
}

/// Every destination's state, read at each scrape and health check.
#[derive(Debug, Default)]
pub struct Destinations {
    states: [DestinationState; 2],
    /// A delivery in flight longer than this (µs) counts as unavailable.
    timeout_us: AtomicI64,
}

impl Destinations {
    fn state(&self, d: DestinationKind) -> &DestinationState {
        &self.states[d as usize]
    }

    /// The destination takes part (the store always does).
    pub fn configure(&self, d: DestinationKind) {
        self.state(d).configured.store(true, Ordering::Relaxed);
    }

    /// A delivery attempt starts.
    pub fn attempt(&self, d: DestinationKind) {
        self.state(d)
            .attempt_since
            .store(unix_now_us(), Ordering::Relaxed);
    }

    /// A delivery to the destination succeeded.
    pub fn succeeded(&self, d: DestinationKind) {
        let s = self.state(d);
        s.attempt_since.store(0, Ordering::Relaxed);
        s.failing_since.store(0, Ordering::Relaxed);
        s.ping_failing_since.store(0, Ordering::Relaxed);
    }

    /// The destination answered a ping.
    pub fn succeeded_ping(&self, d: DestinationKind) {
        self.state(d).ping_failing_since.store(0, Ordering::Relaxed);
    }

    /// A ping went unanswered or failed with `error`.
    pub fn failed_ping(&self, d: DestinationKind, error: &str) {
        let s = self.state(d);
        let _ = s.ping_failing_since.compare_exchange(
            0,
            unix_now_us(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        *s.ping_error.lock().unwrap_or_else(|e| e.into_inner()) = error.to_owned();
    }

    /// An attempt (or ping) failed with `error`.
    pub fn failed(&self, d: DestinationKind, error: &str) {
        let s = self.state(d);
        s.attempt_since.store(0, Ordering::Relaxed);
        let _ = s.failing_since.compare_exchange(
            0,
            unix_now_us(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        *s.last_error.lock().unwrap_or_else(|e| e.into_inner()) = error.to_owned();
    }

    /// Why `d` is unavailable now, if it is: failing, or a delivery in
    /// flight for longer than the health timeout.
    pub fn unavailable(&self, d: DestinationKind) -> Option<String> {
        let s = self.state(d);
        if !s.configured.load(Ordering::Relaxed) {
            return None;
        }
        let now = unix_now_us();
        let (failing, error) = match (
            s.failing_since.load(Ordering::Relaxed),
            s.ping_failing_since.load(Ordering::Relaxed),
        ) {
            (0, 0) => (0, &s.last_error),
            (0, p) => (p, &s.ping_error),
            (f, _) => (f, &s.last_error),
        };
        if failing != 0 {
            let error = error.lock().unwrap_or_else(|e| e.into_inner()).clone();
            return Some(format!(
                "{} is unavailable for {} s: {error}",
                d.described(),
                (now - failing).max(0) / 1_000_000
            ));
        }
        let attempt = s.attempt_since.load(Ordering::Relaxed);
        let timeout = self.timeout_us.load(Ordering::Relaxed);
        (attempt != 0 && timeout > 0 && now - attempt >= timeout).then(|| {
            format!(
                "{} has not answered a delivery for {} s",
                d.described(),
                (now - attempt) / 1_000_000
            )
        })
    }
}

impl Collector for Destinations {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let g = Family::<Label, Gauge>::default();
        for d in DestinationKind::ALL {
            if self.state(d).configured.load(Ordering::Relaxed) {
                let up = i64::from(self.unavailable(d).is_none());
                g.get_or_create(&[("destination", d.as_str())]).set(up);
            }
        }
        let e = encoder.encode_descriptor(
            "destination_up",
            "1 while the destination answers, 0 while it fails or a delivery to it has waited longer than --health-timeout-ms.",
            None,
            g.metric_type(),
        )?;
        g.encode(e)
    }
}

impl Collector for Positions {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let acked = self.acked_lsn.load(Ordering::Relaxed);
        let wal_end = self.server_wal_end.load(Ordering::Relaxed);
        let acked_at = self.acked_commit_unix_us.load(Ordering::Relaxed);
        let lag_seconds = if acked_at == 0 {
            0.0
        } else {
            ((unix_now_us() - acked_at).max(0)) as f64 / 1e6
        };
        let gauge = |encoder: &mut DescriptorEncoder,
                     name: &str,
                     help: &str,
                     unit: Option<&Unit>,
                     g: &dyn EncodeMetric| {
            // The registry ends its own metrics' help with a full stop.
            let help = format!("{help}.");
            let e = encoder.encode_descriptor(name, &help, unit, g.metric_type())?;
            g.encode(e)
        };
        gauge(
            &mut encoder,
            "acked_lsn",
            "WAL position acknowledged to PostgreSQL (delivered to every destination)",
            None,
            &ConstGauge::new(acked),
        )?;
        let slot_lag = self.slot_lag_bytes.load(Ordering::Relaxed);
        gauge(
            &mut encoder,
            "replication_lag",
            "The server's current WAL position minus the slot's confirmed_flush_lsn",
            Some(&Unit::Bytes),
            &ConstGauge::new(if slot_lag >= 0 {
                slot_lag as u64
            } else {
                wal_end.saturating_sub(acked)
            }),
        )?;
        gauge(
            &mut encoder,
            "replication_lag",
            "Age of the commit last acknowledged",
            Some(&Unit::Seconds),
            &ConstGauge::new(lag_seconds),
        )
    }
}

pub fn unix_now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The registry, registering series in the order they are exposed.
struct Reg(Registry);

impl Reg {
    fn family(&mut self, name: &str, help: &str) -> Family<Label, Counter> {
        let f = Family::<Label, Counter>::default();
        self.0.register(name, help, f.clone());
        f
    }

    fn counter(&mut self, name: &str, help: &str) -> Counter {
        let c = Counter::default();
        self.0.register(name, help, c.clone());
        c
    }

    fn gauge(&mut self, name: &str, help: &str) -> Gauge {
        let g = Gauge::default();
        self.0.register(name, help, g.clone());
        g
    }

    fn histogram(&mut self, name: &str, help: &str) -> Histogram {
        let h = Histogram::new(LATENCY_BUCKETS);
        self.0
            .register_with_unit(name, help, Unit::Seconds, h.clone());
        h
    }
}

/// The series of the stream's rows, batches, errors and detections.
struct StreamSeries {
    rows: Family<Label, Counter>,
    rows_copied: Counter,
    batches: Counter,
    errors: Family<Label, Counter>,
    siem_events: Counter,
    alerts: Family<Label, Counter>,
    detection_evictions: Counter,
    tenants: Option<(Family<TenantLabel, Counter>, Family<TenantLabel, Counter>)>,
    chain_gaps: Counter,
    fallbacks: Family<Label, Counter>,
}

impl StreamSeries {
    fn register(r: &mut Reg, per_tenant: bool) -> StreamSeries {
        let rows = r.family(
            "rows_mirrored",
            "Rows written to MongoDB from the replication stream, by table",
        );
        let rows_copied = r.counter("rows_copied", "Rows copied by the initial snapshot");
        let batches = r.counter("batches", "Batches written to MongoDB");
        let errors = r.family("errors", "Errors by source (each retried with back-off)");
        let siem_events = r.counter("siem_events",
            "CEF lines the SIEM collector took (acknowledged over RELP; written to the socket over TCP and TLS)",
        );
        let alerts = r.family("alerts",
            "Campaign alerts raised by the detections, by rule (a replay after a restart can raise one again, under the same _id)",
        );
        let detection_evictions = r.counter("detection_evictions",
            "Detection windows dropped to keep the detector within its key limit (the lightest first: a flood of keys)",
        );
        let tenants = per_tenant.then(|| {
            let events = Family::<TenantLabel, Counter>::default();
            let failures = Family::<TenantLabel, Counter>::default();
            r.0.register(
                "tenant_events",
                "Log rows streamed, by tenant (--tenant-metrics)",
                events.clone(),
            );
            r.0.register(
                "tenant_failures",
                "login_failed rows streamed, by tenant (--tenant-metrics)",
                failures.clone(),
            );
            (events, failures)
        });
        let chain_gaps = r.counter(
            "chain_gaps",
            "Log rows whose seq or prev_link does not continue the tenant's chain as mirrored",
        );
        let fallbacks = r.family("fallback_rows",
            "Log rows mirrored in a fallback form (metadata as its text only, or fields in parts), by reason",
        );
        StreamSeries {
            rows,
            rows_copied,
            batches,
            errors,
            siem_events,
            alerts,
            detection_evictions,
            tenants,
            chain_gaps,
            fallbacks,
        }
    }
}

/// The series of alarms, the witness, the positions and the destinations.
struct AlarmSeries {
    tamper_events: Counter,
    tamper_unresolved: Gauge,
    witness_written_back: Counter,
    witness_disagreements: Counter,
    positions: Arc<Positions>,
    destinations: Arc<Destinations>,
    restorations: Counter,
    store_findings: Counter,
}

impl AlarmSeries {
    fn register(r: &mut Reg) -> AlarmSeries {
        let tamper_events = r.counter("tamper_events",
            "Updates, deletes and truncates of log rows or checkpoints that arrived over replication outside the recording and retention paths",
        );
        let tamper_unresolved = r.gauge(
            "tamper_unresolved",
            "Tamper alarms in the tamper_events collection without a resolved field",
        );
        let witness_written_back = r.counter(
            "witness_written_back",
            "Signed checkpoints written back to PostgreSQL (authaudit.witness_checkpoints)",
        );
        let witness_disagreements = r.counter(
            "witness_disagreements",
            "Signed checkpoints whose tenant row in PostgreSQL no longer holds the signed digests",
        );
        let positions = Arc::new(Positions::default());
        r.0.register_collector(Box::new(positions.clone()));
        let destinations = Arc::new(Destinations::default());
        destinations.configure(DestinationKind::Store);
        r.0.register_collector(Box::new(destinations.clone()));
        let restorations = r.counter("restorations",
            "Log rows restored from the mirror by the restore procedure, recorded as resolved alarms",
        );
        let store_findings = r.counter("store_findings",
            "Findings of the store's custody check: an empty or replaced store, or acknowledged rows it no longer holds",
        );
        AlarmSeries {
            tamper_events,
            tamper_unresolved,
            witness_written_back,
            witness_disagreements,
            positions,
            destinations,
            restorations,
            store_findings,
        }
    }
}

/// The series of the slot, the stream's state, latencies and the endpoint.
struct HealthSeries {
    slot_retained: Gauge,
    pending_rows: Gauge,
    streaming: Gauge,
    commit_to_ack: Histogram,
    commit_to_receive: Histogram,
    http_connections: Gauge,
    http_refused: Family<Label, Counter>,
}

impl HealthSeries {
    fn register(r: &mut Reg) -> HealthSeries {
        let slot_retained = Gauge::default();
        r.0.register_with_unit(
            "slot_retained_wal",
            "WAL held by the slot (pg_current_wal_lsn() - restart_lsn)",
            Unit::Bytes,
            slot_retained.clone(),
        );
        let pending_rows = r.gauge("pending_rows", "Decoded rows not yet written");
        let streaming = r.gauge("streaming", "1 while the replication stream is connected");
        let commit_to_ack = r.histogram("commit_to_ack",
            "From a transaction's commit in PostgreSQL to the acknowledgement of its rows by every destination",
        );
        let commit_to_receive = r.histogram("commit_to_receive",
            "From a transaction's commit to the arrival of its Commit message (the PostgreSQL and network share of the latency)",
        );
        let http_connections = r.gauge(
            "http_connections",
            "Open connections of the metrics and health endpoint",
        );
        let http_refused = r.family("http_refused",
            "Connections of the metrics and health endpoint refused or closed by its limits, by reason",
        );
        HealthSeries {
            slot_retained,
            pending_rows,
            streaming,
            commit_to_ack,
            commit_to_receive,
            http_connections,
            http_refused,
        }
    }
}

impl Metrics {
    /// The metrics `[metrics]` configures: the per-tenant series and the
    /// health timeout.
    pub fn from_config(config: &crate::config::MetricsConfig) -> Metrics {
        let m = Metrics::new(config.per_tenant);
        m.set_health_timeout(Duration::from_millis(config.health_timeout_ms));
        m
    }

    /// Metrics with the per-tenant series on or off.
    pub fn new(per_tenant: bool) -> Metrics {
        let mut r = Reg(Registry::with_prefix("authaudit_sidecar"));
        let s = StreamSeries::register(&mut r, per_tenant);
        let a = AlarmSeries::register(&mut r);
        let h = HealthSeries::register(&mut r);
        let series = |f: &Family<Label, Counter>, key: &'static str, value: &'static str| {
            f.get_or_create(&[(key, value)]).clone()
        };
        let rules = authaudit_core::detection::Rule::ALL;
        Metrics {
            rows_auth_log: series(&s.rows, "table", "auth_log"),
            rows_lockout_state: series(&s.rows, "table", "lockout_state"),
            rows_checkpoints: series(&s.rows, "table", "checkpoints"),
            rows_copied: s.rows_copied,
            batches: s.batches,
            mongodb_errors: series(&s.errors, "source", "mongodb"),
            siem_errors: series(&s.errors, "source", "siem"),
            postgres_errors: series(&s.errors, "source", "postgres"),
            decode_errors: series(&s.errors, "source", "decode"),
            siem_events: s.siem_events,
            alerts: std::array::from_fn(|i| series(&s.alerts, "rule", rules[i].as_str())),
            detection_evictions: s.detection_evictions,
            tenants: s.tenants,
            chain_gaps: s.chain_gaps,
            fallback_rows: std::array::from_fn(|i| {
                series(
                    &s.fallbacks,
                    "reason",
                    crate::documents::Fallback::ALL[i].as_str(),
                )
            }),
            tamper_events: a.tamper_events,
            tamper_unresolved: a.tamper_unresolved,
            witness_written_back: a.witness_written_back,
            witness_disagreements: a.witness_disagreements,
            slot_retained_wal_bytes: h.slot_retained,
            streaming: h.streaming,
            pending_rows: h.pending_rows,
            commit_to_ack: h.commit_to_ack,
            commit_to_receive: h.commit_to_receive,
            positions: a.positions,
            destinations: a.destinations,
            restorations: a.restorations,
            store_findings: a.store_findings,
            last_progress_unix: AtomicI64::new(0),
            http_connections: h.http_connections,
            http_refused: std::array::from_fn(|i| {
                series(&h.http_refused, "reason", HttpRefusal::ALL[i].as_str())
            }),
            registry: r.0,
        }
    }

    /// Counts a connection the HTTP endpoint refused or closed.
    pub fn http_refused(&self, why: HttpRefusal) {
        let i = HttpRefusal::ALL.iter().position(|x| *x == why).unwrap_or(0);
        self.http_refused[i].inc();
    }

    /// Counts a log row mirrored in the fallback form `f`.
    pub fn fallback(&self, f: crate::documents::Fallback) {
        let i = crate::documents::Fallback::ALL
            .iter()
            .position(|x| *x == f)
            .unwrap_or(0);
        self.fallback_rows[i].inc();
    }

    /// Whether the per-tenant series are on.
    pub fn per_tenant(&self) -> bool {
        self.tenants.is_some()
    }

    /// Counts a streamed log row of `tenant` in the per-tenant series.
    pub fn tenant_row(&self, tenant: &str, event_type: &str) {
        let Some((events, failures)) = &self.tenants else {
            return;
        };
        let key = [("tenant", label_value(tenant))];
        events.get_or_create(&key).inc();
        let failed = failures.get_or_create(&key);
        if event_type == "login_failed" {
            failed.inc();
        }
    }

    /// The exposition: OpenMetrics 1.0 text when `openmetrics`, else the
    /// Prometheus text format 0.0.4.
    pub fn render(&self, openmetrics: bool) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        if openmetrics {
            out
        } else {
            classic(&out)
        }
    }

    /// The delivery time past which `/health` calls a destination
    /// unavailable (`--health-timeout-ms`).
    pub fn set_health_timeout(&self, t: Duration) {
        self.destinations
            .timeout_us
            .store(t.as_micros() as i64, Ordering::Relaxed);
    }

    /// Why the mirror is not healthy (`None`: streaming, progress within
    /// the last 60 seconds, every destination answering, and no
    /// unresolved tamper alarm).
    pub fn health(&self) -> Option<String> {
        let now = unix_now_us() / 1_000_000;
        let tampers = self.tamper_unresolved.get();
        if tampers > 0 {
            return Some(format!(
                "degraded: {tampers} unresolved tamper alarm(s) in tamper_events (docs/sidecar.md, \"Tamper alarms\"; `authaudit-sidecar alarms list`)\n"
            ));
        }
        for d in DestinationKind::ALL {
            if let Some(why) = self.destinations.unavailable(d) {
                return Some(format!("degraded: {why}\n"));
            }
        }
        let streaming =
            self.streaming.get() == 1 && now - self.last_progress_unix.load(Ordering::Relaxed) < 60;
        (!streaming).then(|| "not streaming or no progress\n".to_string())
    }
}

/// A label value escaped as both text formats want (`\\`, `\"`, `\n`).
/// The library writes label values as it is given them; tenant ids, the
/// one label from outside, are letters, digits, `.`, `_` and `-` when
/// recorded, and are escaped all the same.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// OpenMetrics text as the Prometheus text format 0.0.4. The samples are
/// the same; 0.0.4 names a counter's family as its samples (`…_total`),
/// and has no `# UNIT` or `# EOF` line.
pub fn classic(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let descriptor = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match descriptor {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(p);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_names_counter_families_by_their_samples_and_drops_unit_and_eof() {
        let om = "# HELP a_rows Rows.\n# TYPE a_rows counter\na_rows_total{table=\"x\"} 3\n\
                  # HELP a_lag Lag.\n# TYPE a_lag_seconds gauge\n# UNIT a_lag_seconds seconds\na_lag_seconds 0.5\n# EOF\n";
        assert_eq!(
            classic(om),
            "# HELP a_rows_total Rows.\n# TYPE a_rows_total counter\na_rows_total{table=\"x\"} 3\n\
             # HELP a_lag Lag.\n# TYPE a_lag_seconds gauge\na_lag_seconds 0.5\n"
        );
    }

    #[test]
    fn the_registry_holds_every_series_under_the_prefix() {
        let m = Metrics::new(true);
        m.rows_auth_log.inc_by(7);
        m.alerts[0].inc();
        m.tenant_row("t\"1", "login_failed");
        m.commit_to_ack.observe(0.012);
        m.positions.acked_lsn.store(100, Ordering::Relaxed);
        m.positions.server_wal_end.store(164, Ordering::Relaxed);
        let om = m.render(true);
        assert!(om.ends_with("# EOF\n"), "{om}");
        for want in [
            "authaudit_sidecar_rows_mirrored_total{table=\"auth_log\"} 7\n",
            "authaudit_sidecar_alerts_total{rule=\"password_spray\"} 1\n",
            "authaudit_sidecar_tenant_failures_total{tenant=\"t\\\"1\"} 1\n",
            "authaudit_sidecar_commit_to_ack_seconds_bucket{le=\"0.015\"} 1\n",
            "authaudit_sidecar_commit_to_ack_seconds_count 1\n",
            "authaudit_sidecar_acked_lsn 100\n",
            "authaudit_sidecar_replication_lag_bytes 64\n",
            "# TYPE authaudit_sidecar_rows_mirrored counter\n",
        ] {
            assert!(om.contains(want), "{want} not in\n{om}");
        }
        let text = m.render(false);
        assert!(
            text.contains("# TYPE authaudit_sidecar_rows_mirrored_total counter\n"),
            "{text}"
        );
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        assert!(!Metrics::new(false).render(false).contains("tenant_"));
    }
}
