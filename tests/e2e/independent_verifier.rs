//! The shipped Python verifier (hashlib only) recomputes every chain from
//! `COPY ... TO STDOUT` output, independently of the extension's Rust code.

use crate::support::{db, fail, log_id, record, run_python, Event};
use std::process::Command;

fn export(db: &authaudit_tests::TestDb) -> String {
    db.psql(&[
        "-c",
        "COPY (SELECT * FROM authaudit.auth_log ORDER BY tenant_id, seq) TO STDOUT WITH (HEADER)",
    ])
}

fn repo(path: &str) -> std::path::PathBuf {
    authaudit_tests::repo_root().join(path)
}

#[test]
fn the_python_verifier_reproduces_the_published_vectors() {
    let out = Command::new("python3")
        .arg(repo("tools/verify_chain.py"))
        .arg("--self-test")
        .arg(repo("docs/chain-test-vectors.txt"))
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("28 vectors, 0 differ"), "{text}");
}

fn python_verify(csv: &str) -> (bool, String) {
    let out = run_python("tools/verify_chain.py", csv);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_python_verifier_agrees_with_the_extension() {
    let db = db("python_verifier");
    let mut c = db.connect_dated();
    for n in 1..=5 {
        fail(&mut c, &log_id(1, n), "agency", "alice");
    }
    // Every field filled, unusual characters, IPv6, nested metadata, a cut user agent.
    let full = Event::success("agency", "zoë \"quoted\", comma")
        .log_id(&log_id(1, 6))
        .org("hq.ops")
        .channel("mobile")
        .ip("2001:db8::1")
        .user_agent(&"Ü".repeat(600))
        .occurred_at("2026-01-02 03:04:05.678901+02")
        .metadata_text(r#"{"b": [1, 2.50, null, true], "a": {"x": "line\nbreak"}, "n": -0.0001}"#);
    record(&mut c, &full);
    let reset = Event::new("second", "lockout_reset", "bob")
        .log_id(&log_id(2, 1))
        .channel("api");
    record(&mut c, &reset);
    // A row large enough to be compressed in storage (TOAST).
    let large = Event::failed("agency", "eve")
        .log_id(&log_id(1, 7))
        .user_agent(&"😀".repeat(512))
        .metadata(serde_json::json!({"note": "abc".repeat(2000)}));
    record(&mut c, &large);
    let csv = export(&db);
    let (ok, out) = python_verify(&csv);
    assert!(ok, "independent verifier failed on an intact log:\n{out}");
    let mut c2 = db.connect_dated();
    assert_eq!(
        crate::support::verify(&mut c2, "agency"),
        (true, 7, None, None)
    );
    let stored: i32 = c2
        .query_one(
            "SELECT pg_column_size(user_agent) FROM authaudit.auth_log WHERE user_id = 'eve'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        stored < 2048,
        "the long user agent is stored compressed ({stored} bytes)"
    );
    assert!(out.contains("agency: ok, 7 rows"), "{out}");
    assert!(out.contains("second: ok, 1 rows"), "{out}");

    // Tamper in the export itself: the verifier names the bad row.
    let tampered = csv.replacen("198.51.100.7", "198.51.100.8", 3);
    let (ok, out) = python_verify(&tampered);
    assert!(!ok);
    assert!(out.contains("agency: FAILED at seq 1"), "{out}");

    // Faults are reported where the extension reports them: a seq below
    // the expected one (a seq 0) at the row's own seq, a missing one at
    // the gap.
    for (sql, at) in [
        (
            "INSERT INTO authaudit.auth_log SELECT gen_random_uuid(), tenant_id, org_id, 0, event_type, \
               user_id, ip, user_agent, channel, occurred_at, recorded_at, metadata, format_version, \
               prev_link, link_sha256, digest_sha512, digest_sha3_256 \
               FROM authaudit.auth_log WHERE tenant_id = 'agency' AND seq = 1",
            0,
        ),
        (
            "DELETE FROM authaudit.auth_log WHERE tenant_id = 'agency' AND seq IN (0, 2, 3)",
            2,
        ),
    ] {
        c2.batch_execute(&format!(
            "SET session_replication_role = replica; {sql}; RESET session_replication_role;"
        ))
        .unwrap();
        let ours = crate::support::verify(&mut c2, "agency");
        let (ok, out) = python_verify(&export(&db));
        assert!(!ok && !ours.0, "{sql}");
        assert_eq!(ours.2, Some(at), "{sql}: {ours:?}");
        assert!(out.contains(&format!("agency: FAILED at seq {at} ")), "{sql}: {out}");
    }
}
