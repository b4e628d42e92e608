//! Test support for pg_authaudit: a throwaway PostgreSQL 15 cluster with the
//! extension installed, and a fresh database for every test.
//!
//! The cluster is started once per test process by `scripts/testcluster.sh`
//! (the same script the SQL tests and benchmarks use) and torn down by its
//! watchdog when the process exits, even when a test fails or the process is
//! killed. Tests never touch a server already running on the machine.
//! The document-store suites also run against SecantusDB ([`Secantus`]);
//! the SIEM and metrics tests start a real rsyslog ([`Rsyslog`]) and a real
//! Prometheus ([`Prometheus`]).

pub mod citus;
pub mod cluster;
pub mod mirror;
pub mod prometheus;
pub mod recording;
pub mod rsyslog;
pub mod secantus;

pub use cluster::{built_binary, free_port, repo_root, Cluster, TestDb};
pub use prometheus::Prometheus;
pub use recording::{Event, Stored};
pub use rsyslog::Rsyslog;
pub use secantus::Secantus;

/// A deterministic, valid log id for test event `n` of tenant slot `t`.
pub fn log_id(t: u32, n: u32) -> String {
    format!("00000000-0000-4000-8000-{t:04x}{n:08x}")
}

/// Runs the repository's Python `script` with `args`: (exit code, stdout
/// and stderr).
pub fn run_tool(script: &str, args: &[&std::ffi::OsStr]) -> (i32, String) {
    let out = std::process::Command::new("python3")
        .arg(repo_root().join(script))
        .args(args)
        .output()
        .expect("python3 runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}
