//! `authaudit-sidecar verify`: reconciles PostgreSQL and MongoDB.
//!
//! Every PostgreSQL row is turned into the document the mirror would store
//! for it (the conversion the stream and the initial copy use) and compared
//! with the stored document, field by field: the log per tenant in seq
//! order (a SHA-256 of each document's bytes; the first differing seq is
//! named with the fields that differ), the checkpoints and the lockout state
//! (every mirrored field but the version guard `v`, `vi`). Rows that
//! retention removed from PostgreSQL but the mirror still holds are
//! reported, not counted as differences.

use crate::config::Options;
use crate::documents::{self, Table};
use crate::sink::Sink;
use bson::{doc, RawDocument, RawDocumentBuf};
use futures_util::TryStreamExt;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// Fields of a lockout document that are the mirror's own bookkeeping.
const BOOKKEEPING: [&str; 3] = ["_id", "v", "vi"];

/// One tenant's log as seen by one side: (seq, SHA-256 of the document).
pub type TenantLog = Vec<(i64, [u8; 32])>;

fn hash(d: &RawDocument) -> [u8; 32] {
    Sha256::digest(d.as_bytes()).into()
}

/// The names of the fields in which two documents differ (`skip` aside).
fn differing_fields(a: &RawDocument, b: &RawDocument, skip: &[&str]) -> Vec<String> {
    let names: BTreeSet<String> = a
        .iter()
        .chain(b.iter())
        .filter_map(|e| e.ok().map(|(k, _)| k.to_string()))
        .filter(|k| !skip.contains(&k.as_str()))
        .collect();
    names
        .into_iter()
        .filter(|k| a.get(k).ok().flatten() != b.get(k).ok().flatten())
        .collect()
}

/// The first place two tenant logs part, walking both in seq order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parting {
    /// Both hold the seq, with different documents.
    Differs(i64),
    /// PostgreSQL holds the seq, the mirror does not.
    OnlyInPostgres(i64),
    /// The mirror holds the seq, PostgreSQL does not (deleted there).
    OnlyInMirror(i64),
}

/// Where `pg` and `mirror` (each sorted by seq) first part, if they do.
pub fn first_parting(pg: &TenantLog, mirror: &TenantLog) -> Option<Parting> {
    let (mut p, mut m) = (pg.iter().peekable(), mirror.iter().peekable());
    loop {
        match (p.peek(), m.peek()) {
            (None, None) => return None,
            (Some(a), None) => return Some(Parting::OnlyInPostgres(a.0)),
            (None, Some(b)) => return Some(Parting::OnlyInMirror(b.0)),
            (Some(a), Some(b)) if a.0 < b.0 => return Some(Parting::OnlyInPostgres(a.0)),
            (Some(a), Some(b)) if a.0 > b.0 => return Some(Parting::OnlyInMirror(b.0)),
            (Some(a), Some(b)) if a.1 != b.1 => return Some(Parting::Differs(a.0)),
            _ => {
                p.next();
                m.next();
            }
        }
    }
}

/// The outcome: one line per difference.
#[derive(Debug, Default)]
pub struct Report {
    pub tenants: usize,
    pub rows: u64,
    pub differences: Vec<String>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Reads every row of `table` through the mirror's conversion, in the copy's
/// order, and hands each document to `each`.
async fn pg_documents(
    pg: &tokio_postgres::Client,
    table: Table,
    filter: &str,
    mut each: impl FnMut(documents::Document),
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let cols = table.columns();
    let rows = pg
        .query_raw(&table.copy_query(filter), std::iter::empty::<i32>())
        .await?;
    futures_util::pin_mut!(rows);
    while let Some(row) = rows.try_next().await? {
        let values: Vec<Option<String>> = (0..cols.len()).map(|i| row.get(i)).collect();
        let get = |c: &str| {
            cols.iter()
                .position(|x| *x == c)
                .and_then(|i| values[i].as_deref())
        };
        each(documents::document(table, &get, i64::MAX)?);
    }
    Ok(())
}

/// Compares the two stores.
pub async fn reconcile(opts: &Options) -> Result<Report, Box<dyn std::error::Error + Send + Sync>> {
    let pg = crate::tls::connect(opts).await?;
    let sink = Sink::connect(
        &opts.mongodb_uri,
        &opts.mongodb_database,
        &opts.write_concern,
    )
    .await?;
    let mut report = Report::default();

    // PostgreSQL, in one snapshot: what the mirror should hold.
    pg.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let mut pg_logs: BTreeMap<String, TenantLog> = BTreeMap::new();
    pg_documents(&pg, Table::AuthLog, "", |d| {
        if let documents::Document::Row(d) = d {
            let t = d.get_str("tenant_id").unwrap_or_default().to_string();
            let seq = d.get_i64("seq").unwrap_or(0);
            pg_logs.entry(t).or_default().push((seq, hash(&d)));
        }
    })
    .await?;
    let mut pg_checkpoints: BTreeMap<String, RawDocumentBuf> = BTreeMap::new();
    pg_documents(&pg, Table::Checkpoints, "", |d| {
        if let documents::Document::Row(d) = d {
            pg_checkpoints.insert(d.get_str("_id").unwrap_or_default().to_string(), d);
        }
    })
    .await?;
    let mut pg_lockout: BTreeMap<String, RawDocumentBuf> = BTreeMap::new();
    pg_documents(&pg, Table::LockoutState, "", |d| {
        if let documents::Document::Lockout(c) = d {
            pg_lockout.insert(c.id, c.fields);
        }
    })
    .await?;

    // MongoDB: what it holds.
    let mut mongo_logs: BTreeMap<String, TenantLog> = BTreeMap::new();
    let mut removed_by_retention: BTreeMap<String, u64> = BTreeMap::new();
    let mut cursor = sink
        .raw_collection("auth_log")
        .find(doc! {})
        .sort(doc! {"tenant_id": 1, "seq": 1})
        .batch_size(10_000)
        .await?;
    while cursor.advance().await? {
        let d = cursor.current();
        let t = d.get_str("tenant_id").unwrap_or_default().to_string();
        let seq = d.get_i64("seq").unwrap_or(0);
        // Rows retention removed from PostgreSQL stay in the mirror.
        if let Some(first) = pg_logs.get(&t).and_then(|l| l.first()).map(|f| f.0) {
            if seq < first {
                *removed_by_retention.entry(t).or_default() += 1;
                continue;
            }
        }
        mongo_logs.entry(t).or_default().push((seq, hash(d)));
    }

    let tenants: BTreeSet<&String> = pg_logs.keys().chain(mongo_logs.keys()).collect();
    report.tenants = tenants.len();
    let mut first_bad = Vec::new();
    for t in tenants {
        let empty = TenantLog::default();
        let (p, m) = (
            pg_logs.get(t).unwrap_or(&empty),
            mongo_logs.get(t).unwrap_or(&empty),
        );
        report.rows += p.len() as u64;
        let last = |l: &TenantLog| l.last().map_or(0, |x| x.0);
        let counts = format!(
            "PostgreSQL has {} rows up to seq {}, MongoDB {} rows up to seq {}",
            p.len(),
            last(p),
            m.len(),
            last(m)
        );
        match first_parting(p, m) {
            None => {}
            Some(Parting::Differs(seq)) => first_bad.push((t.clone(), seq)),
            Some(Parting::OnlyInPostgres(seq)) => report.differences.push(format!(
                "tenant {t}: seq {seq} is in PostgreSQL, not in the mirror ({counts})"
            )),
            Some(Parting::OnlyInMirror(seq)) => report.differences.push(format!(
                "tenant {t}: seq {seq} is in the mirror, not in PostgreSQL: deleted there ({counts})"
            )),
        }
    }
    for (t, seq) in first_bad {
        let mut expected = None;
        pg_documents(
            &pg,
            Table::AuthLog,
            &format!(
                "t.tenant_id = '{}' AND t.seq = {seq}",
                t.replace('\'', "''")
            ),
            |d| {
                if let documents::Document::Row(d) = d {
                    expected = Some(d);
                }
            },
        )
        .await?;
        let stored = sink
            .raw_collection("auth_log")
            .find_one(doc! {"tenant_id": &t, "seq": seq})
            .await?;
        let fields = match (&expected, &stored) {
            (Some(e), Some(s)) => differing_fields(e, s, &[]).join(", "),
            _ => "the whole row".to_string(),
        };
        report.differences.push(format!(
            "tenant {t}: the mirror differs first at seq {seq} ({fields})"
        ));
    }
    pg.batch_execute("COMMIT").await?;
    for (t, n) in removed_by_retention {
        report.notes.push(format!(
            "tenant {t}: the mirror keeps {n} rows that retention removed from PostgreSQL"
        ));
    }

    compare_by_id(
        "checkpoint",
        &pg_checkpoints,
        &by_id(&sink, "checkpoints").await?,
        &[],
        &mut report,
    );
    compare_by_id(
        "lockout state",
        &pg_lockout,
        &by_id(&sink, "lockout_state").await?,
        &BOOKKEEPING,
        &mut report,
    );
    Ok(report)
}

/// Every document of a collection, by `_id`.
async fn by_id(
    sink: &Sink,
    collection: &str,
) -> Result<BTreeMap<String, RawDocumentBuf>, mongodb::error::Error> {
    let mut cursor = sink.raw_collection(collection).find(doc! {}).await?;
    let mut out = BTreeMap::new();
    while cursor.advance().await? {
        let d = cursor.current().to_raw_document_buf();
        out.insert(d.get_str("_id").unwrap_or_default().to_string(), d);
    }
    Ok(out)
}

/// Compares documents by `_id`: missing on either side, or differing fields.
fn compare_by_id(
    what: &str,
    pg: &BTreeMap<String, RawDocumentBuf>,
    mongo: &BTreeMap<String, RawDocumentBuf>,
    skip: &[&str],
    report: &mut Report,
) {
    let skip: Vec<&str> = skip.iter().copied().chain(["_id"]).collect();
    for (k, p) in pg {
        match mongo.get(k) {
            Some(m) => {
                let fields = differing_fields(p, m, &skip);
                if !fields.is_empty() {
                    report
                        .differences
                        .push(format!("{what} {k}: differs in {}", fields.join(", ")));
                }
            }
            None => report
                .differences
                .push(format!("{what} {k}: missing in MongoDB")),
        }
    }
    for k in mongo.keys().filter(|k| !pg.contains_key(*k)) {
        report
            .differences
            .push(format!("{what} {k}: only in MongoDB"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(entries: &[(i64, u8)]) -> TenantLog {
        entries.iter().map(|(s, h)| (*s, [*h; 32])).collect()
    }

    #[test]
    fn the_first_parting_is_named_with_why() {
        let mirror = log(&[(1, 1), (2, 2), (3, 3), (4, 4)]);
        assert_eq!(first_parting(&mirror.clone(), &mirror), None);
        // Content edited at 3, then 2 deleted: the deletion comes first.
        assert_eq!(
            first_parting(&log(&[(1, 1), (3, 9), (4, 4)]), &mirror),
            Some(Parting::OnlyInMirror(2))
        );
        assert_eq!(
            first_parting(&log(&[(1, 1), (2, 2), (3, 9), (4, 4)]), &mirror),
            Some(Parting::Differs(3))
        );
        // A forged tail, and a truncated one.
        assert_eq!(
            first_parting(&log(&[(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]), &mirror),
            Some(Parting::OnlyInPostgres(5))
        );
        assert_eq!(
            first_parting(&log(&[(1, 1), (2, 2)]), &mirror),
            Some(Parting::OnlyInMirror(3))
        );
    }
}
