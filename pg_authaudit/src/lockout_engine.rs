//! The lockout engine's reads: the tenant's policy (cached per backend) and
//! the state rows an event touches, locked in one order (the account, then
//! its source IP) before the event is chained. What the event does to them
//! is decided by `authaudit_core::lockout_effect::step`; the recording
//! pipeline writes the changed rows with the event's row, in one statement
//! (`record.rs`).
//!
//! A row that does not exist yet is created empty first (and so locked),
//! because two first events of one account may race: the loser waits for
//! the winner and reads its row. Creating it before the event is chained
//! keeps the lock order (state rows, then the tenant's chain). A pair row
//! (source IP, account) needs no such step: only the holder of the
//! account's row lock writes it. The rows are updated by their `ctid`,
//! which cannot move while this transaction holds their locks.

use crate::error::AuditError;
use crate::sql_values::{Inet, Tid};
use crate::state_rows::{self, Read};
use crate::{gucs, scope, spi_plans, time};
use authaudit_core::lockout::{AccountState, Increment, IpState, Policy};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys;
use pgrx::pg_sys::BuiltinOid::{INETOID, TEXTOID};
use pgrx::spi::{SpiClient, SpiHeapTupleData};
use pgrx::IntoDatum;
use std::cell::RefCell;
use std::collections::HashMap;

/// How often a first event retries after losing the race to create a row
/// (in REPEATABLE READ the winner's row stays invisible: 40001 then).
const CREATE_ATTEMPTS: usize = 3;

thread_local! {
    /// Policy rows by tenant (`None`: no row, the GUC defaults apply),
    /// stamped with the configuration generation they were read under.
    static POLICIES: RefCell<HashMap<String, (u64, Option<Policy>)>> = RefCell::new(HashMap::new());
}

/// Tenants whose policy rows are cached at once per backend.
const CACHED_POLICIES: usize = 4096;

const POLICY: &str = "SELECT enabled, max_failures, \
       (extract(epoch FROM failure_window) * 1000000)::bigint, \
       (extract(epoch FROM lock_duration) * 1000000)::bigint, lock_increment, \
       (extract(epoch FROM max_lock_duration) * 1000000)::bigint, permanent_after_locks, \
       (extract(epoch FROM quick_failure_interval) * 1000000)::bigint, ip_max_failures, \
       (extract(epoch FROM ip_block_duration) * 1000000)::bigint, ip_account_max_failures \
  FROM authaudit.lockout_policy WHERE tenant_id = $1";

/// The tenant's policy: its row, or the `authaudit.lockout_*` defaults.
pub fn policy(client: &mut SpiClient<'_>, tenant: &str) -> Result<Policy, AuditError> {
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
        Some(policy) => Ok(policy),
        None => {
            let policy = gucs::default_lockout_policy();
            policy.validate()?;
            Ok(policy)
        }
    }
}

fn read_policy(client: &mut SpiClient<'_>, tenant: &str) -> Result<Option<Policy>, AuditError> {
    let table = spi_plans::run(
        client,
        "engine_policy",
        POLICY,
        &[TEXTOID],
        &[tenant.into()],
    )?;
    if table.is_empty() {
        return Ok(None);
    }
    let r = table.first();
    let increment: String = r.get(5)?.unwrap_or_else(|| "multiple".into());
    Ok(Some(Policy {
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

fn micros(r: &SpiHeapTupleData<'_>, i: usize) -> Result<Option<i64>, AuditError> {
    Ok(r.get::<TimestampWithTimeZone>(i)?.map(time::unix_micros))
}

/// An account from columns `first ..` of a row: `failure_count,
/// first_failure_at, last_failure_at, locked, locked_at, locked_until,
/// lock_count, org_id`.
pub fn read_account(r: &SpiHeapTupleData<'_>, first: usize) -> Result<LockedAccount, AuditError> {
    Ok(LockedAccount {
        state: AccountState {
            failure_count: r.get(first)?.unwrap_or(0),
            first_failure_us: micros(r, first + 1)?,
            last_failure_us: micros(r, first + 2)?,
            locked: r.get(first + 3)?.unwrap_or(false),
            locked_at_us: micros(r, first + 4)?,
            locked_until_us: micros(r, first + 5)?,
            lock_count: r.get(first + 6)?.unwrap_or(0),
        },
        org: r.get(first + 7)?,
        tid: None,
    })
}

/// An IP state from columns `first ..` (`failure_count, first_failure_at,
/// blocked_until`).
pub fn read_ip(r: &SpiHeapTupleData<'_>, first: usize) -> Result<IpState, AuditError> {
    Ok(IpState {
        failure_count: r.get(first)?.unwrap_or(0),
        first_failure_us: micros(r, first + 1)?,
        blocked_until_us: micros(r, first + 2)?,
    })
}

/// The account's row, locked (`None`: it has none).
fn lock_account(tenant: &str, user: &str) -> Result<Option<LockedAccount>, AuditError> {
    let key = [datum(tenant), datum(user)];
    state_rows::by_key(
        c"lockout_state",
        c"lockout_state_pkey",
        &key,
        Read::Lock,
        |f| LockedAccount {
            state: AccountState {
                failure_count: f.get(c"failure_count").unwrap_or(0),
                first_failure_us: f.get(c"first_failure_at").map(time::unix_micros),
                last_failure_us: f.get(c"last_failure_at").map(time::unix_micros),
                locked: f.get(c"locked").unwrap_or(false),
                locked_at_us: f.get(c"locked_at").map(time::unix_micros),
                locked_until_us: f.get(c"locked_until").map(time::unix_micros),
                lock_count: f.get(c"lock_count").unwrap_or(0),
            },
            org: f.get(c"org_id"),
            tid: Some(f.tid),
        },
    )
}

fn datum(text: &str) -> pg_sys::Datum {
    text.into_datum().expect("text is not null")
}

fn ip_state(f: &state_rows::Found) -> IpState {
    IpState {
        failure_count: f.get(c"failure_count").unwrap_or(0),
        first_failure_us: f.get(c"first_failure_at").map(time::unix_micros),
        blocked_until_us: f.get(c"blocked_until").map(time::unix_micros),
    }
}

const CREATE_ACCOUNT: &str = "INSERT INTO authaudit.lockout_state (tenant_id, user_id, org_id) \
     VALUES ($1, $2, $3) ON CONFLICT ON CONSTRAINT lockout_state_pkey DO NOTHING RETURNING ctid";

/// Locks the rows an event's lockout step reads: the account's (created,
/// belonging to `org`, when `create` and it has none) and then, when `ip`
/// is given, the source's.
pub fn lock(
    client: &mut SpiClient<'_>,
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
            None => {
                let created = spi_plans::run(
                    client,
                    "engine_create_account",
                    CREATE_ACCOUNT,
                    &[TEXTOID, TEXTOID, TEXTOID],
                    &[tenant.into(), user.into(), org.into()],
                )?;
                if created.is_empty() {
                    // Another session created it meanwhile: lock its row.
                    continue;
                }
                LockedAccount {
                    state: AccountState::default(),
                    org: org.map(str::to_owned),
                    tid: created.first().get::<Tid>(1)?,
                }
            }
        };
        let source = match ip {
            None => None,
            Some(ip) => Some(lock_source(client, tenant, ip, user)?),
        };
        return Ok(Held {
            account: Some(account),
            source,
        });
    }
    Err(AuditError::ConcurrentFirstEvent)
}

const CREATE_IP: &str = "INSERT INTO authaudit.lockout_ip_state (tenant_id, ip) VALUES ($1, $2) \
     ON CONFLICT ON CONSTRAINT lockout_ip_state_pkey DO NOTHING RETURNING ctid";

/// The source IP's row (locked, created when missing) and the (IP,
/// account) pair's state. Called with the account's row locked: only its
/// holder writes the pair's row.
fn lock_source(
    client: &mut SpiClient<'_>,
    tenant: &str,
    ip: Inet,
    user: &str,
) -> Result<LockedSource, AuditError> {
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
        let created = spi_plans::run(
            client,
            "engine_create_ip",
            CREATE_IP,
            &[TEXTOID, INETOID],
            &[tenant.into(), ip.into()],
        )?;
        if let Some(ip_tid) = created.first().get::<Tid>(1).ok().flatten() {
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
