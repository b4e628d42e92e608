//! The lockout engine's reads: the tenant's policy (cached per backend) and
//! the state rows an event touches, locked in one order (the account, then
//! its source IP) before the event is chained. What the event does to them
//! is decided by `authaudit_core::lockout_effect::step`; the recording
//! pipeline writes the changed rows after the event's row (`record.rs`).
//!
//! A row that does not exist yet is created empty first (and so locked),
//! because two first events of one account may race: the loser waits for
//! the winner and reads its row. Creating it before the event is chained
//! keeps the lock order (state rows, then the tenant's chain). A pair row
//! (source IP, account) needs no such step: only the holder of the
//! account's row lock writes it. The rows are updated by their `ctid`,
//! which cannot move while this transaction holds their locks.

use crate::error::AuditError;
use crate::row_writes::{Column, Target};
use crate::sql_values::{Inet, Tid};
use crate::state_rows::{self, Read};
use crate::{gucs, scope, spi_plans, time};
use authaudit_core::identity::{self, Folding, SourceKey};
use authaudit_core::lockout::{AccountState, Increment, IpState, Policy};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::BuiltinOid::TEXTOID;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::IntoDatum;
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;

/// How often a first event retries after losing the race to create a row
/// (in REPEATABLE READ the winner's row stays invisible: 40001 then).
const CREATE_ATTEMPTS: usize = 3;

thread_local! {
    /// Policy rows by tenant (`None`: no row, the GUC defaults apply),
    /// stamped with the configuration generation they were read under.
    static POLICIES: RefCell<HashMap<String, (u64, Option<Rules>)>> = RefCell::new(HashMap::new());
}

/// Tenants whose policy rows are cached at once per backend.
const CACHED_POLICIES: usize = 4096;

/// How a tenant's events become lockout keys (`authaudit_core::identity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRules {
    pub folding: Folding,
    pub ipv6_prefix: u8,
}

impl KeyRules {
    /// The key of account `user`.
    pub fn account<'u>(&self, user: &'u str) -> Cow<'u, str> {
        identity::account_key(user, self.folding)
    }

    /// The key of source `ip`.
    pub fn source_key(&self, ip: Inet) -> SourceKey {
        identity::source_key(ip.addr, self.ipv6_prefix)
    }

    /// The key of source `ip`, as an `inet` of the key's network.
    pub fn source(&self, ip: Inet) -> Inet {
        let key = self.source_key(ip);
        if key.addr == ip.addr && key.prefix == ip.prefix {
            return ip;
        }
        Inet::parse(&key.inet_text())
    }
}

/// A tenant's lockout policy and key rules.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub policy: Policy,
    pub keys: KeyRules,
}

const POLICY_COLUMNS: &str = "enabled, max_failures, \
       (extract(epoch FROM failure_window) * 1000000)::bigint, \
       (extract(epoch FROM lock_duration) * 1000000)::bigint, lock_increment, \
       (extract(epoch FROM max_lock_duration) * 1000000)::bigint, permanent_after_locks, \
       (extract(epoch FROM quick_failure_interval) * 1000000)::bigint, ip_max_failures, \
       (extract(epoch FROM ip_block_duration) * 1000000)::bigint, ip_account_max_failures";

/// The tenant's policy: its row, or the `authaudit.lockout_*` defaults.
pub fn policy(client: &mut SpiClient<'_>, tenant: &str) -> Result<Policy, AuditError> {
    rules(client, tenant).map(|r| r.policy)
}

/// The tenant's policy and key rules: its row, or the `authaudit.lockout_*`
/// defaults.
pub fn rules(client: &mut SpiClient<'_>, tenant: &str) -> Result<Rules, AuditError> {
    // Read before the row: a change committed after this read moves the
    // generation past it (scope::config_changed), so the entry is re-read.
    let generation = scope::config_generation();
    // A transaction-snapshot read may predate a change the generation
    // already counts: only a READ COMMITTED read is cached.
    // SAFETY: a plain read of the transaction's isolation level.
    let cacheable = generation.is_some()
        && unsafe { pg_sys::XactIsoLevel } < pg_sys::XACT_REPEATABLE_READ as i32;
    let cached = POLICIES.with(|p| {
        p.borrow()
            .get(tenant)
            .filter(|(g, _)| Some(*g) == generation && cacheable)
            .map(|(_, row)| *row)
    });
    let row = match cached {
        Some(row) => row,
        None => {
            let row = read_policy(client, tenant)?;
            if let (true, Some(g)) = (cacheable, generation) {
                POLICIES.with(|p| {
                    let mut p = p.borrow_mut();
                    if p.len() >= CACHED_POLICIES {
                        p.clear();
                    }
                    p.insert(tenant.to_owned(), (g, row));
                });
            }
            row
        }
    };
    match row {
        Some(rules) => Ok(rules),
        None => {
            let policy = gucs::default_lockout_policy();
            policy.validate()?;
            Ok(Rules {
                policy,
                keys: gucs::default_key_rules(),
            })
        }
    }
}

/// Whether `lockout_policy` has the key columns (release 0.4.0; a library
/// installed before `ALTER EXTENSION … UPDATE` runs on the older table).
fn has_key_columns() -> Result<bool, AuditError> {
    let relid = state_rows::relid(c"lockout_policy")?;
    // SAFETY: a syscache lookup of a column of an existing table.
    Ok(unsafe { pg_sys::get_attnum(relid, c"ipv6_prefix".as_ptr()) } > 0)
}

fn read_policy(client: &mut SpiClient<'_>, tenant: &str) -> Result<Option<Rules>, AuditError> {
    let table = if has_key_columns()? {
        spi_plans::run(
            client,
            "engine_policy_keys",
            &format!(
                "SELECT {POLICY_COLUMNS}, account_key_folding, ipv6_prefix \
                   FROM authaudit.lockout_policy WHERE tenant_id = $1"
            ),
            &[TEXTOID],
            &[tenant.into()],
        )?
    } else {
        spi_plans::run(
            client,
            "engine_policy",
            &format!("SELECT {POLICY_COLUMNS} FROM authaudit.lockout_policy WHERE tenant_id = $1"),
            &[TEXTOID],
            &[tenant.into()],
        )?
    };
    if table.is_empty() {
        return Ok(None);
    }
    let r = table.first();
    let increment: String = r.get(5)?.unwrap_or_else(|| "multiple".into());
    let defaults = gucs::default_key_rules();
    let keys = if r.columns()? > 11 {
        KeyRules {
            folding: r
                .get::<String>(12)?
                .and_then(|f| f.parse().ok())
                .unwrap_or(defaults.folding),
            ipv6_prefix: r
                .get::<i16>(13)?
                .and_then(|p| u8::try_from(p).ok())
                .unwrap_or(defaults.ipv6_prefix),
        }
    } else {
        defaults
    };
    Ok(Some(Rules {
        policy: Policy {
            enabled: r.get(1)?.unwrap_or(true),
            max_failures: r.get(2)?.unwrap_or(5),
            failure_window_us: r.get(3)?.unwrap_or(0),
            lock_duration_us: r.get(4)?.unwrap_or(0),
            increment: increment.parse().unwrap_or(Increment::Multiple),
            max_lock_duration_us: r.get(6)?.unwrap_or(0),
            permanent_after_locks: r.get(7)?,
            quick_failure_interval_us: r.get(8)?,
            ip_max_failures: r.get(9)?.unwrap_or(100),
            ip_block_duration_us: r.get(10)?.unwrap_or(0),
            ip_account_max_failures: r.get(11)?.unwrap_or(10),
        },
        keys,
    }))
}

/// An account's state row as locked: its state, its organisation and its
/// position (the final statement updates it there).
#[derive(Debug, Clone)]
pub struct LockedAccount {
    pub state: AccountState,
    pub org: Option<String>,
    pub tid: Option<Tid>,
}

/// A failure's source as locked: the IP's state and row, and the (IP,
/// account) pair's state (the default when it has no row yet).
#[derive(Debug, Clone, Copy)]
pub struct LockedSource {
    pub ip: IpState,
    pub ip_tid: Tid,
    pub pair: IpState,
    /// The pair's row, `None` when it has none yet.
    pub pair_tid: Option<Tid>,
}

/// What an event's lockout step holds: the account's row (`None`: the
/// account has none and the event creates none) and, for a failure with a
/// source IP, the source.
#[derive(Debug, Clone)]
pub struct Held {
    pub account: Option<LockedAccount>,
    pub source: Option<LockedSource>,
}

/// Whether `lockout_state` has `failures_since_success` (release 0.5.0; a
/// library installed before `ALTER EXTENSION … UPDATE` runs on the older
/// table).
pub fn has_run_column() -> Result<bool, AuditError> {
    let relid = state_rows::relid(c"lockout_state")?;
    Ok(state_rows::has_column(relid, c"failures_since_success"))
}

/// An account's state row as found.
pub fn account(f: &state_rows::Found) -> LockedAccount {
    LockedAccount {
        state: AccountState {
            failure_count: f.get(c"failure_count").unwrap_or(0),
            first_failure_us: f.get(c"first_failure_at").map(time::unix_micros),
            last_failure_us: f.get(c"last_failure_at").map(time::unix_micros),
            locked: f.get(c"locked").unwrap_or(false),
            locked_at_us: f.get(c"locked_at").map(time::unix_micros),
            locked_until_us: f.get(c"locked_until").map(time::unix_micros),
            lock_count: f.get(c"lock_count").unwrap_or(0),
            failures_since_success: f.get_present(c"failures_since_success").unwrap_or(0),
        },
        org: f.get(c"org_id"),
        tid: Some(f.tid),
    }
}

/// The account's row, locked (`None`: it has none).
fn lock_account(tenant: &str, user: &str) -> Result<Option<LockedAccount>, AuditError> {
    let key = [datum(tenant), datum(user)];
    state_rows::by_key(
        c"lockout_state",
        c"lockout_state_pkey",
        &key,
        Read::Lock,
        account,
    )
}

/// A text datum.
pub fn datum(text: &str) -> pg_sys::Datum {
    text.into_datum().expect("text is not null")
}

/// An IP or (IP, account) state row as found.
pub fn ip_state(f: &state_rows::Found) -> IpState {
    IpState {
        failure_count: f.get(c"failure_count").unwrap_or(0),
        first_failure_us: f.get(c"first_failure_at").map(time::unix_micros),
        blocked_until_us: f.get(c"blocked_until").map(time::unix_micros),
    }
}

/// When this transaction began, as `now()`.
pub fn now_datum() -> Option<pg_sys::Datum> {
    // SAFETY: reads the transaction's start time.
    Some(pg_sys::Datum::from(unsafe {
        pg_sys::GetCurrentTransactionStartTimestamp()
    }))
}

/// A time as a `timestamptz` datum (`None`: NULL).
pub fn timestamp(us: Option<i64>) -> Option<pg_sys::Datum> {
    us.and_then(time::from_unix_micros)
        .and_then(IntoDatum::into_datum)
}

/// The columns of an account's state row that hold `state`.
pub fn account_columns(state: &AccountState) -> Result<Vec<Column>, AuditError> {
    let mut columns = vec![
        (c"failure_count", state.failure_count.into_datum()),
        (c"first_failure_at", timestamp(state.first_failure_us)),
        (c"last_failure_at", timestamp(state.last_failure_us)),
        (c"locked", state.locked.into_datum()),
        (c"locked_at", timestamp(state.locked_at_us)),
        (c"locked_until", timestamp(state.locked_until_us)),
        (c"lock_count", state.lock_count.into_datum()),
    ];
    if has_run_column()? {
        columns.push((
            c"failures_since_success",
            state.failures_since_success.into_datum(),
        ));
    }
    Ok(columns)
}

/// The columns of a source's or (source, account) pair's state row that
/// hold `state`, with `updated_at`.
pub fn source_columns(state: &IpState) -> [Column; 4] {
    [
        (c"failure_count", state.failure_count.into_datum()),
        (c"first_failure_at", timestamp(state.first_failure_us)),
        (c"blocked_until", timestamp(state.blocked_until_us)),
        (c"updated_at", now_datum()),
    ]
}

/// Creates the account's empty row, belonging to `org` (`None`: another
/// session created it meanwhile).
fn create_account(tenant: &str, user: &str, org: Option<&str>) -> Result<Option<Tid>, AuditError> {
    let mut row = vec![
        (c"tenant_id", Some(datum(tenant))),
        (c"user_id", Some(datum(user))),
        (c"org_id", org.map(datum)),
        (c"failure_count", 0i32.into_datum()),
        (c"locked", false.into_datum()),
        (c"lock_count", 0i32.into_datum()),
        (c"updated_at", now_datum()),
    ];
    // Rows are written without the executor: no column default applies.
    if has_run_column()? {
        row.push((c"failures_since_success", 0i32.into_datum()));
    }
    Target::open(c"lockout_state")?.insert_new(&row, c"lockout_state_pkey")
}

/// Creates the source IP's empty row (`None`: another session created it
/// meanwhile).
fn create_ip(tenant: &str, ip: Inet) -> Result<Option<Tid>, AuditError> {
    Target::open(c"lockout_ip_state")?.insert_new(
        &[
            (c"tenant_id", Some(datum(tenant))),
            (c"ip", Some(ip.datum)),
            (c"failure_count", 0i32.into_datum()),
            (c"updated_at", now_datum()),
        ],
        c"lockout_ip_state_pkey",
    )
}

/// Locks the rows an event's lockout step reads: the account's (created,
/// belonging to `org`, when `create` and it has none) and then, when `ip`
/// is given, the source's.
pub fn lock(
    tenant: &str,
    user: &str,
    org: Option<&str>,
    ip: Option<Inet>,
    create: bool,
) -> Result<Held, AuditError> {
    for _ in 0..CREATE_ATTEMPTS {
        let account = match lock_account(tenant, user)? {
            Some(a) => a,
            None if !create => {
                return Ok(Held {
                    account: None,
                    source: None,
                })
            }
            None => match create_account(tenant, user, org)? {
                // Another session created it meanwhile: lock its row.
                None => continue,
                Some(tid) => LockedAccount {
                    state: AccountState::default(),
                    org: org.map(str::to_owned),
                    tid: Some(tid),
                },
            },
        };
        let source = match ip {
            None => None,
            Some(ip) => Some(lock_source(tenant, ip, user)?),
        };
        return Ok(Held {
            account: Some(account),
            source,
        });
    }
    Err(AuditError::ConcurrentFirstEvent)
}

/// The source IP's row (locked, created when missing) and the (IP,
/// account) pair's state. Called with the account's row locked: only its
/// holder writes the pair's row.
fn lock_source(tenant: &str, ip: Inet, user: &str) -> Result<LockedSource, AuditError> {
    let pair = state_rows::by_key(
        c"lockout_ip_account_state",
        c"lockout_ip_account_state_pkey",
        &[datum(tenant), ip.datum, datum(user)],
        Read::Plain,
        |f| (ip_state(f), f.tid),
    )?;
    let (pair, pair_tid) = match pair {
        Some((s, tid)) => (s, Some(tid)),
        None => (IpState::default(), None),
    };
    for _ in 0..CREATE_ATTEMPTS {
        let locked = state_rows::by_key(
            c"lockout_ip_state",
            c"lockout_ip_state_pkey",
            &[datum(tenant), ip.datum],
            Read::Lock,
            |f| (ip_state(f), f.tid),
        )?;
        if let Some((state, ip_tid)) = locked {
            return Ok(LockedSource {
                ip: state,
                ip_tid,
                pair,
                pair_tid,
            });
        }
        if let Some(ip_tid) = create_ip(tenant, ip)? {
            return Ok(LockedSource {
                ip: IpState::default(),
                ip_tid,
                pair,
                pair_tid,
            });
        }
    }
    Err(AuditError::ConcurrentFirstEvent)
}

/// The key tenant `tenant_id`'s lockouts count account `user_id` against
/// (docs/lockout.md, "Account and source keys").
#[pg_extern(
    stable,
    strict,
    parallel_unsafe,
    security_definer,
    name = "account_key"
)]
#[search_path(pg_catalog, pg_temp)]
fn account_key_sql(tenant_id: &str, user_id: &str) -> Result<String, ErrorReport> {
    Ok(Spi::connect_mut(|client| {
        rules(client, tenant_id).map(|r| r.keys.account(user_id).into_owned())
    })?)
}

/// The key tenant `tenant_id`'s per-IP rules count source `ip` against: an
/// IPv4 address, or the IPv6 network of the tenant's prefix.
#[pg_extern(stable, strict, parallel_unsafe, security_definer, name = "source_key")]
#[search_path(pg_catalog, pg_temp)]
fn source_key_sql(tenant_id: &str, ip: Inet) -> Result<pgrx::datum::Inet, ErrorReport> {
    Ok(Spi::connect_mut(|client| {
        rules(client, tenant_id).map(|r| pgrx::datum::Inet(r.keys.source_key(ip).inet_text()))
    })?)
}
