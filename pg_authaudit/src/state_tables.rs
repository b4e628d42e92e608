//! The lockout engine's state tables (`lockout_state`, `lockout_ip_state`,
//! `lockout_ip_account_state`), read once and written once per recording
//! call, whether it records one event or a batch, and replaced whole by a
//! rebuild. Nothing else in the extension writes them.
//!
//! A call locks every row it needs before any event is chained, in one
//! order: the accounts' rows (created empty first where a failure, or the
//! first event of an organisation, needs one: the account then belongs to
//! that organisation), then the failures' source IPs' rows (created the
//! same way); the (source, account) pairs are read, since only the holder
//! of the account's row lock writes them. Two first events of one key may
//! race to create its row: the loser waits for the winner's insertion and
//! locks its row. Creations only wait for creations in the same order, so
//! no two calls wait for each other in a cycle. The states then change in
//! memory (`States::apply`) and the changed rows are written once at the
//! end (`States::write`), by their position, which cannot move while this
//! transaction holds their locks.

use crate::error::AuditError;
use crate::lockout_engine::{self as engine, LockedAccount};
use crate::row_writes::{Column, Target};
use crate::spi_plans;
use crate::sql_values::{Inet, Jsonb, Tid};
use crate::state_rows::{Probe, Read};
use authaudit_core::identity::SourceKey;
use authaudit_core::lockout::{AccountState, IpState};
use authaudit_core::lockout_effect::{Before, Effect, Kind};
use foldhash::{HashMap, HashMapExt};
use pgrx::datum::Uuid;
use pgrx::pg_sys;
use pgrx::pg_sys::BuiltinOid::{JSONBOID, TEXTOID};
use pgrx::spi::SpiClient;
use pgrx::IntoDatum;
use std::collections::BTreeMap;

/// How often a first event retries after losing the race to create a row
/// (in REPEATABLE READ the winner's row stays invisible: 40001 then).
const CREATE_ATTEMPTS: usize = 3;

/// (tenant, account key).
pub type AccountKey = (String, String);
/// (tenant, source key).
pub type SourceRowKey = (String, SourceKey);
/// (tenant, source key, account key).
pub type PairKey = (String, SourceKey, String);

/// An account's state row while the call runs.
struct AccountRow {
    locked: LockedAccount,
    /// The new `first_failure_ip` (`None`: unchanged).
    first_ip: Option<Option<Inet>>,
    /// The new `last_failure_ip` (`None`: unchanged).
    last_ip: Option<Inet>,
    /// The event that changed it last: `last_log_id`, `last_seq`.
    last: Option<(Uuid, i64)>,
    changed: bool,
}

/// A source's or a pair's state while the call runs, with its row's
/// position (`None`: a pair without a row yet).
struct SourceRow {
    state: IpState,
    tid: Option<Tid>,
    changed: bool,
}

/// What a call's lockout events need locked: each account (with the
/// organisation to create its row with, when an event needs one created),
/// and each failure's source and pair.
#[derive(Default)]
pub struct Needs {
    accounts: BTreeMap<AccountKey, Option<Option<String>>>,
    sources: BTreeMap<SourceRowKey, ()>,
    pairs: BTreeMap<PairKey, ()>,
}

impl Needs {
    /// One lockout event of `tenant`, for `account` (and, for a failure
    /// with a source, `source`), of organisation `org`. A failure creates
    /// its account's row, and so does the first event of an organisation;
    /// the first event that creates it gives its organisation.
    pub fn add(
        &mut self,
        tenant: &str,
        kind: Kind,
        account: &str,
        source: Option<SourceKey>,
        org: Option<&str>,
    ) {
        let entry = self
            .accounts
            .entry((tenant.to_owned(), account.to_owned()))
            .or_insert(None);
        if (kind == Kind::Failure || org.is_some()) && entry.is_none() {
            *entry = Some(org.map(str::to_owned));
        }
        if let (Kind::Failure, Some(s)) = (kind, source) {
            self.sources.insert((tenant.to_owned(), s), ());
            self.pairs
                .insert((tenant.to_owned(), s, account.to_owned()), ());
        }
    }
}

/// The state rows a call holds locked, and their states as its events
/// change them.
pub struct States {
    accounts: HashMap<AccountKey, AccountRow>,
    sources: HashMap<SourceRowKey, SourceRow>,
    pairs: HashMap<PairKey, SourceRow>,
}

impl States {
    /// Locks (creating where needed) every row `needs` names, in one order.
    pub fn lock(needs: &Needs) -> Result<States, AuditError> {
        let mut states = States {
            accounts: HashMap::new(),
            sources: HashMap::new(),
            pairs: HashMap::new(),
        };
        if !needs.accounts.is_empty() {
            lock_accounts(&needs.accounts, &mut states.accounts)?;
        }
        if !needs.sources.is_empty() {
            lock_sources(needs.sources.keys(), &mut states.sources)?;
        }
        if !needs.pairs.is_empty() {
            read_pairs(needs.pairs.keys(), &mut states.pairs)?;
        }
        Ok(states)
    }

    /// The account's row as locked (`None`: it has none).
    pub fn account(&self, key: &AccountKey) -> Option<&LockedAccount> {
        self.accounts.get(key).map(|a| &a.locked)
    }

    /// The states an event of `kind` decides from: its account's, and for
    /// a failure with a source, the source's and the pair's.
    pub fn before(
        &self,
        account: &AccountKey,
        source: Option<&SourceRowKey>,
        pair: Option<&PairKey>,
    ) -> Before {
        Before {
            account: self
                .accounts
                .get(account)
                .map(|a| a.locked.state)
                .unwrap_or_default(),
            ip: source.map(|k| {
                self.sources
                    .get(k)
                    .map_or_else(IpState::default, |s| s.state)
            }),
            pair: pair.map(|k| self.pairs.get(k).map_or_else(IpState::default, |s| s.state)),
        }
    }

    /// Applies an event's effect in memory: its account's row (a failure
    /// keeps its source IP as the last and, when it starts a run, the
    /// first), the source's and the pair's. Returns whether the account's
    /// row changed (the event is then its last change, `changed_by`).
    pub fn apply(
        &mut self,
        kind: Kind,
        account: &AccountKey,
        source: Option<SourceRowKey>,
        pair: Option<PairKey>,
        ip: Option<Inet>,
        effect: &Effect,
    ) -> bool {
        let mut account_changed = false;
        if let Some(next) = effect.account {
            if let Some(row) = self.accounts.get_mut(account) {
                row.locked.state = next;
                let failure_ip = ip.filter(|_| kind == Kind::Failure);
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
        }
        if let (Some(next), Some(k)) = (effect.ip, source) {
            changes(&mut self.sources, k, next);
        }
        if let (Some(next), Some(k)) = (effect.pair, pair) {
            changes(&mut self.pairs, k, next);
        }
        account_changed
    }

    /// Marks the event `(log_id, seq)` as the last change of the account.
    pub fn changed_by(&mut self, account: &AccountKey, log_id: Uuid, seq: i64) {
        if let Some(row) = self.accounts.get_mut(account) {
            row.last = Some((log_id, seq));
        }
    }

    /// Writes every changed row, once.
    pub fn write(&self) -> Result<(), AuditError> {
        write_accounts(&self.accounts)?;
        write_sources(&self.sources)?;
        write_pairs(&self.pairs)
    }
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

/// Locks the account rows of `keys` that exist, in their order, into `rows`.
fn lock_account_rows<'k>(
    probe: &mut Probe,
    keys: impl Iterator<Item = &'k AccountKey>,
    rows: &mut HashMap<AccountKey, AccountRow>,
) -> Result<(), AuditError> {
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

/// Locks every account row of `needs`, in one order; then creates, in one
/// order, the rows that must exist and do not (belonging to the given
/// organisation), and locks them.
fn lock_accounts(
    needs: &BTreeMap<AccountKey, Option<Option<String>>>,
    rows: &mut HashMap<AccountKey, AccountRow>,
) -> Result<(), AuditError> {
    let mut probe = Probe::open(c"lockout_state", c"lockout_state_pkey")?;
    lock_account_rows(&mut probe, needs.keys(), rows)?;
    let mut create: Vec<(&AccountKey, &Option<String>)> = needs
        .iter()
        .filter(|(k, _)| !rows.contains_key(*k))
        .filter_map(|(k, org)| org.as_ref().map(|o| (k, o)))
        .collect();
    for _ in 0..CREATE_ATTEMPTS {
        if create.is_empty() {
            return Ok(());
        }
        {
            let mut target = Target::open(c"lockout_state")?;
            for (k, org) in &create {
                target.insert_new(
                    &new_account_row(&k.0, &k.1, org.as_deref()),
                    c"lockout_state_pkey",
                )?;
            }
        }
        // Ours are locked by their insertion; another session's (it won the
        // race) is waited for and locked now.
        let mut probe = Probe::open(c"lockout_state", c"lockout_state_pkey")?;
        lock_account_rows(&mut probe, create.iter().map(|(k, _)| *k), rows)?;
        create.retain(|(k, _)| !rows.contains_key(*k));
    }
    if create.is_empty() {
        Ok(())
    } else {
        Err(AuditError::ConcurrentFirstEvent)
    }
}

/// An account's empty row, belonging to `org`. Rows are written without the
/// executor: no column default applies.
fn new_account_row(tenant: &str, user: &str, org: Option<&str>) -> Vec<Column> {
    vec![
        (c"tenant_id", Some(engine::datum(tenant))),
        (c"user_id", Some(engine::datum(user))),
        (c"org_id", org.map(engine::datum)),
        (c"failure_count", 0i32.into_datum()),
        (c"locked", false.into_datum()),
        (c"lock_count", 0i32.into_datum()),
        (c"updated_at", engine::now_datum()),
        (c"failures_since_success", 0i32.into_datum()),
    ]
}

/// An address as an `inet` datum (a host address, as the rows hold it).
fn inet_datum(key: &SourceKey) -> pg_sys::Datum {
    Inet::parse(&key.inet_text()).datum
}

/// Reads (`how`) the source or pair rows of `keys` that exist, in their
/// order, into `rows`.
fn source_rows<'k, K: Clone + Eq + std::hash::Hash + 'k>(
    probe: &mut Probe,
    keys: impl Iterator<Item = &'k K>,
    datums: impl Fn(&K) -> Vec<pg_sys::Datum>,
    how: Read,
    rows: &mut HashMap<K, SourceRow>,
) -> Result<(), AuditError> {
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

fn source_datums(k: &SourceRowKey) -> Vec<pg_sys::Datum> {
    vec![engine::datum(&k.0), inet_datum(&k.1)]
}

/// Locks the rows of the failures' sources, creating the missing ones (as
/// for accounts).
fn lock_sources<'k>(
    keys: impl Iterator<Item = &'k SourceRowKey> + Clone,
    rows: &mut HashMap<SourceRowKey, SourceRow>,
) -> Result<(), AuditError> {
    let mut probe = Probe::open(c"lockout_ip_state", c"lockout_ip_state_pkey")?;
    source_rows(&mut probe, keys.clone(), source_datums, Read::Lock, rows)?;
    let mut create: Vec<&SourceRowKey> = keys.filter(|k| !rows.contains_key(*k)).collect();
    for _ in 0..CREATE_ATTEMPTS {
        if create.is_empty() {
            return Ok(());
        }
        {
            let mut target = Target::open(c"lockout_ip_state")?;
            for k in &create {
                target.insert_new(
                    &[
                        (c"tenant_id", Some(engine::datum(&k.0))),
                        (c"ip", Some(inet_datum(&k.1))),
                        (c"failure_count", 0i32.into_datum()),
                        (c"updated_at", engine::now_datum()),
                    ],
                    c"lockout_ip_state_pkey",
                )?;
            }
        }
        let mut probe = Probe::open(c"lockout_ip_state", c"lockout_ip_state_pkey")?;
        source_rows(
            &mut probe,
            create.iter().copied(),
            source_datums,
            Read::Lock,
            rows,
        )?;
        create.retain(|k| !rows.contains_key(*k));
    }
    if create.is_empty() {
        Ok(())
    } else {
        Err(AuditError::ConcurrentFirstEvent)
    }
}

/// The (source, account) states of the failures (their accounts' rows are
/// locked: nobody else writes them meanwhile).
fn read_pairs<'k>(
    keys: impl Iterator<Item = &'k PairKey>,
    rows: &mut HashMap<PairKey, SourceRow>,
) -> Result<(), AuditError> {
    let mut probe = Probe::open(
        c"lockout_ip_account_state",
        c"lockout_ip_account_state_pkey",
    )?;
    source_rows(
        &mut probe,
        keys,
        |k| vec![engine::datum(&k.0), inet_datum(&k.1), engine::datum(&k.2)],
        Read::Plain,
        rows,
    )
}

fn write_accounts(accounts: &HashMap<AccountKey, AccountRow>) -> Result<(), AuditError> {
    let mut changed = accounts.values().filter(|r| r.changed).peekable();
    if changed.peek().is_none() {
        return Ok(());
    }
    let mut target = Target::open(c"lockout_state")?;
    for r in changed {
        let tid = r.locked.tid.expect("a locked row's position");
        let mut columns = account_columns(&r.locked.state);
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

fn write_sources(sources: &HashMap<SourceRowKey, SourceRow>) -> Result<(), AuditError> {
    let mut changed = sources.values().filter(|r| r.changed).peekable();
    if changed.peek().is_none() {
        return Ok(());
    }
    let mut target = Target::open(c"lockout_ip_state")?;
    for r in changed {
        target.update(
            r.tid.expect("a locked row's position"),
            &source_columns(&r.state),
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
        let state = source_columns(&r.state);
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

/// The columns of an account's state row that hold `state`.
fn account_columns(state: &AccountState) -> Vec<Column> {
    vec![
        (c"failure_count", state.failure_count.into_datum()),
        (
            c"first_failure_at",
            engine::timestamp(state.first_failure_us),
        ),
        (c"last_failure_at", engine::timestamp(state.last_failure_us)),
        (c"locked", state.locked.into_datum()),
        (c"locked_at", engine::timestamp(state.locked_at_us)),
        (c"locked_until", engine::timestamp(state.locked_until_us)),
        (c"lock_count", state.lock_count.into_datum()),
        (
            c"failures_since_success",
            state.failures_since_success.into_datum(),
        ),
    ]
}

/// The columns of a source's or (source, account) pair's state row that
/// hold `state`, with `updated_at`.
fn source_columns(state: &IpState) -> [Column; 4] {
    [
        (c"failure_count", state.failure_count.into_datum()),
        (
            c"first_failure_at",
            engine::timestamp(state.first_failure_us),
        ),
        (c"blocked_until", engine::timestamp(state.blocked_until_us)),
        (c"updated_at", engine::now_datum()),
    ]
}

/// Creates, for the history an organisation's writer imports, the account
/// rows that do not exist yet, belonging to the writer's organisation (in
/// one order, without locking them: a rebuild applies the history later),
/// and returns each account's organisation as it stands then (a row
/// another session created meanwhile included), for the caller's reach
/// check.
pub fn claim(claims: &BTreeMap<AccountKey, String>) -> Result<Vec<LockedAccount>, AuditError> {
    if claims.is_empty() {
        return Ok(Vec::new());
    }
    {
        let mut target = Target::open(c"lockout_state")?;
        for ((tenant, account), org) in claims {
            target.insert_new(
                &new_account_row(tenant, account, Some(org)),
                c"lockout_state_pkey",
            )?;
        }
    }
    // Read with a new snapshot: a row another session committed meanwhile
    // (its insertion won) is seen with its organisation.
    let mut probe = Probe::open(c"lockout_state", c"lockout_state_pkey")?;
    let mut found = Vec::with_capacity(claims.len());
    for (tenant, account) in claims.keys() {
        let key = [engine::datum(tenant), engine::datum(account)];
        match probe.find(&key, Read::Plain, engine::account)? {
            Some(a) => found.push(a),
            None => return Err(AuditError::ConcurrentFirstEvent),
        }
    }
    Ok(found)
}

/// A rebuild's account rows as `jsonb_to_recordset` reads them.
const REPLACE_ACCOUNTS: &str = "WITH r AS (SELECT * FROM jsonb_to_recordset($2) AS r( \
         user_id text, failure_count integer, first_failure_at timestamptz, \
         last_failure_at timestamptz, first_failure_ip inet, last_failure_ip inet, \
         locked boolean, locked_at timestamptz, locked_until timestamptz, lock_count integer, \
         last_log_id uuid, last_seq bigint, org_id text, failures_since_success integer)), \
       gone AS (DELETE FROM authaudit.lockout_state s WHERE s.tenant_id = $1 \
                   AND s.org_id IS NULL \
                   AND NOT EXISTS (SELECT 1 FROM r WHERE r.user_id = s.user_id)), \
       emptied AS (UPDATE authaudit.lockout_state s SET failure_count = 0, \
                   first_failure_at = NULL, last_failure_at = NULL, first_failure_ip = NULL, \
                   last_failure_ip = NULL, locked = false, locked_at = NULL, locked_until = NULL, \
                   lock_count = 0, failures_since_success = 0, updated_at = now() \
                   WHERE s.tenant_id = $1 AND s.org_id IS NOT NULL \
                   AND NOT EXISTS (SELECT 1 FROM r WHERE r.user_id = s.user_id)) \
     INSERT INTO authaudit.lockout_state AS s (tenant_id, user_id, failure_count, \
         first_failure_at, last_failure_at, first_failure_ip, last_failure_ip, locked, locked_at, \
         locked_until, lock_count, last_log_id, last_seq, updated_at, org_id, failures_since_success) \
     SELECT $1, user_id, failure_count, first_failure_at, last_failure_at, first_failure_ip, \
            last_failure_ip, locked, locked_at, locked_until, lock_count, last_log_id, last_seq, \
            now(), org_id, failures_since_success FROM r \
     ON CONFLICT (tenant_id, user_id) DO UPDATE SET failure_count = EXCLUDED.failure_count, \
         first_failure_at = EXCLUDED.first_failure_at, last_failure_at = EXCLUDED.last_failure_at, \
         first_failure_ip = EXCLUDED.first_failure_ip, last_failure_ip = EXCLUDED.last_failure_ip, \
         locked = EXCLUDED.locked, locked_at = EXCLUDED.locked_at, \
         locked_until = EXCLUDED.locked_until, lock_count = EXCLUDED.lock_count, \
         last_log_id = EXCLUDED.last_log_id, last_seq = EXCLUDED.last_seq, updated_at = now(), \
         failures_since_success = EXCLUDED.failures_since_success";

const REPLACE_SOURCES: &str = "WITH r AS (SELECT * FROM jsonb_to_recordset($2) AS r( \
         ip inet, failure_count integer, first_failure_at timestamptz, blocked_until timestamptz)), \
       gone AS (DELETE FROM authaudit.lockout_ip_state s WHERE s.tenant_id = $1 \
                   AND NOT EXISTS (SELECT 1 FROM r WHERE r.ip = s.ip)) \
     INSERT INTO authaudit.lockout_ip_state AS s (tenant_id, ip, failure_count, first_failure_at, \
         blocked_until, updated_at) \
     SELECT $1, ip, failure_count, first_failure_at, blocked_until, now() FROM r \
     ON CONFLICT (tenant_id, ip) DO UPDATE SET failure_count = EXCLUDED.failure_count, \
         first_failure_at = EXCLUDED.first_failure_at, blocked_until = EXCLUDED.blocked_until, \
         updated_at = now()";

const REPLACE_PAIRS: &str = "WITH r AS (SELECT * FROM jsonb_to_recordset($2) AS r( \
         ip inet, user_id text, failure_count integer, first_failure_at timestamptz, \
         blocked_until timestamptz)), \
       gone AS (DELETE FROM authaudit.lockout_ip_account_state s WHERE s.tenant_id = $1 \
                   AND NOT EXISTS (SELECT 1 FROM r WHERE r.ip = s.ip AND r.user_id = s.user_id)) \
     INSERT INTO authaudit.lockout_ip_account_state AS s (tenant_id, ip, user_id, failure_count, \
         first_failure_at, blocked_until, updated_at) \
     SELECT $1, ip, user_id, failure_count, first_failure_at, blocked_until, now() FROM r \
     ON CONFLICT (tenant_id, ip, user_id) DO UPDATE SET failure_count = EXCLUDED.failure_count, \
         first_failure_at = EXCLUDED.first_failure_at, blocked_until = EXCLUDED.blocked_until, \
         updated_at = now()";

/// A tenant's whole lockout state, as a rebuild derives it (each a JSON
/// array of rows, `jsonb_to_recordset`'s columns above).
pub struct Replacement {
    pub accounts: serde_json::Value,
    pub sources: serde_json::Value,
    pub pairs: serde_json::Value,
}

/// Replaces a tenant's three state tables with `r` (a rebuild, holding the
/// tenant's state exclusively): rows it does not hold are removed, except
/// an account of an organisation, whose row is emptied (it stays its
/// organisation's); an existing account row keeps its organisation.
pub fn replace_tenant(
    client: &mut SpiClient<'_>,
    tenant: &str,
    r: &Replacement,
) -> Result<(), AuditError> {
    for (key, sql, rows) in [
        ("rebuild_accounts", REPLACE_ACCOUNTS, &r.accounts),
        ("rebuild_sources", REPLACE_SOURCES, &r.sources),
        ("rebuild_pairs", REPLACE_PAIRS, &r.pairs),
    ] {
        let rows = Jsonb::parse(&rows.to_string());
        spi_plans::run(
            client,
            key,
            sql,
            &[TEXTOID, JSONBOID],
            &[tenant.into(), rows.into()],
        )?;
    }
    Ok(())
}
