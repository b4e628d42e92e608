//! SecantusDB, a second and independent MongoDB-wire server (PyPI
//! `SecantusDB`, installed by `scripts/setup.sh` into a virtual
//! environment), started on a loopback port for the document-store suites.
//! It stores on WiredTiger and behaves like MongoDB where the project's own
//! wire server could be lenient; it is a separate process (GPL-2.0), never
//! linked.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Where `scripts/setup.sh` installs the daemon.
const DEFAULT_DAEMON: &str = "/opt/authaudit-secantus/bin/secantusd-py";

/// A running SecantusDB server, stopped when the test process exits.
#[derive(Debug)]
pub struct Secantus {
    port: u16,
    child: Mutex<Child>,
    dir: PathBuf,
}

fn daemon() -> PathBuf {
    std::env::var("AUTHAUDIT_SECANTUSD")
        .map_or_else(|_| PathBuf::from(DEFAULT_DAEMON), PathBuf::from)
}

impl Secantus {
    /// The server shared by every test of this process, started on first
    /// use.
    pub fn shared() -> &'static Secantus {
        static SHARED: OnceLock<Secantus> = OnceLock::new();
        SHARED.get_or_init(Secantus::start)
    }

    fn start() -> Secantus {
        let bin = daemon();
        assert!(
            bin.exists(),
            "{} is missing: scripts/setup.sh installs SecantusDB",
            bin.display()
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let dir = std::env::temp_dir().join(format!("authaudit-secantus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("storage directory");
        let log = std::fs::File::create(dir.with_extension("log")).expect("log file");
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--storage-path")
            .arg(dir.join("data"))
            .args(["--cache-size", "256MB", "--log-level", "WARNING"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("secantusd-py starts");
        // Stops it when this process exits, however it exits.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while kill -0 {} 2>/dev/null; do sleep 1; done; kill {} 2>/dev/null; sleep 2; kill -9 {} 2>/dev/null; rm -rf '{}' '{}.log'",
                std::process::id(),
                child.id(),
                child.id(),
                dir.display(),
                dir.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let s = Secantus {
            port,
            child: Mutex::new(child),
            dir,
        };
        s.wait_ready(Duration::from_secs(60));
        s
    }

    fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.lock().unwrap().try_wait() {
                panic!(
                    "secantusd-py exited ({status}); see {}",
                    self.dir.with_extension("log").display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "SecantusDB did not listen within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The connection string (a single node, no replica set discovery).
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }
}
