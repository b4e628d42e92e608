//! The lockout engine's row reads, by primary key, without a statement: an
//! index scan and, for the rows the engine updates, a row lock with the
//! semantics of `SELECT … FOR UPDATE` (in READ COMMITTED the latest version
//! is locked; in REPEATABLE READ a row changed since the snapshot raises
//! 40001). These reads run for every lockout event, and a statement's set-up
//! cost more than the reads themselves.

use crate::error::AuditError;
use crate::sql_values::Tid;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::FromDatum;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CStr;

thread_local! {
    /// Column numbers by (table, column name), forgotten on any relation
    /// cache invalidation (a column dropped and added again gets another
    /// number).
    static ATTNUMS: RefCell<HashMap<(pg_sys::Oid, &'static CStr), i16>> = RefCell::new(HashMap::new());
}

/// A row as found: its position and its columns, by name.
pub struct Found {
    slot: *mut pg_sys::TupleTableSlot,
    relid: pg_sys::Oid,
    pub tid: Tid,
}

impl Found {
    /// The value of column `name`.
    pub fn get<T: FromDatum>(&self, name: &'static CStr) -> Option<T> {
        let attnum = attnum(self.relid, name);
        // SAFETY: the slot holds a tuple of table `relid` (its buffer pinned
        // by the slot until the next `find` or the probe's drop), and
        // `attnum` is a column of it. Its values are deformed up to
        // `attnum` when they are not yet (slot_getsomeattrs_int may only be
        // asked for more than `tts_nvalid`). Every caller names the type of
        // the column it reads (docs of the lockout tables, sql/schema.sql).
        unsafe {
            if i32::from((*self.slot).tts_nvalid) < i32::from(attnum) {
                pg_sys::slot_getsomeattrs_int(self.slot, i32::from(attnum));
            }
            let i = (attnum - 1) as usize;
            let d = *(*self.slot).tts_values.add(i);
            let null = *(*self.slot).tts_isnull.add(i);
            T::from_polymorphic_datum(d, null, pg_sys::InvalidOid)
        }
    }
}

/// The number of column `name` of table `relid`, cached per backend.
pub fn attnum(relid: pg_sys::Oid, name: &'static CStr) -> i16 {
    watch_relcache();
    if let Some(n) = ATTNUMS.with(|a| a.borrow().get(&(relid, name)).copied()) {
        return n;
    }
    // SAFETY: a syscache lookup of a column of an open table. It may run
    // invalidation callbacks (`forget_relids`): no borrow is held across it.
    let n = unsafe { pg_sys::get_attnum(relid, name.as_ptr()) };
    assert!(n > 0, "authaudit table lacks column {name:?}");
    ATTNUMS.with(|a| a.borrow_mut().insert((relid, name), n));
    n
}

thread_local! {
    /// Table and index oids by name, forgotten on any relation cache
    /// invalidation (the extension dropped and created again, say).
    static RELIDS: RefCell<HashMap<&'static CStr, pg_sys::Oid>> = RefCell::new(HashMap::new());
}

static mut RELID_CALLBACK: bool = false;

/// Runs inside PostgreSQL's invalidation processing, which any catalog
/// lookup can start: it never panics (a cache borrowed at that moment is
/// being filled from a lookup made before the invalidation, and is cleared
/// by the next one).
#[pg_guard]
unsafe extern "C-unwind" fn forget_relids(_arg: pg_sys::Datum, _relid: pg_sys::Oid) {
    RELIDS.with(|r| r.try_borrow_mut().map(|mut r| r.clear()).ok());
    ATTNUMS.with(|a| a.try_borrow_mut().map(|mut a| a.clear()).ok());
}

/// Registers `forget_relids` once per backend.
fn watch_relcache() {
    // SAFETY: a backend-local flag and PostgreSQL's callback registry.
    unsafe {
        if !RELID_CALLBACK {
            pg_sys::CacheRegisterRelcacheCallback(Some(forget_relids), pg_sys::Datum::from(0));
            RELID_CALLBACK = true;
        }
    }
}

/// The relation to read and write for table or index `name` of schema
/// `authaudit`: itself, or on Citus the current tenant's shard of it
/// (`placement`).
pub fn relid(name: &'static CStr) -> Result<pg_sys::Oid, AuditError> {
    crate::placement::local(logical_relid(name)?, name)
}

/// The oid of relation `name` of schema `authaudit`.
fn logical_relid(name: &'static CStr) -> Result<pg_sys::Oid, AuditError> {
    if let Some(id) = RELIDS.with(|r| r.borrow().get(name).copied()) {
        return Ok(id);
    }
    watch_relcache();
    // SAFETY: syscache lookups by name.
    unsafe {
        let nsp = pg_sys::get_namespace_oid(c"authaudit".as_ptr(), false);
        let id = pg_sys::get_relname_relid(name.as_ptr(), nsp);
        if id == pg_sys::InvalidOid {
            return Err(AuditError::MissingRelation(
                name.to_string_lossy().into_owned(),
            ));
        }
        RELIDS.with(|r| r.borrow_mut().insert(name, id));
        Ok(id)
    }
}

/// How a row is read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Locked, as `FOR UPDATE`.
    Lock,
    /// With the transaction's view, unlocked.
    Plain,
}

/// Reads of one table by one unique index, with one snapshot: what a
/// statement would see, for as many keys as needed.
pub struct Probe {
    table_id: pg_sys::Oid,
    rel: pg_sys::Relation,
    idx: pg_sys::Relation,
    snapshot: pg_sys::Snapshot,
    /// Per key column: its type, collation and equality function.
    columns: Vec<(pg_sys::Oid, pg_sys::Oid, pg_sys::RegProcedure)>,
    slot: *mut pg_sys::TupleTableSlot,
}

impl Probe {
    /// Opens `table` and its index `index`. What this transaction wrote
    /// before (its statements just now included) is seen.
    pub fn open(table: &'static CStr, index: &'static CStr) -> Result<Probe, AuditError> {
        let (table_id, index_id) = (relid(table)?, relid(index)?);
        // SAFETY: the table and index stay open (their locks kept to the
        // end of the transaction, as a statement's are) until `Drop`; the
        // snapshot is registered for as long.
        unsafe {
            pg_sys::CommandCounterIncrement();
            let rel = pg_sys::table_open(table_id, pg_sys::RowShareLock as pg_sys::LOCKMODE);
            let idx = pg_sys::index_open(index_id, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
            let snapshot = pg_sys::RegisterSnapshot(pg_sys::GetTransactionSnapshot());
            let n = (*(*idx).rd_index).indnkeyatts as usize;
            let mut columns = Vec::with_capacity(n);
            for i in 0..n {
                let family = *(*idx).rd_opfamily.add(i);
                let ty = *(*idx).rd_opcintype.add(i);
                let op = pg_sys::get_opfamily_member(
                    family,
                    ty,
                    ty,
                    pg_sys::BTEqualStrategyNumber as i16,
                );
                columns.push((ty, *(*idx).rd_indcollation.add(i), pg_sys::get_opcode(op)));
            }
            let slot = pg_sys::table_slot_create(rel, std::ptr::null_mut());
            Ok(Probe {
                table_id,
                rel,
                idx,
                snapshot,
                columns,
                slot,
            })
        }
    }

    /// Finds the row whose key equals `key` and hands it to `read` (`None`:
    /// there is none).
    pub fn find<T>(
        &mut self,
        key: &[pg_sys::Datum],
        how: Read,
        read: impl FnOnce(&Found) -> T,
    ) -> Result<Option<T>, AuditError> {
        assert_eq!(key.len(), self.columns.len(), "a whole key");
        // SAFETY: the scan lives only in this block, over the open table
        // and index; the slot is this probe's.
        unsafe {
            let mut keys: Vec<pg_sys::ScanKeyData> = Vec::with_capacity(key.len());
            for (i, (value, (ty, collation, proc))) in key.iter().zip(&self.columns).enumerate() {
                let mut k = std::mem::zeroed::<pg_sys::ScanKeyData>();
                pg_sys::ScanKeyEntryInitialize(
                    &mut k,
                    0,
                    (i + 1) as pg_sys::AttrNumber,
                    pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
                    *ty,
                    *collation,
                    *proc,
                    *value,
                );
                keys.push(k);
            }
            pg_sys::ExecClearTuple(self.slot);
            let scan =
                pg_sys::index_beginscan(self.rel, self.idx, self.snapshot, keys.len() as i32, 0);
            pg_sys::index_rescan(
                scan,
                keys.as_mut_ptr(),
                keys.len() as i32,
                std::ptr::null_mut(),
                0,
            );
            let mut found = pg_sys::index_getnext_slot(
                scan,
                pg_sys::ScanDirection::ForwardScanDirection,
                self.slot,
            );
            pg_sys::index_endscan(scan);
            if found && how == Read::Lock {
                let repeatable = pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32;
                let mut tid = (*self.slot).tts_tid;
                let mut tmfd = std::mem::zeroed::<pg_sys::TM_FailureData>();
                let flags = if repeatable {
                    0
                } else {
                    pg_sys::TUPLE_LOCK_FLAG_FIND_LAST_VERSION as u8
                };
                let result = pg_sys::table_tuple_lock(
                    self.rel,
                    &mut tid,
                    self.snapshot,
                    self.slot,
                    pg_sys::GetCurrentCommandId(false),
                    pg_sys::LockTupleMode::LockTupleExclusive,
                    pg_sys::LockWaitPolicy::LockWaitBlock,
                    flags,
                    &mut tmfd,
                );
                match result {
                    pg_sys::TM_Result::TM_Ok | pg_sys::TM_Result::TM_SelfModified => {}
                    pg_sys::TM_Result::TM_Deleted if !repeatable => found = false,
                    _ => return Err(AuditError::ConcurrentUpdate),
                }
            }
            if !found {
                return Ok(None);
            }
            let f = Found {
                slot: self.slot,
                relid: self.table_id,
                tid: Tid::from_item_pointer((*self.slot).tts_tid),
            };
            Ok(Some(read(&f)))
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        // After an error the transaction's abort releases all of it.
        if std::thread::panicking() {
            return;
        }
        // SAFETY: releases what `open` took, once.
        unsafe {
            pg_sys::ExecDropSingleTupleTableSlot(self.slot);
            pg_sys::UnregisterSnapshot(self.snapshot);
            pg_sys::index_close(self.idx, pg_sys::NoLock as pg_sys::LOCKMODE);
            pg_sys::table_close(self.rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        }
    }
}
