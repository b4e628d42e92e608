//! Idempotent bulk writes into MongoDB with the official driver.
//!
//! Every write can be repeated after a crash or a retry without changing the
//! result: log rows and checkpoints are inserted by `_id` (a duplicate
//! `_id`, code 11000, means "already there"); lockout state is upserted with
//! a version guard (`v`, the row's `last_seq`; `vi`, the position in its
//! transaction) so an older change never replaces a
//! newer one. A batch counts as written only when MongoDB acknowledged every
//! part at the configured write concern.
//!
//! A mirror written by a release before 0.6.0 holds log documents keyed by
//! `log_id` alone; [`MongoStore::rekey_log`] (the `migrate` command) moves
//! them to the current key through a staging collection, so a crash at any
//! step loses none.

use crate::batch::Batch;
use crate::documents::{self, LockoutChange};
use bson::{doc, Document, RawArrayBuf, RawBson, RawDocumentBuf};
use mongodb::error::ErrorKind;
use mongodb::options::{IndexOptions, WriteConcern};
use mongodb::{Client, Collection, Database, IndexModel};
use std::collections::HashMap;

/// A failed write: retried by the caller.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("MongoDB: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("MongoDB refused {collection}: {message}")]
    Refused {
        collection: &'static str,
        message: String,
    },
    #[error("write concern not satisfied on {collection}: {message}")]
    WriteConcern {
        collection: &'static str,
        message: String,
    },
}

impl StoreError {
    /// Whether retrying cannot help: the connection string is invalid or
    /// the store refuses the credentials.
    pub fn is_configuration(&self) -> bool {
        match self {
            StoreError::Mongo(e) => matches!(
                &*e.kind,
                ErrorKind::InvalidArgument { .. } | ErrorKind::Authentication { .. }
            ),
            _ => false,
        }
    }
}

/// What a batch write found besides success.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Log rows already present (replays after a crash or retry).
    pub duplicates: u64,
    /// Log rows (or checkpoints) refused as duplicates whose `_id` holds a
    /// different row, or whose (tenant_id, seq) another row holds. Reported
    /// loudly.
    pub conflicts: Vec<String>,
}

/// Whether a stored log row or checkpoint is the one being written: the same
/// tenant, position and chain link (the link covers every recorded field).
fn same_row(stored: &RawDocumentBuf, written: &RawDocumentBuf) -> bool {
    ["tenant_id", "seq", "link_sha256"]
        .iter()
        .all(|f| matches!((stored.get(f), written.get(f)), (Ok(Some(a)), Ok(Some(b))) if a == b))
}

/// The update statement of a lockout change: an upsert that only lands if
/// the stored version is older, `{q: {_id, $or: [{v: {$lt: v}}, {v, vi:
/// {$lt: vi}}]}, u: {$set: fields}, upsert: true}`. A newer stored version
/// makes the upsert collide on `_id` (11000): the older change is dropped.
fn guarded_upsert(c: &LockoutChange) -> RawDocumentBuf {
    let (v, vi) = c.version;
    let mut lt = RawDocumentBuf::new();
    lt.append("$lt", v);
    let mut older = RawDocumentBuf::new();
    older.append("v", lt);
    let mut lt_i = RawDocumentBuf::new();
    lt_i.append("$lt", vi);
    let mut earlier = RawDocumentBuf::new();
    earlier.append("v", v);
    earlier.append("vi", lt_i);
    let mut or = RawArrayBuf::new();
    or.push(older);
    or.push(earlier);
    let mut q = RawDocumentBuf::new();
    q.append("_id", c.id.as_str());
    q.append("$or", or);
    let mut u = RawDocumentBuf::new();
    u.append_ref("$set", &c.fields);
    let mut stmt = RawDocumentBuf::new();
    stmt.append("q", q);
    stmt.append("u", u);
    stmt.append("upsert", true);
    stmt
}

/// Every document a cursor yields.
async fn collect(
    find: impl std::future::IntoFuture<Output = mongodb::error::Result<mongodb::Cursor<RawDocumentBuf>>>,
) -> Result<Vec<RawDocumentBuf>, StoreError> {
    let mut cursor = find.await?;
    let mut out = Vec::new();
    while cursor.advance().await? {
        out.push(cursor.current().to_raw_document_buf());
    }
    Ok(out)
}

/// The document store.
#[derive(Clone)]
pub struct MongoStore {
    db: Database,
    concern: WriteConcern,
    concern_doc: RawDocumentBuf,
}

impl MongoStore {
    /// The store `[mongo]` names, with `--store-timeout-ms` as the
    /// longest wait to select a server or connect (a store that is down
    /// fails an attempt within it instead of the driver's 30 s).
    pub async fn from_config(
        config: &crate::config::MongoConfig,
    ) -> Result<MongoStore, StoreError> {
        let mut o = mongodb::options::ClientOptions::parse(config.expose_uri()).await?;
        let t = config.timeout();
        o.server_selection_timeout = Some(o.server_selection_timeout.map_or(t, |s| s.min(t)));
        o.connect_timeout = Some(o.connect_timeout.map_or(t, |s| s.min(t)));
        MongoStore::with_client(
            Client::with_options(o)?,
            &config.database,
            &config.write_concern,
        )
    }

    pub async fn connect(
        uri: &str,
        database: &str,
        write_concern: &str,
    ) -> Result<MongoStore, StoreError> {
        MongoStore::with_client(Client::with_uri_str(uri).await?, database, write_concern)
    }

    fn with_client(
        client: Client,
        database: &str,
        write_concern: &str,
    ) -> Result<MongoStore, StoreError> {
        let (concern, w) = match write_concern.parse::<u32>() {
            Ok(n) => (WriteConcern::nodes(n), RawBson::Int32(n as i32)),
            Err(_) => (WriteConcern::majority(), RawBson::String("majority".into())),
        };
        let mut concern_doc = RawDocumentBuf::new();
        concern_doc.append("w", w);
        Ok(MongoStore {
            db: client.database(database),
            concern,
            concern_doc,
        })
    }

    /// A collection read as raw BSON (documents as stored, byte for byte).
    pub fn raw_collection(&self, name: &str) -> Collection<RawDocumentBuf> {
        self.db.collection(name)
    }

    pub fn collection(&self, name: &str) -> Collection<Document> {
        self.db.collection(name)
    }

    /// Creates the mirror's indexes (idempotent).
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        let idx = |keys: Document, name: &str, unique: bool| {
            IndexModel::builder()
                .keys(keys)
                .options(
                    IndexOptions::builder()
                        .name(name.to_string())
                        .unique(unique)
                        .build(),
                )
                .build()
        };
        self.collection("auth_log")
            .create_indexes([
                idx(doc! {"tenant_id": 1, "seq": 1}, "tenant_seq", true),
                // `_id` (tenant_id/log_id) keeps log ids unique per tenant.
                idx(doc! {"tenant_id": 1, "log_id": 1}, "tenant_log_id", false),
                idx(
                    doc! {"tenant_id": 1, "occurred_at": 1},
                    "tenant_time",
                    false,
                ),
                idx(
                    doc! {"tenant_id": 1, "user_id": 1, "occurred_at": 1},
                    "tenant_user_time",
                    false,
                ),
                idx(
                    doc! {"tenant_id": 1, "ip": 1, "occurred_at": 1},
                    "tenant_ip_time",
                    false,
                ),
            ])
            .await?;
        self.collection("lockout_state")
            .create_indexes([idx(
                doc! {"tenant_id": 1, "user_id": 1},
                "tenant_user",
                false,
            )])
            .await?;
        self.collection("checkpoints")
            .create_indexes([idx(doc! {"tenant_id": 1, "seq": 1}, "tenant_seq", false)])
            .await?;
        Ok(())
    }

    /// Writes a batch; Ok only once every part is acknowledged.
    pub async fn write(&self, batch: &Batch) -> Result<WriteReport, StoreError> {
        let mut report = WriteReport::default();
        // A log document that names parts is only written once they are.
        self.insert_once("auth_log_parts", &batch.parts).await?;
        self.insert_all("auth_log", &batch.log, &mut report).await?;
        self.insert_all("checkpoints", &batch.checkpoints, &mut report)
            .await?;
        if !batch.lockout.is_empty() {
            self.upsert_lockout(batch.lockout.values()).await?;
        }
        self.insert_once("tamper_events", &batch.tamper).await?;
        self.insert_once("witness_checkpoints", &batch.witness)
            .await?;
        self.insert_once("alerts", &batch.alerts).await?;
        Ok(report)
    }

    async fn insert_all(
        &self,
        name: &'static str,
        docs: &[RawDocumentBuf],
        report: &mut WriteReport,
    ) -> Result<(), StoreError> {
        if docs.is_empty() {
            return Ok(());
        }
        let Err(e) = self.insert_unordered(name, docs).await else {
            return Ok(());
        };
        let ErrorKind::InsertMany(failure) = &*e.kind else {
            return Err(e.into());
        };
        if let Some(wc) = &failure.write_concern_error {
            return Err(StoreError::WriteConcern {
                collection: name,
                message: wc.message.clone(),
            });
        }
        let mut collided = Vec::new();
        for w in failure.write_errors.iter().flatten() {
            if w.code != 11000 {
                return Err(StoreError::Refused {
                    collection: name,
                    message: w.message.clone(),
                });
            }
            if let Some(d) = docs.get(w.index) {
                collided.push(d);
            }
        }
        self.classify_collisions(name, &collided, report).await
    }

    /// Inserts `docs` unordered (each refusal apart) at the write concern.
    async fn insert_unordered(
        &self,
        name: &str,
        docs: &[RawDocumentBuf],
    ) -> mongodb::error::Result<()> {
        self.raw_collection(name)
            .insert_many(docs)
            .ordered(false)
            .write_concern(self.concern.clone())
            .await
            .map(|_| ())
    }

    /// Tells replays from conflicts among documents refused as duplicates:
    /// each is looked up by `_id`. The same document stored already is a
    /// replay; a different one under that `_id`, or none (another row holds
    /// the (tenant_id, seq)), is a conflict. Which unique index a server
    /// names first in its error does not matter.
    async fn classify_collisions(
        &self,
        name: &'static str,
        collided: &[&RawDocumentBuf],
        report: &mut WriteReport,
    ) -> Result<(), StoreError> {
        if collided.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = collided
            .iter()
            .filter_map(|d| d.get_str("_id").ok())
            .collect();
        let mut stored: HashMap<String, RawDocumentBuf> = HashMap::new();
        let mut cursor = self
            .db
            .collection::<RawDocumentBuf>(name)
            .find(doc! {"_id": {"$in": &ids}})
            .await?;
        while cursor.advance().await? {
            let d = cursor.current().to_raw_document_buf();
            if let Ok(id) = d.get_str("_id") {
                stored.insert(id.to_string(), d.clone());
            }
        }
        for d in collided {
            let id = d.get_str("_id").unwrap_or("?");
            match stored.get(id) {
                Some(s) if same_row(s, d) => report.duplicates += 1,
                _ => report.conflicts.push(id.to_string()),
            }
        }
        Ok(())
    }

    async fn upsert_lockout(
        &self,
        changes: impl Iterator<Item = &LockoutChange>,
    ) -> Result<(), StoreError> {
        let changes: Vec<&LockoutChange> = changes.collect();
        for chunk in changes.chunks(10_000) {
            let mut updates = RawArrayBuf::new();
            for c in chunk {
                updates.push(guarded_upsert(c));
            }
            let mut cmd = RawDocumentBuf::new();
            cmd.append("update", "lockout_state");
            cmd.append("updates", updates);
            cmd.append("ordered", false);
            cmd.append_ref("writeConcern", &self.concern_doc);
            let reply = self.db.run_raw_command(cmd).await?;
            if let Ok(wc) = reply.get_document("writeConcernError") {
                return Err(StoreError::WriteConcern {
                    collection: "lockout_state",
                    message: wc
                        .get_str("errmsg")
                        .unwrap_or("write concern error")
                        .to_string(),
                });
            }
            // A guarded upsert whose document is newer collides on _id
            // (11000): the older change is correctly dropped.
            for e in reply
                .get_array("writeErrors")
                .map(|a| a.as_slice())
                .unwrap_or_default()
            {
                let e = e.as_document().cloned().unwrap_or_default();
                if e.get_i32("code").unwrap_or(0) != 11000 {
                    return Err(StoreError::Refused {
                        collection: "lockout_state",
                        message: e.get_str("errmsg").unwrap_or("write error").to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Moves log documents of the first mirror format (`_id` = `log_id`) to
    /// the current one (`_id` = `tenant_id/log_id`, with a `log_id` field),
    /// a chunk at a time: the chunk is staged in `_authaudit_rekey`, the old
    /// documents are deleted, the new ones inserted, and the stage cleared.
    /// A chunk a crash left staged is finished first. Returns how many
    /// documents moved.
    pub async fn rekey_log(&self) -> Result<u64, StoreError> {
        const CHUNK: i64 = 1_000;
        let log = self.raw_collection("auth_log");
        let stage = self.raw_collection("_authaudit_rekey");
        let mut moved = 0;
        loop {
            let mut docs = collect(stage.find(doc! {}).limit(CHUNK)).await?;
            if docs.is_empty() {
                let old =
                    collect(log.find(doc! {"log_id": {"$exists": false}}).limit(CHUNK)).await?;
                docs = old.iter().filter_map(|d| documents::rekeyed(d)).collect();
                if docs.is_empty() {
                    return Ok(moved);
                }
                self.insert_new("_authaudit_rekey", &docs).await?;
            }
            let old_ids: Vec<&str> = docs
                .iter()
                .filter_map(|d| d.get_str("log_id").ok())
                .collect();
            let new_ids: Vec<&str> = docs.iter().filter_map(|d| d.get_str("_id").ok()).collect();
            log.delete_many(doc! {"_id": {"$in": &old_ids}})
                .write_concern(self.concern.clone())
                .await?;
            self.insert_new("auth_log", &docs).await?;
            stage
                .delete_many(doc! {"_id": {"$in": &new_ids}})
                .write_concern(self.concern.clone())
                .await?;
            moved += docs.len() as u64;
        }
    }

    /// Whether log documents of the first mirror format are left to move
    /// (`migrate`): a chunk staged by a move a crash cut short, or a log
    /// document without a `log_id` field. The second is one query the
    /// (tenant, log id) index answers (a missing field is indexed as null).
    pub async fn first_format_left(&self) -> Result<bool, StoreError> {
        if self
            .raw_collection("_authaudit_rekey")
            .find_one(doc! {})
            .await?
            .is_some()
        {
            return Ok(true);
        }
        let old = self
            .raw_collection("auth_log")
            .find_one(doc! {"tenant_id": {"$exists": true}, "log_id": {"$exists": false}})
            .projection(doc! {"_id": 1})
            .await?;
        Ok(old.is_some())
    }

    /// Inserts `docs` unless their `_id` holds the same document already;
    /// any other refusal is an error.
    async fn insert_new(
        &self,
        name: &'static str,
        docs: &[RawDocumentBuf],
    ) -> Result<(), StoreError> {
        let mut report = WriteReport::default();
        self.insert_all(name, docs, &mut report).await?;
        match report.conflicts.first() {
            None => Ok(()),
            Some(id) => Err(StoreError::Refused {
                collection: name,
                message: format!("{id} is held by another document"),
            }),
        }
    }

    /// Inserts documents written once (tamper alarms, signed checkpoints);
    /// one stored already under its `_id` (a replay) stays as it is.
    async fn insert_once(&self, name: &str, docs: &[RawDocumentBuf]) -> Result<(), StoreError> {
        if docs.is_empty() {
            return Ok(());
        }
        let Err(e) = self.insert_unordered(name, docs).await else {
            return Ok(());
        };
        match &*e.kind {
            ErrorKind::InsertMany(f)
                if f.write_concern_error.is_none()
                    && f.write_errors.iter().flatten().all(|w| w.code == 11000) =>
            {
                Ok(())
            }
            _ => Err(e.into()),
        }
    }

    /// Writes tamper alarms, each once (one stored already under its `_id`
    /// stays as it is, resolved or not).
    pub async fn insert_alarms(&self, docs: &[RawDocumentBuf]) -> Result<(), StoreError> {
        self.insert_once("tamper_events", docs).await
    }

    /// Tamper alarms no operator has resolved (`resolved` unset).
    pub async fn unresolved_tampers(&self) -> Result<u64, StoreError> {
        Ok(self
            .collection("tamper_events")
            .count_documents(doc! {"resolved": {"$exists": false}})
            .await?)
    }

    /// The mirror's own state for a slot (`_authaudit_sidecar` collection).
    pub async fn state(&self, slot: &str) -> Result<Option<Document>, StoreError> {
        Ok(self
            .collection("_authaudit_sidecar")
            .find_one(doc! {"_id": slot})
            .await?)
    }

    pub async fn set_state(&self, slot: &str, fields: Document) -> Result<(), StoreError> {
        self.collection("_authaudit_sidecar")
            .update_one(doc! {"_id": slot}, doc! {"$set": fields})
            .upsert(true)
            .write_concern(self.concern.clone())
            .await?;
        Ok(())
    }

    /// The last mirrored (seq, link_sha256 hex) of a tenant's chain.
    pub async fn last_link(&self, tenant: &str) -> Result<Option<(i64, String)>, StoreError> {
        let d = self
            .collection("auth_log")
            .find_one(doc! {"tenant_id": tenant})
            .sort(doc! {"seq": -1})
            .projection(doc! {"seq": 1, "link_sha256": 1})
            .await?;
        Ok(d.map(|d| {
            (
                d.get_i64("seq").unwrap_or(0),
                d.get_str("link_sha256").unwrap_or_default().to_string(),
            )
        }))
    }

    /// The link of a mirrored checkpoint, if any.
    pub async fn checkpoint_link(
        &self,
        tenant: &str,
        seq: i64,
    ) -> Result<Option<String>, StoreError> {
        let d = self
            .collection("checkpoints")
            .find_one(doc! {"_id": format!("{tenant}/{seq}")})
            .await?;
        Ok(d.and_then(|d| d.get_str("link_sha256").ok().map(str::to_string)))
    }
}
