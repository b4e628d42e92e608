//! A session's watch over its slot and its store, apart from the stream:
//! the stream waits while a destination is down (back-pressure), so what
//! the operator must see then is measured here.
//!
//! - The replication lag, from the slot's position as the server holds it
//!   (`pg_current_wal_lsn() - confirmed_flush_lsn`) and the WAL it retains,
//!   on a connection of its own: a stalled mirror shows a growing lag.
//! - The store, pinged within `--store-timeout-ms`: a store that is down
//!   counts an error and turns `/health` degraded at once, even when no
//!   write is under way.
//! - The store's identity (`_authaudit_sidecar`): a store that comes back
//!   empty or replaced under a running session ends the session, whose
//!   next start judges the store's custody (`custody.rs`).

use crate::config::{MetricsConfig, MongoConfig, PostgresConfig};
use crate::metrics::{DestinationKind, Metrics};
use crate::mongo_store::MongoStore;
use bson::doc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The running watch; stopped when dropped.
pub struct Monitor {
    task: tokio::task::JoinHandle<()>,
    /// Set when the store's identity changed under the session.
    pub store_changed: watch::Receiver<Option<String>>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How often the slot and the store are looked at: within half the
/// health timeout.
fn interval(metrics: &MetricsConfig) -> Duration {
    Duration::from_millis((metrics.health_timeout_ms / 2).clamp(100, 1000))
}

impl Monitor {
    /// Starts the watch of `--slot`'s state in the store; `store_id` is the
    /// store's identity at the session's start.
    pub fn spawn(
        postgres: &PostgresConfig,
        mongo: &MongoConfig,
        watch: &MetricsConfig,
        store: MongoStore,
        metrics: Arc<Metrics>,
        store_id: Option<String>,
    ) -> Monitor {
        let (tx, rx) = watch::channel(None);
        let slot = postgres.slot.clone();
        let (every, timeout) = (interval(watch), mongo.timeout());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let ping = tokio::time::timeout(
                    timeout,
                    store
                        .collection("_authaudit_sidecar")
                        .find_one(doc! {"_id": &slot}),
                )
                .await;
                match ping {
                    Ok(Ok(state)) => {
                        metrics.destinations.succeeded_ping(DestinationKind::Store);
                        let found =
                            state.and_then(|d| d.get_str("store_id").ok().map(str::to_owned));
                        if found != store_id {
                            let why = match &found {
                                None => {
                                    "its mirror state is gone (emptied or replaced)".to_string()
                                }
                                Some(f) => format!("it is now store {f}"),
                            };
                            let _ = tx.send(Some(why));
                        }
                    }
                    Ok(Err(e)) => {
                        metrics.mongodb_errors.inc();
                        metrics
                            .destinations
                            .failed_ping(DestinationKind::Store, &format!("MongoDB: {e}"));
                    }
                    Err(_) => {
                        metrics.mongodb_errors.inc();
                        metrics.destinations.failed_ping(
                            DestinationKind::Store,
                            &format!("MongoDB: no answer within {} ms", timeout.as_millis()),
                        );
                    }
                }
            }
        });
        Monitor {
            task,
            store_changed: rx,
        }
    }
}

/// Samples the slot's lag and retained WAL (reconnecting as needed).
/// Samples the slot's lag for as long as the process runs, whether a
/// session streams or not: a store that is down ends every session, and
/// the lag must grow then. Aborted when dropped.
pub struct LagSampler(tokio::task::JoinHandle<()>);

impl Drop for LagSampler {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl LagSampler {
    pub fn spawn(
        postgres: &PostgresConfig,
        watch: &MetricsConfig,
        metrics: Arc<Metrics>,
    ) -> LagSampler {
        let postgres = postgres.clone();
        let every = interval(watch);
        LagSampler(tokio::spawn(async move {
            let mut pg: Option<tokio_postgres::Client> = None;
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                slot_lag(&postgres, &mut pg, &metrics).await;
            }
        }))
    }
}

async fn slot_lag(
    postgres: &PostgresConfig,
    pg: &mut Option<tokio_postgres::Client>,
    metrics: &Metrics,
) {
    if pg.as_ref().is_none_or(|c| c.is_closed()) {
        *pg = crate::pg::connect(postgres).await.ok();
    }
    let Some(c) = pg.as_ref() else {
        return;
    };
    let row = c
        .query_opt(
            "SELECT (pg_catalog.pg_current_wal_lsn() - confirmed_flush_lsn)::int8, \
                    (pg_catalog.pg_current_wal_lsn() - restart_lsn)::int8 \
               FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&postgres.slot],
        )
        .await;
    match row {
        Ok(Some(r)) => {
            let lag: Option<i64> = r.get(0);
            metrics
                .positions
                .slot_lag_bytes
                .store(lag.unwrap_or(0).max(0), Ordering::Relaxed);
            metrics
                .slot_retained_wal_bytes
                .set(r.get::<_, Option<i64>>(1).unwrap_or(0));
        }
        Ok(None) => {}
        Err(e) => {
            tracing::debug!(error = %e, "could not sample the slot's lag");
            *pg = None;
        }
    }
}
