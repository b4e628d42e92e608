//! The lockout engine's rules and reads: each tenant's policy and key rules
//! (cached per backend), and how a state row reads. What an event does to
//! the state is decided by `authaudit_core::lockout_effect::step`; the
//! state tables are locked and written by `state_tables.rs`.

use crate::error::AuditError;
use crate::sql_values::{Inet, Tid};
use crate::state_rows;
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
                keys: default_key_rules(),
            })
        }
    }
}

fn read_policy(client: &mut SpiClient<'_>, tenant: &str) -> Result<Option<Rules>, AuditError> {
    let sql = format!(
        "SELECT {POLICY_COLUMNS}, account_key_folding, ipv6_prefix \
           FROM authaudit.lockout_policy WHERE tenant_id = $1"
    );
    // On Citus, lockout_policy is a reference table: this node's copy is
    // read directly, as a query inside a shard's query (account_key in an
    // investigation) may read no distributed relation (docs/scale-out.md).
    let table = match crate::placement::reference_copy(c"lockout_policy")? {
        None => spi_plans::run(
            client,
            "engine_policy_keys",
            &sql,
            &[TEXTOID],
            &[tenant.into()],
        )?,
        Some(copy) => client.select(
            crate::placement::reading(&sql, "lockout_policy", &copy)
                .to_str()
                .expect("ASCII"),
            None,
            &[tenant.into()],
        )?,
    };
    if table.is_empty() {
        return Ok(None);
    }
    let r = table.first();
    let increment: String = r.get(5)?.unwrap_or_else(|| "multiple".into());
    let defaults = default_key_rules();
    let keys = KeyRules {
        folding: r
            .get::<String>(12)?
            .and_then(|f| f.parse().ok())
            .unwrap_or(defaults.folding),
        ipv6_prefix: r
            .get::<i16>(13)?
            .and_then(|p| u8::try_from(p).ok())
            .unwrap_or(defaults.ipv6_prefix),
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
            failures_since_success: f.get(c"failures_since_success").unwrap_or(0),
        },
        org: f.get(c"org_id"),
        tid: Some(f.tid),
    }
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

/// The key rules of tenants without a `lockout_policy` row.
pub fn default_key_rules() -> KeyRules {
    KeyRules {
        folding: match gucs::LOCKOUT_ACCOUNT_KEY_FOLDING.get() {
            gucs::AccountKeyFolding::Canonical => authaudit_core::identity::Folding::Canonical,
            gucs::AccountKeyFolding::Exact => authaudit_core::identity::Folding::Exact,
        },
        ipv6_prefix: u8::try_from(gucs::LOCKOUT_IPV6_PREFIX.get()).unwrap_or(64),
    }
}
