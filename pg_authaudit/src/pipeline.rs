//! The recording pipeline: every event, single or in a batch, live or
//! imported, a writer's or the extension's own, goes from its checked form
//! (`record::Event`) to its chained row here, in one pass
//! (docs/architecture.md, "Recording"). A single event is a batch of one.
//!
//! 1. each lockout event's keys under its tenant's rules
//!    (`lockout_engine::KeyRules`);
//! 2. an organisation's writer reaches only its organisation's accounts
//!    (checked before anything is locked for a batch, and again under the
//!    row locks); history an organisation's writer imports claims its
//!    accounts;
//! 3. the log ids recorded already (a batch: a retry changes nothing);
//! 4. each tenant's lockout state held against a rebuild
//!    (`heads::lock_tenant_state`), then every state row the call touches
//!    locked in one order (`state_tables`);
//! 5. per tenant, in input order: the engine's decision
//!    (`authaudit_core::lockout_effect::step`) on the states in memory, the
//!    canonical body, the chain append (`heads`), and for a failure that
//!    locks its account, the `account_locked` event as the next link;
//! 6. once every link of the call is chained, the tenants released to the
//!    next writers when no append of this transaction can follow
//!    (`heads::release_after_last_append`); the rows inserted without a
//!    statement (`row_writes`), then each changed state row written once;
//!    lockout events that may lie behind a lockout snapshot (imported, or
//!    older than a day) invalidate it (`snapshots::Behind`).
//!
//! A single event keeps `record_event`'s semantics for a log id another
//! session is recording at the same moment: it takes the log id's lock
//! first (`heads::lock_log_id`), so it waits for that session and then finds
//! its row (a retry: returned, or other content refused, 23505); a batch
//! refuses it (40001), since its other events' effects were decided
//! without it.

use crate::error::AuditError;
use crate::heads::{self, StateAccess};
use crate::lockout_engine::{self as engine, LockedAccount, Rules};
use crate::record::{
    body, check_reach, existing, final_metadata, insert_unseen_log_row, lock_metadata, now_us,
    with_keys, Event, LogRow, Mode,
};
use crate::row_writes::Target;
use crate::snapshots;
use crate::spi_plans::{self, Plans};
use crate::sql_values::{Inet, Jsonb};
use crate::state_rows::{Probe, Read};
use crate::state_tables::{self, AccountKey, Needs, States};
use authaudit_core::chain::ChainHead;
use authaudit_core::event::{Channel, EventType};
use authaudit_core::identity::SourceKey;
use authaudit_core::lockout::derived_log_id;
use authaudit_core::lockout_effect::{step, Kind};
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use pgrx::datum::Uuid;
use pgrx::pg_sys;
use pgrx::pg_sys::BuiltinOid::TEXTARRAYOID;
use pgrx::spi::SpiClient;
use pgrx::{IntoDatum, PgMemoryContexts};
use serde_json::Map;
use std::collections::BTreeMap;

/// What a call records, and how.
pub struct Request<'e> {
    /// Checked events, in input order.
    pub events: Vec<Event<'e>>,
    /// Per event, the organisation its writer is confined to (`None`: the
    /// whole tenant, or the extension itself).
    pub writer_orgs: Vec<Option<String>>,
    pub mode: Mode,
    /// One event, as `record_event` records it (see the module comment).
    pub single: bool,
    /// Where the stored rows are kept for the caller (`None`: not needed).
    pub keep: Option<pg_sys::MemoryContext>,
}

/// What a call recorded, in input order: each event's log id and seq, and,
/// with `keep`, its stored row (a composite datum allocated there), a
/// retry's row as recorded before.
pub struct Recorded {
    pub ids: Vec<Uuid>,
    pub seqs: Vec<i64>,
    pub rows: Vec<pg_sys::Datum>,
}

/// The keys a lockout event counts against (`lockout_engine::KeyRules`).
struct Keys {
    account: String,
    source: Option<SourceKey>,
}

/// A row to insert.
struct NewRow {
    log_id: Uuid,
    tenant: String,
    org: Option<String>,
    seq: i64,
    event_type: &'static str,
    user: String,
    ip: Option<Inet>,
    user_agent: Option<String>,
    channel: &'static str,
    occurred_at_us: i64,
    recorded_at_us: i64,
    metadata: Jsonb,
    prev: ChainHead,
    next: ChainHead,
    /// The event's position in the input (`None`: an `account_locked` the
    /// engine appended).
    input: Option<usize>,
}

/// Records `req.events` (see the module comment).
pub fn record(client: &mut SpiClient<'_>, req: Request<'_>) -> Result<Recorded, AuditError> {
    crate::legacy::sql()?;
    let Request {
        events,
        writer_orgs,
        mode,
        single,
        keep,
    } = req;
    // On Citus, the call's rows go to its tenant's shards on this node.
    let _shards = match events.first() {
        Some(first) if crate::placement::distributed()? => {
            if let Some(other) = events.iter().find(|e| e.tenant != first.tenant) {
                return Err(AuditError::TenantsAcrossShards(
                    first.tenant.to_owned(),
                    other.tenant.to_owned(),
                ));
            }
            crate::placement::enter(first.tenant)?
        }
        _ => None,
    };
    let mut rules: HashMap<String, Rules> = HashMap::new();
    let mut keys = event_keys(client, &events, &mut rules)?;
    if !single {
        // A batch refuses a foreign account before it locks anything.
        refuse_foreign_accounts(client, &events, &keys, &writer_orgs)?;
    }
    if mode == Mode::Import {
        claim_accounts(&events, &keys, &writer_orgs)?;
        // History changes no state now: rebuild_lockout applies it in
        // event-time order.
        keys.iter_mut().for_each(|k| *k = None);
    }
    if single {
        // Another session recording this log id finishes first: its row is
        // then found below (a retry), and nothing is appended.
        heads::lock_log_id(events[0].tenant, events[0].log_id.as_bytes());
    }
    let recorded = recorded_ids(&events)?;
    // Each tenant's lockout state is held against a rebuild, in one order;
    // then every state row, in one order.
    let mut needs = Needs::default();
    let mut tenants: Vec<&str> = Vec::new();
    for (e, k) in events.iter().zip(&keys) {
        if let (Some(kind), Some(k)) = (Kind::of(e.event_type.as_str()), k) {
            tenants.push(e.tenant);
            needs.add(e.tenant, kind, &k.account, k.source, e.org);
        }
    }
    tenants.sort_unstable();
    tenants.dedup();
    for t in tenants {
        heads::lock_tenant_state(t, StateAccess::Record);
    }
    // Live lockout events older than this (read after the state is held)
    // may lie behind a lockout snapshot; imported ones always may.
    let snapshot_margin = now_us() - snapshots::MARGIN_US;
    let mut behind = snapshots::Behind::default();
    let mut states = States::lock(&needs)?;

    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by(|a, b| events[*a].tenant.cmp(events[*b].tenant).then(a.cmp(b)));
    let mut first_seen: HashMap<(&str, [u8; 16]), usize> = HashMap::new();
    let mut stored: HashMap<(&str, [u8; 16]), (i64, Option<pg_sys::Datum>)> = HashMap::new();
    let mut rows: Vec<NewRow> = Vec::with_capacity(events.len());
    for i in order {
        let e = &events[i];
        let id = (e.tenant, *e.log_id.as_bytes());
        if recorded.contains(&id) {
            let row = existing(client, e)?;
            stored.insert(id, keep_row(row, keep)?);
            continue;
        }
        if let Some(&j) = first_seen.get(&id) {
            if !same_event(&events[j], e) {
                return Err(AuditError::LogIdReused(e.log_id.to_string()));
            }
            continue;
        }
        first_seen.insert(id, i);
        let mut facts = e.facts.clone();
        let mut lock = None;
        let mut account_changed = false;
        let kind = Kind::of(e.event_type.as_str());
        let k = keys[i].as_ref();
        let account_key: AccountKey = (
            e.tenant.to_owned(),
            k.map_or_else(|| e.user.to_owned(), |k| k.account.clone()),
        );
        if let (Some(kind), Some(k)) = (kind, k) {
            let policy = rules[e.tenant].policy;
            check_reach(e, writer_orgs[i].as_deref(), states.account(&account_key))?;
            let counts_ip = kind.counts_ip(e.ip.is_some());
            let source = k
                .source
                .filter(|_| counts_ip)
                .map(|s| (e.tenant.to_owned(), s));
            let pair = k
                .source
                .filter(|_| counts_ip)
                .map(|s| (e.tenant.to_owned(), s, k.account.clone()));
            let before = states.before(&account_key, source.as_ref(), pair.as_ref());
            let effect = step(&policy, kind, &before, e.occurred_at_us);
            facts.insert(
                "lockout".into(),
                with_keys(effect.facts.clone(), e.user, &k.account, e.ip, k.source),
            );
            lock = effect.lock;
            account_changed = states.apply(kind, &account_key, source, pair, e.ip, &effect);
        }
        let (metadata, text) = final_metadata(e, &facts);
        let (seq, prev, next) = heads::append(e.tenant, &body(e, &text))?;
        if kind.is_some() && (mode == Mode::Import || e.occurred_at_us < snapshot_margin) {
            behind.add(e.tenant, seq, e.occurred_at_us);
        }
        if account_changed {
            states.changed_by(&account_key, e.log_id, seq);
        }
        rows.push(new_row(e, metadata, seq, prev, next, Some(i)));
        if let Some(lock) = lock {
            // The lock is the next link, with an id derived from the failure's.
            let id = Uuid::from_bytes(derived_log_id(e.log_id.as_bytes(), "account_locked"));
            let locked = Event {
                log_id: id,
                tenant: e.tenant,
                org: e.org,
                event_type: EventType::AccountLocked,
                user: e.user,
                channel: Channel::SYSTEM,
                ip: e.ip,
                user_agent: None,
                occurred_given: true,
                occurred_at_us: e.occurred_at_us,
                recorded_at_us: now_us(),
                metadata: lock_metadata(&lock, &e.log_id, e.user, &account_key.1),
                metadata_text: String::new(),
                facts: Map::new(),
            };
            let (metadata, text) = (locked.metadata, locked.metadata.text());
            let (seq, prev, next) = heads::append(e.tenant, &body(&locked, &text))?;
            rows.push(new_row(&locked, metadata, seq, prev, next, None));
        }
    }
    // Every link of the call is chained: other sessions may append to these
    // tenants while the rows go in (when no append of this transaction can
    // follow).
    heads::release_after_last_append();
    let inserted = insert_rows(&rows, keep)?;
    states.write()?;
    behind.record(client)?;
    for (r, d) in rows.iter().filter(|r| r.input.is_some()).zip(
        inserted
            .into_iter()
            .map(Some)
            .chain(std::iter::repeat(None)),
    ) {
        let e = &events[r.input.expect("an input event")];
        stored.insert((e.tenant, *e.log_id.as_bytes()), (r.seq, d));
    }
    let mut out = Recorded {
        ids: Vec::with_capacity(events.len()),
        seqs: Vec::with_capacity(events.len()),
        rows: Vec::new(),
    };
    for e in &events {
        let (seq, d) = stored[&(e.tenant, *e.log_id.as_bytes())];
        out.ids.push(e.log_id);
        out.seqs.push(seq);
        if let Some(d) = d {
            out.rows.push(d);
        }
    }
    Ok(out)
}

/// A stored row's seq and, with `keep`, its datum copied there.
fn keep_row(
    row: crate::record::Row,
    keep: Option<pg_sys::MemoryContext>,
) -> Result<(i64, Option<pg_sys::Datum>), AuditError> {
    let seq = row
        .get_by_name::<i64>("seq")
        .ok()
        .flatten()
        .unwrap_or_default();
    let datum = keep.map(|ctx| in_context(ctx, || row.into_datum()).expect("a row datum"));
    Ok((seq, datum))
}

/// Each event's keys (`None`: not a lockout event), by its tenant's rules.
fn event_keys(
    client: &mut SpiClient<'_>,
    events: &[Event<'_>],
    rules: &mut HashMap<String, Rules>,
) -> Result<Vec<Option<Keys>>, AuditError> {
    let mut keys = Vec::with_capacity(events.len());
    for e in events {
        let Some(kind) = Kind::of(e.event_type.as_str()) else {
            keys.push(None);
            continue;
        };
        let r = match rules.get(e.tenant) {
            Some(r) => *r,
            None => {
                let r = engine::rules(client, e.tenant)?;
                rules.insert(e.tenant.to_owned(), r);
                r
            }
        };
        keys.push(Some(Keys {
            account: r.keys.account(e.user).into_owned(),
            source: e
                .ip
                .filter(|_| kind.counts_ip(true))
                .map(|ip| r.keys.source_key(ip)),
        }));
    }
    Ok(keys)
}

/// `f`'s result, allocated in memory context `ctx` (one that outlives the
/// call).
fn in_context<T>(ctx: pg_sys::MemoryContext, f: impl FnOnce() -> T) -> T {
    // SAFETY: `ctx` is a valid context for the rest of the call; the
    // previous context is restored after `f`.
    unsafe { PgMemoryContexts::For(ctx).switch_to(|_| f()) }
}

/// A second event of the batch under one log id repeats the first exactly.
fn same_event(a: &Event<'_>, b: &Event<'_>) -> bool {
    a.tenant == b.tenant
        && a.org == b.org
        && a.event_type == b.event_type
        && a.user == b.user
        && a.channel == b.channel
        && a.ip.map(|i| (i.addr, i.prefix)) == b.ip.map(|i| (i.addr, i.prefix))
        && a.user_agent == b.user_agent
        && a.metadata.same_as(b.metadata)
        && (!b.occurred_given || a.occurred_at_us == b.occurred_at_us)
}

fn texts<'a, T: 'a>(items: impl Iterator<Item = &'a T>, f: impl Fn(&T) -> String) -> Vec<String> {
    items.map(f).collect()
}

/// A batch's organisation writers reach accounts of their organisation only:
/// refused (42501) before anything is locked.
fn refuse_foreign_accounts(
    client: &mut SpiClient<'_>,
    events: &[Event<'_>],
    keys: &[Option<Keys>],
    writer_orgs: &[Option<String>],
) -> Result<(), AuditError> {
    let account = |i: usize| {
        keys[i]
            .as_ref()
            .map_or_else(|| events[i].user.to_owned(), |k| k.account.clone())
    };
    let confined: Vec<usize> = (0..events.len())
        .filter(|i| writer_orgs[*i].is_some())
        .collect();
    if confined.is_empty() {
        return Ok(());
    }
    let tenants = texts(confined.iter(), |i| events[*i].tenant.to_owned());
    let users = texts(confined.iter(), |i| account(*i));
    let table = spi_plans::run_with(
        client,
        "batch_account_orgs",
        "SELECT s.tenant_id, s.user_id, s.org_id FROM authaudit.lockout_state s \
           JOIN unnest($1::text[], $2::text[]) AS k(t, u) ON s.tenant_id = k.t AND s.user_id = k.u",
        &[TEXTARRAYOID, TEXTARRAYOID],
        &[tenants.into(), users.into()],
        Plans::PerCall,
    )?;
    let mut orgs: HashMap<AccountKey, Option<String>> = HashMap::new();
    for r in table {
        orgs.insert(
            (r.get(1)?.unwrap_or_default(), r.get(2)?.unwrap_or_default()),
            r.get(3)?,
        );
    }
    for i in confined {
        let e = &events[i];
        if let Some(org) = orgs.get(&(e.tenant.to_owned(), account(i))) {
            let account = LockedAccount {
                state: Default::default(),
                org: org.clone(),
                tid: None,
            };
            check_reach(e, writer_orgs[i].as_deref(), Some(&account))?;
        }
    }
    Ok(())
}

/// An organisation's writer claims the accounts it imports for its
/// organisation, as its live events would (`state_tables::claim`), and is
/// refused (42501) an account another organisation holds.
fn claim_accounts(
    events: &[Event<'_>],
    keys: &[Option<Keys>],
    writer_orgs: &[Option<String>],
) -> Result<(), AuditError> {
    let mut claims: BTreeMap<AccountKey, String> = BTreeMap::new();
    let mut first: BTreeMap<AccountKey, usize> = BTreeMap::new();
    for (i, (e, k)) in events.iter().zip(keys).enumerate() {
        if let (Some(k), Some(org)) = (k, &writer_orgs[i]) {
            let key = (e.tenant.to_owned(), k.account.clone());
            first.entry(key.clone()).or_insert(i);
            claims.entry(key).or_insert_with(|| org.clone());
        }
    }
    let held = state_tables::claim(&claims)?;
    for (key, account) in claims.keys().zip(&held) {
        let i = first[key];
        check_reach(&events[i], writer_orgs[i].as_deref(), Some(account))?;
    }
    Ok(())
}

/// The (tenant, log id) keys of `events` that are recorded already.
fn recorded_ids<'e>(events: &[Event<'e>]) -> Result<HashSet<(&'e str, [u8; 16])>, AuditError> {
    let mut probe = Probe::open(c"auth_log", c"auth_log_pkey")?;
    let mut found = HashSet::new();
    for e in events {
        let id = e.log_id.into_datum().expect("a uuid");
        let key = [engine::datum(e.tenant), id];
        if probe.find(&key, Read::Plain, |_| ())?.is_some() {
            found.insert((e.tenant, *e.log_id.as_bytes()));
        }
    }
    Ok(found)
}

fn new_row(
    e: &Event<'_>,
    metadata: Jsonb,
    seq: i64,
    prev: ChainHead,
    next: ChainHead,
    input: Option<usize>,
) -> NewRow {
    NewRow {
        log_id: e.log_id,
        tenant: e.tenant.to_owned(),
        org: e.org.map(str::to_owned),
        seq,
        event_type: e.event_type.as_str(),
        user: e.user.to_owned(),
        ip: e.ip,
        user_agent: e.user_agent.map(str::to_owned),
        channel: e.channel.as_str(),
        occurred_at_us: e.occurred_at_us,
        recorded_at_us: e.recorded_at_us,
        metadata,
        prev,
        next,
        input,
    }
}

/// Inserts `rows` (their log ids were looked up before: one another
/// session committed meanwhile refuses the call, 40001); with `keep`,
/// returns the stored rows of the call's own events (composite datums
/// allocated there), in order.
fn insert_rows(
    rows: &[NewRow],
    keep: Option<pg_sys::MemoryContext>,
) -> Result<Vec<pg_sys::Datum>, AuditError> {
    let mut stored = Vec::new();
    if rows.is_empty() {
        return Ok(stored);
    }
    let mut target = Target::open(c"auth_log")?;
    for r in rows {
        let row = LogRow {
            log_id: r.log_id,
            tenant: &r.tenant,
            org: r.org.as_deref(),
            seq: r.seq,
            event_type: r.event_type,
            user: &r.user,
            ip: r.ip,
            user_agent: r.user_agent.as_deref(),
            channel: r.channel,
            occurred_at_us: r.occurred_at_us,
            recorded_at_us: r.recorded_at_us,
            metadata: r.metadata,
            prev: &r.prev,
            next: &r.next,
        };
        if !insert_unseen_log_row(&mut target, &row)? {
            // A log id was committed by another session meanwhile (a batch,
            // which takes no log-id lock, or after this REPEATABLE READ
            // snapshot): the error undoes the call (its appends and its
            // lockout changes).
            return Err(AuditError::ConcurrentLogId(r.log_id.to_string()));
        }
        if let (Some(ctx), Some(_)) = (keep, r.input) {
            stored.push(in_context(ctx, || target.inserted()));
        }
    }
    Ok(stored)
}
