//! The document-store contract the mirror relies on, through the official
//! driver: against the project's MongoDB-wire server, or unchanged against a
//! real MongoDB when `AUTHAUDIT_MONGODB_URI` is set.

use authaudit_mongowire::Server;
use bson::{doc, Document};
use futures_util::TryStreamExt;
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::IndexOptions;
use mongodb::{Client, IndexModel};
use std::sync::OnceLock;

/// The store under test: `AUTHAUDIT_MONGODB_URI`, else one wire server.
pub fn store_uri() -> String {
    if let Ok(uri) = std::env::var("AUTHAUDIT_MONGODB_URI") {
        return uri;
    }
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER
        .get_or_init(|| Server::start("127.0.0.1:0").expect("start mongowire"))
        .uri()
}

fn run<F: std::future::Future<Output = ()>>(f: impl FnOnce(Client) -> F) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = Client::with_uri_str(store_uri()).await.unwrap();
        f(client).await;
    });
}

fn dup_codes(e: &mongodb::error::Error) -> Vec<i32> {
    match &*e.kind {
        ErrorKind::InsertMany(m) => m.write_errors.iter().flatten().map(|w| w.code).collect(),
        ErrorKind::Write(WriteFailure::WriteError(w)) => vec![w.code],
        other => panic!("not a write error: {other:?}"),
    }
}

#[test]
fn unordered_inserts_keep_going_and_report_duplicates_as_11000() {
    run(|client| async move {
        let db = client.database("authaudit_contract_insert");
        db.drop().await.unwrap();
        let c = db.collection::<Document>("auth_log");
        c.insert_one(doc! {"_id": "b"}).await.unwrap();
        let err = c
            .insert_many([doc! {"_id": "a"}, doc! {"_id": "b"}, doc! {"_id": "c"}])
            .ordered(false)
            .await
            .unwrap_err();
        assert_eq!(dup_codes(&err), [11000]);
        let ids: Vec<String> = c
            .find(doc! {})
            .sort(doc! {"_id": 1})
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .iter()
            .map(|d| d.get_str("_id").unwrap().to_string())
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
        db.drop().await.unwrap();
    });
}

#[test]
fn a_version_guarded_upsert_never_moves_a_document_back() {
    run(|client| async move {
        let db = client.database("authaudit_contract_upsert");
        db.drop().await.unwrap();
        let c = db.collection::<Document>("lockout_state");
        let put = |v: i64, locked: bool| {
            let c = c.clone();
            async move {
                c.update_one(
                    doc! {"_id": "acme/alice", "v": {"$lt": v}},
                    doc! {"$set": {"v": v, "locked": locked}},
                )
                .upsert(true)
                .await
            }
        };
        put(10, false).await.unwrap();
        put(20, true).await.unwrap();
        let err = put(15, false).await.unwrap_err();
        assert_eq!(dup_codes(&err), [11000]);
        let d = c
            .find_one(doc! {"_id": "acme/alice"})
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (d.get_i64("v").unwrap(), d.get_bool("locked").unwrap()),
            (20, true)
        );
        db.drop().await.unwrap();
    });
}

#[test]
fn indexes_sorting_projection_and_cursors() {
    run(|client| async move {
        let db = client.database("authaudit_contract_find");
        db.drop().await.unwrap();
        let c = db.collection::<Document>("auth_log");
        c.create_index(
            IndexModel::builder()
                .keys(doc! {"tenant_id": 1, "seq": 1})
                .options(
                    IndexOptions::builder()
                        .unique(true)
                        .name("tenant_seq".to_string())
                        .build(),
                )
                .build(),
        )
        .await
        .unwrap();
        let docs: Vec<Document> = (1..=300i64)
            .map(|i| doc! {"_id": format!("id{i}"), "tenant_id": if i % 3 == 0 {"b"} else {"a"}, "seq": i, "link": format!("l{i}")})
            .collect();
        c.insert_many(docs).await.unwrap();
        let err = c
            .insert_one(doc! {"_id": "x", "tenant_id": "a", "seq": 1i64})
            .await
            .unwrap_err();
        assert_eq!(dup_codes(&err), [11000]);
        assert!(c
            .list_index_names()
            .await
            .unwrap()
            .contains(&"tenant_seq".to_string()));
        let got: Vec<Document> = c
            .find(doc! {"tenant_id": "a", "seq": {"$gt": 10}})
            .sort(doc! {"seq": -1})
            .projection(doc! {"_id": 0, "seq": 1})
            .batch_size(37)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(got.len(), 193);
        assert_eq!(got[0], doc! {"seq": 299i64});
        assert!(got
            .windows(2)
            .all(|w| w[0].get_i64("seq").unwrap() > w[1].get_i64("seq").unwrap()));
        let n = c
            .delete_many(doc! {"tenant_id": "b"})
            .await
            .unwrap()
            .deleted_count;
        assert_eq!(n, 100);
        assert_eq!(c.estimated_document_count().await.unwrap(), 200);
        db.drop().await.unwrap();
    });
}

/// Writes one lockout change as its own batch, through the mirror's sink.
async fn put_lockout(sink: &sidecar::sink::Sink, last_seq: &str, failures: &str, ordinal: i64) {
    let row: std::collections::HashMap<&str, &str> = [
        ("tenant_id", "acme"),
        ("user_id", "alice"),
        ("failure_count", failures),
        ("last_seq", last_seq),
    ]
    .into();
    let change = sidecar::documents::lockout_state(&|c: &str| row.get(c).copied(), ordinal);
    let mut batch = sidecar::sink::Batch::default();
    batch.put_lockout(change.unwrap());
    sink.write(&batch).await.unwrap();
}

#[test]
fn a_copied_lockout_row_is_not_moved_back_by_replays_from_the_slot() {
    run(|client| async move {
        let name = "authaudit_contract_lockout_replay";
        let db = client.database(name);
        db.drop().await.unwrap();
        let sink = sidecar::sink::Sink::connect(&store_uri(), name, "majority")
            .await
            .unwrap();
        let state = || async {
            let d = db
                .collection::<Document>("lockout_state")
                .find_one(doc! {"_id": "acme/alice"})
                .await
                .unwrap()
                .unwrap();
            (
                d.get_i64("last_seq").unwrap(),
                d.get_i64("failure_count").unwrap(),
            )
        };
        // The initial copy: the final state of seq 12.
        put_lockout(&sink, "12", "3", i64::MAX).await;
        // The slot replays transactions the copy already holds: seq 10's
        // last change, then seq 12's intermediate and last changes.
        put_lockout(&sink, "10", "2", 3).await;
        put_lockout(&sink, "10", "3", 2).await;
        put_lockout(&sink, "12", "3", 3).await;
        assert_eq!(state().await, (12, 3));
        // A later transaction: its first changes still carry seq 12 (they
        // are skipped), its last one sets seq 15.
        put_lockout(&sink, "12", "0", 1).await;
        assert_eq!(state().await, (12, 3));
        put_lockout(&sink, "15", "4", 3).await;
        assert_eq!(state().await, (15, 4));
        db.drop().await.unwrap();
    });
}
