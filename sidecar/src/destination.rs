//! Where batches go: the document store (with the witness's log and its
//! write-back) and the SIEM. Each is a [`Destination`]; the mirror hands
//! every batch to every destination and acknowledges a position to
//! PostgreSQL only once all of them delivered it (`pipeline.rs`).

pub use crate::batch::{Batch, RowCounts};
use crate::config::BatchConfig;
use crate::metrics::{unix_now_us, DestinationKind, Metrics};
use crate::mongo_store::{MongoStore, StoreError};
use crate::siem::{Siem, SiemError};
use crate::write_back::{Note, WriteBack};
use futures_util::future::BoxFuture;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A failed delivery: retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("witness log {path}: {source}")]
    WitnessLog {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Siem(#[from] SiemError),
    #[error("{0}")]
    Custody(#[from] crate::custody::CustodyError),
}

/// One place every batch must reach before its position is acknowledged.
pub trait Destination: Send + Sync {
    /// Its name in logs.
    fn name(&self) -> &'static str;
    /// Which destination it is, for `/health` and `destination_up`.
    fn kind(&self) -> DestinationKind;
    /// Delivers the batch once; an error is retried with the same batch.
    fn deliver<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<(), DeliveryError>>;
    /// Counts a failed attempt.
    fn failed(&self, metrics: &Metrics);
}

/// The document store: MongoDB, the witness log after it, and the signed
/// checkpoints handed to the write-back once both hold them.
pub struct StoreDestination {
    pub mongo: MongoStore,
    pub witness_log: Option<PathBuf>,
    pub write_back: Option<WriteBack>,
    /// What the store acknowledged, kept outside it (`--state-file`).
    pub custody: Option<Arc<crate::custody::Custody>>,
    pub metrics: Arc<Metrics>,
}

impl Destination for StoreDestination {
    fn name(&self) -> &'static str {
        "MongoDB"
    }

    fn kind(&self) -> DestinationKind {
        DestinationKind::Store
    }

    fn deliver<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            if batch.is_empty() {
                return Ok(());
            }
            let report = self.mongo.write(batch).await?;
            for id in &report.conflicts {
                self.metrics.chain_gaps.inc();
                tracing::error!(document = %id, "a different row already holds this (tenant_id, seq) in the mirror: not mirrored");
            }
            // The witness log holds every checkpoint the store does, flushed
            // before the position is acknowledged.
            if let (false, Some(path)) = (batch.witness_lines.is_empty(), &self.witness_log) {
                crate::witness::append_lines(path, &batch.witness_lines).map_err(|source| {
                    DeliveryError::WitnessLog {
                        path: path.clone(),
                        source,
                    }
                })?;
            }
            // The marker of what the store acknowledged, before the
            // position is.
            if let Some(c) = &self.custody {
                c.acknowledged(&batch.log)?;
            }
            if let Some(wb) = &self.write_back {
                wb.send(batch.witness.iter().filter_map(|d| Note::from_document(d)));
            }
            self.metrics.batches.inc();
            Ok(())
        })
    }

    fn failed(&self, metrics: &Metrics) {
        metrics.mongodb_errors.inc();
    }
}

/// The SIEM collector (`siem.rs`).
pub struct SiemDestination {
    pub siem: Arc<Siem>,
    pub metrics: Arc<Metrics>,
}

impl Destination for SiemDestination {
    fn name(&self) -> &'static str {
        "SIEM"
    }

    fn kind(&self) -> DestinationKind {
        DestinationKind::Siem
    }

    fn deliver<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            self.siem.deliver(&batch.siem).await?;
            self.metrics.siem_events.inc_by(batch.siem.len() as u64);
            Ok(())
        })
    }

    fn failed(&self, metrics: &Metrics) {
        metrics.siem_errors.inc();
    }
}

/// Delivers a batch, retrying with back-off until the destination takes
/// it; false when shutdown interrupted it (nothing delivered counts then).
/// Every failure is counted and shown on `/health` at once; an attempt is
/// never cut short (a slow store still takes a large batch), but one that
/// has waited longer than `--health-timeout-ms` shows there too. A store
/// that is down fails an attempt within `--store-timeout-ms` (the
/// driver's server selection and connect timeouts).
pub async fn deliver_with_retry(
    dest: &dyn Destination,
    batch: &Batch,
    config: &BatchConfig,
    metrics: &Metrics,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let mut backoff = Duration::from_millis(50);
    let max_backoff = Duration::from_millis(config.max_backoff_ms.max(50));
    let health = &metrics.destinations;
    loop {
        // An attempt under way finishes even when stopping (the shutdown
        // deadline bounds it); a failed one is not retried then.
        health.attempt(dest.kind());
        match dest.deliver(batch).await {
            Ok(()) => {
                health.succeeded(dest.kind());
                metrics
                    .last_progress_unix
                    .store(unix_now_us() / 1_000_000, Ordering::Relaxed);
                return true;
            }
            Err(e) => {
                dest.failed(metrics);
                health.failed(dest.kind(), &e.to_string());
                tracing::warn!(destination = dest.name(), error = %e, rows = batch.rows(), retry_in_ms = backoff.as_millis() as u64, "delivery failed; retrying (the stream waits)");
                if *shutdown.borrow() {
                    return false;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait_for(|s| *s) => return false,
                }
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}
