//! The session against a scripted stream and destinations in memory,
//! under paused time: no PostgreSQL, no MongoDB.

use super::session::{Replication, Session};
use super::start::Started;
use super::StoreLookups;
use crate::config::Cli;
use crate::destination::{Batch, DeliveryError, Destination};
use crate::metrics::{DestinationKind, Metrics};
use crate::mongo_store::StoreError;
use crate::pipeline::Limits;
use crate::witness::{TenantTree, TreeSource};
use bson::RawDocumentBuf;
use clap::Parser;
use futures_util::future::BoxFuture;
use pgwire_replication::{Lsn, PgWireError, ReplicationEvent};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};

/// What happened, in order: deliveries and acknowledgements.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// A destination delivered a batch holding these transactions' rows
    /// (each row is named after its transaction's end LSN).
    Delivered { destination: usize, rows: Vec<u64> },
    /// The position reported to PostgreSQL.
    Ack(u64),
}

type Journal = Arc<Mutex<Vec<Entry>>>;

/// The stream: events the test sends; acknowledgements to the journal.
struct Script {
    events: mpsc::UnboundedReceiver<ReplicationEvent>,
    journal: Journal,
}

impl Replication for Script {
    async fn recv(&mut self) -> Result<Option<ReplicationEvent>, PgWireError> {
        Ok(self.events.recv().await)
    }

    fn acknowledge(&self, lsn: Lsn) {
        self.journal.lock().unwrap().push(Entry::Ack(lsn.as_u64()));
    }

    async fn close(&mut self, _acked: Lsn) {}
}

/// A store that holds nothing (the script sends lockout rows only).
struct Empty;

impl StoreLookups for Empty {
    async fn last_link(&self, _: &str) -> Result<Option<(i64, String)>, StoreError> {
        Ok(None)
    }
    async fn checkpoint_link(&self, _: &str, _: i64) -> Result<Option<String>, StoreError> {
        Ok(None)
    }
    async fn held_alerts(&self, _: &[String]) -> Result<HashSet<String>, StoreError> {
        Ok(HashSet::new())
    }
    async fn log_document(&self, _: &str, _: i64) -> Result<Option<RawDocumentBuf>, StoreError> {
        Ok(None)
    }
    async fn unresolved_tampers(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}

impl TreeSource for Empty {
    async fn witness_tree(&self, _: &str) -> Result<TenantTree, StoreError> {
        unreachable!("no witness in these tests")
    }
}

/// A destination in memory: each delivery takes a permit of its gate
/// (the test opens it), or fails at once while `refusing`.
struct Memory {
    index: usize,
    gate: Arc<Semaphore>,
    refusing: Arc<AtomicBool>,
    journal: Journal,
}

impl Destination for Memory {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn kind(&self) -> DestinationKind {
        DestinationKind::Store
    }

    fn deliver<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            if self.refusing.load(Ordering::SeqCst) {
                return Err(DeliveryError::WitnessLog {
                    path: "memory".into(),
                    source: std::io::Error::other("down"),
                });
            }
            self.gate.acquire().await.expect("open").forget();
            let mut rows: Vec<u64> = batch
                .lockout
                .keys()
                .map(|id| id.trim_start_matches("t/u").parse().expect("u<lsn>"))
                .collect();
            rows.sort_unstable();
            self.journal.lock().unwrap().push(Entry::Delivered {
                destination: self.index,
                rows,
            });
            Ok(())
        })
    }

    fn failed(&self, _: &Metrics) {}
}

const OID: u32 = 16390;

/// The Relation message of `authaudit.lockout_state` (three columns).
fn relation() -> Vec<u8> {
    let mut m = vec![b'R'];
    m.extend(OID.to_be_bytes());
    m.extend(b"authaudit\0lockout_state\0");
    m.push(b'd');
    m.extend(3i16.to_be_bytes());
    for (name, oid) in [("tenant_id", 25u32), ("user_id", 25), ("last_seq", 20)] {
        m.push(1);
        m.extend(name.as_bytes());
        m.push(0);
        m.extend(oid.to_be_bytes());
        m.extend((-1i32).to_be_bytes());
    }
    m
}

/// An Insert of the lockout row of user `u<lsn>`.
fn insert(lsn: u64) -> Vec<u8> {
    let mut m = vec![b'I'];
    m.extend(OID.to_be_bytes());
    m.push(b'N');
    m.extend(3i16.to_be_bytes());
    for v in ["t".to_string(), format!("u{lsn}"), "1".to_string()] {
        m.push(b't');
        m.extend((v.len() as i32).to_be_bytes());
        m.extend(v.as_bytes());
    }
    m
}

fn xlog(data: Vec<u8>) -> ReplicationEvent {
    ReplicationEvent::XLogData {
        wal_start: Lsn::ZERO,
        wal_end: Lsn::ZERO,
        server_time_micros: 0,
        data: data.into(),
    }
}

/// The session's surroundings, driven by the test.
struct Harness {
    events: mpsc::UnboundedSender<ReplicationEvent>,
    journal: Journal,
    gates: Vec<Arc<Semaphore>>,
    refusing: Vec<Arc<AtomicBool>>,
    stop: watch::Sender<bool>,
    _store_changed: watch::Sender<Option<String>>,
}

impl Harness {
    /// A session with `n` destinations, every gate closed.
    fn new(n: usize) -> (Harness, Session<Script, Empty>, watch::Receiver<bool>) {
        let batch = Cli::try_parse_from(["authaudit-sidecar"])
            .unwrap()
            .config
            .batch;
        let metrics = Arc::new(Metrics::new(false));
        let journal = Journal::default();
        let (events, rx) = mpsc::unbounded_channel();
        let (store_tx, store_changed) = watch::channel(None);
        let (stop, shutdown) = watch::channel(false);
        let gates: Vec<_> = (0..n).map(|_| Arc::new(Semaphore::new(0))).collect();
        let refusing: Vec<_> = (0..n).map(|_| Arc::new(AtomicBool::new(false))).collect();
        let destinations = (0..n)
            .map(|index| {
                Arc::new(Memory {
                    index,
                    gate: gates[index].clone(),
                    refusing: refusing[index].clone(),
                    journal: journal.clone(),
                }) as Arc<dyn Destination>
            })
            .collect();
        let started = Started {
            repl: Script {
                events: rx,
                journal: journal.clone(),
            },
            store: Empty,
            pg: None,
            destinations,
            siem: None,
            witness: None,
            detections: None,
            warm_alerts: Vec::new(),
            copied_heads: HashMap::new(),
            store_changed,
            monitor: None,
            limits: Limits {
                rows: 1000,
                bytes: 1 << 20,
                wait: Duration::from_millis(20),
                outstanding: 1,
            },
        };
        let session = Session::new(started, &batch, &metrics, &shutdown);
        events.send(xlog(relation())).unwrap();
        let h = Harness {
            events,
            journal,
            gates,
            refusing,
            stop,
            _store_changed: store_tx,
        };
        (h, session, shutdown)
    }

    /// A transaction of one row, ending at `lsn`.
    fn transaction(&self, lsn: u64) {
        let e = &self.events;
        e.send(ReplicationEvent::Begin {
            final_lsn: Lsn::from(lsn),
            xid: 1,
            commit_time_micros: 0,
        })
        .unwrap();
        e.send(xlog(insert(lsn))).unwrap();
        e.send(ReplicationEvent::Commit {
            lsn: Lsn::from(lsn),
            end_lsn: Lsn::from(lsn),
            commit_time_micros: 0,
        })
        .unwrap();
    }

    /// Every gate open, and a first transaction (0x100) delivered and
    /// acknowledged.
    async fn delivered_first(&self) {
        for d in 0..self.gates.len() {
            self.open(d, 100);
        }
        self.transaction(0x100);
        settle().await;
        assert_eq!(self.acks(), vec![0x100]);
    }

    fn open(&self, destination: usize, batches: usize) {
        self.gates[destination].add_permits(batches);
    }

    fn journal(&self) -> Vec<Entry> {
        self.journal.lock().unwrap().clone()
    }

    fn acks(&self) -> Vec<u64> {
        let j = self.journal();
        j.iter()
            .filter_map(|e| match e {
                Entry::Ack(l) => Some(*l),
                _ => None,
            })
            .collect()
    }

    /// Every acknowledgement comes after every destination delivered
    /// every transaction up to it.
    fn assert_acks_follow_deliveries(&self, destinations: usize, transactions: &[u64]) {
        let j = self.journal();
        for (i, e) in j.iter().enumerate() {
            let Entry::Ack(acked) = e else { continue };
            for t in transactions.iter().filter(|t| *t <= acked) {
                for d in 0..destinations {
                    let delivered = j[..i].iter().any(|e| {
                        matches!(e, Entry::Delivered { destination, rows }
                            if *destination == d && rows.contains(t))
                    });
                    assert!(
                        delivered,
                        "ack {acked:#x} before destination {d} delivered {t:#x}: {j:?}"
                    );
                }
            }
        }
    }
}

/// Long enough for the session to read what was sent, shorter than a
/// batch's wait.
async fn read_not_due() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[tokio::test(start_paused = true)]
async fn nothing_is_acknowledged_before_every_destination_delivered_it() {
    let (h, session, mut shutdown) = Harness::new(2);
    let script = async {
        h.transaction(0x100);
        settle().await;
        // Handed to both, delivered by neither; a keepalive now must not
        // move the slot past the pending transaction either.
        h.events
            .send(ReplicationEvent::KeepAlive {
                wal_end: Lsn::from(0x180),
                reply_requested: false,
                server_time_micros: 0,
            })
            .unwrap();
        settle().await;
        assert_eq!(h.acks(), Vec::<u64>::new());
        // The first destination delivers; the second has not.
        h.open(0, 10);
        settle().await;
        assert_eq!(h.acks(), Vec::<u64>::new(), "{:?}", h.journal());
        // A second transaction waits behind the first (one in flight).
        h.transaction(0x200);
        settle().await;
        assert_eq!(h.acks(), Vec::<u64>::new());
        h.open(1, 1);
        settle().await;
        assert_eq!(h.acks(), vec![0x100]);
        h.open(1, 1);
        settle().await;
        assert_eq!(h.acks(), vec![0x100, 0x200]);
        h.assert_acks_follow_deliveries(2, &[0x100, 0x200]);
        h.stop.send(true).unwrap();
    };
    let (acked, ()) = tokio::join!(session.run(&mut shutdown), script);
    assert_eq!(acked.unwrap(), Lsn::from(0x200));
}

#[tokio::test(start_paused = true)]
async fn the_drain_acknowledges_what_every_destination_delivered() {
    let (h, session, mut shutdown) = Harness::new(2);
    let script = async {
        h.delivered_first().await;
        // A commit in the open batch, not yet due: the drain delivers it
        // once to each destination and acknowledges it.
        h.transaction(0x200);
        read_not_due().await;
        h.stop.send(true).unwrap();
    };
    let (acked, ()) = tokio::join!(session.run(&mut shutdown), script);
    assert_eq!(acked.unwrap(), Lsn::from(0x200));
    assert_eq!(h.acks(), vec![0x100, 0x200]);
    h.assert_acks_follow_deliveries(2, &[0x100, 0x200]);
}

#[tokio::test(start_paused = true)]
async fn the_drain_acknowledges_nothing_a_destination_refused() {
    let (h, session, mut shutdown) = Harness::new(2);
    let script = async {
        h.delivered_first().await;
        // The second destination goes down; a commit arrives and the
        // process stops before its batch is due.
        h.refusing[1].store(true, Ordering::SeqCst);
        h.transaction(0x200);
        read_not_due().await;
        h.stop.send(true).unwrap();
    };
    let (acked, ()) = tokio::join!(session.run(&mut shutdown), script);
    assert_eq!(acked.unwrap(), Lsn::from(0x100));
    assert_eq!(h.acks(), vec![0x100]);
    // The first destination took it; the position stays for the replay.
    assert!(h.journal().contains(&Entry::Delivered {
        destination: 0,
        rows: vec![0x200]
    }));
}

#[tokio::test(start_paused = true)]
async fn the_drain_waits_for_the_batch_in_flight() {
    let (h, session, mut shutdown) = Harness::new(2);
    let script = async {
        h.open(0, 100);
        h.transaction(0x100);
        settle().await;
        // In flight at the second destination when the stop comes: the
        // drain waits for its receipt, then acknowledges it.
        h.stop.send(true).unwrap();
        settle().await;
        assert_eq!(h.acks(), Vec::<u64>::new());
        h.open(1, 100);
    };
    let (acked, ()) = tokio::join!(session.run(&mut shutdown), script);
    assert_eq!(acked.unwrap(), Lsn::from(0x100));
    h.assert_acks_follow_deliveries(2, &[0x100]);
}
