//! The sshd importer (`authaudit-demo import-sshd`, docs/import.md) on the
//! sample files of the README: rotated files imported newest first give the
//! lock that spans both files, a success after failures from the attacker's
//! address and a success while locked; a re-run records nothing twice.

use authaudit_tests::{built_binary, repo_root, Cluster, TestDb};
use postgres::Client;
use std::process::Command;

/// Runs the importer as the README shows, into `tenant`, files in `order`.
fn import(db: &TestDb, tenant: &str, files: &[&str]) -> String {
    let url = db.url();
    let out = Command::new(built_binary("authaudit-demo"))
        .args([
            "import-sshd",
            "--url",
            &url,
            "--tenant",
            tenant,
            "--year",
            "2025",
        ])
        .args(
            files
                .iter()
                .map(|f| repo_root().join("demo/samples").join(f)),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn answers(c: &mut Client, tenant: &str) -> Vec<String> {
    let period = "'2025-11-01', '2025-12-01'";
    let mut out = Vec::new();
    for q in [
        format!("SELECT concat_ws(' ', occurred_at, user_id, event_type, rule, failures, locked_until) FROM authaudit.lockout_timeline($1, {period})"),
        format!("SELECT concat_ws(' ', occurred_at, user_id, host(ip), preceding_failures, while_locked, failing_ips) FROM authaudit.successes_after_failures($1, {period})"),
        format!("SELECT concat_ws(' ', user_id, failures, distinct_ips, locks) FROM authaudit.targeted_accounts($1, {period})"),
    ] {
        for r in c.query(&q, &[&tenant]).unwrap() {
            out.push(r.get::<_, String>(0));
        }
    }
    out
}

#[test]
fn rotated_sshd_logs_import_in_any_order_and_a_rerun_records_nothing_twice() {
    let db = Cluster::shared().fresh_db_with_lockout("sshd_import");
    let report = import(&db, "bastion", &["auth.log", "auth.log.1"]);
    for line in [
        "18 lines: 10 failures and 3 successes; 13 recorded now, 0 recorded before",
        "skipped 1: not an sshd line",
        "skipped 1: \"Invalid user\" notice",
        "skipped 2: PAM detail of an attempt sshd logs itself",
        "skipped 3: sshd line that is no authentication attempt",
        "lockout state rebuilt from 13 events: 4 accounts, 3 sources, 4 (source, account) pairs",
    ] {
        assert!(report.contains(line), "{line:?} not in:\n{report}");
    }
    let again = import(&db, "bastion", &["auth.log", "auth.log.1"]);
    assert!(
        again.contains("18 lines: 10 failures and 3 successes; 0 recorded now, 13 recorded before"),
        "{again}"
    );
    import(&db, "bastion-in-order", &["auth.log.1", "auth.log"]);

    let mut c = db.connect();
    let got = answers(&mut c, "bastion");
    assert_eq!(got, answers(&mut c, "bastion-in-order"));
    assert_eq!(
        got[..3],
        [
            "2025-11-20 00:00:05+00 root account_locked max_failures 5 2025-11-20 00:15:05+00",
            "2025-11-20 00:01:09+00 alice 198.51.100.23 2 f {198.51.100.23}",
            "2025-11-20 00:05:00+00 root 192.0.2.30 6 t {203.0.113.10}",
        ]
    );
    let r = c
        .query_one(
            "SELECT count(*) FILTER (WHERE channel = 'ssh'), \
                    count(*) FILTER (WHERE metadata ->> 'invalid_user' = 'true'), \
                    count(*) FILTER (WHERE event_type = 'lockout_rebuilt') \
               FROM authaudit.auth_log WHERE tenant_id = 'bastion'",
            &[],
        )
        .unwrap();
    // Each run rebuilt once, on the record.
    assert_eq!(
        (r.get::<_, i64>(0), r.get::<_, i64>(1), r.get::<_, i64>(2)),
        (13, 1, 2)
    );
    // In CEF the event keeps its own time (rt) and says when it was imported.
    let lines: Vec<(String, bool)> = c
        .query(
            "SELECT line, authaudit.verify_cef(line) FROM authaudit.export_cef('bastion', '2025-11-20 00:00:05', '2025-11-20 00:00:06') line",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(lines.len(), 1);
    let (line, verified) = &lines[0];
    assert!(line.contains("|rt=1763596805000 "), "{line}");
    assert!(
        line.contains(" deviceCustomDate1Label=importedAt"),
        "{line}"
    );
    assert!(verified);
}
