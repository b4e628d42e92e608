//! The witness's signed checkpoints in PostgreSQL (docs/sidecar.md, "The
//! witness"): `record_witness_checkpoint` keeps only notes signed by a key
//! of `authaudit.witness_keys` whose origin names the tenant, says whether
//! PostgreSQL still holds what was signed, and is for auditors and admins;
//! `witnessed_evidence` hands a reader one event with the signed checkpoint
//! that covers it, which tools/verify_evidence.py checks with the key alone.
//! The notes are signed here with the sidecar's signer, as the witness does.

use crate::support::{db, fail, log_id, run_tool, sqlstate};
use authaudit_core::lockout_effect::iso_utc;
use authaudit_core::note::{Checkpoint, Signer25519};
use postgres::error::SqlState;
use postgres::Client;

/// A checkpoint of `tenant`'s first `size` rows as PostgreSQL holds them.
pub fn checkpoint(c: &mut Client, tenant: &str, size: i64) -> Checkpoint {
    let root: Vec<u8> = c
        .query_one(
            "SELECT root_hash FROM authaudit.merkle_root($1, $2)",
            &[&tenant, &size],
        )
        .unwrap()
        .get(0);
    let r = c
        .query_one(
            "SELECT encode(link_sha256, 'hex'), encode(digest_sha512, 'hex'), encode(digest_sha3_256, 'hex') \
             FROM authaudit.auth_log WHERE tenant_id = $1 AND seq = $2",
            &[&tenant, &size],
        )
        .unwrap();
    Checkpoint {
        origin: format!("pg_authaudit/{tenant}"),
        tree_size: size as u64,
        root: root.try_into().unwrap(),
        link_sha256: r.get(0),
        digest_sha512: r.get(1),
        digest_sha3_256: r.get(2),
        time: iso_utc(1_767_225_605_000_000),
    }
}

fn record(c: &mut Client, tenant: &str, note: &str) -> Result<Option<bool>, postgres::Error> {
    c.query_one(
        "SELECT agrees FROM authaudit.record_witness_checkpoint($1, $2)",
        &[&tenant, &note],
    )
    .map(|r| r.get(0))
}

fn stored(c: &mut Client) -> i64 {
    c.query_one("SELECT count(*) FROM authaudit.witness_checkpoints", &[])
        .unwrap()
        .get(0)
}

#[test]
fn only_notes_signed_by_a_configured_key_are_kept_and_each_says_whether_postgresql_agrees() {
    let db = db("witness_write_back");
    let mut su = db.connect();
    for n in 1..=6 {
        fail(&mut su, &log_id(1, n), "agency", &format!("user{n}"));
        fail(&mut su, &log_id(2, n), "other", "bob");
    }
    let witness = Signer25519::from_seed("authaudit-witness", [7; 32]).unwrap();
    let stranger = Signer25519::from_seed("authaudit-witness", [8; 32]).unwrap();
    let note = witness.sign(&checkpoint(&mut su, "agency", 6).text());

    // No key configured: refused, nothing stored.
    let err = record(&mut su, "agency", &note).unwrap_err();
    assert_eq!(
        sqlstate(&err),
        Some(SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE),
        "{err}"
    );
    // A value that is not a key list is refused where it is set.
    let err = su
        .batch_execute("SET authaudit.witness_keys = 'not-a-key'")
        .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        Some(SqlState::INVALID_PARAMETER_VALUE),
        "{err}"
    );
    su.batch_execute(&format!(
        "ALTER DATABASE {} SET authaudit.witness_keys = '{}'",
        db.name(),
        witness.verifier().text()
    ))
    .unwrap();
    let mut su = db.connect();
    assert_eq!(record(&mut su, "agency", &note).unwrap(), Some(true));
    // Idempotent.
    assert_eq!(record(&mut su, "agency", &note).unwrap(), Some(true));
    assert_eq!(stored(&mut su), 1);

    // Refused, nothing stored: another key, an edited note, the wrong
    // tenant, garbage.
    let forged = stranger.sign(&checkpoint(&mut su, "agency", 5).text());
    let edited = note.replacen("\n6\n", "\n5\n", 1);
    let other_tenant = witness.sign(&checkpoint(&mut su, "other", 6).text());
    for (tenant, n) in [
        ("agency", forged.as_str()),
        ("agency", edited.as_str()),
        ("agency", other_tenant.as_str()),
        ("agency", "pg_authaudit/agency\n6\n"),
    ] {
        let err = record(&mut su, tenant, n).unwrap_err();
        assert_eq!(
            sqlstate(&err),
            Some(SqlState::INVALID_PARAMETER_VALUE),
            "{err}"
        );
    }
    assert_eq!(stored(&mut su), 1);

    // Only auditors and admins write; a writer or reader is refused.
    let p = db.name().to_string();
    su.batch_execute(&format!(
        "CREATE ROLE {p}_mirror LOGIN IN ROLE authaudit_auditor;
         CREATE ROLE {p}_app LOGIN IN ROLE authaudit_writer;
         CREATE ROLE {p}_analyst LOGIN IN ROLE authaudit_reader;
         CREATE ROLE {p}_elsewhere LOGIN IN ROLE authaudit_reader;
         INSERT INTO authaudit.tenant_scope (role_name, tenant_id, can_read, can_write) VALUES
           ('{p}_app', 'agency', false, true), ('{p}_analyst', 'agency', true, false),
           ('{p}_elsewhere', 'other', true, false);"
    ))
    .unwrap();
    let note5 = witness.sign(&checkpoint(&mut su, "agency", 5).text());
    for who in ["app", "analyst"] {
        let err = record(&mut db.connect_as(&format!("{p}_{who}")), "agency", &note5).unwrap_err();
        assert!(
            matches!(sqlstate(&err), Some(SqlState::INSUFFICIENT_PRIVILEGE)),
            "{who}: {err}"
        );
    }
    let mut mirror = db.connect_as(&format!("{p}_mirror"));
    assert_eq!(record(&mut mirror, "agency", &note5).unwrap(), Some(true));
    assert_eq!(
        record(&mut mirror, "other", &other_tenant).unwrap(),
        Some(true)
    );

    // A reader sees its tenant's checkpoints only, and gets one event's
    // evidence with the latest signed checkpoint that covers it, which
    // verifies offline with the witness's key and nothing else.
    let mut analyst = db.connect_as(&format!("{p}_analyst"));
    let seen: Vec<String> = analyst
        .query(
            "SELECT DISTINCT tenant_id FROM authaudit.witness_checkpoints",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seen, ["agency"]);
    let bundle: String = analyst
        .query_one(
            "SELECT authaudit.witnessed_evidence('agency', 3)::text",
            &[],
        )
        .unwrap()
        .get(0);
    let dir = std::env::temp_dir().join(format!("authaudit-witnessed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("evidence.json");
    std::fs::write(&path, &bundle).unwrap();
    let key = witness.verifier().text();
    let (code, text) = run_tool(
        "tools/verify_evidence.py",
        &[path.as_os_str(), "--key".as_ref(), key.as_ref()],
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("ok: seq 3 of tenant agency is leaf 2 of the tree of size 6")
            && text.contains("signed by authaudit-witness"),
        "{text}"
    );
    // The bundle's note does not verify with another key.
    let (code, text) = run_tool(
        "tools/verify_evidence.py",
        &[
            path.as_os_str(),
            "--key".as_ref(),
            stranger.verifier().text().as_ref(),
        ],
    );
    assert_eq!(code, 1, "{text}");
    for (who, sql) in [
        (
            "elsewhere",
            "SELECT authaudit.witnessed_evidence('agency', 3)",
        ),
        ("app", "SELECT authaudit.witnessed_evidence('agency', 3)"),
    ] {
        let err = db
            .connect_as(&format!("{p}_{who}"))
            .query_one(sql, &[])
            .unwrap_err();
        assert_eq!(
            sqlstate(&err),
            Some(SqlState::INSUFFICIENT_PRIVILEGE),
            "{who}: {err}"
        );
    }
    let err = analyst
        .query_one("SELECT authaudit.witnessed_evidence('agency', 7)", &[])
        .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        Some(SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE),
        "{err}"
    );

    // The insider rewrites row 6 in place and cuts row 6 of the other
    // tenant: a signed checkpoint written afterwards says PostgreSQL no
    // longer holds what the witness signed. The stored rows cannot be
    // changed.
    let late = witness.sign(&checkpoint(&mut su, "agency", 4).text());
    let late_other = witness.sign(&checkpoint(&mut su, "other", 5).text());
    su.batch_execute(
        "SET session_replication_role = replica;
         UPDATE authaudit.auth_log SET digest_sha512 = sha512('x') WHERE tenant_id = 'agency' AND seq = 4;
         DELETE FROM authaudit.auth_log WHERE tenant_id = 'other' AND seq >= 5;
         RESET session_replication_role;",
    )
    .unwrap();
    assert_eq!(record(&mut su, "agency", &late).unwrap(), Some(false));
    assert_eq!(record(&mut su, "other", &late_other).unwrap(), Some(false));
    let err = su
        .batch_execute("UPDATE authaudit.witness_checkpoints SET agrees = true")
        .unwrap_err();
    assert!(sqlstate(&err).is_some(), "{err}");
}

/// A key rotation: `witness-rotate` prints a statement signed by the old
/// key and the new one; whoever trusts the old key learns the new one from
/// it (tools/verify_chain.py --rotation), and nobody else can make one.
/// PostgreSQL accepts both keys' checkpoints while `authaudit.witness_keys`
/// lists both.
#[test]
fn a_key_rotation_is_signed_by_the_old_key_and_the_new() {
    let dir = std::env::temp_dir().join(format!("authaudit-rotate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let keygen = |file: &str| -> String {
        let out = std::process::Command::new(authaudit_tests::mirror::sidecar_bin())
            .args(["witness-keygen", "--out"])
            .arg(dir.join(file))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let (old, new) = (keygen("old.key"), keygen("new.key"));
    let rotate = |key: &str, new_key: &str| {
        std::process::Command::new(authaudit_tests::mirror::sidecar_bin())
            .env("AUTHAUDIT_WITNESS_KEY_FILE", dir.join(key))
            .args(["witness-rotate", "--new-key-file"])
            .arg(dir.join(new_key))
            .output()
            .unwrap()
    };
    let out = rotate("old.key", "new.key");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let statement = String::from_utf8(out.stdout).unwrap();
    assert!(statement.starts_with(&format!(
        "pg_authaudit witness key rotation\nold {old}\nnew {new}\ntime "
    )));
    let check = |statement: &str, key: &str| -> (i32, String) {
        let path = dir.join("statement.txt");
        std::fs::write(&path, statement).unwrap();
        run_tool(
            "tools/verify_chain.py",
            &[
                "--rotation".as_ref(),
                path.as_os_str(),
                "--key".as_ref(),
                key.as_ref(),
            ],
        )
    };
    let (code, text) = check(&statement, &old);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&format!("hands over to {new} at ")), "{text}");
    // Checked with the new key, or with its new key's signature line
    // dropped, or with another new key written in: refused.
    assert_eq!(check(&statement, &new).0, 1);
    let lines: Vec<&str> = statement.lines().collect();
    let old_only = format!(
        "{}\n",
        lines
            .iter()
            .filter(|l| !l.starts_with('\u{2014}') || **l == lines[lines.len() - 1])
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(check(&old_only, &old).0, 1, "{old_only}");
    let stranger = keygen("stranger.key");
    assert_eq!(check(&statement.replace(&new, &stranger), &old).0, 1);
    // The stranger cannot hand the old key over: it does not hold it.
    let forged = rotate("stranger.key", "new.key");
    let forged = String::from_utf8(forged.stdout).unwrap();
    assert_eq!(check(&forged, &old).0, 1);

    // During the rotation PostgreSQL accepts checkpoints of either key.
    let db = db("witness_rotation");
    let mut su = db.connect();
    for n in 1..=3 {
        fail(&mut su, &log_id(1, n), "agency", "alice");
    }
    su.batch_execute(&format!(
        "ALTER DATABASE {} SET authaudit.witness_keys = '{old}, {new}'",
        db.name()
    ))
    .unwrap();
    let mut su = db.connect();
    for (file, size) in [("old.key", 2), ("new.key", 3)] {
        let signer = sidecar::witness::signer(&dir.join(file)).unwrap();
        let note = signer.sign(&checkpoint(&mut su, "agency", size).text());
        assert_eq!(record(&mut su, "agency", &note).unwrap(), Some(true));
    }
    let keys: Vec<String> = su
        .query(
            "SELECT witness_key FROM authaudit.witness_checkpoints ORDER BY tree_size",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(keys, [old, new]);
}

/// Evidence is built on the latest signed checkpoint that agrees with the
/// log: a validly signed note past the end of the chain (a witness that
/// mirrored rows since removed, or a key used elsewhere) no longer breaks
/// the evidence of every seq. A second, different note of the same size and
/// key is refused (XX001) and kept as a disagreement; no evidence is built
/// on that size.
#[test]
fn evidence_uses_the_latest_agreeing_checkpoint_and_a_conflicting_note_is_refused_and_kept() {
    let db = db("witness_agreeing");
    let mut su = db.connect();
    for n in 1..=6 {
        fail(&mut su, &log_id(1, n), "agency", &format!("user{n}"));
    }
    let witness = Signer25519::from_seed("authaudit-witness", [7; 32]).unwrap();
    su.batch_execute(&format!(
        "ALTER DATABASE {} SET authaudit.witness_keys = '{}'",
        db.name(),
        witness.verifier().text()
    ))
    .unwrap();
    let mut su = db.connect();
    let five = checkpoint(&mut su, "agency", 5);
    let six = checkpoint(&mut su, "agency", 6);
    assert_eq!(
        record(&mut su, "agency", &witness.sign(&five.text())).unwrap(),
        Some(true)
    );
    assert_eq!(
        record(&mut su, "agency", &witness.sign(&six.text())).unwrap(),
        Some(true)
    );
    // A signed note past the end: stored, disagreeing.
    let past = Checkpoint {
        tree_size: 9,
        ..six.clone()
    };
    assert_eq!(
        record(&mut su, "agency", &witness.sign(&past.text())).unwrap(),
        Some(false)
    );
    let evidence_size = |c: &mut Client, seq: i64| -> Result<i64, postgres::Error> {
        c.query_one(
            "SELECT (authaudit.witnessed_evidence('agency', $1) ->> 'tree_size')::bigint",
            &[&seq],
        )
        .map(|r| r.get(0))
    };
    assert_eq!(
        evidence_size(&mut su, 3).unwrap(),
        6,
        "the latest that agrees"
    );
    // Another tree of size 6 under the same key.
    let forked = Checkpoint {
        root: [0x5a; 32],
        ..six.clone()
    };
    let forked_note = witness.sign(&forked.text());
    let err = record(&mut su, "agency", &forked_note).unwrap_err();
    assert_eq!(sqlstate(&err), Some(SqlState::DATA_CORRUPTED), "{err}");
    let kept: bool = su
        .query_one(
            "SELECT authaudit.record_witness_disagreement('agency', $1)",
            &[&forked_note],
        )
        .unwrap()
        .get(0);
    assert!(kept);
    let (n, stored_note): (i64, String) = {
        let r = su
            .query_one(
                "SELECT count(*), min(stored_note) FROM authaudit.witness_disagreements WHERE tree_size = 6",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((n, stored_note), (1, witness.sign(&six.text())));
    assert_eq!(
        evidence_size(&mut su, 3).unwrap(),
        5,
        "size 6 is no longer trusted"
    );
    assert_eq!(
        sqlstate(&evidence_size(&mut su, 6).unwrap_err()),
        Some(SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE)
    );
    // A note that conflicts with nothing is not a disagreement.
    let err = su
        .query_one(
            "SELECT authaudit.record_witness_disagreement('agency', $1)",
            &[&witness.sign(&five.text())],
        )
        .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        Some(SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE)
    );
}
