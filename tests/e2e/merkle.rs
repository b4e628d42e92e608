//! The tenant's Merkle tree (docs/chain-format.md, "Merkle tree"): roots
//! and proofs from the extension checked with the core's RFC 9162
//! verification, one event's evidence checked offline by
//! tools/verify_evidence.py, and who may ask.

use crate::support::{db, log_id, record, run_tool, sqlstate, Event};
use authaudit_core::merkle::{self, Hash};
use postgres::error::SqlState;
use postgres::Client;

fn h(b: &[u8]) -> Hash {
    b.try_into().expect("32 bytes")
}

fn root(c: &mut Client, tenant: &str, size: i64) -> Hash {
    let r: Vec<u8> = c
        .query_one(
            "SELECT root_hash FROM authaudit.merkle_root($1, $2)",
            &[&tenant, &size],
        )
        .unwrap()
        .get(0);
    h(&r)
}

/// Runs the offline verifier on `bundle`: (exit code, output).
fn offline(bundle: &str, extra: &[&str]) -> (i32, String) {
    let dir = std::env::temp_dir().join(format!("authaudit-evidence-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{:x}.json", bundle.len() ^ extra.len() << 20));
    std::fs::write(&path, bundle).unwrap();
    let mut args = vec![path.as_os_str()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    run_tool("tools/verify_evidence.py", &args)
}

#[test]
fn roots_and_proofs_are_rfc_9162_and_one_event_verifies_offline() {
    let db = db("merkle");
    let mut c = db.connect_dated();
    // Unusual content: a multi-byte user, IPv6, nested metadata, an offset.
    for n in 1..=37u32 {
        let kind = if n % 7 == 0 {
            "login_success"
        } else {
            "login_failed"
        };
        let e = Event::new("agency", kind, &format!("zoë-{}", n % 5))
            .log_id(&log_id(1, n))
            .channel("ssh")
            .ip(&format!("2001:db8::{n}"))
            .ago("1 minute")
            .metadata(serde_json::json!({"n": n, "deep": {"q": "\"x\ny\""}}));
        record(&mut c, &e);
    }
    record(&mut c, &Event::failed("other", "x"));
    let head: i64 = c
        .query_one(
            "SELECT max(seq) FROM authaudit.auth_log WHERE tenant_id = 'agency'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(head >= 37);
    let leaves: Vec<Hash> = c
        .query(
            "SELECT link_sha256 FROM authaudit.auth_log WHERE tenant_id = 'agency' ORDER BY seq",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| merkle::leaf_hash(&r.get::<_, Vec<u8>>(0)))
        .collect();
    // Roots: the current one and every earlier size.
    let current: (i64, Vec<u8>) = c
        .query_one(
            "SELECT tree_size, root_hash FROM authaudit.merkle_root('agency')",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(current, (head, merkle::root(&leaves).to_vec()));
    for size in 1..=head {
        assert_eq!(
            root(&mut c, "agency", size),
            merkle::root(&leaves[..size as usize])
        );
    }
    // Every inclusion proof in three tree sizes; consistency between sizes.
    for size in [head / 2, head - 1, head] {
        let r = root(&mut c, "agency", size);
        for seq in 1..=size {
            let row = c
                .query_one(
                    "SELECT leaf_index, leaf_hash, root_hash, path FROM authaudit.inclusion_proof('agency', $1, $2)",
                    &[&seq, &size],
                )
                .unwrap();
            let path: Vec<Hash> = row.get::<_, Vec<Vec<u8>>>(3).iter().map(|p| h(p)).collect();
            assert_eq!(row.get::<_, i64>(0), seq - 1);
            assert_eq!(h(&row.get::<_, Vec<u8>>(2)), r);
            merkle::verify_inclusion(
                (seq - 1) as u64,
                size as u64,
                &h(&row.get::<_, Vec<u8>>(1)),
                &path,
                &r,
            )
            .unwrap();
        }
        for old in 1..=size {
            let row = c
                .query_one(
                    "SELECT old_root, new_root, proof FROM authaudit.consistency_proof('agency', $1, $2)",
                    &[&old, &size],
                )
                .unwrap();
            let proof: Vec<Hash> = row.get::<_, Vec<Vec<u8>>>(2).iter().map(|p| h(p)).collect();
            assert_eq!(h(&row.get::<_, Vec<u8>>(0)), root(&mut c, "agency", old));
            merkle::verify_consistency(
                old as u64,
                size as u64,
                &h(&row.get::<_, Vec<u8>>(0)),
                &r,
                &proof,
            )
            .unwrap();
        }
    }

    // One event's evidence, checked offline against a root held apart.
    let trusted = hex::encode(root(&mut c, "agency", head));
    let evidence = |c: &mut Client, seq: i64| -> String {
        c.query_one(
            "SELECT authaudit.inclusion_evidence('agency', $1, $2)::text",
            &[&seq, &head],
        )
        .unwrap()
        .get(0)
    };
    let bundle = evidence(&mut c, 12);
    let (code, text) = offline(&bundle, &["--root", &trusted]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("ok: seq 12 of tenant agency is leaf 11"),
        "{text}"
    );
    // A changed field, a wrong root, a path cut short: each refused.
    let changed = bundle.replace("\"user_id\": \"zoë-2\"", "\"user_id\": \"zoë-3\"");
    assert_ne!(changed, bundle);
    assert_eq!(offline(&changed, &["--root", &trusted]).0, 1);
    let other_root = hex::encode(root(&mut c, "agency", head - 1));
    assert_eq!(offline(&bundle, &["--root", &other_root]).0, 1);
    let mut cut: serde_json::Value = serde_json::from_str(&bundle).unwrap();
    cut["path"].as_array_mut().unwrap().pop();
    assert_eq!(offline(&cut.to_string(), &["--root", &trusted]).0, 1);

    // The insider edits a row in place (triggers off): that row's evidence
    // no longer verifies offline, the others still do.
    c.batch_execute(
        "SET session_replication_role = replica;
         UPDATE authaudit.auth_log SET user_id = 'someone-else' WHERE tenant_id = 'agency' AND seq = 5;
         RESET session_replication_role;",
    )
    .unwrap();
    let (code, text) = offline(&evidence(&mut c, 5), &["--root", &trusted]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("link_sha256 is not the hash"), "{text}");
    assert_eq!(offline(&evidence(&mut c, 12), &["--root", &trusted]).0, 0);

    // Sizes outside the log are refused.
    for (sql, state) in [
        (
            "SELECT * FROM authaudit.merkle_root('agency', 0)",
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            "SELECT * FROM authaudit.merkle_root('agency', 100000)",
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            "SELECT * FROM authaudit.inclusion_proof('agency', 40, 20)",
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            "SELECT * FROM authaudit.consistency_proof('agency', 30, 20)",
            SqlState::INVALID_PARAMETER_VALUE,
        ),
    ] {
        let err = c.query(sql, &[]).unwrap_err();
        assert_eq!(sqlstate(&err), Some(state), "{sql}: {err}");
    }
    // An old size past the new one is named as such, with the new size.
    let err = c
        .query(
            "SELECT * FROM authaudit.consistency_proof('agency', 30, 20)",
            &[],
        )
        .unwrap_err();
    let msg = err.as_db_error().unwrap().message().to_owned();
    assert!(
        msg.contains("old_size 30 of tenant agency is not a tree before new_size 20 (1 to 20)"),
        "{msg}"
    );
}

#[test]
fn proofs_are_for_those_who_may_verify_the_whole_tenant() {
    let db = db("merkle_scope");
    let mut su = db.connect();
    let p = db.name().to_string();
    record(&mut su, &Event::failed("agency", "a").org("hq"));
    record(&mut su, &Event::failed("agency", "b").org("branch"));
    su.batch_execute(&format!(
        "CREATE ROLE {p}_w LOGIN IN ROLE authaudit_writer;
         CREATE ROLE {p}_org LOGIN IN ROLE authaudit_reader;
         CREATE ROLE {p}_all LOGIN IN ROLE authaudit_reader;
         CREATE ROLE {p}_other LOGIN IN ROLE authaudit_reader;
         INSERT INTO authaudit.tenant_scope (role_name, tenant_id, org_id, can_read, can_write) VALUES
           ('{p}_w', 'agency', NULL, false, true),
           ('{p}_org', 'agency', 'hq', true, false),
           ('{p}_all', 'agency', NULL, true, false),
           ('{p}_other', 'elsewhere', NULL, true, false);"
    ))
    .unwrap();
    let expected = root(&mut su, "agency", 2);
    let mut all = db.connect_as(&format!("{p}_all"));
    assert_eq!(root(&mut all, "agency", 2), expected);
    all.query_one("SELECT authaudit.inclusion_evidence('agency', 1, 2)", &[])
        .unwrap();
    for who in ["w", "org", "other"] {
        let mut c = db.connect_as(&format!("{p}_{who}"));
        for sql in [
            "SELECT * FROM authaudit.merkle_root('agency')",
            "SELECT * FROM authaudit.inclusion_proof('agency', 1, 2)",
            "SELECT * FROM authaudit.consistency_proof('agency', 1, 2)",
            "SELECT authaudit.inclusion_evidence('agency', 1, 2)",
        ] {
            let err = match c.query(sql, &[]) {
                Ok(rows) => panic!("{who}: {sql}: {rows:?}"),
                Err(e) => e,
            };
            assert_eq!(
                sqlstate(&err),
                Some(SqlState::INSUFFICIENT_PRIVILEGE),
                "{who}: {sql}: {err}"
            );
        }
    }
}
