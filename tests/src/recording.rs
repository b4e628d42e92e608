//! Recording events in tests: an [`Event`] built field by field, recorded
//! with `authaudit.record_event` ([`record`], [`try_record`]) or as one
//! `authaudit.record_events` batch ([`record_batch`]); the stored row comes
//! back as the exports read it ([`Stored`], with [`StoredExt`]).
//!
//! Every value travels as a bind parameter; no value is written into the
//! SQL text. Fields left unset are passed as `record_event`'s defaults
//! (`NULL`, metadata `{}`); an event without a log id gets a fresh one
//! from the server (`gen_random_uuid()`).

use postgres::GenericClient;
use std::collections::BTreeMap;

/// The stored row: every column, digests as hex, the metadata as the
/// exact JSON text PostgreSQL holds.
pub use authaudit_core::stored_event::StoredEvent as Stored;

/// When an event happened, relative to the server's clock where it is not
/// a fixed timestamp (the server's `now()`, the transaction's start).
#[derive(Clone, Debug, PartialEq)]
pub enum When {
    /// A `timestamptz` literal, e.g. `2026-11-01 10:00:00+00`.
    At(String),
    /// `date_trunc(unit, now()) - ago + plus_secs` seconds; `unit` `None`
    /// leaves `now()` as it is.
    Relative {
        unit: Option<String>,
        ago: String,
        plus_secs: f64,
    },
}

/// One event for `authaudit.record_event`, channel `web` unless set.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub tenant: String,
    pub event_type: String,
    pub user: String,
    /// `web` unless set.
    pub channel: String,
    /// The optional text fields by their `record_events` name (`log_id`,
    /// `org_id`, `ip`, `user_agent`, `metadata`: JSON text as written, so
    /// that numbers keep their digits).
    pub optional: BTreeMap<&'static str, String>,
    /// Unset: the server's clock.
    pub occurred_at: Option<When>,
}

impl Event {
    pub fn new(tenant: &str, event_type: &str, user: &str) -> Self {
        Event {
            tenant: tenant.to_owned(),
            event_type: event_type.to_owned(),
            user: user.to_owned(),
            channel: "web".to_owned(),
            optional: BTreeMap::new(),
            occurred_at: None,
        }
    }

    /// A `login_failed` event.
    pub fn failed(tenant: &str, user: &str) -> Self {
        Event::new(tenant, "login_failed", user)
    }

    /// A `login_success` event.
    pub fn success(tenant: &str, user: &str) -> Self {
        Event::new(tenant, "login_success", user)
    }

    /// Sets (`Some`) or clears (`None`) the optional field `name`.
    pub fn set(mut self, name: &'static str, value: Option<&str>) -> Self {
        match value {
            Some(v) => self.optional.insert(name, v.to_owned()),
            None => self.optional.remove(name),
        };
        self
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.optional.get(name).map(String::as_str)
    }

    pub fn log_id(self, id: &str) -> Self {
        self.set("log_id", Some(id))
    }

    pub fn channel(mut self, channel: &str) -> Self {
        self.channel = channel.to_owned();
        self
    }

    pub fn org(self, org: &str) -> Self {
        self.set("org_id", Some(org))
    }

    /// The source address, as `inet` text.
    pub fn ip(self, ip: &str) -> Self {
        self.set("ip", Some(ip))
    }

    pub fn user_agent(self, user_agent: &str) -> Self {
        self.set("user_agent", Some(user_agent))
    }

    /// A fixed event time, as `timestamptz` text.
    pub fn occurred_at(mut self, timestamp: &str) -> Self {
        self.occurred_at = Some(When::At(timestamp.to_owned()));
        self
    }

    /// `now() - interval`, the interval as text (`'40 minutes'`, `'2 days'`).
    pub fn ago(self, interval: &str) -> Self {
        self.relative(None, interval, 0.0)
    }

    /// `date_trunc(unit, now()) - ago + plus_secs` seconds: a time on a
    /// grid of the server's clock (`unit` `'day'`, `'hour'`).
    pub fn after_start_of(self, unit: &str, ago: &str, plus_secs: f64) -> Self {
        self.relative(Some(unit), ago, plus_secs)
    }

    fn relative(mut self, unit: Option<&str>, ago: &str, plus_secs: f64) -> Self {
        self.occurred_at = Some(When::Relative {
            unit: unit.map(str::to_owned),
            ago: ago.to_owned(),
            plus_secs,
        });
        self
    }

    pub fn metadata(self, metadata: serde_json::Value) -> Self {
        self.metadata_text(&metadata.to_string())
    }

    /// Metadata as JSON text, recorded as written (the server parses it:
    /// numbers beyond a double's range are the tests' to send).
    pub fn metadata_text(self, json: &str) -> Self {
        self.set("metadata", Some(json))
    }

    /// The event as one element of a `record_events` batch, as JSON text
    /// (the metadata as written).
    fn to_json(&self) -> String {
        let mut o = serde_json::json!({
            "tenant_id": self.tenant,
            "event_type": self.event_type,
            "user_id": self.user,
            "channel": self.channel,
        });
        for (name, value) in self.optional.iter().filter(|(n, _)| **n != "metadata") {
            o[*name] = value.as_str().into();
        }
        match &self.occurred_at {
            None => {}
            Some(When::At(t)) => o["occurred_at"] = t.as_str().into(),
            Some(When::Relative { .. }) => panic!("a batch takes fixed event times only"),
        }
        let mut text = o.to_string();
        if let Some(m) = self.get("metadata") {
            text.pop();
            text += ",\"metadata\":";
            text += m;
            text.push('}');
        }
        text
    }
}

/// What the tests read of a stored row beyond its columns.
pub trait StoredExt {
    /// The metadata as a JSON value.
    fn metadata_json(&self) -> serde_json::Value;

    /// The facts the lockout engine added (`metadata._authaudit.lockout`);
    /// `Null` without them.
    fn lockout(&self) -> serde_json::Value {
        self.metadata_json()["_authaudit"]["lockout"].take()
    }
}

impl StoredExt for Stored {
    fn metadata_json(&self) -> serde_json::Value {
        serde_json::from_str(self.metadata.get()).expect("stored metadata is JSON")
    }
}

/// The stored rows `l` of `FROM`, as JSON text that [`Stored`] reads.
fn stored_rows_from(from: &str) -> String {
    format!(
        "SELECT (to_jsonb(l) || jsonb_build_object('ip', host(l.ip), \
           'occurred_at_ms', floor(extract(epoch FROM l.occurred_at) * 1000)::bigint, \
           'recorded_at_ms', floor(extract(epoch FROM l.recorded_at) * 1000)::bigint, \
           'prev_link', encode(l.prev_link, 'hex'), 'link_sha256', encode(l.link_sha256, 'hex'), \
           'digest_sha512', encode(l.digest_sha512, 'hex'), \
           'digest_sha3_256', encode(l.digest_sha3_256, 'hex')))::text FROM {from} l"
    )
}

fn stored(r: &postgres::Row) -> Stored {
    serde_json::from_str(r.get(0)).expect("a stored row")
}

/// Records `e` with `authaudit.record_event`; the refusal as the error.
pub fn try_record(c: &mut impl GenericClient, e: &Event) -> Result<Stored, postgres::Error> {
    let sql = stored_rows_from(
        "authaudit.record_event( \
           log_id => coalesce($1::text::uuid, gen_random_uuid()), tenant_id => $2, \
           event_type => $3, user_id => $4, channel => $5, org_id => $6, \
           ip => $7::text::inet, user_agent => $8, \
           occurred_at => CASE \
             WHEN $9::text IS NOT NULL THEN $9::text::timestamptz \
             WHEN $11::text IS NOT NULL THEN \
               CASE WHEN $10::text IS NULL THEN now() ELSE date_trunc($10::text, now()) END \
               - $11::text::interval + make_interval(secs => $12::float8) \
           END, \
           metadata => coalesce($13::text::jsonb, '{}'))",
    );
    let (at, unit, ago, plus) = match &e.occurred_at {
        None => (None, None, None, 0.0),
        Some(When::At(t)) => (Some(t.as_str()), None, None, 0.0),
        Some(When::Relative {
            unit,
            ago,
            plus_secs,
        }) => (None, unit.as_deref(), Some(ago.as_str()), *plus_secs),
    };
    let params: [&(dyn postgres::types::ToSql + Sync); 13] = [
        &e.get("log_id"),
        &e.tenant,
        &e.event_type,
        &e.user,
        &e.channel,
        &e.get("org_id"),
        &e.get("ip"),
        &e.get("user_agent"),
        &at,
        &unit,
        &ago,
        &plus,
        &e.get("metadata"),
    ];
    c.query_one(&sql, &params).map(|r| stored(&r))
}

/// Records `e`; panics when it is refused.
pub fn record(c: &mut impl GenericClient, e: &Event) -> Stored {
    try_record(c, e).unwrap_or_else(|err| panic!("record_event {e:?}: {err}"))
}

/// Records `events` in one call of `authaudit.record_events`: the stored
/// rows in input order, or the refusal. Event times must be fixed
/// ([`Event::occurred_at`]) or unset.
pub fn try_record_batch(
    c: &mut impl GenericClient,
    events: &[Event],
) -> Result<Vec<Stored>, postgres::Error> {
    let batch = format!(
        "[{}]",
        events
            .iter()
            .map(Event::to_json)
            .collect::<Vec<_>>()
            .join(",")
    );
    // Events without a log id get a fresh one, as with record_event.
    let sql = stored_rows_from(
        "authaudit.record_events(( \
           SELECT coalesce(jsonb_agg(CASE WHEN e ? 'log_id' THEN e \
                    ELSE e || jsonb_build_object('log_id', gen_random_uuid()) END ORDER BY i), '[]') \
             FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS a(e, i)))",
    );
    c.query(&sql, &[&batch])
        .map(|rows| rows.iter().map(stored).collect())
}

/// Records `events` as one batch; panics when it is refused.
pub fn record_batch(c: &mut impl GenericClient, events: &[Event]) -> Vec<Stored> {
    try_record_batch(c, events).unwrap_or_else(|err| panic!("record_events: {err}"))
}
