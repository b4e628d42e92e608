//! The witness: signed checkpoints of what the mirror holds, made with a
//! key PostgreSQL never sees, and the check of PostgreSQL against them.
//!
//! Signing: the mirror keeps each tenant's Merkle tree over the log rows it
//! has mirrored, in seq order (`authaudit_core::merkle::CompactTree`; the
//! first time a session sees a tenant, grown from the peaks saved with its
//! last signed checkpoint by the mirror's rows after it). Every `--witness-every` rows, or `--witness-interval-ms` after
//! the last one if there are new rows, it signs a checkpoint of the tree
//! (`note.rs`) at a transaction boundary. The signed checkpoint travels in
//! the batch with the rows it covers: it is written to the
//! `witness_checkpoints` collection after them, appended to `--witness-log`
//! and flushed, and only then is the position acknowledged. A checkpoint
//! is one document insert and one whole line of the file: a crash leaves
//! it written or not, never half (a torn last line is skipped by readers).
//!
//! Checking (`witness-check`): for each tenant, the latest checkpoint whose
//! signature verifies; the mirror's rows up to its size must give its root,
//! and PostgreSQL's rows must be the mirror's: the first rewritten, missing
//! or added seq is named.

use crate::batch::Batch;
use crate::config::{MongoConfig, PostgresConfig, WitnessConfig};
use crate::documents::{self, Table};
use crate::error::ToolError;
use crate::mongo_store::{MongoStore, StoreError};
use crate::note::{Checkpoint, NoteError, Signer25519, Verifier25519};
use authaudit_core::lockout_effect::iso_utc;
use authaudit_core::merkle::{self, CompactTree, Hash};
use authaudit_core::signed_tree::{Row, TreeCheck};
use bson::{doc, RawDocument, RawDocumentBuf};
use futures_util::TryStreamExt;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why the witness cannot work.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error("witness key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("witness key: {0}")]
    Key(#[from] NoteError),
    #[error("{0}")]
    MongoStore(#[from] StoreError),
}

/// Reads the signer key of `path`.
pub fn signer(path: &Path) -> Result<Signer25519, WitnessError> {
    let text = std::fs::read_to_string(path).map_err(|source| WitnessError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(Signer25519::parse(&text)?)
}

/// The signed statement that the key of `old` hands over to that of `new`
/// (`authaudit_core::note::Rotation`), signed by both.
pub fn rotation(old: &Path, new: &Path) -> Result<String, WitnessError> {
    let (old, new) = (signer(old)?, signer(new)?);
    let r = authaudit_core::note::Rotation {
        old: old.verifier().text(),
        new: new.verifier().text(),
        time: iso_utc(crate::metrics::unix_now_us() / 1_000_000 * 1_000_000),
    };
    Ok(authaudit_core::note::sign_all(&r.text(), &[&new, &old]))
}

/// Creates a key file with a fresh key (refused if the file exists).
pub fn keygen(path: &Path, name: &str) -> Result<Signer25519, WitnessError> {
    let mut seed = [0u8; 32];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| {
        use std::io::Read;
        f.read_exact(&mut seed)
    });
    read.map_err(|source| WitnessError::Read {
        path: "/dev/urandom".into(),
        source,
    })?;
    let signer = Signer25519::from_seed(name, seed)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let write = opts.open(path).and_then(|mut f| {
        f.write_all(format!("{}\n", signer.private_text()).as_bytes())?;
        f.sync_all()
    });
    write.map_err(|source| WitnessError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(signer)
}

/// The head row a checkpoint names.
#[derive(Debug, Clone, Default)]
struct Head {
    link: String,
    sha512: String,
    sha3: String,
}

/// Where the witness loads a tenant's tree from when its first row of a
/// run arrives: the document store (the session's lookups, `mirror`).
pub(crate) trait TreeSource {
    /// A tenant's witness tree, from its last signed checkpoint.
    async fn witness_tree(&self, tenant: &str) -> Result<TenantTree, StoreError>;
}

#[derive(Debug)]
pub(crate) struct TenantTree {
    tree: CompactTree,
    head: Head,
    signed_size: u64,
    signed_at: Instant,
    /// A row did not continue the tree (a chain gap): no more signing for
    /// the tenant in this session.
    broken: bool,
}

impl TenantTree {
    /// Adds the mirrored row `d` at `seq` as the next leaf; a row that does
    /// not continue the tree breaks it (logged). Returns whether it grew.
    fn grow(&mut self, tenant: &str, seq: i64, d: &RawDocument) -> bool {
        if self.broken {
            return false;
        }
        if seq != self.tree.size() as i64 + 1 {
            self.broken = true;
            tracing::error!(tenant, seq, expected_seq = self.tree.size() + 1, "witness: the tenant's mirrored log has a gap; no more checkpoints for it until the gap is resolved and the sidecar restarts");
            return false;
        }
        let text = |k: &str| d.get_str(k).unwrap_or_default().to_owned();
        let link = text("link_sha256");
        self.tree
            .push(merkle::leaf_hash(&hex::decode(&link).unwrap_or_default()));
        self.head = Head {
            link,
            sha512: text("digest_sha512"),
            sha3: text("digest_sha3_256"),
        };
        true
    }
}

/// A checkpoint signed, to be written with its batch.
#[derive(Debug, Clone)]
pub struct Signed {
    pub tenant: String,
    pub tree_size: u64,
    pub note: String,
    pub doc: RawDocumentBuf,
}

impl Signed {
    /// The checkpoint's line in the witness log.
    pub fn log_line(&self) -> String {
        let mut line = serde_json::json!({
            "tenant_id": self.tenant,
            "tree_size": self.tree_size,
            "note": self.note,
        })
        .to_string();
        line.push('\n');
        line
    }
}

/// The witness of one mirror session.
pub struct Witness {
    signer: Signer25519,
    origin: String,
    every: u64,
    interval: Duration,
    tenants: HashMap<String, TenantTree>,
}

impl Witness {
    /// The witness `[witness]` configures, if any.
    pub fn from_config(config: &WitnessConfig) -> Result<Option<Witness>, WitnessError> {
        let Some(path) = &config.key_file else {
            return Ok(None);
        };
        Ok(Some(Witness {
            signer: signer(path)?,
            origin: config.origin.clone(),
            every: config.every,
            interval: Duration::from_millis(config.interval_ms.max(1)),
            tenants: HashMap::new(),
        }))
    }

    pub fn verifier(&self) -> Verifier25519 {
        self.signer.verifier()
    }

    /// Grows the tree of every tenant the witness signed before, at session
    /// start: the stream then never waits for a tenant's tree. A tenant
    /// first seen later is loaded when its first row arrives.
    pub async fn preload(&mut self, store: &MongoStore) -> Result<usize, StoreError> {
        use futures_util::{StreamExt, TryStreamExt};
        let mut cursor = store
            .raw_collection("witness_checkpoints")
            .find(doc! {})
            .projection(doc! {"tenant_id": 1})
            .await?;
        let mut tenants = std::collections::BTreeSet::new();
        while cursor.advance().await? {
            if let Ok(t) = cursor.current().get_str("tenant_id") {
                if !self.tenants.contains_key(t) {
                    tenants.insert(t.to_owned());
                }
            }
        }
        let loaded: Vec<(String, TenantTree)> = futures_util::stream::iter(tenants)
            .map(|t| async move { load(store, &t).await.map(|tree| (t, tree)) })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        let n = loaded.len();
        self.tenants.extend(loaded);
        Ok(n)
    }

    /// A log row's document, in stream order.
    pub(crate) async fn row(
        &mut self,
        store: &impl TreeSource,
        d: &RawDocument,
    ) -> Result<(), StoreError> {
        let tenant = d.get_str("tenant_id").unwrap_or_default();
        let seq = d.get_i64("seq").unwrap_or(0);
        if !self.tenants.contains_key(tenant) {
            let t = store.witness_tree(tenant).await?;
            self.tenants.insert(tenant.to_owned(), t);
        }
        let t = self.tenants.get_mut(tenant).expect("loaded");
        if seq > t.tree.size() as i64 + 1 && !t.broken {
            // Another mirror may have stored the rows between: on Citus each
            // worker has its own, and a tenant's shard moves between them
            // (docs/scale-out.md, "The mirror").
            let stored = store.witness_tree(tenant).await?;
            if stored.tree.size() as i64 + 1 == seq {
                *t = stored;
            }
        }
        // A replay of a row the tree holds already changes nothing.
        if seq > t.tree.size() as i64 {
            t.grow(tenant, seq, d);
        }
        Ok(())
    }

    /// Signs the checkpoints due now into `batch` (call at a transaction
    /// boundary): written with it, after its rows. Returns whether any was.
    pub fn sign_due(&mut self, batch: &mut Batch) -> bool {
        let due = self.due();
        let any = !due.is_empty();
        for s in due {
            batch.witness_lines.push(s.log_line());
            batch.witness.push(s.doc);
        }
        any
    }

    /// The checkpoints due now.
    fn due(&mut self) -> Vec<Signed> {
        let now = Instant::now();
        let mut out = Vec::new();
        for (tenant, t) in &mut self.tenants {
            let new = t.tree.size().saturating_sub(t.signed_size);
            if t.broken || new == 0 {
                continue;
            }
            if new < self.every && now.duration_since(t.signed_at) < self.interval {
                continue;
            }
            let c = Checkpoint {
                origin: format!("{}/{tenant}", self.origin),
                tree_size: t.tree.size(),
                root: t.tree.root(),
                link_sha256: t.head.link.clone(),
                digest_sha512: t.head.sha512.clone(),
                digest_sha3_256: t.head.sha3.clone(),
                time: iso_utc(crate::metrics::unix_now_us() / 1_000_000 * 1_000_000),
            };
            let note = self.signer.sign(&c.text());
            let mut doc = RawDocumentBuf::new();
            doc.append("_id", format!("{tenant}/{}", c.tree_size));
            doc.append("tenant_id", tenant.as_str());
            doc.append("tree_size", c.tree_size as i64);
            doc.append("root_hash", hex::encode(c.root));
            doc.append("link_sha256", c.link_sha256.as_str());
            doc.append("digest_sha512", c.digest_sha512.as_str());
            doc.append("digest_sha3_256", c.digest_sha3_256.as_str());
            // The tree's peaks: the next session grows it from here.
            let mut peaks = bson::RawArrayBuf::new();
            for p in t.tree.peaks() {
                peaks.push(hex::encode(p));
            }
            doc.append("peaks", peaks);
            doc.append("key", self.signer.verifier().text());
            doc.append("note", note.as_str());
            doc.append("signed_at", c.time.as_str());
            out.push(Signed {
                tenant: tenant.clone(),
                tree_size: c.tree_size,
                note,
                doc,
            });
            t.signed_size = t.tree.size();
            t.signed_at = now;
        }
        out
    }
}

/// The tree and head row saved with a signed checkpoint, if they are
/// whole and give its root.
fn saved_tree(d: &RawDocument) -> Option<(CompactTree, Head)> {
    let size = d.get_i64("tree_size").ok()? as u64;
    let peaks = d
        .get_array("peaks")
        .ok()?
        .into_iter()
        .map(|p| {
            let h = hex::decode(p.ok()?.as_str()?).ok()?;
            <Hash>::try_from(h.as_slice()).ok()
        })
        .collect::<Option<Vec<Hash>>>()?;
    let tree = CompactTree::from_peaks(size, peaks)?;
    if hex::encode(tree.root()) != d.get_str("root_hash").ok()? {
        return None;
    }
    let text = |k: &str| d.get_str(k).ok().map(str::to_owned);
    Some((
        tree,
        Head {
            link: text("link_sha256")?,
            sha512: text("digest_sha512")?,
            sha3: text("digest_sha3_256")?,
        },
    ))
}

/// A tenant's tree: from its last signed checkpoint's saved peaks and the
/// mirror's rows after it (or all of them the first time), and the size
/// last signed.
pub(crate) async fn load(store: &MongoStore, tenant: &str) -> Result<TenantTree, StoreError> {
    let last = store
        .raw_collection("witness_checkpoints")
        .find_one(doc! {"tenant_id": tenant})
        .sort(doc! {"tree_size": -1})
        .await?;
    let signed_size = last
        .as_ref()
        .and_then(|d| d.get_i64("tree_size").ok())
        .unwrap_or(0) as u64;
    let (tree, head) = last.as_deref().and_then(saved_tree).unwrap_or_default();
    let mut t = TenantTree {
        tree,
        head,
        signed_size,
        signed_at: Instant::now(),
        broken: false,
    };
    let mut cursor = store
        .raw_collection("auth_log")
        .find(doc! {"tenant_id": tenant, "seq": {"$gt": t.tree.size() as i64}})
        .sort(doc! {"seq": 1})
        .projection(doc! {"seq": 1, "link_sha256": 1, "digest_sha512": 1, "digest_sha3_256": 1})
        .batch_size(10_000)
        .await?;
    while cursor.advance().await? {
        let d = cursor.current();
        if !t.grow(tenant, d.get_i64("seq").unwrap_or(0), d) {
            break;
        }
    }
    Ok(t)
}

/// Appends `signed` to the witness log and flushes it to disk.
pub fn append_log(path: &Path, signed: &[Signed]) -> std::io::Result<()> {
    let lines: Vec<String> = signed.iter().map(Signed::log_line).collect();
    append_lines(path, &lines)
}

/// Appends whole lines to the witness log and flushes it to disk. A line
/// a crash left torn is ended first, so it stays a line of its own.
pub fn append_lines(path: &Path, lines: &[String]) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let mut text = String::new();
    if f.metadata()?.len() > 0 {
        let mut last = [0u8; 1];
        f.seek(SeekFrom::End(-1))?;
        f.read_exact(&mut last)?;
        if last[0] != b'\n' {
            text.push('\n');
        }
    }
    text.push_str(&lines.concat());
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// The notes of a witness log, by tenant; a torn last line is skipped.
pub fn read_log(path: &Path) -> std::io::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            Some((
                v.get("tenant_id")?.as_str()?.to_owned(),
                v.get("note")?.as_str()?.to_owned(),
            ))
        })
        .collect())
}

/// What `witness-check` found.
#[derive(Debug, Default)]
pub struct WitnessReport {
    pub ok: Vec<String>,
    pub findings: Vec<String>,
}

/// A PostgreSQL row as `witness-check` reads it: its stored links and the
/// canonical body of its content (`None`: a value that cannot be encoded).
struct PgRow {
    seq: i64,
    prev_link: Vec<u8>,
    link: Vec<u8>,
    body: Option<Vec<u8>>,
}

/// Checks PostgreSQL against the latest signed checkpoint of each tenant.
pub async fn check(
    postgres: &PostgresConfig,
    mongo: &MongoConfig,
    config: &WitnessConfig,
    verifier: &Verifier25519,
) -> Result<WitnessReport, ToolError> {
    let pg = crate::pg::connect(postgres).await?;
    crate::preflight::Facts::read(&pg).await?.check_reader()?;
    let store = MongoStore::from_config(mongo).await?;
    let mut report = WitnessReport::default();
    let latest = latest_checkpoints(config, &store, verifier, &mut report).await?;
    for (tenant, c) in latest {
        check_tenant(&pg, &store, &tenant, &c, &mut report).await?;
    }
    Ok(report)
}

/// Every note, from the store and the file; the largest verified size per
/// tenant wins. Notes that do not verify, or name another origin, are
/// findings.
async fn latest_checkpoints(
    config: &WitnessConfig,
    store: &MongoStore,
    verifier: &Verifier25519,
    report: &mut WitnessReport,
) -> Result<BTreeMap<String, Checkpoint>, ToolError> {
    let mut notes: Vec<(String, String, &'static str)> = Vec::new();
    let mut cursor = store
        .raw_collection("witness_checkpoints")
        .find(doc! {})
        .await?;
    while cursor.advance().await? {
        let d = cursor.current();
        if let (Ok(t), Ok(n)) = (d.get_str("tenant_id"), d.get_str("note")) {
            notes.push((t.to_owned(), n.to_owned(), "MongoDB"));
        }
    }
    if let Some(path) = &config.log {
        let lines = read_log(path).map_err(|source| ToolError::File {
            path: path.clone(),
            source,
        })?;
        for (t, n) in lines {
            notes.push((t, n, "the witness log"));
        }
    }
    let mut latest: BTreeMap<String, Checkpoint> = BTreeMap::new();
    for (tenant, note, from) in notes {
        let c = match verifier.open(&note).and_then(Checkpoint::parse) {
            Ok(c) => c,
            Err(e) => {
                report.findings.push(format!(
                    "tenant {tenant}: a checkpoint in {from} is refused: {e}"
                ));
                continue;
            }
        };
        if c.origin != format!("{}/{tenant}", config.origin) {
            report.findings.push(format!(
                "tenant {tenant}: a checkpoint in {from} names origin {}",
                c.origin
            ));
            continue;
        }
        if latest
            .get(&tenant)
            .is_none_or(|l| l.tree_size < c.tree_size)
        {
            latest.insert(tenant, c);
        }
    }
    Ok(latest)
}

/// The first seq PostgreSQL must hold of a tenant: rows before the first
/// one retention kept, if a retention_applied event accounts for them,
/// are not PostgreSQL's to hold.
async fn retained_from(pg: &tokio_postgres::Client, tenant: &str) -> Result<i64, ToolError> {
    let first: i64 = pg
        .query_one(
            "SELECT coalesce(min(seq), 1) FROM authaudit.auth_log WHERE tenant_id = $1",
            &[&tenant],
        )
        .await?
        .get(0);
    if first <= 1 {
        return Ok(1);
    }
    let removed_to: Option<i64> = pg
        .query_opt(
            "SELECT max((metadata #>> '{_authaudit,retention,removed_to_seq}')::bigint) \
               FROM authaudit.auth_log WHERE tenant_id = $1 AND event_type = 'retention_applied'",
            &[&tenant],
        )
        .await?
        .and_then(|r| r.get(0));
    Ok(if removed_to.is_some_and(|r| r + 1 >= first) {
        first
    } else {
        1
    })
}

/// A PostgreSQL row of the copy query's columns as `witness-check` reads it.
fn pg_row(r: &tokio_postgres::Row) -> PgRow {
    let cols = Table::AuthLog.columns();
    let values: Vec<Option<&str>> = (0..cols.len()).map(|i| r.get(i)).collect();
    let get = |c: &str| cols.iter().position(|x| *x == c).and_then(|i| values[i]);
    let bytes = |c: &'static str| -> Vec<u8> {
        documents::hex_column(&get, c)
            .ok()
            .flatten()
            .and_then(|h| hex::decode(h.as_ref()).ok())
            .unwrap_or_default()
    };
    PgRow {
        seq: get("seq").and_then(|s| s.parse().ok()).unwrap_or(0),
        prev_link: bytes("prev_link"),
        link: bytes("link_sha256"),
        body: crate::recompute::body_of_row(&get).ok(),
    }
}

/// Checks one tenant against its latest signed checkpoint `c`.
async fn check_tenant(
    pg: &tokio_postgres::Client,
    store: &MongoStore,
    tenant: &str,
    c: &Checkpoint,
    report: &mut WitnessReport,
) -> Result<(), ToolError> {
    let size = c.tree_size as i64;
    let retained_from = retained_from(pg, tenant).await?;
    // The mirror's rows up to the size (which must be the signed tree)
    // and PostgreSQL's, both in seq order, one row of each at a time;
    // each PostgreSQL row's link recomputed from its content.
    let mut cursor = store
        .raw_collection("auth_log")
        .find(doc! {"tenant_id": tenant, "seq": {"$lte": size}})
        .sort(doc! {"seq": 1})
        .projection(doc! {"seq": 1, "link_sha256": 1})
        .batch_size(10_000)
        .await?;
    let rows = pg
        .query_raw(
            &Table::AuthLog.copy_query("t.tenant_id = $1 AND t.seq <= $2"),
            [&tenant as &(dyn tokio_postgres::types::ToSql + Sync), &size],
        )
        .await?;
    futures_util::pin_mut!(rows);
    let mut next_pg = async || -> Result<Option<PgRow>, ToolError> {
        Ok(rows.try_next().await?.as_ref().map(pg_row))
    };
    let mut tree = CompactTree::default();
    let mut check = TreeCheck::new(size, retained_from);
    let mut signed_prev = authaudit_core::chain::ChainHead::genesis(tenant)
        .sha256
        .to_vec();
    let mut pg_row = next_pg().await?;
    let mut contiguous = true;
    while cursor.advance().await? {
        let d = cursor.current();
        let seq = tree.size() as i64 + 1;
        contiguous &= d.get_i64("seq").ok() == Some(seq);
        let link = hex::decode(d.get_str("link_sha256").unwrap_or_default()).unwrap_or_default();
        tree.push(merkle::leaf_hash(&link));
        while pg_row.as_ref().is_some_and(|r| r.seq < seq) {
            pg_row = next_pg().await?;
        }
        let row = pg_row.as_ref().map(|r| Row {
            seq: r.seq,
            prev_link: &r.prev_link,
            link_sha256: &r.link,
            body: r.body.as_deref(),
        });
        if check.step(seq, &signed_prev, &link, row) {
            pg_row = next_pg().await?;
        }
        signed_prev = link;
    }
    if !contiguous || tree.size() as i64 != size || tree.root() != c.root {
        report.findings.push(format!(
            "tenant {tenant}: the mirror's rows 1 to {size} are not the tree its witness signed: the mirror was changed"
        ));
        return Ok(());
    }
    match check.finding() {
        Some(why) => report.findings.push(format!(
            "tenant {tenant}: {why} (signed checkpoint of size {size} at {})",
            c.time
        )),
        None => report.ok.push(format!(
            "tenant {tenant}: rows 1 to {size} are the signed tree (signed at {})",
            c.time
        )),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_of_the_witness_log_is_skipped() {
        let dir = std::env::temp_dir().join(format!("witness-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("witness.log");
        let _ = std::fs::remove_file(&path);
        let signer = Signer25519::from_seed("w", [1; 32]).unwrap();
        let s = Signed {
            tenant: "acme".into(),
            tree_size: 3,
            note: signer.sign("pg_authaudit/acme\n3\nAAAA\n"),
            doc: RawDocumentBuf::new(),
        };
        append_log(&path, std::slice::from_ref(&s)).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&s.log_line().as_bytes()[..20]).unwrap();
        let read = read_log(&path).unwrap();
        assert_eq!(read, vec![("acme".to_string(), s.note.clone())]);
        // The next append after the crash is whole, the torn line apart.
        append_log(&path, std::slice::from_ref(&s)).unwrap();
        assert_eq!(read_log(&path).unwrap().len(), 2);
    }
}
