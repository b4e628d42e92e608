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

use crate::config::{MongoConfig, PostgresConfig};
use crate::documents::{self, Table};
use crate::error::ToolError;
use crate::mongo_store::MongoStore;
use bson::{doc, RawDocument, RawDocumentBuf};
use futures_util::TryStreamExt;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// The metadata of a log document as releases before 0.9.0 embedded it:
/// integers within 64 bits as Int64, any other number as a Double
/// (rounded); `None` for text they could not embed at all.
fn earlier_metadata(text: &str) -> Option<bson::RawBson> {
    use bson::{RawArrayBuf, RawBson};
    use serde_json::Value as J;
    fn convert(v: &J) -> Option<RawBson> {
        Some(match v {
            J::Null => RawBson::Null,
            J::Bool(b) => RawBson::Boolean(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => RawBson::Int64(i),
                None => RawBson::Double(n.as_f64()?),
            },
            J::String(s) => RawBson::String(s.clone()),
            J::Array(a) => {
                let mut out = RawArrayBuf::new();
                for x in a {
                    out.push(convert(x)?);
                }
                RawBson::Array(out)
            }
            J::Object(m) => {
                let mut out = RawDocumentBuf::new();
                for (k, x) in m {
                    if k.contains('\0') {
                        return None;
                    }
                    out.append(k, convert(x)?);
                }
                RawBson::Document(out)
            }
        })
    }
    convert(&serde_json::from_str(text).ok()?)
}

/// Whether `stored` is the log document `expected` describes in the form
/// releases before 0.9.0 wrote: only `metadata` differs, and it is the
/// earlier conversion of the same hashed text. Such a document is not a
/// difference: the chain's content is the same, only the numbers are
/// rounded. `verify --rewrite-earlier-numbers` replaces it.
pub fn earlier_form(expected: &RawDocument, stored: &RawDocument) -> bool {
    let Ok(text) = expected.get_str("metadata_text") else {
        return false;
    };
    differing_fields(expected, stored, &[]) == ["metadata"]
        && stored.get_str("metadata_text").ok() == Some(text)
        && stored
            .get("metadata")
            .ok()
            .flatten()
            .zip(earlier_metadata(text))
            .is_some_and(|(s, e)| s.to_raw_bson() == e)
}

/// Fields of a lockout document that are the mirror's own bookkeeping.
const BOOKKEEPING: [&str; 3] = ["_id", "v", "vi"];

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

/// One log row as one side holds it: its tenant, seq and the SHA-256 of
/// its document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub tenant: String,
    pub seq: i64,
    pub hash: [u8; 32],
}

/// What the walk found for one tenant.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TenantSummary {
    pub pg_rows: u64,
    pub pg_last: i64,
    pub mirror_rows: u64,
    pub mirror_last: i64,
    /// Mirror rows before PostgreSQL's first: removed there by retention.
    pub retained_in_mirror: u64,
    /// The first place the two logs part.
    pub parting: Option<Parting>,
}

/// Which side the walk reads next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance {
    Both,
    Postgres,
    Mirror,
    Done,
}

/// Walks both logs in (tenant, seq) order, one row of each at a time: the
/// memory is one summary per tenant, whatever the log's size. Both sides
/// sort tenants bytewise (PostgreSQL `COLLATE "C"`, MongoDB's binary
/// string order).
#[derive(Debug, Default)]
pub struct Lockstep {
    pub tenants: BTreeMap<String, TenantSummary>,
}

impl Lockstep {
    /// Takes the current row of each side (`None`: that side has ended)
    /// and says which to read next.
    pub fn step(&mut self, pg: Option<&Entry>, mirror: Option<&Entry>) -> Advance {
        match (pg, mirror) {
            (None, None) => Advance::Done,
            (Some(p), None) => {
                self.postgres_only(p);
                Advance::Postgres
            }
            (None, Some(m)) => {
                self.mirror_only(m, None);
                Advance::Mirror
            }
            (Some(p), Some(m)) => match (p.tenant.as_str(), p.seq).cmp(&(m.tenant.as_str(), m.seq))
            {
                std::cmp::Ordering::Equal => {
                    let t = self.summary(&p.tenant);
                    t.pg_rows += 1;
                    t.pg_last = p.seq;
                    t.mirror_rows += 1;
                    t.mirror_last = m.seq;
                    if p.hash != m.hash {
                        t.parting.get_or_insert(Parting::Differs(p.seq));
                    }
                    Advance::Both
                }
                std::cmp::Ordering::Less => {
                    self.postgres_only(p);
                    Advance::Postgres
                }
                std::cmp::Ordering::Greater => {
                    self.mirror_only(m, Some(p));
                    Advance::Mirror
                }
            },
        }
    }

    fn summary(&mut self, tenant: &str) -> &mut TenantSummary {
        if !self.tenants.contains_key(tenant) {
            self.tenants
                .insert(tenant.to_owned(), TenantSummary::default());
        }
        self.tenants.get_mut(tenant).expect("inserted")
    }

    fn postgres_only(&mut self, p: &Entry) {
        let t = self.summary(&p.tenant);
        t.pg_rows += 1;
        t.pg_last = p.seq;
        t.parting.get_or_insert(Parting::OnlyInPostgres(p.seq));
    }

    /// A mirror row PostgreSQL lacks; `next_pg` is PostgreSQL's next row.
    fn mirror_only(&mut self, m: &Entry, next_pg: Option<&Entry>) {
        let t = self.summary(&m.tenant);
        // Before PostgreSQL's first row of the tenant: retention removed it.
        if t.pg_rows == 0 && next_pg.is_some_and(|p| p.tenant == m.tenant) {
            t.retained_in_mirror += 1;
            return;
        }
        t.mirror_rows += 1;
        t.mirror_last = m.seq;
        t.parting.get_or_insert(Parting::OnlyInMirror(m.seq));
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
) -> Result<(), BoxError> {
    let rows = pg
        .query_raw(&table.copy_query(filter), std::iter::empty::<i32>())
        .await?;
    futures_util::pin_mut!(rows);
    while let Some(row) = rows.try_next().await? {
        each(convert(table, &row)?);
    }
    Ok(())
}

/// Compares the two stores; with `rewrite_earlier`, replaces each log
/// document in the earlier number form ([`earlier_form`]) by the current
/// one. Progress lines every `progress_ms`.
pub async fn reconcile(
    postgres: &PostgresConfig,
    mongo: &MongoConfig,
    progress_ms: u64,
    rewrite_earlier: bool,
) -> Result<Report, ToolError> {
    let pg = crate::pg::connect(postgres).await?;
    // A role that sees only some tenants would report every other tenant's
    // rows as deleted in PostgreSQL.
    crate::preflight::Facts::read(&pg).await?.check_reader()?;
    let store = MongoStore::from_config(mongo).await?;
    let mut report = Report::default();

    // PostgreSQL, in one snapshot: what the mirror should hold.
    pg.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let mut pg_checkpoints: BTreeMap<String, RawDocumentBuf> = BTreeMap::new();
    pg_documents(&pg, Table::Checkpoints, "", |d| {
        if let documents::Document::Checkpoint(d) = d {
            pg_checkpoints.insert(d.get_str("_id").unwrap_or_default().to_string(), d);
        }
    })
    .await?;

    // The log: both sides in (tenant, seq) order, in lockstep.
    let (walk, earlier) = walk_logs(&pg, &store, rewrite_earlier, progress_ms).await?;
    report.tenants = walk.tenants.len();
    let mut first_bad = Vec::new();
    let mut removed_by_retention = Vec::new();
    for (t, s) in &walk.tenants {
        report.rows += s.pg_rows;
        if s.retained_in_mirror > 0 {
            removed_by_retention.push((t.clone(), s.retained_in_mirror));
        }
        let counts = format!(
            "PostgreSQL has {} rows up to seq {}, MongoDB {} rows up to seq {}",
            s.pg_rows, s.pg_last, s.mirror_rows, s.mirror_last
        );
        match s.parting {
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
        let fields = differing_at(&pg, &store, &t, seq).await?;
        report.differences.push(format!(
            "tenant {t}: the mirror differs first at seq {seq} ({fields})"
        ));
    }
    walk_lockout(&pg, &store, &mut report).await?;
    pg.batch_execute("COMMIT").await?;
    for (t, n) in earlier {
        report.notes.push(if rewrite_earlier {
            format!("tenant {t}: {n} log documents rewritten from the number form of releases before 0.9.0")
        } else {
            format!(
                "tenant {t}: {n} log documents hold their metadata numbers as releases before 0.9.0 wrote them \
                 (Doubles, rounded; metadata_text is exact); `authaudit-sidecar verify --rewrite-earlier-numbers` rewrites them"
            )
        });
    }
    for (t, n) in removed_by_retention {
        report.notes.push(format!(
            "tenant {t}: the mirror keeps {n} rows that retention removed from PostgreSQL"
        ));
    }

    compare_by_id(
        "checkpoint",
        &pg_checkpoints,
        &by_id(&store, "checkpoints").await?,
        &[],
        &mut report,
    );
    Ok(report)
}

/// The fields in which the mirror's log document of (tenant, seq) differs
/// from the one PostgreSQL's row makes.
async fn differing_at(
    pg: &tokio_postgres::Client,
    store: &MongoStore,
    t: &str,
    seq: i64,
) -> Result<String, ToolError> {
    let mut expected = None;
    pg_documents(
        pg,
        Table::AuthLog,
        &format!(
            "t.tenant_id = '{}' AND t.seq = {seq}",
            t.replace('\'', "''")
        ),
        |d| {
            if let documents::Document::Log(l) = d {
                expected = Some(l.doc);
            }
        },
    )
    .await?;
    let stored = store
        .raw_collection("auth_log")
        .find_one(doc! {"tenant_id": t, "seq": seq})
        .await?;
    Ok(match (&expected, &stored) {
        (Some(e), Some(s)) => match differing_fields(e, s, &[]) {
            f if f.is_empty() => "the fields moved to auth_log_parts".to_string(),
            f => f.join(", "),
        },
        _ => "the whole row".to_string(),
    })
}

/// Walks PostgreSQL's log (through the mirror's conversion) and the
/// mirror's in lockstep; also returns, per tenant, the documents found in
/// the earlier number form (rewritten with `rewrite_earlier`).
async fn walk_logs(
    pg: &tokio_postgres::Client,
    store: &MongoStore,
    rewrite_earlier: bool,
    progress_ms: u64,
) -> Result<(Lockstep, BTreeMap<String, u64>), BoxError> {
    let rows = pg
        .query_raw(&Table::AuthLog.copy_query(""), std::iter::empty::<i32>())
        .await?;
    futures_util::pin_mut!(rows);
    let mut next_pg = async || -> Result<Option<(Entry, RawDocumentBuf)>, BoxError> {
        while let Some(row) = rows.try_next().await? {
            if let documents::Document::Log(l) = convert(Table::AuthLog, &row)? {
                return Ok(Some((entry(&l.doc), l.doc)));
            }
        }
        Ok(None)
    };
    let mut earlier: BTreeMap<String, u64> = BTreeMap::new();
    let log = store.raw_collection("auth_log");
    let mut cursor = store
        .raw_collection("auth_log")
        .find(doc! {})
        .sort(doc! {"tenant_id": 1, "seq": 1})
        .batch_size(10_000)
        .await?;
    let parts = store.raw_collection("auth_log_parts");
    // A stored document's entry: its hash, unless a field it moved to
    // parts does not join back to the text it names.
    let mirror_entry = async |d: &RawDocument| -> Result<Entry, BoxError> {
        let mut e = entry(d);
        if let Ok(fields) = d.get_document("parts") {
            let id = d.get_str("_id").unwrap_or_default();
            let mut stored = Vec::new();
            let mut c = parts
                .find(doc! {"log_doc_id": id})
                .sort(doc! {"field": 1, "n": 1})
                .await?;
            while c.advance().await? {
                stored.push(c.current().to_raw_document_buf());
            }
            let whole = fields
                .iter()
                .filter_map(Result::ok)
                .all(|(f, _)| documents::joined_parts(d, f, &stored).is_some());
            if !whole {
                e.hash = [0; 32];
            }
        }
        Ok(e)
    };
    let mut p = next_pg().await?;
    let mut m = if cursor.advance().await? {
        Some(mirror_entry(cursor.current()).await?)
    } else {
        None
    };
    let mut walk = Lockstep::default();
    let progress = std::time::Duration::from_millis(progress_ms);
    let mut logged = std::time::Instant::now();
    let mut compared = 0u64;
    loop {
        compared += 1;
        if logged.elapsed() >= progress {
            logged = std::time::Instant::now();
            tracing::info!(
                rows = compared,
                tenant = p.as_ref().map(|(e, _)| e.tenant.as_str()),
                "verify under way: log rows compared"
            );
        }
        if let (Some((pe, expected)), Some(me)) = (&p, &mut m) {
            let same_row = (pe.tenant.as_str(), pe.seq) == (me.tenant.as_str(), me.seq);
            if same_row && pe.hash != me.hash && earlier_form(expected, cursor.current()) {
                *earlier.entry(pe.tenant.clone()).or_default() += 1;
                if rewrite_earlier {
                    let id = expected.get_str("_id").unwrap_or_default();
                    let text = expected.get_str("metadata_text").unwrap_or_default();
                    log.replace_one(doc! {"_id": id, "metadata_text": text}, expected)
                        .await?;
                }
                me.hash = pe.hash;
            }
        }
        let advance = walk.step(p.as_ref().map(|(e, _)| e), m.as_ref());
        if matches!(advance, Advance::Both | Advance::Postgres) {
            p = next_pg().await?;
        }
        if matches!(advance, Advance::Both | Advance::Mirror) {
            m = if cursor.advance().await? {
                Some(mirror_entry(cursor.current()).await?)
            } else {
                None
            };
        }
        if advance == Advance::Done {
            return Ok((walk, earlier));
        }
    }
}

type BoxError = ToolError;

/// One PostgreSQL row of `table` (selected by its `copy_query`) as the
/// mirror's document.
fn convert(table: Table, row: &tokio_postgres::Row) -> Result<documents::Document, BoxError> {
    let cols = table.columns();
    let values: Vec<Option<&str>> = (0..cols.len()).map(|i| row.get(i)).collect();
    let get = |c: &str| cols.iter().position(|x| *x == c).and_then(|i| values[i]);
    Ok(documents::document(table, &get, i64::MAX)?)
}

/// The key both sides sort the lockout state by.
fn lockout_key(d: &RawDocument) -> (&str, &str) {
    (
        d.get_str("tenant_id").unwrap_or_default(),
        d.get_str("user_id").unwrap_or_default(),
    )
}

/// Compares the lockout state in lockstep, both sides in (tenant, user)
/// bytewise order: a row missing on either side, or differing fields (the
/// version guard aside).
async fn walk_lockout(
    pg: &tokio_postgres::Client,
    store: &MongoStore,
    report: &mut Report,
) -> Result<(), BoxError> {
    let rows = pg
        .query_raw(
            &Table::LockoutState.copy_query(""),
            std::iter::empty::<i32>(),
        )
        .await?;
    futures_util::pin_mut!(rows);
    let mut next_pg = async || -> Result<Option<documents::LockoutChange>, BoxError> {
        while let Some(row) = rows.try_next().await? {
            if let documents::Document::Lockout(c) = convert(Table::LockoutState, &row)? {
                return Ok(Some(c));
            }
        }
        Ok(None)
    };
    let mut cursor = store
        .raw_collection("lockout_state")
        .find(doc! {})
        .sort(doc! {"tenant_id": 1, "user_id": 1})
        .batch_size(10_000)
        .await?;
    let mut p = next_pg().await?;
    let mut m = if cursor.advance().await? {
        Some(cursor.current().to_raw_document_buf())
    } else {
        None
    };
    let only_pg =
        |c: &documents::LockoutChange| format!("lockout state {}: missing in MongoDB", c.id);
    let only_mirror = |d: &RawDocument| {
        format!(
            "lockout state {}: only in MongoDB",
            d.get_str("_id").unwrap_or_default()
        )
    };
    loop {
        let order = match (&p, &m) {
            (None, None) => return Ok(()),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(c), Some(d)) => lockout_key(&c.fields).cmp(&lockout_key(d)),
        };
        match (order, &p, &m) {
            (std::cmp::Ordering::Equal, Some(c), Some(d)) => {
                let fields = differing_fields(&c.fields, d, &BOOKKEEPING);
                if !fields.is_empty() {
                    report.differences.push(format!(
                        "lockout state {}: differs in {}",
                        c.id,
                        fields.join(", ")
                    ));
                }
            }
            (std::cmp::Ordering::Less, Some(c), _) => report.differences.push(only_pg(c)),
            (std::cmp::Ordering::Greater, _, Some(d)) => report.differences.push(only_mirror(d)),
            _ => unreachable!("an order is only taken of the rows present"),
        }
        if order != std::cmp::Ordering::Greater {
            p = next_pg().await?;
        }
        if order != std::cmp::Ordering::Less {
            m = if cursor.advance().await? {
                Some(cursor.current().to_raw_document_buf())
            } else {
                None
            };
        }
    }
}

fn entry(d: &RawDocument) -> Entry {
    Entry {
        tenant: d.get_str("tenant_id").unwrap_or_default().to_owned(),
        seq: d.get_i64("seq").unwrap_or(0),
        hash: hash(d),
    }
}

/// Every document of a collection, by `_id`.
async fn by_id(
    store: &MongoStore,
    collection: &str,
) -> Result<BTreeMap<String, RawDocumentBuf>, mongodb::error::Error> {
    let mut cursor = store.raw_collection(collection).find(doc! {}).await?;
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

    fn log(tenant: &str, entries: &[(i64, u8)]) -> Vec<Entry> {
        entries
            .iter()
            .map(|(s, h)| Entry {
                tenant: tenant.into(),
                seq: *s,
                hash: [*h; 32],
            })
            .collect()
    }

    /// Runs the walk over two whole logs, as `walk_logs` does over streams.
    fn walk(pg: &[Entry], mirror: &[Entry]) -> BTreeMap<String, TenantSummary> {
        let (mut p, mut m) = (pg.iter(), mirror.iter());
        let (mut a, mut b) = (p.next(), m.next());
        let mut w = Lockstep::default();
        loop {
            match w.step(a, b) {
                Advance::Both => (a, b) = (p.next(), m.next()),
                Advance::Postgres => a = p.next(),
                Advance::Mirror => b = m.next(),
                Advance::Done => return w.tenants,
            }
        }
    }

    fn first_parting(pg: &[Entry], mirror: &[Entry]) -> Option<Parting> {
        walk(pg, mirror).get("t").and_then(|s| s.parting)
    }

    #[test]
    fn the_first_parting_is_named_with_why() {
        let mirror = log("t", &[(1, 1), (2, 2), (3, 3), (4, 4)]);
        assert_eq!(first_parting(&mirror.clone(), &mirror), None);
        // Content edited at 3, then 2 deleted: the deletion comes first.
        assert_eq!(
            first_parting(&log("t", &[(1, 1), (3, 9), (4, 4)]), &mirror),
            Some(Parting::OnlyInMirror(2))
        );
        assert_eq!(
            first_parting(&log("t", &[(1, 1), (2, 2), (3, 9), (4, 4)]), &mirror),
            Some(Parting::Differs(3))
        );
        // A forged tail, and a truncated one.
        assert_eq!(
            first_parting(
                &log("t", &[(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]),
                &mirror
            ),
            Some(Parting::OnlyInPostgres(5))
        );
        assert_eq!(
            first_parting(&log("t", &[(1, 1), (2, 2)]), &mirror),
            Some(Parting::OnlyInMirror(3))
        );
    }

    #[test]
    fn a_document_of_the_earlier_number_form_is_recognised_and_nothing_else() {
        let row: std::collections::HashMap<&str, &str> = [
            ("log_id", "6d1c0c8e-0000-4000-8000-000000000002"),
            ("tenant_id", "acme"),
            ("seq", "8"),
            ("event_type", "login_failed"),
            ("user_id", "alice"),
            ("channel", "web"),
            ("occurred_at", "2026-11-28 04:11:20+00"),
            ("recorded_at", "2026-11-28 04:11:20+00"),
            ("metadata", r#"{"f": 1.50, "n": [1, 18446744073709551615]}"#),
            ("link_sha256", "\\xcd02"),
        ]
        .into();
        let expected = documents::auth_log(&|c: &str| row.get(c).copied())
            .unwrap()
            .doc;
        let with_metadata = |m: bson::RawBson| {
            let mut d = RawDocumentBuf::new();
            for (k, v) in expected.iter().map(Result::unwrap) {
                if k == "metadata" {
                    d.append(k, m.clone());
                } else {
                    d.append(k, v.to_raw_bson());
                }
            }
            d
        };
        let text = expected.get_str("metadata_text").unwrap();
        let stored = with_metadata(earlier_metadata(text).unwrap());
        assert!(earlier_form(&expected, &stored));
        assert!(!earlier_form(&expected, &expected), "the current form");
        // Another value, or another field changed too: a difference.
        let mut other = RawDocumentBuf::new();
        other.append("f", 1.5);
        assert!(!earlier_form(
            &expected,
            &with_metadata(bson::RawBson::Document(other))
        ));
        let mut edited = RawDocumentBuf::new();
        for (k, v) in stored.iter().map(Result::unwrap) {
            if k == "user_id" {
                edited.append(k, "mallory");
            } else {
                edited.append(k, v.to_raw_bson());
            }
        }
        assert!(!earlier_form(&expected, &edited));
    }

    #[test]
    fn tenants_are_walked_apart_and_retained_rows_are_noted_not_counted() {
        let pg: Vec<Entry> = [
            log("a", &[(3, 3), (4, 4)]),
            log("b", &[(1, 1)]),
            log("d", &[(1, 1)]),
        ]
        .concat();
        let mirror: Vec<Entry> = [
            log("a", &[(1, 1), (2, 2), (3, 3), (4, 4)]),
            log("c", &[(1, 1)]),
            log("d", &[(1, 7)]),
        ]
        .concat();
        let w = walk(&pg, &mirror);
        let a = &w["a"];
        assert_eq!(
            (a.pg_rows, a.mirror_rows, a.retained_in_mirror, a.parting),
            (2, 2, 2, None)
        );
        assert_eq!(w["b"].parting, Some(Parting::OnlyInPostgres(1)));
        // A tenant PostgreSQL no longer has at all was deleted there.
        assert_eq!(w["c"].parting, Some(Parting::OnlyInMirror(1)));
        assert_eq!(w["c"].retained_in_mirror, 0);
        assert_eq!(w["d"].parting, Some(Parting::Differs(1)));
        assert_eq!((w["d"].pg_last, w["d"].mirror_last), (1, 1));
    }
}
