//! The document-store contract the mirror relies on, through the official
//! driver: against the project's MongoDB-wire server, against SecantusDB (a
//! second, independent implementation on WiredTiger), and unchanged against
//! a real MongoDB when `AUTHAUDIT_MONGODB_URI` is set. Each test runs
//! against every one of them.

use authaudit_mongowire::Server;
use authaudit_tests::Secantus;
use bson::{doc, Document};
use futures_util::TryStreamExt;
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::IndexOptions;
use mongodb::{Client, IndexModel};
use std::sync::OnceLock;

/// The project's wire server, one per test process.
pub fn wire_uri() -> String {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER
        .get_or_init(|| Server::start("127.0.0.1:0").expect("start mongowire"))
        .uri()
}

/// Every store under test: the wire server, SecantusDB and, when
/// `AUTHAUDIT_MONGODB_URI` is set, that MongoDB.
pub fn store_uris() -> Vec<String> {
    let mut v = vec![wire_uri(), Secantus::shared().uri()];
    if let Ok(uri) = std::env::var("AUTHAUDIT_MONGODB_URI") {
        v.push(uri);
    }
    v
}

/// Runs `f` against every store (with its client and connection string).
fn run<F: std::future::Future<Output = ()>>(f: impl Fn(Client, String) -> F) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for uri in store_uris() {
        rt.block_on(async {
            let client = Client::with_uri_str(&uri).await.unwrap();
            f(client, uri.clone()).await;
        });
    }
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
    run(|client, _uri| async move {
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
    run(|client, _uri| async move {
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
    run(|client, _uri| async move {
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

/// Writes one lockout change as its own batch, through the mirror's store.
async fn put_lockout(
    store: &sidecar::mongo_store::MongoStore,
    last_seq: &str,
    failures: &str,
    ordinal: i64,
) {
    let row: std::collections::HashMap<&str, &str> = [
        ("tenant_id", "acme"),
        ("user_id", "alice"),
        ("failure_count", failures),
        ("last_seq", last_seq),
    ]
    .into();
    let change = sidecar::documents::lockout_state(&|c: &str| row.get(c).copied(), ordinal);
    let mut batch = sidecar::batch::Batch::default();
    batch.put_lockout(change.unwrap());
    store.write(&batch).await.unwrap();
}

#[test]
fn a_copied_lockout_row_is_not_moved_back_by_replays_from_the_slot() {
    run(|client, uri| async move {
        let name = "authaudit_contract_lockout_replay";
        let db = client.database(name);
        db.drop().await.unwrap();
        let store = sidecar::mongo_store::MongoStore::connect(&uri, name, "majority")
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
        put_lockout(&store, "12", "3", i64::MAX).await;
        // The slot replays transactions the copy already holds: seq 10's
        // last change, then seq 12's intermediate and last changes.
        put_lockout(&store, "10", "2", 3).await;
        put_lockout(&store, "10", "3", 2).await;
        put_lockout(&store, "12", "3", 3).await;
        assert_eq!(state().await, (12, 3));
        // A later transaction: its first changes still carry seq 12 (they
        // are skipped), its last one sets seq 15.
        put_lockout(&store, "12", "0", 1).await;
        assert_eq!(state().await, (12, 3));
        put_lockout(&store, "15", "4", 3).await;
        assert_eq!(state().await, (15, 4));
        db.drop().await.unwrap();
    });
}

/// A log row as the mirror writes it, through the sidecar's conversion.
fn log_doc(log_id: &str, seq: &str, link: &str) -> bson::RawDocumentBuf {
    let row: std::collections::HashMap<&str, &str> = [
        ("log_id", log_id),
        ("tenant_id", "acme"),
        ("seq", seq),
        ("event_type", "login_failed"),
        ("user_id", "alice"),
        ("channel", "web"),
        ("occurred_at", "2026-11-28 04:11:20+00"),
        ("recorded_at", "2026-11-28 04:11:20+00"),
        ("metadata", "{}"),
        ("format_version", "1"),
        ("prev_link", "\\x00"),
        ("link_sha256", link),
        ("digest_sha512", "\\x02"),
        ("digest_sha3_256", "\\x03"),
    ]
    .into();
    sidecar::documents::auth_log(&|c: &str| row.get(c).copied())
        .unwrap()
        .doc
}

/// Replays and conflicts are told apart by looking the document up, not by
/// which unique index the server names first: a replayed row is a
/// duplicate; another row at a mirrored (tenant, seq), or another row under
/// a mirrored (tenant, log id), is a conflict.
#[test]
fn replays_and_conflicts_are_told_apart_by_looking_the_document_up() {
    run(|client, uri| async move {
        let name = "authaudit_contract_conflicts";
        let db = client.database(name);
        db.drop().await.unwrap();
        let store = sidecar::mongo_store::MongoStore::connect(&uri, name, "majority")
            .await
            .unwrap();
        store.ensure_indexes().await.unwrap();
        let a = "6d1c0c8e-0000-4000-8000-00000000000a";
        let b = "6d1c0c8e-0000-4000-8000-00000000000b";
        let mut first = sidecar::batch::Batch::default();
        first.log.push(log_doc(a, "1", "\\xaa"));
        let r = store.write(&first).await.unwrap();
        assert_eq!((r.duplicates, r.conflicts.len()), (0, 0));
        // The same row again (a replay after a restart).
        let r = store.write(&first).await.unwrap();
        assert_eq!((r.duplicates, r.conflicts.len()), (1, 0));
        // Another row at seq 1, and another row under log id `a`.
        let mut forged = sidecar::batch::Batch::default();
        forged.log.push(log_doc(b, "1", "\\xbb"));
        forged.log.push(log_doc(a, "2", "\\xcc"));
        let r = store.write(&forged).await.unwrap();
        assert_eq!(r.duplicates, 0);
        assert_eq!(r.conflicts, [format!("acme/{b}"), format!("acme/{a}")]);
        db.drop().await.unwrap();
    });
}

/// Keys starting with `$` inside stored documents are kept as keys: a
/// nested `{"$date": …}` stays a sub-document with all its siblings.
#[test]
fn dollar_keys_in_stored_documents_are_kept_literally() {
    run(|client, _uri| async move {
        let db = client.database("authaudit_contract_dollar");
        db.drop().await.unwrap();
        let c = db.collection::<bson::RawDocumentBuf>("auth_log");
        let mut inner = bson::RawDocumentBuf::new();
        inner.append("$date", 1_700_000_000_000_i64);
        inner.append("note", "sibling");
        let mut d = bson::RawDocumentBuf::new();
        d.append("_id", "x");
        d.append("metadata", inner);
        c.insert_one(&d).await.unwrap();
        let back = c.find_one(doc! {"_id": "x"}).await.unwrap().unwrap();
        assert_eq!(back.as_bytes(), d.as_bytes(), "stored document changed");
        db.drop().await.unwrap();
    });
}

/// Duplicate-key errors carry the key pattern and value; an index
/// re-created under its name with other options is refused (86).
#[test]
fn duplicate_key_errors_name_the_key_and_index_options_are_checked() {
    run(|client, _uri| async move {
        let db = client.database("authaudit_contract_keys");
        db.drop().await.unwrap();
        let c = db.collection::<Document>("auth_log");
        let unique = IndexOptions::builder()
            .name("tenant_seq".to_string())
            .unique(true)
            .build();
        c.create_index(
            IndexModel::builder()
                .keys(doc! {"tenant_id": 1, "seq": 1})
                .options(unique.clone())
                .build(),
        )
        .await
        .unwrap();
        c.insert_one(doc! {"_id": "a", "tenant_id": "acme", "seq": 1_i64})
            .await
            .unwrap();
        // The raw reply: the driver keeps keyPattern and keyValue out of its
        // WriteError, the mirror's error reports read them from here.
        let write_error = |d: Document| {
            let db = db.clone();
            async move {
                let reply = db
                    .run_command(doc! {"insert": "auth_log", "documents": [d]})
                    .await
                    .unwrap();
                reply.get_array("writeErrors").unwrap()[0]
                    .as_document()
                    .unwrap()
                    .clone()
            }
        };
        let w = write_error(doc! {"_id": "b", "tenant_id": "acme", "seq": 1_i64}).await;
        assert_eq!(w.get_i32("code").unwrap(), 11000);
        assert_eq!(
            w.get_document("keyPattern").unwrap(),
            &doc! {"tenant_id": 1, "seq": 1}
        );
        assert_eq!(
            w.get_document("keyValue").unwrap(),
            &doc! {"tenant_id": "acme", "seq": 1_i64}
        );
        let w = write_error(doc! {"_id": "a"}).await;
        assert_eq!(w.get_document("keyPattern").unwrap(), &doc! {"_id": 1});
        assert_eq!(w.get_document("keyValue").unwrap(), &doc! {"_id": "a"});
        // Same name and key, other options.
        let other = IndexOptions::builder()
            .name("tenant_seq".to_string())
            .unique(false)
            .build();
        let err = c
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"tenant_id": 1, "seq": 1})
                    .options(other)
                    .build(),
            )
            .await
            .unwrap_err();
        assert_eq!(command_code(&err), Some(86), "{err}");
        // The same spec again is fine.
        c.create_index(
            IndexModel::builder()
                .keys(doc! {"tenant_id": 1, "seq": 1})
                .options(unique)
                .build(),
        )
        .await
        .unwrap();
        db.drop().await.unwrap();
    });
}

fn command_code(e: &mongodb::error::Error) -> Option<i32> {
    match &*e.kind {
        ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

/// Write concerns a single-node replica set cannot satisfy are answered
/// with a write concern error (100 too many nodes, 79 an unknown tag); a
/// malformed one is refused before anything is written (14).
#[test]
fn unsatisfiable_and_malformed_write_concerns_are_refused() {
    run(|client, _uri| async move {
        let db = client.database("authaudit_contract_concern");
        db.drop().await.unwrap();
        let insert = |w: bson::Bson, id: &str| {
            let db = db.clone();
            let id = id.to_string();
            async move {
                db.run_command(doc! {
                    "insert": "c", "documents": [{"_id": id}],
                    "writeConcern": {"w": w},
                })
                .await
                .unwrap()
            }
        };
        let wce = |reply: &Document| {
            reply
                .get_document("writeConcernError")
                .ok()
                .and_then(|e| e.get_i32("code").ok())
        };
        assert_eq!(wce(&insert(bson::Bson::Int32(2), "a").await), Some(100));
        assert_eq!(
            wce(&insert(bson::Bson::String("no-such-tag".into()), "b").await),
            Some(79)
        );
        assert_eq!(
            wce(&insert(bson::Bson::String("majority".into()), "c").await),
            None
        );
        let err = db
            .run_command(doc! {
                "insert": "c", "documents": [{"_id": "d"}],
                "writeConcern": {"w": 1, "j": "yes"},
            })
            .await
            .unwrap_err();
        assert_eq!(command_code(&err), Some(14), "{err}");
        let ids = db
            .collection::<Document>("c")
            .count_documents(doc! {"_id": "d"})
            .await
            .unwrap();
        assert_eq!(ids, 0, "a refused concern wrote nothing");
        db.drop().await.unwrap();
    });
}
