//! `record_events`: the recording pipeline over a batch, set-wise. The
//! events are read from the JSON array in place (`batch_input.rs`), checked and
//! authorised in input order before anything is locked or written. Then
//! every state row the batch touches is locked in one order (accounts, then
//! source IPs), each tenant's events are chained in input order with their
//! lockout effects decided in memory, and the rows and the changed states
//! are written without statements (`row_writes.rs`), one open target per
//! table.
//!
//! Per event the semantics are those of `record_event`: a log id recorded
//! before (or earlier in the batch) with the same content is a retry and
//! changes nothing; with other content the batch is refused (23505); a
//! failure that locks its account is followed by the `account_locked` event.

use crate::batch_input;
use crate::error::AuditError;
use crate::heads::{self, StateAccess};
use crate::lockout_engine::{self as engine, LockedAccount, Rules};
use crate::record::{
    body, check_reach, existing, final_metadata, insert_unseen_log_row, lock_metadata, now_us,
    with_keys, Args, Event, LogRow, Mode, Row,
};
use crate::row_writes::Target;
use crate::spi_plans::{self, Plans};
use crate::sql_values::{Inet, Jsonb, Tid};
use crate::state_rows::{Probe, Read};
use crate::{gucs, scope};
use authaudit_core::chain::ChainHead;
use authaudit_core::event::{Channel, EventType};
use authaudit_core::identity::SourceKey;
use authaudit_core::lockout::{derived_log_id, IpState};
use authaudit_core::lockout_effect::{step, Before, Kind};
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use pgrx::datum::{TimestampWithTimeZone, Uuid};
use pgrx::pg_sys;
use pgrx::pg_sys::BuiltinOid::TEXTARRAYOID;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{direct_function_call, FromDatum, IntoDatum, PgMemoryContexts};
use serde_json::Map;
use std::collections::BTreeMap;
use std::ffi::CString;

fn cstring(s: &str) -> CString {
    // Text from jsonb holds no NUL (PostgreSQL refuses \u0000 in text).
    CString::new(s).unwrap_or_default()
}

/// `text::uuid`, raising the cast's error (22P02).
fn to_uuid(s: &str) -> Uuid {
    let c = cstring(s);
    // SAFETY: uuid_in takes a C string valid for the call.
    unsafe {
        direct_function_call::<Uuid>(pg_sys::uuid_in, &[Some(pg_sys::Datum::from(c.as_ptr()))])
    }
    .expect("uuid_in returns a value")
}

/// `text::timestamptz`, raising the cast's error.
fn to_timestamptz(s: &str) -> TimestampWithTimeZone {
    let c = cstring(s);
    // SAFETY: timestamptz_in takes a C string, the type's oid and a typmod.
    unsafe {
        direct_function_call::<TimestampWithTimeZone>(
            pg_sys::timestamptz_in,
            &[
                Some(pg_sys::Datum::from(c.as_ptr())),
                pg_sys::TIMESTAMPTZOID.into_datum(),
                (-1i32).into_datum(),
            ],
        )
    }
    .expect("timestamptz_in returns a value")
}

/// An account's state row while the batch runs.
struct AccountRow {
    locked: LockedAccount,
    /// The new `first_failure_ip` (`None`: unchanged).
    first_ip: Option<Option<Inet>>,
    /// The new `last_failure_ip` (`None`: unchanged).
    last_ip: Option<Inet>,
    last: Option<(Uuid, i64)>,
    changed: bool,
}

/// An IP or (IP, account) state while the batch runs, with its row's
/// position (`None`: a pair without a row yet).
struct SourceRow {
    state: IpState,
    tid: Option<Tid>,
    changed: bool,
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
    /// The event's position in the batch (`None`: an `account_locked` the
    /// engine appended).
    input: Option<usize>,
}

type AccountKey = (String, String);
type IpKey = (String, SourceKey);
type PairKey = (String, SourceKey, String);

/// The keys a lockout event counts against (`lockout_engine::KeyRules`).
struct Keys {
    account: String,
    source: Option<SourceKey>,
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

/// Records `events` and returns the stored rows in input order (a retry's
/// row as recorded before). The writer must be bound to every event's
/// tenant and organisation; the SQLSTATEs are `record_event`'s and
/// `docs/sql-reference.md`'s for a batch.
#[pg_extern(volatile, parallel_unsafe, security_definer, name = "record_events")]
#[search_path(pg_catalog, pg_temp)]
fn record_events_rows(
    events: Option<Jsonb>,
) -> Result<
    SetOfIterator<'static, pgrx::composite_type!('static, "auth_log")>,
    pgrx::pg_sys::panic::ErrorReport,
> {
    // The rows are kept in the context the set is returned from.
    let keep = PgMemoryContexts::CurrentMemoryContext.value();
    let (_, stored) = Spi::connect_mut(|client| run(client, events, Mode::Live, Some(keep)))?;
    Ok(SetOfIterator::new(stored.into_iter().map(|d| {
        // SAFETY: a composite datum of auth_log's row type, allocated in
        // the set's context.
        unsafe { Row::from_datum(d, false) }.expect("a stored row")
    })))
}

/// Records `events`; returns their log ids in input order (the library's
/// side of `record_events` before release 0.8.0).
#[pg_extern(volatile, parallel_unsafe, name = "_record_events")]
fn record_events(events: Option<Jsonb>) -> Result<Vec<Uuid>, pgrx::pg_sys::panic::ErrorReport> {
    Ok(Spi::connect_mut(|client| run(client, events, Mode::Live, None))?.0)
}

/// Records `events` as history (`Mode::Import`); returns their log ids in
/// input order.
#[pg_extern(volatile, parallel_unsafe, name = "_import_events")]
fn import_events(events: Option<Jsonb>) -> Result<Vec<Uuid>, pgrx::pg_sys::panic::ErrorReport> {
    Ok(Spi::connect_mut(|client| run(client, events, Mode::Import, None))?.0)
}

/// Records `events`: their log ids in input order and, with `keep`, their
/// stored rows (composite datums allocated in `keep`), in input order.
fn run(
    client: &mut SpiClient<'_>,
    events: Option<Jsonb>,
    mode: Mode,
    keep: Option<pg_sys::MemoryContext>,
) -> Result<(Vec<Uuid>, Vec<pg_sys::Datum>), AuditError> {
    let events = events.ok_or(AuditError::BatchNotArray)?;
    let raws = batch_input::read(events, gucs::MAX_BATCH_EVENTS.get())?;
    // Each event's shape and the writer's right to it, in input order.
    let mut ids = Vec::with_capacity(raws.len());
    let mut writer_orgs = Vec::with_capacity(raws.len());
    for r in &raws {
        let reserved = r.metadata.is_some_and(|m| m.has_key("_authaudit"));
        writer_orgs.push(scope::authorise(
            r.tenant.as_deref(),
            r.org.as_deref(),
            r.event_type.as_deref(),
            r.channel.as_deref(),
            reserved,
        )?);
        ids.push(r.log_id.as_deref().map(to_uuid));
    }
    // Every event rule, still before anything is locked.
    let mut checked = Vec::with_capacity(raws.len());
    for (r, id) in raws.iter().zip(&ids) {
        checked.push(
            Args {
                log_id: *id,
                tenant: r.tenant.as_deref(),
                org: r.org.as_deref(),
                event_type: r.event_type.as_deref(),
                user: r.user.as_deref(),
                channel: r.channel.as_deref(),
                ip: r.ip.as_deref().map(Inet::parse),
                user_agent: r.user_agent.as_deref(),
                occurred_at: r.occurred_at.as_deref().map(to_timestamptz),
                metadata: r.metadata,
            }
            .check(now_us(), mode)?,
        );
    }
    // An organisation's writer affects accounts of its organisation only
    // (checked again under the row locks).
    let mut rules: HashMap<String, Rules> = HashMap::new();
    let mut keys = event_keys(client, &checked, &mut rules)?;
    refuse_foreign_accounts(client, &checked, &keys, &writer_orgs)?;
    if mode == Mode::Import {
        // An organisation's writer claims the accounts it imports for its
        // organisation, as its live events would.
        claim_accounts(client, &checked, &keys, &writer_orgs)?;
        // History changes no state now: rebuild_lockout applies it in
        // event-time order.
        keys.iter_mut().for_each(|k| *k = None);
    }
    let recorded = recorded_ids(&checked)?;
    // Each tenant's lockout state is held against a rebuild, in one order.
    let mut tenants: Vec<&str> = checked
        .iter()
        .zip(&keys)
        .filter(|(_, k)| k.is_some())
        .map(|(e, _)| e.tenant)
        .collect();
    tenants.sort_unstable();
    tenants.dedup();
    for t in tenants {
        heads::lock_tenant_state(t, StateAccess::Record);
    }
    let mut accounts = lock_accounts(client, &checked, &keys)?;
    let mut ips = lock_ips(client, &checked, &keys)?;
    let mut pairs = read_pairs(&checked, &keys)?;

    let mut order: Vec<usize> = (0..checked.len()).collect();
    order.sort_by(|a, b| checked[*a].tenant.cmp(checked[*b].tenant).then(a.cmp(b)));
    let mut first_seen: HashMap<(&str, [u8; 16]), usize> = HashMap::new();
    let mut stored: HashMap<(&str, [u8; 16]), pg_sys::Datum> = HashMap::new();
    let mut rows: Vec<NewRow> = Vec::with_capacity(checked.len());
    for i in order {
        let e = &checked[i];
        let id = (e.tenant, *e.log_id.as_bytes());
        if recorded.contains(&id) {
            let row = existing(client, e)?;
            if let Some(ctx) = keep {
                let d = in_context(ctx, || row.into_datum()).expect("a row datum");
                stored.insert(id, d);
            }
            continue;
        }
        if let Some(&j) = first_seen.get(&id) {
            if !same_event(&checked[j], e) {
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
        let account_key = (
            e.tenant.to_owned(),
            k.map_or_else(|| e.user.to_owned(), |k| k.account.clone()),
        );
        if let (Some(kind), Some(k)) = (kind, k) {
            let policy = rules[e.tenant].policy;
            let account = accounts.get(&account_key);
            check_reach(e, writer_orgs[i].as_deref(), account.map(|a| &a.locked))?;
            let ip_key = k.source.map(|s| (e.tenant.to_owned(), s));
            let pair_key = k
                .source
                .map(|s| (e.tenant.to_owned(), s, k.account.clone()));
            let counts_ip = kind.counts_ip(e.ip.is_some());
            let before = Before {
                account: account.map(|a| a.locked.state).unwrap_or_default(),
                ip: counts_ip.then(|| {
                    ips.get(ip_key.as_ref().expect("an IP"))
                        .map_or_else(IpState::default, |s| s.state)
                }),
                pair: counts_ip.then(|| {
                    pairs
                        .get(pair_key.as_ref().expect("an IP"))
                        .map_or_else(IpState::default, |s| s.state)
                }),
            };
            let effect = step(&policy, kind, &before, e.occurred_at_us);
            facts.insert(
                "lockout".into(),
                with_keys(effect.facts.clone(), e.user, &k.account, e.ip, k.source),
            );
            lock = effect.lock;
            // The states change in memory; their rows are written at the end.
            if let Some(next) = effect.account {
                let row = accounts
                    .get_mut(&account_key)
                    .expect("a failure's account row was created and locked");
                row.locked.state = next;
                let failure_ip = e.ip.filter(|_| kind == Kind::Failure);
                if next.failure_count == 0 {
                    row.first_ip = Some(None);
                } else if next.failure_count == 1 && failure_ip.is_some() {
                    row.first_ip = Some(failure_ip);
                }
                if failure_ip.is_some() {
                    row.last_ip = failure_ip;
                }
                row.changed = true;
                account_changed = true;
            }
            if let (Some(next), Some(k)) = (effect.ip, ip_key) {
                changes(&mut ips, k, next);
            }
            if let (Some(next), Some(k)) = (effect.pair, pair_key) {
                changes(&mut pairs, k, next);
            }
        }
        let (metadata, text) = final_metadata(e, &facts);
        let (seq, prev, next) = heads::append(e.tenant, &body(e, &text))?;
        if account_changed {
            if let Some(row) = accounts.get_mut(&account_key) {
                row.last = Some((e.log_id, seq));
            }
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
    let inserted = insert_rows(&rows, keep)?;
    write_accounts(&accounts)?;
    write_ips(&ips)?;
    write_pairs(&pairs)?;
    let ids = checked.iter().map(|e| e.log_id).collect();
    if keep.is_none() {
        return Ok((ids, Vec::new()));
    }
    for (i, d) in rows.iter().filter_map(|r| r.input).zip(inserted) {
        stored.insert((checked[i].tenant, *checked[i].log_id.as_bytes()), d);
    }
    let rows = checked
        .iter()
        .map(|e| stored[&(e.tenant, *e.log_id.as_bytes())])
        .collect();
    Ok((ids, rows))
}

/// `f`'s result, allocated in memory context `ctx` (one that outlives the
/// call: the set's).
fn in_context<T>(ctx: pg_sys::MemoryContext, f: impl FnOnce() -> T) -> T {
    // SAFETY: `ctx` is a valid context for the rest of the call; the
    // previous context is restored after `f`.
    unsafe { PgMemoryContexts::For(ctx).switch_to(|_| f()) }
}

/// Sets the state of row `key` (its position kept) in memory.
fn changes<K: std::hash::Hash + Eq>(rows: &mut HashMap<K, SourceRow>, key: K, next: IpState) {
    let row = rows.entry(key).or_insert(SourceRow {
        state: next,
        tid: None,
        changed: true,
    });
    row.state = next;
    row.changed = true;
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

/// Creates, for the history an organisation's writer imports, the account
/// rows that do not exist yet, belonging to the writer's organisation (in
/// one order, without locking them: a rebuild applies the history later),
/// and refuses (42501) an account another session gave to another
/// organisation meanwhile. A tenant-wide writer claims nothing: it may
/// affect every account.
fn claim_accounts(
    client: &mut SpiClient<'_>,
    events: &[Event<'_>],
    keys: &[Option<Keys>],
    writer_orgs: &[Option<String>],
) -> Result<(), AuditError> {
    let mut claims: BTreeMap<AccountKey, (usize, String)> = BTreeMap::new();
    for (i, (e, k)) in events.iter().zip(keys).enumerate() {
        if let (Some(k), Some(org)) = (k, &writer_orgs[i]) {
            claims
                .entry((e.tenant.to_owned(), k.account.clone()))
                .or_insert((i, org.clone()));
        }
    }
    if claims.is_empty() {
        return Ok(());
    }
    spi_plans::run_with(
        client,
        "batch_claim_accounts",
        "INSERT INTO authaudit.lockout_state (tenant_id, user_id, org_id) \
         SELECT t, u, o FROM unnest($1::text[], $2::text[], $3::text[]) AS k(t, u, o) \
          ORDER BY t, u \
         ON CONFLICT ON CONSTRAINT lockout_state_pkey DO NOTHING",
        &[TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID],
        &[
            texts(claims.keys(), |k| k.0.clone()).into(),
            texts(claims.keys(), |k| k.1.clone()).into(),
            texts(claims.values(), |(_, o)| o.clone()).into(),
        ],
        Plans::PerCall,
    )?;
    // Read with a new snapshot: a row another session committed meanwhile
    // (its INSERT won) is seen with its organisation.
    let mut probe = Probe::open(c"lockout_state", c"lockout_state_pkey")?;
    for ((tenant, account), (i, _)) in &claims {
        let key = [engine::datum(tenant), engine::datum(account)];
        let Some(found) = probe.find(&key, Read::Plain, engine::account)? else {
            return Err(AuditError::ConcurrentFirstEvent);
        };
        check_reach(&events[*i], writer_orgs[*i].as_deref(), Some(&found))?;
    }
    Ok(())
}

/// The (tenant, log id) keys of `events` that are recorded already.
fn recorded_ids<'e>(events: &[Event<'e>]) -> Result<HashSet<(&'e str, [u8; 16])>, AuditError> {
    let mut probe = Probe::open(c"auth_log", c"auth_log_pkey")?;
    // Before the 0.6.0 update the key is the log id alone, and an id taken
    // in another tenant is refused as a reuse.
    let per_tenant = probe.key_columns() == 2;
    let mut found = HashSet::new();
    for e in events {
        let id = e.log_id.into_datum().expect("a uuid");
        let holder = if per_tenant {
            probe.find(&[engine::datum(e.tenant), id], Read::Plain, |_| None)?
        } else {
            probe.find(&[id], Read::Plain, |f| f.get::<String>(c"tenant_id"))?
        };
        match holder {
            None => {}
            Some(Some(other)) if other != e.tenant => {
                return Err(AuditError::LogIdReused(e.log_id.to_string()))
            }
            Some(_) => {
                found.insert((e.tenant, *e.log_id.as_bytes()));
            }
        }
    }
    Ok(found)
}

/// An address as an `inet` datum (a host address, as the rows hold it).
fn inet_datum(key: &SourceKey) -> pg_sys::Datum {
    Inet::parse(&key.inet_text()).datum
}

/// Locks the account rows of `keys` that exist, in their order, into `rows`.
fn lock_account_rows<'k>(
    keys: impl Iterator<Item = &'k AccountKey>,
    rows: &mut HashMap<AccountKey, AccountRow>,
) -> Result<(), AuditError> {
    let mut probe = Probe::open(c"lockout_state", c"lockout_state_pkey")?;
    for k in keys {
        let key = [engine::datum(&k.0), engine::datum(&k.1)];
        let row = probe.find(&key, Read::Lock, |f| AccountRow {
            first_ip: None,
            last_ip: None,
            locked: engine::account(f),
            last: None,
            changed: false,
        })?;
        if let Some(row) = row {
            rows.insert(k.clone(), row);
        }
    }
    Ok(())
}

/// Locks every account row the batch's lockout events touch, in one order;
/// then creates, in one order, the rows its failures and its events of an
/// organisation need and do not have yet (belonging to the organisation of
/// the first of them), and locks them. (Creations only wait for creations, in the same order: no
/// two batches wait for each other in a cycle.)
fn lock_accounts(
    client: &mut SpiClient<'_>,
    events: &[Event<'_>],
    keys: &[Option<Keys>],
) -> Result<HashMap<AccountKey, AccountRow>, AuditError> {
    let mut touched: BTreeMap<AccountKey, Option<Option<String>>> = BTreeMap::new();
    for (e, k) in events.iter().zip(keys) {
        let (Some(kind), Some(k)) = (Kind::of(e.event_type.as_str()), k) else {
            continue;
        };
        let entry = touched
            .entry((e.tenant.to_owned(), k.account.clone()))
            .or_insert(None);
        // A failure creates its account's row, and so does the first event
        // of an organisation (the account belongs to it).
        if (kind == Kind::Failure || e.org.is_some()) && entry.is_none() {
            *entry = Some(e.org.map(str::to_owned));
        }
    }
    let mut rows = HashMap::new();
    if touched.is_empty() {
        return Ok(rows);
    }
    lock_account_rows(touched.keys(), &mut rows)?;
    let create: Vec<(&AccountKey, &Option<String>)> = touched
        .iter()
        .filter(|(k, _)| !rows.contains_key(*k))
        .filter_map(|(k, org)| org.as_ref().map(|o| (k, o)))
        .collect();
    if create.is_empty() {
        return Ok(rows);
    }
    spi_plans::run_with(
        client,
        "batch_create_accounts",
        "INSERT INTO authaudit.lockout_state (tenant_id, user_id, org_id) \
         SELECT t, u, o FROM unnest($1::text[], $2::text[], $3::text[]) AS k(t, u, o) \
          ORDER BY t, u \
         ON CONFLICT ON CONSTRAINT lockout_state_pkey DO NOTHING",
        &[TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID],
        &[
            texts(create.iter(), |(k, _)| k.0.clone()).into(),
            texts(create.iter(), |(k, _)| k.1.clone()).into(),
            create
                .iter()
                .map(|(_, o)| (*o).clone())
                .collect::<Vec<_>>()
                .into(),
        ],
        Plans::PerCall,
    )?;
    lock_account_rows(create.iter().map(|(k, _)| *k), &mut rows)?;
    // A failure's row must exist now (in REPEATABLE READ a row another
    // transaction created meanwhile stays invisible).
    if create.iter().any(|(k, _)| !rows.contains_key(*k)) {
        return Err(AuditError::ConcurrentFirstEvent);
    }
    Ok(rows)
}

/// The tenant, source key and account key of each failure with a source.
fn failure_sources<'e>(
    events: &'e [Event<'e>],
    keys: &'e [Option<Keys>],
) -> impl Iterator<Item = (&'e str, SourceKey, &'e str)> {
    events.iter().zip(keys).filter_map(|(e, k)| {
        let k = k.as_ref()?;
        (Kind::of(e.event_type.as_str()) == Some(Kind::Failure))
            .then_some(k.source)
            .flatten()
            .map(|s| (e.tenant, s, k.account.as_str()))
    })
}

/// Locks the IP rows of `keys` that exist, in their order, into `rows`.
fn lock_ip_rows<'k>(
    keys: impl Iterator<Item = &'k IpKey>,
    rows: &mut HashMap<IpKey, SourceRow>,
) -> Result<(), AuditError> {
    source_rows(
        c"lockout_ip_state",
        c"lockout_ip_state_pkey",
        keys,
        |k| vec![engine::datum(&k.0), inet_datum(&k.1)],
        Read::Lock,
        rows,
    )
}

/// Reads (`how`) the source or pair rows of `keys` that exist, in their
/// order, into `rows`.
fn source_rows<'k, K: Clone + Eq + std::hash::Hash + 'k>(
    table: &'static std::ffi::CStr,
    index: &'static std::ffi::CStr,
    keys: impl Iterator<Item = &'k K>,
    datums: impl Fn(&K) -> Vec<pg_sys::Datum>,
    how: Read,
    rows: &mut HashMap<K, SourceRow>,
) -> Result<(), AuditError> {
    let mut probe = Probe::open(table, index)?;
    for k in keys {
        let row = probe.find(&datums(k), how, |f| SourceRow {
            state: engine::ip_state(f),
            tid: Some(f.tid),
            changed: false,
        })?;
        if let Some(row) = row {
            rows.insert(k.clone(), row);
        }
    }
    Ok(())
}

/// Locks the rows of the source IPs of the batch's failures, creating the
/// missing ones (as for accounts).
fn lock_ips(
    client: &mut SpiClient<'_>,
    events: &[Event<'_>],
    event_keys: &[Option<Keys>],
) -> Result<HashMap<IpKey, SourceRow>, AuditError> {
    let keys: BTreeMap<IpKey, ()> = failure_sources(events, event_keys)
        .map(|(t, s, _)| ((t.to_owned(), s), ()))
        .collect();
    let mut rows = HashMap::new();
    if keys.is_empty() {
        return Ok(rows);
    }
    lock_ip_rows(keys.keys(), &mut rows)?;
    let create: Vec<&IpKey> = keys.keys().filter(|k| !rows.contains_key(*k)).collect();
    if create.is_empty() {
        return Ok(rows);
    }
    spi_plans::run_with(
        client,
        "batch_create_ips",
        "INSERT INTO authaudit.lockout_ip_state (tenant_id, ip) \
         SELECT t, a::inet FROM unnest($1::text[], $2::text[]) AS k(t, a) ORDER BY t, a::inet \
         ON CONFLICT ON CONSTRAINT lockout_ip_state_pkey DO NOTHING",
        &[TEXTARRAYOID, TEXTARRAYOID],
        &[
            texts(create.iter(), |k| k.0.clone()).into(),
            texts(create.iter(), |k| k.1.inet_text()).into(),
        ],
        Plans::PerCall,
    )?;
    lock_ip_rows(create.iter().copied(), &mut rows)?;
    if create.iter().any(|k| !rows.contains_key(*k)) {
        return Err(AuditError::ConcurrentFirstEvent);
    }
    Ok(rows)
}

/// The (IP, account) states of the batch's failures (their accounts' rows
/// are locked: nobody else writes them meanwhile).
fn read_pairs(
    events: &[Event<'_>],
    event_keys: &[Option<Keys>],
) -> Result<HashMap<PairKey, SourceRow>, AuditError> {
    let keys: BTreeMap<PairKey, ()> = failure_sources(events, event_keys)
        .map(|(t, s, a)| ((t.to_owned(), s, a.to_owned()), ()))
        .collect();
    let mut rows = HashMap::new();
    if keys.is_empty() {
        return Ok(rows);
    }
    source_rows(
        c"lockout_ip_account_state",
        c"lockout_ip_account_state_pkey",
        keys.keys(),
        |k| vec![engine::datum(&k.0), inet_datum(&k.1), engine::datum(&k.2)],
        Read::Plain,
        &mut rows,
    )?;
    Ok(rows)
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

/// Inserts `rows`; with `keep`, returns the stored rows of the batch's own
/// events (composite datums allocated in `keep`), in order.
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
            // A log id was committed by another session meanwhile: the
            // error undoes the batch (its appends and its lockout changes).
            return Err(AuditError::ConcurrentLogId(r.log_id.to_string()));
        }
        if let (Some(ctx), Some(_)) = (keep, r.input) {
            stored.push(in_context(ctx, || target.inserted()));
        }
    }
    Ok(stored)
}

fn write_accounts(accounts: &HashMap<AccountKey, AccountRow>) -> Result<(), AuditError> {
    let mut changed = accounts.values().filter(|r| r.changed).peekable();
    if changed.peek().is_none() {
        return Ok(());
    }
    let mut target = Target::open(c"lockout_state")?;
    for r in changed {
        let tid = r.locked.tid.expect("a locked row's position");
        let mut columns = engine::account_columns(&r.locked.state)?;
        if let Some(first) = r.first_ip {
            columns.push((c"first_failure_ip", first.map(|i| i.datum)));
        }
        if let Some(last) = r.last_ip {
            columns.push((c"last_failure_ip", Some(last.datum)));
        }
        columns.extend([
            (c"last_log_id", r.last.and_then(|l| l.0.into_datum())),
            (c"last_seq", r.last.and_then(|l| l.1.into_datum())),
            (c"updated_at", engine::now_datum()),
        ]);
        target.update(tid, &columns)?;
    }
    Ok(())
}

fn write_ips(ips: &HashMap<IpKey, SourceRow>) -> Result<(), AuditError> {
    let mut changed = ips.values().filter(|r| r.changed).peekable();
    if changed.peek().is_none() {
        return Ok(());
    }
    let mut target = Target::open(c"lockout_ip_state")?;
    for r in changed {
        target.update(
            r.tid.expect("a locked row's position"),
            &engine::source_columns(&r.state),
        )?;
    }
    Ok(())
}

/// Pairs are written under their accounts' row locks: a pair without a
/// row gets one, nobody else creating it meanwhile.
fn write_pairs(pairs: &HashMap<PairKey, SourceRow>) -> Result<(), AuditError> {
    let mut changed = pairs.iter().filter(|(_, r)| r.changed).peekable();
    if changed.peek().is_none() {
        return Ok(());
    }
    let mut target = Target::open(c"lockout_ip_account_state")?;
    for (k, r) in changed {
        let state = engine::source_columns(&r.state);
        match r.tid {
            Some(tid) => target.update(tid, &state)?,
            None => {
                let mut row = vec![
                    (c"tenant_id", Some(engine::datum(&k.0))),
                    (c"ip", Some(inet_datum(&k.1))),
                    (c"user_id", Some(engine::datum(&k.2))),
                ];
                row.extend(state);
                target.insert(&row)?;
            }
        }
    }
    Ok(())
}
