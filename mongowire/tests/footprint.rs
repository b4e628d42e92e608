//! The wire server's footprint: what it holds costs about the documents'
//! own size, a scan does not copy the collection, and the work per stored
//! document stays the same as the collection grows.
//!
//! Memory is counted by a global allocator that tracks the bytes live and
//! their peak; work is counted in allocations and in documents examined,
//! so that nothing here depends on the machine's speed.

use authaudit_mongowire::store::Store;
use bson::{doc, Bson, DateTime, Document};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);
static PEAK: AtomicI64 = AtomicI64::new(0);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size() as i64);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `alloc` above with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            grew(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

fn grew(by: i64) {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The counters are global: one test measures at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn live() -> i64 {
    LIVE.load(Ordering::Relaxed)
}

fn reset_peak() {
    PEAK.store(live(), Ordering::Relaxed);
}

/// A mirrored `auth_log` row, as the sidecar writes it.
fn event(tenant: usize, seq: i64) -> Document {
    let log_id = format!("0190d6c2-7e1a-7cc4-9b1e-{:012x}", seq);
    let hex = |n: usize, salt: i64| {
        (0..n)
            .map(|i| char::from(b"0123456789abcdef"[((seq + salt) as usize * 7 + i) % 16]))
            .collect::<String>()
    };
    let t = DateTime::from_millis(1_765_000_000_000 + seq * 250);
    doc! {
        "_id": format!("tenant-{tenant}/{log_id}"),
        "log_id": &log_id,
        "tenant_id": format!("tenant-{tenant}"),
        "org_id": "org-1",
        "seq": seq,
        "event_type": "login_failure",
        "user_id": format!("user{}@agency.example", seq % 500),
        "ip": format!("203.0.113.{}", seq % 250),
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        "channel": "web",
        "occurred_at": t,
        "occurred_at_us": t.timestamp_millis() * 1000,
        "recorded_at": t,
        "recorded_at_us": t.timestamp_millis() * 1000,
        "metadata": {"reason": "bad_password", "attempt": (seq % 9) as i32},
        "format_version": 3,
        "prev_link": hex(64, 1),
        "link_sha256": hex(64, 2),
        "digest_sha512": hex(128, 3),
        "digest_sha3_256": hex(64, 4),
    }
}

fn bson_size(d: &Document) -> i64 {
    bson::to_vec(d).expect("encodes").len() as i64
}

/// The mirror's indexes on `auth_log` (sidecar/src/sink.rs).
fn with_indexes(store: &mut Store) {
    let index = |name: &str, key: Document, unique: bool| {
        Bson::Document(doc! {"name": name, "key": key, "unique": unique})
    };
    store
        .create_indexes(
            "audit",
            &doc! {"createIndexes": "auth_log", "indexes": [
                index("tenant_seq", doc! {"tenant_id": 1, "seq": 1}, true),
                index("tenant_log_id", doc! {"tenant_id": 1, "log_id": 1}, false),
                index("tenant_time", doc! {"tenant_id": 1, "occurred_at": 1}, false),
                index("tenant_user_time", doc! {"tenant_id": 1, "user_id": 1, "occurred_at": 1}, false),
                index("tenant_ip_time", doc! {"tenant_id": 1, "ip": 1, "occurred_at": 1}, false),
            ]},
        )
        .expect("indexes");
}

/// Inserts events `from..to` (8 tenants) in batches of 500, as the sidecar
/// does; returns their BSON size.
fn insert(store: &mut Store, from: i64, to: i64) -> i64 {
    let mut size = 0;
    let mut seq = from;
    while seq < to {
        let end = (seq + 500).min(to);
        let docs: Vec<Bson> = (seq..end)
            .map(|s| {
                let d = event(s as usize % 8, s);
                size += bson_size(&d);
                Bson::Document(d)
            })
            .collect();
        let reply = store
            .insert(
                "audit",
                doc! {"insert": "auth_log", "documents": docs, "ordered": false},
                None,
            )
            .expect("insert");
        assert_eq!(reply.get_i32("n").unwrap(), (end - seq) as i32, "{reply}");
        seq = end;
    }
    size
}

#[test]
fn what_the_store_holds_costs_about_the_documents_size() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut store = Store::default();
    with_indexes(&mut store);
    let before = live();
    let size = insert(&mut store, 1, 40_001);
    let held = live() - before;
    let ratio = held as f64 / size as f64;
    println!(
        "40,000 events: {size} bytes of BSON held in {held} bytes ({ratio:.2}×, {} bytes per event)",
        held / 40_000
    );
    // The documents themselves, five index entries each and the maps'
    // nodes: within twice the documents' own size.
    assert!(
        ratio <= 2.0,
        "the store holds {size} bytes of documents in {held} bytes ({ratio:.2}×)"
    );
}

#[test]
fn a_scan_of_the_whole_collection_does_not_copy_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut store = Store::default();
    with_indexes(&mut store);
    let size = insert(&mut store, 1, 20_001);
    reset_peak();
    let before = live();
    // What `authaudit-sidecar verify` sends: every document, in batches.
    let first = store
        .find(
            "audit",
            &doc! {"find": "auth_log", "filter": {}, "batchSize": 1000},
        )
        .expect("find");
    let mut id = first.get_document("cursor").unwrap().get_i64("id").unwrap();
    let mut seen = first
        .get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap()
        .into_iter()
        .count();
    drop(first);
    while id != 0 {
        let more = store
            .get_more(&doc! {"getMore": id, "collection": "auth_log", "batchSize": 1000})
            .expect("getMore");
        let cursor = more.get_document("cursor").unwrap();
        seen += cursor.get_array("nextBatch").unwrap().into_iter().count();
        id = cursor.get_i64("id").unwrap();
    }
    assert_eq!(seen, 20_000);
    let extra = PEAK.load(Ordering::Relaxed) - before;
    println!("a scan of {size} bytes of BSON peaked at {extra} bytes more");
    // The cursor's position (the `_id`s still to return: under a tenth of
    // the documents' size) and one batch in flight (1,000 documents,
    // copied a few times as the reply is built), far below a copy of the
    // collection.
    let batch = size / 20;
    assert!(
        extra < size / 10 + 4 * batch,
        "a scan of {size} bytes of documents took {extra} bytes more"
    );
}

#[test]
fn the_work_per_document_does_not_grow_with_the_collection() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut store = Store::default();
    with_indexes(&mut store);
    let allocations = |store: &mut Store, from: i64| {
        let a = ALLOCATIONS.load(Ordering::Relaxed);
        insert(store, from, from + 2_000);
        ALLOCATIONS.load(Ordering::Relaxed) - a
    };
    let early = allocations(&mut store, 1);
    insert(&mut store, 2_001, 60_001);
    let late = allocations(&mut store, 60_001);
    println!("allocations per 2,000 inserts: {early} at first, {late} after 60,000");
    assert!(
        (late as f64) <= early as f64 * 1.1,
        "inserting 2,000 events took {early} allocations into an empty collection and {late} after 60,000"
    );
    // Queries the mirror sends go to the documents they name.
    let examined = |store: &mut Store, filter: Document| {
        let e = store.examined();
        store
            .find("audit", &doc! {"find": "auth_log", "filter": filter})
            .expect("find");
        store.examined() - e
    };
    let ids: Vec<String> = (61_990..62_000)
        .map(|s| event(s as usize % 8, s).get_str("_id").unwrap().to_string())
        .collect();
    assert_eq!(examined(&mut store, doc! {"_id": {"$in": &ids}}), 10);
    assert_eq!(
        examined(
            &mut store,
            doc! {"tenant_id": "tenant-3", "seq": 60_003_i64}
        ),
        1
    );
    assert_eq!(examined(&mut store, doc! {"_id": &ids[0]}), 1);
}
