//! An event from its SQL arguments to its checked form, and the parts of a
//! row every recording shares: the checks (the documented SQLSTATEs), the
//! final metadata with the extension's facts and its canonical text, the
//! canonical body, the log row's insertion, a retry's comparison with the
//! recorded row, and the organisation check. The recording pipeline
//! (`pipeline.rs`) uses these; the SQL entry points are in `record_sql.rs`
//! and `record_batch.rs`.

use crate::error::{AuditError, SqlResult};
use crate::lockout_engine::{self as engine, LockedAccount};
use crate::row_writes::{Column, Target};
use crate::sql_values::{Inet, Jsonb, Tid};
use crate::{channels, gucs, spi_plans, time};
use authaudit_core::canonical::{encode_body, Record};
use authaudit_core::chain::ChainHead;
use authaudit_core::event::{check_live_time, Channel, EventError, EventInput, EventType, IpInput};
use authaudit_core::identity::SourceKey;
use authaudit_core::jsonb_text;
use authaudit_core::lockout_effect::Lock;
use authaudit_core::scope::WriteReach;
use pgrx::datum::{TimestampWithTimeZone, Uuid};
use pgrx::pg_sys;
use pgrx::pg_sys::BuiltinOid::{INETOID, JSONBOID, TEXTOID, TIMESTAMPTZOID, UUIDOID};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use serde_json::{json, Map, Value};
use std::ffi::CStr;

/// A stored `authaudit.auth_log` row.
pub type Row = pgrx::composite_type!('static, "auth_log");

/// Characters of a user agent kept; a longer one is cut and its length and
/// SHA-256 are recorded (an attacker controls it).
const KEPT_USER_AGENT_CHARS: usize = 512;

/// An event that passed every rule, as the pipeline carries it.
pub struct Event<'a> {
    pub log_id: Uuid,
    pub tenant: &'a str,
    pub org: Option<&'a str>,
    pub event_type: EventType,
    pub user: &'a str,
    pub channel: Channel,
    pub ip: Option<Inet>,
    pub user_agent: Option<&'a str>,
    /// Whether the caller gave the time (a retry without it matches any).
    pub occurred_given: bool,
    pub occurred_at_us: i64,
    pub recorded_at_us: i64,
    /// The caller's metadata (`{}` for NULL) and its canonical text.
    pub metadata: Jsonb,
    pub metadata_text: String,
    /// Facts for `metadata._authaudit` found while checking (a cut user agent).
    pub facts: Map<String, Value>,
}

/// The raw values of an event, as the SQL functions receive them.
pub struct Args<'a> {
    pub log_id: Option<Uuid>,
    pub tenant: Option<&'a str>,
    pub org: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub user: Option<&'a str>,
    pub channel: Option<&'a str>,
    pub ip: Option<Inet>,
    pub user_agent: Option<&'a str>,
    pub occurred_at: Option<TimestampWithTimeZone>,
    pub metadata: Option<Jsonb>,
}

/// How an event is recorded (docs/lockout.md, "Event time").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// As it happens: within `authaudit.max_past_skew` of the server clock,
    /// decided by the lockout engine at once.
    Live,
    /// History (`authaudit.import_events`): any past time, no live lockout
    /// effect, marked `_authaudit.imported`; `rebuild_lockout` applies it.
    Import,
}

impl<'a> Args<'a> {
    /// Applies every event rule (the documented SQLSTATEs) at `recorded_at_us`.
    pub fn check(self, recorded_at_us: i64, mode: Mode) -> Result<Event<'a>, AuditError> {
        let log_id = self
            .log_id
            .ok_or(AuditError::Event(EventError::Missing("log_id")))?;
        let metadata = self.metadata.unwrap_or_else(|| Jsonb::parse("{}"));
        let metadata_text = metadata.text();
        let mut facts = Map::new();
        let user_agent = self.user_agent.map(|ua| match ua.char_indices().nth(KEPT_USER_AGENT_CHARS) {
            None => ua,
            Some((cut, _)) => {
                facts.insert(
                    "user_agent_truncated".into(),
                    json!({"chars": ua.chars().count(), "sha256": authaudit_core::chain::sha256_hex(ua.as_bytes())}),
                );
                &ua[..cut]
            }
        });
        let occurred_at_us = self.occurred_at.map(time::unix_micros);
        let input = EventInput {
            log_id: *log_id.as_bytes(),
            tenant_id: self.tenant,
            org_id: self.org,
            event_type: self.event_type,
            user_id: self.user,
            ip: self.ip.map(|i| IpInput::Inet {
                addr: i.addr,
                prefix: i.prefix,
            }),
            user_agent,
            channel: self.channel,
            occurred_at_us: occurred_at_us.unwrap_or(recorded_at_us),
            recorded_at_us,
            metadata: &metadata_text,
        };
        let e = input.validate(gucs::max_future_skew_us(), &channels::configured())?;
        let (event_type, channel, occurred_at_us) = (e.event_type, e.channel, e.occurred_at_us);
        match mode {
            Mode::Live => {
                check_live_time(occurred_at_us, recorded_at_us, gucs::max_past_skew_us())?
            }
            Mode::Import => {
                facts.insert("imported".into(), true.into());
            }
        }
        Ok(Event {
            log_id,
            tenant: self.tenant.expect("validated"),
            org: self.org,
            event_type,
            user: self.user.expect("validated"),
            channel,
            ip: self.ip,
            user_agent,
            occurred_given: self.occurred_at.is_some(),
            occurred_at_us,
            recorded_at_us,
            metadata,
            metadata_text,
            facts,
        })
    }
}

/// The server clock, in Unix microseconds (`clock_timestamp()`).
pub fn now_us() -> i64 {
    // SAFETY: reads the system clock.
    time::unix_micros_of_raw(unsafe { pg_sys::GetCurrentTimestamp() })
}

fn ts(us: Option<i64>) -> Option<TimestampWithTimeZone> {
    us.and_then(time::from_unix_micros)
}

/// The event's final metadata (with `_authaudit` facts merged in) and its
/// canonical text.
pub fn final_metadata(e: &Event<'_>, facts: &Map<String, Value>) -> (Jsonb, String) {
    if facts.is_empty() {
        return (e.metadata, e.metadata_text.clone());
    }
    if !e.metadata_text.contains("\"_authaudit\"") {
        // The canonical text is known without jsonb_out: the metadata's own
        // with the facts' entry in its place.
        if let Some(text) = jsonb_text::object(facts)
            .and_then(|f| jsonb_text::with_entry(&e.metadata_text, "_authaudit", &f))
        {
            let m = Jsonb::parse(&text);
            debug_assert_eq!(m.text(), text, "the canonical metadata text");
            return (m, text);
        }
    }
    let facts = Value::Object(facts.clone()).to_string();
    let m = if e.metadata_text.contains("\"_authaudit\"") && e.metadata.has_key("_authaudit") {
        // The extension's own facts are there already: merge into them.
        e.metadata.with_authaudit(&facts)
    } else if e.metadata_text == "{}" {
        Jsonb::parse(&format!("{{\"_authaudit\": {facts}}}"))
    } else {
        // The canonical text of an object with one more key: jsonb puts
        // the keys in order when it reads it.
        Jsonb::parse(&format!(
            "{{\"_authaudit\": {facts}, {}",
            &e.metadata_text[1..]
        ))
    };
    (m, m.text())
}

/// The canonical body of an event with its final metadata text.
pub fn body(e: &Event<'_>, metadata_text: &str) -> Vec<u8> {
    encode_body(&Record {
        log_id: *e.log_id.as_bytes(),
        tenant_id: e.tenant,
        org_id: e.org,
        event_type: e.event_type.as_str(),
        user_id: e.user,
        ip: e.ip.map(|i| i.addr),
        user_agent: e.user_agent,
        channel: e.channel.as_str(),
        occurred_at_us: e.occurred_at_us,
        recorded_at_us: e.recorded_at_us,
        metadata: metadata_text,
    })
}

/// An event's row as chained, ready to insert.
pub struct LogRow<'a> {
    pub log_id: Uuid,
    pub tenant: &'a str,
    pub org: Option<&'a str>,
    pub seq: i64,
    pub event_type: &'a str,
    pub user: &'a str,
    pub ip: Option<Inet>,
    pub user_agent: Option<&'a str>,
    pub channel: &'a str,
    pub occurred_at_us: i64,
    pub recorded_at_us: i64,
    pub metadata: Jsonb,
    pub prev: &'a ChainHead,
    pub next: &'a ChainHead,
}

/// Inserts `r` into `auth_log` (opened as `target`), its log id looked up
/// and not found just before (`Target::insert_unseen`: the key is checked
/// only when the insertion meets it); whether it went in (`false`: another
/// session committed the log id meanwhile).
pub fn insert_unseen_log_row(target: &mut Target, r: &LogRow<'_>) -> Result<bool, AuditError> {
    insert_log_row_as(target, r, Target::insert_unseen)
}

type Insertion = fn(&mut Target, &[Column], &'static CStr) -> Result<Option<Tid>, AuditError>;

fn insert_log_row_as(
    target: &mut Target,
    r: &LogRow<'_>,
    insertion: Insertion,
) -> Result<bool, AuditError> {
    Ok(insertion(
        target,
        &[
            (c"log_id", r.log_id.into_datum()),
            (c"tenant_id", r.tenant.into_datum()),
            (c"org_id", r.org.and_then(IntoDatum::into_datum)),
            (c"seq", r.seq.into_datum()),
            (c"event_type", r.event_type.into_datum()),
            (c"user_id", r.user.into_datum()),
            (c"ip", r.ip.map(|i| i.datum)),
            (c"user_agent", r.user_agent.and_then(IntoDatum::into_datum)),
            (c"channel", r.channel.into_datum()),
            (c"occurred_at", engine::timestamp(Some(r.occurred_at_us))),
            (c"recorded_at", engine::timestamp(Some(r.recorded_at_us))),
            (c"metadata", Some(r.metadata.0)),
            (c"format_version", 1i16.into_datum()),
            (c"prev_link", r.prev.sha256.as_slice().into_datum()),
            (c"link_sha256", r.next.sha256.as_slice().into_datum()),
            (c"digest_sha512", r.next.sha512.as_slice().into_datum()),
            (c"digest_sha3_256", r.next.sha3_256.as_slice().into_datum()),
        ],
        c"auth_log_pkey",
    )?
    .is_some())
}

const EXISTING: &str = "SELECT l, l.org_id IS NOT DISTINCT FROM $3 \
       AND l.event_type = $4 AND l.user_id = $5 AND l.channel = $6 \
       AND l.ip IS NOT DISTINCT FROM $7 AND l.user_agent IS NOT DISTINCT FROM $8 \
       AND (l.metadata - '_authaudit') = ($9 - '_authaudit') \
       AND ($10::timestamptz IS NULL OR l.occurred_at = $10) \
  FROM authaudit.auth_log l WHERE l.tenant_id = $2 AND l.log_id = $1";

/// The recorded row of `e`'s log id in its tenant: returned when it holds
/// the same event (a retry), refused (23505) when it holds another.
pub fn existing(client: &mut SpiClient<'_>, e: &Event<'_>) -> Result<Row, AuditError> {
    let t = spi_plans::run(
        client,
        "record_existing",
        EXISTING,
        &[
            UUIDOID,
            TEXTOID,
            TEXTOID,
            TEXTOID,
            TEXTOID,
            TEXTOID,
            INETOID,
            TEXTOID,
            JSONBOID,
            TIMESTAMPTZOID,
        ],
        &[
            e.log_id.into(),
            e.tenant.into(),
            e.org.into(),
            e.event_type.as_str().into(),
            e.user.into(),
            e.channel.as_str().into(),
            e.ip.into(),
            e.user_agent.into(),
            e.metadata.into(),
            ts(e.occurred_given.then_some(e.occurred_at_us)).into(),
        ],
    )?;
    if t.is_empty() {
        return Err(AuditError::ConcurrentLogId(e.log_id.to_string()));
    }
    let r = t.first();
    if r.get::<bool>(2)?.unwrap_or(false) {
        Ok(r.get::<Row>(1)?.expect("a row"))
    } else {
        Err(AuditError::LogIdReused(e.log_id.to_string()))
    }
}

/// The organisation confinement of a writer reaches the account.
pub fn check_reach(
    e: &Event<'_>,
    writer_org: Option<&str>,
    account: Option<&LockedAccount>,
) -> Result<(), AuditError> {
    let (Some(org), Some(account)) = (writer_org, account) else {
        return Ok(());
    };
    if WriteReach::Organisation(org.to_owned()).reaches_account(account.org.as_deref()) {
        return Ok(());
    }
    Err(AuditError::AccountOfOtherOrganisation {
        user: e.user.chars().take(80).collect(),
        tenant: e.tenant.to_owned(),
        org: org.to_owned(),
    })
}

/// The metadata of the `account_locked` event failure `failure` caused,
/// with the account's key where it differs from the recorded `user`.
pub fn lock_metadata(lock: &Lock, failure: &Uuid, user: &str, account: &str) -> Jsonb {
    let mut m = lock.metadata(&failure.to_string());
    if let (Value::Object(o), true) = (&mut m, account != user) {
        o.insert("account_key".into(), Value::String(account.to_owned()));
    }
    Jsonb::parse(&m.to_string())
}

/// The lockout facts with the keys the event counted against, where they
/// differ from the recorded `user_id` and `ip` (`account_key`,
/// `source_key`).
pub fn with_keys(
    mut facts: Value,
    user: &str,
    account: &str,
    ip: Option<Inet>,
    source: Option<SourceKey>,
) -> Value {
    if let Value::Object(m) = &mut facts {
        if account != user {
            m.insert("account_key".into(), Value::String(account.to_owned()));
        }
        if let (Some(ip), Some(source)) = (ip, source) {
            if (ip.addr, ip.prefix) != (source.addr, source.prefix) {
                m.insert("source_key".into(), Value::String(source.inet_text()));
            }
        }
    }
    facts
}

/// Checks every rule of an event and returns its canonical body (the chained
/// bytes without format version and seq). Raises the documented SQLSTATE
/// for the first rule it breaks.
#[allow(clippy::too_many_arguments)]
#[pg_extern(stable, parallel_safe, name = "_event_body")]
fn event_body(
    log_id: Option<Uuid>,
    tenant_id: Option<&str>,
    org_id: Option<&str>,
    event_type: Option<&str>,
    user_id: Option<&str>,
    ip: Option<&str>,
    user_agent: Option<&str>,
    channel: Option<&str>,
    occurred_at: Option<TimestampWithTimeZone>,
    recorded_at: TimestampWithTimeZone,
    metadata: Option<&str>,
) -> SqlResult<Vec<u8>> {
    let log_id = log_id.ok_or(AuditError::Event(EventError::Missing("log_id")))?;
    let recorded_at_us = time::unix_micros(recorded_at);
    let input = EventInput {
        log_id: *log_id.as_bytes(),
        tenant_id,
        org_id,
        event_type,
        user_id,
        ip: ip.map(IpInput::Text),
        user_agent,
        channel,
        occurred_at_us: occurred_at.map_or(recorded_at_us, time::unix_micros),
        recorded_at_us,
        metadata: metadata.unwrap_or("{}"),
    };
    let event = input
        .validate(gucs::max_future_skew_us(), &channels::configured())
        .map_err(AuditError::from)?;
    Ok(encode_body(&Record::from(&event)))
}
