//! JWT session issuance at the SQL boundary (`authaudit.record_token_issued`
//! in `sql/token.sql`); the parsing lives in `authaudit_core::jwt`.
//!
//! Facts under `metadata._authaudit` are the extension's own: `record_event`
//! refuses callers' metadata with that key. `record_token_issued` hands its
//! facts over with a grant that is good for one `log_id`, in the current
//! transaction, once.

use crate::error::{AuditError, SqlResult};
use authaudit_core::jwt;
use pgrx::datum::Uuid;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::Cell;

/// The header fields, registered claims and fingerprint of a token issued to
/// `user_id`, as JSON; raises the documented SQLSTATE for a refused token.
#[pg_extern(immutable, parallel_safe, name = "_token_facts")]
fn token_facts(token: Option<&str>, user_id: Option<&str>) -> SqlResult<pgrx::JsonB> {
    let token = token.ok_or(AuditError::Event(
        authaudit_core::event::EventError::Missing("token"),
    ))?;
    let user_id = user_id.ok_or(AuditError::Event(
        authaudit_core::event::EventError::Missing("user_id"),
    ))?;
    let facts = jwt::parse(token, user_id).map_err(AuditError::from)?;
    Ok(pgrx::JsonB(facts.to_json()))
}

thread_local! {
    /// (local transaction id, log_id) of the one pending grant.
    static GRANT: Cell<Option<(u32, [u8; 16])>> = const { Cell::new(None) };
}

fn local_xid() -> u32 {
    // SAFETY: MyProc is this backend's PGPROC, valid while it runs.
    unsafe { (*pg_sys::MyProc).lxid }
}

/// Lets the next `record_event` of `log_id` in this transaction carry
/// extension facts. Not executable by PUBLIC.
#[pg_extern(volatile, strict, name = "_grant_facts")]
fn grant_facts(log_id: Uuid) {
    GRANT.with(|g| g.set(Some((local_xid(), *log_id.as_bytes()))));
}

/// Whether a grant for `log_id` is pending in this transaction; consumes it.
#[pg_extern(volatile, strict, name = "_take_facts_grant")]
fn take_facts_grant(log_id: Uuid) -> bool {
    GRANT.with(|g| g.take()) == Some((local_xid(), *log_id.as_bytes()))
}
