//! The login check (`check_login`: may a login be attempted now), the
//! policy row check and the id of a derived lock event. The engine that
//! changes the state is `lockout_engine.rs`.

use crate::error::{AuditError, SqlResult};
use authaudit_core::lockout::{
    check, derived_log_id, Access, AccountState, Increment, IpState, Policy,
};
use pgrx::datum::{TimestampWithTimeZone, Uuid};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::spi::SpiTupleTable;

use crate::spi_plans::run;

const US: &str = "(extract(epoch FROM {}) * 1000000)::bigint";

fn us(column: &str) -> String {
    US.replace("{}", column)
}

/// An account's state from the first row of `failure_count, first_failure,
/// last_failure, locked, locked_at, locked_until, lock_count` (micros).
fn read_account(t: SpiTupleTable<'_>) -> Result<AccountState, AuditError> {
    let r = t.first();
    Ok(AccountState {
        failure_count: r.get(1)?.unwrap_or(0),
        first_failure_us: r.get(2)?,
        last_failure_us: r.get(3)?,
        locked: r.get(4)?.unwrap_or(false),
        locked_at_us: r.get(5)?,
        locked_until_us: r.get(6)?,
        lock_count: r.get(7)?.unwrap_or(0),
        // The check reads no run counter.
        failures_since_success: 0,
    })
}

fn read_ip_state(t: SpiTupleTable<'_>) -> Result<IpState, AuditError> {
    let r = t.first();
    Ok(IpState {
        failure_count: r.get(1)?.unwrap_or(0),
        first_failure_us: r.get(2)?,
        blocked_until_us: r.get(3)?,
    })
}

/// The id of the `account_locked` event a failure triggers.
#[pg_extern(immutable, strict, parallel_safe, name = "_derived_log_id")]
fn derived(trigger: Uuid, purpose: &str) -> Uuid {
    Uuid::from_bytes(derived_log_id(trigger.as_bytes(), purpose))
}

/// Whether a login may be attempted now for the account from the IP; if not,
/// why and until when (`retry_after` NULL: permanently locked). For the
/// application to call before it verifies credentials.
#[pg_extern(volatile, name = "_check_login")]
fn check_login(
    tenant_id: &str,
    user_id: &str,
    ip: default!(Option<&str>, "NULL"),
) -> Result<
    TableIterator<
        'static,
        (
            name!(allowed, bool),
            name!(reason, Option<String>),
            name!(retry_after, Option<TimestampWithTimeZone>),
        ),
    >,
    ErrorReport,
> {
    crate::legacy::sql()?;
    let now_us = crate::time::unix_micros(pgrx::datum::now());
    let row = Spi::connect_mut(|client| -> Result<_, AuditError> {
        use pgrx::pg_sys::BuiltinOid::TEXTOID;
        // The keys the engine counts against (docs/lockout.md).
        let keys = crate::lockout_engine::rules(client, tenant_id)?.keys;
        let account_key = keys.account(user_id).into_owned();
        let user_id = account_key.as_str();
        let source_key = ip.map(|ip| match ip.parse::<std::net::IpAddr>() {
            Ok(addr) => authaudit_core::identity::source_key(addr, keys.ipv6_prefix).inet_text(),
            Err(_) => ip.to_owned(),
        });
        let ip = source_key.as_deref();
        let q = format!(
            "SELECT failure_count, {}, {}, locked, {}, {}, lock_count FROM authaudit.lockout_state \
             WHERE tenant_id = $1 AND user_id = $2",
            us("first_failure_at"),
            us("last_failure_at"),
            us("locked_at"),
            us("locked_until")
        );
        let t = run(
            client,
            "check_account",
            &q,
            &[TEXTOID, TEXTOID],
            &[tenant_id.into(), user_id.into()],
        )?;
        let account = if t.is_empty() {
            AccountState::default()
        } else {
            read_account(t)?
        };
        let ip_state = match ip {
            None => None,
            Some(ip) => {
                let q = format!(
                    "SELECT failure_count, {}, {} FROM authaudit.lockout_ip_state \
                     WHERE tenant_id = $1 AND ip = $2::inet",
                    us("first_failure_at"),
                    us("blocked_until")
                );
                let t = run(
                    client,
                    "check_ip",
                    &q,
                    &[TEXTOID, TEXTOID],
                    &[tenant_id.into(), ip.into()],
                )?;
                if t.is_empty() {
                    None
                } else {
                    Some(read_ip_state(t)?)
                }
            }
        };
        let pair_state = match ip {
            None => None,
            Some(ip) => {
                let q = format!(
                    "SELECT failure_count, {}, {} FROM authaudit.lockout_ip_account_state \
                     WHERE tenant_id = $1 AND ip = $2::inet AND user_id = $3",
                    us("first_failure_at"),
                    us("blocked_until")
                );
                let t = run(
                    client,
                    "check_pair",
                    &q,
                    &[TEXTOID, TEXTOID, TEXTOID],
                    &[tenant_id.into(), ip.into(), user_id.into()],
                )?;
                if t.is_empty() {
                    None
                } else {
                    Some(read_ip_state(t)?)
                }
            }
        };
        Ok(
            match check(&account, ip_state.as_ref(), pair_state.as_ref(), now_us) {
                Access::Allowed => (true, None, None),
                Access::AccountLocked { until_us } => (
                    false,
                    Some("account_locked".to_string()),
                    until_us.and_then(crate::time::from_unix_micros),
                ),
                Access::IpBlocked { until_us } => (
                    false,
                    Some("ip_blocked".to_string()),
                    crate::time::from_unix_micros(until_us),
                ),
                Access::IpAccountBlocked { until_us } => (
                    false,
                    Some("ip_account_blocked".to_string()),
                    crate::time::from_unix_micros(until_us),
                ),
            },
        )
    })?;
    Ok(TableIterator::once(row))
}

/// Checks a policy row; raises 22023 with the rule it breaks.
#[allow(clippy::too_many_arguments)]
#[pg_extern(immutable, name = "_lockout_policy_check")]
fn policy_check(
    enabled: bool,
    max_failures: i32,
    failure_window_us: i64,
    lock_duration_us: i64,
    lock_increment: &str,
    max_lock_duration_us: i64,
    permanent_after_locks: Option<i32>,
    quick_failure_interval_us: Option<i64>,
    ip_max_failures: i32,
    ip_block_duration_us: i64,
    ip_account_max_failures: i32,
) -> SqlResult<bool> {
    let increment: Increment = lock_increment.parse().map_err(AuditError::Policy)?;
    Policy {
        enabled,
        max_failures,
        failure_window_us,
        lock_duration_us,
        increment,
        max_lock_duration_us,
        permanent_after_locks,
        quick_failure_interval_us,
        ip_max_failures,
        ip_block_duration_us,
        ip_account_max_failures,
    }
    .validate()
    .map_err(AuditError::Policy)?;
    Ok(true)
}
