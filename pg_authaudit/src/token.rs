//! JWT session issuance at the SQL boundary (`authaudit.record_token_issued`
//! in `sql/token.sql`); the parsing lives in `authaudit_core::jwt`.
//!
//! Facts under `metadata._authaudit` are the extension's own: `record_event`
//! refuses callers' metadata with that key, and `record_token_issued` passes
//! its facts straight to the internal pipeline `authaudit._record`, which no
//! writer may execute.

use crate::error::{AuditError, SqlResult};
use authaudit_core::jwt;
use pgrx::prelude::*;

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
