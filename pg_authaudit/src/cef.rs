//! CEF export at the SQL boundary (`authaudit.to_cef`, `export_cef`); the
//! format lives in `authaudit_core::cef`.

use authaudit_core::cef::{line, CefEvent};
use authaudit_core::chain::ct_eq;
use authaudit_core::event::parse_host_ip;
use pgrx::datum::{TimestampWithTimeZone, Uuid};
use pgrx::prelude::*;

/// One CEF line from a row's fields (called by `authaudit.to_cef`);
/// `imported_at` is the `recorded_at` of an imported event, else NULL.
#[allow(clippy::too_many_arguments)]
#[pg_extern(immutable, parallel_safe, name = "_cef_event_line")]
fn cef_event_line(
    event_type: &str,
    user_id: &str,
    ip: Option<&str>,
    user_agent: Option<&str>,
    occurred_at: TimestampWithTimeZone,
    log_id: Uuid,
    tenant_id: &str,
    org_id: Option<&str>,
    channel: &str,
    seq: i64,
    link_sha256: &[u8],
    reason: Option<&str>,
    preceding_failures: Option<i32>,
    was_locked: Option<bool>,
    token_fingerprint: Option<&str>,
    imported_at: Option<TimestampWithTimeZone>,
) -> String {
    let link_hex = hex::encode(link_sha256);
    let log_id = log_id.to_string();
    line(
        &CefEvent {
            event_type,
            user_id,
            ip: ip.and_then(|t| parse_host_ip(t).ok()),
            user_agent,
            occurred_at_ms: crate::time::unix_micros(occurred_at).div_euclid(1000),
            log_id: &log_id,
            tenant_id,
            org_id,
            channel,
            seq,
            link_sha256_hex: &link_hex,
            reason,
            preceding_failures,
            was_locked,
            token_fingerprint,
            imported_at_ms: imported_at.map(|t| crate::time::unix_micros(t).div_euclid(1000)),
        },
        env!("CARGO_PKG_VERSION"),
    )
}

/// Constant-time equality of two texts (used to check a CEF line).
#[pg_extern(immutable, strict, parallel_safe, name = "_ct_eq")]
fn ct_eq_text(a: &str, b: &str) -> bool {
    ct_eq(a.as_bytes(), b.as_bytes())
}
