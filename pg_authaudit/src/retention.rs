//! The one way rows leave the auth log: `authaudit.apply_retention`
//! (`sql/checkpoint.sql`). The append-only trigger lets a DELETE through
//! only while a retention grant of the current subtransaction is open: a
//! rollback to a savepoint (a cancelled `apply_retention`, say) leaves no
//! grant behind, because every later subtransaction has another id.

use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::Cell;

thread_local! {
    /// (local transaction id, subtransaction id) of the open retention grant.
    static GRANT: Cell<Option<(u32, pg_sys::SubTransactionId)>> = const { Cell::new(None) };
}

fn here() -> (u32, pg_sys::SubTransactionId) {
    // SAFETY: MyProc is this backend's PGPROC, valid while it runs; the
    // subtransaction id is a plain read of the transaction state.
    unsafe { ((*pg_sys::MyProc).lxid, pg_sys::GetCurrentSubTransactionId()) }
}

/// Opens the grant (called by `apply_retention` only; not executable by PUBLIC).
#[pg_extern(volatile, strict, name = "_allow_retention")]
fn allow_retention(_tenant_id: &str) {
    GRANT.with(|g| g.set(Some(here())));
}

/// Closes the grant.
#[pg_extern(volatile, name = "_end_retention")]
fn end_retention() {
    GRANT.with(|g| g.set(None));
}

/// Whether a retention grant is open in this subtransaction.
#[pg_extern(volatile, name = "_retention_active")]
fn retention_active() -> bool {
    GRANT.with(Cell::get) == Some(here())
}
