//! A Citus cluster for the scale-out tests: a coordinator and two workers on
//! loopback, each a throwaway PostgreSQL 15 server preloading `citus` and
//! `pg_authaudit` (docs/scale-out.md).
//!
//! Citus is not part of the project: the suite runs when
//! `AUTHAUDIT_CITUS_PG_CONFIG` names the `pg_config` of a PostgreSQL 15 tree
//! with Citus installed, and is skipped with the reason printed otherwise.
//! The servers run from a private copy of that tree
//! (`scripts/private-pg-tree.sh`) into which the pg_authaudit under test
//! (the one `make install` put into the system's tree) is copied, so the
//! tree named by the variable is never written.

use crate::cluster::{crash_lines_in, free_port, repo_root};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The variable naming the `pg_config` of a tree with Citus.
pub const CITUS_PG_CONFIG: &str = "AUTHAUDIT_CITUS_PG_CONFIG";

/// One server of the Citus cluster.
#[derive(Debug)]
pub struct Node {
    pub dir: PathBuf,
    pub port: u16,
}

impl Node {
    /// A superuser connection to database `postgres`.
    pub fn connect(&self) -> postgres::Client {
        self.connect_as("postgres")
    }

    /// A connection as `role` (trust authentication).
    pub fn connect_as(&self, role: &str) -> postgres::Client {
        postgres::Client::connect(&self.url(role), postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to Citus node {} as {role}: {e}", self.port))
    }

    /// A libpq-style connection string for database `postgres` as `role`.
    pub fn url(&self, role: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={role} dbname=postgres",
            self.port
        )
    }

    /// The lines of the server's log that show a crash.
    pub fn crash_lines(&self) -> Vec<String> {
        crash_lines_in(&self.dir.join("server.log"))
    }
}

/// A coordinator and two workers, removed when the process exits.
#[derive(Debug)]
pub struct Citus {
    pub coordinator: Node,
    pub workers: Vec<Node>,
    pgbin: PathBuf,
    /// The nodes' directories and the tree's copy.
    base: PathBuf,
}

fn run(c: &mut Command) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A private copy of the Citus tree with this build of pg_authaudit in it
/// (`scripts/citus-tree.sh`); returns its `bin/`.
fn tree(citus_pg_config: &str, dir: &Path) -> PathBuf {
    PathBuf::from(run(Command::new(repo_root().join("scripts/citus-tree.sh"))
        .arg(citus_pg_config)
        .arg(dir)))
}

impl Citus {
    /// Starts the cluster, or prints why the Citus suite is skipped and
    /// returns `None`.
    pub fn start(name: &str) -> Option<Citus> {
        let Ok(citus_pg_config) = std::env::var(CITUS_PG_CONFIG) else {
            eprintln!(
                "skipped: {CITUS_PG_CONFIG} is not set (the pg_config of a PostgreSQL 15 tree with Citus; docs/scale-out.md, \"Testing\")"
            );
            return None;
        };
        let base =
            std::env::temp_dir().join(format!("authaudit-citus-{}-{name}", std::process::id()));
        let pgbin = tree(&citus_pg_config, &base.join("tree"));
        let start = |n: usize| -> Node {
            let dir = base.join(format!("node{n}"));
            let port = free_port();
            let script = || {
                let mut c = Command::new(repo_root().join("scripts/testcluster.sh"));
                c.env("PGBIN", &pgbin);
                c
            };
            run(script()
                .arg("start")
                .arg(&dir)
                .arg(port.to_string())
                .arg("--watch")
                .arg(std::process::id().to_string()));
            // Later settings win: Citus first, as it requires.
            let conf = dir.join("data/postgresql.conf");
            let mut text = std::fs::read_to_string(&conf).expect("postgresql.conf");
            text.push_str(
                "shared_preload_libraries = 'citus,pg_authaudit'\n\
                 citus.max_background_task_executors_per_node = 2\n\
                 citus.enable_change_data_capture = on\n\
                 authaudit.rollup_database = ''\n\
                 synchronous_commit = on\n",
            );
            std::fs::write(&conf, text).expect("write postgresql.conf");
            run(script().arg("restart").arg(&dir));
            let node = Node { dir, port };
            node.connect()
                .batch_execute("CREATE EXTENSION citus; CREATE EXTENSION pg_authaudit;")
                .expect("CREATE EXTENSION citus, pg_authaudit");
            node
        };
        let coordinator = start(0);
        let workers = vec![start(1), start(2)];
        let mut c = coordinator.connect();
        c.execute(
            "SELECT citus_set_coordinator_host('127.0.0.1', $1)",
            &[&i32::from(coordinator.port)],
        )
        .expect("citus_set_coordinator_host");
        for w in &workers {
            c.execute(
                "SELECT citus_add_node('127.0.0.1', $1)",
                &[&i32::from(w.port)],
            )
            .expect("citus_add_node");
        }
        Some(Citus {
            coordinator,
            workers,
            pgbin,
            base,
        })
    }

    /// `scripts/testcluster.sh` with the tree's binaries.
    fn script(&self) -> Command {
        let mut c = Command::new(repo_root().join("scripts/testcluster.sh"));
        c.env("PGBIN", &self.pgbin);
        c
    }

    /// Restarts worker `i` (fast shutdown).
    pub fn restart_worker(&self, i: usize) {
        run(self.script().arg("restart").arg(&self.workers[i].dir));
    }

    /// The worker that holds `tenant`'s shards.
    pub fn worker_of(&self, tenant: &str) -> usize {
        let port: i32 = self
            .coordinator
            .connect()
            .query_one(
                "SELECT p.nodeport FROM pg_dist_shard_placement p \
                  WHERE p.shardid = get_shard_id_for_distribution_column('authaudit.auth_log', $1::text)",
                &[&tenant],
            )
            .expect("the tenant's placement")
            .get(0);
        self.workers
            .iter()
            .position(|w| i32::from(w.port) == port)
            .expect("a worker holds the shard")
    }

    /// Fails when any server of the cluster crashed.
    pub fn assert_no_crash(&self) {
        for n in std::iter::once(&self.coordinator).chain(&self.workers) {
            let lines = n.crash_lines();
            assert!(
                lines.is_empty(),
                "Citus node {} crashed:\n{}",
                n.port,
                lines.join("\n")
            );
        }
    }
}

impl Drop for Citus {
    /// Stops the servers and removes their directories and the tree's copy
    /// (the watchdog would stop the servers when the process exits, but
    /// leave the copy).
    fn drop(&mut self) {
        for n in std::iter::once(&self.coordinator).chain(&self.workers) {
            let _ = self.script().arg("stop").arg(&n.dir).output();
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}
