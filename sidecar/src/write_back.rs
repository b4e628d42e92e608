//! Writes the witness's signed checkpoints back to PostgreSQL
//! (`authaudit.record_witness_checkpoint`), where analysts read them and
//! `authaudit.witnessed_evidence` bundles them with an event's proof.
//!
//! Not part of the acknowledgement contract: the store and the witness log
//! hold every checkpoint before its position is acknowledged; PostgreSQL
//! receives copies afterwards, best effort. A note that does not fit the
//! queue, or arrives while PostgreSQL refuses it, is written at the next
//! session start, which writes every checkpoint of the store newer than
//! the tenant's latest in PostgreSQL. PostgreSQL checks each note's
//! signature against `authaudit.witness_keys` and whether its row at the
//! signed size still holds the signed digests; a disagreement is logged as
//! an error and counted. A note PostgreSQL refuses because it holds another
//! note of the same size under the same key (`XX001`) is kept there with
//! `authaudit.record_witness_disagreement`, logged and counted too.

use crate::config::PostgresConfig;
use crate::metrics::Metrics;
use crate::mongo_store::{MongoStore, StoreError};
use bson::{doc, RawDocument};
use futures_util::TryStreamExt;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Notes waiting to be written; beyond it, the next start's catch-up.
const QUEUE: usize = 1024;
const RECORD: &str = "SELECT agrees FROM authaudit.record_witness_checkpoint($1, $2)";
const DISAGREEMENT: &str = "SELECT authaudit.record_witness_disagreement($1, $2)";
const LATEST: &str =
    "SELECT tenant_id, max(tree_size) FROM authaudit.witness_checkpoints GROUP BY tenant_id";

/// One signed checkpoint to write back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub tenant: String,
    pub tree_size: i64,
    pub note: String,
}

impl Note {
    /// The note of a `witness_checkpoints` document.
    pub fn from_document(d: &RawDocument) -> Option<Note> {
        Some(Note {
            tenant: d.get_str("tenant_id").ok()?.to_owned(),
            tree_size: d.get_i64("tree_size").ok()?,
            note: d.get_str("note").ok()?.to_owned(),
        })
    }
}

/// The sending side of a session's write-back task; the task ends when
/// every clone is dropped.
#[derive(Clone)]
pub struct WriteBack {
    tx: mpsc::Sender<Note>,
}

impl WriteBack {
    /// Starts the task: first the catch-up, then each note sent.
    /// `max_backoff_ms`: the longest back-off between connection attempts.
    pub fn spawn(
        postgres: PostgresConfig,
        max_backoff_ms: u64,
        store: MongoStore,
        metrics: Arc<Metrics>,
    ) -> WriteBack {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(postgres, max_backoff_ms, store, metrics, rx));
        WriteBack { tx }
    }

    /// Queues notes the store has written.
    pub fn send(&self, notes: impl IntoIterator<Item = Note>) {
        for n in notes {
            if self.tx.try_send(n).is_err() {
                tracing::debug!("witness write-back queue full; the next start writes the rest");
            }
        }
    }
}

/// The store's checkpoints newer than PostgreSQL's latest of their tenant,
/// in tree order.
pub fn missing(store: Vec<Note>, latest_in_pg: &HashMap<String, i64>) -> Vec<Note> {
    let mut out: Vec<Note> = store
        .into_iter()
        .filter(|n| latest_in_pg.get(&n.tenant).is_none_or(|s| n.tree_size > *s))
        .collect();
    out.sort_by(|a, b| (&a.tenant, a.tree_size).cmp(&(&b.tenant, b.tree_size)));
    out
}

async fn store_notes(store: &MongoStore) -> Result<Vec<Note>, StoreError> {
    let mut cursor = store
        .raw_collection("witness_checkpoints")
        .find(doc! {})
        .projection(doc! {"tenant_id": 1, "tree_size": 1, "note": 1})
        .await?;
    let mut out = Vec::new();
    while let Some(d) = cursor.try_next().await? {
        out.extend(Note::from_document(&d));
    }
    Ok(out)
}

/// What one write attempt says about the connection.
enum Outcome {
    Done,
    Reconnect,
}

async fn run(
    postgres: PostgresConfig,
    max_backoff_ms: u64,
    store: MongoStore,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<Note>,
) {
    let mut pending: VecDeque<Note> = VecDeque::new();
    let mut caught_up = false;
    let mut warned: HashSet<String> = HashSet::new();
    let mut backoff = Duration::from_millis(200);
    let max_backoff = Duration::from_millis(max_backoff_ms.max(200));
    loop {
        let pg = match crate::pg::connect(&postgres).await {
            Ok(pg) => pg,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "witness write-back cannot connect to PostgreSQL");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    n = rx.recv() => match n {
                        Some(n) => pending.push_back(n),
                        None => return,
                    },
                }
                backoff = (backoff * 2).min(max_backoff);
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        if !caught_up {
            match pg.query(LATEST, &[]).await {
                Ok(rows) => {
                    let latest: HashMap<String, i64> =
                        rows.iter().map(|r| (r.get(0), r.get(1))).collect();
                    match store_notes(&store).await {
                        Ok(notes) => {
                            let notes = missing(notes, &latest);
                            if !notes.is_empty() {
                                tracing::info!(
                                    checkpoints = notes.len(),
                                    "writing back the signed checkpoints PostgreSQL lacks"
                                );
                            }
                            pending.extend(notes);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "witness write-back cannot read the store's checkpoints; writing new ones only")
                        }
                    }
                    caught_up = true;
                }
                Err(e) if e.as_db_error().is_some() => {
                    // An extension before 0.7.0 has no witness_checkpoints.
                    warn_once(&mut warned, &e);
                    caught_up = true;
                }
                Err(_) => continue,
            }
        }
        loop {
            if pending.is_empty() {
                match rx.recv().await {
                    Some(n) => pending.push_back(n),
                    None => return,
                }
            }
            while let Ok(n) = rx.try_recv() {
                pending.push_back(n);
            }
            let n = pending.front().expect("not empty");
            match write(&pg, n, &metrics, &mut warned).await {
                Outcome::Done => {
                    pending.pop_front();
                }
                Outcome::Reconnect => break,
            }
        }
    }
}

async fn write(
    pg: &tokio_postgres::Client,
    n: &Note,
    metrics: &Metrics,
    warned: &mut HashSet<String>,
) -> Outcome {
    match pg.query_one(RECORD, &[&n.tenant, &n.note]).await {
        Ok(row) => {
            metrics.witness_written_back.inc();
            if row.get::<_, Option<bool>>(0) == Some(false) {
                metrics.witness_disagreements.inc();
                tracing::error!(
                    tenant = %n.tenant,
                    tree_size = n.tree_size,
                    "WITNESS: PostgreSQL's row at seq {} of tenant {} does not hold what the witness signed (rewritten or removed since it was mirrored); run authaudit-sidecar witness-check",
                    n.tree_size,
                    n.tenant
                );
            }
            Outcome::Done
        }
        // PostgreSQL holds another note of this size signed by this key:
        // the key signed two trees of one size. Kept there as a
        // disagreement (no evidence is built on that size), alarmed here.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DATA_CORRUPTED) => {
            metrics.witness_disagreements.inc();
            tracing::error!(
                tenant = %n.tenant,
                tree_size = n.tree_size,
                "WITNESS: PostgreSQL holds another signed checkpoint of size {} for tenant {} under this key (two trees of one size); the witness's note is kept in authaudit.witness_disagreements; run authaudit-sidecar witness-check",
                n.tree_size,
                n.tenant
            );
            match pg.query_one(DISAGREEMENT, &[&n.tenant, &n.note]).await {
                Ok(_) => Outcome::Done,
                Err(e) if e.as_db_error().is_some() => {
                    warn_once(warned, &e);
                    Outcome::Done
                }
                Err(e) => {
                    tracing::warn!(error = %e, "witness write-back lost its PostgreSQL connection");
                    Outcome::Reconnect
                }
            }
        }
        // Refused (no key set, another key, an old extension): the note
        // stays in the store and the log; the next start retries.
        Err(e) if e.as_db_error().is_some() => {
            warn_once(warned, &e);
            Outcome::Done
        }
        Err(e) => {
            tracing::warn!(error = %e, "witness write-back lost its PostgreSQL connection");
            Outcome::Reconnect
        }
    }
}

/// Logs a refusal once per SQLSTATE and message.
fn warn_once(warned: &mut HashSet<String>, e: &tokio_postgres::Error) {
    let Some(db) = e.as_db_error() else { return };
    if warned.insert(format!("{}: {}", db.code().code(), db.message())) {
        tracing::warn!(
            sqlstate = db.code().code(),
            error = db.message(),
            hint = db.hint().unwrap_or(""),
            "PostgreSQL refused a signed checkpoint; it stays in the store and the witness log (docs/sidecar.md, \"The witness\")"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(tenant: &str, size: i64) -> Note {
        Note {
            tenant: tenant.into(),
            tree_size: size,
            note: format!("{tenant}/{size}"),
        }
    }

    #[test]
    fn the_catch_up_writes_what_postgresql_lacks_in_tree_order() {
        let store = vec![
            note("b", 20),
            note("a", 30),
            note("a", 10),
            note("b", 10),
            note("c", 5),
        ];
        let latest = HashMap::from([("a".to_string(), 10), ("b".to_string(), 20)]);
        assert_eq!(missing(store, &latest), vec![note("a", 30), note("c", 5)]);
        assert!(missing(vec![note("a", 10)], &latest).is_empty());
    }
}
