//! What the write endpoints send to PostgreSQL, built without reading a
//! value's number as a float: an event body's fields stay the JSON text
//! the caller sent (metadata numbers keep every digit), with the path's
//! tenant filled in; and a reset's log id derived from its idempotency key.

use crate::problem::ApiError;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

type Event = BTreeMap<String, Box<RawValue>>;

/// An event object or an array of them, as a JSON array for
/// `record_events`, each event's `tenant_id` the path's. Returns the array
/// and whether the body was a single event.
pub fn events_body(body: &[u8], tenant: &str) -> Result<(String, bool), ApiError> {
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::Body("the body is not UTF-8".into()))?;
    let trimmed = text.trim_start();
    let (mut events, single): (Vec<Event>, bool) = if trimmed.starts_with('[') {
        (serde_json::from_str(text).map_err(|e| shape(&e))?, false)
    } else {
        (
            vec![serde_json::from_str(text).map_err(|e| shape(&e))?],
            true,
        )
    };
    if events.is_empty() {
        return Err(ApiError::Body("the array holds no event".into()));
    }
    for (i, e) in events.iter_mut().enumerate() {
        match e.get("tenant_id") {
            None => {
                let v = serde_json::to_string(tenant).expect("a string encodes");
                e.insert(
                    "tenant_id".into(),
                    RawValue::from_string(v).expect("valid JSON"),
                );
            }
            Some(v) => {
                let given: Option<String> = serde_json::from_str(v.get()).ok();
                if given.as_deref() != Some(tenant) {
                    let field = if single {
                        "tenant_id".to_string()
                    } else {
                        format!("[{i}].tenant_id")
                    };
                    return Err(ApiError::invalid(field, "must be the tenant of the path"));
                }
            }
        }
    }
    let json = serde_json::to_string(&events).map_err(|e| ApiError::Body(e.to_string()))?;
    Ok((json, single))
}

fn shape(e: &serde_json::Error) -> ApiError {
    ApiError::Body(format!(
        "the body must be an event object or an array of event objects ({})",
        match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof =>
                "not valid JSON",
            _ => "wrong shape",
        }
    ))
}

/// The log id of a reset: a UUID (version 8, RFC 9562) from the tenant, the
/// account, the caller's role and its idempotency key, so a retried
/// request records nothing new.
pub fn reset_log_id(tenant: &str, user: &str, role: &str, key: &str) -> String {
    let mut h = Sha256::new();
    for part in ["authaudit-api reset", tenant, user, role, key] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let mut b: [u8; 16] = h.finalize()[..16].try_into().expect("16 bytes");
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_tenant_is_filled_in_and_numbers_keep_their_digits() {
        let body = br#"{"log_id": "0b8f6f3f-0000-4000-8000-000000000001", "event_type": "login_failed",
                        "user_id": "bob", "channel": "web", "metadata": {"n": 12345678901234567890.10}}"#;
        let (json, single) = events_body(body, "agency-1").unwrap();
        assert!(single);
        assert!(json.contains(r#""tenant_id":"agency-1""#), "{json}");
        assert!(json.contains("12345678901234567890.10"), "{json}");
        assert!(json.starts_with('['));
    }

    #[test]
    fn another_tenant_and_wrong_shapes_are_refused() {
        let e = events_body(br#"[{"tenant_id": "agency-2"}]"#, "agency-1").unwrap_err();
        assert!(matches!(e, ApiError::Invalid { ref field, .. } if field == "[0].tenant_id"));
        let e = events_body(br#"{"tenant_id": 7}"#, "agency-1").unwrap_err();
        assert!(matches!(e, ApiError::Invalid { ref field, .. } if field == "tenant_id"));
        for body in [
            &b"[]"[..],
            b"7",
            b"\"x\"",
            b"null",
            b"[1]",
            b"[[]]",
            b"{",
            b"\xff",
        ] {
            assert!(
                matches!(events_body(body, "t"), Err(ApiError::Body(_))),
                "{body:?}"
            );
        }
    }

    #[test]
    fn a_reset_key_gives_one_log_id() {
        let a = reset_log_id("t", "alice", "helpdesk", "k-1");
        assert_eq!(a, reset_log_id("t", "alice", "helpdesk", "k-1"));
        assert_ne!(a, reset_log_id("t", "alice", "helpdesk", "k-2"));
        assert_ne!(a, reset_log_id("t", "alice", "other", "k-1"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
    }
}
