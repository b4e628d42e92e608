//! A throwaway cluster and per-test databases.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

/// The template every test database is copied from: the extension installed.
const TEMPLATE: &str = "authaudit_template";

/// A running throwaway PostgreSQL 15 cluster.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    port: u16,
    create_lock: Mutex<()>,
    next_db: AtomicU32,
    /// Whether a test of this cluster crashes its server on purpose.
    crashes_expected: bool,
    /// The server's binaries, when not the system's (`PGBIN` of
    /// `scripts/testcluster.sh`).
    pgbin: Option<PathBuf>,
}

/// The install scripts of earlier releases, as each was built at its
/// release (tests/fixtures/README.md). Only the upgrade tests install them,
/// into a private copy of the PostgreSQL tree.
const RELEASE_SCRIPTS: &str = "tests/fixtures/release-install-scripts.tar.xz";

/// What PostgreSQL writes to its log when a server process died abnormally
/// (a signal, an exception, a PANIC) and the postmaster reinitialised.
const CRASH_MARKS: [&str; 5] = [
    "terminated by signal",
    "terminated by exception",
    "terminating any other active server processes",
    "all server processes terminated; reinitializing",
    "PANIC:",
];

/// The lines of server log `log` that show a server process crashed.
pub fn crash_lines_in(log: &Path) -> Vec<String> {
    let log = std::fs::read(log).unwrap_or_default();
    String::from_utf8_lossy(&log)
        .lines()
        .filter(|l| CRASH_MARKS.iter().any(|m| l.contains(m)))
        .map(str::to_owned)
        .collect()
}

/// A binary of the workspace's debug build, found where `repo_root`'s
/// build puts it (`CARGO_TARGET_DIR` when set).
pub fn built_binary(name: &str) -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map_or_else(|_| repo_root().join("target"), PathBuf::from);
    let bin = target.join("debug").join(name);
    assert!(
        bin.exists(),
        "{} is missing: `make test-e2e` builds it first",
        bin.display()
    );
    bin
}

/// The checkout the tests run in: `cargo test` sets `CARGO_MANIFEST_DIR`
/// when it runs a test too, so a test binary another checkout built (one
/// target directory shared by two checkouts) still uses this checkout's
/// scripts and files.
pub fn repo_root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    Path::new(&manifest)
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free TCP port on 127.0.0.1")
}

impl Cluster {
    /// The cluster shared by every test of this process, started on first use.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Cluster> = OnceLock::new();
        SHARED.get_or_init(|| Cluster::start("shared", &[], false, false))
    }

    /// A cluster shared by this process's upgrade tests, running from a
    /// private copy of the PostgreSQL tree (`scripts/private-pg-tree.sh`)
    /// that holds the install scripts of earlier releases beside this
    /// release's files, so that `CREATE EXTENSION … VERSION '0.1.0'` works
    /// there and nowhere else.
    pub fn releases() -> &'static Cluster {
        static RELEASES: OnceLock<Cluster> = OnceLock::new();
        RELEASES.get_or_init(|| Cluster::start("releases", &[], false, true))
    }

    /// A cluster of its own, for a test that crashes or restarts the server;
    /// commits are durable across a crash. Removed when the process exits.
    /// Its server may crash: the crash check passes over it.
    pub fn dedicated(name: &str) -> &'static Cluster {
        Box::leak(Box::new(Cluster::start(name, &["--durable"], true, false)))
    }

    /// `scripts/testcluster.sh` with these binaries (the system's: `None`).
    fn script(pgbin: Option<&Path>) -> Command {
        let mut c = Command::new(repo_root().join("scripts/testcluster.sh"));
        if let Some(bin) = pgbin {
            c.env("PGBIN", bin);
        }
        c
    }

    fn start(name: &str, options: &[&str], crashes_expected: bool, releases: bool) -> Cluster {
        let dir =
            std::env::temp_dir().join(format!("authaudit-test-{}-{name}", std::process::id()));
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            // Inside the cluster's directory: removed with it.
            let pgbin = releases.then(|| release_tree(&dir.join("tree")));
            let out = Cluster::script(pgbin.as_deref())
                .arg("start")
                .arg(&dir)
                .arg(port.to_string())
                .args(options)
                .arg("--watch")
                .arg(std::process::id().to_string())
                .output()
                .expect("scripts/testcluster.sh runs");
            if out.status.success() {
                let cluster = Cluster {
                    dir,
                    port,
                    create_lock: Mutex::new(()),
                    next_db: AtomicU32::new(0),
                    crashes_expected,
                    pgbin,
                };
                cluster.prepare_template();
                return cluster;
            }
            last_error = String::from_utf8_lossy(&out.stderr).into_owned();
            let _ = Cluster::script(pgbin.as_deref())
                .arg("stop")
                .arg(&dir)
                .status();
        }
        panic!("could not start a test cluster: {last_error}");
    }

    fn prepare_template(&self) {
        let mut admin = self.admin();
        admin
            .batch_execute(&format!("CREATE DATABASE {TEMPLATE}"))
            .expect("create template database");
        let mut c = postgres::Client::connect(&self.url(TEMPLATE), postgres::NoTls)
            .expect("connect to template");
        c.batch_execute("CREATE EXTENSION pg_authaudit").expect(
            "CREATE EXTENSION pg_authaudit (is the extension installed? run `make install`)",
        );
    }

    /// Restarts the server (fast shutdown: sessions and replication
    /// connections are dropped), as an operator or a failover would.
    pub fn restart(&self) {
        let out = Cluster::script(self.pgbin.as_deref())
            .arg("restart")
            .arg(&self.dir)
            .output()
            .expect("scripts/testcluster.sh runs");
        assert!(
            out.status.success(),
            "restart failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The lines of the server's log that show a server process crashed.
    pub fn crash_lines(&self) -> Vec<String> {
        crash_lines_in(&self.dir.join("server.log"))
    }

    /// Fails the calling test when the server crashed (any test of this
    /// process may have caused it: the first to see it names it).
    /// A cluster whose tests crash it on purpose is not checked.
    pub fn assert_no_crash(&self) {
        if self.crashes_expected {
            return;
        }
        let lines = self.crash_lines();
        assert!(
            lines.is_empty(),
            "the PostgreSQL server crashed during this test (server log {}):\n{}",
            self.dir.join("server.log").display(),
            lines.join("\n")
        );
    }

    /// Kills every server process at once (an immediate shutdown: no
    /// checkpoint, no flush) and starts the server again, which recovers
    /// from its WAL.
    pub fn crash(&self) {
        let out = Cluster::script(self.pgbin.as_deref())
            .arg("crash")
            .arg(&self.dir)
            .output()
            .expect("scripts/testcluster.sh runs");
        assert!(
            out.status.success(),
            "crash and restart failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The TCP port the cluster listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's directory; its socket lives here too.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A libpq-style connection string for `dbname` as the superuser.
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={dbname}",
            self.port
        )
    }

    /// A superuser connection to the `postgres` database.
    pub fn admin(&self) -> postgres::Client {
        postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .expect("connect to test cluster")
    }

    /// A new database with pg_authaudit installed and the default lockout
    /// policy switched off (`authaudit.lockout_enabled`), for tests of
    /// recording and chains; dropped when the returned handle is dropped.
    pub fn fresh_db(&'static self, hint: &str) -> TestDb {
        let db = self.fresh_db_with_lockout(hint);
        self.admin()
            .batch_execute(&format!(
                "ALTER DATABASE {} SET authaudit.lockout_enabled = off",
                db.name
            ))
            .expect("switch lockout off");
        db
    }

    /// A new database without the extension (for installing a chosen
    /// version of it, or restoring a dump into).
    pub fn empty_db(&'static self, hint: &str) -> TestDb {
        self.new_db(hint, "template0")
    }

    /// A new database with pg_authaudit and its default lockout policy.
    pub fn fresh_db_with_lockout(&'static self, hint: &str) -> TestDb {
        self.new_db(hint, TEMPLATE)
    }

    fn new_db(&'static self, hint: &str, template: &str) -> TestDb {
        let n = self.next_db.fetch_add(1, Ordering::SeqCst);
        let safe: String = hint
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let name = format!("t{n}_{safe}");
        {
            let _guard = self.create_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.admin()
                .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
                .expect("create test database");
        }
        TestDb {
            cluster: self,
            name,
        }
    }
}

/// One test's database.
#[derive(Debug)]
pub struct TestDb {
    cluster: &'static Cluster,
    name: String,
}

impl TestDb {
    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cluster holding this database.
    pub fn cluster(&self) -> &'static Cluster {
        self.cluster
    }

    /// A libpq-style connection string as the superuser.
    pub fn url(&self) -> String {
        self.cluster.url(&self.name)
    }

    /// A connection as login role `role` (password-less on the test cluster).
    pub fn connect_as(&self, role: &str) -> postgres::Client {
        postgres::Client::connect(
            &format!(
                "host=127.0.0.1 port={} user={role} dbname={}",
                self.cluster.port, self.name
            ),
            postgres::NoTls,
        )
        .expect("log in")
    }

    /// A new superuser connection.
    pub fn connect(&self) -> postgres::Client {
        postgres::Client::connect(&self.url(), postgres::NoTls).expect("connect to test database")
    }

    /// A superuser session whose live recording accepts events up to ten
    /// years old (`authaudit.max_past_skew`), for scenarios dated in the
    /// past that exercise the live engine step by step.
    pub fn connect_dated(&self) -> postgres::Client {
        let mut c = self.connect();
        c.batch_execute("SET authaudit.max_past_skew = '3650d'")
            .expect("widen the past skew");
        c
    }

    /// Runs `psql` with `args` against this database and returns its stdout;
    /// panics with stderr when psql fails.
    pub fn psql(&self, args: &[&str]) -> String {
        let out = Command::new("/usr/lib/postgresql/15/bin/psql")
            .args([
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
            ])
            .args(["-p", &self.cluster.port.to_string(), "-d", &self.name])
            .args(args)
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("psql prints UTF-8")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Keep it for inspection; the watchdog removes the cluster.
            return;
        }
        // A test after which the server crashed fails, whatever it asserted.
        self.cluster.assert_no_crash();
        let _ = self.cluster.admin().batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

/// A private copy of the PostgreSQL tree under `tree` with the install
/// scripts of earlier releases added to its extension directory; returns
/// its `bin/`.
fn release_tree(tree: &Path) -> PathBuf {
    let run = |c: &mut Command| -> String {
        let out = c.output().expect("runs");
        assert!(
            out.status.success(),
            "{c:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let pg_config = PathBuf::from(run(Command::new(
        repo_root().join("scripts/private-pg-tree.sh"),
    )
    .arg("/usr/lib/postgresql/15/bin/pg_config")
    .arg(tree)));
    let extdir = PathBuf::from(run(Command::new(&pg_config).arg("--sharedir"))).join("extension");
    run(Command::new("tar")
        .arg("-xJf")
        .arg(repo_root().join(RELEASE_SCRIPTS))
        .arg("-C")
        .arg(&extdir));
    pg_config
        .parent()
        .expect("pg_config is in bin/")
        .to_path_buf()
}
