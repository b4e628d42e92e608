//! The lockout engine's reads: the tenant's policy (cached per backend) and
//! the state rows an event touches, locked in one order (the account, then
//! its source IP) before the event is chained. What the event does to them
//! is decided by `authaudit_core::lockout_effect::step`; the recording
//! pipeline writes the changed rows with the event's row, in one statement
//! (`record.rs`).
//!
//! A row that does not exist yet is created empty first (and so locked),
//! because two first events of one account may race: the loser waits for
//! the winner and reads its row. A pair row (source IP, account) needs no
//! such step: only the holder of the account's row lock writes it.

use crate::error::AuditError;
use crate::sql_values::Inet;
use crate::{gucs, scope, spi_plans, time};
use authaudit_core::lockout::{AccountState, Increment, IpState, Policy};
use pgrx::datum::{TimestampWithTimeZone, Uuid};
use pgrx::pg_sys;
use pgrx::pg_sys::BuiltinOid::{INETOID, TEXTOID, UUIDOID};
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

/// An account's state row as locked: its state and its organisation.
#[derive(Debug, Clone)]
pub struct LockedAccount {
    pub state: AccountState,
    pub org: Option<String>,
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

const LOCK_ACCOUNT: &str = "SELECT EXISTS (SELECT FROM authaudit.auth_log WHERE log_id = $3), \
       a.present, a.failure_count, a.first_failure_at, a.last_failure_at, a.locked, \
       a.locked_at, a.locked_until, a.lock_count, a.org_id \
  FROM (SELECT 1) AS one \
  LEFT JOIN (SELECT true AS present, s.* FROM authaudit.lockout_state s \
              WHERE s.tenant_id = $1 AND s.user_id = $2 FOR UPDATE) a ON true";

/// Whether `log_id` is recorded already, and the account's row, locked
/// (`None`: no row).
pub fn lock_account(
    client: &mut SpiClient<'_>,
    tenant: &str,
    user: &str,
    log_id: Uuid,
) -> Result<(bool, Option<LockedAccount>), AuditError> {
    let t = spi_plans::run(
        client,
        "engine_lock_account",
        LOCK_ACCOUNT,
        &[TEXTOID, TEXTOID, UUIDOID],
        &[tenant.into(), user.into(), log_id.into()],
    )?;
    let r = t.first().get_heap_tuple()?.expect("one row");
    let recorded: bool = r.get(1)?.unwrap_or(false);
    let present: bool = r.get(2)?.unwrap_or(false);
    let account = if present {
        Some(read_account(&r, 3)?)
    } else {
        None
    };
    Ok((recorded, account))
}

const CREATE_ACCOUNT: &str = "INSERT INTO authaudit.lockout_state (tenant_id, user_id, org_id) \
     VALUES ($1, $2, $3) ON CONFLICT ON CONSTRAINT lockout_state_pkey DO NOTHING RETURNING true";

/// Locks the account's row, creating it (belonging to `org`) when the
/// account has none. Returns whether `log_id` is recorded already, and the
/// account (`None` only when recorded, or when `create` is false and there
/// is no row).
pub fn lock_or_create_account(
    client: &mut SpiClient<'_>,
    tenant: &str,
    user: &str,
    org: Option<&str>,
    log_id: Uuid,
    create: bool,
) -> Result<(bool, Option<LockedAccount>), AuditError> {
    for _ in 0..CREATE_ATTEMPTS {
        let (recorded, account) = lock_account(client, tenant, user, log_id)?;
        if recorded || account.is_some() || !create {
            return Ok((recorded, account));
        }
        let created = spi_plans::run(
            client,
            "engine_create_account",
            CREATE_ACCOUNT,
            &[TEXTOID, TEXTOID, TEXTOID],
            &[tenant.into(), user.into(), org.into()],
        )?;
        if !created.is_empty() {
            return Ok((
                false,
                Some(LockedAccount {
                    state: AccountState::default(),
                    org: org.map(str::to_owned),
                }),
            ));
        }
    }
    Err(AuditError::ConcurrentFirstEvent)
}

const LOCK_SOURCE: &str =
    "SELECT i.present, i.failure_count, i.first_failure_at, i.blocked_until, \
       p.present, p.failure_count, p.first_failure_at, p.blocked_until \
  FROM (SELECT 1) AS one \
  LEFT JOIN (SELECT true AS present, s.* FROM authaudit.lockout_ip_state s \
              WHERE s.tenant_id = $1 AND s.ip = $2 FOR UPDATE) i ON true \
  LEFT JOIN (SELECT true AS present, s.* FROM authaudit.lockout_ip_account_state s \
              WHERE s.tenant_id = $1 AND s.ip = $2 AND s.user_id = $3) p ON true";

const CREATE_IP: &str = "INSERT INTO authaudit.lockout_ip_state (tenant_id, ip) VALUES ($1, $2) \
     ON CONFLICT ON CONSTRAINT lockout_ip_state_pkey DO NOTHING RETURNING true";

/// The source IP's row (locked, created when missing) and the (IP,
/// account) pair's state (the default when it has no row yet). Called with
/// the account's row locked.
pub fn lock_source(
    client: &mut SpiClient<'_>,
    tenant: &str,
    ip: Inet,
    user: &str,
) -> Result<(IpState, IpState), AuditError> {
    for _ in 0..CREATE_ATTEMPTS {
        let t = spi_plans::run(
            client,
            "engine_lock_source",
            LOCK_SOURCE,
            &[TEXTOID, INETOID, TEXTOID],
            &[tenant.into(), ip.into(), user.into()],
        )?;
        let r = t.first().get_heap_tuple()?.expect("one row");
        let pair_present: bool = r.get(5)?.unwrap_or(false);
        let pair = if pair_present {
            read_ip(&r, 6)?
        } else {
            IpState::default()
        };
        if r.get::<bool>(1)?.unwrap_or(false) {
            return Ok((read_ip(&r, 2)?, pair));
        }
        let created = spi_plans::run(
            client,
            "engine_create_ip",
            CREATE_IP,
            &[TEXTOID, INETOID],
            &[tenant.into(), ip.into()],
        )?;
        if !created.is_empty() {
            return Ok((IpState::default(), pair));
        }
    }
    Err(AuditError::ConcurrentFirstEvent)
}
