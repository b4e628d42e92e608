//! The initial copy: every row committed before the slot existed, read in
//! one snapshot and delivered to every destination in batches.

use super::session::report_fallback;
use super::{DecodeError, MirrorError};
use crate::config::BatchConfig;
use crate::destination::{deliver_with_retry, Batch, Destination};
use crate::documents::{self, Table};
use crate::metrics::Metrics;
use futures_util::TryStreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Copies every row committed before the slot existed (idempotent; run
/// again after a crash until it completes). With a SIEM, `heads` gets
/// each tenant's last log seq in the copy; a progress line every
/// `progress`.
pub(super) async fn initial_copy(
    pg: &mut tokio_postgres::Client,
    destinations: &[Arc<dyn Destination>],
    mut heads: Option<&mut HashMap<String, i64>>,
    config: &BatchConfig,
    progress: Duration,
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
                let decode = |source| DecodeError::Copied { table, source };
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
            if batch.rows() >= config.rows || (done && !batch.is_empty()) {
                for d in destinations {
                    if !deliver_with_retry(d.as_ref(), &batch, config, metrics, shutdown).await {
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
