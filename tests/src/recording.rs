//! Recording events in tests: an [`Event`] built field by field, recorded
//! with `authaudit.record_event` ([`record`], [`try_record`]) or as one
//! `authaudit.record_events` batch ([`record_batch`]), and the stored row
//! the tests read back ([`Stored`]).
//!
//! Every value travels as a bind parameter; no value is written into the
//! SQL text. Fields left unset are passed as `record_event`'s defaults
//! (`NULL`, metadata `{}`); an event without a log id gets a fresh one
//! from the server (`gen_random_uuid()`).

use postgres::GenericClient;

/// When an event happened, relative to the server's clock where it is not
/// a fixed timestamp (the server's `now()`, the transaction's start).
#[derive(Clone, Debug, PartialEq)]
pub enum When {
    /// A `timestamptz` literal, e.g. `2026-11-01 10:00:00+00`.
    At(String),
    /// `date_trunc(unit, now()) - ago + plus_secs seconds`; `unit` `None`
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
    pub log_id: Option<String>,
    pub tenant: String,
    pub event_type: String,
    pub user: String,
    pub channel: String,
    pub org: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub occurred_at: Option<When>,
    /// The metadata as JSON text, kept as written (numbers keep their
    /// digits); `None` records `{}`.
    pub metadata: Option<String>,
}

impl Event {
    pub fn new(tenant: &str, event_type: &str, user: &str) -> Self {
        Event {
            log_id: None,
            tenant: tenant.to_owned(),
            event_type: event_type.to_owned(),
            user: user.to_owned(),
            channel: "web".to_owned(),
            org: None,
            ip: None,
            user_agent: None,
            occurred_at: None,
            metadata: None,
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

    pub fn log_id(mut self, id: &str) -> Self {
        self.log_id = Some(id.to_owned());
        self
    }

    pub fn channel(mut self, channel: &str) -> Self {
        self.channel = channel.to_owned();
        self
    }

    pub fn org(mut self, org: &str) -> Self {
        self.org = Some(org.to_owned());
        self
    }

    /// The source address, as `inet` text.
    pub fn ip(mut self, ip: &str) -> Self {
        self.ip = Some(ip.to_owned());
        self
    }

    pub fn user_agent(mut self, user_agent: &str) -> Self {
        self.user_agent = Some(user_agent.to_owned());
        self
    }

    /// A fixed event time, as `timestamptz` text.
    pub fn occurred_at(mut self, timestamp: &str) -> Self {
        self.occurred_at = Some(When::At(timestamp.to_owned()));
        self
    }

    /// `now() - interval`, the interval as text (`'40 minutes'`, `'2 days'`).
    pub fn ago(mut self, interval: &str) -> Self {
        self.occurred_at = Some(When::Relative {
            unit: None,
            ago: interval.to_owned(),
            plus_secs: 0.0,
        });
        self
    }

    /// `date_trunc(unit, now()) - ago + plus_secs` seconds: a time on a
    /// grid of the server's clock (`unit` `'day'`, `'hour'`).
    pub fn after_start_of(mut self, unit: &str, ago: &str, plus_secs: f64) -> Self {
        self.occurred_at = Some(When::Relative {
            unit: Some(unit.to_owned()),
            ago: ago.to_owned(),
            plus_secs,
        });
        self
    }

    pub fn metadata(self, metadata: serde_json::Value) -> Self {
        self.metadata_text(&metadata.to_string())
    }

    /// Metadata as JSON text, recorded as written.
    pub fn metadata_text(mut self, json: &str) -> Self {
        self.metadata = Some(json.to_owned());
        self
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
        let fields = [
            ("log_id", &self.log_id),
            ("org_id", &self.org),
            ("ip", &self.ip),
            ("user_agent", &self.user_agent),
        ];
        for (name, value) in fields {
            if let Some(v) = value {
                o[name] = v.as_str().into();
            }
        }
        match &self.occurred_at {
            None => {}
            Some(When::At(t)) => o["occurred_at"] = t.as_str().into(),
            Some(When::Relative { .. }) => panic!("a batch takes fixed event times only"),
        }
        let mut text = o.to_string();
        if let Some(m) = &self.metadata {
            serde_json::from_str::<serde_json::Value>(m).expect("metadata is JSON");
            text.pop();
            text += ",\"metadata\":";
            text += m;
            text.push('}');
        }
        text
    }
}

/// The stored row, as `record_event` returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    pub seq: i64,
    pub log_id: String,
    pub tenant: String,
    pub org: Option<String>,
    pub event_type: String,
    pub user: String,
    pub channel: String,
    /// The address without its mask (`host(ip)`).
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub occurred_at: String,
    pub recorded_at: String,
    /// The metadata as the server prints it (jsonb text).
    pub metadata: String,
    pub prev_link: Vec<u8>,
    pub link_sha256: Vec<u8>,
}

impl Stored {
    /// The metadata as a JSON value.
    pub fn metadata_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.metadata).expect("stored metadata is JSON")
    }

    /// The facts the lockout engine added (`metadata._authaudit.lockout`);
    /// `Null` without them.
    pub fn lockout(&self) -> serde_json::Value {
        self.metadata_json()["_authaudit"]["lockout"].take()
    }
}

/// The stored row's columns, in [`Stored`]'s order.
const COLUMNS: &str = "seq, log_id::text, tenant_id, org_id, event_type, user_id, channel, \
     host(ip), user_agent, occurred_at::text, recorded_at::text, metadata::text, prev_link, \
     link_sha256";

fn stored(r: &postgres::Row) -> Stored {
    Stored {
        seq: r.get(0),
        log_id: r.get(1),
        tenant: r.get(2),
        org: r.get(3),
        event_type: r.get(4),
        user: r.get(5),
        channel: r.get(6),
        ip: r.get(7),
        user_agent: r.get(8),
        occurred_at: r.get(9),
        recorded_at: r.get(10),
        metadata: r.get(11),
        prev_link: r.get(12),
        link_sha256: r.get(13),
    }
}

/// Records `e` with `authaudit.record_event`; the refusal as the error.
pub fn try_record(c: &mut impl GenericClient, e: &Event) -> Result<Stored, postgres::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM authaudit.record_event( \
           log_id => coalesce($1::text::uuid, gen_random_uuid()), tenant_id => $2, \
           event_type => $3, user_id => $4, channel => $5, org_id => $6, \
           ip => $7::text::inet, user_agent => $8, \
           occurred_at => CASE \
             WHEN $9::text IS NOT NULL THEN $9::text::timestamptz \
             WHEN $11::text IS NOT NULL THEN \
               CASE WHEN $10::text IS NULL THEN now() ELSE date_trunc($10::text, now()) END \
               - $11::text::interval + make_interval(secs => $12::float8) \
           END, \
           metadata => coalesce($13::text::jsonb, '{{}}'))"
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
    c.query_one(
        &sql,
        &[
            &e.log_id,
            &e.tenant,
            &e.event_type,
            &e.user,
            &e.channel,
            &e.org,
            &e.ip,
            &e.user_agent,
            &at,
            &unit,
            &ago,
            &plus,
            &e.metadata,
        ],
    )
    .map(|r| stored(&r))
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
    let sql = format!(
        "SELECT {COLUMNS} FROM authaudit.record_events(( \
           SELECT coalesce(jsonb_agg(CASE WHEN e ? 'log_id' THEN e \
                    ELSE e || jsonb_build_object('log_id', gen_random_uuid()) END ORDER BY i), '[]') \
             FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS a(e, i)))"
    );
    c.query(&sql, &[&batch])
        .map(|rows| rows.iter().map(stored).collect())
}

/// Records `events` as one batch; panics when it is refused.
pub fn record_batch(c: &mut impl GenericClient, events: &[Event]) -> Vec<Stored> {
    try_record_batch(c, events).unwrap_or_else(|err| panic!("record_events: {err}"))
}
