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

pub mod cluster;
pub mod prometheus;
pub mod rsyslog;
pub mod secantus;

pub use cluster::{built_binary, free_port, repo_root, Cluster, TestDb};
pub use prometheus::Prometheus;
pub use rsyslog::Rsyslog;
pub use secantus::Secantus;
