//! The replication loop: a [`Session`] holds its state and handles each
//! event (a transaction's begin, changes and commit, a keepalive, a
//! destination's receipt, the timers, the drain at shutdown).

use super::deliveries::{Deliveries, InFlight, Receipt};
use super::start::Started;
use super::{ChangeKind, DecodeError, MirrorError, StoreLookups};
use crate::config::BatchConfig;
use crate::destination::{Batch, Destination};
use crate::documents::{self, Get, Table};
use crate::metrics::{unix_now_us, Metrics};
use crate::mongo_store::StoreError;
use crate::pgoutput::{Decoder, Message, Row};
use crate::pipeline::{Handed, Pipeline};
use crate::siem::Siem;
use crate::tamper::{Judged, TxChanges};
use pgwire_replication::protocol::replication::pg_to_unix_timestamp;
use pgwire_replication::{Lsn, PgWireError, ReplicationClient, ReplicationEvent};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// The replication stream as the session uses it: the seam between the
/// session and PostgreSQL (a test gives the session a scripted stream).
pub(crate) trait Replication {
    /// The next event; None when the stream ended.
    async fn recv(&mut self) -> Result<Option<ReplicationEvent>, PgWireError>;
    /// Reports everything up to `lsn` as flushed: PostgreSQL may forget it.
    fn acknowledge(&self, lsn: Lsn);
    /// Lets the last status update (`acked`) reach the server, then closes.
    async fn close(&mut self, acked: Lsn);
}

impl Replication for ReplicationClient {
    async fn recv(&mut self) -> Result<Option<ReplicationEvent>, PgWireError> {
        ReplicationClient::recv(self).await
    }

    fn acknowledge(&self, lsn: Lsn) {
        self.update_applied_lsn(lsn);
    }

    async fn close(&mut self, acked: Lsn) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.metrics().last_applied_lsn() < acked && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = self.shutdown().await;
    }
}

/// The time the pipeline measures waits in: the runtime's clock, so that
/// a test with paused time controls it (the same as the system's clock
/// otherwise).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Whether the loop goes on after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// The loop's state: the stream's position and transaction, the batches
/// and what the destinations delivered of them.
pub(crate) struct Session<R, S> {
    metrics: Arc<Metrics>,
    repl: R,
    store: S,
    /// The control connection (the detections' key rules are read over it).
    pg: Option<tokio_postgres::Client>,
    destinations: Vec<Arc<dyn Destination>>,
    deliveries: Deliveries,
    receipts: mpsc::UnboundedReceiver<Receipt>,
    pipeline: Pipeline<Batch, Lsn>,
    /// Batches handed out, oldest first, until every destination
    /// delivered them.
    in_flight: VecDeque<InFlight>,
    /// The position last reported to PostgreSQL.
    acked: Lsn,
    decoder: Decoder,
    /// The position of the current change in its transaction.
    tx_ordinal: u32,
    tx_changes: TxChanges,
    chain: ChainWatch,
    witness: Option<crate::witness::Witness>,
    detections: Option<crate::detect::Detections>,
    siem: Option<Arc<Siem>>,
    /// Each tenant's last log seq the initial copy sent to the SIEM.
    copied_heads: HashMap<String, i64>,
    store_changed: watch::Receiver<Option<String>>,
    _monitor: Option<crate::monitor::Monitor>,
    tick: tokio::time::Interval,
    sample: tokio::time::Interval,
}

impl<R: Replication, S: StoreLookups> Session<R, S> {
    /// The session of what start-up prepared; the destinations' delivery
    /// tasks start now.
    pub fn new(
        started: Started<R, S>,
        batch: &BatchConfig,
        metrics: &Arc<Metrics>,
        shutdown: &watch::Receiver<bool>,
    ) -> Self {
        let limits = started.limits;
        let (receipts_tx, receipts) = mpsc::unbounded_channel();
        let deliveries = Deliveries::start(
            &started.destinations,
            limits.outstanding,
            batch,
            metrics,
            shutdown,
            receipts_tx,
        );
        let mut s = Session {
            metrics: metrics.clone(),
            repl: started.repl,
            store: started.store,
            pg: started.pg,
            pipeline: Pipeline::new(started.destinations.len(), limits),
            destinations: started.destinations,
            deliveries,
            receipts,
            in_flight: VecDeque::new(),
            acked: Lsn::ZERO,
            decoder: Decoder::new(),
            tx_ordinal: 0,
            tx_changes: TxChanges::default(),
            chain: ChainWatch {
                last: HashMap::new(),
            },
            witness: started.witness,
            detections: started.detections,
            siem: started.siem,
            copied_heads: started.copied_heads,
            store_changed: started.store_changed,
            _monitor: started.monitor,
            tick: tokio::time::interval(Duration::from_millis(batch.wait_ms.clamp(1, 50))),
            sample: tokio::time::interval(Duration::from_secs(5)),
        };
        if !started.warm_alerts.is_empty() {
            raise(
                started.warm_alerts,
                s.pipeline.open(),
                s.siem.is_some(),
                metrics,
            );
            s.pipeline.changed(now());
        }
        s
    }

    /// Runs until shutdown (after the drain) or an error; returns the
    /// position last acknowledged to PostgreSQL.
    ///
    /// A batch that is due is handed out first, when the pipeline has
    /// room. Then one `select!`, `biased`: its branches are polled in the
    /// order written and the first ready one runs.
    ///
    /// 1. The store's watch: the store under the session is not the one
    ///    start-up checked, so nothing more may be written to it or
    ///    acknowledged, not even by the drain below.
    /// 2. Receipts: a delivered batch moves the acknowledged position and
    ///    frees the room the stream waits for; handling one is cheap, and
    ///    it must not wait behind a stream that is always ready during a
    ///    backlog.
    /// 3. Shutdown: before reading more of the stream; the drain then
    ///    acknowledges exactly what the destinations delivered.
    /// 4. The tick (signed checkpoints of quiet tenants) and 5. the sample
    ///    (key rules, the alarm count, progress): each is ready at most once
    ///    per period, so above the stream they cannot starve it, while the
    ///    stream would starve them below it.
    /// 6. The stream, last: it is ready whenever PostgreSQL has sent more.
    ///
    /// While a due batch waits for room only 1 and 2 are heard: decoding
    /// waits for the destinations, so memory stays bounded; a shutdown
    /// then reaches the loop through the delivery tasks, which give up
    /// retrying and report the batch abandoned.
    pub async fn run(mut self, shutdown: &mut watch::Receiver<bool>) -> Result<Lsn, MirrorError> {
        loop {
            let due = self.pipeline.due(now());
            if due && self.pipeline.has_room() {
                self.hand_out().await?;
                continue;
            }
            let open = !due;
            let flow = tokio::select! {
                biased;
                _ = self.store_changed.changed() => {
                    let why = self.store_changed.borrow().clone().unwrap_or_default();
                    return Err(MirrorError::StoreChanged(why));
                }
                receipt = self.receipts.recv() => self.delivered(receipt)?,
                _ = shutdown.changed(), if open => {
                    if *shutdown.borrow() {
                        self.drain().await?;
                        Flow::Stop
                    } else {
                        Flow::Continue
                    }
                }
                _ = self.tick.tick(), if open => self.tick(),
                _ = self.sample.tick(), if open => self.sample().await,
                event = self.repl.recv(), if open => self.event(event?).await?,
            };
            if flow == Flow::Stop {
                break;
            }
        }
        Ok(self.finish().await)
    }

    /// Hands the open batch to every destination.
    async fn hand_out(&mut self) -> Result<(), MirrorError> {
        let position = self.pipeline.open_position().map(|(p, _)| p);
        let (number, batch) = self.pipeline.hand_out();
        self.metrics.pending_rows.set(batch.rows() as i64);
        self.in_flight.push_back(InFlight {
            batch: number,
            rows: batch.counts(),
        });
        self.deliveries.hand(number, position, batch).await
    }

    /// One event of the stream.
    async fn event(&mut self, event: Option<ReplicationEvent>) -> Result<Flow, MirrorError> {
        let Some(event) = event else {
            return Err(MirrorError::StreamEnded);
        };
        match event {
            ReplicationEvent::Begin { .. } => self.begin(),
            ReplicationEvent::XLogData { data, .. } => self.change(&data).await?,
            ReplicationEvent::Commit {
                end_lsn,
                commit_time_micros,
                ..
            } => {
                self.commit(end_lsn, pg_to_unix_timestamp(commit_time_micros))
                    .await?
            }
            ReplicationEvent::KeepAlive { wal_end, .. } => self.keepalive(wal_end),
            ReplicationEvent::Message {
                transactional: true,
                prefix,
                content,
                ..
            } if prefix == crate::operator::RESTORE_MESSAGE => self.tx_changes.restoring(&content),
            ReplicationEvent::Message { .. } | ReplicationEvent::StoppedAt { .. } => {}
        }
        Ok(Flow::Continue)
    }

    fn begin(&mut self) {
        self.pipeline.begin();
        self.tx_ordinal = 0;
        self.tx_changes = TxChanges::default();
    }

    /// One pgoutput message of a transaction.
    async fn change(&mut self, data: &[u8]) -> Result<(), MirrorError> {
        self.tx_ordinal += 1;
        let msg = self.decoder.decode(data).map_err(DecodeError::from)?;
        match msg {
            Message::Insert(row) => self.row(ChangeKind::Insert, &row, data.len()).await?,
            // The log and its checkpoints only grow: the mirror keeps the
            // original of an updated row, judged at commit with the row as
            // it was (replica identity full), else as it is now.
            Message::Update { old, new } => match append_only(&new) {
                Some(t) => {
                    self.judge_later(ChangeKind::Update, t, Some(old.as_ref().unwrap_or(&new)))
                }
                None => self.row(ChangeKind::Update, &new, data.len()).await?,
            },
            // Deletes are never applied (the mirror keeps the rows
            // retention removes; its own retention applies there); those
            // of the log are judged at commit.
            Message::Delete(old) => {
                if let Some(t) = append_only(&old) {
                    self.judge_later(ChangeKind::Delete, t, Some(&old));
                }
            }
            Message::Truncate { relations } => {
                for oid in relations {
                    let table = self
                        .decoder
                        .known_relation(oid)
                        .and_then(|r| Table::from_name(&r.schema, &r.name));
                    if let Some(t @ (Table::AuthLog | Table::Checkpoints)) = table {
                        self.judge_later(ChangeKind::Truncate, t, None);
                    }
                }
            }
            // Relations and the rest: nothing to write.
            _ => {}
        }
        Ok(())
    }

    /// A change of the log or its checkpoints, never applied: kept for the
    /// judgement at commit (`tamper.rs`).
    fn judge_later(&mut self, kind: ChangeKind, table: Table, row: Option<&Row>) {
        match (kind, row) {
            (ChangeKind::Update, Some(r)) => self.tx_changes.updated(table, &row_getter(r)),
            (ChangeKind::Delete, Some(r)) => self.tx_changes.deleted(table, &row_getter(r)),
            (ChangeKind::Truncate, _) => self.tx_changes.truncated(table),
            _ => {}
        }
    }

    /// A row inserted (or a lockout row updated): its document joins the
    /// open batch.
    async fn row(&mut self, kind: ChangeKind, row: &Row, bytes: usize) -> Result<(), MirrorError> {
        let Some(table) = table_of(row) else {
            return Ok(());
        };
        self.pipeline.open().bytes += bytes;
        let get = row_getter(row);
        let refused = |source| DecodeError::Change {
            kind,
            table,
            source,
        };
        match table {
            Table::AuthLog => self.log_row(kind, &get).await?,
            Table::Checkpoints => {
                let d = documents::checkpoint(&get).map_err(refused)?;
                self.pipeline.open().checkpoints.push(d);
            }
            Table::LockoutState => {
                let c =
                    documents::lockout_state(&get, i64::from(self.tx_ordinal)).map_err(refused)?;
                self.pipeline.open().put_lockout(c);
            }
        }
        self.pipeline.changed(now());
        Ok(())
    }

    /// A log row: its chain is watched, the witness and the detections see
    /// it, the SIEM gets its line unless the copy sent it.
    async fn log_row(&mut self, kind: ChangeKind, get: Get<'_, '_>) -> Result<(), MirrorError> {
        let refused = |source| DecodeError::Change {
            kind,
            table: Table::AuthLog,
            source,
        };
        if kind == ChangeKind::Insert {
            self.tx_changes.inserted_log(get);
        }
        let l = documents::auth_log(get).map_err(refused)?;
        report_fallback(&l, &self.metrics);
        let d = &l.doc;
        if self.metrics.per_tenant() {
            self.metrics.tenant_row(
                get("tenant_id").unwrap_or_default(),
                get("event_type").unwrap_or_default(),
            );
        }
        self.chain.check(&self.store, d, &self.metrics).await?;
        if let Some(w) = self.witness.as_mut() {
            w.row(&self.store, d).await?;
        }
        let in_copy = self
            .copied_heads
            .get(d.get_str("tenant_id").unwrap_or_default())
            .is_some_and(|h| d.get_i64("seq").unwrap_or(0) <= *h);
        if self.siem.is_some() && !in_copy {
            let event = crate::siem::event(get).map_err(refused)?;
            self.pipeline.open().siem.push(event);
        }
        if let Some(det) = self.detections.as_mut() {
            let mut alerts = det.row(get);
            if !alerts.is_empty() {
                alerts = not_raised(&self.store, alerts).await?;
            }
            self.metrics
                .detection_evictions
                .inc_by(det.take_evictions());
            raise(
                alerts,
                self.pipeline.open(),
                self.siem.is_some(),
                &self.metrics,
            );
        }
        self.tx_changes.inserted_document(&l.doc);
        self.pipeline.open().put_log(l);
        Ok(())
    }

    /// The transaction ending at `end_lsn` is complete: its changes to the
    /// log are judged, and its position becomes acknowledgeable once every
    /// destination delivered its batch.
    async fn commit(&mut self, end_lsn: Lsn, commit_us: i64) -> Result<(), MirrorError> {
        let mut judged = std::mem::take(&mut self.tx_changes).judge();
        self.restorations(&mut judged, end_lsn, commit_us).await?;
        for (i, t) in judged.tampers.into_iter().enumerate() {
            report_tamper(&t, &self.metrics);
            let alarm = t.document(&format!("{end_lsn}/{i}"), &end_lsn.to_string(), commit_us);
            self.pipeline.open().tamper.push(alarm);
        }
        if let Some(w) = self.witness.as_mut() {
            w.sign_due(self.pipeline.open());
        }
        self.pipeline.commit(end_lsn, commit_us, now());
        self.metrics
            .commit_to_receive
            .observe((unix_now_us() - commit_us).max(0) as f64 / 1e6);
        Ok(())
    }

    /// The transaction's restorations of log rows from the mirror: those
    /// that insert the mirror's original are recorded as resolved alarms.
    async fn restorations(
        &mut self,
        judged: &mut Judged,
        end_lsn: Lsn,
        commit_us: i64,
    ) -> Result<(), StoreError> {
        for (i, r) in std::mem::take(&mut judged.restorations)
            .into_iter()
            .enumerate()
        {
            let original = self.store.log_document(&r.tenant, r.seq).await?;
            if original.as_deref().is_some_and(|o| r.restores(o)) {
                judged.restored(&r);
                self.metrics.restorations.inc();
                tracing::info!(tenant = %r.tenant, seq = r.seq, log_id = %r.log_id, "a log row was restored from the mirror's original; recorded as a resolved alarm");
                let alarm = r.document(
                    &format!("{end_lsn}/restore/{i}"),
                    &end_lsn.to_string(),
                    commit_us,
                );
                self.pipeline.open().tamper.push(alarm);
            } else {
                tracing::error!(tenant = %r.tenant, seq = r.seq, "a transaction says it restores a log row from the mirror but does not insert the mirror's original: its changes are judged as any other");
            }
        }
        Ok(())
    }

    /// The server's heartbeat.
    fn keepalive(&mut self, wal_end: Lsn) {
        self.metrics
            .positions
            .server_wal_end
            .store(wal_end.as_u64(), Ordering::Relaxed);
        // Idle heartbeat: with nothing of ours pending, every change before
        // wal_end is mirrored, so the slot may move on (an idle publication
        // holds no WAL).
        if self.pipeline.idle() && wal_end > self.acked {
            self.acknowledge(wal_end, unix_now_us());
            self.metrics
                .last_progress_unix
                .store(unix_now_us() / 1_000_000, Ordering::Relaxed);
        }
    }

    /// A destination's receipt.
    fn delivered(&mut self, receipt: Option<Receipt>) -> Result<Flow, MirrorError> {
        let Some(r) = receipt else {
            return Err(MirrorError::DeliveryEnded("mirror"));
        };
        // An abandoned delivery (shutdown): nothing after it counts.
        if !r.delivered {
            return Ok(Flow::Stop);
        }
        let released = self.pipeline.acknowledge(r.destination, r.batch)?;
        self.release(released);
        Ok(Flow::Continue)
    }

    /// A tenant with new rows and no checkpoint for the interval.
    fn tick(&mut self) -> Flow {
        if let (false, Some(w)) = (self.pipeline.in_transaction(), self.witness.as_mut()) {
            if w.sign_due(self.pipeline.open()) {
                self.pipeline.changed(now());
            }
        }
        Flow::Continue
    }

    /// Every five seconds: the tenants' key rules, the store's count of
    /// unresolved alarms, progress.
    async fn sample(&mut self) -> Flow {
        // A tenant's key rules changed since: the detections follow.
        if let (Some(det), Some(pg)) = (self.detections.as_mut(), self.pg.as_ref()) {
            if let Err(e) = det.load_key_rules(pg).await {
                tracing::warn!(error = %e, "could not read the tenants' key rules; keeping the last ones");
            }
        }
        // With every alarm seen so far written, the store's count is
        // current (an operator resolves alarms there).
        let quiet = self.pipeline.open_ref().is_empty() && self.pipeline.outstanding() == 0;
        if quiet && self.tx_changes.is_empty() {
            if let Ok(n) = self.store.unresolved_tampers().await {
                self.metrics.tamper_unresolved.set(n as i64);
            }
        }
        let progress = if self.pipeline.open_ref().is_empty() {
            unix_now_us() / 1_000_000
        } else {
            0
        };
        self.metrics
            .last_progress_unix
            .fetch_max(progress, Ordering::Relaxed);
        Flow::Continue
    }

    /// Stopping: the batches in flight are waited for, in order (after an
    /// abandoned delivery nothing later may be acknowledged); then what is
    /// complete in the open batch is delivered and acknowledged. One
    /// attempt per destination: one that is down now is retried from the
    /// slot after the restart instead.
    async fn drain(&mut self) -> Result<(), MirrorError> {
        let mut ok = true;
        while ok && self.pipeline.outstanding() > 0 {
            match self.receipts.recv().await {
                Some(r) if r.delivered => {
                    let released = self.pipeline.acknowledge(r.destination, r.batch)?;
                    self.release(released);
                }
                _ => ok = false,
            }
        }
        let Some((lsn, commit_us)) = self.pipeline.open_position().filter(|_| ok) else {
            return Ok(());
        };
        for d in &self.destinations {
            if d.deliver(self.pipeline.open_ref()).await.is_err() {
                return Ok(());
            }
        }
        self.acknowledge(lsn, commit_us);
        Ok(())
    }

    /// The batches every destination has now delivered: their rows are
    /// counted, their latencies recorded, and the newest position among
    /// them acknowledged.
    fn release(&mut self, released: Vec<Handed<Lsn>>) {
        let now_us = unix_now_us();
        for h in released {
            while let Some(f) = self.in_flight.front().copied() {
                if f.batch > h.number {
                    break;
                }
                self.in_flight.pop_front();
                if f.batch == h.number {
                    self.metrics.rows_auth_log.inc_by(f.rows.log);
                    self.metrics.rows_checkpoints.inc_by(f.rows.checkpoints);
                    self.metrics.rows_lockout_state.inc_by(f.rows.lockout);
                }
            }
            for c in &h.commits {
                self.metrics
                    .commit_to_ack
                    .observe((now_us - c).max(0) as f64 / 1e6);
            }
            if let (Some(lsn), Some(commit_us)) = (h.position, h.commits.last()) {
                self.acknowledge(lsn, *commit_us);
            }
        }
        if self.in_flight.is_empty() {
            self.metrics.pending_rows.set(0);
        }
    }

    /// Reports `lsn` (committed at `commit_us`) to PostgreSQL as flushed,
    /// if it moves the position forward.
    fn acknowledge(&mut self, lsn: Lsn, commit_us: i64) {
        if lsn > self.acked {
            self.repl.acknowledge(lsn);
            self.acked = lsn;
            let p = &self.metrics.positions;
            p.acked_lsn.store(lsn.as_u64(), Ordering::Relaxed);
            p.acked_commit_unix_us.store(commit_us, Ordering::Relaxed);
        }
    }

    /// After the loop: the delivery tasks stop, the SIEM session and the
    /// stream close.
    async fn finish(mut self) -> Lsn {
        drop(self.deliveries);
        if let Some(s) = &self.siem {
            s.close().await;
        }
        self.repl.close(self.acked).await;
        self.metrics.streaming.set(0);
        tracing::info!(acked = %self.acked.to_pg_string(), "stopped");
        self.acked
    }
}

fn table_of(row: &Row) -> Option<Table> {
    Table::from_name(&row.relation.schema, &row.relation.name)
}

/// The table of a row if it is the log or its checkpoints, which only grow.
fn append_only(row: &Row) -> Option<Table> {
    table_of(row).filter(|t| matches!(t, Table::AuthLog | Table::Checkpoints))
}

fn row_getter<'r>(row: &'r Row) -> impl Fn(&str) -> Option<&'r str> + 'r {
    move |c: &str| row.text(c)
}

/// The alarm of a log row mirrored in a fallback form: a warning naming
/// the row and the reason, and a count in `fallback_rows_total{reason}`.
pub(super) fn report_fallback(l: &documents::LogDocument, metrics: &Metrics) {
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
        store: &impl StoreLookups,
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
        let mut ok = match self.last.get(tenant) {
            // A replay of a row already mirrored.
            Some((last_seq, _)) if seq <= *last_seq => return Ok(()),
            Some((last_seq, last_link)) => seq == last_seq + 1 && prev == last_link,
            None if seq == 1 => true,
            // First row seen after retention: it continues a checkpoint.
            None => store.checkpoint_link(tenant, seq - 1).await?.as_deref() == Some(prev),
        };
        if !ok && self.last.contains_key(tenant) {
            // Another mirror may have stored the rows between: on Citus each
            // worker has its own, and a tenant's shard moves between them
            // (docs/scale-out.md, "The mirror").
            if let Some(known) = store.last_link(tenant).await? {
                ok = seq == known.0 + 1 && prev == known.1;
            }
        }
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

/// The alerts the store does not hold yet (by `_id`: the same evidence
/// gives the same id): those a replay after a restart raises again are
/// dropped.
pub(super) async fn not_raised(
    store: &impl StoreLookups,
    alerts: Vec<authaudit_core::detection::Alert>,
) -> Result<Vec<authaudit_core::detection::Alert>, StoreError> {
    let mut held = std::collections::HashSet::new();
    for chunk in alerts.chunks(1000) {
        let ids: Vec<String> = chunk.iter().map(|a| a.id()).collect();
        held.extend(store.held_alerts(&ids).await?);
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

#[cfg(test)]
mod chain_watch_tests {
    use super::*;
    use crate::witness::{TenantTree, TreeSource};
    use bson::RawDocumentBuf;
    use std::collections::HashSet;

    /// A store whose last mirrored row of every tenant is `last`.
    struct Holding(Option<(i64, String)>);

    impl StoreLookups for Holding {
        async fn last_link(&self, _: &str) -> Result<Option<(i64, String)>, StoreError> {
            Ok(self.0.clone())
        }
        async fn checkpoint_link(&self, _: &str, _: i64) -> Result<Option<String>, StoreError> {
            Ok(None)
        }
        async fn held_alerts(&self, _: &[String]) -> Result<HashSet<String>, StoreError> {
            Ok(HashSet::new())
        }
        async fn log_document(
            &self,
            _: &str,
            _: i64,
        ) -> Result<Option<RawDocumentBuf>, StoreError> {
            Ok(None)
        }
        async fn unresolved_tampers(&self) -> Result<u64, StoreError> {
            Ok(0)
        }
    }

    impl TreeSource for Holding {
        async fn witness_tree(&self, _: &str) -> Result<TenantTree, StoreError> {
            unreachable!("no witness here")
        }
    }

    fn row(seq: i64, prev: &str, link: &str) -> RawDocumentBuf {
        let mut d = RawDocumentBuf::new();
        d.append("tenant_id", "t");
        d.append("seq", seq);
        d.append("prev_link", prev);
        d.append("link_sha256", link);
        d
    }

    #[tokio::test]
    async fn rows_another_mirror_stored_are_no_gap() {
        let metrics = Metrics::new(false);
        let mut watch = ChainWatch {
            last: HashMap::from([("t".to_owned(), (2, "l2".to_owned()))]),
        };
        // Rows 3 and 4 were mirrored from another worker's slot.
        let other = Holding(Some((4, "l4".to_owned())));
        watch
            .check(&other, &row(5, "l4", "l5"), &metrics)
            .await
            .unwrap();
        assert_eq!(metrics.chain_gaps.get(), 0);
        // A row that continues neither this mirror nor the store is a gap.
        watch
            .check(&other, &row(9, "l8", "l9"), &metrics)
            .await
            .unwrap();
        assert_eq!(metrics.chain_gaps.get(), 1);
    }
}
