//! Mirrored rows as MongoDB documents. Input is a row in PostgreSQL's text
//! output format (what pgoutput sends, and what the initial copy selects),
//! read through a column lookup; output is the document the mirror writes.
//!
//! - `auth_log`: `_id` = `tenant_id/log_id` (the log's primary key: a log
//!   id is unique within its tenant), then `log_id`; times as BSON dates
//!   (milliseconds) plus
//!   the exact microseconds (`*_us`), digests as lowercase hex, metadata as
//!   an embedded document with exact numbers (Int64, Decimal128) beside
//!   its canonical text (`metadata_text`, what the chain hashes), so the
//!   chain can be re-verified from the mirror. A row the store cannot hold
//!   so is mirrored in a fallback form ([`Fallback`]), never refused.
//! - `lockout_state`: `_id` = `tenant_id/user_id`, plus the version (`v`,
//!   `vi`): the row's `last_seq` (every transaction that changes the state
//!   ends by setting it to its event's seq, which grows per tenant; a
//!   rebuild to its `lockout_rebuilt` event's) and the
//!   change's position in its transaction; a write only lands if its
//!   version is newer than the stored one.
//! - `checkpoints`: `_id` = `tenant_id/seq`.

use authaudit_core::exact_json::{Event, Reader};
use authaudit_core::numeric::{self, Exact};
use bson::{RawArrayBuf, RawBson, RawDocumentBuf};
use sha2::{Digest, Sha256};
use std::borrow::Cow;

/// Why a row could not be turned into a document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    #[error("column {0} is missing")]
    Missing(&'static str),
    #[error("column {column} has an unexpected value {value:?}")]
    Bad { column: &'static str, value: String },
}

/// The mirrored tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    AuthLog,
    LockoutState,
    Checkpoints,
}

impl Table {
    pub fn from_name(schema: &str, name: &str) -> Option<Table> {
        match (schema, name) {
            ("authaudit", "auth_log") => Some(Table::AuthLog),
            ("authaudit", "lockout_state") => Some(Table::LockoutState),
            ("authaudit", "checkpoints") => Some(Table::Checkpoints),
            _ => None,
        }
    }

    /// The collection it is mirrored into.
    pub fn collection(self) -> &'static str {
        match self {
            Table::AuthLog => "auth_log",
            Table::LockoutState => "lockout_state",
            Table::Checkpoints => "checkpoints",
        }
    }

    /// The columns the copy selects (as text), in this order.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Table::AuthLog => &[
                "log_id",
                "tenant_id",
                "org_id",
                "seq",
                "event_type",
                "user_id",
                "ip",
                "user_agent",
                "channel",
                "occurred_at",
                "recorded_at",
                "metadata",
                "format_version",
                "prev_link",
                "link_sha256",
                "digest_sha512",
                "digest_sha3_256",
            ],
            Table::LockoutState => &[
                "tenant_id",
                "user_id",
                "failure_count",
                "first_failure_at",
                "last_failure_at",
                "first_failure_ip",
                "last_failure_ip",
                "locked",
                "locked_at",
                "locked_until",
                "lock_count",
                "last_log_id",
                "last_seq",
                "updated_at",
                "org_id",
                "failures_since_success",
            ],
            Table::Checkpoints => &[
                "tenant_id",
                "seq",
                "link_sha256",
                "digest_sha512",
                "digest_sha3_256",
                "head_log_id",
                "created_at",
                "created_by",
            ],
        }
    }
}

impl Table {
    /// The query that reads every row of the table as text, in the order
    /// of [`Table::columns`], for the initial copy and for `verify` (the
    /// same conversion as the stream's). `filter` is appended as a WHERE
    /// clause when it is not empty.
    pub fn copy_query(self, filter: &str) -> String {
        // lockout_state.org_id exists from release 0.2.0 on and
        // failures_since_success from 0.5.0: they are read through the
        // row's JSON so that an older extension copies too.
        let select: Vec<String> = self
            .columns()
            .iter()
            .map(|c| match (self, *c) {
                (Table::LockoutState, "org_id" | "failures_since_success") => {
                    format!("to_jsonb(t) ->> '{c}'")
                }
                _ => format!("t.{c}::text"),
            })
            .collect();
        let order = match self {
            Table::AuthLog | Table::Checkpoints => "t.tenant_id COLLATE \"C\", t.seq",
            Table::LockoutState => "t.tenant_id COLLATE \"C\", t.user_id COLLATE \"C\"",
        };
        let filter = if filter.is_empty() {
            String::new()
        } else {
            format!(" WHERE {filter}")
        };
        format!(
            "SELECT {} FROM authaudit.{} t{filter} ORDER BY {order}",
            select.join(", "),
            self.collection()
        )
    }
}

/// A row as what the mirror writes: a log document (with the parts of
/// fields too large for it), a checkpoint inserted by `_id`, or a guarded
/// lockout change.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    Log(LogDocument),
    Checkpoint(RawDocumentBuf),
    Lockout(LockoutChange),
}

/// The document of a row of `table`; `ordinal` versions lockout changes
/// (see [`lockout_state`]).
pub fn document(table: Table, get: Get<'_, '_>, ordinal: i64) -> Result<Document, RowError> {
    Ok(match table {
        Table::AuthLog => Document::Log(auth_log(get)?),
        Table::Checkpoints => Document::Checkpoint(checkpoint(get)?),
        Table::LockoutState => Document::Lockout(lockout_state(get, ordinal)?),
    })
}

/// A column's text value by name (None for NULL): the decoded pgoutput row
/// or the initial copy's row, borrowed, never copied.
pub type Get<'g, 'r> = &'g dyn Fn(&str) -> Option<&'r str>;

fn req<'r>(get: Get<'_, 'r>, c: &'static str) -> Result<&'r str, RowError> {
    get(c).ok_or(RowError::Missing(c))
}

fn bad(column: &'static str, value: &str) -> RowError {
    RowError::Bad {
        column,
        value: value.to_string(),
    }
}

fn int(get: Get<'_, '_>, c: &'static str) -> Result<Option<i64>, RowError> {
    get(c)
        .map(|v| v.parse::<i64>().map_err(|_| bad(c, v)))
        .transpose()
}

/// `\x…` bytea text to lowercase hex (PostgreSQL writes lowercase already;
/// anything else is converted).
pub fn hex_column<'r>(get: Get<'_, 'r>, c: &'static str) -> Result<Option<Cow<'r, str>>, RowError> {
    get(c)
        .map(|v| match v.strip_prefix("\\x") {
            Some(h)
                if h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
            {
                Ok(Cow::Borrowed(h))
            }
            Some(h) if h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(Cow::Owned(h.to_ascii_lowercase()))
            }
            _ => Err(bad(c, v)),
        })
        .transpose()
}

/// An `inet` host address as PostgreSQL's output function writes it (what
/// pgoutput sends): a `::text` cast (what a query may return) adds the
/// host mask, which is dropped. The stream and the copy both go through
/// here, so a document never depends on the path its row took.
pub fn host_ip(v: &str) -> &str {
    v.strip_suffix("/32")
        .filter(|a| !a.contains(':'))
        .or_else(|| v.strip_suffix("/128").filter(|a| a.contains(':')))
        .unwrap_or(v)
}

fn put_ip(d: &mut RawDocumentBuf, name: &str, v: Option<&str>) {
    put_str(d, name, v.map(host_ip));
}

fn put_str(d: &mut RawDocumentBuf, name: &str, v: Option<&str>) {
    match v {
        Some(v) => d.append(name, v),
        None => d.append(name, RawBson::Null),
    }
}

/// Microseconds since the Unix epoch of a `timestamptz` in ISO text with a
/// UTC offset (`2026-11-28 04:11:20.102345+00`, offsets `+hh[:mm]`, years
/// of any width, ` BC` for years before 1); `infinity` and `-infinity` are
/// `i64::MAX` and `i64::MIN`, as the extension maps them, and times past
/// the range of i64 are held at its ends.
pub fn parse_timestamptz(s: &str) -> Option<i64> {
    match s {
        "infinity" => return Some(i64::MAX),
        "-infinity" => return Some(i64::MIN),
        _ => {}
    }
    let (s, bc) = match s.strip_suffix(" BC") {
        Some(t) => (t, true),
        None => (s, false),
    };
    let (date, rest) = s.split_once(' ')?;
    let mut d = date.split('-');
    let (y, m, day): (i128, i128, i128) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    // Year 1 BC is year 0 of the proleptic Gregorian calendar.
    let y = if bc { 1 - y } else { y };
    let tz_at = rest.rfind(['+', '-'])?;
    let (time, tz) = rest.split_at(tz_at);
    let mut t = time.split(':');
    let (hh, mm): (i128, i128) = (t.next()?.parse().ok()?, t.next()?.parse().ok()?);
    let sec = t.next()?;
    let (ss, frac) = sec.split_once('.').unwrap_or((sec, ""));
    let ss: i128 = ss.parse().ok()?;
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Fraction digits scaled to microseconds ("5" is 500,000).
    let micros = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(6)
        .fold(0i128, |acc, b| acc * 10 + i128::from(b - b'0'));
    let sign = if tz.starts_with('-') { -1 } else { 1 };
    let mut z = tz[1..].split(':');
    let tzh: i128 = z.next()?.parse().ok()?;
    let tzm: i128 = z.next().map_or(Some(0), |v| v.parse().ok())?;
    // PostgreSQL writes the seconds of an old local mean time offset too
    // (`+05:53:28`).
    let tzs: i128 = z.next().map_or(Some(0), |v| v.parse().ok())?;
    let offset = sign * (tzh * 3600 + tzm * 60 + tzs);
    // Days from civil (proleptic Gregorian), H. Hinnant's algorithm.
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let us = (days * 86_400 + hh * 3600 + mm * 60 + ss - offset) * 1_000_000 + micros;
    Some(us.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
}

/// A time column as a BSON date (milliseconds) plus the exact
/// microseconds in `<name>_us`; `names` is (name, name_us).
fn put_time(
    d: &mut RawDocumentBuf,
    get: Get<'_, '_>,
    (name, name_us): (&'static str, &'static str),
) -> Result<(), RowError> {
    match get(name) {
        Some(v) => {
            let us = parse_timestamptz(v).ok_or_else(|| bad(name, v))?;
            d.append(name, bson::DateTime::from_millis(us.div_euclid(1000)));
            d.append(name_us, us);
        }
        // Both fields: a time cleared (a lock lifted) leaves no stale copy.
        None => {
            d.append(name, RawBson::Null);
            d.append(name_us, RawBson::Null);
        }
    }
    Ok(())
}

/// The most nested levels a stored document may have: MongoDB refuses
/// documents nested deeper than 100 levels. The log document is the first
/// level, its metadata the second.
pub const MAX_STORED_DEPTH: usize = 100;

/// The largest document the store takes (MongoDB's BSON document limit).
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

/// The largest text a part of a field too large for its document holds.
pub const PART_BYTES: usize = 4 * 1024 * 1024;

/// Why a log row is mirrored in its fallback form (docs/sidecar.md,
/// "Rows the store cannot hold as they are"): `metadata` is null and
/// `metadata_fallback` names the reason; `metadata_text` keeps the exact
/// text the chain hashes, so nothing is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fallback {
    /// A number no BSON type holds exactly (more than 34 significant
    /// digits, or a scale beyond 6176).
    Number,
    /// Nesting deeper than the store takes ([`MAX_STORED_DEPTH`]).
    Depth,
    /// A key BSON cannot hold (a NUL character).
    Key,
    /// Metadata that is not JSON.
    Unreadable,
    /// The document would pass [`MAX_DOCUMENT_BYTES`]: the metadata is not
    /// embedded, and text fields are moved to `auth_log_parts` until the
    /// document fits.
    Size,
}

impl Fallback {
    pub const ALL: [Fallback; 5] = [
        Fallback::Number,
        Fallback::Depth,
        Fallback::Key,
        Fallback::Unreadable,
        Fallback::Size,
    ];

    /// Its name in documents, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::Number => "number",
            Fallback::Depth => "depth",
            Fallback::Key => "key",
            Fallback::Unreadable => "unreadable",
            Fallback::Size => "size",
        }
    }
}

/// One open container while metadata is converted.
enum Open {
    Document(RawDocumentBuf, Option<String>),
    Array(RawArrayBuf),
}

/// Metadata (jsonb's text) as BSON, literally and exactly: keys starting
/// with `$` or holding dots stay keys (no extended JSON interpretation),
/// integers within 64 bits become Int64, other numbers Decimal128 with
/// their scale (`1.50` stays `1.50`; docs/sidecar.md). Without recursion,
/// whatever the depth; what BSON or the store cannot hold is a
/// [`Fallback`].
pub fn metadata_bson(text: &str) -> Result<RawBson, Fallback> {
    let mut r = Reader::new(text);
    let mut stack: Vec<Open> = Vec::new();
    let mut root = None;
    while let Some(e) = r.next().map_err(|_| Fallback::Unreadable)? {
        let value = match e {
            Event::ObjectStart | Event::ArrayStart => {
                // The log document is level 1, the metadata's root level 2.
                if stack.len() + 2 > MAX_STORED_DEPTH {
                    return Err(Fallback::Depth);
                }
                stack.push(match e {
                    Event::ObjectStart => Open::Document(RawDocumentBuf::new(), None),
                    _ => Open::Array(RawArrayBuf::new()),
                });
                continue;
            }
            Event::Key(k) => {
                if k.contains('\0') {
                    return Err(Fallback::Key);
                }
                if let Some(Open::Document(_, key)) = stack.last_mut() {
                    *key = Some(k.into_owned());
                }
                continue;
            }
            Event::ObjectEnd | Event::ArrayEnd => match stack.pop() {
                Some(Open::Document(d, _)) => RawBson::Document(d),
                Some(Open::Array(a)) => RawBson::Array(a),
                None => return Err(Fallback::Unreadable),
            },
            Event::Null => RawBson::Null,
            Event::Bool(b) => RawBson::Boolean(b),
            Event::Number(n) => {
                let text = numeric::canonical(n).map_err(|_| Fallback::Unreadable)?;
                match Exact::of(&text).ok_or(Fallback::Number)? {
                    Exact::Int64(i) => RawBson::Int64(i),
                    Exact::Decimal128(b) => RawBson::Decimal128(bson::Decimal128::from_bytes(b)),
                }
            }
            Event::String(s) => RawBson::String(s.into_owned()),
        };
        match stack.last_mut() {
            None => root = Some(value),
            Some(Open::Document(d, key)) => d.append(key.take().unwrap_or_default(), value),
            Some(Open::Array(a)) => a.push(value),
        }
    }
    root.ok_or(Fallback::Unreadable)
}

/// A log row's document, the parts of its fields too large for it (for
/// `auth_log_parts`, written before it), and the fallback it needed.
#[derive(Debug, Clone, PartialEq)]
pub struct LogDocument {
    pub doc: RawDocumentBuf,
    pub parts: Vec<RawDocumentBuf>,
    pub fallback: Option<Fallback>,
}

/// Top-level fields never moved to parts: the document's identity.
const NEVER_PARTED: [&str; 3] = ["_id", "log_id", "tenant_id"];

/// Moves the largest text fields of `d` to parts until it fits the store:
/// each becomes null, its text is cut into pieces of at most
/// [`PART_BYTES`] (at character boundaries) stored as documents
/// `{_id: "<doc id>/<field>/<n>", log_doc_id, field, n, text}`, and the
/// document gets `parts: {<field>: {count, bytes, sha256}}`.
fn move_to_parts(d: &RawDocumentBuf) -> (RawDocumentBuf, Vec<RawDocumentBuf>) {
    let id = d.get_str("_id").unwrap_or_default().to_string();
    let mut texts: Vec<(String, usize)> = d
        .iter()
        .filter_map(Result::ok)
        .filter(|(k, _)| !NEVER_PARTED.contains(k))
        .filter_map(|(k, v)| Some((k.to_string(), v.as_str()?.len())))
        .collect();
    texts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut moved: Vec<String> = Vec::new();
    let mut size = d.as_bytes().len();
    for (field, len) in texts {
        // Each field moved leaves a null and an entry of about 150 bytes.
        if size + 200 * (moved.len() + 1) <= MAX_DOCUMENT_BYTES {
            break;
        }
        size -= len;
        moved.push(field);
    }
    let mut out = RawDocumentBuf::new();
    let mut parts = Vec::new();
    let mut index = RawDocumentBuf::new();
    for (k, v) in d.iter().filter_map(Result::ok) {
        let Some(text) = moved.iter().any(|m| m == k).then(|| v.as_str()).flatten() else {
            out.append(k, v.to_raw_bson());
            continue;
        };
        out.append(k, RawBson::Null);
        let mut n = 0i64;
        let mut from = 0;
        while from < text.len() || n == 0 {
            let mut to = (from + PART_BYTES).min(text.len());
            while !text.is_char_boundary(to) {
                to -= 1;
            }
            let mut p = RawDocumentBuf::new();
            p.append("_id", format!("{id}/{k}/{n}"));
            p.append("log_doc_id", id.as_str());
            p.append("field", k);
            p.append("n", n);
            p.append("text", &text[from..to]);
            parts.push(p);
            from = to;
            n += 1;
        }
        let mut entry = RawDocumentBuf::new();
        entry.append("count", n);
        entry.append("bytes", text.len() as i64);
        entry.append("sha256", hex::encode(Sha256::digest(text.as_bytes())));
        index.append(k, entry);
    }
    out.append("parts", index);
    (out, parts)
}

const LOG_TIMES: [(&str, &str); 2] = [
    ("occurred_at", "occurred_at_us"),
    ("recorded_at", "recorded_at_us"),
];

/// An `auth_log` row as its document. Never refused for its metadata or
/// its size: what the store cannot hold as it is takes the fallback form.
pub fn auth_log(get: Get<'_, '_>) -> Result<LogDocument, RowError> {
    let metadata_text = req(get, "metadata")?;
    let (metadata, mut fallback) = match metadata_bson(metadata_text) {
        Ok(m) => (m, None),
        Err(f) => (RawBson::Null, Some(f)),
    };
    let doc = |metadata: RawBson, fallback: Option<Fallback>| -> Result<RawDocumentBuf, RowError> {
        let (log_id, tenant) = (req(get, "log_id")?, req(get, "tenant_id")?);
        let mut d = RawDocumentBuf::new();
        d.append("_id", log_doc_id(tenant, log_id));
        d.append("log_id", log_id);
        d.append("tenant_id", tenant);
        put_str(&mut d, "org_id", get("org_id"));
        d.append("seq", int(get, "seq")?.ok_or(RowError::Missing("seq"))?);
        d.append("event_type", req(get, "event_type")?);
        d.append("user_id", req(get, "user_id")?);
        put_ip(&mut d, "ip", get("ip"));
        put_str(&mut d, "user_agent", get("user_agent"));
        d.append("channel", req(get, "channel")?);
        for t in LOG_TIMES {
            put_time(&mut d, get, t)?;
        }
        d.append("metadata", metadata);
        if let Some(f) = fallback {
            d.append("metadata_fallback", f.as_str());
        }
        // The canonical JSON text the chain hashes (key order of jsonb).
        d.append("metadata_text", metadata_text);
        d.append("format_version", int(get, "format_version")?.unwrap_or(1));
        for c in DIGESTS_WITH_PREV {
            put_str(&mut d, c, hex_column(get, c)?.as_deref());
        }
        Ok(d)
    };
    let mut d = doc(metadata, fallback)?;
    let mut parts = Vec::new();
    if d.as_bytes().len() > MAX_DOCUMENT_BYTES {
        fallback = Some(Fallback::Size);
        d = doc(RawBson::Null, fallback)?;
        if d.as_bytes().len() > MAX_DOCUMENT_BYTES {
            (d, parts) = move_to_parts(&d);
        }
    }
    Ok(LogDocument {
        doc: d,
        parts,
        fallback,
    })
}

/// The text of a field moved to parts, from its parts in order; `None`
/// when they do not give back the length and SHA-256 the document names.
pub fn joined_parts(
    doc: &bson::RawDocument,
    field: &str,
    parts: &[RawDocumentBuf],
) -> Option<String> {
    let entry = doc.get_document("parts").ok()?.get_document(field).ok()?;
    let mut text = String::new();
    for (i, p) in parts
        .iter()
        .filter(|p| p.get_str("field").ok() == Some(field))
        .enumerate()
    {
        if p.get_i64("n").ok()? != i as i64 {
            return None;
        }
        text.push_str(p.get_str("text").ok()?);
    }
    let whole = entry.get_i64("bytes").ok()? == text.len() as i64
        && entry.get_str("sha256").ok()? == hex::encode(Sha256::digest(text.as_bytes()));
    whole.then_some(text)
}

/// The `_id` of a log row's document.
pub fn log_doc_id(tenant: &str, log_id: &str) -> String {
    format!("{tenant}/{log_id}")
}

/// A log document of the first mirror format (`_id` = `log_id`, no
/// `log_id` field) in the current form: the same document the conversion
/// makes of its row. `None` for a document of the current form, or one
/// without a string `_id` and `tenant_id`.
pub fn rekeyed(old: &bson::RawDocument) -> Option<RawDocumentBuf> {
    if old.get("log_id").ok().flatten().is_some() {
        return None;
    }
    let log_id = old.get_str("_id").ok()?;
    let tenant = old.get_str("tenant_id").ok()?;
    let mut d = RawDocumentBuf::new();
    d.append("_id", log_doc_id(tenant, log_id));
    d.append("log_id", log_id);
    for field in old.iter() {
        let (name, value) = field.ok()?;
        if name != "_id" {
            d.append(name, value.to_raw_bson());
        }
    }
    Some(d)
}

const DIGESTS_WITH_PREV: [&str; 4] = [
    "prev_link",
    "link_sha256",
    "digest_sha512",
    "digest_sha3_256",
];

/// A change of a `lockout_state` row: its key and version, and the fields
/// the mirror sets.
#[derive(Debug, Clone, PartialEq)]
pub struct LockoutChange {
    /// `tenant_id/user_id`, the document's `_id`.
    pub id: String,
    /// (`last_seq`, position in its transaction), also stored as `v`, `vi`.
    pub version: (i64, i64),
    /// Every field but `_id`.
    pub fields: RawDocumentBuf,
}

const LOCKOUT_TIMES: [(&str, &str); 5] = [
    ("first_failure_at", "first_failure_at_us"),
    ("last_failure_at", "last_failure_at_us"),
    ("locked_at", "locked_at_us"),
    ("locked_until", "locked_until_us"),
    ("updated_at", "updated_at_us"),
];

/// A `lockout_state` row as its change, versioned by the row's `last_seq`
/// and the change's `ordinal` among its transaction's changes (one
/// transaction changes a row several times and sets `last_seq` last). The
/// initial copy passes `i64::MAX`: the copied row is the final state of its
/// `last_seq`, so replays of the same or older transactions from the slot
/// never move it back.
pub fn lockout_state(get: Get<'_, '_>, ordinal: i64) -> Result<LockoutChange, RowError> {
    let tenant = req(get, "tenant_id")?;
    let user = req(get, "user_id")?;
    let version = (int(get, "last_seq")?.unwrap_or(-1), ordinal);
    let mut d = RawDocumentBuf::new();
    d.append("tenant_id", tenant);
    d.append("user_id", user);
    d.append("failure_count", int(get, "failure_count")?.unwrap_or(0));
    put_ip(&mut d, "first_failure_ip", get("first_failure_ip"));
    put_ip(&mut d, "last_failure_ip", get("last_failure_ip"));
    put_str(&mut d, "org_id", get("org_id"));
    // pgoutput sends booleans as "t"/"f", a ::text cast as "true"/"false".
    d.append("locked", matches!(get("locked"), Some("t" | "true")));
    d.append("lock_count", int(get, "lock_count")?.unwrap_or(0));
    d.append(
        "failures_since_success",
        int(get, "failures_since_success")?.unwrap_or(0),
    );
    put_str(&mut d, "last_log_id", get("last_log_id"));
    match int(get, "last_seq")? {
        Some(s) => d.append("last_seq", s),
        None => d.append("last_seq", RawBson::Null),
    }
    d.append("v", version.0);
    d.append("vi", version.1);
    for t in LOCKOUT_TIMES {
        put_time(&mut d, get, t)?;
    }
    Ok(LockoutChange {
        id: format!("{tenant}/{user}"),
        version,
        fields: d,
    })
}

/// A `checkpoints` row as its document.
pub fn checkpoint(get: Get<'_, '_>) -> Result<RawDocumentBuf, RowError> {
    let tenant = req(get, "tenant_id")?;
    let seq = int(get, "seq")?.ok_or(RowError::Missing("seq"))?;
    let mut d = RawDocumentBuf::new();
    d.append("_id", format!("{tenant}/{seq}"));
    d.append("tenant_id", tenant);
    d.append("seq", seq);
    d.append("head_log_id", req(get, "head_log_id")?);
    d.append("created_by", req(get, "created_by")?);
    for c in &DIGESTS_WITH_PREV[1..] {
        put_str(&mut d, c, hex_column(get, c)?.as_deref());
    }
    put_time(&mut d, get, ("created_at", "created_at_us"))?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn timestamps_parse_to_unix_microseconds() {
        assert_eq!(parse_timestamptz("1970-01-01 00:00:00+00"), Some(0));
        assert_eq!(
            parse_timestamptz("2000-01-01 00:00:00.5+00"),
            Some(946_684_800_500_000)
        );
        assert_eq!(
            parse_timestamptz("2026-11-28 04:11:20.102345+00"),
            Some(1_795_839_080_102_345)
        );
        assert_eq!(
            parse_timestamptz("2026-11-28 05:41:20.102345+01:30"),
            Some(1_795_839_080_102_345)
        );
        assert_eq!(parse_timestamptz("1969-12-31 23:59:59.999999+00"), Some(-1));
        assert_eq!(parse_timestamptz("yesterday"), None);
    }

    #[test]
    fn a_first_format_log_document_is_rekeyed_to_what_its_row_makes() {
        let row: HashMap<&str, &str> = [
            ("log_id", "6d1c0c8e-0000-4000-8000-000000000009"),
            ("tenant_id", "acme"),
            ("seq", "9"),
            ("event_type", "login_succeeded"),
            ("user_id", "alice"),
            ("channel", "ssh"),
            ("occurred_at", "2026-11-28 04:11:20+00"),
            ("recorded_at", "2026-11-28 04:11:21+00"),
            ("metadata", r#"{"a": {"b": [1, "x"]}}"#),
            ("format_version", "1"),
            ("prev_link", "\\xab01"),
            ("link_sha256", "\\xcd02"),
            ("digest_sha512", "\\xef03"),
            ("digest_sha3_256", "\\x0104"),
        ]
        .into();
        let current = auth_log(&|c: &str| row.get(c).copied()).unwrap().doc;
        // The first format: `_id` = log_id, no log_id field.
        let mut old = RawDocumentBuf::new();
        old.append("_id", "6d1c0c8e-0000-4000-8000-000000000009");
        for field in current.iter() {
            let (name, value) = field.unwrap();
            if name != "_id" && name != "log_id" {
                old.append(name, value.to_raw_bson());
            }
        }
        assert_eq!(rekeyed(&old).unwrap().as_bytes(), current.as_bytes());
        assert!(rekeyed(&current).is_none());
    }

    #[test]
    fn a_log_row_keeps_everything_the_chain_needs() {
        let row: HashMap<&str, &str> = [
            ("log_id", "6d1c0c8e-0000-4000-8000-000000000001"),
            ("tenant_id", "acme"),
            ("seq", "7"),
            ("event_type", "login_failed"),
            ("user_id", "alice"),
            ("ip", "198.51.100.7"),
            ("channel", "web"),
            ("occurred_at", "2026-11-28 04:11:20.102345+00"),
            ("recorded_at", "2026-11-28 04:11:20.2+00"),
            ("metadata", r#"{"reason": "bad_password"}"#),
            ("format_version", "1"),
            ("prev_link", "\\xAB01"),
            ("link_sha256", "\\xcd02"),
            ("digest_sha512", "\\xef03"),
            ("digest_sha3_256", "\\x0104"),
        ]
        .into();
        let get = |c: &str| row.get(c).copied();
        let d = auth_log(&get).unwrap().doc;
        assert_eq!(
            d.get_str("_id").unwrap(),
            "acme/6d1c0c8e-0000-4000-8000-000000000001"
        );
        assert_eq!(
            d.get_str("log_id").unwrap(),
            "6d1c0c8e-0000-4000-8000-000000000001"
        );
        assert_eq!(d.get_i64("seq").unwrap(), 7);
        assert_eq!(d.get_i64("occurred_at_us").unwrap(), 1_795_839_080_102_345);
        assert_eq!(d.get_str("prev_link").unwrap(), "ab01");
        assert_eq!(
            d.get_document("metadata")
                .unwrap()
                .get_str("reason")
                .unwrap(),
            "bad_password"
        );
        assert_eq!(d.get("org_id").unwrap(), Some(bson::RawBsonRef::Null));
        let broken = |c: &str| {
            if c == "link_sha256" {
                Some("zz")
            } else {
                get(c)
            }
        };
        assert!(matches!(
            auth_log(&broken),
            Err(RowError::Bad {
                column: "link_sha256",
                ..
            })
        ));
    }

    fn log_row(metadata: &'static str) -> HashMap<&'static str, &'static str> {
        [
            ("log_id", "6d1c0c8e-0000-4000-8000-000000000002"),
            ("tenant_id", "acme"),
            ("seq", "8"),
            ("event_type", "login_failed"),
            ("user_id", "alice"),
            ("channel", "web"),
            ("occurred_at", "2026-11-28 04:11:20+00"),
            ("recorded_at", "2026-11-28 04:11:20+00"),
            ("metadata", metadata),
            ("link_sha256", "\\xCD02"),
        ]
        .into()
    }

    fn decimal(text: &str) -> bson::RawBsonRef<'static> {
        match Exact::of(text) {
            Some(Exact::Decimal128(b)) => {
                bson::RawBsonRef::Decimal128(bson::Decimal128::from_bytes(b))
            }
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn metadata_is_mirrored_literally_with_exact_numbers() {
        let row = log_row(
            r#"{"$date": 5, "a.b": {"": null}, "n": [1, 2.5, 1.50, null, true], "big": 18446744073709551615}"#,
        );
        let get = |c: &str| row.get(c).copied();
        let l = auth_log(&get).unwrap();
        assert_eq!((l.fallback, l.parts.len()), (None, 0));
        let d = l.doc;
        let m = d.get_document("metadata").unwrap();
        // Not read as extended JSON: a "$date" key stays a number.
        assert_eq!(m.get_i64("$date").unwrap(), 5);
        assert!(m.get_document("a.b").unwrap().get("").unwrap().is_some());
        let n: Vec<_> = m
            .get_array("n")
            .unwrap()
            .into_iter()
            .map(|v| v.unwrap())
            .collect();
        assert_eq!(
            n,
            [
                bson::RawBsonRef::Int64(1),
                decimal("2.5"),
                decimal("1.50"),
                bson::RawBsonRef::Null,
                bson::RawBsonRef::Boolean(true)
            ]
        );
        assert_ne!(decimal("2.5"), decimal("2.50"), "the scale is kept");
        assert_eq!(m.get("big").unwrap(), Some(decimal("18446744073709551615")));
        assert!(d.get("metadata_fallback").unwrap().is_none());
        // Uppercase hex from elsewhere is normalised.
        assert_eq!(d.get_str("link_sha256").unwrap(), "cd02");
        assert_eq!(d.get("prev_link").unwrap(), Some(bson::RawBsonRef::Null));
    }

    /// A Decimal128 written here reads back, through the bson crate's own
    /// decoder, as the same number.
    #[test]
    fn decimals_decode_to_their_number_in_the_bson_crate() {
        for text in [
            "1.50",
            "-0.000123",
            "18446744073709551615",
            "1e400",
            "1234567890123456789012345678901234",
        ] {
            let canonical = numeric::canonical(text).unwrap();
            let Some(Exact::Decimal128(b)) = Exact::of(&canonical) else {
                panic!("{text}")
            };
            let shown = bson::Decimal128::from_bytes(b).to_string();
            assert_eq!(
                numeric::canonical(&shown.replace("E+", "e")).unwrap(),
                canonical,
                "{shown}"
            );
            let parsed: bson::Decimal128 = shown.parse().unwrap();
            assert_eq!(parsed.bytes(), b, "{shown}");
        }
    }

    #[test]
    fn metadata_the_store_cannot_hold_falls_back_to_its_text() {
        let deep_ok = format!("{}1{}", "{\"a\": ".repeat(99), "}".repeat(99));
        let deep = format!("{}1{}", "{\"a\": ".repeat(100), "}".repeat(100));
        let arrays = format!("{{\"x\": {}1{}}}", "[".repeat(130), "]".repeat(130));
        let forty = r#"{"n": 1234567890123456789012345678901234567890}"#;
        let tiny = format!("{{\"n\": 0.{}1}}", "0".repeat(6176));
        for (text, want) in [
            (deep_ok.as_str(), None),
            (deep.as_str(), Some(Fallback::Depth)),
            (arrays.as_str(), Some(Fallback::Depth)),
            (forty, Some(Fallback::Number)),
            (tiny.as_str(), Some(Fallback::Number)),
            (r#"{"a\u0000b": 1}"#, Some(Fallback::Key)),
            ("not json", Some(Fallback::Unreadable)),
        ] {
            let text: &'static str = text.to_string().leak();
            let row = log_row(text);
            let get = |c: &str| row.get(c).copied();
            let l = auth_log(&get).unwrap();
            assert_eq!(l.fallback, want, "{text:.60}");
            let d = &l.doc;
            assert_eq!(d.get_str("metadata_text").unwrap(), text);
            match want {
                None => assert!(d.get_document("metadata").is_ok()),
                Some(f) => {
                    assert_eq!(d.get("metadata").unwrap(), Some(bson::RawBsonRef::Null));
                    assert_eq!(d.get_str("metadata_fallback").unwrap(), f.as_str());
                }
            }
        }
    }

    #[test]
    fn a_row_too_large_for_the_store_is_parted_and_joins_back() {
        // 10 MiB of metadata: embedded and as text, the document passes 16 MiB.
        let ten: &'static str = format!("{{\"k\": \"{}\"}}", "é".repeat(5 << 20)).leak();
        let row = log_row(ten);
        let get = |c: &str| row.get(c).copied();
        let l = auth_log(&get).unwrap();
        assert_eq!(l.fallback, Some(Fallback::Size));
        assert!(l.parts.is_empty());
        assert!(l.doc.as_bytes().len() <= MAX_DOCUMENT_BYTES);
        assert_eq!(l.doc.get_str("metadata_text").unwrap(), ten);
        // 40 MB of text and a 20 MB user agent: both move to parts.
        let forty: &'static str = format!("{{\"k\": \"{}\"}}", "x€".repeat(10 << 20)).leak();
        let agent: &'static str = "a".repeat(20 << 20).leak();
        let mut row = log_row(forty);
        row.insert("user_agent", agent);
        let get = |c: &str| row.get(c).copied();
        let l = auth_log(&get).unwrap();
        assert_eq!(l.fallback, Some(Fallback::Size));
        assert!(l.doc.as_bytes().len() <= MAX_DOCUMENT_BYTES);
        assert!(l
            .parts
            .iter()
            .all(|p| p.as_bytes().len() <= PART_BYTES + 1024));
        assert_eq!(
            l.doc.get("metadata_text").unwrap(),
            Some(bson::RawBsonRef::Null)
        );
        assert_eq!(
            joined_parts(&l.doc, "metadata_text", &l.parts).as_deref(),
            Some(forty)
        );
        assert_eq!(
            joined_parts(&l.doc, "user_agent", &l.parts).as_deref(),
            Some(agent)
        );
        assert_eq!(
            l.parts[0].get_str("_id").unwrap(),
            "acme/6d1c0c8e-0000-4000-8000-000000000002/user_agent/0"
        );
        // A part lost or altered does not join back.
        let lost: Vec<RawDocumentBuf> = l
            .parts
            .iter()
            .filter(|p| !p.get_str("_id").unwrap().ends_with("/metadata_text/1"))
            .cloned()
            .collect();
        assert_eq!(joined_parts(&l.doc, "metadata_text", &lost), None);
        assert_eq!(
            joined_parts(&l.doc, "user_agent", &lost).as_deref(),
            Some(agent)
        );
    }

    #[test]
    fn infinite_and_bc_times_are_read_as_the_extension_maps_them() {
        assert_eq!(parse_timestamptz("infinity"), Some(i64::MAX));
        assert_eq!(parse_timestamptz("-infinity"), Some(i64::MIN));
        // 0001-01-01 is 62135596800 s before the epoch; 1 BC is a leap year.
        assert_eq!(
            parse_timestamptz("0001-01-01 00:00:00+00"),
            Some(-62_135_596_800_000_000)
        );
        assert_eq!(
            parse_timestamptz("0001-12-31 00:00:00+00 BC"),
            Some(-62_135_596_800_000_000 - 86_400_000_000)
        );
        assert_eq!(
            parse_timestamptz("0001-01-01 00:00:00+00 BC"),
            Some(-62_135_596_800_000_000 - 366 * 86_400_000_000)
        );
        // PostgreSQL's last timestamp is past i64 Unix microseconds: held
        // at the end of the range rather than refused.
        assert_eq!(
            parse_timestamptz("294276-12-31 23:59:59.999999+00"),
            Some(i64::MAX)
        );
    }

    #[test]
    fn a_lockout_change_carries_its_key_and_version_apart() {
        let row: HashMap<&str, &str> = [
            ("tenant_id", "acme"),
            ("user_id", "alice"),
            ("failure_count", "3"),
            ("locked", "t"),
            ("lock_count", "1"),
            ("locked_until", "2026-11-28 04:26:20+00"),
            ("last_seq", "17"),
        ]
        .into();
        let get = |c: &str| row.get(c).copied();
        let c = lockout_state(&get, 4).unwrap();
        assert_eq!(c.id, "acme/alice");
        assert_eq!(c.version, (17, 4));
        // The copy's version of the same row beats every change of seq 17.
        assert!(lockout_state(&get, i64::MAX).unwrap().version > c.version);
        // `_id` is the upsert's key, never a field it sets.
        assert!(c.fields.get("_id").unwrap().is_none());
        assert!(c.fields.get_bool("locked").unwrap());
        assert_eq!(c.fields.get_i64("v").unwrap(), 17);
        assert_eq!(
            c.fields.get_i64("locked_until_us").unwrap(),
            1_795_839_980_000_000
        );
        assert_eq!(
            c.fields.get("locked_at").unwrap(),
            Some(bson::RawBsonRef::Null)
        );
    }

    #[test]
    fn a_cleared_time_clears_both_of_its_fields() {
        let row: HashMap<&str, &str> = [("tenant_id", "acme"), ("user_id", "alice")].into();
        let get = |c: &str| row.get(c).copied();
        let c = lockout_state(&get, 1).unwrap();
        for (name, name_us) in LOCKOUT_TIMES {
            assert_eq!(c.fields.get(name).unwrap(), Some(bson::RawBsonRef::Null));
            assert_eq!(
                c.fields.get(name_us).unwrap(),
                Some(bson::RawBsonRef::Null),
                "{name_us} kept a value the row no longer has"
            );
        }
    }

    #[test]
    fn an_ip_is_stored_the_same_from_the_stream_and_from_the_copy() {
        for (streamed, copied) in [
            ("198.51.100.7", "198.51.100.7/32"),
            ("2001:db8::1", "2001:db8::1/128"),
            ("::ffff:192.0.2.1", "::ffff:192.0.2.1/128"),
        ] {
            assert_eq!(host_ip(streamed), streamed);
            assert_eq!(host_ip(copied), streamed);
        }
        // Not host masks of their family: left as they are.
        assert_eq!(host_ip("2001:db8::/32"), "2001:db8::/32");
        assert_eq!(host_ip("10.0.0.0/8"), "10.0.0.0/8");
        let row: HashMap<&str, &str> = [
            ("tenant_id", "acme"),
            ("user_id", "alice"),
            ("first_failure_ip", "198.51.100.7/32"),
            ("last_failure_ip", "198.51.100.8"),
            ("org_id", "hq"),
        ]
        .into();
        let get = |c: &str| row.get(c).copied();
        let c = lockout_state(&get, 1).unwrap();
        assert_eq!(
            c.fields.get_str("first_failure_ip").unwrap(),
            "198.51.100.7"
        );
        assert_eq!(c.fields.get_str("last_failure_ip").unwrap(), "198.51.100.8");
        assert_eq!(c.fields.get_str("org_id").unwrap(), "hq");
    }
}
