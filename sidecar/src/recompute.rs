//! A log row's canonical body (docs/chain-format.md), from PostgreSQL's
//! text of its columns or from the mirror's document, so that the witness
//! and `restore` recompute its links from its content with
//! `authaudit_core` (`canonical::encode_body`, `chain::link_sha256`), as
//! `verify_chain` does, instead of trusting the stored digests.

use crate::documents::{self, Get, RowError};
use authaudit_core::canonical::{encode_body, Record};
use bson::RawDocument;
use std::net::IpAddr;

fn bad(column: &'static str, value: &str) -> RowError {
    RowError::Bad {
        column,
        value: value.chars().take(80).collect(),
    }
}

fn req<'r>(get: Get<'_, 'r>, c: &'static str) -> Result<&'r str, RowError> {
    get(c).ok_or(RowError::Missing(c))
}

/// A UUID's 16 bytes from its text (`6d1c0c8e-…`).
pub fn uuid_bytes(text: &str) -> Result<[u8; 16], RowError> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let bytes = hex::decode(&hex).map_err(|_| bad("log_id", text))?;
    bytes.try_into().map_err(|_| bad("log_id", text))
}

fn ip(text: Option<&str>) -> Result<Option<IpAddr>, RowError> {
    text.map(|t| {
        documents::host_ip(t)
            .parse::<IpAddr>()
            .map_err(|_| bad("ip", t))
    })
    .transpose()
}

fn time(get: Get<'_, '_>, c: &'static str) -> Result<i64, RowError> {
    let v = req(get, c)?;
    documents::parse_timestamptz(v).ok_or_else(|| bad(c, v))
}

/// The canonical body of a row in PostgreSQL's text output (the copy's
/// and pgoutput's form: `metadata` as jsonb prints it, which is the
/// canonical JSON).
pub fn body_of_row(get: Get<'_, '_>) -> Result<Vec<u8>, RowError> {
    let ip = ip(get("ip"))?;
    Ok(encode_body(&Record {
        log_id: uuid_bytes(req(get, "log_id")?)?,
        tenant_id: req(get, "tenant_id")?,
        org_id: get("org_id"),
        event_type: req(get, "event_type")?,
        user_id: req(get, "user_id")?,
        ip,
        user_agent: get("user_agent"),
        channel: req(get, "channel")?,
        occurred_at_us: time(get, "occurred_at")?,
        recorded_at_us: time(get, "recorded_at")?,
        metadata: req(get, "metadata")?,
    }))
}

/// A text field of a mirror document, joined from its parts when it was
/// moved there (`documents::joined_parts`); `None` for null.
pub fn document_text(
    d: &RawDocument,
    field: &'static str,
    parts: &[bson::RawDocumentBuf],
) -> Result<Option<String>, RowError> {
    if let Ok(Some(entry)) = d.get_document("parts").map(|p| p.get(field).ok().flatten()) {
        let _ = entry;
        return documents::joined_parts(d, field, parts)
            .map(Some)
            .ok_or(RowError::Missing(field));
    }
    match d.get(field) {
        Ok(Some(bson::raw::RawBsonRef::String(s))) => Ok(Some(s.to_owned())),
        Ok(Some(bson::raw::RawBsonRef::Null)) | Ok(None) => Ok(None),
        _ => Err(RowError::Missing(field)),
    }
}

/// The canonical body of a row as the mirror's document holds it (its
/// exact times `*_us` and its `metadata_text`).
pub fn body_of_document(
    d: &RawDocument,
    parts: &[bson::RawDocumentBuf],
) -> Result<Vec<u8>, RowError> {
    let text = |f: &'static str| document_text(d, f, parts);
    let need = |f: &'static str| text(f)?.ok_or(RowError::Missing(f));
    let micros = |f: &'static str| d.get_i64(f).map_err(|_| RowError::Missing(f));
    let (log_id, tenant, event_type, user_id, channel, metadata) = (
        need("log_id")?,
        need("tenant_id")?,
        need("event_type")?,
        need("user_id")?,
        need("channel")?,
        need("metadata_text")?,
    );
    let (org, user_agent, ip_text) = (text("org_id")?, text("user_agent")?, text("ip")?);
    Ok(encode_body(&Record {
        log_id: uuid_bytes(&log_id)?,
        tenant_id: &tenant,
        org_id: org.as_deref(),
        event_type: &event_type,
        user_id: &user_id,
        ip: ip(ip_text.as_deref())?,
        user_agent: user_agent.as_deref(),
        channel: &channel,
        occurred_at_us: micros("occurred_at_us")?,
        recorded_at_us: micros("recorded_at_us")?,
        metadata: &metadata,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use authaudit_core::chain::{link_sha256, ChainHead};

    /// Seq 1 and seq 3 of the published test vectors
    /// (docs/chain-test-vectors.txt), as PostgreSQL prints them, give their
    /// published links.
    #[test]
    fn rows_as_postgresql_prints_them_give_their_published_links() {
        let seq1: std::collections::HashMap<&str, &str> = [
            ("log_id", "00000000-0000-4000-8000-000000000001"),
            ("tenant_id", "acme"),
            ("event_type", "login_failed"),
            ("user_id", "alice"),
            ("ip", "192.0.2.1/32"),
            ("user_agent", "curl/8.0"),
            ("channel", "web"),
            ("occurred_at", "2026-01-01 00:00:00+00"),
            ("recorded_at", "2026-01-01 00:00:00.000001+00"),
            ("metadata", r#"{"reason": "bad_password"}"#),
        ]
        .into();
        let body = body_of_row(&|c: &str| seq1.get(c).copied()).unwrap();
        let link = link_sha256(&ChainHead::genesis("acme").sha256, 1, &body);
        assert_eq!(
            hex::encode(link),
            "342c5504fd063f21dda1d44fb1a31408d6b80aa00d7495f7f609ac0a79648971"
        );
        let seq3: std::collections::HashMap<&str, &str> = [
            ("log_id", "00000000-0000-4000-8000-000000000003"),
            ("tenant_id", "acme"),
            ("org_id", "hq.ops"),
            ("event_type", "login_failed"),
            ("user_id", "zo\u{eb} \u{1F600}"),
            ("ip", "::ffff:192.0.2.1"),
            ("user_agent", "\u{dc}"),
            ("channel", "ssh"),
            ("occurred_at", "1900-01-01 00:00:00+05:53:28"),
            ("recorded_at", "2026-01-01 00:00:02+00"),
            (
                "metadata",
                r#"{"a": {"b": [1, 2.50, null, true]}, "q": "say \"hi\"\n\\"}"#,
            ),
        ]
        .into();
        let body = body_of_row(&|c: &str| seq3.get(c).copied()).unwrap();
        let prev = hex::decode("6957e31318390769a2fd0c794865b0a5dae54229d3ed5bb90fa243e622e72413")
            .unwrap();
        assert_eq!(
            hex::encode(link_sha256(&prev, 3, &body)),
            "325cdf2818424240a0f2e8baa77ddbd81add93b90f830041f1fcf2cd526d4d8f"
        );
    }

    #[test]
    fn the_document_and_the_row_give_the_same_body() {
        let row: std::collections::HashMap<&str, &str> = [
            ("log_id", "6d1c0c8e-0000-4000-8000-000000000002"),
            ("tenant_id", "acme"),
            ("seq", "8"),
            ("event_type", "login_failed"),
            ("user_id", "zo\u{eb}"),
            ("ip", "::ffff:192.0.2.1/128"),
            ("channel", "web"),
            ("occurred_at", "1900-01-01 00:00:00.5+05:30"),
            ("recorded_at", "2026-11-28 04:11:20.102345+00"),
            ("metadata", r#"{"f": 1.50, "n": [1, 18446744073709551615]}"#),
            ("format_version", "1"),
            ("prev_link", "\\xcd01"),
            ("link_sha256", "\\xcd02"),
            ("digest_sha512", "\\xcd03"),
            ("digest_sha3_256", "\\xcd04"),
        ]
        .into();
        let get = |c: &str| row.get(c).copied();
        let doc = documents::auth_log(&get).unwrap().doc;
        assert_eq!(
            body_of_row(&get).unwrap(),
            body_of_document(&doc, &[]).unwrap()
        );
        let mut edited = row.clone();
        edited.insert("user_id", "mallory");
        let get = |c: &str| edited.get(c).copied();
        assert_ne!(
            body_of_row(&get).unwrap(),
            body_of_document(&doc, &[]).unwrap()
        );
    }
}
