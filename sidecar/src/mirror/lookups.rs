//! What the replication loop reads back from the document store while it
//! runs: the seam between the session and MongoDB (a test gives the
//! session a store of its own).

use crate::mongo_store::{MongoStore, StoreError};
use crate::witness::{TenantTree, TreeSource};
use bson::{doc, RawDocumentBuf};
use std::collections::HashSet;

/// The store's answers the session needs besides delivering batches (and
/// the witness's trees, [`TreeSource`]).
pub(crate) trait StoreLookups: TreeSource {
    /// The last mirrored (seq, link_sha256 hex) of a tenant's chain.
    async fn last_link(&self, tenant: &str) -> Result<Option<(i64, String)>, StoreError>;
    /// The link of a mirrored checkpoint, if any.
    async fn checkpoint_link(&self, tenant: &str, seq: i64) -> Result<Option<String>, StoreError>;
    /// Which of these alert ids the store holds.
    async fn held_alerts(&self, ids: &[String]) -> Result<HashSet<String>, StoreError>;
    /// The mirrored log document of (tenant, seq).
    async fn log_document(
        &self,
        tenant: &str,
        seq: i64,
    ) -> Result<Option<RawDocumentBuf>, StoreError>;
    /// Tamper alarms no operator has resolved.
    async fn unresolved_tampers(&self) -> Result<u64, StoreError>;
}

impl StoreLookups for MongoStore {
    async fn last_link(&self, tenant: &str) -> Result<Option<(i64, String)>, StoreError> {
        MongoStore::last_link(self, tenant).await
    }

    async fn checkpoint_link(&self, tenant: &str, seq: i64) -> Result<Option<String>, StoreError> {
        MongoStore::checkpoint_link(self, tenant, seq).await
    }

    async fn held_alerts(&self, ids: &[String]) -> Result<HashSet<String>, StoreError> {
        let mut held = HashSet::new();
        let mut c = self
            .raw_collection("alerts")
            .find(doc! {"_id": {"$in": ids}})
            .projection(doc! {"_id": 1})
            .await?;
        while c.advance().await? {
            if let Ok(id) = c.current().get_str("_id") {
                held.insert(id.to_owned());
            }
        }
        Ok(held)
    }

    async fn log_document(
        &self,
        tenant: &str,
        seq: i64,
    ) -> Result<Option<RawDocumentBuf>, StoreError> {
        Ok(self
            .raw_collection("auth_log")
            .find_one(doc! {"tenant_id": tenant, "seq": seq})
            .await?)
    }

    async fn unresolved_tampers(&self) -> Result<u64, StoreError> {
        MongoStore::unresolved_tampers(self).await
    }
}

impl TreeSource for MongoStore {
    async fn witness_tree(&self, tenant: &str) -> Result<TenantTree, StoreError> {
        crate::witness::load(self, tenant).await
    }
}
