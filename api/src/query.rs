//! The `events` endpoint's parameters: parsed strictly (an unknown or
//! repeated parameter is refused by name, so a typo never widens a
//! query), and turned into one parameterised statement.

use crate::problem::ApiError;
use std::net::IpAddr;

/// The most events one page returns.
pub const MAX_LIMIT: u32 = 1000;
/// A page's size when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 100;

/// A source filter: one address or a network.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub addr: IpAddr,
    pub prefix: Option<u8>,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.prefix {
            Some(p) => write!(f, "{}/{p}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

/// The filters and page of an `events` request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventsQuery {
    /// Events with `seq` above this (the cursor).
    pub after: Option<i64>,
    /// `occurred_at >= since` (RFC 3339).
    pub since: Option<String>,
    /// `occurred_at < until` (RFC 3339); without it the request polls.
    pub until: Option<String>,
    pub user: Option<String>,
    pub source: Option<Source>,
    pub event_type: Option<String>,
    pub channel: Option<String>,
    pub org: Option<String>,
    pub limit: u32,
    /// Whether `limit` was given (an export without it has none).
    pub limit_given: bool,
    /// Long-poll: seconds to wait for a first event when there is none.
    pub wait: u32,
}

/// What the events are answered as, by `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A JSON array, a page at a time (`application/json`, the default).
    Json,
    /// One JSON event a line, streamed (`application/x-ndjson`).
    Ndjson,
    /// One CEF line an event as `to_cef` writes it, streamed (`text/x-cef`).
    Cef,
    /// One OCSF 1.8.0 event a line, streamed (`application/x-ocsf+ndjson`).
    Ocsf,
    /// One ECS document a line, streamed (`application/x-ecs+ndjson`).
    Ecs,
    /// A tail: server-sent events (`text/event-stream`), each event's `id`
    /// its `seq`, open until the client leaves or its token expires.
    Sse,
}

impl Format {
    /// The format an `Accept` header asks for: the first media type of it
    /// this API serves; None when it names only others.
    pub fn from_accept(accept: Option<&str>) -> Option<Format> {
        let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
            return Some(Format::Json);
        };
        accept.split(',').find_map(|part| {
            let media = part
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            match media.as_str() {
                "application/json" | "application/*" | "*/*" => Some(Format::Json),
                "application/x-ndjson" | "application/ndjson" => Some(Format::Ndjson),
                "text/x-cef" => Some(Format::Cef),
                "application/x-ocsf+ndjson" => Some(Format::Ocsf),
                "application/x-ecs+ndjson" => Some(Format::Ecs),
                "text/event-stream" => Some(Format::Sse),
                _ => None,
            }
        })
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
            Format::Cef => "text/x-cef; charset=utf-8",
            Format::Ocsf => "application/x-ocsf+ndjson",
            Format::Ecs => "application/x-ecs+ndjson",
            Format::Sse => "text/event-stream",
        }
    }
}

/// The parameters `events` takes.
pub const EVENTS_PARAMS: [&str; 10] = [
    "after", "since", "until", "user", "source", "type", "channel", "org", "limit", "wait",
];

/// Parses a query string (`a=b&c=d`, percent-encoded).
pub fn parse_events(raw: Option<&str>, max_wait: u32) -> Result<EventsQuery, ApiError> {
    let mut q = EventsQuery {
        limit: DEFAULT_LIMIT,
        ..EventsQuery::default()
    };
    let mut seen: Vec<String> = Vec::new();
    for (key, value) in pairs(raw.unwrap_or(""))? {
        if key.is_empty() {
            return Err(ApiError::invalid("query", "a parameter without a name"));
        }
        if !EVENTS_PARAMS.contains(&key.as_str()) {
            return Err(ApiError::invalid(
                printable(&key),
                format!(
                    "unknown parameter (expected one of {})",
                    EVENTS_PARAMS.join(", ")
                ),
            ));
        }
        if seen.contains(&key) {
            return Err(ApiError::invalid(key, "given more than once"));
        }
        seen.push(key.clone());
        match key.as_str() {
            "after" => q.after = Some(number(&key, &value, 0, i64::MAX)?),
            "since" => q.since = Some(timestamp(&key, value)?),
            "until" => q.until = Some(timestamp(&key, value)?),
            "user" => q.user = Some(text(&key, value, 1024)?),
            "source" => q.source = Some(source(&value)?),
            "type" => q.event_type = Some(event_type(value)?),
            "channel" => q.channel = Some(text(&key, value, 64)?),
            "org" => {
                authaudit_core::event::check_scope_id("org", &value)
                    .map_err(|e| ApiError::invalid("org", e.to_string()))?;
                q.org = Some(value)
            }
            "limit" => {
                q.limit = number(&key, &value, 1, i64::from(MAX_LIMIT))? as u32;
                q.limit_given = true;
            }
            "wait" => q.wait = number(&key, &value, 0, i64::from(max_wait))? as u32,
            _ => unreachable!("listed above"),
        }
    }
    Ok(q)
}

/// Decodes `application/x-www-form-urlencoded` pairs; a key or value that
/// is not UTF-8 once decoded is refused.
pub fn pairs(raw: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for part in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let key = decode(k).ok_or_else(|| ApiError::invalid("query", "not UTF-8"))?;
        if key.is_empty() {
            return Err(ApiError::invalid("query", "a parameter without a name"));
        }
        let value = decode(v).ok_or_else(|| ApiError::invalid(printable(&key), "not UTF-8"))?;
        out.push((key, value));
    }
    Ok(out)
}

fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b'%' => return None,
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// A value as it may appear in an error: printable, at most 64 characters.
pub fn printable(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

fn number(field: &str, value: &str, min: i64, max: i64) -> Result<i64, ApiError> {
    let n: i64 = value
        .parse()
        .ok()
        .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| ApiError::invalid(field, "must be a whole number"))?;
    if n < min || n > max {
        return Err(ApiError::invalid(field, format!("must be {min} to {max}")));
    }
    Ok(n)
}

fn text(field: &str, value: String, max: usize) -> Result<String, ApiError> {
    if value.is_empty() {
        return Err(ApiError::invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(ApiError::invalid(field, format!("longer than {max} bytes")));
    }
    if value.contains('\0') {
        return Err(ApiError::invalid(field, "contains a NUL character"));
    }
    Ok(value)
}

fn event_type(value: String) -> Result<String, ApiError> {
    use authaudit_core::event::EventType;
    if EventType::ALL.iter().any(|t| t.as_str() == value) {
        Ok(value)
    } else {
        let names: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        Err(ApiError::invalid(
            "type",
            format!("must be one of {}", names.join(", ")),
        ))
    }
}

fn source(value: &str) -> Result<Source, ApiError> {
    let bad = || {
        ApiError::invalid(
            "source",
            "must be an IP address or a network (address/prefix)",
        )
    };
    let (addr, prefix) = match value.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (value, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let prefix = match prefix {
        None => None,
        Some(p) => {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let n: u8 = p
                .parse()
                .ok()
                .filter(|_| p.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(bad)?;
            if n > max {
                return Err(ApiError::invalid(
                    "source",
                    format!("prefix must be 0 to {max}"),
                ));
            }
            Some(n)
        }
    };
    Ok(Source { addr, prefix })
}

/// Checks an RFC 3339 timestamp (`2026-12-07T10:00:00Z`, an offset or a
/// fraction allowed) and returns it as given.
pub fn timestamp(field: &str, value: String) -> Result<String, ApiError> {
    if rfc3339(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid(
            field,
            "must be an RFC 3339 timestamp, e.g. 2026-12-07T10:00:00Z",
        ))
    }
}

fn rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(r)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        digits(0..4),
        digits(5..7),
        digits(8..10),
        digits(11..13),
        digits(14..16),
        digits(17..19),
    ) else {
        return false;
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return false;
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    if year == 0 || day == 0 || day > days || hour > 23 || minute > 59 || second > 60 {
        return false;
    }
    let mut rest = &b[19..];
    if rest.first() == Some(&b'.') {
        let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return false;
        }
        rest = &rest[1 + n..];
    }
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            let h = [*h1, *h2];
            let m = [*m1, *m2];
            let num = |d: [u8; 2]| -> Option<u32> {
                d.iter()
                    .all(u8::is_ascii_digit)
                    .then(|| u32::from(d[0] - b'0') * 10 + u32::from(d[1] - b'0'))
            };
            matches!((num(h), num(m)), (Some(h), Some(m)) if h <= 23 && m <= 59)
        }
        _ => false,
    }
}

/// What the endpoints return for an event: every column but the digests
/// (the link stays, as the chain's proof handle), as PostgreSQL writes
/// JSON, timestamps in UTC.
#[macro_export]
macro_rules! event_json {
    () => {
        "jsonb_build_object(\
 'log_id', l.log_id, 'tenant_id', l.tenant_id, 'org_id', l.org_id, 'seq', l.seq,\
 'event_type', l.event_type, 'user_id', l.user_id, 'ip', host(l.ip),\
 'user_agent', l.user_agent, 'channel', l.channel, 'occurred_at', l.occurred_at,\
 'recorded_at', l.recorded_at, 'metadata', l.metadata,\
 'link_sha256', encode(l.link_sha256, 'hex'))::text"
    };
}

/// A row as `authaudit_core::stored_event::StoredEvent` reads it.
#[macro_export]
macro_rules! stored_event_json {
    () => {
        "jsonb_build_object(\
 'log_id', l.log_id, 'tenant_id', l.tenant_id, 'org_id', l.org_id, 'seq', l.seq,\
 'event_type', l.event_type, 'user_id', l.user_id, 'ip', host(l.ip),\
 'user_agent', l.user_agent, 'channel', l.channel,\
 'occurred_at', l.occurred_at, 'occurred_at_ms', floor(extract(epoch FROM l.occurred_at) * 1000)::bigint,\
 'recorded_at', l.recorded_at, 'recorded_at_ms', floor(extract(epoch FROM l.recorded_at) * 1000)::bigint,\
 'metadata', l.metadata, 'format_version', l.format_version,\
 'prev_link', encode(l.prev_link, 'hex'), 'link_sha256', encode(l.link_sha256, 'hex'),\
 'digest_sha512', encode(l.digest_sha512, 'hex'), 'digest_sha3_256', encode(l.digest_sha3_256, 'hex'))::text"
    };
}

/// One event by its log id (`$1` the tenant, `$2` the log id).
pub const EVENT_BY_ID: &str = concat!(
    "SELECT ",
    event_json!(),
    " FROM authaudit.auth_log l WHERE l.tenant_id = $1::text AND l.log_id = ($2::text)::uuid"
);

/// The statement and its text parameters (`$1` is the tenant) for a page.
pub fn events_sql(tenant: &str, q: &EventsQuery) -> (String, Vec<String>) {
    events_sql_as(tenant, q, Format::Json)
}

/// The statement of `q` answering in `format`: a page for JSON, every
/// matching event (or `limit` of them, when given) for a stream.
///
/// The rows are chosen and ordered first, and only they are rendered: a
/// page of a day's window renders its 1,000 rows, not the day's.
pub fn events_sql_as(tenant: &str, q: &EventsQuery, format: Format) -> (String, Vec<String>) {
    let select = match format {
        Format::Json | Format::Ndjson | Format::Sse => concat!("SELECT ", event_json!(), ", l.seq"),
        Format::Cef => "SELECT authaudit.to_cef(s.r), l.seq",
        Format::Ocsf | Format::Ecs => concat!("SELECT ", stored_event_json!(), ", l.seq"),
    };
    let mut sql =
        "SELECT l AS r FROM authaudit.auth_log l WHERE l.tenant_id = $1::text".to_string();
    let mut params = vec![tenant.to_string()];
    let mut add = |sql: &mut String, condition: &str, value: String| {
        params.push(value);
        sql.push_str(&condition.replace('?', &format!("${}::text", params.len())));
    };
    if let Some(after) = q.after {
        add(&mut sql, " AND l.seq > (?)::bigint", after.to_string());
    }
    if let Some(s) = &q.since {
        add(
            &mut sql,
            " AND l.occurred_at >= (?)::timestamptz",
            s.clone(),
        );
    }
    if let Some(u) = &q.until {
        add(&mut sql, " AND l.occurred_at < (?)::timestamptz", u.clone());
    }
    if let Some(u) = &q.user {
        add(&mut sql, " AND l.user_id = ?", u.clone());
    }
    if let Some(s) = &q.source {
        add(&mut sql, " AND l.ip <<= (?)::inet", s.to_string());
    }
    if let Some(t) = &q.event_type {
        add(&mut sql, " AND l.event_type = ?", t.clone());
    }
    if let Some(c) = &q.channel {
        add(&mut sql, " AND l.channel = ?", c.clone());
    }
    if let Some(o) = &q.org {
        add(&mut sql, " AND l.org_id = ?", o.clone());
    }
    sql.push_str(" ORDER BY l.seq");
    if matches!(format, Format::Json | Format::Sse) || q.limit_given {
        sql.push_str(&std::format!(" LIMIT {}", q.limit));
    }
    let sql = std::format!("{select} FROM ({sql}) s, LATERAL (SELECT (s.r).*) l ORDER BY l.seq");
    (sql, params)
}

/// The query string of the page after `last_seq`, with the same filters.
pub fn next_query(q: &EventsQuery, last_seq: i64) -> String {
    let mut parts = vec![format!("after={last_seq}")];
    let mut push = |k: &str, v: &str| parts.push(format!("{k}={}", encode(v)));
    if let Some(s) = &q.since {
        push("since", s);
    }
    if let Some(u) = &q.until {
        push("until", u);
    }
    if let Some(u) = &q.user {
        push("user", u);
    }
    if let Some(s) = &q.source {
        push("source", &s.to_string());
    }
    if let Some(t) = &q.event_type {
        push("type", t);
    }
    if let Some(c) = &q.channel {
        push("channel", c);
    }
    if let Some(o) = &q.org {
        push("org", o);
    }
    push("limit", &q.limit.to_string());
    if q.wait > 0 {
        push("wait", &q.wait.to_string());
    }
    parts.join("&")
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: ApiError) -> String {
        match e {
            ApiError::Invalid { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_filter_parses_and_round_trips_through_the_next_link() {
        let raw = "since=2026-12-07T10%3A00%3A00Z&until=2026-12-07T11:00:00.5%2B01:00&user=alice%40example.org&source=203.0.113.0%2F24&type=login_failed&channel=web&org=hq&limit=50&after=7";
        let q = parse_events(Some(raw), 30).unwrap();
        assert_eq!(q.user.as_deref(), Some("alice@example.org"));
        assert_eq!(q.source.as_ref().unwrap().to_string(), "203.0.113.0/24");
        assert_eq!(q.until.as_deref(), Some("2026-12-07T11:00:00.5+01:00"));
        assert_eq!((q.after, q.limit), (Some(7), 50));
        let next = parse_events(Some(&next_query(&q, 99)), 30).unwrap();
        assert_eq!(
            next,
            EventsQuery {
                after: Some(99),
                ..q
            }
        );
    }

    #[test]
    fn unknown_repeated_and_malformed_parameters_are_named() {
        let cases = [
            ("usr=alice", "usr"),
            ("user=a&user=b", "user"),
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=-1", "limit"),
            ("limit=1e3", "limit"),
            ("after=%2B1", "after"),
            ("since=2026-02-30T00:00:00Z", "since"),
            ("since=2026-12-07", "since"),
            ("until=2026-12-07T24:00:00Z", "until"),
            ("source=10.0.0.0%2F33", "source"),
            ("source=example.org", "source"),
            ("type=login_fail", "type"),
            ("org=..", "org"),
            ("user=", "user"),
            ("user=a%00b", "user"),
            ("wait=31", "wait"),
        ];
        for (raw, field) in cases {
            let e = parse_events(Some(raw), 30).unwrap_err();
            assert_eq!(field_of(e), field, "{raw}");
        }
        assert!(parse_events(Some("user=%ff"), 30).is_err());
        assert!(parse_events(Some("user=%4"), 30).is_err());
    }

    #[test]
    fn accept_chooses_the_format() {
        assert_eq!(Format::from_accept(None), Some(Format::Json));
        assert_eq!(Format::from_accept(Some("*/*")), Some(Format::Json));
        assert_eq!(
            Format::from_accept(Some("application/x-ndjson")),
            Some(Format::Ndjson)
        );
        assert_eq!(
            Format::from_accept(Some("text/html, text/x-cef;q=0.9")),
            Some(Format::Cef)
        );
        assert_eq!(Format::from_accept(Some("text/html")), None);
        assert_eq!(
            Format::from_accept(Some("text/event-stream")),
            Some(Format::Sse)
        );
    }

    #[test]
    fn an_export_has_no_limit_unless_given() {
        let q = parse_events(Some("type=login_failed"), 30).unwrap();
        assert!(events_sql_as("t", &q, Format::Json)
            .0
            .contains("LIMIT 100)"));
        assert!(!events_sql_as("t", &q, Format::Ndjson).0.contains("LIMIT"));
        let q = parse_events(Some("limit=5"), 30).unwrap();
        assert!(events_sql_as("t", &q, Format::Cef).0.contains("LIMIT 5)"));
    }

    #[test]
    fn the_statement_binds_every_value_as_a_parameter() {
        let q = parse_events(Some("user=x%27%20OR%201%3D1--&channel=web"), 30).unwrap();
        let (sql, params) = events_sql("agency-1", &q);
        assert!(!sql.contains("OR 1=1"), "{sql}");
        assert_eq!(params, vec!["agency-1", "x' OR 1=1--", "web"]);
        assert!(sql.contains("ORDER BY l.seq LIMIT 100)"), "{sql}");
    }

    /// xorshift64*: the same cases on every run.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn any_query_string_parses_or_is_refused_naming_a_parameter() {
        let pieces = [
            "after",
            "since",
            "until",
            "user",
            "source",
            "type",
            "channel",
            "org",
            "limit",
            "wait",
            "x",
            "",
            "=",
            "&",
            "%",
            "%zz",
            "%e2%82%ac",
            "%ff",
            "+",
            "2026-12-07T10:00:00Z",
            "1",
            "-1",
            "99999999999999999999",
            "::1",
            "10.0.0.1/8",
            "login_failed",
            "{}",
            "[]",
            "null",
            "true",
            "1.5",
            "\"",
            "'",
            ";",
            "%00",
            "é",
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let mut raw = String::new();
            for _ in 0..rng.below(8) {
                raw.push_str(pieces[rng.below(pieces.len())]);
            }
            match parse_events(Some(&raw), 30) {
                Ok(q) => {
                    assert!((1..=MAX_LIMIT).contains(&q.limit), "{raw}");
                    let (sql, params) = events_sql("t", &q);
                    assert_eq!(sql.matches("::text").count(), params.len() + 1, "{raw}");
                    let (cef, cef_params) = events_sql_as("t", &q, Format::Cef);
                    assert_eq!(cef_params, params);
                    assert_eq!(cef.matches("::text").count(), params.len(), "{raw}");
                    // Rendered after the rows are chosen.
                    assert!(sql.find("jsonb_build_object") < sql.find("FROM ("), "{sql}");
                }
                Err(ApiError::Invalid { field, reason }) => {
                    assert!(!field.is_empty() && !reason.is_empty(), "{raw}");
                }
                Err(other) => panic!("{raw}: {other:?}"),
            }
        }
    }
}
