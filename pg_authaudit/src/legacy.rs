//! Compatibility with the SQL of earlier releases, in one place.
//!
//! **The window:** this library serves the SQL objects of its own release
//! and of the release before it ([`PREVIOUS`]), so that a database keeps
//! working between installing the library (a restart, since it is
//! preloaded) and `ALTER EXTENSION pg_authaudit UPDATE`. The SQL of an older
//! release is refused with `0A000` and the hint to run the update: the
//! entry points that read or write the extension's tables ask [`sql`]
//! first, and the C symbols only older SQL calls are the stubs below. The
//! update itself works from every release (docs/installation.md).
//!
//! What [`PREVIOUS`]'s SQL needs from this library, and nothing else, is
//! written here or asks [`sql`]:
//! - bindings are read by role name ([`BINDINGS_BY_NAME`]): its
//!   `tenant_scope` has no `role_oid`;
//! - the investigation replays from a tenant's first event: it has no
//!   snapshot tables.

use crate::error::AuditError;
use authaudit_core::release::served;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::Cell;
use std::ffi::CStr;

pub use authaudit_core::release::{Sql, PREVIOUS};

thread_local! {
    /// The installed release's SQL, forgotten on any relation cache
    /// invalidation: an update alters the extension's tables.
    static SQL: Cell<Option<Sql>> = const { Cell::new(None) };
    /// Whether this backend registered [`forget`].
    static WATCHING: Cell<bool> = const { Cell::new(false) };
}

/// Runs inside PostgreSQL's invalidation processing: never panics.
#[pg_guard]
unsafe extern "C-unwind" fn forget(_arg: pg_sys::Datum, _relid: pg_sys::Oid) {
    SQL.with(|s| s.set(None));
}

/// The SQL objects the database has; refuses (`0A000`) a release outside
/// the window. Read once per backend and again after a catalog change.
pub fn sql() -> Result<Sql, AuditError> {
    if let Some(s) = SQL.with(Cell::get) {
        return Ok(s);
    }
    if !WATCHING.with(Cell::get) {
        // SAFETY: PostgreSQL's callback registry, once per backend.
        unsafe {
            pg_sys::CacheRegisterRelcacheCallback(Some(forget), pg_sys::Datum::from(0));
        }
        WATCHING.with(|w| w.set(true));
    }
    let installed = Spi::get_one::<String>(
        "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_authaudit'",
    )?
    .unwrap_or_default();
    let s = served(&installed).ok_or(AuditError::RetiredSql { installed })?;
    SQL.with(|c| c.set(Some(s)));
    Ok(s)
}

/// [`PREVIOUS`]'s bindings, by role name: its `tenant_scope` has no
/// `role_oid`.
pub const BINDINGS_BY_NAME: &CStr = c"SELECT s.tenant_id, s.org_id, s.can_read, s.can_write \
                                  FROM authaudit.tenant_scope s WHERE s.role_name = $1::pg_catalog.name";

/// The symbols only the SQL of releases before the window calls, each
/// with what called it: every one refuses with the hint to run the update.
macro_rules! retired {
    ($($(#[doc = $doc:literal])* $name:ident;)*) => {$(
        $(#[doc = $doc])*
        #[pg_extern(sql = false)]
        fn $name() -> Result<(), pgrx::pg_sys::panic::ErrorReport> {
            Err(AuditError::RetiredSql {
                installed: format!("older than {PREVIOUS}"),
            }
            .into())
        }
    )*};
}

retired! {
    /// Release 0.1.0's `_lockout_apply`.
    lockout_apply;
    /// Release 0.2.0's `_lockout_apply` (with organisations).
    lockout_apply_scoped;
    /// Release 0.1.0's grant of facts to `record_event`.
    grant_facts;
    /// Release 0.1.0's taking of that grant.
    take_facts_grant;
    /// Releases 0.1.0 to 0.4.0's `_cef_line` (no import time).
    cef_line;
}
