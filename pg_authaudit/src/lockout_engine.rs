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
use crate::{gucs, scope, spi_plans, time};
use authaudit_core::lockout::{AccountState, Increment, IpState, Policy};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys;
use pgrx::pg_sys::BuiltinOid::{INETOID, TEXTOID};
use pgrx::spi::{SpiClient, SpiHeapTupleData};
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

macro_rules! account_subquery {
    () => {
        "(SELECT true AS present, s.ctid AS tid, s.failure_count, s.first_failure_at, \
                 s.last_failure_at, s.locked, s.locked_at, s.locked_until, s.lock_count, s.org_id \
            FROM authaudit.lockout_state s \
           WHERE s.tenant_id = $1 AND s.user_id = $2 FOR UPDATE) a"
    };
}

/// The source's columns (from column 11 on in `LOCK_ACCOUNT_SOURCE`, 2 in
/// `CREATE_ACCOUNT_SOURCE`): the IP row's presence, position and state,
/// then the pair's.
macro_rules! source_columns {
    () => {
        "i.present, i.tid, i.failure_count, i.first_failure_at, i.blocked_until, \
         p.present, p.tid, p.failure_count, p.first_failure_at, p.blocked_until"
    };
}

/// The IP's row (locked) and the pair's, read only when `$when` holds,
/// which refers to the account's row: they run after it.
macro_rules! source_subqueries {
    ($when:literal, $ip:literal) => {
        concat!(
            "LEFT JOIN LATERAL (SELECT true AS present, s.ctid AS tid, s.failure_count, \
                                      s.first_failure_at, s.blocked_until \
                                 FROM authaudit.lockout_ip_state s \
                                WHERE ",
            $when,
            " AND s.tenant_id = $1 AND s.ip = ",
            $ip,
            " \
                                  FOR UPDATE) i ON true \
             LEFT JOIN LATERAL (SELECT true AS present, s.ctid AS tid, s.failure_count, \
                                      s.first_failure_at, s.blocked_until \
                                 FROM authaudit.lockout_ip_account_state s \
                                WHERE ",
            $when,
            " AND s.tenant_id = $1 AND s.ip = ",
            $ip,
            " \
                                  AND s.user_id = $2) p ON true"
        )
    };
}

const LOCK_ACCOUNT: &str = concat!(
    "SELECT a.* FROM (SELECT 1) AS one LEFT JOIN ",
    account_subquery!(),
    " ON true"
);

/// The account's row and its source's, in that order, in one statement:
/// the source's subqueries refer to the account's, so they run after its
/// row is locked, and only when it exists (a new account is created first,
/// then its source locked).
const LOCK_ACCOUNT_SOURCE: &str = concat!(
    "SELECT a.*, ",
    source_columns!(),
    " FROM (SELECT 1) AS one LEFT JOIN ",
    account_subquery!(),
    " ON true ",
    source_subqueries!("a.present", "$3"),
);

/// Creates the account's row and, in the same statement (after it), locks
/// its source's.
const CREATE_ACCOUNT_SOURCE: &str = concat!(
    "WITH c AS (INSERT INTO authaudit.lockout_state (tenant_id, user_id, org_id) \
                VALUES ($1, $2, $3) ON CONFLICT ON CONSTRAINT lockout_state_pkey DO NOTHING \
                RETURNING ctid) \
     SELECT c.ctid, ",
    source_columns!(),
    " FROM c ",
    source_subqueries!("c.ctid IS NOT NULL", "$4"),
);

/// The source from columns `first ..` laid out as `source_columns!`; `None`
/// when the IP has no row yet.
fn held_source(r: &SpiHeapTupleData<'_>, first: usize) -> Result<Option<LockedSource>, AuditError> {
    let (Some(true), Some(ip_tid)) = (r.get::<bool>(first)?, r.get::<Tid>(first + 1)?) else {
        return Ok(None);
    };
    let pair_tid = r.get::<Tid>(first + 6)?;
    Ok(Some(LockedSource {
        ip: read_ip(r, first + 2)?,
        ip_tid,
        pair: if pair_tid.is_some() {
            read_ip(r, first + 7)?
        } else {
            IpState::default()
        },
        pair_tid,
    }))
}

/// The account's row from columns 1 ..: present, tid, the account columns.
fn held_account(r: &SpiHeapTupleData<'_>) -> Result<Option<LockedAccount>, AuditError> {
    if !r.get::<bool>(1)?.unwrap_or(false) {
        return Ok(None);
    }
    let mut a = read_account(r, 3)?;
    a.tid = r.get::<Tid>(2)?;
    Ok(Some(a))
}

const CREATE_ACCOUNT: &str = "INSERT INTO authaudit.lockout_state (tenant_id, user_id, org_id) \
     VALUES ($1, $2, $3) ON CONFLICT ON CONSTRAINT lockout_state_pkey DO NOTHING RETURNING ctid";

/// Locks the rows an event's lockout step reads: the account's (created,
/// belonging to `org`, when `create` and it has none) and, when `ip` is
/// given, the source's.
pub fn lock(
    client: &mut SpiClient<'_>,
    tenant: &str,
    user: &str,
    org: Option<&str>,
    ip: Option<Inet>,
    create: bool,
) -> Result<Held, AuditError> {
    for _ in 0..CREATE_ATTEMPTS {
        let (account, source) = match ip {
            None => {
                let t = spi_plans::run(
                    client,
                    "engine_lock_account",
                    LOCK_ACCOUNT,
                    &[TEXTOID, TEXTOID],
                    &[tenant.into(), user.into()],
                )?;
                (
                    held_account(&t.first().get_heap_tuple()?.expect("one row"))?,
                    None,
                )
            }
            Some(ip) => {
                let t = spi_plans::run(
                    client,
                    "engine_lock_account_source",
                    LOCK_ACCOUNT_SOURCE,
                    &[TEXTOID, TEXTOID, INETOID],
                    &[tenant.into(), user.into(), ip.into()],
                )?;
                let r = t.first().get_heap_tuple()?.expect("one row");
                (held_account(&r)?, held_source(&r, 11)?)
            }
        };
        let account = match account {
            Some(a) => a,
            None if !create => {
                return Ok(Held {
                    account: None,
                    source: None,
                })
            }
            None => {
                let (tid, created_source) = match ip {
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
                        (created.first().get::<Tid>(1)?, None)
                    }
                    Some(ip) => {
                        let created = spi_plans::run(
                            client,
                            "engine_create_account_source",
                            CREATE_ACCOUNT_SOURCE,
                            &[TEXTOID, TEXTOID, TEXTOID, INETOID],
                            &[tenant.into(), user.into(), org.into(), ip.into()],
                        )?;
                        if created.is_empty() {
                            continue;
                        }
                        let r = created.first().get_heap_tuple()?.expect("one row");
                        (r.get::<Tid>(1)?, held_source(&r, 2)?)
                    }
                };
                let account = LockedAccount {
                    state: AccountState::default(),
                    org: org.map(str::to_owned),
                    tid,
                };
                let source = match (ip, created_source) {
                    (None, _) => None,
                    (Some(_), Some(s)) => Some(s),
                    (Some(ip), None) => Some(lock_source(client, tenant, ip, user)?),
                };
                return Ok(Held {
                    account: Some(account),
                    source,
                });
            }
        };
        let source = match (ip, source) {
            (None, _) => None,
            (Some(_), Some(s)) => Some(s),
            (Some(ip), None) => Some(lock_source(client, tenant, ip, user)?),
        };
        return Ok(Held {
            account: Some(account),
            source,
        });
    }
    Err(AuditError::ConcurrentFirstEvent)
}

const LOCK_SOURCE: &str = concat!(
    "SELECT ",
    source_columns!(),
    " FROM (SELECT 1) AS one ",
    source_subqueries!("true", "$3"),
);

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
    for _ in 0..CREATE_ATTEMPTS {
        let t = spi_plans::run(
            client,
            "engine_lock_source",
            LOCK_SOURCE,
            &[TEXTOID, TEXTOID, INETOID],
            &[tenant.into(), user.into(), ip.into()],
        )?;
        let r = t.first().get_heap_tuple()?.expect("one row");
        if let Some(source) = held_source(&r, 1)? {
            return Ok(source);
        }
        let pair_tid = r.get::<Tid>(7)?;
        let pair = if pair_tid.is_some() {
            read_ip(&r, 8)?
        } else {
            IpState::default()
        };
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
