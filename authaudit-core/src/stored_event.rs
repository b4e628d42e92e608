//! A stored `auth_log` row as the export formats read it: every column,
//! times both as RFC 3339 text and as epoch milliseconds, digests as hex,
//! and the metadata as the exact JSON text PostgreSQL holds (numbers keep
//! every digit).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

#[derive(Debug, Deserialize)]
pub struct StoredEvent {
    pub log_id: String,
    pub tenant_id: String,
    pub org_id: Option<String>,
    pub seq: i64,
    pub event_type: String,
    pub user_id: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub channel: String,
    pub occurred_at: String,
    pub occurred_at_ms: i64,
    pub recorded_at: String,
    pub recorded_at_ms: i64,
    pub metadata: Box<RawValue>,
    pub format_version: i64,
    pub prev_link: String,
    pub link_sha256: String,
    pub digest_sha512: String,
    pub digest_sha3_256: String,
}

/// The fields of the chain an export carries beside its schema's own:
/// where the event stands, its links and digests, and the metadata
/// exactly as recorded.
#[derive(Debug, Serialize)]
pub struct ChainFields<'a> {
    pub tenant_id: &'a str,
    pub org_id: Option<&'a str>,
    pub channel: &'a str,
    pub seq: i64,
    pub format_version: i64,
    pub prev_link: &'a str,
    pub link_sha256: &'a str,
    pub digest_sha512: &'a str,
    pub digest_sha3_256: &'a str,
    pub metadata: &'a RawValue,
}

impl StoredEvent {
    /// The chain's fields of this event.
    pub fn chain_fields(&self) -> ChainFields<'_> {
        ChainFields {
            tenant_id: &self.tenant_id,
            org_id: self.org_id.as_deref(),
            channel: &self.channel,
            seq: self.seq,
            format_version: self.format_version,
            prev_link: &self.prev_link,
            link_sha256: &self.link_sha256,
            digest_sha512: &self.digest_sha512,
            digest_sha3_256: &self.digest_sha3_256,
            metadata: &self.metadata,
        }
    }

    /// The recording application's `metadata.reason`, when it is a string.
    pub fn reason(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct Reason {
            reason: Option<serde_json::Value>,
        }
        serde_json::from_str::<Reason>(self.metadata.get())
            .ok()?
            .reason?
            .as_str()
            .map(str::to_string)
    }

    /// Whether the event was imported history (`metadata._authaudit.imported`).
    pub fn imported(&self) -> bool {
        #[derive(Deserialize)]
        struct Marks {
            imported: Option<bool>,
        }
        #[derive(Deserialize)]
        struct Meta {
            _authaudit: Option<Marks>,
        }
        serde_json::from_str::<Meta>(self.metadata.get())
            .ok()
            .and_then(|m| m._authaudit?.imported)
            .unwrap_or(false)
    }
}

#[cfg(test)]
pub(crate) fn sample(event_type: &str) -> StoredEvent {
    serde_json::from_str(&format!(
        r#"{{"log_id": "0b8f6f3f-0000-4000-8000-000000000001", "tenant_id": "agency-1",
        "org_id": "hq", "seq": 42, "event_type": "{event_type}", "user_id": "bob",
        "ip": "203.0.113.9", "user_agent": "curl/8", "channel": "web",
        "occurred_at": "2026-12-07T10:00:00+00:00", "occurred_at_ms": 1796637600000,
        "recorded_at": "2026-12-07T10:00:00.5+00:00", "recorded_at_ms": 1796637600500,
        "metadata": {{"reason": "bad_password", "n": 12345678901234567890.10}},
        "format_version": 3, "prev_link": "{z}", "link_sha256": "{z}",
        "digest_sha512": "{z}{z}", "digest_sha3_256": "{z}"}}"#,
        z = "ab".repeat(32)
    ))
    .expect("a valid sample")
}
