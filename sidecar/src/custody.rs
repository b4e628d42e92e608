//! What the sidecar acknowledged, kept outside the store, and the check of
//! the store against it at each session start (`authaudit_core::custody`).
//!
//! The marks: the state file (`--state-file`: the store's identity and
//! each tenant's acknowledged head, rewritten after every batch the store
//! acknowledged and before its position is), the witness log's signed
//! checkpoints, and the signed checkpoints written back to PostgreSQL
//! (each verified with the witness's key). The store's own state
//! (`_authaudit_sidecar`) carries its identity, given before the slot
//! exists.
//!
//! A finding is a tamper alarm (`tamper_events`, `_id` = the finding's
//! id, so a restart writes it once) and blocks any copy from PostgreSQL:
//! a store that lost what it acknowledged is never refilled with
//! PostgreSQL's current rows as if they were the originals. An operator
//! who restored the store, or accepted the loss, resolves the alarm
//! (`authaudit-sidecar alarms resolve`); the next start then goes on, and
//! copies if the store was empty, saying on whose word.

use crate::config::WitnessConfig;
use crate::mongo_store::{MongoStore, StoreError};
use crate::note::{Checkpoint, Verifier25519};
use authaudit_core::custody::{judge, Acknowledged, Finding, Held};
use bson::{doc, RawDocumentBuf};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Why the marks cannot be read or kept.
#[derive(Debug, thiserror::Error)]
pub enum CustodyError {
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} cannot be read ({message}): restore it from a backup, or move it away only if this is a first start")]
    Parse { path: PathBuf, message: String },
    #[error("state file {path} belongs to slot {found:?}, not {slot:?}: give each slot a state file of its own (--state-file)")]
    OtherSlot {
        path: PathBuf,
        slot: String,
        found: String,
    },
    #[error("witness log {path}: {source}")]
    WitnessLog {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl CustodyError {
    /// Whether retrying cannot help (all but a failed write).
    pub fn is_configuration(&self) -> bool {
        !matches!(self, CustodyError::Io { .. })
    }
}

/// The state file's form.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    slot: String,
    store_id: Option<String>,
    heads: BTreeMap<String, FileHead>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHead {
    seq: i64,
    link_sha256: String,
}

/// The state file: what the store acknowledged, for one slot.
#[derive(Debug)]
pub struct Custody {
    path: PathBuf,
    slot: String,
    state: Mutex<Acknowledged>,
}

impl Custody {
    /// Reads the state file (none yet: nothing acknowledged).
    pub fn open(path: &Path, slot: &str) -> Result<Custody, CustodyError> {
        let mut a = Acknowledged::default();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let f: StateFile =
                    serde_json::from_str(&text).map_err(|e| CustodyError::Parse {
                        path: path.to_owned(),
                        message: e.to_string(),
                    })?;
                if f.slot != slot {
                    return Err(CustodyError::OtherSlot {
                        path: path.to_owned(),
                        slot: slot.to_owned(),
                        found: f.slot,
                    });
                }
                a.store_id = f.store_id;
                for (t, h) in f.heads {
                    a.advance(&t, h.seq, &h.link_sha256);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(CustodyError::Io {
                    path: path.to_owned(),
                    source,
                })
            }
        }
        Ok(Custody {
            path: path.to_owned(),
            slot: slot.to_owned(),
            state: Mutex::new(a),
        })
    }

    /// What it says was acknowledged.
    pub fn snapshot(&self) -> Acknowledged {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The store acknowledged these log documents: their heads are kept
    /// (written to disk before the caller acknowledges their position).
    pub fn acknowledged(&self, log: &[RawDocumentBuf]) -> Result<(), CustodyError> {
        let mut a = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut moved = false;
        for d in log {
            if let (Ok(t), Ok(s), Ok(l)) = (
                d.get_str("tenant_id"),
                d.get_i64("seq"),
                d.get_str("link_sha256"),
            ) {
                moved |= a.advance(t, s, l);
            }
        }
        if moved {
            self.save(&a)?;
        }
        Ok(())
    }

    /// The store to acknowledge to from now on.
    pub fn adopt(&self, store_id: &str) -> Result<(), CustodyError> {
        let mut a = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if a.store_id.as_deref() != Some(store_id) {
            a.store_id = Some(store_id.to_owned());
            self.save(&a)?;
        }
        Ok(())
    }

    /// Writes the file whole: a new file, flushed, renamed over the old.
    fn save(&self, a: &Acknowledged) -> Result<(), CustodyError> {
        let f = StateFile {
            version: 1,
            slot: self.slot.clone(),
            store_id: a.store_id.clone(),
            heads: a
                .heads
                .iter()
                .map(|(t, h)| {
                    (
                        t.clone(),
                        FileHead {
                            seq: h.seq,
                            link_sha256: h.link.clone(),
                        },
                    )
                })
                .collect(),
        };
        let io = |source| CustodyError::Io {
            path: self.path.clone(),
            source,
        };
        let text = serde_json::to_vec(&f).map_err(|e| io(std::io::Error::other(e)))?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(&text).map_err(io)?;
        file.sync_data().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)
    }
}

/// The heads of the latest checkpoint per tenant among `notes` (tenant,
/// note) that `verifier` signed for `origin/<tenant>`.
fn signed_heads(
    notes: &[(String, String)],
    verifier: &Verifier25519,
    origin: &str,
) -> Acknowledged {
    let mut a = Acknowledged::default();
    for (tenant, note) in notes {
        let Ok(c) = verifier.open(note).and_then(Checkpoint::parse) else {
            continue;
        };
        if c.origin == format!("{origin}/{tenant}") && c.tree_size > 0 {
            a.advance(tenant, c.tree_size as i64, &c.link_sha256);
        }
    }
    a
}

/// What the marks outside the store say was acknowledged to it: the state
/// file, the witness log and the checkpoints written back to PostgreSQL
/// (signed with the witness's key).
pub async fn acknowledged(
    witness: &WitnessConfig,
    custody: Option<&Custody>,
    verifier: Option<&Verifier25519>,
    pg: &tokio_postgres::Client,
) -> Result<Acknowledged, CustodyError> {
    let mut a = custody.map(Custody::snapshot).unwrap_or_default();
    let Some(verifier) = verifier else {
        return Ok(a);
    };
    if let Some(path) = &witness.log {
        match crate::witness::read_log(path) {
            Ok(notes) => a.merge(&signed_heads(&notes, verifier, &witness.origin)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(CustodyError::WitnessLog {
                    path: path.clone(),
                    source,
                })
            }
        }
    }
    // Written back to PostgreSQL (a superuser can delete them, not forge
    // them). An extension without the table has none.
    if let Ok(rows) = pg
        .query(
            "SELECT DISTINCT ON (tenant_id) tenant_id, note FROM authaudit.witness_checkpoints \
              WHERE witness_key = $1 ORDER BY tenant_id, tree_size DESC",
            &[&verifier.text()],
        )
        .await
    {
        let notes: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        a.merge(&signed_heads(&notes, verifier, &witness.origin));
    }
    Ok(a)
}

/// What the store holds at the acknowledged heads; `store_id` is the
/// identity in its state.
pub async fn held(
    store: &MongoStore,
    store_id: Option<String>,
    a: &Acknowledged,
) -> Result<Held, StoreError> {
    let mut held = Held {
        store_id,
        rows: BTreeMap::new(),
    };
    let heads: Vec<(&String, i64)> = a.heads.iter().map(|(t, h)| (t, h.seq)).collect();
    for chunk in heads.chunks(500) {
        let or: Vec<bson::Document> = chunk
            .iter()
            .map(|(t, s)| doc! {"tenant_id": t.as_str(), "seq": *s})
            .collect();
        let mut cursor = store
            .raw_collection("auth_log")
            .find(doc! {"$or": or})
            .projection(doc! {"tenant_id": 1, "seq": 1, "link_sha256": 1})
            .await?;
        while cursor.advance().await? {
            let d = cursor.current();
            if let (Ok(t), Ok(l)) = (d.get_str("tenant_id"), d.get_str("link_sha256")) {
                held.rows
                    .insert(t.to_owned(), (Some(l.to_owned()), d.get_i64("seq").ok()));
            }
        }
    }
    for (t, _) in heads {
        if !held.rows.contains_key(t) {
            let last = store.last_link(t).await?.map(|(s, _)| s);
            held.rows.insert(t.clone(), (None, last));
        }
    }
    Ok(held)
}

/// Why and how the session copies PostgreSQL's rows into the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Copy {
    /// No slot, no state, nothing acknowledged: the rows are taken as the
    /// originals.
    FirstStart,
    /// The slot is gone (failover, dropped): documents the store holds
    /// keep their originals.
    SlotLost,
    /// A copy begun earlier did not finish.
    Unfinished,
    /// The store's findings were resolved by an operator, whose notes
    /// these are.
    Accepted(Vec<String>),
}

impl Copy {
    /// The log line that says so.
    pub fn describe(&self) -> String {
        match self {
            Copy::FirstStart => "first start: copying the rows committed before the slot existed; they are taken as the originals".into(),
            Copy::SlotLost => "the replication slot is new (the old one was lost or dropped): copying the rows committed before it; documents the store holds keep their originals".into(),
            Copy::Unfinished => "finishing the copy an earlier start began".into(),
            Copy::Accepted(notes) => format!(
                "copying PostgreSQL's rows into the store on the operator's word (resolved alarms: {})",
                notes.join("; ")
            ),
        }
    }
}

/// The custody check's outcome at a session start.
#[derive(Debug)]
pub struct Verdict {
    /// Findings no operator has resolved: no copy while there are any.
    pub open: Vec<Finding>,
    /// Findings an operator resolved, with their notes.
    pub accepted: Vec<(Finding, String)>,
}

/// Judges the store and records each finding as a tamper alarm (once: its
/// `_id` is the finding's).
pub async fn check(
    store: &MongoStore,
    slot: &str,
    acknowledged: &Acknowledged,
    slot_exists: bool,
    store_id: Option<String>,
) -> Result<Verdict, StoreError> {
    let held = held(store, store_id, acknowledged).await?;
    let mut verdict = Verdict {
        open: Vec::new(),
        accepted: Vec::new(),
    };
    let alarms = store.raw_collection("tamper_events");
    for f in judge(acknowledged, slot_exists, &held) {
        let id = f.id(slot);
        match alarms.find_one(doc! {"_id": &id}).await? {
            Some(d) => match d.get_str("resolved") {
                Ok(note) => verdict.accepted.push((f, format!("{id}: {note}"))),
                Err(_) => verdict.open.push(f),
            },
            None => {
                store.insert_alarms(&[alarm_document(&f, &id)]).await?;
                verdict.open.push(f);
            }
        }
    }
    Ok(verdict)
}

/// A finding's document in `tamper_events`.
pub fn alarm_document(f: &Finding, id: &str) -> RawDocumentBuf {
    let mut d = RawDocumentBuf::new();
    d.append("_id", id);
    d.append("kind", f.kind());
    d.append("collection", "auth_log");
    match f.tenant() {
        Some(t) => d.append("tenant_id", t),
        None => d.append("tenant_id", bson::RawBson::Null),
    }
    match f.seq() {
        Some(s) => d.append("seq", s),
        None => d.append("seq", bson::RawBson::Null),
    }
    d.append("log_id", bson::RawBson::Null);
    d.append("commit_lsn", bson::RawBson::Null);
    d.append("committed_at", bson::DateTime::now());
    d.append("detail", f.to_string());
    d
}

/// A new store identity.
pub fn new_store_id() -> String {
    let mut b = [0u8; 16];
    use std::io::Read;
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        // Unique enough without randomness: the time and the process.
        let t = crate::metrics::unix_now_us().to_be_bytes();
        b[..8].copy_from_slice(&t);
        b[8..12].copy_from_slice(&std::process::id().to_be_bytes());
    }
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_file_keeps_heads_and_identity_and_refuses_another_slot() {
        let dir = std::env::temp_dir().join(format!("custody-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        let _ = std::fs::remove_file(&path);
        let c = Custody::open(&path, "s").unwrap();
        assert!(c.snapshot().is_empty());
        c.adopt("abc").unwrap();
        let doc = |t: &str, s: i64, l: &str| {
            let mut d = RawDocumentBuf::new();
            d.append("tenant_id", t);
            d.append("seq", s);
            d.append("link_sha256", l);
            d
        };
        c.acknowledged(&[doc("t", 1, "aa"), doc("t", 2, "bb"), doc("u", 7, "cc")])
            .unwrap();
        let again = Custody::open(&path, "s").unwrap().snapshot();
        assert_eq!(again.store_id.as_deref(), Some("abc"));
        assert_eq!(
            (again.heads["t"].seq, again.heads["t"].link.as_str()),
            (2, "bb")
        );
        assert_eq!(again.heads["u"].seq, 7);
        assert!(matches!(
            Custody::open(&path, "other"),
            Err(CustodyError::OtherSlot { .. })
        ));
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(
            Custody::open(&path, "s"),
            Err(CustodyError::Parse { .. })
        ));
    }

    #[test]
    fn only_the_witness_keys_notes_for_the_tenant_count() {
        let signer = crate::note::Signer25519::from_seed("w", [3; 32]).unwrap();
        let other = crate::note::Signer25519::from_seed("w", [4; 32]).unwrap();
        let text = |tenant: &str, size: u64| {
            Checkpoint {
                origin: format!("pg_authaudit/{tenant}"),
                tree_size: size,
                root: [0; 32],
                link_sha256: format!("{size:02x}"),
                digest_sha512: String::new(),
                digest_sha3_256: String::new(),
                time: "2026-12-07T10:00:00Z".into(),
            }
            .text()
        };
        let notes = vec![
            ("t".to_string(), signer.sign(&text("t", 5))),
            ("t".to_string(), signer.sign(&text("t", 9))),
            ("t".to_string(), other.sign(&text("t", 12))),
            ("u".to_string(), signer.sign(&text("t", 20))),
        ];
        let a = signed_heads(&notes, &signer.verifier(), "pg_authaudit");
        assert_eq!(a.heads.len(), 1, "{a:?}");
        assert_eq!((a.heads["t"].seq, a.heads["t"].link.as_str()), (9, "09"));
    }
}
