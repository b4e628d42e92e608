//! Helpers shared by the end-to-end tests.

use authaudit_tests::{Cluster, TestDb};
use postgres::error::SqlState;
use postgres::{Client, GenericClient};

/// A fresh database with pg_authaudit installed.
pub fn db(hint: &str) -> TestDb {
    Cluster::shared().fresh_db(hint)
}

pub use authaudit_tests::recording::{record, record_batch, try_record, Event, StoredExt};
pub use authaudit_tests::{log_id, run_tool};

/// Records a `login_failed` event for `user` and returns its seq.
pub fn fail(c: &mut impl GenericClient, id: &str, tenant: &str, user: &str) -> i64 {
    let e = Event::failed(tenant, user)
        .log_id(id)
        .ip("198.51.100.7")
        .user_agent("test-agent")
        .metadata(serde_json::json!({"reason": "bad_password"}));
    record(c, &e).seq
}

/// The SQLSTATE of a failed statement.
pub fn sqlstate(e: &postgres::Error) -> Option<SqlState> {
    e.code().cloned()
}

/// `verify_chain(tenant)` as (ok, rows_checked, first_bad_seq, reason).
pub fn verify(c: &mut Client, tenant: &str) -> (bool, i64, Option<i64>, Option<String>) {
    let r = c
        .query_one("SELECT * FROM authaudit.verify_chain($1)", &[&tenant])
        .expect("verify_chain");
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

/// Number of rows in the log and the tenant's last seq (0 without rows).
pub fn log_state(c: &mut Client, tenant: &str) -> (i64, i64) {
    let rows: i64 = c
        .query_one("SELECT count(*) FROM authaudit.auth_log", &[])
        .unwrap()
        .get(0);
    let head: i64 = c
        .query_one(
            "SELECT coalesce(max(seq), 0) FROM authaudit.auth_log WHERE tenant_id = $1",
            &[&tenant],
        )
        .unwrap()
        .get(0);
    (rows, head)
}

/// Asserts the tenant's seq runs 1..=n without gaps and returns n.
pub fn gapless(c: &mut Client, tenant: &str) -> i64 {
    let r = c
        .query_one(
            "SELECT count(*), coalesce(max(seq), 0) FROM authaudit.auth_log WHERE tenant_id = $1",
            &[&tenant],
        )
        .unwrap();
    let (n, max): (i64, i64) = (r.get(0), r.get(1));
    assert_eq!(n, max, "seq has gaps in {tenant}");
    n
}

pub fn run_python(script: &str, stdin: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let path = authaudit_tests::repo_root().join(script);
    let mut child = Command::new("python3")
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A deterministic generator (xorshift64*), so that generated cases and
/// campaigns are the same on every run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// An index in `0..n`.
    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// Shuffles `v` (Fisher–Yates).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.index(i + 1));
        }
    }
}

/// A fresh database with pg_authaudit and its default lockout policy.
pub fn db_with_lockout(hint: &str) -> TestDb {
    Cluster::shared().fresh_db_with_lockout(hint)
}
