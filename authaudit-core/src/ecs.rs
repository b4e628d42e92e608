//! An event in the Elastic Common Schema (8.x) (docs/api.md, "ECS"): the
//! `event.*` categorisation Elastic's authentication rules read, `user`,
//! `source`, `user_agent`, and the chain's fields and the recorded metadata
//! (exact) under `pg_authaudit`.

use crate::stored_event::{ChainFields, StoredEvent};
use serde::Serialize;
use serde_json::{json, Value};

/// The ECS version the events follow.
pub const VERSION: &str = "8.11.0";

#[derive(Serialize)]
struct Event<'a> {
    #[serde(flatten)]
    base: Value,
    pg_authaudit: ChainFields<'a>,
}

/// The event as one ECS JSON document (no newline).
pub fn to_ecs(e: &StoredEvent) -> String {
    let (category, kind_type, outcome) = match e.event_type.as_str() {
        "login_failed" => (vec!["authentication"], vec!["start"], "failure"),
        "login_success" => (vec!["authentication"], vec!["start"], "success"),
        "token_issued" => (vec!["authentication"], vec!["info"], "success"),
        "account_locked" | "lockout_reset" => (vec!["iam"], vec!["user", "change"], "success"),
        _ => (vec!["configuration"], vec!["change"], "unknown"),
    };
    let mut base = json!({
        "@timestamp": e.occurred_at,
        "ecs": {"version": VERSION},
        "event": {
            "kind": "event",
            "category": category,
            "type": kind_type,
            "action": e.event_type,
            "outcome": outcome,
            "id": e.log_id,
            "sequence": e.seq,
            "created": e.recorded_at,
            "dataset": "pg_authaudit.auth_log",
            "module": "pg_authaudit",
        },
        "user": {"name": e.user_id},
        "labels": {"tenant_id": e.tenant_id, "channel": e.channel},
    });
    if let Some(reason) = e.reason() {
        base["event"]["reason"] = json!(reason);
    }
    if let Some(ip) = &e.ip {
        base["source"] = json!({"ip": ip});
    }
    if let Some(ua) = &e.user_agent {
        base["user_agent"] = json!({"original": ua});
    }
    if let Some(org) = &e.org_id {
        base["organization"] = json!({"id": org});
    }
    let event = Event {
        base,
        pg_authaudit: e.chain_fields(),
    };
    serde_json::to_string(&event).expect("an event serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stored_event::sample;

    #[test]
    fn a_failed_login_is_an_authentication_failure() {
        let out = to_ecs(&sample("login_failed"));
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["event"]["category"], json!(["authentication"]));
        assert_eq!(v["event"]["outcome"], "failure");
        assert_eq!(v["source"]["ip"], "203.0.113.9");
        assert_eq!(v["@timestamp"], "2026-12-07T10:00:00+00:00");
        assert_eq!(v["pg_authaudit"]["seq"], 42);
        assert!(out.contains("12345678901234567890.10"), "{out}");
    }
}
