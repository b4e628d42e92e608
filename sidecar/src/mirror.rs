//! The mirror: copies what committed before its slot existed, then streams
//! the publication and writes every committed row to MongoDB, acknowledging
//! a position to PostgreSQL only after MongoDB acknowledged everything up to
//! it. Crash anywhere and the slot replays from the last acknowledged
//! position; the writes are idempotent, so nothing is lost or doubled.
//! Changes to the log other than appends and the recorded retention path
//! are tampering (`tamper.rs`): never applied, always reported.

use crate::config::Options;
use crate::documents::{self, Table};
use crate::metrics::{unix_now_us, Metrics};
use crate::pgoutput::{Decoder, Message, Row};
use crate::sink::{Batch, Sink, SinkError};
use crate::tamper::TxChanges;
use crate::write_back::{Note, WriteBack};
use bson::doc;
use futures_util::TryStreamExt;
use pgwire_replication::protocol::replication::pg_to_unix_timestamp;
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Why a session ended (each is retried with back-off).
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("PostgreSQL: {}", crate::pg::with_causes(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("replication: {0}")]
    Replication(#[from] pgwire_replication::PgWireError),
    #[error("{0}")]
    Sink(#[from] SinkError),
    #[error("decoding: {0}")]
    Decode(String),
    #[error("replication stream ended")]
    StreamEnded,
    #[error("{0}")]
    Pg(#[from] crate::pg::PgError),
    #[error("{0}")]
    Witness(#[from] crate::witness::WitnessError),
}

/// Runs the mirror until `shutdown` turns true.
pub async fn run(
    opts: &Options,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), MirrorError> {
    let mut backoff = Duration::from_millis(100);
    let max_backoff = Duration::from_millis(opts.max_backoff_ms.max(100));
    loop {
        let started = Instant::now();
        match session(opts, &metrics, &mut shutdown).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                metrics.streaming.store(0, Ordering::Relaxed);
                match &e {
                    MirrorError::Sink(_) => metrics.mongodb_errors.fetch_add(1, Ordering::Relaxed),
                    MirrorError::Decode(_) => metrics.decode_errors.fetch_add(1, Ordering::Relaxed),
                    _ => metrics.postgres_errors.fetch_add(1, Ordering::Relaxed),
                };
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

/// Writes a batch, retrying until MongoDB acknowledges it (or shutdown).
/// Returns false when shutdown interrupted it (nothing acknowledged).
async fn write_with_retry(
    sink: &Sink,
    batch: &Batch,
    opts: &Options,
    metrics: &Metrics,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let mut backoff = Duration::from_millis(50);
    let max_backoff = Duration::from_millis(opts.max_backoff_ms.max(50));
    loop {
        match sink.write(batch).await {
            Ok(report) => {
                for id in &report.conflicts {
                    metrics.chain_gaps.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(document = %id, "a different row already holds this (tenant_id, seq) in the mirror: not mirrored");
                }
                metrics.batches.fetch_add(1, Ordering::Relaxed);
                metrics
                    .last_progress_unix
                    .store(unix_now_us() / 1_000_000, Ordering::Relaxed);
                return true;
            }
            Err(e) => {
                metrics.mongodb_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, rows = batch.rows(), retry_in_ms = backoff.as_millis() as u64, "MongoDB write failed; retrying (the stream waits)");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => if *shutdown.borrow() { return false },
                }
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}

/// Copies every row committed before the slot existed (idempotent; run
/// again after a crash until it completes).
async fn initial_copy(
    pg: &mut tokio_postgres::Client,
    sink: &Sink,
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
        while !done {
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
                match documents::document(table, &get, i64::MAX)
                    .map_err(|e| MirrorError::Decode(e.to_string()))?
                {
                    documents::Document::Row(d) if table == Table::AuthLog => batch.log.push(d),
                    documents::Document::Row(d) => batch.checkpoints.push(d),
                    documents::Document::Lockout(c) => batch.put_lockout(c),
                }
            }
            // Stopping: the copy is repeated at the next start.
            if *shutdown.borrow() {
                return Ok(false);
            }
            // A full batch, or the rest at the end of the table.
            if batch.rows() >= opts.batch_rows || (done && !batch.is_empty()) {
                if !write_with_retry(sink, &batch, opts, metrics, shutdown).await {
                    return Ok(false);
                }
                copied += batch.rows() as u64;
                metrics
                    .rows_copied
                    .fetch_add(batch.rows() as u64, Ordering::Relaxed);
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

/// The alarm of one change that is tampering: an error log line naming
/// the tenant and seq, and the counters `/health` reads.
fn report_tamper(t: &crate::tamper::Tamper, metrics: &Metrics) {
    metrics.tamper_events.fetch_add(1, Ordering::Relaxed);
    metrics.tamper_unresolved.fetch_add(1, Ordering::Relaxed);
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
        sink: &Sink,
        doc: &bson::RawDocumentBuf,
        metrics: &Metrics,
    ) -> Result<(), SinkError> {
        let tenant = doc.get_str("tenant_id").unwrap_or_default();
        let seq = doc.get_i64("seq").unwrap_or(0);
        let prev = doc.get_str("prev_link").unwrap_or_default();
        let link = doc.get_str("link_sha256").unwrap_or_default();
        if !self.last.contains_key(tenant) {
            if let Some(known) = sink.last_link(tenant).await? {
                self.last.insert(tenant.to_string(), known);
            }
        }
        let ok = match self.last.get(tenant) {
            // A replay of a row already mirrored.
            Some((last_seq, _)) if seq <= *last_seq => return Ok(()),
            Some((last_seq, last_link)) => seq == last_seq + 1 && prev == last_link,
            None if seq == 1 => true,
            // First row seen after retention: it continues a checkpoint.
            None => sink.checkpoint_link(tenant, seq - 1).await?.as_deref() == Some(prev),
        };
        if !ok {
            metrics.chain_gaps.fetch_add(1, Ordering::Relaxed);
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

/// A batch being written, and what to do once MongoDB acknowledged it.
struct InFlight {
    handle: tokio::task::JoinHandle<bool>,
    /// The end of the batch's last complete transaction, if any.
    ack: Option<Lsn>,
    /// Commit times (Unix µs) of the batch's transactions.
    commits: Vec<i64>,
    counts: (u64, u64, u64),
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
        metrics.acked_lsn.store(lsn.as_u64(), Ordering::Relaxed);
        metrics
            .acked_commit_unix_us
            .store(commit_us, Ordering::Relaxed);
    }
}

/// Waits for the batch in flight. One batch is written while the next is
/// decoded; two in flight measured slower (0.46 against 0.52 of
/// pg_recvlogical draining 500,000 events): batches left sooner, smaller,
/// and repeated lockout upserts that one larger batch folds into one.
async fn wait_in_flight(f: &mut Option<InFlight>) -> bool {
    match f {
        Some(f) => (&mut f.handle).await.unwrap_or(false),
        None => std::future::pending().await,
    }
}

/// Acknowledges a written batch; false when its write was abandoned
/// (shutdown): nothing is acknowledged then.
fn complete(
    f: InFlight,
    ok: bool,
    repl: &ReplicationClient,
    acked: &mut Lsn,
    metrics: &Metrics,
) -> bool {
    if !ok {
        return false;
    }
    metrics
        .rows_auth_log
        .fetch_add(f.counts.0, Ordering::Relaxed);
    metrics
        .rows_checkpoints
        .fetch_add(f.counts.1, Ordering::Relaxed);
    metrics
        .rows_lockout_state
        .fetch_add(f.counts.2, Ordering::Relaxed);
    metrics.pending_rows.store(0, Ordering::Relaxed);
    let now_us = unix_now_us();
    {
        let mut lat = metrics.latencies.lock().unwrap_or_else(|e| e.into_inner());
        for c in &f.commits {
            lat.record((now_us - c).max(0) as u64);
        }
    }
    if let (Some(lsn), Some(commit_us)) = (f.ack, f.commits.last()) {
        acknowledge(repl, acked, lsn, *commit_us, metrics);
    }
    true
}

fn row_getter<'r>(row: &'r Row) -> impl Fn(&str) -> Option<&'r str> + 'r {
    move |c: &str| row.text(c)
}

/// Creates the publication if it is missing (before the slot: pgoutput reads
/// publications as of each change it decodes). Without the function (an
/// extension older than 0.2.0) or the right to run it, the publication must
/// exist already, and streaming says so if it does not.
async fn ensure_publication(pg: &tokio_postgres::Client, publication: &str) {
    match pg
        .query_one(
            "SELECT authaudit.ensure_mirror_publication($1)",
            &[&publication],
        )
        .await
    {
        Ok(_) => tracing::debug!(%publication, "publication in place"),
        Err(e) => {
            tracing::warn!(%publication, error = %e, "could not ensure the publication; using it as it is")
        }
    }
}

async fn session(
    opts: &Options,
    metrics: &Arc<Metrics>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), MirrorError> {
    let sink = Sink::connect(
        &opts.mongodb_uri,
        &opts.mongodb_database,
        &opts.write_concern,
    )
    .await?;
    let rekeyed = sink.rekey_log().await?;
    if rekeyed > 0 {
        tracing::info!(
            documents = rekeyed,
            "log documents moved to the tenant_id/log_id key"
        );
    }
    sink.ensure_indexes().await?;
    metrics
        .tamper_unresolved
        .store(sink.unresolved_tampers().await? as i64, Ordering::Relaxed);
    let mut pg = crate::pg::connect(opts).await?;
    ensure_publication(&pg, &opts.publication).await;
    let slot = pg
        .query_opt(
            "SELECT confirmed_flush_lsn::text FROM pg_catalog.pg_replication_slots \
             WHERE slot_name = $1 AND database = current_database()",
            &[&opts.slot],
        )
        .await?;
    let copied = sink
        .state(&opts.slot)
        .await?
        .and_then(|d| d.get_bool("copied").ok())
        .unwrap_or(false);
    if slot.is_none() {
        let created = pg
            .query_one(
                "SELECT lsn::text FROM pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&opts.slot],
            )
            .await?;
        let lsn: String = created.get(0);
        tracing::info!(slot = %opts.slot, consistent_point = %lsn, "created the replication slot");
        // A new slot (first start, or the old one was lost): copy what
        // committed before it, whatever the state says.
        sink.set_state(
            &opts.slot,
            doc! {"copied": false, "slot_created_at_lsn": lsn},
        )
        .await?;
    }
    if slot.is_none() || !copied {
        tracing::info!("copying the rows committed before the slot existed");
        if !initial_copy(&mut pg, &sink, opts, metrics, shutdown).await? {
            return Ok(());
        }
        sink.set_state(&opts.slot, doc! {"copied": true}).await?;
    }

    // The witness's trees before the stream starts, so that it never waits.
    let mut witness = crate::witness::Witness::from_options(opts)?;
    if let Some(w) = witness.as_mut() {
        let started = Instant::now();
        let n = w.preload(&sink).await?;
        tracing::info!(
            tenants = n,
            ms = started.elapsed().as_millis() as u64,
            "witness trees grown from their last signed checkpoints"
        );
    }
    let mut cfg = ReplicationConfig::new(
        opts.pg_host.clone(),
        opts.pg_user.clone(),
        opts.pg_password.clone(),
        opts.pg_database.clone(),
        opts.slot.clone(),
        opts.publication.clone(),
    );
    cfg.port = opts.pg_port;
    cfg.tls = crate::tls::replication_tls(opts);
    cfg.start_lsn = Lsn::ZERO;
    cfg.status_interval = Duration::from_millis(opts.status_interval_ms.max(100));
    cfg.idle_wakeup_interval = Duration::from_millis(opts.status_interval_ms.max(100));
    cfg.buffer_events = 1024;
    cfg.options = Some(crate::config::SESSION_OPTIONS.to_string());
    cfg.application_name = Some("authaudit-sidecar".into());
    let mut repl = ReplicationClient::connect(cfg).await?;
    metrics.streaming.store(1, Ordering::Relaxed);
    metrics
        .last_progress_unix
        .store(unix_now_us() / 1_000_000, Ordering::Relaxed);
    tracing::info!(slot = %opts.slot, publication = %opts.publication, "streaming");

    let mut decoder = Decoder::new();
    let mut watch = ChainWatch {
        last: HashMap::new(),
    };
    let mut batch = Batch::default();
    // The end of the last commit whose rows are all in `batch` or written.
    let mut ackable: Option<Lsn> = None;
    let mut acked = Lsn::ZERO;
    let mut in_tx = false;
    let mut tx_ordinal = 0u32;
    let mut tx_changes = TxChanges::default();
    let write_back = (witness.is_some() && opts.witness_write_back)
        .then(|| WriteBack::spawn(opts.clone(), sink.clone(), metrics.clone()));
    let mut first_pending: Option<Instant> = None;
    // Commit times (Unix µs) of the transactions in the current batch.
    let mut batch_commits: Vec<i64> = Vec::new();
    let mut in_flight: Option<InFlight> = None;
    let wait = Duration::from_millis(opts.batch_wait_ms.max(1));
    let mut tick = tokio::time::interval(wait.min(Duration::from_millis(50)));
    let mut sample = tokio::time::interval(Duration::from_secs(5));

    loop {
        let full = batch.rows() >= opts.batch_rows || batch.bytes >= opts.batch_bytes;
        let due = first_pending.is_some_and(|t| t.elapsed() >= wait);
        if full || (due && (ackable.is_some() || !batch.witness.is_empty())) {
            // Decoding the next batch overlaps the write in flight.
            if in_flight.is_some() {
                let ok = wait_in_flight(&mut in_flight).await;
                let f = in_flight.take().expect("checked");
                if !complete(f, ok, &repl, &mut acked, metrics) {
                    break;
                }
            }
            let full_batch = std::mem::take(&mut batch);
            metrics
                .pending_rows
                .store(full_batch.rows() as i64, Ordering::Relaxed);
            let (sink2, opts2, metrics2, mut stop2, write_back2) = (
                sink.clone(),
                opts.clone(),
                metrics.clone(),
                shutdown.clone(),
                write_back.clone(),
            );
            let counts = (
                full_batch.log.len() as u64,
                full_batch.checkpoints.len() as u64,
                full_batch.lockout.len() as u64,
            );
            let handle = tokio::spawn(async move {
                let started = Instant::now();
                let mut ok = full_batch.is_empty()
                    || write_with_retry(&sink2, &full_batch, &opts2, &metrics2, &mut stop2).await;
                // The witness log holds every checkpoint the store does,
                // flushed before the position is acknowledged.
                if let (true, Some(path)) = (
                    ok && !full_batch.witness_lines.is_empty(),
                    &opts2.witness_log,
                ) {
                    if let Err(e) = crate::witness::append_lines(path, &full_batch.witness_lines) {
                        tracing::error!(path = %path.display(), error = %e, "cannot append to the witness log; retrying the batch");
                        ok = false;
                    }
                }
                tracing::debug!(
                    rows = full_batch.rows(),
                    write_ms = started.elapsed().as_millis() as u64,
                    "batch written"
                );
                if let (true, Some(wb)) = (ok, &write_back2) {
                    wb.send(
                        full_batch
                            .witness
                            .iter()
                            .filter_map(|d| Note::from_document(d)),
                    );
                }
                ok
            });
            in_flight = Some(InFlight {
                handle,
                ack: ackable.take(),
                commits: std::mem::take(&mut batch_commits),
                counts,
            });
            first_pending = None;
            continue;
        }
        tokio::select! {
            ev = repl.recv() => {
                let Some(ev) = ev? else { return Err(MirrorError::StreamEnded) };
                match ev {
                    ReplicationEvent::Begin { .. } => {
                        in_tx = true;
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
                        batch.bytes += data.len();
                        let get = row_getter(&row);
                        if table == Table::AuthLog && kind == "insert" {
                            tx_changes.inserted_log(&get);
                        }
                        let refused = |e: documents::RowError| MirrorError::Decode(format!("{kind} on {}: {e}", table.collection()));
                        match table {
                            Table::AuthLog => {
                                let d = documents::auth_log(&get).map_err(refused)?;
                                watch.check(&sink, &d, metrics).await?;
                                if let Some(w) = witness.as_mut() {
                                    w.row(&sink, &d).await?;
                                }
                                batch.log.push(d);
                            }
                            Table::Checkpoints => batch.checkpoints.push(documents::checkpoint(&get).map_err(refused)?),
                            Table::LockoutState => batch.put_lockout(documents::lockout_state(&get, i64::from(tx_ordinal)).map_err(refused)?),
                        }
                        first_pending.get_or_insert_with(Instant::now);
                    }
                    ReplicationEvent::Commit { end_lsn, commit_time_micros, .. } => {
                        in_tx = false;
                        let commit_us = pg_to_unix_timestamp(commit_time_micros);
                        for (i, t) in std::mem::take(&mut tx_changes).judge().into_iter().enumerate() {
                            report_tamper(&t, metrics);
                            batch.tamper.push(t.document(&format!("{end_lsn}/{i}"), &end_lsn.to_string(), commit_us));
                        }
                        if let Some(w) = witness.as_mut() {
                            w.sign_due(&mut batch);
                        }
                        ackable = Some(end_lsn);
                        batch_commits.push(commit_us);
                        metrics
                            .arrivals
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .record((unix_now_us() - commit_us).max(0) as u64);
                        first_pending.get_or_insert_with(Instant::now);
                    }
                    ReplicationEvent::KeepAlive { wal_end, .. } => {
                        metrics.server_wal_end.store(wal_end.as_u64(), Ordering::Relaxed);
                        // Idle heartbeat: with nothing of ours pending, every
                        // change before wal_end is mirrored, so the slot may
                        // move on (an idle publication holds no WAL).
                        if !in_tx && batch.is_empty() && ackable.is_none() && in_flight.is_none() && wal_end > acked {
                            acknowledge(&repl, &mut acked, wal_end, unix_now_us(), metrics);
                            metrics.last_progress_unix.store(unix_now_us() / 1_000_000, Ordering::Relaxed);
                        }
                    }
                    ReplicationEvent::Message { .. } | ReplicationEvent::StoppedAt { .. } => {}
                }
            }
            ok = wait_in_flight(&mut in_flight), if in_flight.is_some() => {
                let f = in_flight.take().expect("guarded");
                if !complete(f, ok, &repl, &mut acked, metrics) {
                    break;
                }
            }
            _ = tick.tick() => {
                // A tenant with new rows and no checkpoint for the interval.
                if let (false, Some(w)) = (in_tx, witness.as_mut()) {
                    if w.sign_due(&mut batch) {
                        first_pending.get_or_insert_with(Instant::now);
                    }
                }
            }
            _ = sample.tick() => {
                if let Ok(row) = pg.query_one(
                    "SELECT (pg_current_wal_lsn() - restart_lsn)::int8 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                    &[&opts.slot]).await {
                    metrics.slot_retained_wal_bytes.store(row.get::<_, Option<i64>>(0).unwrap_or(0), Ordering::Relaxed);
                }
                // With every alarm seen so far written, the store's count is
                // current (an operator resolves alarms there).
                if batch.is_empty() && in_flight.is_none() && tx_changes.is_empty() {
                    if let Ok(n) = sink.unresolved_tampers().await {
                        metrics.tamper_unresolved.store(n as i64, Ordering::Relaxed);
                    }
                }
                metrics.last_progress_unix.fetch_max(
                    if batch.is_empty() { unix_now_us() / 1_000_000 } else { 0 }, Ordering::Relaxed);
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    // In order; after an abandoned write nothing later counts.
                    if let Some(mut f) = in_flight.take() {
                        let ok = (&mut f.handle).await.unwrap_or(false);
                        // An abandoned write: nothing after it may be
                        // acknowledged either.
                        if !complete(f, ok, &repl, &mut acked, metrics) {
                            batch = Batch::default();
                            ackable = None;
                        }
                    }
                    // Drain: write what is complete, acknowledge it, stop.
                    // One attempt: a store that is down now is retried
                    // from the slot after the restart instead.
                    if batch.is_empty() || sink.write(&batch).await.is_ok() {
                        if let (Some(lsn), Some(commit_us)) = (ackable, batch_commits.last()) {
                            acknowledge(&repl, &mut acked, lsn, *commit_us, metrics);
                        }
                    }
                    break;
                }
            }
        }
    }
    // Let the final status update reach the server before closing.
    let deadline = Instant::now() + Duration::from_secs(2);
    while repl.metrics().last_applied_lsn() < acked && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = repl.shutdown().await;
    metrics.streaming.store(0, Ordering::Relaxed);
    tracing::info!(acked = %acked.to_pg_string(), "stopped");
    Ok(())
}
