//! Shared chain heads: the end of every tenant's chain, kept in shared memory
//! so that appending to a chain never waits for another transaction's commit.
//!
//! A transaction that appends to a tenant's chain *owns* the tenant (a
//! heavyweight lock, visible to the deadlock detector) from its first append
//! until it is about to commit, not until its commit is flushed: the next
//! writer appends while the previous one is still writing its commit to disk.
//! That is what lets a hot tenant use more than one commit flush at a time.
//! The head itself is read and moved on under a short lightweight lock.
//! Chains stay gapless and unforked because:
//!
//! - a transaction that rolls back (or rolls back the savepoint that appended)
//!   still owns the tenant, and rewinds the head to where its appends began;
//! - before commit, each appender waits until the transaction that appended
//!   the previous link has finished, so links commit in chain order and the
//!   commit record of a link always follows its predecessor's in the WAL
//!   (crash recovery never keeps a link without its predecessor). What that
//!   needs is the predecessor's commit *record*, not its flush: a
//!   transaction that appends commits asynchronously (it ends once its
//!   commit record is written) and flushes its commit once it has released
//!   its locks, before its client hears of the commit
//!   (`defer_commit_flush`). Successors therefore wait microseconds, not a
//!   disk flush, and the flushes of a hot tenant's transactions are
//!   grouped as PostgreSQL groups commits;
//! - should a predecessor still fail after releasing the tenant (an error in
//!   another extension's commit hook, say), everything appended after it is
//!   rewound too and those transactions fail with SQLSTATE 40001.
//!
//! After a restart the heads are read back from `authaudit.auth_log`. The
//! unique index on `(tenant_id, seq)` remains the last line of defence: an
//! append that would fork a chain fails instead.
//!
//! Requires `shared_preload_libraries = 'pg_authaudit'`.

use crate::error::AuditError;
use crate::shmem;
use authaudit_core::chain::{ChainHead, HEAD_BYTES};
use authaudit_core::chain_heads::{AppendOutcome, FairShare, Table, MAX_TENANT_BYTES, RUNS};
use authaudit_core::lock_key::{lock_key, SECRET_BYTES};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::ffi::CStr;
use std::ptr::{addr_of_mut, null_mut};
use subtle::ConstantTimeEq;

const TRANCHE: &CStr = c"pg_authaudit chain heads";

/// The shared-memory state: the lock-key secret and the table of heads
/// (`authaudit_core::chain_heads`, whose logic this module only calls).
#[repr(C)]
struct Shared {
    /// Drawn when the server starts: the key of the lock-tag hash.
    secret: [u8; SECRET_BYTES],
    /// Tenants held in flight beyond their transactions' shares, all
    /// transactions together (at most `FairShare::pool`).
    beyond_share: u32,
    table: Table,
}

static mut TABLE: *mut Shared = null_mut();
static mut LOCK: *mut pg_sys::LWLock = null_mut();
/// Installs the shared-memory table and the transaction callbacks. Only has
/// an effect while shared_preload_libraries are loaded.
pub fn init() {
    if !shmem::preloading() {
        return;
    }
    shmem::register(shmem_request, shmem_startup);
    // SAFETY: runs once in the postmaster before any backend exists.
    unsafe {
        pg_sys::RegisterXactCallback(Some(xact_callback), null_mut());
        pg_sys::RegisterSubXactCallback(Some(subxact_callback), null_mut());
        pg_sys::RegisterResourceReleaseCallback(Some(release_callback), null_mut());
    }
}

fn shmem_request() {
    // SAFETY: called by the postmaster in its shmem request phase.
    unsafe {
        pg_sys::RequestAddinShmemSpace(std::mem::size_of::<Shared>());
        pg_sys::RequestNamedLWLockTranche(TRANCHE.as_ptr(), 1);
    }
}

fn shmem_startup() {
    // SAFETY: called by the postmaster after shared memory is created (and
    // again after a crash restart, with a fresh segment); an all-zero table
    // is the valid empty state.
    unsafe {
        let mut found = false;
        let table = pg_sys::ShmemInitStruct(
            c"pg_authaudit chain head table".as_ptr(),
            std::mem::size_of::<Shared>(),
            &mut found,
        ) as *mut Shared;
        if !found {
            std::ptr::write_bytes(table as *mut u8, 0, std::mem::size_of::<Shared>());
            let secret = addr_of_mut!((*table).secret);
            if !pg_sys::pg_strong_random(secret.cast(), SECRET_BYTES) {
                pgrx::error!("pg_authaudit: no strong random source for the lock-key secret");
            }
        }
        TABLE = table;
        LOCK = addr_of_mut!((*pg_sys::GetNamedLWLockTranche(TRANCHE.as_ptr())).lock);
    }
}

/// Exclusive access to the table; released on drop. Nothing that can raise
/// a PostgreSQL error runs while it is held.
struct Locked {
    table: &'static mut Table,
    beyond_share: &'static mut u32,
}

fn lock() -> Option<Locked> {
    // SAFETY: TABLE and LOCK are set once by the postmaster before backends
    // fork and never change; the LWLock serialises all access to the table.
    unsafe {
        let table = TABLE;
        if table.is_null() {
            return None;
        }
        pg_sys::LWLockAcquire(LOCK, pg_sys::LWLockMode::LW_EXCLUSIVE);
        Some(Locked {
            table: &mut (*table).table,
            beyond_share: &mut (*table).beyond_share,
        })
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        // SAFETY: this guard holds the lock.
        unsafe { pg_sys::LWLockRelease(LOCK) }
    }
}

/// The server's lock-key secret (zero without shared memory).
fn secret() -> [u8; SECRET_BYTES] {
    // SAFETY: TABLE is set once by the postmaster and the secret is written
    // before any backend exists; it never changes afterwards.
    unsafe {
        let t = TABLE;
        if t.is_null() {
            [0; SECRET_BYTES]
        } else {
            (*t).secret
        }
    }
}

/// The keyed hash of a database and tenant: nobody without the server's
/// secret can tell from `pg_locks` which tenant a lock belongs to.
fn key_hash(dboid: u32, tenant: &[u8]) -> u64 {
    lock_key(&secret(), "chain", &[&dboid.to_le_bytes(), tenant])
}

/// One append made by this backend's current transaction.
#[derive(Debug, Clone)]
struct Pending {
    dboid: u32,
    tenant: Vec<u8>,
    /// `key_hash(dboid, tenant)`, the tenant's key in the table.
    hash: u64,
    seq: i64,
    xid: pg_sys::TransactionId,
    pred_xid: pg_sys::TransactionId,
    level: i32,
}

thread_local! {
    static PENDING: RefCell<Vec<Pending>> = const { RefCell::new(Vec::new()) };
    static OWNED: RefCell<Vec<pg_sys::LOCKTAG>> = const { RefCell::new(Vec::new()) };
    /// How many tenants this transaction drew from the shared pool beyond
    /// its share (returned when it ends).
    static BEYOND_SHARE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    /// Whether this transaction's commit flush is deferred to the commit
    /// callback (`defer_commit_flush`).
    static FLUSH_AT_COMMIT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Whether this transaction released its chains before its commit
    /// (`release_after_last_append`).
    static RELEASED_EARLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// After an early release, an append to a tenant this transaction appended
/// to before is allowed only if no other transaction appended since: its
/// links would otherwise interleave with another's, whose commit then
/// waits for this one while this one's waits for it.
fn refuse_interleaving(dboid: u32, tenant: &[u8], hash: u64) -> Result<(), AuditError> {
    let ours = PENDING.with(|p| {
        p.borrow()
            .iter()
            .filter(|e| e.dboid == dboid && e.tenant == tenant)
            .map(|e| e.seq)
            .max()
    });
    let Some(ours) = ours else {
        return Ok(());
    };
    let guard = lock().ok_or(AuditError::NotPreloaded)?;
    let live = guard
        .table
        .find(dboid, tenant, hash)
        .map(|k| guard.table.slot(k).live().0);
    drop(guard);
    if live == Some(ours) {
        Ok(())
    } else {
        Err(AuditError::InterleavedAppend)
    }
}

/// Makes this transaction's commit asynchronous and flushes it once the
/// transaction has released its locks (`flush_deferred_commit`), before the
/// client hears of the commit: its chain successors, and the writers of the
/// state rows it locked, then wait for its commit record only. The commit is as durable as the session asked for; between
/// its commit record and its flush (one WAL flush, usually under a
/// millisecond) other sessions may see its rows, as with
/// `synchronous_commit = off` (docs/architecture.md, "The append path").
/// Left as it is when the session commits asynchronously already, and when
/// synchronous replication is configured (a commit then waits for the
/// standbys before it ends, as PostgreSQL does it).
fn defer_commit_flush() {
    if FLUSH_AT_COMMIT.with(|f| f.get()) {
        return;
    }
    // SAFETY: plain reads of two settings of this backend; the setting is
    // changed with PostgreSQL's own GUC machinery, for this transaction
    // only (GUC_ACTION_LOCAL: restored at its end, whatever the outcome).
    unsafe {
        let level = pg_sys::synchronous_commit as u32;
        if level == pg_sys::SyncCommitLevel::SYNCHRONOUS_COMMIT_OFF {
            return;
        }
        let standbys = pg_sys::SyncRepStandbyNames;
        if !standbys.is_null() && *standbys != 0 {
            return;
        }
        pg_sys::set_config_option(
            c"synchronous_commit".as_ptr(),
            c"off".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_LOCAL,
            true,
            0,
            false,
        );
    }
    FLUSH_AT_COMMIT.with(|f| f.set(true));
}

/// Once the transaction committed and released its locks: flushes its
/// commit record when its flush was deferred (`defer_commit_flush`),
/// before the commit returns; after an abort, forgets it.
fn flush_deferred_commit(committed: bool) {
    if FLUSH_AT_COMMIT.with(|f| f.replace(false)) && committed {
        // SAFETY: XactLastCommitEnd is the end of this transaction's commit
        // record, set when it was written; XLogFlush waits until the WAL is
        // durable up to there (it raises no error: a failed flush is a
        // PANIC, as in PostgreSQL's own commit).
        unsafe { pg_sys::XLogFlush(pg_sys::XactLastCommitEnd) }
    }
}

/// The fair share of this server (`FairShare::for_backends`).
fn fair_share() -> FairShare {
    // SAFETY: MaxBackends is set before shared memory exists and never
    // changes afterwards.
    let n = unsafe { pg_sys::MaxBackends };
    FairShare::for_backends(usize::try_from(n).unwrap_or(1))
}

/// Before this transaction's first append to a tenant it holds no append
/// in yet: within its share it goes ahead; beyond, it draws one tenant from
/// the shared pool, or is refused (53400) when the pool is empty, so that
/// no session can keep another from its share.
fn admit_new_tenant(dboid: u32, tenant: &[u8]) -> Result<(), AuditError> {
    let held = PENDING.with(|p| {
        let p = p.borrow();
        if p.iter().any(|e| e.dboid == dboid && e.tenant == tenant) {
            return None;
        }
        let mut distinct: Vec<(u32, &[u8])> = p.iter().map(|e| (e.dboid, &e.tenant[..])).collect();
        distinct.sort_unstable();
        distinct.dedup();
        Some(distinct.len())
    });
    let Some(held) = held else {
        return Ok(());
    };
    let fair = fair_share();
    let drawn = BEYOND_SHARE.with(|b| b.get()) as usize;
    if held < fair.share + drawn {
        return Ok(());
    }
    let guard = lock().ok_or(AuditError::NotPreloaded)?;
    if (*guard.beyond_share as usize) >= fair.pool {
        drop(guard);
        return Err(AuditError::TooManyTenantsInFlight {
            held,
            share: fair.share,
            pool: fair.pool,
        });
    }
    *guard.beyond_share += 1;
    drop(guard);
    BEYOND_SHARE.with(|b| b.set(b.get() + 1));
    Ok(())
}

/// Returns what this transaction drew from the pool (at its end).
fn return_beyond_share() {
    let drawn = BEYOND_SHARE.with(|b| b.replace(0));
    if drawn > 0 {
        if let Some(l) = lock() {
            *l.beyond_share = l.beyond_share.saturating_sub(drawn);
        }
    }
}

/// Marks the ownership locks apart from `pg_advisory_lock` keys (which use
/// 1 and 2 in this field).
const OWNERSHIP_LOCK_FIELD4: u16 = 0xAA01;
/// Marks the locks that serialise issuers of one token id.
const JTI_LOCK_FIELD4: u16 = 0xAA02;
/// Marks the locks that keep a tenant's lockout state apart from its
/// rebuild (`lock_tenant_state`).
const STATE_LOCK_FIELD4: u16 = 0xAA03;
/// Marks the locks that serialise recorders of one log id (`lock_log_id`).
const LOG_ID_LOCK_FIELD4: u16 = 0xAA04;
const USER_LOCKMETHOD: u8 = 2;
const SHARE_LOCK: pg_sys::LOCKMODE = 5;
const EXCLUSIVE_LOCK: pg_sys::LOCKMODE = 7;

/// How a transaction holds a tenant's lockout state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateAccess {
    /// Live recording: any number of transactions at once.
    Record,
    /// A rebuild: alone, while it writes the state its replay ended in.
    Rebuild,
}

/// Makes concurrent recorders of one log id of a tenant take turns, until
/// the end of the transaction: the second looks the log id up once the
/// first has committed, and finds its row (a retry) instead of appending.
pub fn lock_log_id(tenant_id: &str, log_id: &[u8; 16]) {
    // SAFETY: a plain read of this backend's database.
    let dboid = unsafe { u32::from(pg_sys::MyDatabaseId) };
    let h = lock_key(
        &secret(),
        "log_id",
        &[&dboid.to_le_bytes(), tenant_id.as_bytes(), log_id],
    );
    let tag = keyed_tag(dboid, h, LOG_ID_LOCK_FIELD4);
    // SAFETY: a transaction-level lock, released by PostgreSQL at its end.
    unsafe {
        pg_sys::LockAcquire(&tag, EXCLUSIVE_LOCK, false, false);
    }
}

/// Holds tenant `tenant_id`'s lockout state until the end of the
/// transaction (a heavyweight lock keyed by the database and tenant, so
/// other tenants never wait): live recording takes it shared before it
/// reads any state row, a rebuild exclusively before it reads the events
/// it has not replayed yet and writes the tables. Waits while a rebuild of
/// the tenant holds it (or, for a rebuild, while live recording does).
pub fn lock_tenant_state(tenant_id: &str, access: StateAccess) {
    // SAFETY: a plain read of this backend's database.
    let dboid = unsafe { u32::from(pg_sys::MyDatabaseId) };
    let h = lock_key(
        &secret(),
        "state",
        &[&dboid.to_le_bytes(), tenant_id.as_bytes()],
    );
    let tag = keyed_tag(dboid, h, STATE_LOCK_FIELD4);
    let mode = match access {
        StateAccess::Record => SHARE_LOCK,
        StateAccess::Rebuild => EXCLUSIVE_LOCK,
    };
    // SAFETY: a transaction-level lock, released by PostgreSQL at its end;
    // a lock already held in this transaction is found in the local table.
    unsafe {
        pg_sys::LockAcquire(&tag, mode, false, false);
    }
}

/// Whether no live recording of tenant `tenant_id` is in flight: takes its
/// lockout state exclusively if nobody holds it (live recorders hold it
/// shared until they end), then lets it go at once. Never waits: `false`
/// when a recorder or a rebuild holds it. Every live event recorded before
/// a `true` is then committed or gone; one recorded after took the state
/// after it, so it read the clock after it.
pub fn no_recorder_in_flight(tenant_id: &str) -> bool {
    // SAFETY: a plain read of this backend's database.
    let dboid = unsafe { u32::from(pg_sys::MyDatabaseId) };
    let h = lock_key(
        &secret(),
        "state",
        &[&dboid.to_le_bytes(), tenant_id.as_bytes()],
    );
    let tag = keyed_tag(dboid, h, STATE_LOCK_FIELD4);
    // SAFETY: a conditional transaction-level acquisition, released at once
    // when it was granted (a hold of this backend's own is counted in the
    // local lock table, so the release leaves it as it was).
    unsafe {
        let got = pg_sys::LockAcquire(&tag, EXCLUSIVE_LOCK, false, true);
        if got == pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL {
            return false;
        }
        pg_sys::LockRelease(&tag, EXCLUSIVE_LOCK, false);
    }
    true
}

fn keyed_tag(dboid: u32, h: u64, field4: u16) -> pg_sys::LOCKTAG {
    pg_sys::LOCKTAG {
        locktag_field1: dboid,
        locktag_field2: (h >> 32) as u32,
        locktag_field3: h as u32,
        locktag_field4: field4,
        locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
        locktag_lockmethodid: USER_LOCKMETHOD,
    }
}

fn ownership_tag(dboid: u32, tenant: &[u8]) -> pg_sys::LOCKTAG {
    keyed_tag(dboid, key_hash(dboid, tenant), OWNERSHIP_LOCK_FIELD4)
}

/// Makes concurrent issuers of one token id (`jti`) of a tenant take turns,
/// until the end of the transaction. Internal to `record_token_issued`; not
/// executable by PUBLIC.
#[pg_extern(volatile, strict, parallel_unsafe, name = "_lock_token_id")]
fn lock_token_id(tenant_id: &str, jti: &str) {
    // SAFETY: a plain read of this backend's database.
    let dboid = unsafe { u32::from(pg_sys::MyDatabaseId) };
    let h = lock_key(
        &secret(),
        "jti",
        &[&dboid.to_le_bytes(), tenant_id.as_bytes(), jti.as_bytes()],
    );
    let tag = keyed_tag(dboid, h, JTI_LOCK_FIELD4);
    // SAFETY: a transaction-level lock, released by PostgreSQL at its end.
    unsafe {
        pg_sys::LockAcquire(&tag, EXCLUSIVE_LOCK, false, false);
    }
}

fn same_tag(a: &pg_sys::LOCKTAG, b: &pg_sys::LOCKTAG) -> bool {
    (
        a.locktag_field1,
        a.locktag_field2,
        a.locktag_field3,
        a.locktag_field4,
    ) == (
        b.locktag_field1,
        b.locktag_field2,
        b.locktag_field3,
        b.locktag_field4,
    )
}

/// Takes ownership of a tenant's chain for the rest of this transaction's
/// appends (waits while another transaction owns it).
fn own(dboid: u32, tenant: &[u8]) {
    let tag = ownership_tag(dboid, tenant);
    if OWNED.with(|o| o.borrow().iter().any(|t| same_tag(t, &tag))) {
        return;
    }
    take_ownership(tag);
}

fn take_ownership(tag: pg_sys::LOCKTAG) {
    // SAFETY: a session-level lock, released by release_ownership at
    // pre-commit or abort (and by PostgreSQL when the session ends).
    unsafe {
        pg_sys::LockAcquire(&tag, EXCLUSIVE_LOCK, true, false);
    }
    OWNED.with(|o| o.borrow_mut().push(tag));
}

fn release_ownership() {
    let owned = OWNED.with(|o| std::mem::take(&mut *o.borrow_mut()));
    for tag in &owned {
        // SAFETY: releases a session lock this backend took in `own`, unless
        // something (pg_advisory_unlock_all) released it already.
        unsafe {
            if pg_sys::LockHeldByMe(tag, EXCLUSIVE_LOCK) {
                pg_sys::LockRelease(tag, EXCLUSIVE_LOCK, true);
            }
        }
    }
}

/// Lets the next writers of every tenant this transaction appended to in
/// before it commits, when no more of its appends can follow: it is not
/// in a transaction block (an implicit transaction: the statement is the
/// whole transaction) and the caller has made its last append of the
/// statement. The rows are then inserted, and the commit waits for each
/// link's predecessor as before, while other sessions append. Should the
/// same statement append to one of these tenants again after another
/// session did (a statement that records one tenant's events through
/// several calls), that append is refused (40001: its links would
/// interleave with another transaction's); the whole statement is the
/// unit to retry.
pub fn release_after_last_append() {
    // SAFETY: a plain read of this backend's transaction state.
    if unsafe { pg_sys::IsTransactionBlock() } {
        return;
    }
    if PENDING.with(|p| p.borrow().is_empty()) {
        return;
    }
    release_ownership();
    RELEASED_EARLY.with(|r| r.set(true));
}

/// Appends `body` to `tenant_id`'s chain, returning the new seq, the previous
/// head and the new head. Waits (never while holding the lock) when the
/// tenant's head must be read from the table or when too many transactions
/// have appends in flight.
/// Refuses (22023) a tenant id longer than the table holds.
fn check_tenant_length(tenant_id: &str) -> Result<(), AuditError> {
    if tenant_id.len() > MAX_TENANT_BYTES {
        return Err(AuditError::Event(
            authaudit_core::event::EventError::MalformedScopeId {
                field: "tenant_id",
                value: tenant_id.chars().take(80).collect(),
                rule: "longer than 64 bytes",
            },
        ));
    }
    Ok(())
}

pub fn append(tenant_id: &str, body: &[u8]) -> Result<(i64, ChainHead, ChainHead), AuditError> {
    let tenant = tenant_id.as_bytes();
    check_tenant_length(tenant_id)?;
    // SAFETY: TABLE is written only by the postmaster before backends fork.
    if unsafe { TABLE.is_null() } {
        return Err(AuditError::NotPreloaded);
    }
    // SAFETY: plain reads of PostgreSQL's transaction state.
    let (dboid, xid, level) = unsafe {
        (
            u32::from(pg_sys::MyDatabaseId),
            pg_sys::GetCurrentTransactionId(),
            pg_sys::GetCurrentTransactionNestLevel(),
        )
    };
    admit_new_tenant(dboid, tenant)?;
    defer_commit_flush();
    own(dboid, tenant);
    let hash = key_hash(dboid, tenant);
    if RELEASED_EARLY.with(|r| r.get()) {
        refuse_interleaving(dboid, tenant, hash)?;
    }
    if crate::placement::entered() {
        forget_if_stale(dboid, tenant, hash, tenant_id)?;
    }
    loop {
        let outcome = lock().ok_or(AuditError::NotPreloaded)?.table.append(
            dboid,
            tenant,
            hash,
            body,
            xid.into_inner(),
        );
        match outcome {
            AppendOutcome::Done(a) => {
                PENDING.with(|p| {
                    p.borrow_mut().push(Pending {
                        dboid,
                        tenant: tenant.to_vec(),
                        hash,
                        seq: a.seq,
                        xid,
                        pred_xid: pg_sys::TransactionId::from_inner(a.pred_xid),
                        level,
                    })
                });
                return Ok((a.seq, a.prev, a.next));
            }
            AppendOutcome::NotLoaded => {
                let (seq, head) = load(tenant_id)?;
                let placed = lock()
                    .ok_or(AuditError::NotPreloaded)?
                    .table
                    .place(dboid, tenant, hash, seq, &head);
                if !placed {
                    let fair = fair_share();
                    return Err(AuditError::TooManyTenantsInFlight {
                        held: Table::MAX_CACHED,
                        share: fair.share,
                        pool: fair.pool,
                    });
                }
            }
            AppendOutcome::Busy(other) => {
                let other = pg_sys::TransactionId::from_inner(other);
                // SAFETY: waiting on another transaction's lock is allowed here.
                unsafe {
                    if pg_sys::TransactionIdIsCurrentTransactionId(other) {
                        return Err(AuditError::TooManyRuns(RUNS));
                    }
                    pg_sys::XactLockTableWait(
                        other,
                        null_mut(),
                        null_mut(),
                        pg_sys::XLTW_Oper::XLTW_None,
                    );
                }
            }
        }
    }
}

/// Forgets the cached heads of the current database (those without appends
/// in flight), so that they are read from the table again. Run when the
/// extension is created: a head cached for a dropped auth log must not
/// continue into a new one.
#[pg_extern(volatile, name = "_forget_chain_heads")]
fn forget_chain_heads() -> i32 {
    // SAFETY: a plain read of this backend's database.
    let dboid = unsafe { u32::from(pg_sys::MyDatabaseId) };
    lock().map_or(0, |guard| guard.table.forget_database(dboid) as i32)
}

/// Takes back this transaction's latest append to `tenant_id`, which it
/// still owns: used when the row turns out to be recorded already.
pub fn unappend(tenant_id: &str) -> Result<(), AuditError> {
    // SAFETY: plain reads of PostgreSQL's transaction state.
    let (dboid, xid) = unsafe {
        (
            u32::from(pg_sys::MyDatabaseId),
            pg_sys::GetCurrentTransactionId(),
        )
    };
    let hash = key_hash(dboid, tenant_id.as_bytes());
    let undone = lock()
        .ok_or(AuditError::NotPreloaded)?
        .table
        .unappend(dboid, tenant_id.as_bytes(), hash, xid.into_inner())
        .ok_or(AuditError::NothingToUnappend)?;
    PENDING.with(|p| {
        p.borrow_mut()
            .retain(|e| !(e.dboid == dboid && e.tenant == tenant_id.as_bytes() && e.seq == undone))
    });
    Ok(())
}

/// The tenant's chain head as the table holds it once every transaction
/// that appended to it has ended, checked against the head in shared memory:
/// rows removed from (or added to) the table's tail outside the extension
/// make them differ (`HeadMismatch`). Takes ownership of the tenant's chain
/// until this transaction commits, so nothing is appended meanwhile.
/// Returns seq 0 for a tenant without rows.
pub fn settled_head(tenant_id: &str) -> Result<(i64, ChainHead), AuditError> {
    let tenant = tenant_id.as_bytes();
    check_tenant_length(tenant_id)?;
    // SAFETY: TABLE is written only by the postmaster before backends fork.
    if unsafe { TABLE.is_null() } {
        return Err(AuditError::NotPreloaded);
    }
    // SAFETY: a plain read of this backend's database.
    let dboid = unsafe { u32::from(pg_sys::MyDatabaseId) };
    // On Citus, the tenant's shard on this node; a head cached from before
    // the shard moved away and back is no live head.
    let shards = crate::placement::enter(tenant_id)?;
    own(dboid, tenant);
    let hash = key_hash(dboid, tenant);
    if shards.is_some() {
        forget_if_stale(dboid, tenant, hash, tenant_id)?;
    }
    let live = |l: &Locked| {
        l.table
            .find(dboid, tenant, hash)
            .map(|k| l.table.slot(k).live())
    };
    // The last appender released the chain before its commit: wait for it.
    let last_xid = live(&lock().ok_or(AuditError::NotPreloaded)?).map(|(_, _, x)| x);
    if let Some(x) = last_xid.filter(|x| *x != 0) {
        wait_for_predecessor(pg_sys::TransactionId::from_inner(x));
    }
    let (seq, head) = load(tenant_id)?;
    let guard = lock().ok_or(AuditError::NotPreloaded)?;
    match live(&guard) {
        Some((live_seq, live_head, _)) => {
            let same = live_seq == seq && bool::from(live_head.ct_eq(&head.to_bytes()));
            drop(guard);
            if !same {
                return Err(AuditError::HeadMismatch {
                    tenant: tenant_id.to_owned(),
                    table_seq: seq,
                    live_seq,
                });
            }
        }
        None => {
            guard.table.place(dboid, tenant, hash, seq, &head);
        }
    }
    Ok((seq, head))
}

/// On Citus: forgets a cached head that no transaction is appending to if
/// the tenant's shard holds more of its chain (the shard moved away, took
/// more rows on another worker, and came back; Citus keeps the placement's
/// number and may keep its relation). Run by the tenant's owner, so no
/// append of this node can start meanwhile.
fn forget_if_stale(
    dboid: u32,
    tenant: &[u8],
    hash: u64,
    tenant_id: &str,
) -> Result<(), AuditError> {
    let idle = lock()
        .ok_or(AuditError::NotPreloaded)?
        .table
        .idle_seq(dboid, tenant, hash);
    if let Some(seq) = idle {
        if load(tenant_id)?.0 > seq {
            lock()
                .ok_or(AuditError::NotPreloaded)?
                .table
                .forget_stale(dboid, tenant, hash, seq);
        }
    }
    Ok(())
}

const LAST_ROW: &CStr = c"SELECT seq, link_sha256, digest_sha512, digest_sha3_256 \
                          FROM authaudit.auth_log WHERE tenant_id = $1 \
                          ORDER BY seq DESC LIMIT 1";

/// The last committed head of a tenant, read with the latest snapshot
/// (whatever this transaction's isolation: in REPEATABLE READ, appends
/// committed after its snapshot count), the genesis at seq 0 when the
/// tenant has no row.
fn load(tenant_id: &str) -> Result<(i64, ChainHead), AuditError> {
    // On a Citus worker, from the tenant's shard (docs/scale-out.md).
    let shard_sql = crate::placement::log_shard_name().map(|shard| {
        crate::placement::reading(LAST_ROW.to_str().expect("ASCII"), "auth_log", &shard)
    });
    let rows = Spi::connect(|_| {
        crate::spi_plans::read_latest(
            shard_sql.as_deref().unwrap_or(LAST_ROW),
            &[(pg_sys::TEXTOID, tenant_id.into_datum().expect("text"))],
            |row| {
                let seq = row.get::<i64>(1)?.unwrap_or(0);
                let a = row.get::<Vec<u8>>(2)?.unwrap_or_default();
                let b = row.get::<Vec<u8>>(3)?.unwrap_or_default();
                let c = row.get::<Vec<u8>>(4)?.unwrap_or_default();
                let head = ChainHead::from_parts(&a, &b, &c).ok_or(AuditError::MalformedHead {
                    expected: HEAD_BYTES,
                    got: a.len() + b.len() + c.len(),
                })?;
                Ok((seq, head))
            },
        )
    })?;
    Ok(rows
        .into_iter()
        .next()
        .unwrap_or_else(|| (0, ChainHead::genesis(tenant_id))))
}

/// Returns once `pred` has committed, or has ended otherwise and run its
/// callbacks (so that a rollback has rewound the chain). A predecessor
/// ends once its commit record is written (`defer_commit_flush`), so the
/// wait is short; it sleeps on the predecessor's transaction lock.
fn wait_for_predecessor(pred: pg_sys::TransactionId) {
    // SAFETY: reads of PostgreSQL's transaction state, and waiting on
    // another transaction's lock, both allowed before commit.
    unsafe {
        if pg_sys::TransactionIdIsCurrentTransactionId(pred)
            || pg_sys::TransactionIdPrecedes(pred, pg_sys::TransactionXmin)
        {
            // Ours, or ended before this transaction began: its callbacks
            // have run, and the run check below is all that is needed.
            return;
        }
        if !pg_sys::TransactionIdIsInProgress(pred) && pg_sys::TransactionIdDidCommit(pred) {
            return;
        }
        pg_sys::XactLockTableWait(pred, null_mut(), null_mut(), pg_sys::XLTW_Oper::XLTW_None);
    }
}

/// Before commit: wait for every predecessor link to finish, then make sure
/// none of this transaction's appends was doomed by a rollback before it.
fn pre_commit() {
    // No more appends can follow: let the next writers in.
    release_ownership();
    let pending = PENDING.with(|p| p.borrow().clone());
    if pending.is_empty() {
        return;
    }
    let mut waited = Vec::new();
    for p in &pending {
        if p.pred_xid == pg_sys::InvalidTransactionId || waited.contains(&p.pred_xid) {
            continue;
        }
        wait_for_predecessor(p.pred_xid);
        waited.push(p.pred_xid);
    }
    let doomed = match lock() {
        Some(l) => pending.iter().any(|p| {
            !l.table
                .holds(p.dboid, &p.tenant, p.hash, p.seq, p.xid.into_inner())
        }),
        None => false,
    };
    if doomed {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
            "pg_authaudit: an earlier event in the same tenant's chain was rolled back",
            "Retry the transaction: its events will be chained after the surviving ones."
        );
    }
}

fn finish(committed: bool) {
    let pending = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    if !pending.is_empty() {
        if let Some(l) = lock() {
            for p in &pending {
                if committed {
                    l.table
                        .release(p.dboid, &p.tenant, p.hash, p.xid.into_inner());
                } else {
                    l.table
                        .rewind(p.dboid, &p.tenant, p.hash, p.seq, p.xid.into_inner());
                }
            }
        }
    }
    return_beyond_share();
    RELEASED_EARLY.with(|r| r.set(false));
    // After the rewind, so that the next owner sees the rewound head.
    release_ownership();
}

fn abort_subtransaction(level: i32) {
    let aborted: Vec<Pending> = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        let (gone, kept): (Vec<Pending>, Vec<Pending>) =
            p.drain(..).partition(|e| e.level >= level);
        *p = kept;
        gone
    });
    if aborted.is_empty() {
        return;
    }
    if let Some(l) = lock() {
        for p in &aborted {
            l.table
                .rewind(p.dboid, &p.tenant, p.hash, p.seq, p.xid.into_inner());
        }
    }
}

fn commit_subtransaction(level: i32) {
    PENDING.with(|p| {
        for e in p.borrow_mut().iter_mut().filter(|e| e.level >= level) {
            e.level = level - 1;
        }
    });
}

#[pg_guard]
unsafe extern "C-unwind" fn xact_callback(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_PRE_COMMIT | XACT_EVENT_PARALLEL_PRE_COMMIT => pre_commit(),
        XACT_EVENT_PRE_PREPARE if PENDING.with(|p| !p.borrow().is_empty()) => {
            // A chain's rewind after a rollback belongs to the appending
            // backend, which a prepared transaction leaves.
            pgrx::pg_sys::panic::ErrorReport::new(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "pg_authaudit: a transaction that recorded events cannot be prepared (two-phase commit)",
                "pg_authaudit",
            )
            .set_hint("On Citus, record the events of tenants on different workers in separate transactions (docs/scale-out.md, \"Transactions\").")
            .report(PgLogLevel::ERROR);
        }
        XACT_EVENT_COMMIT | XACT_EVENT_PARALLEL_COMMIT => finish(true),
        XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT => {
            finish(false);
            flush_deferred_commit(false);
        }
        _ => {}
    }
}

/// Once a committing transaction has released its locks (its row locks
/// and its transaction lock, which its chain successors and the writers of
/// its state rows wait on), its deferred flush (`defer_commit_flush`); the
/// client hears of the commit only after it.
#[pg_guard]
unsafe extern "C-unwind" fn release_callback(
    phase: pg_sys::ResourceReleasePhase::Type,
    is_commit: bool,
    is_top_level: bool,
    _arg: *mut std::ffi::c_void,
) {
    if phase == pg_sys::ResourceReleasePhase::RESOURCE_RELEASE_AFTER_LOCKS
        && is_commit
        && is_top_level
    {
        flush_deferred_commit(true);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn subxact_callback(
    event: pg_sys::SubXactEvent::Type,
    _my_subid: pg_sys::SubTransactionId,
    _parent_subid: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::SubXactEvent::*;
    // SAFETY: reading the nesting level of the subtransaction being ended.
    let level = unsafe { pg_sys::GetCurrentTransactionNestLevel() };
    match event {
        SUBXACT_EVENT_ABORT_SUB => abort_subtransaction(level),
        SUBXACT_EVENT_COMMIT_SUB => commit_subtransaction(level),
        _ => {}
    }
}
