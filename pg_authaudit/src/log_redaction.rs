//! Keeps session tokens out of the server log. An `emit_log_hook` sees every
//! message before it is written and applies `authaudit_core::log_text`:
//!
//! - the `STATEMENT:` line of a message whose statement holds something
//!   shaped like a compact JWS, or calls `record_token_issued`, is hidden;
//! - a message that carries statement text itself (`log_statement`,
//!   `log_min_duration_statement`, `auto_explain`) and holds a token or
//!   calls `record_token_issued` is replaced, keeping its duration;
//! - a detail, context or internal query holding a token is dropped, and so
//!   are the bound parameters (`parameters: $1 = …`, logged with
//!   `log_parameter_max_length` at its default) of a hidden statement.
//!
//! What the hook cannot reach (other extensions' own log files, a client's
//! log) is said in docs/security.md.

use authaudit_core::log_text;
use pgrx::pg_sys;
use std::ffi::{CStr, CString};

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

/// The text of a message part (`None` for NULL).
///
/// # Safety
/// `p` is NULL or a NUL-terminated string.
unsafe fn text(p: *const std::ffi::c_char) -> Option<String> {
    // SAFETY: as the function requires.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

unsafe extern "C-unwind" fn emit_log(edata: *mut pg_sys::ErrorData) {
    if !edata.is_null() {
        // SAFETY: as `redact` requires. A PostgreSQL error inside it (out of
        // memory in palloc) arrives as a panic, which must not unwind into
        // errfinish: the message is then written without any part that
        // could hold a token (nothing is allocated for that).
        let redacted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
            redact(&mut *edata)
        }));
        if redacted.is_err() {
            // SAFETY: the message being emitted; its parts are dropped
            // without freeing them (ErrorContext is reset with the rest).
            unsafe {
                let e = &mut *edata;
                e.hide_stmt = true;
                e.detail = std::ptr::null_mut();
                e.detail_log = std::ptr::null_mut();
                e.context = std::ptr::null_mut();
                e.internalquery = std::ptr::null_mut();
            }
        }
    }
    // SAFETY: the hook installed before this one, with the same message.
    unsafe {
        if let Some(previous) = PREVIOUS {
            previous(edata);
        }
    }
}

/// Applies `log_text` to the message being emitted.
///
/// # Safety
/// `e` is the message PostgreSQL is emitting: its parts are NULL or
/// NUL-terminated strings allocated in ErrorContext, the current memory
/// context while a message is emitted and the one errfinish frees them
/// from; debug_query_string is NULL or the current statement's text. A
/// replaced part is allocated there too (palloc, freed with the rest); a
/// dropped part is freed and set to NULL, which errfinish skips.
unsafe fn redact(e: &mut pg_sys::ErrorData) {
    // SAFETY: as the function requires.
    unsafe {
        let statement_hidden =
            text(pg_sys::debug_query_string).is_some_and(|q| log_text::must_hide(&q));
        if statement_hidden {
            e.hide_stmt = true;
        }
        let mut message_hidden = false;
        if let Some(replacement) = text(e.message).and_then(|m| log_text::message(&m)) {
            let replacement = CString::new(replacement).unwrap_or_default();
            let old = e.message;
            e.message = pg_sys::pstrdup(replacement.as_ptr());
            pg_sys::pfree(old.cast());
            message_hidden = true;
        }
        let hidden = statement_hidden || message_hidden;
        for part in [
            &mut e.detail,
            &mut e.detail_log,
            &mut e.context,
            &mut e.internalquery,
        ] {
            if text(*part).is_some_and(|p| log_text::drop_part(&p, hidden)) {
                let old = std::mem::replace(part, std::ptr::null_mut());
                pg_sys::pfree(old.cast());
            }
        }
    }
}
