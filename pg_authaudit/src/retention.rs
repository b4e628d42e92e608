//! The one way rows leave the auth log: `authaudit.apply_retention`
//! (`sql/checkpoint.sql`). The append-only trigger lets a DELETE through
//! only while a retention grant of the current transaction is open.

use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::Cell;

thread_local! {
    /// The local transaction id of the open retention grant.
    static GRANT: Cell<Option<u32>> = const { Cell::new(None) };
}

fn local_xid() -> u32 {
    // SAFETY: MyProc is this backend's PGPROC, valid while it runs.
    unsafe { (*pg_sys::MyProc).lxid }
}

/// Opens the grant (called by `apply_retention` only; not executable by PUBLIC).
#[pg_extern(volatile, strict, name = "_allow_retention")]
fn allow_retention(_tenant_id: &str) {
    GRANT.with(|g| g.set(Some(local_xid())));
}

/// Closes the grant.
#[pg_extern(volatile, name = "_end_retention")]
fn end_retention() {
    GRANT.with(|g| g.set(None));
}

/// Whether a retention grant is open in this transaction.
#[pg_extern(volatile, name = "_retention_active")]
fn retention_active() -> bool {
    GRANT.with(Cell::get) == Some(local_xid())
}
