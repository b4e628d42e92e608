//! `authaudit-sidecar verify`: reconciles PostgreSQL and MongoDB per tenant.
//!
//! For each tenant: the number of log rows, the last seq, and a SHA-256
//! digest over every row's (seq, link_sha256, digest_sha512,
//! digest_sha3_256) in seq order, computed on both sides; the checkpoints;
//! the lockout state (failure count, lock flag, lock count, last seq). Rows
//! that retention removed from PostgreSQL but the mirror still holds are
//! reported, not counted as differences.

use crate::config::Options;
use crate::sink::Sink;
use bson::{doc, Document};
use futures_util::TryStreamExt;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// One tenant's log as seen by one side.
#[derive(Debug, Default)]
struct TenantLog {
    rows: u64,
    first_seq: i64,
    last_seq: i64,
    digest: Sha256,
}

impl TenantLog {
    fn add(&mut self, seq: i64, link: &str, d512: &str, d3: &str) {
        if self.rows == 0 {
            self.first_seq = seq;
        }
        self.rows += 1;
        self.last_seq = seq;
        self.digest.update(format!("{seq}:{link}:{d512}:{d3}\n"));
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

    // PostgreSQL: every tenant's log in seq order (one snapshot).
    pg.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let mut pg_logs: BTreeMap<String, TenantLog> = BTreeMap::new();
    let rows = pg
        .query_raw(
            "SELECT tenant_id, seq, encode(link_sha256, 'hex'), encode(digest_sha512, 'hex'), \
             encode(digest_sha3_256, 'hex') FROM authaudit.auth_log ORDER BY tenant_id, seq",
            std::iter::empty::<i32>(),
        )
        .await?;
    futures_util::pin_mut!(rows);
    while let Some(r) = rows.try_next().await? {
        let t: String = r.get(0);
        pg_logs
            .entry(t)
            .or_default()
            .add(r.get(1), r.get(2), r.get(3), r.get(4));
    }
    let mut pg_checkpoints = BTreeSet::new();
    for r in pg
        .query(
            "SELECT tenant_id, seq, encode(link_sha256, 'hex') FROM authaudit.checkpoints",
            &[],
        )
        .await?
    {
        pg_checkpoints.insert((
            r.get::<_, String>(0),
            r.get::<_, i64>(1),
            r.get::<_, String>(2),
        ));
    }
    let mut pg_lockout = BTreeMap::new();
    for r in pg
        .query(
            "SELECT tenant_id || '/' || user_id, failure_count::int8, locked, lock_count::int8, last_seq \
             FROM authaudit.lockout_state",
            &[],
        )
        .await?
    {
        pg_lockout.insert(
            r.get::<_, String>(0),
            (r.get::<_, i64>(1), r.get::<_, bool>(2), r.get::<_, i64>(3), r.get::<_, Option<i64>>(4)),
        );
    }
    pg.batch_execute("COMMIT").await?;

    // MongoDB: the same, from the mirror.
    let mut mongo_logs: BTreeMap<String, TenantLog> = BTreeMap::new();
    let mut removed_by_retention: BTreeMap<String, u64> = BTreeMap::new();
    let mut cursor = sink
        .collection("auth_log")
        .find(doc! {})
        .sort(doc! {"tenant_id": 1, "seq": 1})
        .projection(doc! {"tenant_id": 1, "seq": 1, "link_sha256": 1, "digest_sha512": 1, "digest_sha3_256": 1})
        .batch_size(10_000)
        .await?;
    while let Some(d) = cursor.try_next().await? {
        let t = d.get_str("tenant_id").unwrap_or_default().to_string();
        let seq = d.get_i64("seq").unwrap_or(0);
        // Rows retention removed from PostgreSQL stay in the mirror.
        if let Some(first) = pg_logs.get(&t).map(|l| l.first_seq) {
            if seq < first {
                *removed_by_retention.entry(t).or_default() += 1;
                continue;
            }
        }
        let s = |k: &str| d.get_str(k).unwrap_or_default().to_string();
        mongo_logs.entry(t).or_default().add(
            seq,
            &s("link_sha256"),
            &s("digest_sha512"),
            &s("digest_sha3_256"),
        );
    }
    let mut mongo_checkpoints = BTreeSet::new();
    let mut cursor = sink.collection("checkpoints").find(doc! {}).await?;
    while let Some(d) = cursor.try_next().await? {
        mongo_checkpoints.insert((
            d.get_str("tenant_id").unwrap_or_default().to_string(),
            d.get_i64("seq").unwrap_or(0),
            d.get_str("link_sha256").unwrap_or_default().to_string(),
        ));
    }
    let mut mongo_lockout = BTreeMap::new();
    let mut cursor = sink.collection("lockout_state").find(doc! {}).await?;
    while let Some(d) = cursor.try_next().await? {
        let d: Document = d;
        mongo_lockout.insert(
            d.get_str("_id").unwrap_or_default().to_string(),
            (
                d.get_i64("failure_count").unwrap_or(-1),
                d.get_bool("locked").unwrap_or(false),
                d.get_i64("lock_count").unwrap_or(-1),
                d.get_i64("last_seq").ok(),
            ),
        );
    }

    let tenants: BTreeSet<&String> = pg_logs.keys().chain(mongo_logs.keys()).collect();
    report.tenants = tenants.len();
    for t in tenants {
        let empty = TenantLog::default();
        let (p, m) = (
            pg_logs.get(t).unwrap_or(&empty),
            mongo_logs.get(t).unwrap_or(&empty),
        );
        report.rows += p.rows;
        if p.rows != m.rows || p.last_seq != m.last_seq {
            report.differences.push(format!(
                "tenant {t}: PostgreSQL has {} rows up to seq {}, MongoDB {} rows up to seq {}",
                p.rows, p.last_seq, m.rows, m.last_seq
            ));
        } else if p.digest.clone().finalize() != m.digest.clone().finalize() {
            report.differences.push(format!(
                "tenant {t}: same rows and last seq, but the digests of the rows differ"
            ));
        }
    }
    for (t, n) in removed_by_retention {
        report.notes.push(format!(
            "tenant {t}: the mirror keeps {n} rows that retention removed from PostgreSQL"
        ));
    }
    for c in pg_checkpoints.symmetric_difference(&mongo_checkpoints) {
        let side = if pg_checkpoints.contains(c) {
            "only in PostgreSQL"
        } else {
            "only in MongoDB"
        };
        report
            .differences
            .push(format!("checkpoint {}/{} ({side})", c.0, c.1));
    }
    for (k, v) in &pg_lockout {
        match mongo_lockout.get(k) {
            Some(m) if m == v => {}
            Some(m) => report.differences.push(format!(
                "lockout state {k}: PostgreSQL {v:?}, MongoDB {m:?}"
            )),
            None => report
                .differences
                .push(format!("lockout state {k}: missing in MongoDB")),
        }
    }
    for k in mongo_lockout
        .keys()
        .filter(|k| !pg_lockout.contains_key(*k))
    {
        report
            .differences
            .push(format!("lockout state {k}: only in MongoDB"));
    }
    Ok(report)
}
