//! The mirror end to end: the real sidecar binary, the real PostgreSQL
//! cluster's logical replication, the official MongoDB driver talking to the
//! project's MongoDB-wire server (or to `AUTHAUDIT_MONGODB_URI`), and the
//! copy and SIGKILL runs again against SecantusDB, an independent server.
//! Nothing lost, nothing doubled, no false alarm: after SIGKILLs, a
//! PostgreSQL restart, and a failing or stalled document store. The harness
//! is `authaudit_tests::mirror`.

use crate::support::{log_id, record, run_tool, Event};
use authaudit_tests::mirror::*;
use authaudit_tests::recording;
use authaudit_tests::Cluster;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn rows_from_before_the_slot_and_from_many_sessions_arrive_exactly_once() {
    exactly_once("mirror_basic", &Store::new("basic"), 600);
}

#[test]
fn rows_arrive_exactly_once_in_secantusdb_too() {
    exactly_once("mirror_basic_sct", &Store::secantus("basic"), 300);
}

fn exactly_once(hint: &str, store: &Store, events: u32) {
    let db = Cluster::shared().fresh_db_with_lockout(hint);
    // Committed before the slot exists: must come through the initial copy.
    record_some(&db, 900, 40);
    // Accounts whose UTF-8 byte order is not their UTF-16 order (a private
    // use character sorts after an emoji's surrogates in UTF-16, before it
    // in UTF-8): verify walks both stores in the same bytewise order.
    let mut c = db.connect();
    for (i, user) in ["\u{E000}x", "\u{1F600}x", "zo\u{EB}", "Zoe", "\u{C4}rger"]
        .iter()
        .enumerate()
    {
        record(
            &mut c,
            &Event::failed("tenant-0", user).log_id(&log_id(901, i as u32)),
        );
    }
    db.connect()
        .execute("SELECT authaudit.checkpoint('tenant-0')", &[])
        .unwrap();
    let mut m = Mirror::new(&db, store);
    m.start();
    let stop = Arc::new(AtomicBool::new(false));
    let (count, handles) = writers(&db, 6, stop.clone(), 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while count.load(Ordering::Relaxed) < events {
        assert!(Instant::now() < deadline, "writers too slow");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    handles.into_iter().for_each(|h| h.join().unwrap());
    let text = m.wait_identical(Duration::from_secs(60));
    assert!(text.contains("identical"), "{text}");
    assert_eq!(store.count("auth_log"), log_rows(&db));
    assert_eq!(store.count("checkpoints"), 1);
    assert!(m.metric("authaudit_sidecar_rows_copied_total") >= 40.0);
    assert_eq!(m.metric("authaudit_sidecar_chain_gaps_total"), 0.0);
    // SIGTERM drains and exits cleanly.
    assert!(m.terminate().success());
}

/// A rebuild can move a state row back to an earlier event's state: the
/// mirror must still take it (its versions follow last_seq). Four live
/// failures, then one of two minutes before them imported: in event time
/// that is five in the window, and the rebuild locks the account.
#[test]
fn a_lockout_rebuild_reaches_the_mirror() {
    let db = Cluster::shared().fresh_db_with_lockout("mirror_rebuild");
    let store = Store::new("rebuild");
    let mut m = Mirror::new(&db, &store);
    m.start();
    let mut c = db.connect();
    for i in 0..4 {
        record(
            &mut c,
            &Event::failed("tenant-0", "victim").log_id(&log_id(70, i)),
        );
    }
    m.wait_identical(Duration::from_secs(60));
    c.execute(
        "SELECT count(*) FROM authaudit.import_events(jsonb_build_array(jsonb_build_object( \
           'log_id', $1::text, 'tenant_id', 'tenant-0', 'event_type', 'login_failed', 'user_id', 'victim', \
           'channel', 'ssh', 'occurred_at', now() - interval '2 minutes')))",
        &[&log_id(70, 9)],
    )
    .unwrap();
    let locked: bool = c
        .query_one(
            "SELECT locked FROM authaudit.lockout_state WHERE user_id = 'victim'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(locked, "the rebuild locks in event-time order");
    let text = m.wait_identical(Duration::from_secs(60));
    assert!(text.contains("identical"), "{text}");
    assert!(m.terminate().success());
}

/// A log id is unique within its tenant, and so is the mirror's key
/// (`tenant_id/log_id`): the same ids recorded into two tenants are two
/// documents each. A mirror written before 0.6.0 (`_id` = `log_id`) is
/// left as it is by a start, which warns about it; `migrate` moves it to
/// the current key, a chunk a crash left staged included, and it ends
/// identical to PostgreSQL.
#[test]
fn one_log_id_in_two_tenants_and_a_mirror_of_the_first_format_are_mirrored_exactly() {
    rekeyed("mirror_rekey", &Store::new("rekey"));
}

#[test]
fn a_mirror_of_the_first_format_is_rekeyed_in_secantusdb_too() {
    rekeyed("mirror_rekey_sct", &Store::secantus("rekey"));
}

fn rekeyed(hint: &str, store: &Store) {
    let db = Cluster::shared().fresh_db_with_lockout(hint);
    let mut c = db.connect();
    for tenant in ["tenant-0", "tenant-1"] {
        for i in 0..30 {
            let e = Event::failed(tenant, &format!("user{}", i % 4))
                .log_id(&log_id(60, i))
                .channel("ssh");
            record(&mut c, &e);
        }
    }
    let mut m = Mirror::new(&db, store);
    m.start();
    m.wait_identical(Duration::from_secs(60));
    assert!(m.terminate().success());
    assert_eq!(store.count("auth_log"), log_rows(&db));

    // tenant-0's documents as a mirror of the first format held them; the
    // first of them also staged, as a crash in the middle of a move leaves it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = mongodb::Client::with_uri_str(&store.uri).await.unwrap();
        let mdb = client.database(&store.database);
        let log = mdb.collection::<bson::Document>("auth_log");
        let mut cursor = log
            .find(bson::doc! {"tenant_id": "tenant-0"})
            .sort(bson::doc! {"seq": 1})
            .await
            .unwrap();
        let mut current = Vec::new();
        while cursor.advance().await.unwrap() {
            current.push(cursor.deserialize_current().unwrap());
        }
        assert!(current.len() >= 30);
        for d in &current {
            let mut old = bson::Document::new();
            old.insert("_id", d.get_str("log_id").unwrap());
            for (k, v) in d {
                if k != "_id" && k != "log_id" {
                    old.insert(k.clone(), v.clone());
                }
            }
            log.delete_one(bson::doc! {"_id": d.get_str("_id").unwrap()})
                .await
                .unwrap();
            log.insert_one(old).await.unwrap();
        }
        mdb.collection::<bson::Document>("_authaudit_rekey")
            .insert_one(current[0].clone())
            .await
            .unwrap();
    });
    let (code, text) = m.verify();
    assert_eq!(code, 1, "the first format differs from the current: {text}");

    // A start moves nothing; it names the command that does.
    m.start();
    m.wait_streaming();
    assert!(m.terminate().success());
    assert!(m.log().contains("authaudit-sidecar migrate"), "{}", m.log());
    let (code, text) = m.verify();
    assert_eq!(code, 1, "a start alone leaves the first format: {text}");
    assert_eq!(store.count("_authaudit_rekey"), 1);

    let out = m.command().arg("migrate").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("log documents moved to the tenant_id/log_id key"),
        "{text}"
    );
    assert_eq!(store.count("_authaudit_rekey"), 0);
    let text = m.wait_identical(Duration::from_secs(60));
    assert!(text.contains("identical"), "{text}");
    let out = m.command().arg("migrate").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "migrate: 0 log documents moved to the tenant_id/log_id key"
    );

    m.start();
    // The ids again, in a third tenant, while the mirror streams.
    for i in 0..5 {
        let e = Event::success("tenant-2", "user0")
            .log_id(&log_id(60, i))
            .channel("vpn");
        record(&mut c, &e);
    }
    m.wait_identical(Duration::from_secs(60));
    assert_eq!(store.count("auth_log"), log_rows(&db));
    assert_eq!(m.metric("authaudit_sidecar_chain_gaps_total"), 0.0);
    assert!(m.terminate().success());
}

/// The insider around the triggers (a superuser in replica mode): an
/// UPDATE, a DELETE of a log row and of a checkpoint, and a TRUNCATE
/// arrive as alarms naming tenant and seq, in the log, the counter, the
/// `tamper_events` collection and `/health`; the mirror keeps the
/// originals. The recorded retention path raises none.
#[test]
fn tampering_over_replication_raises_alarms_and_the_mirror_keeps_the_original() {
    let db = Cluster::shared().fresh_db_with_lockout("mirror_tamper");
    let store = Store::new("tamper");
    let p = db.name().to_string();
    let mut su = db.connect_dated();
    su.batch_execute(&format!(
        "CREATE ROLE {p}_dpo LOGIN IN ROLE authaudit_admin"
    ))
    .unwrap();
    record_some(&db, 80, 12);
    // tenant-1's history is older than the retention horizon.
    su.execute(
        "SELECT count(*) FROM authaudit.import_events((SELECT jsonb_agg(jsonb_build_object( \
           'log_id', gen_random_uuid(), 'tenant_id', 'tenant-1', 'event_type', 'login_failed', \
           'user_id', 'old' || g, 'channel', 'web', 'occurred_at', now() - interval '400 days' + g * interval '1 minute')) \
           FROM generate_series(1, 6) g), rebuild => false)",
        &[],
    )
    .unwrap();
    su.batch_execute(
        "SELECT authaudit.checkpoint('tenant-0'); SELECT authaudit.checkpoint('tenant-1');",
    )
    .unwrap();
    let head: i64 = su
        .query_one(
            "SELECT max(seq) FROM authaudit.checkpoints WHERE tenant_id = 'tenant-0'",
            &[],
        )
        .unwrap()
        .get(0);
    let mut m = Mirror::new(&db, &store);
    m.start();
    m.wait_identical(Duration::from_secs(60));
    let health = |m: &Mirror| m.get("/health");
    let wait_for = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ok() {
            assert!(Instant::now() < deadline, "{what}: not within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for("healthy", &|| health(&m).starts_with("HTTP/1.1 200"));

    // Retention, the recorded path: no alarm.
    let removed: i64 = db
        .connect_as(&format!("{p}_dpo"))
        .query_one(
            "SELECT removed_rows FROM authaudit.apply_retention('tenant-1', now() - interval '1 year')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(removed, 6);
    m.wait_identical(Duration::from_secs(60));
    assert_eq!(m.metric("authaudit_sidecar_tamper_events_total"), 0.0);

    // The insider.
    su.batch_execute(
        "SET session_replication_role = replica;
         UPDATE authaudit.auth_log SET user_agent = 'forged' WHERE tenant_id = 'tenant-0' AND seq = 5;
         DELETE FROM authaudit.auth_log WHERE tenant_id = 'tenant-0' AND seq = 7;
         DELETE FROM authaudit.checkpoints WHERE tenant_id = 'tenant-0';",
    )
    .unwrap();
    wait_for("three alarms", &|| {
        m.metric("authaudit_sidecar_tamper_events_total") == 3.0
    });
    wait_for("degraded", &|| health(&m).contains("503"));
    assert!(health(&m).contains("degraded: 3 unresolved tamper alarm"));
    let log = std::fs::read_to_string(
        std::env::temp_dir().join(format!("authaudit-sidecar-{}.log", m.slot)),
    )
    .unwrap();
    assert!(log.contains("tamper:") && log.contains("seq=7"), "{log}");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mdb = || async {
        mongodb::Client::with_uri_str(&store.uri)
            .await
            .unwrap()
            .database(&store.database)
    };
    let alarms = |rt: &tokio::runtime::Runtime| -> Vec<(String, String, Option<i64>)> {
        rt.block_on(async {
            let db = mdb().await;
            let mut cursor = db
                .collection::<bson::Document>("tamper_events")
                .find(bson::doc! {})
                .sort(bson::doc! {"_id": 1})
                .await
                .unwrap();
            let mut out = Vec::new();
            while cursor.advance().await.unwrap() {
                let d = cursor.deserialize_current().unwrap();
                out.push((
                    d.get_str("kind").unwrap().to_owned(),
                    d.get_str("collection").unwrap().to_owned(),
                    d.get_i64("seq").ok(),
                ));
            }
            out
        })
    };
    wait_for("the alarms in the store", &|| alarms(&rt).len() == 3);
    assert_eq!(
        alarms(&rt),
        [
            ("update".to_string(), "auth_log".to_string(), Some(5)),
            ("delete".to_string(), "checkpoints".to_string(), Some(head)),
            ("delete".to_string(), "auth_log".to_string(), Some(7)),
        ]
    );
    // The mirror holds the originals: verify names the edited and the
    // missing row against it.
    let (code, text) = m.verify();
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("tenant tenant-0: the mirror differs first at seq 5 (user_agent)"),
        "{text}"
    );
    let original = rt.block_on(async {
        mdb()
            .await
            .collection::<bson::Document>("auth_log")
            .find_one(bson::doc! {"tenant_id": "tenant-0", "seq": 5_i64})
            .await
            .unwrap()
            .unwrap()
    });
    assert_eq!(original.get("user_agent"), Some(&bson::Bson::Null));
    assert_eq!(
        rt.block_on(async {
            mdb()
                .await
                .collection::<bson::Document>("auth_log")
                .count_documents(bson::doc! {"tenant_id": "tenant-0", "seq": 7_i64})
                .await
                .unwrap()
        }),
        1
    );

    // A TRUNCATE of the whole log: one more alarm, the mirror keeps all.
    let before = store.count("auth_log");
    su.batch_execute("TRUNCATE authaudit.auth_log").unwrap();
    wait_for("the truncate's alarm", &|| {
        m.metric("authaudit_sidecar_tamper_events_total") == 4.0
    });
    assert_eq!(store.count("auth_log"), before);
    wait_for("the truncate in the store", &|| alarms(&rt).len() == 4);
    assert_eq!(alarms(&rt)[3], ("truncate".into(), "auth_log".into(), None));

    // The operator resolves the alarms in the store: healthy again.
    rt.block_on(async {
        mdb()
            .await
            .collection::<bson::Document>("tamper_events")
            .update_many(
                bson::doc! {},
                bson::doc! {"$set": {"resolved": "incident 42: restored from the mirror"}},
            )
            .await
            .unwrap();
    });
    wait_for("healthy after resolution", &|| {
        health(&m).starts_with("HTTP/1.1 200")
    });
    assert!(m.terminate().success());
}

/// PostgreSQL already holds a note of the size the witness signs next,
/// signed by the witness's key over another tree (the key was used
/// elsewhere, or the witness equivocated): the write-back is refused
/// (`XX001`), and the sidecar keeps its own note in
/// `authaudit.witness_disagreements`, counts and logs it; the mirror goes
/// on.
#[test]
fn a_conflicting_signed_checkpoint_is_kept_as_a_disagreement() {
    let db = Cluster::shared().fresh_db("mirror_witness_conflict");
    let store = Store::new("witness_conflict");
    let dir =
        std::env::temp_dir().join(format!("authaudit-witness-conflict-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("witness.key");
    let out = Command::new(sidecar_bin())
        .args(["witness-keygen", "--out"])
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let public = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mut c = db.connect();
    c.batch_execute(&format!(
        "ALTER DATABASE {} SET authaudit.witness_keys = '{public}'",
        db.name()
    ))
    .unwrap();
    let mut c = db.connect();
    let record = |c: &mut postgres::Client, i: u32| {
        let e = Event::success("tenant-9", "bob")
            .log_id(&log_id(49, i))
            .channel("vpn");
        recording::record(c, &e);
    };
    for i in 0..5 {
        record(&mut c, i);
    }
    let mut m = Mirror::new(&db, &store);
    m.env = vec![
        (
            "AUTHAUDIT_WITNESS_KEY_FILE".into(),
            key_file.display().to_string(),
        ),
        (
            "AUTHAUDIT_WITNESS_LOG".into(),
            dir.join("witness.log").display().to_string(),
        ),
        ("AUTHAUDIT_WITNESS_EVERY".into(), "1".into()),
        ("AUTHAUDIT_WITNESS_INTERVAL_MS".into(), "200".into()),
    ];
    let written_back = |c: &mut postgres::Client| -> Option<i64> {
        c.query_one(
            "SELECT max(tree_size) FROM authaudit.witness_checkpoints WHERE tenant_id = 'tenant-9'",
            &[],
        )
        .unwrap()
        .get(0)
    };
    let wait_written_back = |c: &mut postgres::Client, size: i64| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while written_back(c) < Some(size) {
            assert!(
                Instant::now() < deadline,
                "no checkpoint of size {size} written back"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    m.start();
    m.wait_identical(Duration::from_secs(60));
    // The first streamed row starts the tree.
    record(&mut c, 5);
    wait_written_back(&mut c, 6);
    assert!(m.terminate().success());
    // While the sidecar is down, the key signs another tree of size 7.
    record(&mut c, 6);
    let row = c
        .query_one(
            "SELECT encode(link_sha256, 'hex'), encode(digest_sha512, 'hex'), encode(digest_sha3_256, 'hex') \
               FROM authaudit.auth_log WHERE tenant_id = 'tenant-9' AND seq = 7",
            &[],
        )
        .unwrap();
    let other = sidecar::note::Checkpoint {
        origin: "pg_authaudit/tenant-9".into(),
        tree_size: 7,
        root: [0x33; 32],
        link_sha256: row.get(0),
        digest_sha512: row.get(1),
        digest_sha3_256: row.get(2),
        time: authaudit_core::lockout_effect::iso_utc(1_767_225_605_000_000),
    };
    let signer = sidecar::witness::signer(&key_file).unwrap();
    c.execute(
        "SELECT authaudit.record_witness_checkpoint('tenant-9', $1)",
        &[&signer.sign(&other.text())],
    )
    .unwrap();
    m.start();
    let kept = |c: &mut postgres::Client| -> i64 {
        c.query_one(
            "SELECT count(*) FROM authaudit.witness_disagreements WHERE tenant_id = 'tenant-9'",
            &[],
        )
        .unwrap()
        .get(0)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while kept(&mut c) == 0 {
        assert!(Instant::now() < deadline, "no disagreement kept");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (size, stored): (i64, String) = {
        let r = c
            .query_one(
                "SELECT tree_size, stored_note FROM authaudit.witness_disagreements WHERE tenant_id = 'tenant-9'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(size, 7);
    assert_eq!(
        stored,
        signer.sign(&other.text()),
        "the note it conflicts with"
    );
    assert!(m.metric("authaudit_sidecar_witness_disagreements_total") >= 1.0);
    // The mirror goes on: a later checkpoint is written back.
    record(&mut c, 7);
    wait_written_back(&mut c, 8);
    assert!(m.terminate().success());
}

/// The witness signs checkpoints of what the mirror holds with a key
/// PostgreSQL never sees. The checkpoints verify with an independent
/// Ed25519 implementation (Python `cryptography`, through
/// tools/verify_evidence.py, which proves one event's inclusion offline),
/// and `witness-check` names the seq a superuser rewrote (every later
/// digest recomputed, the checkpoints table rewritten) and the rows they
/// truncated past a signed checkpoint.
#[test]
fn the_witness_signs_what_it_mirrored_and_names_the_insiders_rewrite() {
    let db = Cluster::shared().fresh_db_with_lockout("mirror_witness");
    let store = Store::new("witness");
    let dir = std::env::temp_dir().join(format!("authaudit-witness-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("witness.key");
    let log_file = dir.join("witness.log");
    let out = Command::new(sidecar_bin())
        .args(["witness-keygen", "--out"])
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(public.starts_with("authaudit-witness+"), "{public}");
    let mut c = db.connect();
    for i in 0..25 {
        let e = Event::failed("tenant-0", &format!("user{}", i % 4)).log_id(&log_id(40, i));
        record(&mut c, &e);
    }
    for i in 0..7 {
        let e = Event::success("tenant-1", "bob")
            .log_id(&log_id(41, i))
            .channel("vpn");
        record(&mut c, &e);
    }
    let head = |c: &mut postgres::Client, t: &str| -> i64 {
        c.query_one(
            "SELECT max(seq) FROM authaudit.auth_log WHERE tenant_id = $1",
            &[&t],
        )
        .unwrap()
        .get(0)
    };
    let (head0, head1) = (head(&mut c, "tenant-0"), head(&mut c, "tenant-1"));
    // PostgreSQL accepts the witness's checkpoints written back.
    c.batch_execute(&format!(
        "ALTER DATABASE {} SET authaudit.witness_keys = '{public}'",
        db.name()
    ))
    .unwrap();
    let mut m = Mirror::new(&db, &store);
    m.env = vec![
        (
            "AUTHAUDIT_WITNESS_KEY_FILE".into(),
            key_file.display().to_string(),
        ),
        (
            "AUTHAUDIT_WITNESS_LOG".into(),
            log_file.display().to_string(),
        ),
        ("AUTHAUDIT_WITNESS_EVERY".into(), "10".into()),
        ("AUTHAUDIT_WITNESS_INTERVAL_MS".into(), "300".into()),
    ];
    m.start();
    m.wait_identical(Duration::from_secs(60));
    // The rows came by the initial copy: the first streamed row starts the
    // trees. One more event each, then wait for checkpoints at the heads.
    for (t, n) in [("tenant-0", 90), ("tenant-1", 91)] {
        let e = Event::failed(t, "late")
            .log_id(&log_id(n, 0))
            .channel("api");
        record(&mut c, &e);
    }
    let (head0, head1) = (head0 + 1, head1 + 1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let signed_size = |t: &str| -> i64 {
        rt.block_on(async {
            let client = mongodb::Client::with_uri_str(&store.uri).await.unwrap();
            client
                .database(&store.database)
                .collection::<bson::Document>("witness_checkpoints")
                .find_one(bson::doc! {"tenant_id": t})
                .sort(bson::doc! {"tree_size": -1})
                .await
                .unwrap()
                .map_or(0, |d| d.get_i64("tree_size").unwrap())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while signed_size("tenant-0") < head0 || signed_size("tenant-1") < head1 {
        assert!(Instant::now() < deadline, "no checkpoints at the heads");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Each is written back to PostgreSQL, where it agrees with the rows.
    let written_back = |c: &mut postgres::Client| -> Vec<(String, i64, Option<bool>)> {
        c.query(
            "SELECT DISTINCT ON (tenant_id) tenant_id, tree_size, agrees FROM authaudit.witness_checkpoints \
             ORDER BY tenant_id, tree_size DESC",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
    };
    let want = vec![
        ("tenant-0".to_string(), head0, Some(true)),
        ("tenant-1".to_string(), head1, Some(true)),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    while written_back(&mut c) != want {
        assert!(
            Instant::now() < deadline,
            "not written back: {:?}",
            written_back(&mut c)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Checkpoints PostgreSQL lacks (lost, or refused while no key was set)
    // are written back at the next start.
    assert!(m.terminate().success());
    c.batch_execute(
        "SET session_replication_role = replica;
         DELETE FROM authaudit.witness_checkpoints WHERE tenant_id = 'tenant-1';
         RESET session_replication_role;",
    )
    .unwrap();
    assert_eq!(written_back(&mut c).len(), 1);
    m.start();
    let deadline = Instant::now() + Duration::from_secs(60);
    while written_back(&mut c) != want {
        assert!(
            Instant::now() < deadline,
            "not caught up: {:?}",
            written_back(&mut c)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(m.terminate().success());
    // The witness log holds every checkpoint the store does.
    let notes = sidecar::witness::read_log(&log_file).unwrap();
    let verifier = sidecar::note::Verifier25519::parse(&public).unwrap();
    assert!(notes.len() >= 2);
    for (_, note) in &notes {
        verifier.open(note).unwrap();
    }
    let note0 = &notes.iter().rev().find(|(t, _)| t == "tenant-0").unwrap().1;
    let checkpoint = sidecar::note::Checkpoint::parse(verifier.open(note0).unwrap()).unwrap();
    assert_eq!(checkpoint.origin, "pg_authaudit/tenant-0");
    assert_eq!(checkpoint.tree_size as i64, head0);
    let root: Vec<u8> = c
        .query_one(
            "SELECT root_hash FROM authaudit.merkle_root('tenant-0', $1)",
            &[&head0],
        )
        .unwrap()
        .get(0);
    assert_eq!(root, checkpoint.root.to_vec());

    // One event proven offline against the signed checkpoint, with an
    // independent Ed25519 implementation.
    let note_path = dir.join("checkpoint.txt");
    std::fs::write(&note_path, note0).unwrap();
    let evidence_against = |bundle: &std::path::Path, note: &std::path::Path| {
        run_tool(
            "tools/verify_evidence.py",
            &[
                bundle.as_os_str(),
                "--checkpoint".as_ref(),
                note.as_os_str(),
                "--key".as_ref(),
                public.as_ref(),
            ],
        )
    };
    let offline = |seq: i64| -> (i32, String) {
        let bundle: String = db
            .connect()
            .query_one(
                "SELECT authaudit.inclusion_evidence('tenant-0', $1, $2)::text",
                &[&seq, &head0],
            )
            .unwrap()
            .get(0);
        let path = dir.join(format!("evidence-{seq}.json"));
        std::fs::write(&path, bundle).unwrap();
        evidence_against(&path, &note_path)
    };
    let (code, text) = offline(5);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("ok: seq 5 of tenant tenant-0")
            && text.contains("signed by authaudit-witness"),
        "{text}"
    );
    let forged_note = dir.join("forged.txt");
    std::fs::write(
        &forged_note,
        note0.replacen(&format!("\n{head0}\n"), &format!("\n{}\n", head0 + 1), 1),
    )
    .unwrap();
    let (code, text) = evidence_against(&dir.join("evidence-5.json"), &forged_note);
    assert_eq!(code, 1, "a forged checkpoint: {text}");
    // The independent chain verifier checks an export against the signed
    // checkpoints of both tenants.
    let note1 = &notes.iter().rev().find(|(t, _)| t == "tenant-1").unwrap().1;
    let note1_path = dir.join("checkpoint-1.txt");
    std::fs::write(&note1_path, note1).unwrap();
    let export_path = dir.join("auth_log.tsv");
    let chain_against_notes = |notes: &[&std::path::Path]| -> (i32, String) {
        std::fs::write(
            &export_path,
            db.psql(&[
                "-c",
                "COPY (SELECT * FROM authaudit.auth_log ORDER BY tenant_id, seq) TO STDOUT WITH (HEADER)",
            ]),
        )
        .unwrap();
        let mut args: Vec<&std::ffi::OsStr> = vec![export_path.as_os_str()];
        for n in notes {
            args.extend([std::ffi::OsStr::new("--checkpoint"), n.as_os_str()]);
        }
        args.extend([std::ffi::OsStr::new("--key"), std::ffi::OsStr::new(&public)]);
        run_tool("tools/verify_chain.py", &args)
    };
    let (code, text) = chain_against_notes(&[&note_path, &note1_path]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!(
            "checkpoint of tenant-0 at tree size {head0}: ok, root {} signed by authaudit-witness",
            hex::encode(&root)
        )),
        "{text}"
    );
    let (code, text) = chain_against_notes(&[&forged_note]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("not signed by that key"), "{text}");

    let witness_check = |m: &Mirror| -> (i32, String) {
        let out = m
            .command()
            .args(["witness-check", "--public-key", &public])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = witness_check(&m);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("2 tenants agree"), "{text}");

    // The insider: row 5 edited and every later digest recomputed, the
    // checkpoints table rewritten, tenant-1's last two rows removed.
    c.batch_execute(
        "SET session_replication_role = replica;
         UPDATE authaudit.auth_log SET user_id = 'innocent' WHERE tenant_id = 'tenant-0' AND seq = 5;
         DELETE FROM authaudit.checkpoints;
         RESET session_replication_role;",
    )
    .unwrap();
    recompute_chain(&mut c, "tenant-0");
    c.execute("SET session_replication_role = replica", &[])
        .unwrap();
    c.execute(
        "DELETE FROM authaudit.auth_log WHERE tenant_id = 'tenant-1' AND seq > $1",
        &[&(head1 - 2)],
    )
    .unwrap();
    c.execute("RESET session_replication_role", &[]).unwrap();
    let (code, text) = witness_check(&m);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("WITNESS: tenant tenant-0: seq 5 was rewritten"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "WITNESS: tenant tenant-1: rows {} to {head1} are missing from PostgreSQL",
            head1 - 1
        )),
        "{text}"
    );
    // The rewritten row's evidence no longer verifies offline against the
    // signed checkpoint.
    let (code, text) = offline(5);
    assert_eq!(code, 1, "{text}");
    // The recomputed chain verifies on its own; against the signed
    // checkpoints it does not: tenant-0's rows give another root (and head),
    // tenant-1's export ends before the signed size.
    let (code, text) = chain_against_notes(&[&note_path, &note1_path]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("tenant-0: ok"), "{text}");
    assert!(
        text.contains(&format!(
            "checkpoint of tenant-0 at tree size {head0}: FAILED"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "checkpoint of tenant-1 at tree size {head1}: FAILED at seq {}: the witness signed {head1} rows, the export ends at seq {}",
            head1 - 1,
            head1 - 2
        )),
        "{text}"
    );
}

#[test]
fn twenty_sigkills_lose_nothing_and_double_nothing() {
    sigkills("mirror_sigkill", &Store::new("sigkill"), 20, true);
}

/// The replays after every restart are told from conflicts by looking the
/// document up: SecantusDB names the (tenant_id, seq) index first in its
/// duplicate-key errors, and no replay may raise a chain alarm.
#[test]
fn sigkills_raise_no_false_alarm_in_secantusdb() {
    sigkills("mirror_sigkill_sct", &Store::secantus("sigkill"), 10, false);
}

/// SIGKILLs of a mirror; with `witness`, one that signs checkpoints every
/// few rows, killed in the middle of them: no half-written checkpoint in
/// the store or the log, and the next start continues the trees.
fn sigkills(hint: &str, store: &Store, kills: u32, witness: bool) {
    let db = Cluster::shared().fresh_db_with_lockout(hint);
    let mut m = Mirror::new(&db, store);
    let dir = std::env::temp_dir().join(format!("authaudit-{hint}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (key_file, log_file) = (dir.join("witness.key"), dir.join("witness.log"));
    if witness {
        let out = Command::new(sidecar_bin())
            .args(["witness-keygen", "--out"])
            .arg(&key_file)
            .output()
            .unwrap();
        assert!(out.status.success());
        m.env = vec![
            (
                "AUTHAUDIT_WITNESS_KEY_FILE".into(),
                key_file.display().to_string(),
            ),
            (
                "AUTHAUDIT_WITNESS_LOG".into(),
                log_file.display().to_string(),
            ),
            ("AUTHAUDIT_WITNESS_EVERY".into(), "7".into()),
            ("AUTHAUDIT_WITNESS_INTERVAL_MS".into(), "100".into()),
        ];
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (count, handles) = writers(&db, 4, stop.clone(), 2);
    // Pseudo-random kill points, reproducible.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..kills {
        m.start();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::thread::sleep(Duration::from_millis(150 + x % 600));
        m.kill();
    }
    stop.store(true, Ordering::Relaxed);
    handles.into_iter().for_each(|h| h.join().unwrap());
    assert!(count.load(Ordering::Relaxed) > 50);
    m.start();
    m.wait_identical(Duration::from_secs(90));
    assert_eq!(store.count("auth_log"), log_rows(&db));
    // The last run replayed what the killed ones had written: no alarm.
    assert_eq!(m.metric("authaudit_sidecar_chain_gaps_total"), 0.0);
    if !witness {
        return;
    }
    // Checkpoints reach every tenant's head; each one in the store and
    // each whole line of the log verifies, sizes only grow per tenant.
    let verifier = sidecar::witness::signer(&key_file).unwrap().verifier();
    let heads: Vec<(String, i64)> = db
        .connect()
        .query(
            "SELECT tenant_id, max(seq) FROM authaudit.auth_log GROUP BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let stored = || store.documents("witness_checkpoints", bson::doc! {});
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let docs = stored();
        let at_heads = heads.iter().all(|(t, h)| {
            docs.iter().any(|d| {
                d.get_str("tenant_id").unwrap() == t && d.get_i64("tree_size").unwrap() == *h
            })
        });
        if at_heads {
            break;
        }
        assert!(Instant::now() < deadline, "no checkpoints at the heads");
        std::thread::sleep(Duration::from_millis(100));
    }
    for d in stored() {
        let text = verifier.open(d.get_str("note").unwrap()).unwrap();
        let c = sidecar::note::Checkpoint::parse(text).unwrap();
        assert_eq!(c.tree_size as i64, d.get_i64("tree_size").unwrap());
    }
    let lines = sidecar::witness::read_log(&log_file).unwrap();
    assert!(!lines.is_empty());
    let mut last: std::collections::HashMap<String, u64> = Default::default();
    for (t, note) in &lines {
        let c = sidecar::note::Checkpoint::parse(verifier.open(note).unwrap()).unwrap();
        let prev = last.insert(t.clone(), c.tree_size).unwrap_or(0);
        assert!(c.tree_size >= prev, "{t}: {} after {prev}", c.tree_size);
    }
    assert!(m.terminate().success());
    let out = m
        .command()
        .args(["witness-check", "--public-key", &verifier.text()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("{} tenants agree", heads.len())),
        "{text}"
    );
}

#[test]
fn a_postgresql_restart_mid_stream_is_survived() {
    let cluster = Cluster::dedicated("mirror_pg_restart");
    let db = cluster.fresh_db_with_lockout("mirror_restart");
    let store = Store::new("restart");
    let mut m = Mirror::new(&db, &store);
    m.start();
    let stop = Arc::new(AtomicBool::new(false));
    let (count, handles) = writers(&db, 3, stop.clone(), 3);
    while count.load(Ordering::Relaxed) < 200 {
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster.restart();
    let before = count.load(Ordering::Relaxed);
    while count.load(Ordering::Relaxed) < before + 200 {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    handles.into_iter().for_each(|h| h.join().unwrap());
    m.wait_identical(Duration::from_secs(90));
    assert_eq!(store.count("auth_log"), log_rows(&db));
    assert!(m.metric("authaudit_sidecar_errors_total{source=\"postgres\"}") >= 1.0);
}

#[test]
fn a_failing_and_stalling_store_is_waited_out_with_bounded_memory() {
    let Some(_) = Store::new("probe").server else {
        eprintln!("fault injection needs the wire server; skipped with AUTHAUDIT_MONGODB_URI");
        return;
    };
    let db = Cluster::shared().fresh_db_with_lockout("mirror_faults");
    let store = Store::new("faults");
    let faults = store.server.as_ref().unwrap().faults.clone();
    let mut m = Mirror::new(&db, &store);
    m.start();
    let stop = Arc::new(AtomicBool::new(false));
    let (count, handles) = writers(&db, 4, stop.clone(), 4);
    while count.load(Ordering::Relaxed) < 100 {
        std::thread::sleep(Duration::from_millis(20));
    }
    faults.fail_next_writes(6, 91);
    std::thread::sleep(Duration::from_millis(500));
    faults.drop_connection_mid_batch(3);
    std::thread::sleep(Duration::from_millis(500));
    faults.write_concern_error_next(2);
    std::thread::sleep(Duration::from_millis(500));
    // Stalled for 3 s while writers keep recording.
    faults.stall_for(Duration::from_secs(3));
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    handles.into_iter().for_each(|h| h.join().unwrap());
    m.wait_identical(Duration::from_secs(90));
    assert_eq!(store.count("auth_log"), log_rows(&db));
    assert!(
        m.metric("authaudit_sidecar_errors_total{source=\"mongodb\"}") >= 3.0,
        "{}",
        m.metrics()
    );
    // Peak resident memory of the sidecar stayed bounded.
    let status = std::fs::read_to_string(format!("/proc/{}/status", m.pid())).unwrap();
    let hwm_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap();
    assert!(hwm_kib < 200 * 1024, "peak RSS {hwm_kib} KiB");
}

/// `verify` compares every mirrored field, not only the digests: a field
/// changed in the store (outside the chain's digests, or a lockout time) is
/// named with its row.
#[test]
fn verify_names_any_mirrored_field_that_differs() {
    let db = Cluster::shared().fresh_db_with_lockout("mirror_fields");
    let store = Store::new("fields");
    record_some(&db, 910, 12);
    let mut m = Mirror::new(&db, &store);
    m.start();
    m.wait_identical(Duration::from_secs(60));
    assert!(m.terminate().success());
    let edit = |collection: &str, filter: bson::Document, set: bson::Document| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let c = mongodb::Client::with_uri_str(&store.uri).await.unwrap();
            let r = c
                .database(&store.database)
                .collection::<bson::Document>(collection)
                .update_one(filter, bson::doc! {"$set": set})
                .await
                .unwrap();
            assert_eq!(r.modified_count, 1);
        })
    };
    edit(
        "auth_log",
        bson::doc! {"tenant_id": "tenant-0", "seq": 5_i64},
        bson::doc! {"user_agent": "forged"},
    );
    edit(
        "lockout_state",
        bson::doc! {"_id": "tenant-0/early1"},
        bson::doc! {"last_failure_ip": "203.0.113.66"},
    );
    let (code, text) = m.verify();
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("differs first at seq 5 (user_agent)"),
        "{text}"
    );
    assert!(
        text.contains("lockout state tenant-0/early1: differs in last_failure_ip"),
        "{text}"
    );
}

#[test]
fn an_idle_publication_does_not_hold_wal() {
    let db = Cluster::shared().fresh_db_with_lockout("mirror_idle");
    let store = Store::new("idle");
    let mut m = Mirror::new(&db, &store);
    record_some(&db, 950, 5);
    m.start();
    m.wait_identical(Duration::from_secs(60));
    // WAL from other tables only: the slot must still move past it.
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE unrelated (x int); INSERT INTO unrelated SELECT generate_series(1, 20000)",
    )
    .unwrap();
    let target: String = c
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .unwrap()
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !m.flushed_to(&target) {
        assert!(
            Instant::now() < deadline,
            "the slot did not advance over unrelated WAL"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_postgresql_connection_can_insist_on_a_verified_certificate() {
    let db = Cluster::shared().fresh_db_with_lockout("mirror_tls");
    let store = Store::new("tls");
    let tls = db.cluster().dir().join("tls");
    let ca = tls.join("ca.crt").to_string_lossy().to_string();
    let other_ca = tls.join("other-ca.crt").to_string_lossy().to_string();
    let mut m = Mirror::new(&db, &store);
    // The server's certificate names "localhost" and is signed by ca.crt.
    m.env = [
        ("PGHOST", "localhost"),
        ("PGSSLMODE", "verify-full"),
        ("PGSSLROOTCERT", ca.as_str()),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec();
    record_some(&db, 950, 10);
    m.start();
    record_some(&db, 951, 10);
    let text = m.wait_identical(Duration::from_secs(60));
    assert!(text.contains("identical"), "{text}");
    assert_eq!(store.count("auth_log"), log_rows(&db));
    // Both of the running sidecar's connections (control and replication
    // stream) are encrypted.
    let row = db
        .connect()
        .query_one(
            "SELECT count(*), coalesce(bool_and(s.ssl), false) FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = 'authaudit-sidecar'",
            &[],
        )
        .unwrap();
    let (n, all_ssl): (i64, bool) = (row.get(0), row.get(1));
    assert!(n >= 2 && all_ssl, "{n} connections, all TLS: {all_ssl}");
    // The certificate does not name 127.0.0.1: verify-full refuses it,
    // verify-ca (chain only) accepts it.
    let by_ip = [("PGHOST", "127.0.0.1"), ("PGSSLMODE", "verify-full")];
    let (code, out) = m.verify_with(&by_ip);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("certificate"), "{out}");
    let (code, out) = m.verify_with(&[("PGHOST", "127.0.0.1"), ("PGSSLMODE", "verify-ca")]);
    assert_eq!(code, 0, "{out}");
    // A certificate from an authority the sidecar does not trust.
    let (code, out) = m.verify_with(&[("PGSSLROOTCERT", other_ca.as_str())]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("certificate"), "{out}");
    // Verification without a root certificate is a configuration error.
    let out = m
        .command()
        .env_remove("PGSSLROOTCERT")
        .arg("verify")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pg_sslrootcert"));
    assert!(m.terminate().success());
}
