//! One task per destination delivers the batches handed to it, in order,
//! and answers each with a [`Receipt`]; the tasks are aborted with the
//! session.

use super::MirrorError;
use crate::config::BatchConfig;
use crate::destination::{deliver_with_retry, Batch, Destination, RowCounts};
use crate::metrics::Metrics;
use pgwire_replication::Lsn;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch};

/// What a destination's delivery task reports about one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// The destination's index in the session's destinations.
    pub destination: usize,
    /// The batch's number (`Pipeline::hand_out`).
    pub batch: u64,
    /// The end of the batch's last complete transaction, if it holds one:
    /// what PostgreSQL may forget once every destination delivered it.
    pub position: Option<Lsn>,
    /// False when the delivery was abandoned (shutdown): nothing after it
    /// counts.
    pub delivered: bool,
}

/// A batch on its way to the destinations.
struct Parcel {
    number: u64,
    position: Option<Lsn>,
    batch: Arc<Batch>,
}

/// A batch handed out and not yet delivered by every destination, with
/// the rows it counts once it is.
#[derive(Debug, Clone, Copy)]
pub(super) struct InFlight {
    pub batch: u64,
    pub rows: RowCounts,
}

/// The destinations' delivery tasks.
pub(super) struct Deliveries {
    queues: Vec<mpsc::Sender<Parcel>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    names: Vec<&'static str>,
}

impl Deliveries {
    pub fn start(
        destinations: &[Arc<dyn Destination>],
        outstanding: usize,
        batch: &BatchConfig,
        metrics: &Arc<Metrics>,
        shutdown: &watch::Receiver<bool>,
        receipts: mpsc::UnboundedSender<Receipt>,
    ) -> Deliveries {
        let mut d = Deliveries {
            queues: Vec::new(),
            tasks: Vec::new(),
            names: Vec::new(),
        };
        for (i, dest) in destinations.iter().enumerate() {
            let (tx, rx) = mpsc::channel::<Parcel>(outstanding.max(1));
            d.names.push(dest.name());
            d.queues.push(tx);
            d.tasks.push(tokio::spawn(deliver(
                i,
                dest.clone(),
                rx,
                batch.clone(),
                metrics.clone(),
                shutdown.clone(),
                receipts.clone(),
            )));
        }
        d
    }

    /// Hands a batch to every destination (each queue has room: the
    /// pipeline holds no more batches than a queue does).
    pub async fn hand(
        &self,
        number: u64,
        position: Option<Lsn>,
        batch: Batch,
    ) -> Result<(), MirrorError> {
        let batch = Arc::new(batch);
        for (q, name) in self.queues.iter().zip(&self.names) {
            let parcel = Parcel {
                number,
                position,
                batch: batch.clone(),
            };
            q.send(parcel)
                .await
                .map_err(|_| MirrorError::DeliveryEnded(name))?;
        }
        Ok(())
    }
}

/// The task of destination `i`: delivers each batch (retrying until it is
/// taken or shutdown abandons it) and reports it.
async fn deliver(
    i: usize,
    dest: Arc<dyn Destination>,
    mut rx: mpsc::Receiver<Parcel>,
    config: BatchConfig,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
    receipts: mpsc::UnboundedSender<Receipt>,
) {
    while let Some(p) = rx.recv().await {
        let started = Instant::now();
        let ok = deliver_with_retry(dest.as_ref(), &p.batch, &config, &metrics, &mut stop).await;
        tracing::debug!(
            destination = dest.name(),
            rows = p.batch.rows(),
            ms = started.elapsed().as_millis() as u64,
            "batch delivered"
        );
        let receipt = Receipt {
            destination: i,
            batch: p.number,
            position: p.position,
            delivered: ok,
        };
        if receipts.send(receipt).is_err() || !ok {
            break;
        }
    }
}

impl Drop for Deliveries {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
