//! The extension's internal statements, each prepared once per backend and
//! kept for the session (PostgreSQL re-plans a kept plan by itself when a
//! table it reads changes). A statement about one event runs with its
//! generic plan: PostgreSQL's plan cache would otherwise keep planning
//! statements whose parameters switch parts of them on and off anew for
//! every call (a custom plan looks cheaper). A statement over a batch's
//! arrays is planned for its arrays (`Plans::PerCall`): a generic plan
//! cannot see how many elements they hold, and one made while the tables
//! were small scans them whole.

use crate::error::AuditError;
use pgrx::datum::DatumWithOid;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiHeapTupleData, SpiTupleTable};
use pgrx::{pg_sys, PgBuiltInOids, PgOid};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CStr;
use std::rc::Rc;

thread_local! {
    /// The kept plans. No borrow of it is held while a statement runs: a
    /// statement may run another (the chain head of a tenant not cached
    /// yet is read while `_record` runs inside a rebuild).
    static PLANS: RefCell<HashMap<&'static str, Rc<OwnedPreparedStatement>>> = RefCell::new(HashMap::new());
}

/// Runs a kept plan of `sql` (parameters typed `types`) under `key`, with
/// its generic plan.
pub fn run<'c>(
    client: &mut SpiClient<'c>,
    key: &'static str,
    sql: &str,
    types: &[PgBuiltInOids],
    args: &[DatumWithOid<'_>],
) -> Result<SpiTupleTable<'c>, AuditError> {
    run_with(client, key, sql, types, args, Plans::Generic)
}

/// How a kept statement is planned.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Plans {
    /// Once, for any parameters.
    Generic,
    /// As PostgreSQL's plan cache decides (for the parameters of the call
    /// while a custom plan is cheaper).
    PerCall,
}

/// Runs a kept plan of `sql` under `key`, planned as `plans` says.
pub fn run_with<'c>(
    client: &mut SpiClient<'c>,
    key: &'static str,
    sql: &str,
    types: &[PgBuiltInOids],
    args: &[DatumWithOid<'_>],
    plans: Plans,
) -> Result<SpiTupleTable<'c>, AuditError> {
    let kept = PLANS.with(|cache| cache.borrow().get(key).cloned());
    let stmt = match kept {
        Some(stmt) => stmt,
        None => {
            let oids: Vec<PgOid> = types.iter().map(|t| PgOid::BuiltIn(*t)).collect();
            let stmt = Rc::new(client.prepare_mut(sql, &oids)?.keep());
            PLANS.with(|cache| cache.borrow_mut().insert(key, stmt.clone()));
            stmt
        }
    };
    let _generic = (plans == Plans::Generic).then(GenericPlans::now);
    Ok(client.update(&*stmt, None, args)?)
}

/// `plan_cache_mode = force_generic_plan` until dropped (also when an error
/// unwinds through it), the setting before restored then.
struct GenericPlans(std::ffi::c_int);

impl GenericPlans {
    fn now() -> GenericPlans {
        // SAFETY: a plain global of this backend, read by the plan cache
        // when a statement runs; set back by Drop.
        unsafe {
            let before = pg_sys::plan_cache_mode;
            pg_sys::plan_cache_mode =
                pg_sys::PlanCacheMode::PLAN_CACHE_MODE_FORCE_GENERIC_PLAN as std::ffi::c_int;
            GenericPlans(before)
        }
    }
}

impl Drop for GenericPlans {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { pg_sys::plan_cache_mode = self.0 }
    }
}

/// Runs the query `sql` read-only with the latest snapshot: what was
/// committed by the time it runs, whatever the transaction's isolation
/// level and snapshot (a read-write statement would take the transaction's
/// snapshot, in REPEATABLE READ an old one). Hands each row to `each`.
/// Needs an SPI connection (inside `Spi::connect`).
pub fn read_latest<T>(
    sql: &CStr,
    args: &[(pg_sys::Oid, pg_sys::Datum)],
    each: impl FnMut(&SpiHeapTupleData<'_>) -> Result<T, AuditError>,
) -> Result<Vec<T>, AuditError> {
    // SAFETY: the latest snapshot, pushed (copied) by `read_in` at once.
    read_in(unsafe { pg_sys::GetLatestSnapshot() }, sql, args, each)
}

/// One snapshot for several reads: the transaction's snapshot as of when
/// it was taken (in READ COMMITTED, what was committed then), so that what
/// one read finds agrees with what another finds. Each read-write
/// statement would take a new one.
pub struct Pinned(pg_sys::Snapshot);

impl Pinned {
    /// The transaction's snapshot now.
    pub fn now() -> Pinned {
        // SAFETY: registers a copy with the current resource owner, which
        // `Drop` unregisters (an abort releases it with the owner).
        Pinned(unsafe { pg_sys::RegisterSnapshot(pg_sys::GetTransactionSnapshot()) })
    }

    /// Runs the query `sql` read-only in this snapshot through a cursor,
    /// handing each row to `each` as it is fetched (`BATCH` rows held at a
    /// time): the rows of a long history are never all in memory.
    pub fn stream(
        &self,
        sql: &CStr,
        args: &[(pg_sys::Oid, pg_sys::Datum)],
        mut each: impl FnMut(&SpiHeapTupleData<'_>) -> Result<(), AuditError>,
    ) -> Result<(), AuditError> {
        // Small enough that a fetched table stays in the allocator's heap
        // (larger tables are mapped and unmapped, page by page, per fetch).
        const BATCH: std::ffi::c_long = 1_000;
        let mut types: Vec<pg_sys::Oid> = args.iter().map(|a| a.0).collect();
        let mut values: Vec<pg_sys::Datum> = args.iter().map(|a| a.1).collect();
        // SAFETY: SPI is connected (the caller's `Spi::connect`). The
        // read-only cursor takes the snapshot active when it opens (this
        // one, pushed for the call) and keeps it registered until closed.
        // `values` holds non-null datums of `types`, alive for the open.
        // Each fetched table is read and then freed; the cursor is closed
        // on every return (an error closes it with the transaction).
        unsafe {
            pg_sys::PushActiveSnapshot(self.0);
            let portal = pg_sys::SPI_cursor_open_with_args(
                std::ptr::null(),
                sql.as_ptr(),
                i32::try_from(args.len()).expect("a few arguments"),
                types.as_mut_ptr(),
                values.as_mut_ptr(),
                std::ptr::null(),
                true,
                0,
            );
            pg_sys::PopActiveSnapshot();
            let mut failed = None;
            loop {
                pg_sys::SPI_cursor_fetch(portal, true, BATCH);
                let table = pg_sys::SPI_tuptable;
                let rows = if table.is_null() {
                    0
                } else {
                    pg_sys::SPI_processed as usize
                };
                for i in 0..rows {
                    let row = SpiHeapTupleData::new((*table).tupdesc, *(*table).vals.add(i))?
                        .expect("a row");
                    if let Err(e) = each(&row) {
                        failed = Some(e);
                        break;
                    }
                }
                if !table.is_null() {
                    pg_sys::SPI_freetuptable(table);
                }
                if rows == 0 || failed.is_some() {
                    break;
                }
            }
            pg_sys::SPI_cursor_close(portal);
            match failed {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
    }

    /// Runs the query `sql` read-only in this snapshot, as `read_latest`.
    pub fn read<T>(
        &self,
        sql: &CStr,
        args: &[(pg_sys::Oid, pg_sys::Datum)],
        each: impl FnMut(&SpiHeapTupleData<'_>) -> Result<T, AuditError>,
    ) -> Result<Vec<T>, AuditError> {
        read_in(self.0, sql, args, each)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: the snapshot `now` registered, once.
        unsafe { pg_sys::UnregisterSnapshot(self.0) }
    }
}

/// Runs the query `sql` read-only in `snapshot`, handing each row to `each`.
fn read_in<T>(
    snapshot: pg_sys::Snapshot,
    sql: &CStr,
    args: &[(pg_sys::Oid, pg_sys::Datum)],
    mut each: impl FnMut(&SpiHeapTupleData<'_>) -> Result<T, AuditError>,
) -> Result<Vec<T>, AuditError> {
    let mut types: Vec<pg_sys::Oid> = args.iter().map(|a| a.0).collect();
    let mut values: Vec<pg_sys::Datum> = args.iter().map(|a| a.1).collect();
    // SAFETY: SPI is connected (the caller's `Spi::connect`). The snapshot
    // is the active one while the read-only query runs, which SPI then
    // uses as it is; it is popped once the rows are read (an error pops it
    // with the (sub)transaction's abort). `values` holds non-null datums of
    // `types` (no nulls array), alive for the call. SPI_tuptable is the
    // table this query produced, read and then freed.
    unsafe {
        pg_sys::PushActiveSnapshot(snapshot);
        let status = pg_sys::SPI_execute_with_args(
            sql.as_ptr(),
            i32::try_from(args.len()).expect("a few arguments"),
            types.as_mut_ptr(),
            values.as_mut_ptr(),
            std::ptr::null(),
            true,
            0,
        );
        let mut out = Vec::new();
        let table = pg_sys::SPI_tuptable;
        let rows = if status == pg_sys::SPI_OK_SELECT as i32 && !table.is_null() {
            pg_sys::SPI_processed as usize
        } else {
            0
        };
        let mut failed = None;
        for i in 0..rows {
            let row =
                SpiHeapTupleData::new((*table).tupdesc, *(*table).vals.add(i))?.expect("a row");
            match each(&row) {
                Ok(v) => out.push(v),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if !table.is_null() {
            pg_sys::SPI_freetuptable(table);
        }
        pg_sys::PopActiveSnapshot();
        if let Some(e) = failed {
            return Err(e);
        }
        if status != pg_sys::SPI_OK_SELECT as i32 {
            return Err(AuditError::Spi(pgrx::spi::SpiError::NoTupleTable));
        }
        Ok(out)
    }
}
