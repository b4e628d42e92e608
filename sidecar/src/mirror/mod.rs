//! The mirror: copies what committed before its slot existed, then streams
//! the publication and writes every committed row to MongoDB (and, when one
//! is configured, to the SIEM as CEF), acknowledging a position to
//! PostgreSQL only after every destination acknowledged everything up to it
//! (`pipeline.rs`). Crash anywhere and the slot replays from the last acknowledged
//! position; the writes are idempotent, so nothing is lost or doubled.
//! Changes to the log other than appends and the recorded retention path
//! are tampering (`tamper.rs`): never applied, always reported.
//!
//! A session is [`start::start`] (the store, PostgreSQL, the publication,
//! the slot, the initial copy of `copy.rs`, the warm-ups), which hands a
//! [`start::Started`] to a [`session::Session`]: the replication loop. The
//! session hands batches to the destinations' delivery tasks
//! (`deliveries.rs`), which answer with a [`deliveries::Receipt`] each.

mod copy;
mod deliveries;
mod lookups;
mod session;
mod start;
#[cfg(test)]
mod tests;

pub(crate) use lookups::StoreLookups;

use crate::config::Config;
use crate::documents::{RowError, Table};
use crate::metrics::{DestinationKind, Metrics};
use crate::mongo_store::StoreError;
use crate::pipeline::PipelineError;
use crate::siem::SiemError;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

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
    Store(#[from] StoreError),
    #[error("decoding: {0}")]
    Decode(#[from] DecodeError),
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
            MirrorError::Store(e) => e.is_configuration(),
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
    config: &Config,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), MirrorError> {
    let mut backoff = Duration::from_millis(100);
    let max_backoff = Duration::from_millis(config.batch.max_backoff_ms.max(100));
    let _lag =
        crate::monitor::LagSampler::spawn(&config.postgres, &config.metrics, metrics.clone());
    loop {
        let started = Instant::now();
        match session(config, &metrics, &mut shutdown).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_configuration() => return Err(e),
            Err(e) => {
                metrics.streaming.set(0);
                // A store that ends the session shows on /health at once
                // (the next session's first answer from it clears that).
                match &e {
                    MirrorError::Store(_) | MirrorError::StoreChanged(_) => {
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

/// One session: start-up, then the replication loop until `shutdown` (or
/// a stop during the initial copy).
async fn session(
    config: &Config,
    metrics: &Arc<Metrics>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), MirrorError> {
    let Some(started) = start::start(config, metrics, shutdown).await? else {
        return Ok(());
    };
    session::Session::new(started, &config.batch, metrics, shutdown)
        .run(shutdown)
        .await?;
    Ok(())
}

/// What a published table's row went through, as pgoutput sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Insert,
    Update,
    Delete,
    Truncate,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Insert => "insert",
            ChangeKind::Update => "update",
            ChangeKind::Delete => "delete",
            ChangeKind::Truncate => "truncate",
        }
    }
}

impl std::fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message or row the mirror cannot turn into documents.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The replication message itself (pgoutput).
    #[error("{0}")]
    Message(#[from] crate::pgoutput::DecodeError),
    /// A streamed row its document cannot be made of.
    #[error("{kind} on {}: {source}", .table.collection())]
    Change {
        kind: ChangeKind,
        table: Table,
        #[source]
        source: RowError,
    },
    /// A row of the initial copy its document cannot be made of.
    #[error("{source}")]
    Copied {
        table: Table,
        #[source]
        source: RowError,
    },
}
