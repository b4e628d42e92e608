//! The mirror: copies what committed before its slot existed, then streams
//! the publication and writes every committed row to MongoDB (and, when one
//! is configured, to the SIEM as CEF), acknowledging a position to
//! PostgreSQL only after every destination acknowledged everything up to it
//! (`pipeline.rs`). Crash anywhere and the slot replays from the last acknowledged
//! position; the writes are idempotent, so nothing is lost or doubled.
//! Changes to the log other than appends and the recorded retention path
//! are tampering (`tamper.rs`): never applied, always reported.

use crate::config::Options;
use crate::custody::{Copy, Custody};
use crate::destination::Batch;
use crate::destination::{deliver_with_retry, Destination, SiemDestination, StoreDestination};
use crate::documents::{self, Table};
use crate::metrics::{unix_now_us, DestinationKind, Metrics};
use crate::mongo_store::{MongoStore, StoreError};
use crate::pgoutput::{Decoder, Message, Row};
use crate::pipeline::{Handed, Limits, Pipeline, PipelineError};
use crate::siem::{Siem, SiemError};
use crate::tamper::TxChanges;
use crate::write_back::WriteBack;
use bson::doc;
use futures_util::TryStreamExt;
use pgwire_replication::protocol::replication::pg_to_unix_timestamp;
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Why a session ended: a transient fault is retried with back-off, a
/// configuration fault ([`MirrorError::is_configuration`]) ends the process.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("{0}")]
    Misconfigured(#[from] crate::preflight::Misconfigured),
    #[error("PostgreSQL: {}", crate::pg::with_causes(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("replication: {0}")]
    Replication(#[from] pgwire_replication::PgWireError),
    #[error("{0}")]
    MongoStore(#[from] StoreError),
    #[error("decoding: {0}")]
    Decode(String),
    #[error("replication stream ended")]
    StreamEnded,
    #[error("{0}")]
    Pg(#[from] crate::pg::PgError),
    #[error("{0}")]
    Witness(#[from] crate::witness::WitnessError),
    #[error("{0}")]
    Siem(#[from] SiemError),
    #[error("{0}")]
    Pipeline(#[from] PipelineError),
    #[error("{0}")]
    Detection(#[from] crate::detect::DetectionError),
    #[error("{0}")]
    Custody(#[from] crate::custody::CustodyError),
    #[error("the document store changed under the session: {0}")]
    StoreChanged(String),
    #[error("a delivery task of the {0} ended")]
    DeliveryEnded(&'static str),
}

impl MirrorError {
    /// Whether retrying cannot help: PostgreSQL, the store or a file named
    /// by an option refuses the configuration. The process then exits with
    /// the error (docs/sidecar.md, "Exit codes").
    pub fn is_configuration(&self) -> bool {
        use crate::detect::DetectionError;
        use crate::witness::WitnessError;
        match self {
            MirrorError::Misconfigured(_) => true,
            MirrorError::Pg(e) => e.is_configuration(),
            MirrorError::MongoStore(e) => e.is_configuration(),
            MirrorError::Witness(WitnessError::Read { .. } | WitnessError::Key(_)) => true,
            MirrorError::Detection(DetectionError::Config { .. }) => true,
            MirrorError::Siem(SiemError::Tls(_)) => true,
            MirrorError::Custody(e) => e.is_configuration(),
            _ => false,
        }
    }
}

/// Runs the mirror until `shutdown` turns true.
pub async fn run(
    opts: &Options,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), MirrorError> {
    let mut backoff = Duration::from_millis(100);
    let max_backoff = Duration::from_millis(opts.max_backoff_ms.max(100));
    let _lag = crate::monitor::LagSampler::spawn(opts, metrics.clone());
    loop {
        let started = Instant::now();
        match session(opts, &metrics, &mut shutdown).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_configuration() => return Err(e),
            Err(e) => {
                metrics.streaming.set(0);
                // A store that ends the session shows on /health at once
                // (the next session's first answer from it clears that).
                match &e {
                    MirrorError::MongoStore(_) | MirrorError::StoreChanged(_) => {
                        metrics.mongodb_errors.inc();
                        metrics
                            .destinations
                            .failed_ping(DestinationKind::Store, &e.to_string());
                    }
                    MirrorError::Siem(_) => {
                        metrics.siem_errors.inc();
                    }
                    MirrorError::Decode(_) => {
                        metrics.decode_errors.inc();
                    }
                    _ => {
                        metrics.postgres_errors.inc();
                    }
                }
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = Duration::from_millis(100);
                }
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "mirror session failed; resuming from the last acknowledged position");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}

/// Copies every row committed before the slot existed (idempotent; run
/// again after a crash until it completes). With a SIEM, `heads` gets
/// each tenant's last log seq in the copy.
async fn initial_copy(
    pg: &mut tokio_postgres::Client,
    destinations: &[Arc<dyn Destination>],
    mut heads: Option<&mut HashMap<String, i64>>,
    opts: &Options,
    metrics: &Metrics,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<bool, MirrorError> {
    let tx = pg
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    for table in [Table::AuthLog, Table::Checkpoints, Table::LockoutState] {
        let cols = table.columns();
        let sql = table.copy_query("");
        let rows = tx.query_raw(&sql, std::iter::empty::<i32>()).await?;
        futures_util::pin_mut!(rows);
        let mut batch = Batch::default();
        let mut copied = 0u64;
        let mut done = false;
        let progress = Duration::from_millis(opts.progress_interval_ms);
        let mut logged = Instant::now();
        while !done {
            if logged.elapsed() >= progress {
                logged = Instant::now();
                tracing::info!(
                    table = table.collection(),
                    rows = copied + batch.rows() as u64,
                    "initial copy under way"
                );
            }
            let row = rows.try_next().await?;
            done = row.is_none();
            if let Some(row) = row {
                let values: Vec<Option<String>> = (0..cols.len()).map(|i| row.get(i)).collect();
                let get = |c: &str| {
                    cols.iter()
                        .position(|x| *x == c)
                        .and_then(|i| values[i].as_deref())
                };
                // A lockout row is the final state of its last_seq: replays
                // of older or the same transactions from the slot do not
                // move it back.
                let decode = |e: documents::RowError| MirrorError::Decode(e.to_string());
                if let (Some(heads), Table::AuthLog) = (heads.as_deref_mut(), table) {
                    let tenant = get("tenant_id").unwrap_or_default();
                    let seq = get("seq").and_then(|s| s.parse().ok()).unwrap_or(0);
                    let head = heads.entry(tenant.to_string()).or_insert(seq);
                    *head = (*head).max(seq);
                    batch.siem.push(crate::siem::event(&get).map_err(decode)?);
                }
                match documents::document(table, &get, i64::MAX).map_err(decode)? {
                    documents::Document::Log(l) => {
                        report_fallback(&l, metrics);
                        batch.put_log(l);
                    }
                    documents::Document::Checkpoint(d) => batch.checkpoints.push(d),
                    documents::Document::Lockout(c) => batch.put_lockout(c),
                }
            }
            // Stopping: the copy is repeated at the next start.
            if *shutdown.borrow() {
                return Ok(false);
            }
            // A full batch, or the rest at the end of the table.
            if batch.rows() >= opts.batch_rows || (done && !batch.is_empty()) {
                for d in destinations {
                    if !deliver_with_retry(d.as_ref(), &batch, opts, metrics, shutdown).await {
                        return Ok(false);
                    }
                }
                copied += batch.rows() as u64;
                metrics.rows_copied.inc_by(batch.rows() as u64);
                batch = Batch::default();
            }
        }
        tracing::info!(
            table = table.collection(),
            rows = copied,
            "initial copy done"
        );
    }
    tx.commit().await?;
    Ok(true)
}

/// The alarm of a log row mirrored in a fallback form: a warning naming
/// the row and the reason, and a count in `fallback_rows_total{reason}`.
fn report_fallback(l: &documents::LogDocument, metrics: &Metrics) {
    let Some(f) = l.fallback else {
        return;
    };
    metrics.fallback(f);
    tracing::warn!(
        reason = f.as_str(),
        tenant = l.doc.get_str("tenant_id").unwrap_or_default(),
        seq = l.doc.get_i64("seq").unwrap_or_default(),
        log_id = l.doc.get_str("log_id").unwrap_or_default(),
        parts = l.parts.len(),
        "a log row the store cannot hold as it is is mirrored in its fallback form: metadata as metadata_text only (docs/sidecar.md, \"Rows the store cannot hold as they are\")"
    );
}

/// The alarm of one change that is tampering: an error log line naming
/// the tenant and seq, and the counters `/health` reads.
fn report_tamper(t: &crate::tamper::Tamper, metrics: &Metrics) {
    metrics.tamper_events.inc();
    metrics.tamper_unresolved.inc();
    tracing::error!(
        kind = t.kind.as_str(),
        collection = t.table.collection(),
        tenant = t.tenant.as_deref().unwrap_or("(every tenant)"),
        seq = t.seq,
        log_id = t.log_id.as_deref(),
        "tamper: {} on {} arrived over replication outside the recording and retention paths; the mirror keeps the original (docs/sidecar.md, \"Tamper alarms\")",
        t.kind.as_str().to_uppercase(),
        t.table.collection()
    );
}

/// Checks each tenant's chain continuity as log rows arrive.
struct ChainWatch {
    last: HashMap<String, (i64, String)>,
}

impl ChainWatch {
    async fn check(
        &mut self,
        store: &MongoStore,
        doc: &bson::RawDocumentBuf,
        metrics: &Metrics,
    ) -> Result<(), StoreError> {
        let tenant = doc.get_str("tenant_id").unwrap_or_default();
        let seq = doc.get_i64("seq").unwrap_or(0);
        let prev = doc.get_str("prev_link").unwrap_or_default();
        let link = doc.get_str("link_sha256").unwrap_or_default();
        if !self.last.contains_key(tenant) {
            if let Some(known) = store.last_link(tenant).await? {
                self.last.insert(tenant.to_string(), known);
            }
        }
        let ok = match self.last.get(tenant) {
            // A replay of a row already mirrored.
            Some((last_seq, _)) if seq <= *last_seq => return Ok(()),
            Some((last_seq, last_link)) => seq == last_seq + 1 && prev == last_link,
            None if seq == 1 => true,
            // First row seen after retention: it continues a checkpoint.
            None => store.checkpoint_link(tenant, seq - 1).await?.as_deref() == Some(prev),
        };
        if !ok {
            metrics.chain_gaps.inc();
            let expected = self.last.get(tenant).map_or(1, |(s, _)| s + 1);
            tracing::error!(tenant = %tenant, seq, expected_seq = expected, "chain gap: this row does not continue the tenant's mirrored chain (mirrored anyway)");
        }
        match self.last.get_mut(tenant) {
            Some((last_seq, last_link)) => {
                *last_seq = seq;
                last_link.clear();
                last_link.push_str(link);
            }
            None => {
                self.last
                    .insert(tenant.to_string(), (seq, link.to_string()));
            }
        }
        Ok(())
    }
}

/// Reports `lsn` (committed at `commit_us`) to PostgreSQL as flushed, if it
/// moves the position forward.
fn acknowledge(
    repl: &ReplicationClient,
    acked: &mut Lsn,
    lsn: Lsn,
    commit_us: i64,
    metrics: &Metrics,
) {
    if lsn > *acked {
        repl.update_applied_lsn(lsn);
        *acked = lsn;
        metrics
            .positions
            .acked_lsn
            .store(lsn.as_u64(), Ordering::Relaxed);
        metrics
            .positions
            .acked_commit_unix_us
            .store(commit_us, Ordering::Relaxed);
    }
}

/// The batches every destination has now delivered: their rows are
/// counted, their latencies recorded, and the newest position among them
/// acknowledged.
fn release(
    released: Vec<Handed<Lsn>>,
    receipts: &mut VecDeque<(u64, (u64, u64, u64))>,
    repl: &ReplicationClient,
    acked: &mut Lsn,
    metrics: &Metrics,
) {
    let now_us = unix_now_us();
    for h in released {
        while let Some((n, counts)) = receipts.front().copied() {
            if n > h.number {
                break;
            }
            receipts.pop_front();
            if n == h.number {
                metrics.rows_auth_log.inc_by(counts.0);
                metrics.rows_checkpoints.inc_by(counts.1);
                metrics.rows_lockout_state.inc_by(counts.2);
            }
        }
        for c in &h.commits {
            metrics
                .commit_to_ack
                .observe((now_us - c).max(0) as f64 / 1e6);
        }
        if let (Some(lsn), Some(commit_us)) = (h.position, h.commits.last()) {
            acknowledge(repl, acked, lsn, *commit_us, metrics);
        }
    }
    if receipts.is_empty() {
        metrics.pending_rows.set(0);
    }
}

/// One task per destination delivers the batches handed to it, in order,
/// and reports each (destination, batch, delivered); aborted with the
/// session.
struct Deliveries {
    queues: Vec<mpsc::Sender<(u64, Arc<Batch>)>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    names: Vec<&'static str>,
}

impl Deliveries {
    fn start(
        destinations: &[Arc<dyn Destination>],
        outstanding: usize,
        opts: &Options,
        metrics: &Arc<Metrics>,
        shutdown: &watch::Receiver<bool>,
        done: mpsc::UnboundedSender<(usize, u64, bool)>,
    ) -> Deliveries {
        let mut d = Deliveries {
            queues: Vec::new(),
            tasks: Vec::new(),
            names: Vec::new(),
        };
        for (i, dest) in destinations.iter().enumerate() {
            let (tx, mut rx) = mpsc::channel::<(u64, Arc<Batch>)>(outstanding.max(1));
            let (dest, opts, metrics, mut stop, done) = (
                dest.clone(),
                opts.clone(),
                metrics.clone(),
                shutdown.clone(),
                done.clone(),
            );
            d.names.push(dest.name());
            d.queues.push(tx);
            d.tasks.push(tokio::spawn(async move {
                while let Some((number, batch)) = rx.recv().await {
                    let started = Instant::now();
                    let ok =
                        deliver_with_retry(dest.as_ref(), &batch, &opts, &metrics, &mut stop).await;
                    tracing::debug!(
                        destination = dest.name(),
                        rows = batch.rows(),
                        ms = started.elapsed().as_millis() as u64,
                        "batch delivered"
                    );
                    if done.send((i, number, ok)).is_err() || !ok {
                        break;
                    }
                }
            }));
        }
        d
    }

    /// Hands a batch to every destination (each queue has room: the
    /// pipeline holds no more batches than a queue does).
    async fn hand(&self, number: u64, batch: Batch) -> Result<(), MirrorError> {
        let batch = Arc::new(batch);
        for (q, name) in self.queues.iter().zip(&self.names) {
            q.send((number, batch.clone()))
                .await
                .map_err(|_| MirrorError::DeliveryEnded(name))?;
        }
        Ok(())
    }
}

impl Drop for Deliveries {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A replication error as a configuration fault when it is one (a role or
/// pg_hba.conf that refuses replication connections).
fn replication_refused(e: pgwire_replication::PgWireError, opts: &Options) -> MirrorError {
    match &e {
        pgwire_replication::PgWireError::Server(text)
        | pgwire_replication::PgWireError::Auth(text) => {
            match crate::preflight::Misconfigured::of_replication(text, opts) {
                Some(m) => m.into(),
                None => e.into(),
            }
        }
        _ => e.into(),
    }
}

fn row_getter<'r>(row: &'r Row) -> impl Fn(&str) -> Option<&'r str> + 'r {
    move |c: &str| row.text(c)
}

/// Creates the publication if it is missing (before the slot: pgoutput reads
/// publications as of each change it decodes). Without the function (an
/// extension older than 0.2.0) or the right to run it, the publication must
/// exist already; if it does not, that is a configuration fault.
async fn ensure_publication(
    pg: &tokio_postgres::Client,
    publication: &str,
    database: &str,
) -> Result<(), MirrorError> {
    let why = match pg
        .query_one(
            "SELECT authaudit.ensure_mirror_publication($1)",
            &[&publication],
        )
        .await
    {
        Ok(_) => {
            tracing::debug!(%publication, "publication in place");
            return Ok(());
        }
        Err(e) => crate::pg::with_causes(&e),
    };
    let exists = pg
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await?
        .is_some();
    if exists {
        tracing::warn!(%publication, error = %why, "could not ensure the publication; using it as it is");
        Ok(())
    } else {
        Err(crate::preflight::Misconfigured::NoPublication {
            publication: publication.to_owned(),
            database: database.to_owned(),
            why,
        }
        .into())
    }
}

/// The alerts the store does not hold yet (by `_id`: the same evidence
/// gives the same id): those a replay after a restart raises again are
/// dropped.
async fn not_raised(
    store: &MongoStore,
    alerts: Vec<authaudit_core::detection::Alert>,
) -> Result<Vec<authaudit_core::detection::Alert>, StoreError> {
    let mut held = std::collections::HashSet::new();
    for chunk in alerts.chunks(1000) {
        let ids: Vec<String> = chunk.iter().map(|a| a.id()).collect();
        let mut c = store
            .raw_collection("alerts")
            .find(doc! {"_id": {"$in": &ids}})
            .projection(doc! {"_id": 1})
            .await?;
        while c.advance().await? {
            if let Ok(id) = c.current().get_str("_id") {
                held.insert(id.to_owned());
            }
        }
    }
    Ok(alerts
        .into_iter()
        .filter(|a| !held.contains(&a.id()))
        .collect())
}

/// Adds alerts to a batch: documents for the store, CEF lines for the SIEM,
/// counts and a log line each.
fn raise(
    alerts: Vec<authaudit_core::detection::Alert>,
    batch: &mut Batch,
    siem: bool,
    metrics: &Metrics,
) {
    let now = unix_now_us();
    for a in alerts {
        crate::detect::count(&a, metrics);
        tracing::warn!(
            rule = a.rule.as_str(),
            tenant = %a.tenant,
            accounts = a.account_count,
            sources = a.source_count,
            first_seq = a.first_seq,
            last_seq = a.last_seq,
            "campaign alert"
        );
        batch.alerts.push(crate::detect::document(&a, now));
        if siem {
            batch.siem.push(crate::detect::siem_event(&a, now));
        }
    }
}

/// The store, then the SIEM when one is configured.
fn destinations(
    store: &MongoStore,
    siem: Option<&Arc<Siem>>,
    write_back: Option<WriteBack>,
    custody: Option<&Arc<Custody>>,
    opts: &Options,
    metrics: &Arc<Metrics>,
) -> Vec<Arc<dyn Destination>> {
    let mut to: Vec<Arc<dyn Destination>> = vec![Arc::new(StoreDestination {
        mongo: store.clone(),
        witness_log: opts.witness_log.clone(),
        write_back,
        custody: custody.cloned(),
        metrics: metrics.clone(),
    })];
    if let Some(s) = siem {
        metrics
            .destinations
            .configure(crate::metrics::DestinationKind::Siem);
        to.push(Arc::new(SiemDestination {
            siem: s.clone(),
            metrics: metrics.clone(),
        }));
    }
    to
}

async fn session(
    opts: &Options,
    metrics: &Arc<Metrics>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), MirrorError> {
    let store = MongoStore::from_options(opts).await?;
    store.ensure_indexes().await?;
    if store.first_format_left().await? {
        tracing::warn!("the store holds log documents of the first format (written before release 0.6.0, keyed by log_id alone): run `authaudit-sidecar migrate` once to move them to the tenant_id/log_id key; until then `verify` reports them as differing (docs/sidecar.md, \"Migrating a mirror of the first format\")");
    }
    let siem = Siem::from_options(opts)?;
    let mut pg = crate::pg::connect(opts).await?;
    // Nothing is created where the mirror cannot run.
    let facts = crate::preflight::Facts::read(&pg).await?;
    facts.check_mirror()?;
    ensure_publication(&pg, &opts.publication, &facts.database).await?;
    let slot = pg
        .query_opt(
            "SELECT database::text, plugin::text, slot_type = 'logical' FROM pg_catalog.pg_replication_slots \
             WHERE slot_name = $1",
            &[&opts.slot],
        )
        .await?
        .map(|r| crate::preflight::SlotFacts {
            database: r.get(0),
            plugin: r.get(1),
            logical: r.get(2),
        });
    if let Some(s) = &slot {
        s.check(&opts.slot, &facts.database)?;
    }

    // The store's custody: does it hold what was acknowledged to it?
    let mut witness = crate::witness::Witness::from_options(opts)?;
    let custody = match &opts.state_file {
        Some(p) => Some(Arc::new(Custody::open(p, &opts.slot)?)),
        None => None,
    };
    let state = store.state(&opts.slot).await?;
    let copied = state
        .as_ref()
        .and_then(|d| d.get_bool("copied").ok())
        .unwrap_or(false);
    let verifier = witness.as_ref().map(|w| w.verifier());
    let acknowledged =
        crate::custody::acknowledged(opts, custody.as_deref(), verifier.as_ref(), &pg).await?;
    let held_id = match state.as_ref().map(|d| d.get_str("store_id").ok()) {
        Some(Some(id)) => Some(id.to_owned()),
        // The mirror state of a release before identities (its copy done):
        // the store holds the mirror, and no mark names another store. It
        // is given its identity now instead of being taken for an emptied
        // one.
        Some(None) if copied && acknowledged.store_id.is_none() => {
            let id = crate::custody::new_store_id();
            store.set_state(&opts.slot, doc! {"store_id": &id}).await?;
            tracing::info!(store_id = %id, "the store's mirror state has no identity (an earlier release wrote it): given one");
            Some(id)
        }
        _ => None,
    };
    let verdict = crate::custody::check(
        &store,
        &opts.slot,
        &acknowledged,
        slot.is_some(),
        held_id.clone(),
    )
    .await?;
    for f in &verdict.open {
        metrics.store_findings.inc();
        tracing::error!(
            alarm = %f.id(&opts.slot),
            kind = f.kind(),
            tenant = f.tenant(),
            seq = f.seq(),
            "STORE: {f}; nothing is copied from PostgreSQL until an operator resolves the alarm (docs/sidecar.md, \"The store's custody\")"
        );
    }
    for (f, note) in &verdict.accepted {
        tracing::info!(
            kind = f.kind(),
            "store finding resolved by an operator: {f} ({note})"
        );
    }
    metrics
        .tamper_unresolved
        .set(store.unresolved_tampers().await? as i64);
    // The store's identity: given before the slot exists, so that a slot
    // always has a store that says it was given one.
    let store_id = match (&held_id, verdict.open.is_empty()) {
        (Some(id), true) => Some(id.clone()),
        (None, true) => {
            let id = crate::custody::new_store_id();
            store.set_state(&opts.slot, doc! {"store_id": &id}).await?;
            Some(id)
        }
        (_, false) => held_id.clone(),
    };
    if let (Some(c), Some(id), true) = (&custody, &store_id, verdict.open.is_empty()) {
        c.adopt(id)?;
    }
    if slot.is_none() {
        let created = pg
            .query_one(
                "SELECT lsn::text FROM pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&opts.slot],
            )
            .await?;
        let lsn: String = created.get(0);
        tracing::info!(slot = %opts.slot, consistent_point = %lsn, "created the replication slot");
        // A new slot (first start, or the old one was lost): what committed
        // before it is to be copied, whatever the state says.
        store
            .set_state(
                &opts.slot,
                doc! {"copied": false, "slot_created_at_lsn": lsn},
            )
            .await?;
    }
    // The slot's lag and the store's health, watched apart from the stream.
    let mut monitor =
        crate::monitor::Monitor::spawn(opts, store.clone(), metrics.clone(), store_id.clone());
    let accepted = || Copy::Accepted(verdict.accepted.iter().map(|(_, n)| n.clone()).collect());
    let copy = match (verdict.open.is_empty(), &slot, copied) {
        (false, _, _) => None,
        (true, None, _) if state.is_none() && acknowledged.is_empty() => Some(Copy::FirstStart),
        (true, _, _) if !verdict.accepted.is_empty() && (slot.is_none() || !copied) => {
            Some(accepted())
        }
        (true, None, _) => Some(Copy::SlotLost),
        (true, Some(_), false) => Some(Copy::Unfinished),
        (true, Some(_), true) => None,
    };
    if let (false, true) = (verdict.open.is_empty(), slot.is_none() || !copied) {
        tracing::warn!("the copy of the rows committed before the slot waits for the store's alarms to be resolved");
    }

    // Each tenant's last log seq the copy sent to the SIEM: a row committed
    // after the slot existed and before the copy's snapshot is in both, and
    // the SIEM receives it once (the store's writes are idempotent). A
    // tenant's links become visible in seq order (each waits for its
    // predecessor's transaction to end before committing: heads.rs), so
    // the copy holds every row of the tenant up to its last one.
    let mut copied_heads: HashMap<String, i64> = HashMap::new();
    if let Some(copy) = copy {
        tracing::info!("{}", copy.describe());
        let to: Vec<Arc<dyn Destination>> =
            destinations(&store, siem.as_ref(), None, custody.as_ref(), opts, metrics);
        let heads = siem.is_some().then_some(&mut copied_heads);
        if !initial_copy(&mut pg, &to, heads, opts, metrics, shutdown).await? {
            return Ok(());
        }
        store.set_state(&opts.slot, doc! {"copied": true}).await?;
    }

    // The detections' windows from the rows of the last window.
    let mut detections = crate::detect::Detections::from_options(opts)?;
    let mut warm_alerts = Vec::new();
    if let Some(d) = detections.as_mut() {
        let started = Instant::now();
        // An alert the store holds was raised before the restart: it is
        // neither raised nor counted again.
        warm_alerts = not_raised(&store, d.warm_up(&pg).await?).await?;
        tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            alerts = warm_alerts.len(),
            "detection windows read from PostgreSQL"
        );
    }

    // The witness's trees before the stream starts, so that it never waits.
    if let Some(w) = witness.as_mut() {
        let started = Instant::now();
        let n = w.preload(&store).await?;
        tracing::info!(
            tenants = n,
            ms = started.elapsed().as_millis() as u64,
            "witness trees grown from their last signed checkpoints"
        );
    }
    let mut cfg = ReplicationConfig::new(
        opts.pg_host.clone(),
        opts.pg_user.clone(),
        opts.pg_password.expose().to_string(),
        opts.pg_database.clone(),
        opts.slot.clone(),
        opts.publication.clone(),
    );
    cfg.port = opts.pg_port;
    cfg.tls = crate::tls::replication_tls(opts);
    cfg.start_lsn = Lsn::ZERO;
    // Synchronous mirroring: each acknowledged commit is reported at once
    // (a synchronous commit waits for it); otherwise status updates are
    // throttled to the interval.
    cfg.status_interval = if opts.synchronous {
        Duration::from_millis(1)
    } else {
        Duration::from_millis(opts.status_interval_ms.max(100))
    };
    cfg.idle_wakeup_interval = Duration::from_millis(opts.status_interval_ms.max(100));
    cfg.buffer_events = 1024;
    cfg.options = Some(crate::config::SESSION_OPTIONS.to_string());
    cfg.application_name = Some(opts.application_name.clone());
    let mut repl = ReplicationClient::connect(cfg)
        .await
        .map_err(|e| replication_refused(e, opts))?;
    // Connecting, logging in and START_REPLICATION run in the client's
    // worker: a refusal shows here.
    repl.wait_started()
        .await
        .map_err(|e| replication_refused(e, opts))?;
    metrics.streaming.set(1);
    metrics
        .last_progress_unix
        .store(unix_now_us() / 1_000_000, Ordering::Relaxed);
    tracing::info!(slot = %opts.slot, publication = %opts.publication, "streaming");

    let mut decoder = Decoder::new();
    let mut watch = ChainWatch {
        last: HashMap::new(),
    };
    let mut acked = Lsn::ZERO;
    let mut tx_ordinal = 0u32;
    let mut tx_changes = TxChanges::default();
    let write_back = (witness.is_some() && opts.witness_write_back)
        .then(|| WriteBack::spawn(opts.clone(), store.clone(), metrics.clone()));
    let to = destinations(
        &store,
        siem.as_ref(),
        write_back,
        custody.as_ref(),
        opts,
        metrics,
    );
    // Synchronous mirroring hands a commit to the destinations as soon as
    // it arrives (transactions arriving during a delivery share the next).
    let wait = if opts.synchronous {
        Duration::ZERO
    } else {
        Duration::from_millis(opts.batch_wait_ms.max(1))
    };
    // One batch is delivered while the next is decoded; two in flight
    // measured slower (0.46 against 0.52 of pg_recvlogical draining 500,000
    // events): batches left sooner, smaller, and repeated lockout upserts
    // that one larger batch folds into one.
    let limits = Limits {
        rows: opts.batch_rows,
        bytes: opts.batch_bytes,
        wait,
        outstanding: 1,
    };
    let mut pipeline: Pipeline<Batch, Lsn> = Pipeline::new(to.len(), limits);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let deliveries = Deliveries::start(&to, limits.outstanding, opts, metrics, shutdown, done_tx);
    if !warm_alerts.is_empty() {
        raise(warm_alerts, pipeline.open(), siem.is_some(), metrics);
        pipeline.changed(Instant::now());
    }
    // (batch number, its log, checkpoint and lockout documents), until
    // every destination delivered it.
    let mut receipts: VecDeque<(u64, (u64, u64, u64))> = VecDeque::new();
    let mut tick = tokio::time::interval(Duration::from_millis(opts.batch_wait_ms.clamp(1, 50)));
    let mut sample = tokio::time::interval(Duration::from_secs(5));

    loop {
        if pipeline.due(Instant::now()) {
            if !pipeline.has_room() {
                // Decoding waits for the destinations: memory stays bounded.
                let done = tokio::select! {
                    done = done_rx.recv() => done,
                    _ = monitor.store_changed.changed() => {
                        let why = monitor.store_changed.borrow().clone().unwrap_or_default();
                        return Err(MirrorError::StoreChanged(why));
                    }
                };
                let Some((i, number, ok)) = done else {
                    return Err(MirrorError::DeliveryEnded("mirror"));
                };
                if !ok {
                    break;
                }
                let released = pipeline.acknowledge(i, number)?;
                release(released, &mut receipts, &repl, &mut acked, metrics);
                continue;
            }
            let (number, batch) = pipeline.hand_out();
            metrics.pending_rows.set(batch.rows() as i64);
            receipts.push_back((number, batch.counts()));
            deliveries.hand(number, batch).await?;
            continue;
        }
        tokio::select! {
            ev = repl.recv() => {
                let Some(ev) = ev? else { return Err(MirrorError::StreamEnded) };
                match ev {
                    ReplicationEvent::Begin { .. } => {
                        pipeline.begin();
                        tx_ordinal = 0;
                        tx_changes = TxChanges::default();
                    }
                    ReplicationEvent::XLogData { data, .. } => {
                        tx_ordinal += 1;
                        let msg = decoder.decode(&data).map_err(|e| MirrorError::Decode(e.to_string()))?;
                        let table_of = |row: &Row| Table::from_name(&row.relation.schema, &row.relation.name);
                        let (row, kind) = match msg {
                            Message::Insert(row) => (row, "insert"),
                            // The log and its checkpoints only grow: the mirror
                            // keeps the original of an updated row.
                            Message::Update { old, new } => match table_of(&new) {
                                Some(t @ (Table::AuthLog | Table::Checkpoints)) => {
                                    // The row as it was (replica identity full),
                                    // else as it is now.
                                    tx_changes.updated(t, &row_getter(old.as_ref().unwrap_or(&new)));
                                    continue;
                                }
                                _ => (new, "update"),
                            },
                            // Deletes are never applied (the mirror keeps the
                            // rows retention removes; its own retention applies
                            // there); those of the log are judged at commit.
                            Message::Delete(old) => {
                                if let Some(t @ (Table::AuthLog | Table::Checkpoints)) = table_of(&old) {
                                    tx_changes.deleted(t, &row_getter(&old));
                                }
                                continue;
                            }
                            Message::Truncate { relations } => {
                                for oid in relations {
                                    let table = decoder.known_relation(oid).and_then(|r| Table::from_name(&r.schema, &r.name));
                                    if let Some(t @ (Table::AuthLog | Table::Checkpoints)) = table {
                                        tx_changes.truncated(t);
                                    }
                                }
                                continue;
                            }
                            // Relations and the rest: nothing to write.
                            _ => continue,
                        };
                        let Some(table) = table_of(&row) else { continue };
                        pipeline.open().bytes += data.len();
                        let get = row_getter(&row);
                        if table == Table::AuthLog && kind == "insert" {
                            tx_changes.inserted_log(&get);
                        }
                        let refused = |e: documents::RowError| MirrorError::Decode(format!("{kind} on {}: {e}", table.collection()));
                        match table {
                            Table::AuthLog => {
                                let l = documents::auth_log(&get).map_err(refused)?;
                                report_fallback(&l, metrics);
                                let d = &l.doc;
                                if metrics.per_tenant() {
                                    metrics.tenant_row(get("tenant_id").unwrap_or_default(), get("event_type").unwrap_or_default());
                                }
                                watch.check(&store, d, metrics).await?;
                                if let Some(w) = witness.as_mut() {
                                    w.row(&store, d).await?;
                                }
                                let in_copy = copied_heads.get(d.get_str("tenant_id").unwrap_or_default())
                                    .is_some_and(|h| d.get_i64("seq").unwrap_or(0) <= *h);
                                if siem.is_some() && !in_copy {
                                    pipeline.open().siem.push(crate::siem::event(&get).map_err(refused)?);
                                }
                                if let Some(det) = detections.as_mut() {
                                    let mut alerts = det.row(&get);
                                    if !alerts.is_empty() {
                                        alerts = not_raised(&store, alerts).await?;
                                    }
                                    metrics.detection_evictions.inc_by(det.take_evictions());
                                    raise(alerts, pipeline.open(), siem.is_some(), metrics);
                                }
                                tx_changes.inserted_document(&l.doc);
                                pipeline.open().put_log(l);
                            }
                            Table::Checkpoints => pipeline.open().checkpoints.push(documents::checkpoint(&get).map_err(refused)?),
                            Table::LockoutState => pipeline.open().put_lockout(documents::lockout_state(&get, i64::from(tx_ordinal)).map_err(refused)?),
                        }
                        pipeline.changed(Instant::now());
                    }
                    ReplicationEvent::Commit { end_lsn, commit_time_micros, .. } => {
                        let commit_us = pg_to_unix_timestamp(commit_time_micros);
                        let mut judged = std::mem::take(&mut tx_changes).judge();
                        for (i, r) in std::mem::take(&mut judged.restorations).into_iter().enumerate() {
                            let original = store.raw_collection("auth_log")
                                .find_one(doc! {"tenant_id": &r.tenant, "seq": r.seq})
                                .await
                                .map_err(StoreError::from)?;
                            if original.as_deref().is_some_and(|o| r.restores(o)) {
                                judged.restored(&r);
                                metrics.restorations.inc();
                                tracing::info!(tenant = %r.tenant, seq = r.seq, log_id = %r.log_id, "a log row was restored from the mirror's original; recorded as a resolved alarm");
                                pipeline.open().tamper.push(r.document(&format!("{end_lsn}/restore/{i}"), &end_lsn.to_string(), commit_us));
                            } else {
                                tracing::error!(tenant = %r.tenant, seq = r.seq, "a transaction says it restores a log row from the mirror but does not insert the mirror's original: its changes are judged as any other");
                            }
                        }
                        for (i, t) in judged.tampers.into_iter().enumerate() {
                            report_tamper(&t, metrics);
                            pipeline.open().tamper.push(t.document(&format!("{end_lsn}/{i}"), &end_lsn.to_string(), commit_us));
                        }
                        if let Some(w) = witness.as_mut() {
                            w.sign_due(pipeline.open());
                        }
                        pipeline.commit(end_lsn, commit_us, Instant::now());
                        metrics.commit_to_receive.observe((unix_now_us() - commit_us).max(0) as f64 / 1e6);
                    }
                    ReplicationEvent::KeepAlive { wal_end, .. } => {
                        metrics.positions.server_wal_end.store(wal_end.as_u64(), Ordering::Relaxed);
                        // Idle heartbeat: with nothing of ours pending, every
                        // change before wal_end is mirrored, so the slot may
                        // move on (an idle publication holds no WAL).
                        if pipeline.idle() && wal_end > acked {
                            acknowledge(&repl, &mut acked, wal_end, unix_now_us(), metrics);
                            metrics.last_progress_unix.store(unix_now_us() / 1_000_000, Ordering::Relaxed);
                        }
                    }
                    ReplicationEvent::Message { transactional: true, prefix, content, .. }
                        if prefix == crate::operator::RESTORE_MESSAGE => tx_changes.restoring(&content),
                    ReplicationEvent::Message { .. } | ReplicationEvent::StoppedAt { .. } => {}
                }
            }
            done = done_rx.recv() => {
                let Some((i, number, ok)) = done else {
                    return Err(MirrorError::DeliveryEnded("mirror"));
                };
                // An abandoned delivery (shutdown): nothing after it counts.
                if !ok {
                    break;
                }
                let released = pipeline.acknowledge(i, number)?;
                release(released, &mut receipts, &repl, &mut acked, metrics);
            }
            _ = monitor.store_changed.changed() => {
                let why = monitor.store_changed.borrow().clone().unwrap_or_default();
                return Err(MirrorError::StoreChanged(why));
            }
            _ = tick.tick() => {
                // A tenant with new rows and no checkpoint for the interval.
                if let (false, Some(w)) = (pipeline.in_transaction(), witness.as_mut()) {
                    if w.sign_due(pipeline.open()) {
                        pipeline.changed(Instant::now());
                    }
                }
            }
            _ = sample.tick() => {
                // A tenant's key rules changed since: the detections follow.
                if let Some(det) = detections.as_mut() {
                    if let Err(e) = det.load_key_rules(&pg).await {
                        tracing::warn!(error = %e, "could not read the tenants' key rules; keeping the last ones");
                    }
                }
                // With every alarm seen so far written, the store's count is
                // current (an operator resolves alarms there).
                let quiet = pipeline.open_ref().is_empty() && pipeline.outstanding() == 0;
                if quiet && tx_changes.is_empty() {
                    if let Ok(n) = store.unresolved_tampers().await {
                        metrics.tamper_unresolved.set(n as i64);
                    }
                }
                metrics.last_progress_unix.fetch_max(
                    if pipeline.open_ref().is_empty() { unix_now_us() / 1_000_000 } else { 0 }, Ordering::Relaxed);
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    // In order; after an abandoned delivery nothing later
                    // may be acknowledged.
                    let mut ok = true;
                    while ok && pipeline.outstanding() > 0 {
                        match done_rx.recv().await {
                            Some((i, number, true)) => {
                                let released = pipeline.acknowledge(i, number)?;
                                release(released, &mut receipts, &repl, &mut acked, metrics);
                            }
                            _ => ok = false,
                        }
                    }
                    // Drain: deliver what is complete, acknowledge it, stop.
                    // One attempt per destination: one that is down now is
                    // retried from the slot after the restart instead.
                    if let (true, Some((lsn, commit_us))) = (ok, pipeline.open_position()) {
                        let mut all = true;
                        for d in &to {
                            if d.deliver(pipeline.open_ref()).await.is_err() {
                                all = false;
                                break;
                            }
                        }
                        if all {
                            acknowledge(&repl, &mut acked, lsn, commit_us, metrics);
                        }
                    }
                    break;
                }
            }
        }
    }
    drop(deliveries);
    if let Some(s) = &siem {
        s.close().await;
    }
    // Let the final status update reach the server before closing.
    let deadline = Instant::now() + Duration::from_secs(2);
    while repl.metrics().last_applied_lsn() < acked && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = repl.shutdown().await;
    metrics.streaming.set(0);
    tracing::info!(acked = %acked.to_pg_string(), "stopped");
    Ok(())
}
