//! The extension's publication carries what the mirror needs: pgoutput from
//! the real cluster, decoded by the sidecar's decoder, holds every chained
//! column of every committed log row, lockout state changes and checkpoints,
//! and nothing of rolled-back transactions.

use crate::support::{fail, log_id, record, Event};
use authaudit_tests::Cluster;
use sidecar::pgoutput::{Decoder, Lsn, Message};

/// Drops the replication slot even when an assertion fails (a database with
/// a logical slot cannot be dropped).
struct Slot<'a>(&'a mut postgres::Client, &'static str);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .execute("SELECT pg_drop_replication_slot($1)", &[&self.1]);
    }
}

/// Waits (up to 10 s) until the WAL written so far is flushed.
fn wait_flushed(c: &mut postgres::Client) {
    let target: String = c
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .unwrap()
        .get(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let done: bool = c
            .query_one(
                "SELECT pg_current_wal_flush_lsn() >= $1::text::pg_lsn",
                &[&target],
            )
            .unwrap()
            .get(0);
        if done {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "WAL not flushed in 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn pgoutput_of_the_publication_carries_every_committed_row() {
    let db = Cluster::shared().fresh_db_with_lockout("publication");
    let mut c = db.connect();
    // CREATE EXTENSION makes no publication (a dump would then hold it
    // twice); the sidecar ensures it, as here.
    let none: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_publication WHERE pubname = 'authaudit_mirror'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(none, 0);
    for _ in 0..2 {
        c.batch_execute("SELECT authaudit.ensure_mirror_publication()")
            .unwrap();
    }
    let tables: Vec<String> = c
        .query(
            "SELECT schemaname || '.' || tablename FROM pg_publication_tables \
             WHERE pubname = 'authaudit_mirror' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        tables,
        [
            "authaudit.auth_log",
            "authaudit.checkpoints",
            "authaudit.lockout_state"
        ]
    );
    let mut admin = db.connect();
    admin
        .execute(
            "SELECT pg_create_logical_replication_slot('publication_test', 'pgoutput')",
            &[],
        )
        .unwrap();
    let slot = Slot(&mut admin, "publication_test");

    for n in 1..=3 {
        fail(&mut c, &log_id(1, n), "acme", "alice");
    }
    // A rolled-back event never reaches the publication.
    let mut tx = c.transaction().unwrap();
    record(
        &mut tx,
        &Event::failed("acme", "bob").log_id(&log_id(1, 99)),
    );
    tx.rollback().unwrap();
    c.execute("SELECT authaudit.checkpoint('acme')", &[])
        .unwrap();
    // The test cluster commits asynchronously; decoding reads flushed WAL.
    wait_flushed(&mut c);

    let changes = slot
        .0
        .query(
            "SELECT lsn::text, data FROM pg_logical_slot_get_binary_changes('publication_test', \
             NULL, NULL, 'proto_version', '1', 'publication_names', 'authaudit_mirror')",
            &[],
        )
        .unwrap();
    let mut decoder = Decoder::new();
    let (mut logs, mut checkpoints, mut lockout_updates, mut commits) = (vec![], 0, 0, vec![]);
    for ch in &changes {
        let data: Vec<u8> = ch.get(1);
        match decoder.decode(&data).unwrap() {
            Message::Insert(row) if row.relation.name == "auth_log" => logs.push(row),
            Message::Insert(row) if row.relation.name == "checkpoints" => {
                assert_eq!(row.text("seq"), Some("3"));
                checkpoints += 1;
            }
            Message::Insert(row) | Message::Update { new: row, .. }
                if row.relation.name == "lockout_state" =>
            {
                lockout_updates += 1
            }
            Message::Commit { end_lsn, .. } => commits.push(end_lsn),
            _ => {}
        }
    }
    assert_eq!(checkpoints, 1);
    assert!(lockout_updates >= 3, "{lockout_updates}");
    assert!(commits.windows(2).all(|w| w[0] < w[1]));
    let last: String = changes.last().unwrap().get(0);
    assert!(last.parse::<Lsn>().is_ok());
    // Every chained column arrives as stored.
    let stored = c
        .query(
            "SELECT log_id::text, seq::text, user_id, encode(link_sha256, 'hex'), \
             encode(digest_sha512, 'hex'), encode(digest_sha3_256, 'hex'), metadata::text \
             FROM authaudit.auth_log ORDER BY seq",
            &[],
        )
        .unwrap();
    assert_eq!(logs.len(), stored.len());
    for (row, s) in logs.iter().zip(&stored) {
        assert_eq!(row.text("log_id"), Some(s.get::<_, &str>(0)));
        assert_eq!(row.text("seq"), Some(s.get::<_, &str>(1)));
        assert_eq!(row.text("user_id"), Some("alice"));
        for (col, i) in [
            ("link_sha256", 3),
            ("digest_sha512", 4),
            ("digest_sha3_256", 5),
        ] {
            let hex = row.text(col).unwrap().strip_prefix("\\x").unwrap();
            assert_eq!(hex, s.get::<_, &str>(i), "{col}");
        }
        let m1: serde_json::Value = serde_json::from_str(row.text("metadata").unwrap()).unwrap();
        let m2: serde_json::Value = serde_json::from_str(s.get::<_, &str>(6)).unwrap();
        assert_eq!(m1, m2);
    }
}
