//! The sshd importer (`authaudit-import sshd`, alias `authaudit-demo
//! import-sshd`, docs/import.md). On the sample files of the README:
//! rotated files imported newest first give the lock that spans both
//! files, a success after failures from the attacker's address and a
//! success while locked; a re-run records nothing twice. Then damaged and
//! real-world input, each case against what the log must hold: a truncated
//! last line, a refused line (nothing of its file recorded), a file without
//! attempts, rotated files split inside one second and across New Year,
//! PAM-only failures, "maximum attempts" sessions and empty user names,
//! the variant forms, gzip and bytes that are not UTF-8, and retention
//! after an import.
//!
//! Most cases run the importer as `authaudit-demo import-sshd`, the form
//! every release has had, so the same test runs against an older build.

use authaudit_tests::{built_binary, repo_root, Cluster, TestDb};
use postgres::Client;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `authaudit-demo import-sshd` into `tenant` with `args` and `files`.
fn run_alias(db: &TestDb, tenant: &str, args: &[&str], files: &[&Path]) -> Output {
    Command::new(built_binary("authaudit-demo"))
        .args(["import-sshd", "--url", &db.url(), "--tenant", tenant])
        .args(args)
        .args(files)
        .output()
        .unwrap()
}

/// Runs the importer and requires it to succeed; returns its summary.
fn imported(db: &TestDb, tenant: &str, args: &[&str], files: &[&Path]) -> String {
    let out = run_alias(db, tenant, args, files);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs the importer as the README shows, into `tenant`, files in `order`.
fn import(db: &TestDb, tenant: &str, files: &[&str]) -> String {
    let out = Command::new(built_binary("authaudit-import"))
        .args([
            "sshd",
            "--url",
            &db.url(),
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

/// A directory of log files written by a test, removed when dropped.
struct Logs(PathBuf);

impl Logs {
    fn new(name: &str) -> Logs {
        let dir =
            std::env::temp_dir().join(format!("authaudit-sshd-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Logs(dir)
    }

    /// Writes `bytes` as `name`; returns its path.
    fn file(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Lines, each with its line ending.
    fn lines(&self, name: &str, lines: &[&str]) -> PathBuf {
        self.file(
            name,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
    }
}

impl Drop for Logs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The tenant's imported events as `type user host(ip) occurred_at`, in
/// the replay's order (event time, then log id).
fn events(c: &mut Client, tenant: &str) -> Vec<String> {
    c.query(
        "SELECT concat_ws(' ', event_type, user_id, coalesce(host(ip), '-'), \
                to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')) \
           FROM authaudit.auth_log WHERE tenant_id = $1 AND channel = 'ssh' \
          ORDER BY occurred_at, log_id",
        &[&tenant],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
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
    assert!(
        report.contains("checkpoint at seq 13 "),
        "the history is checkpointed before the rebuild:\n{report}"
    );
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
    let samples = repo_root().join("demo/samples");
    imported(
        &db,
        "bastion-in-order",
        &["--year", "2025"],
        &[&samples.join("auth.log.1"), &samples.join("auth.log")],
    );

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

fn failed(at: &str, pid: u32, user: &str, ip: &str, port: u32) -> String {
    format!("{at} h sshd[{pid}]: Failed password for {user} from {ip} port {port} ssh2")
}

#[test]
fn a_truncated_last_line_is_skipped_and_the_complete_file_adds_it_once() {
    let db = Cluster::shared().fresh_db_with_lockout("sshd_truncated");
    let mut c = db.connect();
    let logs = Logs::new("truncated");
    let first = failed("Nov 20 03:14:05", 7, "root", "203.0.113.60", 54874);
    let last = failed("Nov 20 03:14:09", 7, "root", "203.0.113.60", 54874);
    // A line cut in the middle of the file (its line ending kept).
    let cut_inside =
        "Nov 20 03:14:07 h sshd[7]: Failed password for root from 203.0.113.60 port 5487";
    let head = format!("{first}\n{cut_inside}\n");
    let from_dot_6 = last.find("203.0.113.6").unwrap() + "203.0.113.6".len();
    let port_5487 = last.find("54874").unwrap() + 4;
    for cut in [&last[..from_dot_6], &last[..port_5487]] {
        let f = logs.file("auth.log", format!("{head}{cut}"));
        let report = imported(&db, "t", &["--year", "2025"], &[&f]);
        assert_eq!(
            events(&mut c, "t"),
            ["login_failed root 203.0.113.60 2025-11-20 03:14:05"],
            "{cut:?}\n{report}"
        );
        assert!(report.contains("possibly truncated"), "{report}");
    }
    let f = logs.file("auth.log", format!("{head}{last}\n"));
    let report = imported(&db, "t", &["--year", "2025"], &[&f]);
    assert!(
        report.contains("1 recorded now, 1 recorded before"),
        "{report}"
    );
    assert_eq!(
        events(&mut c, "t"),
        [
            "login_failed root 203.0.113.60 2025-11-20 03:14:05",
            "login_failed root 203.0.113.60 2025-11-20 03:14:09",
        ]
    );
    let ports: Vec<String> = c
        .query(
            "SELECT DISTINCT metadata ->> 'port' FROM authaudit.auth_log WHERE tenant_id = 't' AND channel = 'ssh'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ports, ["54874"]);
}

#[test]
fn a_line_the_log_refuses_leaves_nothing_of_its_file_and_names_file_line_and_field() {
    let db = Cluster::shared().fresh_db_with_lockout("sshd_refused");
    let mut c = db.connect();
    let logs = Logs::new("refused");
    let first: Vec<String> = (0..10)
        .map(|i| {
            failed(
                &format!("Nov 19 10:00:{i:02}"),
                100,
                "alice",
                "192.0.2.10",
                4000 + i,
            )
        })
        .collect();
    let first = logs.lines(
        "auth.log.1",
        &first.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let big = |last_user: &str| -> PathBuf {
        let mut lines: Vec<String> = (0..1224)
            .map(|i| {
                failed(
                    &format!("Nov 20 {:02}:{:02}:{:02}", i / 3600, i / 60 % 60, i % 60),
                    200 + i,
                    &format!("user{}", i % 50),
                    &format!("198.51.100.{}", i % 200 + 1),
                    10_000 + i,
                )
            })
            .collect();
        lines.push(failed(
            "Nov 20 01:00:00",
            9999,
            last_user,
            "203.0.113.99",
            5555,
        ));
        logs.lines(
            "auth.log",
            &lines.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    };
    let long_user = "x".repeat(300);
    let out = run_alias(&db, "t", &["--year", "2025"], &[&first, &big(&long_user)]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "{stdout}");
    let auth_log = logs.0.join("auth.log").display().to_string();
    assert!(
        stderr.contains(&format!(
            "{auth_log} line 1225, user_id: refused by the log (22001: "
        )),
        "{stderr}"
    );
    assert!(
        stdout.contains("refused, nothing of it recorded"),
        "{stdout}"
    );
    assert!(
        stdout.contains("lockout state rebuilt from 10 events"),
        "{stdout}"
    );
    let count = |c: &mut Client, t: &str| -> i64 {
        c.query_one(
            "SELECT count(*) FROM authaudit.auth_log WHERE tenant_id = 't' AND event_type = $1",
            &[&t],
        )
        .unwrap()
        .get(0)
    };
    assert_eq!(count(&mut c, "login_failed"), 10, "auth.log.1 only");
    assert_eq!(count(&mut c, "lockout_rebuilt"), 1);
    // The file put right, a re-run completes the import, nothing twice.
    let report = imported(&db, "t", &["--year", "2025"], &[&first, &big("x")]);
    assert!(
        report.contains("1235 failures and 0 successes; 1225 recorded now, 10 recorded before"),
        "{report}"
    );
    assert_eq!(count(&mut c, "login_failed"), 1235);
}

/// A database that cannot be reached, or a role it refuses, is named with
/// its reason (not only "db error"); what the files hold is still shown.
#[test]
fn a_session_the_database_refuses_is_named_with_its_reason() {
    let db = Cluster::shared().fresh_db_with_lockout("sshd_no_session");
    let samples = repo_root().join("demo/samples");
    let files = [samples.join("auth.log"), samples.join("auth.log.1")];
    let files: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let out = run_alias(
        &db,
        "t",
        &["--year", "2025", "--role", "authaudit_no_such_role"],
        &files,
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("(22023: role \"authaudit_no_such_role\" does not exist)"),
        "{stderr}"
    );
    assert!(stdout.contains("auth.log: 8 lines, 7 events"), "{stdout}");
    assert!(
        stdout.contains("18 lines: 10 failures and 3 successes; 0 recorded now, 0 recorded before"),
        "{stdout}"
    );
    assert!(stdout.contains("nothing recorded"), "{stdout}");
    let out = Command::new(built_binary("authaudit-demo"))
        .args([
            "import-sshd",
            "--url",
            "host=127.0.0.1 port=1 user=postgres dbname=x",
        ])
        .args(["--tenant", "t", "--year", "2025"])
        .args(&files)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("refused"),
        "the reason, not only that it failed: {stderr}"
    );
}

#[test]
fn a_file_without_attempts_imports_and_says_so() {
    let db = Cluster::shared().fresh_db_with_lockout("sshd_no_attempts");
    let mut c = db.connect();
    let logs = Logs::new("no-attempts");
    let f = logs.lines(
        "auth.log",
        &[
            "Nov 20 03:00:01 h CRON[9]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)",
            "Nov 20 03:00:02 h sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/true",
            "Nov 20 03:00:03 h sshd[1]: Server listening on 0.0.0.0 port 22.",
        ],
    );
    let report = imported(&db, "quiet", &["--year", "2025"], &[&f]);
    assert!(
        report.contains(
            "no authentication attempt in 3 lines: nothing recorded, lockout state unchanged"
        ),
        "{report}"
    );
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM authaudit.auth_log WHERE tenant_id = 'quiet'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[test]
fn rotated_files_split_inside_one_second_keep_their_line_order() {
    let db = Cluster::shared().fresh_db_with_lockout("sshd_same_second");
    let mut c = db.connect();
    let logs = Logs::new("same-second");
    let older = logs.lines(
        "auth.log.1",
        &[
            &failed("Nov 20 23:59:58", 7, "root", "203.0.113.10", 4000),
            &failed("Nov 20 23:59:59", 7, "root", "203.0.113.10", 4000),
        ],
    );
    let newer = logs.lines(
        "auth.log",
        &["Nov 20 23:59:59 h sshd[8]: Accepted password for root from 203.0.113.10 port 4001 ssh2"],
    );
    for tenant in [
        "bastion", "agency-1", "agency-2", "edge", "t1", "t2", "t3", "t4",
    ] {
        imported(&db, tenant, &["--year", "2025"], &[&newer, &older]);
        let r: Vec<String> = c
            .query(
                "SELECT concat_ws(' ', user_id, preceding_failures) \
                   FROM authaudit.successes_after_failures($1, '2025-11-01', '2025-12-01')",
                &[&tenant],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(r, ["root 2"], "{tenant}: the success follows both failures");
    }
}

#[test]
fn rotated_files_across_new_year_are_dated_each_in_its_year() {
    let db = Cluster::shared().fresh_db_with_lockout("sshd_new_year");
    let mut c = db.connect();
    let logs = Logs::new("new-year");
    let december = logs.lines(
        "auth.log.1",
        &[
            &failed("Dec 31 23:59:50", 7, "root", "203.0.113.10", 4000),
            &failed("Dec 31 23:59:55", 7, "root", "203.0.113.10", 4000),
        ],
    );
    let january = logs.lines(
        "auth.log",
        &[
            &failed("Jan  1 00:00:10", 8, "root", "203.0.113.10", 4001),
            "Jan  1 00:00:20 h sshd[9]: Accepted password for root from 192.0.2.30 port 4002 ssh2",
        ],
    );
    let expected = [
        "login_failed root 203.0.113.10 2025-12-31 23:59:50",
        "login_failed root 203.0.113.10 2025-12-31 23:59:55",
        "login_failed root 203.0.113.10 2026-01-01 00:00:10",
        "login_success root 192.0.2.30 2026-01-01 00:00:20",
    ];
    // One --year for both, newest file first (the docs' example).
    imported(&db, "shared", &["--year", "2025"], &[&january, &december]);
    assert_eq!(events(&mut c, "shared"), expected);
    // A year per file.
    let (dec_year, jan_year) = (
        format!("{}=2025", december.display()),
        format!("{}=2026", january.display()),
    );
    imported(
        &db,
        "given",
        &["--year", &dec_year, "--year", &jan_year],
        &[&january, &december],
    );
    assert_eq!(events(&mut c, "given"), expected);
    // The files' modification times.
    for (f, at) in [
        (&december, "2026-01-01T00:00:05Z"),
        (&january, "2026-01-08T06:25:00Z"),
    ] {
        let ok = Command::new("touch")
            .args(["-d", at])
            .arg(f)
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let report = imported(&db, "mtime", &[], &[&january, &december]);
    assert!(report.contains("from its modification time"), "{report}");
    assert_eq!(events(&mut c, "mtime"), expected);
}

#[test]
fn pam_only_failures_max_attempts_sessions_and_empty_users_are_each_recorded() {
    let db = Cluster::shared().fresh_db_with_lockout("sshd_pam_only");
    let mut c = db.connect();
    let logs = Logs::new("pam-only");
    let f = logs.lines(
        "secure",
        &[
            "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: check pass; user unknown",
            "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; logname= uid=0 euid=0 tty=NODEVssh ruser= rhost=218.188.2.4 ",
            "Jun 14 15:16:02 combo sshd(pam_unix)[19937]: authentication failure; logname= uid=0 euid=0 tty=NODEVssh ruser= rhost=218.188.2.4  user=root",
            "Jun 15 02:04:59 combo sshd[20882]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=scanner.example.net  user=root",
            "Jun 15 02:05:09 combo sshd[20882]: error: maximum authentication attempts exceeded for root from 203.0.113.7 port 5022 ssh2 [preauth]",
            "Jun 15 03:00:00 combo sshd[20990]: error: maximum authentication attempts exceeded for invalid user admin from 203.0.113.8 port 6022 ssh2 [preauth]",
            "Jun 15 03:10:00 combo sshd[21000]: Failed password for invalid user  from 198.51.100.23 port 7022 ssh2",
        ],
    );
    imported(&db, "t", &["--year", "2025"], &[&f]);
    assert_eq!(
        events(&mut c, "t"),
        [
            "login_failed (unknown) 218.188.2.4 2025-06-14 15:16:01",
            "login_failed root 218.188.2.4 2025-06-14 15:16:02",
            "login_failed root 203.0.113.7 2025-06-15 02:04:59",
            "login_failed admin 203.0.113.8 2025-06-15 03:00:00",
            "login_failed (empty) 198.51.100.23 2025-06-15 03:10:00",
        ]
    );
    let r = c
        .query_one(
            "SELECT count(*) FILTER (WHERE metadata ->> 'source' = 'pam_unix'), \
                    count(*) FILTER (WHERE metadata ->> 'max_attempts_exceeded' = 'true'), \
                    count(*) FILTER (WHERE metadata ->> 'empty_user' = 'true'), \
                    count(*) FILTER (WHERE metadata ->> 'unknown_user' = 'true') \
               FROM authaudit.auth_log WHERE tenant_id = 't' AND channel = 'ssh'",
            &[],
        )
        .unwrap();
    assert_eq!(
        (0..4).map(|i| r.get::<_, i64>(i)).collect::<Vec<_>>(),
        [3, 1, 1, 1]
    );
}

#[test]
fn variant_forms_gzip_rotations_and_foreign_bytes_are_read() {
    let db = Cluster::shared().fresh_db_with_lockout("sshd_variants");
    let mut c = db.connect();
    let logs = Logs::new("variants");
    let mut current = Vec::new();
    for line in [
        &b"Nov 20 03:00:00 sol sshd[603]: [ID 800047 auth.info] Failed password for root from 203.0.113.20 port 4000 ssh2"[..],
        b"Nov 20 03:00:01 h sudo:   caf\xe9 : TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/bin/true",
        b"<38>1 2025-11-20T03:00:02Z h sshd 604 - - Failed password for admin from 203.0.113.21 port 4001 ssh2",
        b"Nov 20 03:00:03 h sshd[605]: Accepted rhosts-rsa for alice from 192.0.2.7 port 1022 ruser evil from 203.0.113.99",
        b"Nov 20 03:00:04 h sshd[606]: Failed password for invalid user caf\xff from 203.0.113.22 port 4002 ssh2",
    ] {
        current.extend_from_slice(line);
        current.push(b'\n');
    }
    let current = logs.file("auth.log", current);
    let plain = logs.lines(
        "auth.log.2",
        &[&failed(
            "Nov 19 03:00:00",
            500,
            "root",
            "203.0.113.30",
            4003,
        )],
    );
    let gz = logs.0.join("auth.log.2.gz");
    let out = Command::new("gzip").arg("-c").arg(&plain).output().unwrap();
    std::fs::write(&gz, out.stdout).unwrap();
    std::fs::remove_file(&plain).unwrap();
    let report = imported(&db, "t", &["--year", "2025"], &[&current, &gz]);
    assert_eq!(
        events(&mut c, "t"),
        [
            "login_failed root 203.0.113.30 2025-11-19 03:00:00",
            "login_failed root 203.0.113.20 2025-11-20 03:00:00",
            "login_failed admin 203.0.113.21 2025-11-20 03:00:02",
            "login_success alice 192.0.2.7 2025-11-20 03:00:03",
            "login_failed caf\u{fffd} 203.0.113.22 2025-11-20 03:00:04",
        ],
        "{report}"
    );
    let ruser: String = c
        .query_one(
            "SELECT metadata ->> 'ruser' FROM authaudit.auth_log WHERE tenant_id = 't' AND user_id = 'alice'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(ruser, "evil from 203.0.113.99");
}

#[test]
fn retention_removes_imported_history_after_an_import_with_the_default_rebuild() {
    let db = Cluster::shared().fresh_db_with_lockout("sshd_retention");
    let mut c = db.connect();
    let samples = repo_root().join("demo/samples");
    imported(
        &db,
        "bastion",
        &["--year", "2025"],
        &[&samples.join("auth.log"), &samples.join("auth.log.1")],
    );
    c.batch_execute("SET authaudit.min_retention = '1d'")
        .unwrap();
    c.query_one("SELECT authaudit.checkpoint('bastion')", &[])
        .unwrap();
    let r = c
        .query_one(
            "SELECT removed_rows, removed_to_seq FROM authaudit.apply_retention('bastion', '2025-11-25')",
            &[],
        )
        .unwrap();
    assert_eq!(
        (r.get::<_, i64>(0), r.get::<_, Option<i64>>(1)),
        (13, Some(13)),
        "the imported history is removed, the rebuild's own event kept"
    );
    let ok: bool = c
        .query_one("SELECT ok FROM authaudit.verify_chain('bastion')", &[])
        .unwrap()
        .get(0);
    assert!(ok);
}
