//! A MongoDB-wire test and development server for pg_authaudit's mirror.
//!
//! It speaks OP_MSG over TCP to the official drivers and implements exactly
//! the commands the sidecar and `sidecar verify` use (see [`store`]), with
//! MongoDB's semantics and error codes. Data lives in memory and is gone
//! when the server stops: it is a stand-in for tests and the local demo,
//! never a database. Faults can be injected ([`Faults`]): failed writes with
//! a retryable error, connections dropped in the middle of a batch (part of
//! it applied, no reply), write concern errors, and stalls.

pub mod concern;
pub mod store;
pub mod wire;

use bson::{doc, Bson, Document, RawDocumentBuf};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::{codes, CommandError, Store};
use tokio::net::{TcpListener, TcpStream};

/// Faults to inject, shared with the running server.
#[derive(Debug, Default)]
pub struct Faults {
    fail_writes: AtomicU32,
    fail_code: AtomicI32,
    drop_mid_batch: AtomicU32,
    write_concern_errors: AtomicU32,
    stall_until: Mutex<Option<Instant>>,
    /// Write commands received (including failed ones).
    pub writes_seen: AtomicU64,
}

impl Faults {
    /// The next `n` write commands fail, unapplied, with `code` and the
    /// `RetryableWriteError` label (e.g. 91 ShutdownInProgress).
    pub fn fail_next_writes(&self, n: u32, code: i32) {
        self.fail_code.store(code, Ordering::SeqCst);
        self.fail_writes.store(n, Ordering::SeqCst);
    }

    /// The next `n` write commands apply half of their statements and then
    /// the connection is closed without a reply.
    pub fn drop_connection_mid_batch(&self, n: u32) {
        self.drop_mid_batch.store(n, Ordering::SeqCst);
    }

    /// The next `n` write commands are applied but answer with a
    /// `writeConcernError` (code 64, WriteConcernFailed).
    pub fn write_concern_error_next(&self, n: u32) {
        self.write_concern_errors.store(n, Ordering::SeqCst);
    }

    /// Every command waits until `d` from now before it is handled.
    pub fn stall_for(&self, d: Duration) {
        *self.stall_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + d);
    }

    /// Ends a stall at once.
    pub fn clear(&self) {
        self.fail_writes.store(0, Ordering::SeqCst);
        self.drop_mid_batch.store(0, Ordering::SeqCst);
        self.write_concern_errors.store(0, Ordering::SeqCst);
        *self.stall_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn take(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    fn stalled_until(&self) -> Option<Instant> {
        *self.stall_until.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub faults: Arc<Faults>,
    pub store: Arc<Mutex<Store>>,
    _runtime: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Starts a server on `listen` (e.g. `127.0.0.1:0`) on a thread of its own.
    pub fn start(listen: &str) -> std::io::Result<Server> {
        let std_listener = std::net::TcpListener::bind(listen)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let faults = Arc::new(Faults::default());
        let store = Arc::new(Mutex::new(Store::default()));
        let (f, s) = (faults.clone(), store.clone());
        let thread = std::thread::Builder::new()
            .name("mongowire".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(std_listener).expect("listener");
                    serve(listener, f, s).await;
                });
            })?;
        Ok(Server {
            addr,
            faults,
            store,
            _runtime: Some(thread),
        })
    }

    /// A MongoDB connection string for this server.
    pub fn uri(&self) -> String {
        format!("mongodb://{}/?directConnection=true", self.addr)
    }

    /// A copy of a collection's documents.
    pub fn documents(&self, db: &str, collection: &str) -> Vec<Document> {
        self.store
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .documents(&format!("{db}.{collection}"))
    }
}

/// Accepts connections until the process ends.
pub async fn serve(listener: TcpListener, faults: Arc<Faults>, store: Arc<Mutex<Store>>) {
    let connections = Arc::new(AtomicI32::new(0));
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let id = connections.fetch_add(1, Ordering::SeqCst) + 1;
        let (f, s) = (faults.clone(), store.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(socket, id, f, s).await {
                tracing::debug!(connection = id, error = %e, "connection ended");
            }
        });
    }
}

async fn connection(
    mut socket: TcpStream,
    id: i32,
    faults: Arc<Faults>,
    store: Arc<Mutex<Store>>,
) -> Result<(), wire::WireError> {
    socket.set_nodelay(true).ok();
    let mut next_id = 1;
    while let Some(req) = wire::read_request(&mut socket).await? {
        // A stall ends at its time or when cleared, whichever is first.
        while let Some(until) = faults.stalled_until() {
            let now = Instant::now();
            if until <= now {
                break;
            }
            tokio::time::sleep((until - now).min(Duration::from_millis(20))).await;
        }
        let started = Instant::now();
        let command = req.body.keys().next().cloned().unwrap_or_default();
        let reply = match handle(req.body, id, &faults, &store) {
            Handled::Reply(d) => d,
            Handled::Drop => return Ok(()),
        };
        tracing::debug!(
            command = command.as_str(),
            micros = started.elapsed().as_micros() as u64,
            "handled"
        );
        if req.flags & wire::MORE_TO_COME == 0 {
            wire::write_reply(&mut socket, next_id, req.request_id, &reply).await?;
            next_id += 1;
        }
    }
    Ok(())
}

enum Handled {
    Reply(RawDocumentBuf),
    /// Close the connection without replying.
    Drop,
}

const WRITE_COMMANDS: [&str; 3] = ["insert", "update", "delete"];

fn handle(body: Document, connection_id: i32, faults: &Faults, store: &Mutex<Store>) -> Handled {
    let Some((name, _)) = body.iter().next() else {
        return Handled::Reply(store::raw(
            &CommandError::new(codes::FAILED_TO_PARSE, "FailedToParse", "empty command")
                .to_document(),
        ));
    };
    let name = name.clone();
    let db = body.get_str("$db").unwrap_or("test").to_string();
    let is_write = WRITE_COMMANDS.contains(&name.as_str());
    let mut stop_after = None;
    let mut concern_error = false;
    if is_write {
        faults.writes_seen.fetch_add(1, Ordering::SeqCst);
        if Faults::take(&faults.fail_writes) {
            let code = faults.fail_code.load(Ordering::SeqCst);
            return Handled::Reply(store::raw(&doc! {
                "ok": 0.0, "code": code, "codeName": "ShutdownInProgress",
                "errmsg": "injected failure: the server is shutting down",
                "errorLabels": ["RetryableWriteError"],
            }));
        }
        if Faults::take(&faults.drop_mid_batch) {
            let n = ["documents", "updates", "deletes"]
                .iter()
                .find_map(|k| body.get_array(k).ok())
                .map_or(0, Vec::len);
            stop_after = Some(n / 2);
        }
        concern_error = Faults::take(&faults.write_concern_errors);
    }
    let concern = if is_write {
        match concern::check(&body) {
            Ok(c) => c,
            Err(e) => return Handled::Reply(store::raw(&e.to_document())),
        }
    } else {
        None
    };
    // The handshake and liveness commands need no store: they are answered
    // while another connection's long command holds it, as a server answers
    // its clients' monitors (the driver gives up on a server whose monitor
    // gets no reply in time).
    match name.as_str() {
        "hello" | "isMaster" | "ismaster" => {
            return Handled::Reply(store::raw(&hello(connection_id)))
        }
        "ping" => return Handled::Reply(store::raw(&doc! {"ok": 1.0})),
        _ => {}
    }
    let mut s = store.lock().unwrap_or_else(|e| e.into_inner());
    let result = match name.as_str() {
        "endSessions" | "killSessions" | "getLastError" | "saslStart" => Ok(doc! {"ok": 1.0}),
        "buildInfo" | "buildinfo" => Ok(
            doc! {"version": "7.0.0", "versionArray": [7, 0, 0, 0], "gitVersion": "authaudit-mongowire", "maxBsonObjectSize": 16_777_216, "ok": 1.0},
        ),
        "insert" => s.insert(&db, body, stop_after),
        "update" => s.update(&db, &body, stop_after),
        "delete" => s.delete(&db, &body),
        // Cursors answer with the stored BSON as it is.
        "find" => return reply(s.find(&db, &body)),
        "getMore" => return reply(s.get_more(&body)),
        "aggregate" => return reply(s.aggregate(&db, &body)),
        "listIndexes" => return reply(s.list_indexes(&db, &body)),
        "killCursors" => s.kill_cursors(&body),
        "count" => s.count(&db, &body),
        "createIndexes" => s.create_indexes(&db, &body),
        "drop" => s.drop_collection(&db, &body),
        "dropDatabase" => s.drop_database(&db),
        other => Err(CommandError::new(
            codes::COMMAND_NOT_FOUND,
            "CommandNotFound",
            format!("no such command: '{other}'"),
        )),
    };
    drop(s);
    if stop_after.is_some() {
        return Handled::Drop;
    }
    Handled::Reply(store::raw(&match result {
        Ok(mut d) => {
            if let Some(wce) = concern {
                d.insert("writeConcernError", wce);
            } else if concern_error {
                d.insert(
                    "writeConcernError",
                    doc! {"code": 64, "codeName": "WriteConcernFailed", "errmsg": "injected: waiting for replication timed out", "errInfo": {"wtimeout": true}},
                );
            }
            d
        }
        Err(e) => e.to_document(),
    }))
}

/// The reply of a read command.
fn reply(result: Result<RawDocumentBuf, CommandError>) -> Handled {
    Handled::Reply(match result {
        Ok(d) => d,
        Err(e) => store::raw(&e.to_document()),
    })
}

fn hello(connection_id: i32) -> Document {
    doc! {
        "helloOk": true,
        "ismaster": true,
        "isWritablePrimary": true,
        "maxBsonObjectSize": 16_777_216,
        "maxMessageSizeBytes": wire::MAX_MESSAGE_BYTES as i32,
        "maxWriteBatchSize": 100_000,
        "localTime": Bson::DateTime(bson::DateTime::now()),
        "logicalSessionTimeoutMinutes": 30,
        "connectionId": connection_id,
        "minWireVersion": 0,
        "maxWireVersion": 21,
        "readOnly": false,
        "ok": 1.0,
    }
}
