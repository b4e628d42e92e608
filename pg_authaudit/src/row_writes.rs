//! The lockout engine's row writes without a statement, the way logical
//! replication applies a change: the row is formed from the given columns
//! and written with the table's constraints, indexes (a new index entry only
//! when the update is not HOT) and row triggers. The rows updated here are
//! the ones the engine locked (`state_rows`), by their position; the rows
//! inserted here are (IP, account) pairs, which only the holder of the
//! account's row lock writes. The extension's own function runs this as the
//! tables' owner, as its statements did.

use crate::error::AuditError;
use crate::sql_values::Tid;
use crate::state_rows::{self, relid};
use pgrx::pg_sys;
use std::ffi::CStr;
use std::ptr::{addr_of_mut, null_mut};

/// One table opened for writing.
pub struct Target {
    rel: pg_sys::Relation,
    estate: *mut pg_sys::EState,
    rri: *mut pg_sys::ResultRelInfo,
    epq: Box<pg_sys::EPQState>,
    old: *mut pg_sys::TupleTableSlot,
    new: *mut pg_sys::TupleTableSlot,
    natts: usize,
}

/// A column's new value (`None`: NULL).
pub type Column = (&'static CStr, Option<pg_sys::Datum>);

impl Target {
    /// Opens `table` of schema `authaudit` for writing.
    pub fn open(table: &'static CStr) -> Result<Target, AuditError> {
        let id = relid(table)?;
        // SAFETY: the executor state, relation and slots are released by
        // `Drop` (or, after an error, by the transaction's abort); the
        // range-table entry and result relation are made as makeNode would.
        unsafe {
            // A command of its own: the rows written before (by another
            // target, say) are seen and may be updated.
            pg_sys::CommandCounterIncrement();
            let rel = pg_sys::table_open(id, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
            let estate = pg_sys::CreateExecutorState();
            let old_context = pg_sys::MemoryContextSwitchTo((*estate).es_query_cxt);
            let rte = pg_sys::palloc0(std::mem::size_of::<pg_sys::RangeTblEntry>())
                as *mut pg_sys::RangeTblEntry;
            (*rte).type_ = pg_sys::NodeTag::T_RangeTblEntry;
            (*rte).rtekind = pg_sys::RTEKind::RTE_RELATION;
            (*rte).relid = id;
            (*rte).relkind = (*(*rel).rd_rel).relkind;
            (*rte).rellockmode = pg_sys::RowExclusiveLock as i32;
            pg_sys::ExecInitRangeTable(estate, pg_sys::lappend(null_mut(), rte.cast()));
            let rri = pg_sys::palloc0(std::mem::size_of::<pg_sys::ResultRelInfo>())
                as *mut pg_sys::ResultRelInfo;
            (*rri).type_ = pg_sys::NodeTag::T_ResultRelInfo;
            pg_sys::InitResultRelInfo(rri, rel, 1, null_mut(), 0);
            (*estate).es_opened_result_relations =
                pg_sys::lappend((*estate).es_opened_result_relations, rri.cast());
            (*estate).es_output_cid = pg_sys::GetCurrentCommandId(true);
            (*estate).es_snapshot = pg_sys::GetActiveSnapshot();
            // Speculative: `insert_new` checks a unique index as ON
            // CONFLICT does.
            pg_sys::ExecOpenIndices(rri, true);
            let mut epq = Box::new(std::mem::zeroed::<pg_sys::EPQState>());
            pg_sys::EvalPlanQualInit(&mut *epq, estate, null_mut(), null_mut(), -1);
            let desc = (*rel).rd_att;
            let old = pg_sys::table_slot_create(rel, null_mut());
            let new = pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsVirtual);
            pg_sys::MemoryContextSwitchTo(old_context);
            pg_sys::AfterTriggerBeginQuery();
            Ok(Target {
                rel,
                estate,
                rri,
                epq,
                old,
                new,
                natts: (*desc).natts as usize,
            })
        }
    }

    fn attnum(&self, name: &'static CStr) -> usize {
        // SAFETY: the relation is open.
        (state_rows::attnum(unsafe { (*self.rel).rd_id }, name) - 1) as usize
    }

    /// Sets `columns` of the row at `tid`, which this transaction holds
    /// locked; the other columns keep their values.
    pub fn update(&mut self, tid: Tid, columns: &[Column]) -> Result<(), AuditError> {
        let positions: Vec<usize> = columns.iter().map(|(n, _)| self.attnum(n)).collect();
        // SAFETY: the slots are this target's; the old row's values stay
        // valid (its buffer pinned by `old`) until the update has formed
        // the new row.
        unsafe {
            pg_sys::ExecClearTuple(self.old);
            let mut at = tid.item_pointer();
            let snapshot_any = addr_of_mut!(pg_sys::SnapshotAnyData);
            if !pg_sys::table_tuple_fetch_row_version(self.rel, &mut at, snapshot_any, self.old) {
                return Err(AuditError::ConcurrentUpdate);
            }
            pg_sys::slot_getallattrs(self.old);
            pg_sys::ExecClearTuple(self.new);
            for i in 0..self.natts {
                *(*self.new).tts_values.add(i) = *(*self.old).tts_values.add(i);
                *(*self.new).tts_isnull.add(i) = *(*self.old).tts_isnull.add(i);
            }
            for (i, (_, value)) in positions.iter().zip(columns) {
                *(*self.new).tts_values.add(*i) = value.unwrap_or(pg_sys::Datum::from(0));
                *(*self.new).tts_isnull.add(*i) = value.is_none();
            }
            pg_sys::ExecStoreVirtualTuple(self.new);
            pg_sys::ExecSimpleRelationUpdate(
                self.rri,
                self.estate,
                &mut *self.epq,
                self.old,
                self.new,
            );
        }
        Ok(())
    }

    /// Inserts a row of `columns` (every other column NULL) unless the
    /// unique index `arbiter` holds its key already, as `INSERT … ON
    /// CONFLICT DO NOTHING` does: a concurrent insertion of the key is
    /// waited for. Returns the new row's position, `None` on a conflict.
    pub fn insert_new(
        &mut self,
        columns: &[Column],
        arbiter: &'static CStr,
    ) -> Result<Option<Tid>, AuditError> {
        self.speculative(columns, arbiter, true)
    }

    /// `insert_new` for a key the caller has just looked up and not found:
    /// the row goes in at once, and the key is checked (and a concurrent
    /// insertion of it waited for) only when the insertion meets it.
    pub fn insert_unseen(
        &mut self,
        columns: &[Column],
        arbiter: &'static CStr,
    ) -> Result<Option<Tid>, AuditError> {
        self.speculative(columns, arbiter, false)
    }

    /// The speculative insertion, checking the key first when `check`.
    fn speculative(
        &mut self,
        columns: &[Column],
        arbiter: &'static CStr,
        mut check: bool,
    ) -> Result<Option<Tid>, AuditError> {
        let arbiter = relid(arbiter)?;
        self.fill(columns);
        // SAFETY: the steps of the executor's speculative insertion
        // (ExecInsert with ON CONFLICT), on this target's slot and state.
        unsafe {
            let arbiters = pg_sys::lappend_oid(null_mut(), arbiter);
            (*self.rri).ri_onConflictArbiterIndexes = arbiters;
            if !(*(*self.rel).rd_att).constr.is_null() {
                pg_sys::ExecConstraints(self.rri, self.new, self.estate);
            }
            loop {
                let mut conflict = std::mem::zeroed::<pg_sys::ItemPointerData>();
                if check
                    && !pg_sys::ExecCheckIndexConstraints(
                        self.rri,
                        self.new,
                        self.estate,
                        &mut conflict,
                        arbiters,
                    )
                {
                    return Ok(None);
                }
                let xid = pg_sys::GetCurrentTransactionId();
                let token = pg_sys::SpeculativeInsertionLockAcquire(xid);
                pg_sys::table_tuple_insert_speculative(
                    self.rel,
                    self.new,
                    (*self.estate).es_output_cid,
                    0,
                    null_mut(),
                    token,
                );
                let mut raced = false;
                let recheck = pg_sys::ExecInsertIndexTuples(
                    self.rri,
                    self.new,
                    self.estate,
                    false,
                    true,
                    &mut raced,
                    arbiters,
                );
                pg_sys::table_tuple_complete_speculative(self.rel, self.new, token, !raced);
                pg_sys::SpeculativeInsertionLockRelease(xid);
                if !raced {
                    pg_sys::ExecARInsertTriggers(
                        self.estate,
                        self.rri,
                        self.new,
                        recheck,
                        null_mut(),
                    );
                    pg_sys::list_free(recheck);
                    return Ok(Some(Tid::from_item_pointer((*self.new).tts_tid)));
                }
                // The key is there (another transaction inserted it
                // meanwhile): the check finds its row, waiting for its
                // transaction (unless it rolled back).
                pg_sys::list_free(recheck);
                check = true;
            }
        }
    }

    fn fill(&mut self, columns: &[Column]) {
        let positions: Vec<usize> = columns.iter().map(|(n, _)| self.attnum(n)).collect();
        // SAFETY: the slot is this target's, filled before it is stored.
        unsafe {
            pg_sys::ExecClearTuple(self.new);
            for i in 0..self.natts {
                *(*self.new).tts_values.add(i) = pg_sys::Datum::from(0);
                *(*self.new).tts_isnull.add(i) = true;
            }
            for (i, (_, value)) in positions.iter().zip(columns) {
                *(*self.new).tts_values.add(*i) = value.unwrap_or(pg_sys::Datum::from(0));
                *(*self.new).tts_isnull.add(*i) = value.is_none();
            }
            pg_sys::ExecStoreVirtualTuple(self.new);
        }
    }

    /// The row `insert_new` inserted last, as a composite datum of the
    /// table's row type (allocated in the current memory context).
    pub fn inserted(&self) -> pg_sys::Datum {
        // SAFETY: the slot holds the row inserted last.
        unsafe { pg_sys::ExecFetchSlotHeapTupleDatum(self.new) }
    }

    /// Inserts a row of `columns`; every other column is NULL.
    pub fn insert(&mut self, columns: &[Column]) -> Result<(), AuditError> {
        self.fill(columns);
        // SAFETY: the slot holds the row just formed.
        unsafe { pg_sys::ExecSimpleRelationInsert(self.rri, self.estate, self.new) };
        Ok(())
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // After an error the transaction's abort releases all of it.
        if std::thread::panicking() {
            return;
        }
        // SAFETY: releases what `open` took, once, firing the queued AFTER
        // row triggers as a statement's end would.
        unsafe {
            pg_sys::AfterTriggerEndQuery(self.estate);
            pg_sys::EvalPlanQualEnd(&mut *self.epq);
            pg_sys::ExecDropSingleTupleTableSlot(self.old);
            pg_sys::ExecDropSingleTupleTableSlot(self.new);
            pg_sys::ExecCloseIndices(self.rri);
            pg_sys::ExecResetTupleTable((*self.estate).es_tupleTable, false);
            pg_sys::FreeExecutorState(self.estate);
            pg_sys::table_close(self.rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        }
    }
}
