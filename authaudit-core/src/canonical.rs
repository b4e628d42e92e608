//! The canonical, versioned encoding of a recorded event (format version 1).
//!
//! The exact layout is specified in `docs/chain-format.md`; this module is its
//! reference implementation. Every variable-length field is length-prefixed
//! and every nullable field carries a presence byte, so no two distinct events
//! share an encoding.

use crate::event::Event;
use std::net::IpAddr;

/// The recorded fields of one event as they are encoded, whether they come
/// from a validated [`Event`] or from a stored row being verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub log_id: [u8; 16],
    pub tenant_id: &'a str,
    pub org_id: Option<&'a str>,
    pub event_type: &'a str,
    pub user_id: &'a str,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<&'a str>,
    pub channel: &'a str,
    pub occurred_at_us: i64,
    pub recorded_at_us: i64,
    pub metadata: &'a str,
}

impl<'a> From<&Event<'a>> for Record<'a> {
    fn from(e: &Event<'a>) -> Record<'a> {
        Record {
            log_id: e.log_id,
            tenant_id: e.tenant_id,
            org_id: e.org_id,
            event_type: e.event_type.as_str(),
            user_id: e.user_id,
            ip: e.ip,
            user_agent: e.user_agent,
            channel: e.channel.as_str(),
            occurred_at_us: e.occurred_at_us,
            recorded_at_us: e.recorded_at_us,
            metadata: e.metadata,
        }
    }
}

/// The format version written in every record and in `auth_log.format_version`.
pub const FORMAT_VERSION: u8 = 1;

/// Encodes everything the chain covers except the format version and `seq`,
/// which are only known once the chain position is assigned.
pub fn encode_body(event: &Record<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        128 + event.tenant_id.len()
            + event.user_id.len()
            + event.user_agent.map_or(0, str::len)
            + event.metadata.len(),
    );
    encode_body_into(&mut out, event);
    out
}

/// Appends the canonical body of `event` to `out` (see [`encode_body`]).
pub fn encode_body_into(out: &mut Vec<u8>, event: &Record<'_>) {
    put_field(out, Some(event.tenant_id.as_bytes()));
    put_field(out, Some(&event.log_id));
    put_field(out, event.org_id.map(str::as_bytes));
    put_field(out, Some(event.event_type.as_bytes()));
    put_field(out, Some(event.user_id.as_bytes()));
    match event.ip {
        None => put_field(out, None),
        Some(ip) => put_field(out, Some(&ip_bytes(ip))),
    }
    put_field(out, event.user_agent.map(str::as_bytes));
    put_field(out, Some(event.channel.as_bytes()));
    out.extend_from_slice(&event.occurred_at_us.to_be_bytes());
    out.extend_from_slice(&event.recorded_at_us.to_be_bytes());
    put_field(out, Some(event.metadata.as_bytes()));
}

/// The full canonical record: format version, chain position, body.
pub fn record_bytes(seq: i64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + body.len());
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A nullable, length-prefixed field: `0x00` for NULL, otherwise `0x01`,
/// the length as a big-endian `u32`, then the bytes.
pub(crate) fn put_field(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => out.push(0),
        Some(bytes) => {
            out.push(1);
            let len = u32::try_from(bytes.len()).expect("field longer than 4 GiB");
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(bytes);
        }
    }
}

/// An address as its family (`4` or `6`) followed by its network-order bytes.
fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => [&[4u8][..], &v4.octets()].concat(),
        IpAddr::V6(v6) => [&[6u8][..], &v6.octets()].concat(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn event() -> Record<'static> {
        Record {
            log_id: [0x11; 16],
            tenant_id: "t1",
            org_id: None,
            event_type: "login_failed",
            user_id: "u",
            ip: Some("10.0.0.1".parse().unwrap()),
            user_agent: None,
            channel: "web",
            occurred_at_us: 1,
            recorded_at_us: 2,
            metadata: "{}",
        }
    }

    #[test]
    fn null_and_empty_encode_differently() {
        let with_null = encode_body(&event());
        let with_empty = encode_body(&Record {
            org_id: Some(""),
            ..event()
        });
        assert_ne!(with_null, with_empty);
    }

    #[test]
    fn moving_bytes_between_fields_changes_the_encoding() {
        let a = encode_body(&Record {
            tenant_id: "ab",
            user_id: "c",
            ..event()
        });
        let b = encode_body(&Record {
            tenant_id: "a",
            user_id: "bc",
            ..event()
        });
        assert_ne!(a, b);
    }

    #[test]
    fn layout_matches_the_documented_example() {
        let body = encode_body(&event());
        let expected = concat!(
            "0100000002",
            "7431", // tenant_id "t1"
            "0100000010",
            "11111111111111111111111111111111", // log_id
            "00",                               // org_id NULL
            "010000000c",
            "6c6f67696e5f6661696c6564", // "login_failed"
            "0100000001",
            "75", // user_id "u"
            "0100000005",
            "040a000001", // ip 10.0.0.1
            "00",         // user_agent NULL
            "0100000003",
            "776562",           // "web"
            "0000000000000001", // occurred_at
            "0000000000000002", // recorded_at
            "0100000002",
            "7b7d", // metadata "{}"
        );
        assert_eq!(hex::encode(&body), expected);
        let record = record_bytes(5, &body);
        assert_eq!(hex::encode(&record[..9]), "010000000000000005");
    }

    #[test]
    fn ipv4_and_mapped_ipv6_differ() {
        let v4 = encode_body(&event());
        let mapped = encode_body(&Record {
            ip: Some("::ffff:10.0.0.1".parse().unwrap()),
            ..event()
        });
        assert_ne!(v4, mapped);
    }
}
