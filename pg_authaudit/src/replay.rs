//! Lockout decisions in event-time order (`authaudit_core::lockout_replay`)
//! over a tenant's recorded events: `authaudit.lockout_replay`, which the
//! investigation functions report from, and `authaudit.rebuild_lockout`,
//! which writes the state the replay ends in into the lockout tables
//! (docs/lockout.md, "Event time").

use crate::error::AuditError;
use crate::heads::{self, StateAccess};
use crate::lockout_engine::{self as engine, KeyRules, Rules};
use crate::pipeline::{self, Request};
use crate::record::{now_us, Args, Mode};
use crate::scope::{self, CallerReads};
use crate::snapshots::{self, Made};
use crate::spi_plans::Pinned;
use crate::sql_values::{Inet, Jsonb};
use crate::state_tables;
use crate::time;
use authaudit_core::engine_state::EngineState;
use authaudit_core::identity::SourceKey;
use authaudit_core::lockout_effect::Kind;
use authaudit_core::lockout_effect::{iso_utc, Effect};
use authaudit_core::lockout_replay::{Input, Replay, Replayer};
use pgrx::datum::{TimestampWithTimeZone, Uuid};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::ffi::CStr;
use std::net::IpAddr;

/// The events the engine acts on after the point (`$2`, `$3`) and before
/// `$4`, in event-time order.
const EVENTS: &CStr = c"SELECT seq, log_id, occurred_at, event_type, user_id, org_id, ip \
       FROM authaudit.auth_log \
      WHERE tenant_id = $1 AND event_type IN ('login_failed', 'login_success', 'lockout_reset') \
        AND occurred_at >= $2 AND (occurred_at, log_id) > ($2, $3) AND occurred_at < $4 \
      ORDER BY occurred_at, log_id";

/// The events the engine acts on recorded after seq `$2`, in event-time order.
const EVENTS_AFTER: &CStr = c"SELECT seq, log_id, occurred_at, event_type, user_id, org_id, ip \
       FROM authaudit.auth_log \
      WHERE tenant_id = $1 AND event_type IN ('login_failed', 'login_success', 'lockout_reset') \
        AND seq > $2 \
      ORDER BY occurred_at, log_id";

/// A recorded event as the replay reports it.
struct Recorded {
    seq: i64,
    log_id: Uuid,
    occurred_at: TimestampWithTimeZone,
    event_type: String,
    user: String,
    org: Option<String>,
    /// A host address (recording refuses networks).
    ip: Option<IpAddr>,
}

/// Recorded events with the engine's inputs, aligned.
#[derive(Default)]
struct Events {
    recorded: Vec<Recorded>,
    inputs: Vec<Input<SourceKey>>,
}

fn text(v: &str) -> (pg_sys::Oid, pg_sys::Datum) {
    (pg_sys::TEXTOID, v.into_datum().expect("text"))
}

fn at(us: i64) -> (pg_sys::Oid, pg_sys::Datum) {
    (pg_sys::TIMESTAMPTZOID, time::datum_of_unix_micros(us))
}

/// Hands the tenant's lockout events after `point` (`None`: all) and
/// before `to_us`, as `pin` sees them, to `each` in event-time order.
fn load(
    pin: &Pinned,
    tenant: &str,
    point: Option<(i64, [u8; 16])>,
    to_us: i64,
    keys: &KeyRules,
    each: impl FnMut(Recorded, Input<SourceKey>),
) -> Result<(), AuditError> {
    let (at_us, id) = point.unwrap_or((i64::MIN, [0; 16]));
    let id = (
        pg_sys::UUIDOID,
        Uuid::from_bytes(id).into_datum().expect("uuid"),
    );
    read_events(
        pin,
        EVENTS,
        &[text(tenant), at(at_us), id, at(to_us)],
        keys,
        each,
    )
}

/// Hands the tenant's lockout events recorded after seq `after`, as `pin`
/// sees them, to `each` in event-time order.
fn load_after(
    pin: &Pinned,
    tenant: &str,
    after: i64,
    keys: &KeyRules,
    each: impl FnMut(Recorded, Input<SourceKey>),
) -> Result<(), AuditError> {
    let after = (pg_sys::INT8OID, pg_sys::Datum::from(after));
    read_events(pin, EVENTS_AFTER, &[text(tenant), after], keys, each)
}

fn read_events(
    pin: &Pinned,
    sql: &CStr,
    args: &[(pg_sys::Oid, pg_sys::Datum)],
    keys: &KeyRules,
    mut each: impl FnMut(Recorded, Input<SourceKey>),
) -> Result<(), AuditError> {
    pin.stream(sql, args, |r| {
        let ip: Option<Inet> = r.get(7)?;
        let rec = Recorded {
            seq: r.get(1)?.unwrap_or_default(),
            log_id: r.get(2)?.expect("log_id is NOT NULL"),
            occurred_at: r.get(3)?.expect("occurred_at is NOT NULL"),
            event_type: r.get(4)?.unwrap_or_default(),
            user: r.get(5)?.unwrap_or_default(),
            org: r.get(6)?,
            ip: ip.map(|i| i.addr),
        };
        if let Some(kind) = Kind::of(&rec.event_type) {
            let input = Input {
                log_id: *rec.log_id.as_bytes(),
                at_us: time::unix_micros(rec.occurred_at),
                kind,
                account: keys.account(&rec.user).into_owned(),
                ip: rec.ip,
                source: ip.map(|i| keys.source_key(i)),
                org: rec.org.clone(),
            };
            each(rec, input);
        }
        Ok(())
    })
}

/// Where a replay keeps its state as snapshots (`snapshots`): before the
/// first event at or after `last_boundary` when at least `last_min` events
/// were applied since the last one kept (or restored), and, before that,
/// at day boundaries once `every` were.
#[derive(Clone, Copy)]
struct Keeping {
    every: u64,
    last_boundary: i64,
    last_min: u64,
}

impl Keeping {
    /// A rebuild's: periodic, and at the latest boundary allowed now
    /// (`None`: snapshots are off).
    fn rebuild(now: i64, enabled: bool) -> Option<Keeping> {
        enabled.then(|| Keeping {
            every: snapshots::every_events(),
            last_boundary: snapshots::latest_boundary(now),
            last_min: snapshots::lazy_events(),
        })
    }

    /// An answer's about a period from `from_us`: at the day boundary
    /// before it (or the latest allowed now, if earlier).
    fn answer(now: i64, from_us: i64, enabled: bool) -> Option<Keeping> {
        enabled.then(|| Keeping {
            every: u64::MAX,
            last_boundary: snapshots::day_floor(from_us).min(snapshots::latest_boundary(now)),
            last_min: snapshots::lazy_events(),
        })
    }
}

/// A replay from the best snapshot of a tenant (or its first event).
struct Run {
    replayer: Replayer<SourceKey>,
    /// The events whose decisions are kept (from `decisions_from` on),
    /// aligned with them.
    events: Events,
    /// The highest seq of the tenant the replay saw.
    visible: i64,
    /// States kept on the way (`Keeping`), to store as snapshots.
    kept: Vec<EngineState>,
    keeping: Option<Keeping>,
    /// Events applied since the last state kept (or restored).
    since: u64,
    /// Whether the state at `Keeping::last_boundary` was kept (or passed).
    last_done: bool,
    decisions_from: i64,
    /// The number of events applied before the first decision kept (the
    /// tenant's events before it, those in a snapshot included).
    decisions_base: Option<u64>,
}

impl Run {
    /// Replays `tenant`'s lockout events before `to_us` as `pin` sees them,
    /// from the latest usable snapshot whose point is before `snapshot_before`
    /// (`None`: from the first event), keeping states as `keeping` says and
    /// the decisions of events from `decisions_from` on.
    #[allow(clippy::too_many_arguments)]
    fn start(
        pin: &Pinned,
        tenant: &str,
        rules: &Rules,
        fingerprint: &str,
        snapshot_before: Option<i64>,
        to_us: i64,
        keeping: Option<Keeping>,
        decisions_from: i64,
    ) -> Result<Run, AuditError> {
        let visible = snapshots::visible_max_seq(pin, tenant)?;
        let base = match snapshot_before {
            Some(before) => snapshots::best_before(pin, tenant, fingerprint, before, visible)?,
            None => None,
        };
        let mut replayer = match base {
            Some(state) => Replayer::restore(rules.policy, state),
            None => Replayer::new(rules.policy),
        };
        replayer.keep_decisions(false);
        let point = replayer.last();
        let mut run = Run {
            replayer,
            events: Events::default(),
            visible,
            kept: Vec::new(),
            keeping,
            since: 0,
            last_done: false,
            decisions_from,
            decisions_base: None,
        };
        load(pin, tenant, point, to_us, &rules.keys, |rec, input| {
            run.feed(rec, input)
        })?;
        if let Some(k) = run.keeping {
            if !run.last_done && run.since >= k.last_min {
                run.kept.push(run.replayer.state());
                run.last_done = true;
            }
        }
        Ok(run)
    }

    /// Applies the next event in event-time order.
    fn feed(&mut self, rec: Recorded, input: Input<SourceKey>) {
        if let (Some(k), Some((last_us, _))) = (self.keeping, self.replayer.last()) {
            if !self.last_done && input.at_us >= k.last_boundary {
                if self.since >= k.last_min {
                    self.kept.push(self.replayer.state());
                }
                self.last_done = true;
            } else if !self.last_done
                && self.since >= k.every
                && snapshots::day_floor(input.at_us) > snapshots::day_floor(last_us)
            {
                self.kept.push(self.replayer.state());
                self.since = 0;
            }
        }
        self.since += 1;
        if self.decisions_base.is_none() && input.at_us >= self.decisions_from {
            self.decisions_base = Some(self.replayer.applied());
            self.replayer.keep_decisions(true);
        }
        if self.decisions_base.is_some() {
            self.replayer.apply(&input, self.events.inputs.len());
            self.events.recorded.push(rec);
            self.events.inputs.push(input);
        } else {
            self.replayer.apply(&input, usize::MAX);
        }
    }

    /// Stores the states kept (as `snapshots::store` says, made `made`).
    fn store_kept(
        &mut self,
        client: &mut SpiClient<'_>,
        tenant: &str,
        fingerprint: &str,
        made: Made,
    ) -> Result<(), AuditError> {
        for state in std::mem::take(&mut self.kept) {
            if !snapshots::store(client, tenant, fingerprint, &state, self.visible, made)? {
                break;
            }
        }
        Ok(())
    }
}

/// The `account_locked` events the live engine appended in [`$2`, `$3`)
/// (a lock has its failure's `occurred_at`), by the failure that triggered
/// each.
const ENFORCED_LOCKS: &CStr = c"SELECT metadata ->> 'triggered_by', seq FROM authaudit.auth_log \
      WHERE tenant_id = $1 AND event_type = 'account_locked' \
        AND occurred_at >= $2 AND occurred_at < $3";

/// The seq of the lock the live engine enforced for each failure that
/// locked its account (by the failure's log id): what the chain holds,
/// whatever history imported later makes the event-time replay decide.
fn enforced_locks(
    pin: &Pinned,
    tenant: &str,
    from_us: i64,
    to_us: i64,
) -> Result<HashMap<String, i64>, AuditError> {
    let rows = pin.read(
        ENFORCED_LOCKS,
        &[text(tenant), at(from_us), at(to_us)],
        |r| Ok((r.get::<String>(1)?, r.get::<i64>(2)?)),
    )?;
    Ok(rows
        .into_iter()
        .filter_map(|(failure, seq)| Some((failure?, seq?)))
        .collect())
}

fn ts(us: Option<i64>) -> Option<TimestampWithTimeZone> {
    us.and_then(time::from_unix_micros)
}

fn fact_us(facts: &Value, key: &str) -> Option<i64> {
    facts.get(key).and_then(Value::as_i64)
}

type ReplayRow = (
    i64,
    i64,
    Uuid,
    TimestampWithTimeZone,
    String,
    String,
    Option<String>,
    Option<Inet>,
    String,
    Option<i32>,
    bool,
    bool,
    Option<String>,
    Option<i32>,
    Option<TimestampWithTimeZone>,
    Option<bool>,
    Option<TimestampWithTimeZone>,
    Option<TimestampWithTimeZone>,
    Option<i32>,
    Option<bool>,
    Option<Vec<Inet>>,
    Option<i64>,
);

/// An `inet` datum of a host address, in the current memory context.
fn inet(ip: IpAddr) -> Inet {
    Inet::parse(&ip.to_string())
}

/// One decision as a row of `lockout_replay`; its `inet` values are made
/// by `with_inets`, outside the SPI connection whose memory ends with it.
fn row(decision: usize, rec: &Recorded, account: &str, effect: &Effect) -> ReplayRow {
    let f = &effect.facts;
    let int = |k: &str| f.get(k).and_then(Value::as_i64).map(|v| v as i32);
    let flag = |k: &str| f.get(k).and_then(Value::as_bool);
    let while_locked = flag("while_locked").unwrap_or(false);
    let lock = effect.lock;
    (
        decision as i64 + 1,
        rec.seq,
        rec.log_id,
        rec.occurred_at,
        rec.event_type.clone(),
        rec.user.clone(),
        rec.org.clone(),
        None,
        account.to_owned(),
        int("failures_in_window"),
        while_locked,
        lock.is_some(),
        lock.map(|l| l.rule.as_str().to_owned()),
        lock.map(|l| l.lock_count),
        match lock {
            Some(l) => ts(l.until_us),
            None if while_locked => ts(fact_us(f, "locked_until_us")),
            None => None,
        },
        lock.map(|l| l.until_us.is_none()),
        ts(fact_us(f, "ip_blocked_until_us")),
        ts(fact_us(f, "ip_account_blocked_until_us")),
        int("preceding_failures"),
        flag("was_locked"),
        None,
        None,
    )
}

/// A decision's row with its source address and, for a success, the
/// addresses of the failures it followed.
struct Pending {
    row: ReplayRow,
    ip: Option<IpAddr>,
    failing_ips: Option<Vec<IpAddr>>,
}

impl Pending {
    fn with_inets(self) -> ReplayRow {
        let mut row = self.row;
        row.7 = self.ip.map(inet);
        row.20 = self
            .failing_ips
            .map(|ips| ips.into_iter().map(inet).collect());
        row
    }
}

/// The lockout engine's decision for every login_failed, login_success and
/// lockout_reset event of a tenant, taken in event-time order (occurred_at,
/// then log_id) whatever order the events were recorded in, under the
/// tenant's current policy and key rules; beside it, for a failure, the
/// seq of the `account_locked` event the live engine appended when it
/// recorded the failure (`enforced_lock_seq`: what was enforced, which
/// history imported later cannot take out of the chain). Events before `to_time` are
/// replayed; those from `from_time` on are returned, in decision order.
/// The caller sees the decisions of the rows it may read (a reader bound to
/// organisations: theirs), each decided over the whole tenant; a caller
/// with no read access to the tenant gets none.
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_restricted, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn lockout_replay(
    tenant_id: &str,
    from_time: default!(Option<TimestampWithTimeZone>, "NULL"),
    to_time: default!(Option<TimestampWithTimeZone>, "NULL"),
) -> Result<
    TableIterator<
        'static,
        (
            name!(decision, i64),
            name!(seq, i64),
            name!(log_id, Uuid),
            name!(occurred_at, TimestampWithTimeZone),
            name!(event_type, String),
            name!(user_id, String),
            name!(org_id, Option<String>),
            name!(ip, Option<Inet>),
            name!(account_key, String),
            name!(failures_in_window, Option<i32>),
            name!(while_locked, bool),
            name!(locked_account, bool),
            name!(lock_rule, Option<String>),
            name!(lock_count, Option<i32>),
            name!(locked_until, Option<TimestampWithTimeZone>),
            name!(permanent, Option<bool>),
            name!(ip_blocked_until, Option<TimestampWithTimeZone>),
            name!(ip_account_blocked_until, Option<TimestampWithTimeZone>),
            name!(preceding_failures, Option<i32>),
            name!(was_locked, Option<bool>),
            name!(failing_ips, Option<Vec<Inet>>),
            name!(enforced_lock_seq, Option<i64>),
        ),
    >,
    ErrorReport,
> {
    crate::legacy::sql()?;
    let access = scope::caller_reads(tenant_id);
    if access == CallerReads::Nothing {
        return Ok(TableIterator::new(Vec::new()));
    }
    let from_us = from_time.map_or(i64::MIN, time::unix_micros);
    let to_us = to_time.map_or(i64::MAX, time::unix_micros);
    let rows = Spi::connect_mut(|client| -> Result<Vec<Pending>, AuditError> {
        let rules = engine::rules(client, tenant_id)?;
        let fingerprint = snapshots::fingerprint(&rules);
        let mut run;
        let enforced;
        {
            let pin = Pinned::now();
            let enabled = from_us > i64::MIN && snapshots::enabled()?;
            let keeping = Keeping::answer(now_us(), from_us, enabled);
            let before = keeping.map(|_| from_us);
            run = Run::start(
                &pin,
                tenant_id,
                &rules,
                &fingerprint,
                before,
                to_us,
                keeping,
                from_us,
            )?;
            enforced = enforced_locks(&pin, tenant_id, from_us, to_us)?;
        }
        run.store_kept(client, tenant_id, &fingerprint, Made::Unchecked)?;
        let (recorded, inputs) = (&run.events.recorded, &run.events.inputs);
        let base = run.decisions_base.unwrap_or(0) as usize;
        let r = run.replayer.finish();
        let mut readable: HashMap<Option<String>, bool> = HashMap::new();
        let mut may_read = |org: &Option<String>| {
            access == CallerReads::Tenant
                || *readable
                    .entry(org.clone())
                    .or_insert_with(|| scope::caller_may_read(tenant_id, org.as_deref()))
        };
        let mut out = Vec::new();
        for (n, d) in r.decisions.iter().enumerate() {
            let (rec, input) = (&recorded[d.index], &inputs[d.index]);
            if input.at_us < from_us || !may_read(&rec.org) {
                continue;
            }
            let failing_ips = (input.kind == Kind::Success).then(|| {
                let mut ips: Vec<IpAddr> = d
                    .failing_sources
                    .iter()
                    .filter(|(_, org)| may_read(org))
                    .map(|(ip, _)| *ip)
                    .collect();
                ips.dedup();
                ips
            });
            let mut row = row(base + n, rec, &input.account, &d.effect);
            if !enforced.is_empty() {
                row.21 = enforced.get(&rec.log_id.to_string()).copied();
            }
            out.push(Pending {
                row,
                ip: rec.ip,
                failing_ips,
            });
        }
        Ok(out)
    })?;
    Ok(TableIterator::new(
        rows.into_iter()
            .map(Pending::with_inets)
            .collect::<Vec<_>>(),
    ))
}

/// The replay's account rows as `jsonb_to_recordset` reads them, each last
/// changed by the `lockout_rebuilt` event `(log_id, seq)`.
fn account_rows(r: &Replay<SourceKey>, rebuilt: &(String, i64)) -> Value {
    Value::Array(
        r.accounts
            .iter()
            .map(|(user, a)| {
                let s = a.state;
                json!({
                    "user_id": user,
                    "failure_count": s.failure_count,
                    "first_failure_at": s.first_failure_us.map(iso_utc),
                    "last_failure_at": s.last_failure_us.map(iso_utc),
                    "first_failure_ip": a.first_failure_ip.map(|i| i.to_string()),
                    "last_failure_ip": a.last_failure_ip.map(|i| i.to_string()),
                    "locked": s.locked,
                    "locked_at": s.locked_at_us.map(iso_utc),
                    "locked_until": s.locked_until_us.map(iso_utc),
                    "lock_count": s.lock_count,
                    "last_log_id": rebuilt.0,
                    "last_seq": rebuilt.1,
                    "org_id": a.org,
                    "failures_since_success": s.failures_since_success,
                })
            })
            .collect(),
    )
}

fn source_row(state: &authaudit_core::lockout::IpState) -> Value {
    json!({
        "failure_count": state.failure_count,
        "first_failure_at": state.first_failure_us.map(iso_utc),
        "blocked_until": state.blocked_until_us.map(iso_utc),
    })
}

fn with(mut v: Value, extra: Value) -> Value {
    if let (Value::Object(o), Value::Object(e)) = (&mut v, extra) {
        o.extend(e);
    }
    v
}

/// Re-derives a tenant's lockout state from its recorded events in
/// event-time order (see `lockout_replay`) and writes it into the lockout
/// tables: after history was imported, or the policy changed, the tables
/// hold what the engine would hold had every event arrived in time order.
/// Appends a `lockout_rebuilt` event with the counts (the rows' last
/// change). An existing account row keeps its organisation, and an account
/// of an organisation keeps its row (emptied when none of its events is
/// left). Holds only this tenant's lockout state, and only once its
/// history is replayed: live recording of the tenant waits while the
/// events committed meanwhile are applied and the tables written; other
/// tenants never wait. Callable by a superuser, an `authaudit_admin` or a
/// writer bound to the whole tenant (42501); needs READ COMMITTED (25000),
/// so that it sees every event committed before it holds the state.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn rebuild_lockout(
    tenant_id: &str,
) -> Result<
    TableIterator<
        'static,
        (
            name!(events, i64),
            name!(accounts, i64),
            name!(sources, i64),
            name!(pairs, i64),
        ),
    >,
    ErrorReport,
> {
    Ok(TableIterator::once(rebuild(tenant_id)?))
}

/// `rebuild_lockout`'s work, for `import_events` too: the numbers of events
/// replayed and of account, source and pair rows written.
pub fn rebuild(tenant: &str) -> Result<(i64, i64, i64, i64), AuditError> {
    crate::legacy::sql()?;
    if !scope::may_rebuild(tenant) {
        return Err(AuditError::NoRebuildScope {
            role: scope::role_name(scope::writer()),
            tenant: tenant.to_owned(),
        });
    }
    // SAFETY: a plain read of the transaction's isolation level.
    if unsafe { pg_sys::XactIsoLevel } >= pg_sys::XACT_REPEATABLE_READ as i32 {
        return Err(AuditError::RebuildNeedsReadCommitted);
    }
    Spi::connect_mut(|client| {
        let rules = engine::rules(client, tenant)?;
        let fingerprint = snapshots::fingerprint(&rules);
        let keeping = Keeping::rebuild(now_us(), snapshots::enabled()?);
        // The history committed so far, replayed from the latest snapshot
        // while live recording goes on.
        let mut run = Run::start(
            &Pinned::now(),
            tenant,
            &rules,
            &fingerprint,
            keeping.map(|_| i64::MAX),
            i64::MAX,
            keeping,
            i64::MAX,
        )?;
        // Then the tenant's state alone, and what was committed meanwhile:
        // newer events (live ones) are applied after the rest; an event
        // dated before the replayed ones (another import) makes the replay
        // start again, from the snapshot before it.
        heads::lock_tenant_state(tenant, StateAccess::Rebuild);
        let pin = Pinned::now();
        let mut newer = Vec::new();
        load_after(&pin, tenant, run.visible, &rules.keys, |rec, input| {
            newer.push((rec, input))
        })?;
        if newer.first().is_none_or(|(_, e)| run.replayer.follows(e)) {
            for (rec, input) in newer {
                run.feed(rec, input);
            }
        } else {
            run = Run::start(
                &pin,
                tenant,
                &rules,
                &fingerprint,
                keeping.map(|_| i64::MAX),
                i64::MAX,
                keeping,
                i64::MAX,
            )?;
        }
        drop(pin);
        run.store_kept(client, tenant, &fingerprint, Made::UnderRebuild)?;
        let events = run.replayer.applied() as i64;
        let r = run.replayer.finish();
        let counts = (
            events,
            r.accounts.len() as i64,
            r.sources.len() as i64,
            r.pairs.len() as i64,
        );
        let rebuilt = record_rebuild(client, tenant, counts)?;
        let replacement = state_tables::Replacement {
            accounts: account_rows(&r, &rebuilt),
            sources: Value::Array(
                r.sources
                    .iter()
                    .map(|(k, s)| with(source_row(s), json!({"ip": k.inet_text()})))
                    .collect(),
            ),
            pairs: Value::Array(
                r.pairs
                    .iter()
                    .map(|((k, user), s)| {
                        with(source_row(s), json!({"ip": k.inet_text(), "user_id": user}))
                    })
                    .collect(),
            ),
        };
        state_tables::replace_tenant(client, tenant, &replacement)?;
        Ok(counts)
    })
}

/// Appends the `lockout_rebuilt` event (who rebuilt, how much) to the
/// tenant's chain through the recording pipeline, so the log shows every
/// rebuild, and returns its `(log_id, seq)`: the rebuilt rows' last change,
/// newer than any before (the mirror applies a state row's changes in
/// `last_seq` order).
fn record_rebuild(
    client: &mut SpiClient<'_>,
    tenant: &str,
    (events, accounts, sources, pairs): (i64, i64, i64, i64),
) -> Result<(String, i64), AuditError> {
    let actor = scope::role_name(scope::writer());
    let metadata = json!({"_authaudit": {"rebuild": {
        "events": events, "accounts": accounts, "sources": sources, "pairs": pairs,
    }}});
    let log_id = random_uuid();
    let event = Args {
        log_id: Some(log_id),
        tenant: Some(tenant),
        org: None,
        event_type: Some("lockout_rebuilt"),
        user: Some(&actor),
        channel: Some("system"),
        ip: None,
        user_agent: None,
        occurred_at: None,
        metadata: Some(Jsonb::parse(&metadata.to_string())),
    }
    .check(now_us(), Mode::Live)?;
    let recorded = pipeline::record(
        client,
        Request {
            events: vec![event],
            writer_orgs: vec![None],
            mode: Mode::Live,
            single: true,
            keep: None,
        },
    )?;
    Ok((log_id.to_string(), recorded.seqs[0]))
}

/// A random (version 4) UUID.
fn random_uuid() -> Uuid {
    let mut b = [0u8; 16];
    // SAFETY: fills the 16 bytes of `b`.
    let ok = unsafe { pg_sys::pg_strong_random(b.as_mut_ptr().cast(), b.len()) };
    assert!(ok, "no strong random source");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Uuid::from_bytes(b)
}

/// `import_events`' first step when it rebuilds: holds the lockout state
/// of each of `tenants` alone, as the rebuild will, before the batch is
/// chained. Live recorders of these tenants then wait for the import to
/// end. Taken after the batch, the hold would wait for live recorders that
/// appended after the batch, and they wait for the import's commit (the
/// chain's commit order): a deadlock. A tenant the caller may not rebuild
/// (or a malformed one) is not held: the import or the rebuild refuses it
/// afterwards, with its own error, as without the hold.
#[pg_extern(volatile, parallel_unsafe, name = "_hold_for_rebuild")]
fn hold_for_rebuild(tenants: Vec<String>) -> i64 {
    let mut tenants = tenants;
    tenants.sort();
    tenants.dedup();
    tenants.retain(|t| {
        authaudit_core::event::check_scope_id("tenant_id", t).is_ok() && scope::may_rebuild(t)
    });
    for t in &tenants {
        heads::lock_tenant_state(t, StateAccess::Rebuild);
    }
    tenants.len() as i64
}

/// `import_events`' rebuild: re-derives the lockout state of each of
/// `tenants` once (the batch's tenants, repeated or not).
#[pg_extern(volatile, parallel_unsafe, name = "_rebuild_after_import")]
fn rebuild_after_import(tenants: Vec<String>) -> Result<i64, ErrorReport> {
    let mut tenants = tenants;
    tenants.sort();
    tenants.dedup();
    for t in &tenants {
        rebuild(t)?;
    }
    Ok(tenants.len() as i64)
}
