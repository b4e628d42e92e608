//! Keeps session tokens out of the server log. PostgreSQL writes the text
//! of a failing statement to the log (`log_min_error_statement`, `error` by
//! default), and a refused `record_token_issued` call carries the token in
//! that text. An `emit_log_hook` hides the statement of every message whose
//! statement holds something shaped like a compact JWS, or names
//! `record_token_issued`, and drops a context that holds a token (bind
//! parameters logged by `log_parameter_max_length_on_error`).
//!
//! What the hook cannot reach is said in docs/security.md: `log_statement`
//! logs statements before they run, whatever their outcome.

use authaudit_core::jwt::contains_compact_jws;
use pgrx::pg_sys;
use std::ffi::CStr;

static mut PREVIOUS: pg_sys::emit_log_hook_type = None;

/// Installs the hook, chained to any installed before it.
pub fn init() {
    // SAFETY: _PG_init runs once per process, before any message is emitted
    // through this library.
    unsafe {
        PREVIOUS = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(emit_log);
    }
}

/// Whether a statement's text must stay out of the log.
fn must_hide(statement: &str) -> bool {
    contains_compact_jws(statement)
        || statement
            .to_ascii_lowercase()
            .contains("record_token_issued")
}

unsafe extern "C-unwind" fn emit_log(edata: *mut pg_sys::ErrorData) {
    // SAFETY: PostgreSQL passes the message being emitted; debug_query_string
    // is NULL or the current statement's NUL-terminated text. Nothing here
    // raises an error.
    unsafe {
        if !edata.is_null() {
            let q = pg_sys::debug_query_string;
            if !q.is_null() && must_hide(&CStr::from_ptr(q).to_string_lossy()) {
                (*edata).hide_stmt = true;
            }
            let context = (*edata).context;
            if !context.is_null()
                && contains_compact_jws(&CStr::from_ptr(context).to_string_lossy())
            {
                (*edata).context = std::ptr::null_mut();
            }
        }
        if let Some(previous) = PREVIOUS {
            previous(edata);
        }
    }
}
