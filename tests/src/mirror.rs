//! The mirror's harness: a document store (the project's MongoDB-wire
//! server, SecantusDB, or `AUTHAUDIT_MONGODB_URI`), the real sidecar binary
//! streaming from a test database's logical replication, and the checks the
//! mirror suites share (tests/e2e/mirror.rs and the suites that mirror).

use crate::recording::{record, try_record, Event};
use crate::{free_port, log_id, Secantus, TestDb};
use authaudit_mongowire::Server;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The sidecar binary (built by `make test-e2e` before the tests).
pub fn sidecar_bin() -> std::path::PathBuf {
    match std::env::var("AUTHAUDIT_SIDECAR_BIN") {
        Ok(p) => p.into(),
        Err(_) => crate::built_binary("authaudit-sidecar"),
    }
}

/// A document store for one test: its own wire server, or a database of
/// its own on `AUTHAUDIT_MONGODB_URI`.
pub struct Store {
    pub server: Option<Server>,
    pub uri: String,
    pub database: String,
}

impl Store {
    pub fn new(name: &str) -> Store {
        match std::env::var("AUTHAUDIT_MONGODB_URI") {
            Ok(uri) => Store {
                server: None,
                uri,
                database: format!("authaudit_test_{name}_{}", std::process::id()),
            },
            Err(_) => {
                let server = Server::start("127.0.0.1:0").unwrap();
                Store {
                    uri: server.uri(),
                    server: Some(server),
                    database: "authaudit".into(),
                }
            }
        }
    }

    /// A store at `uri` (a server the test runs itself), database
    /// `authaudit`.
    pub fn at(uri: String) -> Store {
        Store {
            server: None,
            uri,
            database: "authaudit".into(),
        }
    }

    /// The fault injection of the test's own wire server (none on a real
    /// MongoDB).
    pub fn faults(&self) -> Option<&std::sync::Arc<authaudit_mongowire::Faults>> {
        self.server.as_ref().map(|s| &s.faults)
    }

    /// A database of its own on the shared SecantusDB server.
    pub fn secantus(name: &str) -> Store {
        Store {
            server: None,
            uri: Secantus::shared().uri(),
            database: format!("authaudit_test_{name}_{}", std::process::id()),
        }
    }

    /// Every document of `collection`, in `sort` order.
    pub fn documents(&self, collection: &str, sort: bson::Document) -> Vec<bson::Document> {
        self.raw_documents(collection, sort)
            .iter()
            .map(|d| d.to_document().unwrap())
            .collect()
    }

    /// Every document of `collection` as stored, in `sort` order (raw:
    /// keys such as `$date` are not read as extended JSON).
    pub fn raw_documents(
        &self,
        collection: &str,
        sort: bson::Document,
    ) -> Vec<bson::RawDocumentBuf> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = mongodb::Client::with_uri_str(&self.uri).await.unwrap();
            let mut cursor = client
                .database(&self.database)
                .collection::<bson::RawDocumentBuf>(collection)
                .find(bson::doc! {})
                .sort(sort)
                .await
                .unwrap();
            let mut out = Vec::new();
            while cursor.advance().await.unwrap() {
                out.push(cursor.current().to_raw_document_buf());
            }
            out
        })
    }

    pub fn count(&self, collection: &str) -> u64 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let c = mongodb::Client::with_uri_str(&self.uri).await.unwrap();
            c.database(&self.database)
                .collection::<bson::Document>(collection)
                .count_documents(bson::doc! {})
                .await
                .unwrap()
        })
    }
}

/// The sidecar of one test database, with its own slot.
pub struct Mirror<'a> {
    db: &'a TestDb,
    store: &'a Store,
    pub slot: String,
    pub metrics_port: u16,
    child: Option<Child>,
    /// Environment beyond the defaults (later entries win).
    pub env: Vec<(String, String)>,
}

impl<'a> Mirror<'a> {
    pub fn new(db: &'a TestDb, store: &'a Store) -> Mirror<'a> {
        let m = Mirror {
            slot: db.name().replace('-', "_"),
            db,
            store,
            metrics_port: free_port(),
            child: None,
            env: Vec::new(),
        };
        // The log of an earlier run of the suite is not this mirror's.
        let _ = std::fs::remove_file(m.log_path());
        m
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(sidecar_bin());
        c.env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.db.cluster().port().to_string())
            .env("PGUSER", "postgres")
            .env("PGDATABASE", self.db.name())
            .env("AUTHAUDIT_SLOT", &self.slot)
            .env("AUTHAUDIT_MONGODB_URI", &self.store.uri)
            .env("AUTHAUDIT_MONGODB_DATABASE", &self.store.database)
            .env(
                "AUTHAUDIT_METRICS_LISTEN",
                format!("127.0.0.1:{}", self.metrics_port),
            )
            .env("AUTHAUDIT_MAX_BACKOFF_MS", "500")
            .env("AUTHAUDIT_LOG", "warn");
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Where the sidecar's log goes (kept for a failing test to look at).
    pub fn log_path(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("authaudit-sidecar-{}.log", self.slot))
    }

    /// The sidecar's log so far, every run of this mirror.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.log_path()).unwrap_or_default()).into_owned()
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = self
            .command()
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        c.wait().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// `sidecar verify`: (exit code, output).
    pub fn verify(&self) -> (i32, String) {
        self.verify_with(&[])
    }

    /// `sidecar verify` with more environment: (exit code, output).
    pub fn verify_with(&self, env: &[(&str, &str)]) -> (i32, String) {
        let out = self
            .command()
            .envs(env.iter().copied())
            .arg("verify")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), text)
    }

    /// Waits until `verify` reports identical stores.
    pub fn wait_identical(&self, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let (code, text) = self.verify();
            if code == 0 {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "stores still differ after {within:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the sidecar streams (`authaudit_sidecar_streaming` 1).
    pub fn wait_streaming(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.metric("authaudit_sidecar_streaming") != 1.0 {
            assert!(Instant::now() < deadline, "not streaming");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the slot's `confirmed_flush_lsn` has reached `lsn`.
    pub fn flushed_to(&self, lsn: &str) -> bool {
        self.db
            .connect()
            .query_one(
                "SELECT confirmed_flush_lsn >= $2::text::pg_lsn FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.slot, &lsn],
            )
            .unwrap()
            .get(0)
    }

    /// The log rows the slot still holds for its consumer (it was not told
    /// they are durable): the `log_id`s inserted into `authaudit.auth_log`
    /// after its confirmed position. Peeks without consuming, so the
    /// sidecar must not be running.
    pub fn unacknowledged_log_ids(&self) -> Vec<String> {
        let mut c = self.db.connect();
        // The walsender ends a moment after the sidecar.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while c
            .query_one(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.slot],
            )
            .unwrap()
            .get::<_, bool>(0)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the slot stays active"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let rows = c
            .query(
                "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, \
                   'proto_version', '1', 'publication_names', 'authaudit_mirror') \
                  WHERE get_byte(data, 0) = 73",
                &[&self.slot],
            )
            .unwrap();
        // An insert message holds its new tuple's columns as text; a
        // log_id is the only UUID of a log row.
        rows.iter()
            .filter_map(|r| {
                let data: Vec<u8> = r.get(0);
                let text = String::from_utf8_lossy(&data).into_owned();
                text.split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
                    .find(|w| w.len() == 36 && w.matches('-').count() == 4)
                    .map(str::to_owned)
            })
            .collect()
    }

    /// The HTTP response of the metrics endpoint's `path` (empty while the
    /// sidecar does not listen).
    pub fn get(&self, path: &str) -> String {
        self.get_accepting(path, "*/*")
    }

    /// The response to a GET of `path` with this `Accept` header.
    pub fn get_accepting(&self, path: &str, accept: &str) -> String {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)) else {
            return String::new();
        };
        let _ = s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: {accept}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    pub fn metrics(&self) -> String {
        self.get("/metrics")
    }

    pub fn metric(&self, name: &str) -> f64 {
        self.metrics()
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Mirror<'_> {
    fn drop(&mut self) {
        self.kill();
        let mut c = self.db.connect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while c
            .execute("SELECT pg_drop_replication_slot($1)", &[&self.slot])
            .is_err_and(|e| !e.to_string().contains("does not exist"))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Records events from `sessions` connections until `stop`; returns a
/// counter of recorded events.
pub fn writers(
    db: &TestDb,
    sessions: u32,
    stop: Arc<AtomicBool>,
    tag: u32,
) -> (Arc<AtomicU32>, Vec<std::thread::JoinHandle<()>>) {
    let count = Arc::new(AtomicU32::new(0));
    let handles = (0..sessions)
        .map(|s| {
            let (url, stop, count) = (db.url(), stop.clone(), count.clone());
            std::thread::spawn(move || {
                let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let id = log_id(tag * 100 + s, n);
                    let ty = if n % 5 == 4 {
                        "login_success"
                    } else {
                        "login_failed"
                    };
                    // A transient failure (e.g. PostgreSQL restarting) is
                    // retried with the same log_id: recording is idempotent.
                    loop {
                        let e = Event::new(
                            &format!("tenant-{}", s % 4),
                            ty,
                            &format!("user{}", n % 13),
                        )
                        .log_id(&id)
                        .ip("198.51.100.9");
                        match try_record(&mut c, &e) {
                            Ok(_) => break,
                            Err(_) if stop.load(Ordering::Relaxed) => return,
                            Err(_) => {
                                std::thread::sleep(Duration::from_millis(100));
                                if let Ok(nc) = postgres::Client::connect(&url, postgres::NoTls) {
                                    c = nc;
                                }
                            }
                        }
                    }
                    n += 1;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    (count, handles)
}

pub fn record_some(db: &TestDb, tag: u32, n: u32) {
    let mut c = db.connect();
    for i in 0..n {
        let e = Event::failed("tenant-0", &format!("early{}", i % 3))
            .log_id(&log_id(tag, i))
            .channel("mobile");
        record(&mut c, &e);
    }
}

pub fn log_rows(db: &TestDb) -> u64 {
    let n: i64 = db
        .connect()
        .query_one("SELECT count(*) FROM authaudit.auth_log", &[])
        .unwrap()
        .get(0);
    n as u64
}

/// Rewrites every link and digest of `tenant` from its stored fields with
/// the public algorithm, as an insider who knows it would after an edit.
pub fn recompute_chain(c: &mut postgres::Client, tenant: &str) {
    use authaudit_core::canonical::{encode_body, Record};
    use authaudit_core::chain::ChainHead;
    let rows = c
        .query(
            "SELECT seq, replace(log_id::text, '-', ''), org_id, event_type, user_id, host(ip), user_agent, \
                    channel, (extract(epoch FROM occurred_at) * 1000000)::bigint, \
                    (extract(epoch FROM recorded_at) * 1000000)::bigint, metadata::text \
               FROM authaudit.auth_log WHERE tenant_id = $1 ORDER BY seq",
            &[&tenant],
        )
        .unwrap();
    let mut head = ChainHead::genesis(tenant);
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("SET LOCAL session_replication_role = replica")
        .unwrap();
    for r in rows {
        let seq: i64 = r.get(0);
        let id: [u8; 16] = hex::decode(r.get::<_, String>(1))
            .unwrap()
            .try_into()
            .unwrap();
        let ip: Option<String> = r.get(5);
        let ip = ip.map(|i| i.parse().unwrap());
        let body = encode_body(&Record {
            log_id: id,
            tenant_id: tenant,
            org_id: r.get(2),
            event_type: r.get(3),
            user_id: r.get(4),
            ip,
            user_agent: r.get(6),
            channel: r.get(7),
            occurred_at_us: r.get(8),
            recorded_at_us: r.get(9),
            metadata: r.get(10),
        });
        let next = head.next(seq, &body);
        tx.execute(
            "UPDATE authaudit.auth_log SET prev_link = $3, link_sha256 = $4, digest_sha512 = $5, \
               digest_sha3_256 = $6 WHERE tenant_id = $1 AND seq = $2",
            &[
                &tenant,
                &seq,
                &head.sha256.as_slice(),
                &next.sha256.as_slice(),
                &next.sha512.as_slice(),
                &next.sha3_256.as_slice(),
            ],
        )
        .unwrap();
        head = next;
    }
    tx.commit().unwrap();
}
