//! An event in OCSF 1.8.0 (docs/api.md, "OCSF"): logins and token
//! issuance are Authentication (3002), locks and resets Account Change
//! (3001); the tenant is `metadata.tenant_uid`, and the chain's position
//! and digests, the organisation, the channel and the recorded metadata
//! (exact) are under `unmapped`.

use crate::stored_event::{ChainFields, StoredEvent};
use serde::Serialize;
use serde_json::{json, Value};

/// The OCSF version the events follow.
pub const VERSION: &str = "1.8.0";

/// An OCSF event class and activity for an event type: (class_uid,
/// class name, activity_id, activity name).
pub fn classify(event_type: &str) -> (i64, &'static str, i64, &'static str) {
    match event_type {
        "login_failed" | "login_success" => (3002, "Authentication", 1, "Logon"),
        "token_issued" => (3002, "Authentication", 3, "Authentication Ticket"),
        "account_locked" => (3001, "Account Change", 9, "Lock"),
        "lockout_reset" => (3001, "Account Change", 12, "Unlock"),
        // The extension's own records (retention, a lockout rebuild).
        _ => (3001, "Account Change", 99, "Other"),
    }
}

#[derive(Serialize)]
struct Event<'a> {
    #[serde(flatten)]
    base: Value,
    unmapped: Unmapped<'a>,
}

#[derive(Serialize)]
struct Unmapped<'a> {
    pg_authaudit: Chain<'a>,
}

#[derive(Serialize)]
struct Chain<'a> {
    event_type: &'a str,
    #[serde(flatten)]
    chain: ChainFields<'a>,
    imported: bool,
}

/// The event as one OCSF JSON object (no newline).
pub fn to_ocsf(e: &StoredEvent, product_version: &str) -> String {
    let (class_uid, class_name, activity_id, activity_name) = classify(&e.event_type);
    let (status_id, status) = match e.event_type.as_str() {
        "login_failed" => (2, "Failure"),
        "retention_applied" | "lockout_rebuilt" => (99, "Other"),
        _ => (1, "Success"),
    };
    let (severity_id, severity) = match e.event_type.as_str() {
        "login_failed" => (2, "Low"),
        "account_locked" => (3, "Medium"),
        _ => (1, "Informational"),
    };
    let mut base = json!({
        "category_uid": 3,
        "category_name": "Identity & Access Management",
        "class_uid": class_uid,
        "class_name": class_name,
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity_id,
        "type_name": format!("{class_name}: {activity_name}"),
        "time": e.occurred_at_ms,
        "severity_id": severity_id,
        "severity": severity,
        "status_id": status_id,
        "status": status,
        "user": {"name": e.user_id},
        "metadata": {
            "version": VERSION,
            "product": {"name": "pg_authaudit", "vendor_name": "pg_authaudit", "version": product_version},
            "uid": e.log_id,
            "tenant_uid": e.tenant_id,
            "log_name": "authaudit.auth_log",
            "logged_time": e.recorded_at_ms,
            "sequence": e.seq,
        },
        "message": format!("{} {} ({})", e.event_type, e.user_id, e.channel),
    });
    if class_uid == 3002 {
        base["service"] = json!({"name": e.channel});
        if let Some(reason) = e.reason() {
            base["status_detail"] = json!(reason);
        }
    }
    if let Some(ip) = &e.ip {
        base["src_endpoint"] = json!({"ip": ip});
    }
    if let Some(ua) = &e.user_agent {
        if class_uid == 3002 {
            base["http_request"] = json!({"user_agent": ua});
        }
    }
    let event = Event {
        base,
        unmapped: Unmapped {
            pg_authaudit: Chain {
                event_type: &e.event_type,
                chain: e.chain_fields(),
                imported: e.imported(),
            },
        },
    };
    serde_json::to_string(&event).expect("an event serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stored_event::sample;

    #[test]
    fn a_failed_login_is_an_authentication_failure_with_its_tenant_and_chain() {
        let out = to_ocsf(&sample("login_failed"), "0.9.0");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["class_uid"], 3002);
        assert_eq!(v["type_uid"], 300201);
        assert_eq!(v["status_id"], 2);
        assert_eq!(v["status_detail"], "bad_password");
        assert_eq!(v["metadata"]["tenant_uid"], "agency-1");
        assert_eq!(v["time"], 1796637600000_i64);
        assert_eq!(v["unmapped"]["pg_authaudit"]["seq"], 42);
        // The recorded metadata is there byte for byte.
        assert!(out.contains("12345678901234567890.10"), "{out}");
    }

    #[test]
    fn locks_and_resets_are_account_changes() {
        for (t, activity) in [
            ("account_locked", 9),
            ("lockout_reset", 12),
            ("lockout_rebuilt", 99),
        ] {
            let v: Value = serde_json::from_str(&to_ocsf(&sample(t), "0.9.0")).unwrap();
            assert_eq!(v["class_uid"], 3001, "{t}");
            assert_eq!(v["activity_id"], activity, "{t}");
            assert_eq!(v["type_uid"], 300100 + activity, "{t}");
        }
    }
}
