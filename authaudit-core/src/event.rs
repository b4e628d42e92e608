//! The authentication event model and its validation rules.
//!
//! Every rule here is documented in `docs/errors.md`; the extension maps each
//! [`EventError`] variant to the SQLSTATE listed there.

pub use crate::channel::{Channel, ChannelSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Longest accepted tenant or organisation identifier, in bytes.
pub const MAX_SCOPE_ID_BYTES: usize = 64;
/// Longest accepted user identifier, in characters.
pub const MAX_USER_ID_CHARS: usize = 256;
/// Longest stored user agent, in characters; longer values are truncated by the
/// recording function and the truncation is noted in the metadata.
pub const MAX_USER_AGENT_CHARS: usize = 512;
/// Largest accepted metadata object, in bytes of its canonical text.
pub const MAX_METADATA_BYTES: usize = 8192;
/// Deepest accepted nesting of metadata: the object itself is level 1, a
/// value inside it that is an object or array level 2, and so on. A document
/// store refuses documents nested deeper than 100 levels (MongoDB), and the
/// mirror's document holds the metadata one level down: 64 leaves room.
pub const MAX_METADATA_DEPTH: usize = 64;

/// Kinds of authentication event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    LoginFailed,
    LoginSuccess,
    AccountLocked,
    LockoutReset,
    TokenIssued,
    /// Rows before a checkpoint were removed by `apply_retention`.
    RetentionApplied,
    /// `rebuild_lockout` re-derived the tenant's lockout state.
    LockoutRebuilt,
}

impl EventType {
    /// All event types, in documentation order.
    pub const ALL: [EventType; 7] = [
        EventType::LoginFailed,
        EventType::LoginSuccess,
        EventType::AccountLocked,
        EventType::LockoutReset,
        EventType::TokenIssued,
        EventType::RetentionApplied,
        EventType::LockoutRebuilt,
    ];

    /// The name stored in `auth_log.event_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::LoginFailed => "login_failed",
            EventType::LoginSuccess => "login_success",
            EventType::AccountLocked => "account_locked",
            EventType::LockoutReset => "lockout_reset",
            EventType::TokenIssued => "token_issued",
            EventType::RetentionApplied => "retention_applied",
            EventType::LockoutRebuilt => "lockout_rebuilt",
        }
    }
}

impl EventType {
    /// Whether only the extension appends events of this type: locks (the
    /// engine's decision), token issuance (checked claims), retention (what
    /// was removed) and lockout rebuilds (what was replayed). Writers record
    /// the others.
    pub fn is_engine_only(self) -> bool {
        matches!(
            self,
            EventType::AccountLocked
                | EventType::TokenIssued
                | EventType::RetentionApplied
                | EventType::LockoutRebuilt
        )
    }
}

impl FromStr for EventType {
    type Err = EventError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| EventError::UnknownEventType(printable(s)))
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an event was refused. Each variant has a documented SQLSTATE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("unknown event type \"{0}\"")]
    UnknownEventType(String),
    #[error("unknown channel \"{0}\"")]
    UnknownChannel(String),
    #[error("{field} \"{value}\" is malformed: {rule}")]
    MalformedScopeId {
        field: &'static str,
        value: String,
        rule: &'static str,
    },
    #[error("user_id is longer than {MAX_USER_ID_CHARS} characters ({0})")]
    UserIdTooLong(usize),
    #[error("{0} contains a control character")]
    ControlCharacter(&'static str),
    #[error("ip \"{0}\" is not a host address")]
    NotHostAddress(String),
    #[error("user_agent is longer than {MAX_USER_AGENT_CHARS} characters ({0})")]
    UserAgentTooLong(usize),
    #[error("metadata must be a JSON object")]
    MetadataNotObject,
    #[error("metadata is {0} bytes, more than the limit of {MAX_METADATA_BYTES}")]
    MetadataTooLarge(usize),
    #[error("metadata nests {0} levels deep, more than the limit of {MAX_METADATA_DEPTH}")]
    MetadataTooDeep(usize),
    #[error("{0} must be a finite timestamp")]
    NotFinite(&'static str),
    #[error("occurred_at is {ahead_secs} s ahead of the server clock (limit {limit_secs} s)")]
    OccurredInFuture { ahead_secs: i64, limit_secs: i64 },
    #[error("occurred_at is {behind_secs} s before the server clock, more than live recording accepts (authaudit.max_past_skew, {limit_secs} s)")]
    OccurredTooLongAgo { behind_secs: i64, limit_secs: i64 },
}

/// Live recording's lower bound: an event older than `max_past_skew_us`
/// would be decided against lockout state that has moved on (and back-dated
/// failures would count in no window), so it is history, for the import
/// path (docs/lockout.md, "Event time").
pub fn check_live_time(
    occurred_at_us: i64,
    recorded_at_us: i64,
    max_past_skew_us: i64,
) -> Result<(), EventError> {
    let behind = recorded_at_us.saturating_sub(occurred_at_us);
    if behind > max_past_skew_us {
        return Err(EventError::OccurredTooLongAgo {
            behind_secs: behind / 1_000_000,
            limit_secs: max_past_skew_us / 1_000_000,
        });
    }
    Ok(())
}

/// An event as received at the SQL boundary, borrowed and not yet checked.
///
/// Timestamps are microseconds since the Unix epoch, UTC. `metadata` is the
/// canonical text of the metadata object (see `docs/chain-format.md`).
#[derive(Debug, Clone, Copy)]
pub struct EventInput<'a> {
    pub log_id: [u8; 16],
    pub tenant_id: Option<&'a str>,
    pub org_id: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub ip: Option<IpInput<'a>>,
    pub user_agent: Option<&'a str>,
    pub channel: Option<&'a str>,
    pub occurred_at_us: i64,
    pub recorded_at_us: i64,
    pub metadata: &'a str,
}

/// A source address as it arrives: the text form of an `inet` (from JSON),
/// or an `inet` value's address and prefix length (from SQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpInput<'a> {
    Text(&'a str),
    Inet { addr: IpAddr, prefix: u8 },
}

impl IpInput<'_> {
    /// The host address, refusing a network (a prefix shorter than the
    /// full address).
    pub fn host(self) -> Result<IpAddr, EventError> {
        match self {
            IpInput::Text(text) => parse_host_ip(text),
            IpInput::Inet { addr, prefix } => {
                let full = if addr.is_ipv4() { 32 } else { 128 };
                if prefix == full {
                    Ok(addr)
                } else {
                    Err(EventError::NotHostAddress(format!("{addr}/{prefix}")))
                }
            }
        }
    }
}

/// An event that passed every rule, ready for canonical encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    pub log_id: [u8; 16],
    pub tenant_id: &'a str,
    pub org_id: Option<&'a str>,
    pub event_type: EventType,
    pub user_id: &'a str,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<&'a str>,
    pub channel: Channel,
    pub occurred_at_us: i64,
    pub recorded_at_us: i64,
    pub metadata: &'a str,
}

impl<'a> EventInput<'a> {
    /// Applies every rule; `max_future_skew_us` bounds how far `occurred_at`
    /// may lie ahead of `recorded_at`, and `channels` are the deployment's
    /// channels beside the built-in ones.
    pub fn validate(
        &self,
        max_future_skew_us: i64,
        channels: &ChannelSet,
    ) -> Result<Event<'a>, EventError> {
        let tenant_id = self.tenant_id.ok_or(EventError::Missing("tenant_id"))?;
        check_scope_id("tenant_id", tenant_id)?;
        if let Some(org) = self.org_id {
            check_scope_id("org_id", org)?;
        }
        let event_type: EventType = self
            .event_type
            .ok_or(EventError::Missing("event_type"))?
            .parse()?;
        let channel = self.channel.ok_or(EventError::Missing("channel"))?;
        let channel = Channel::find(channel, channels)
            .ok_or_else(|| EventError::UnknownChannel(printable(channel)))?;
        let user_id = self.user_id.ok_or(EventError::Missing("user_id"))?;
        check_user_id(user_id)?;
        let ip = self.ip.map(IpInput::host).transpose()?;
        if let Some(ua) = self.user_agent {
            let chars = ua.chars().count();
            if chars > MAX_USER_AGENT_CHARS {
                return Err(EventError::UserAgentTooLong(chars));
            }
        }
        check_metadata(self.metadata)?;
        if self.occurred_at_us == i64::MIN || self.occurred_at_us == i64::MAX {
            return Err(EventError::NotFinite("occurred_at"));
        }
        let ahead = self.occurred_at_us.saturating_sub(self.recorded_at_us);
        if ahead > max_future_skew_us {
            return Err(EventError::OccurredInFuture {
                ahead_secs: ahead / 1_000_000,
                limit_secs: max_future_skew_us / 1_000_000,
            });
        }
        Ok(Event {
            log_id: self.log_id,
            tenant_id,
            org_id: self.org_id,
            event_type,
            user_id,
            ip,
            user_agent: self.user_agent,
            channel,
            occurred_at_us: self.occurred_at_us,
            recorded_at_us: self.recorded_at_us,
            metadata: self.metadata,
        })
    }
}

/// Tenant and organisation identifiers: 1 to 64 bytes of ASCII letters,
/// digits, `.`, `_` and `-`, starting with a letter or digit.
pub fn check_scope_id(field: &'static str, value: &str) -> Result<(), EventError> {
    let malformed = |rule| EventError::MalformedScopeId {
        field,
        value: printable(value),
        rule,
    };
    if value.is_empty() {
        return Err(malformed("empty"));
    }
    if value.len() > MAX_SCOPE_ID_BYTES {
        return Err(malformed("longer than 64 bytes"));
    }
    let bytes = value.as_bytes();
    if !bytes[0].is_ascii_alphanumeric() {
        return Err(malformed("must start with a letter or digit"));
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(malformed(
            "only letters, digits, '.', '_' and '-' are allowed",
        ));
    }
    Ok(())
}

fn check_user_id(user_id: &str) -> Result<(), EventError> {
    if user_id.is_empty() {
        return Err(EventError::Missing("user_id"));
    }
    let chars = user_id.chars().count();
    if chars > MAX_USER_ID_CHARS {
        return Err(EventError::UserIdTooLong(chars));
    }
    if user_id.chars().any(is_forbidden_control) {
        return Err(EventError::ControlCharacter("user_id"));
    }
    Ok(())
}

/// Control characters (Unicode category Cc) and the bidirectional overrides
/// that make identifiers display differently from what they are.
fn is_forbidden_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Accepts the text form of a PostgreSQL `inet` holding one host address
/// (no prefix shorter than the full address).
pub fn parse_host_ip(text: &str) -> Result<IpAddr, EventError> {
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| EventError::NotHostAddress(printable(text)))?;
    let full = if ip.is_ipv4() { "32" } else { "128" };
    match prefix {
        None => Ok(ip),
        Some(p) if p == full => Ok(ip),
        Some(_) => Err(EventError::NotHostAddress(printable(text))),
    }
}

fn check_metadata(text: &str) -> Result<(), EventError> {
    if !text.starts_with('{') {
        return Err(EventError::MetadataNotObject);
    }
    if text.len() > MAX_METADATA_BYTES {
        return Err(EventError::MetadataTooLarge(text.len()));
    }
    let depth = nesting_depth(text);
    if depth > MAX_METADATA_DEPTH {
        return Err(EventError::MetadataTooDeep(depth));
    }
    Ok(())
}

/// How deep the objects and arrays of a JSON text nest (0 for a scalar),
/// read from its brackets outside strings.
pub fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for b in text.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// A short, escaped rendering of caller input for error messages.
fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(char::escape_default).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> EventInput<'static> {
        EventInput {
            log_id: [7; 16],
            tenant_id: Some("agency-1"),
            org_id: Some("hq"),
            event_type: Some("login_failed"),
            user_id: Some("alice@example.org"),
            ip: Some(IpInput::Text("192.0.2.10")),
            user_agent: Some("Mozilla/5.0"),
            channel: Some("web"),
            occurred_at_us: 1_700_000_000_000_000,
            recorded_at_us: 1_700_000_000_000_000,
            metadata: "{}",
        }
    }

    #[test]
    fn a_configured_channel_is_accepted_only_where_it_is_configured() {
        let kiosk = EventInput {
            channel: Some("kiosk"),
            ..input()
        };
        let set = ChannelSet::parse("kiosk").unwrap();
        assert_eq!(
            kiosk.validate(300_000_000, &set).unwrap().channel.as_str(),
            "kiosk"
        );
        assert_eq!(
            kiosk.validate(300_000_000, &ChannelSet::default()),
            Err(EventError::UnknownChannel("kiosk".into()))
        );
    }

    #[test]
    fn accepts_a_complete_event() {
        let e = input()
            .validate(300_000_000, &ChannelSet::default())
            .unwrap();
        assert_eq!(e.event_type, EventType::LoginFailed);
        assert_eq!(e.channel, Channel::WEB);
        assert_eq!(e.ip, Some("192.0.2.10".parse().unwrap()));
    }

    #[test]
    fn rejects_each_bad_field() {
        let cases: Vec<(EventInput<'static>, EventError)> = vec![
            (
                EventInput {
                    tenant_id: None,
                    ..input()
                },
                EventError::Missing("tenant_id"),
            ),
            (
                EventInput {
                    event_type: Some("login_maybe"),
                    ..input()
                },
                EventError::UnknownEventType("login_maybe".into()),
            ),
            (
                EventInput {
                    channel: Some("fax"),
                    ..input()
                },
                EventError::UnknownChannel("fax".into()),
            ),
            (
                EventInput {
                    user_id: Some(""),
                    ..input()
                },
                EventError::Missing("user_id"),
            ),
            (
                EventInput {
                    user_id: Some("bob\nadmin"),
                    ..input()
                },
                EventError::ControlCharacter("user_id"),
            ),
            (
                EventInput {
                    user_id: Some("evil\u{202E}nimda"),
                    ..input()
                },
                EventError::ControlCharacter("user_id"),
            ),
            (
                EventInput {
                    ip: Some(IpInput::Text("10.0.0.0/8")),
                    ..input()
                },
                EventError::NotHostAddress("10.0.0.0/8".into()),
            ),
            (
                EventInput {
                    metadata: "[1,2]",
                    ..input()
                },
                EventError::MetadataNotObject,
            ),
        ];
        for (bad, expected) in cases {
            assert_eq!(
                bad.validate(300_000_000, &ChannelSet::default())
                    .unwrap_err(),
                expected
            );
        }
    }

    #[test]
    fn scope_ids_follow_the_pattern() {
        for ok in ["a", "tenant-1", "A.b_c-9", &"x".repeat(64)] {
            assert!(check_scope_id("tenant_id", ok).is_ok(), "{ok}");
        }
        for bad in ["", "-lead", "has space", "semi;colon", "é", &"x".repeat(65)] {
            assert!(check_scope_id("tenant_id", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn user_id_length_is_counted_in_characters() {
        let at_limit = "é".repeat(MAX_USER_ID_CHARS);
        assert!(check_user_id(&at_limit).is_ok());
        let over = "é".repeat(MAX_USER_ID_CHARS + 1);
        assert_eq!(
            check_user_id(&over).unwrap_err(),
            EventError::UserIdTooLong(MAX_USER_ID_CHARS + 1)
        );
    }

    #[test]
    fn future_events_beyond_the_skew_are_refused() {
        let e = EventInput {
            occurred_at_us: input().recorded_at_us + 301_000_000,
            ..input()
        };
        assert!(matches!(
            e.validate(300_000_000, &ChannelSet::default()),
            Err(EventError::OccurredInFuture {
                ahead_secs: 301,
                ..
            })
        ));
        assert!(e.validate(400_000_000, &ChannelSet::default()).is_ok());
    }

    #[test]
    fn live_events_older_than_the_past_skew_are_refused() {
        let now = input().recorded_at_us;
        assert!(check_live_time(now - 300_000_000, now, 300_000_000).is_ok());
        assert!(check_live_time(now + 1, now, 300_000_000).is_ok());
        assert_eq!(
            check_live_time(now - 2 * 86_400_000_000, now, 300_000_000),
            Err(EventError::OccurredTooLongAgo {
                behind_secs: 172_800,
                limit_secs: 300
            })
        );
    }

    #[test]
    fn ipv6_and_full_prefixes_are_host_addresses() {
        assert!(parse_host_ip("2001:db8::1").is_ok());
        assert!(parse_host_ip("2001:db8::1/128").is_ok());
        assert!(parse_host_ip("192.0.2.1/32").is_ok());
        assert!(parse_host_ip("2001:db8::/64").is_err());
        assert!(parse_host_ip("999.1.1.1").is_err());
    }

    #[test]
    fn an_inet_value_is_a_host_only_with_its_full_prefix() {
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let inet = |addr, prefix| IpInput::Inet { addr, prefix };
        assert_eq!(inet(v4, 32).host(), Ok(v4));
        assert_eq!(inet(v6, 128).host(), Ok(v6));
        assert_eq!(
            inet(v4, 24).host(),
            Err(EventError::NotHostAddress("192.0.2.1/24".into()))
        );
        assert!(inet(v6, 32).host().is_err());
    }

    #[test]
    fn metadata_nesting_is_bounded() {
        let nested = |n: usize| format!("{}1{}", "{\"a\": ".repeat(n), "}".repeat(n));
        assert_eq!(
            nesting_depth(&nested(MAX_METADATA_DEPTH)),
            MAX_METADATA_DEPTH
        );
        assert_eq!(check_metadata(&nested(MAX_METADATA_DEPTH)), Ok(()));
        assert_eq!(
            check_metadata(&nested(MAX_METADATA_DEPTH + 1)).unwrap_err(),
            EventError::MetadataTooDeep(MAX_METADATA_DEPTH + 1)
        );
        // Brackets inside strings, escaped quotes and arrays.
        assert_eq!(nesting_depth(r#"{"a": "[[[{{{", "b": "\\\"[[["}"#), 1);
        assert_eq!(nesting_depth(r#"{"a": [[1], {"b": [2]}]}"#), 4);
        assert_eq!(nesting_depth("12"), 0);
    }

    #[test]
    fn metadata_size_is_bounded() {
        let big = format!("{{\"k\": \"{}\"}}", "x".repeat(MAX_METADATA_BYTES));
        assert_eq!(
            check_metadata(&big).unwrap_err(),
            EventError::MetadataTooLarge(big.len())
        );
    }
}
