//! The lockout engine as the SQL of releases 0.1.0 and 0.2.0 calls it
//! (`_lockout_apply`), so that a database keeps recording between installing
//! this library and `ALTER EXTENSION pg_authaudit UPDATE`; the current
//! recording path uses `lockout_engine.rs`. Also `check_login` and the
//! policy check, which every release shares.

use crate::error::{AuditError, SqlResult};
use authaudit_core::lockout::{
    check, derived_log_id, Access, AccountState, FailureOutcome, Increment, IpState, Policy,
};
use authaudit_core::scope::WriteReach;
use pgrx::datum::{TimestampWithTimeZone, Uuid};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::spi::{SpiClient, SpiTupleTable};
use pgrx::PgBuiltInOids;

use crate::spi_plans::run;

const US: &str = "(extract(epoch FROM {}) * 1000000)::bigint";

fn us(column: &str) -> String {
    US.replace("{}", column)
}

fn ts(param: usize) -> String {
    format!("'epoch'::timestamptz + ${param}::bigint * interval '1 microsecond'")
}

/// Which `lockout_state` the SQL calling the engine has: release 0.1.0's
/// table has no `org_id` until `ALTER EXTENSION pg_authaudit UPDATE`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Schema {
    V0_1,
    Current,
}

/// Creates the account's state row if needed (belonging to `org`), locks it
/// and reads it, with the organisation it belongs to: one statement (the
/// upsert's no-op update takes the row lock).
fn lock_account(
    client: &mut SpiClient<'_>,
    schema: Schema,
    tenant: &str,
    user: &str,
    org: Option<&str>,
) -> Result<(AccountState, Option<String>), AuditError> {
    let (key, insert, org_column) = match schema {
        Schema::Current => (
            "lock_account",
            "(tenant_id, user_id, org_id) VALUES ($1, $2, $3)",
            "s.org_id",
        ),
        Schema::V0_1 => (
            "lock_account_v0_1",
            "(tenant_id, user_id) VALUES ($1, $2)",
            "$3",
        ),
    };
    let q = format!(
        "INSERT INTO authaudit.lockout_state AS s {insert} \
         ON CONFLICT ON CONSTRAINT lockout_state_pkey DO UPDATE SET updated_at = s.updated_at \
         RETURNING s.failure_count, {}, {}, s.locked, {}, {}, s.lock_count, {org_column}::text",
        us("s.first_failure_at"),
        us("s.last_failure_at"),
        us("s.locked_at"),
        us("s.locked_until")
    );
    let t = run(
        client,
        key,
        &q,
        &[
            PgBuiltInOids::TEXTOID,
            PgBuiltInOids::TEXTOID,
            PgBuiltInOids::TEXTOID,
        ],
        &[tenant.into(), user.into(), org.into()],
    )?;
    let t = t.first();
    let account_org: Option<String> = t.get(8)?;
    Ok((read_account(t)?, account_org))
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
        // Release 0.1.0's SQL keeps no run counter: a success reports the
        // failures in the window, as that release did.
        failures_since_success: r.get(1)?.unwrap_or(0),
    })
}

fn save_account(
    client: &mut SpiClient<'_>,
    tenant: &str,
    user: &str,
    s: &AccountState,
    failure_ip: Option<&str>,
    log_id: Uuid,
) -> Result<(), AuditError> {
    use pgrx::pg_sys::BuiltinOid::*;
    let q = format!(
        "UPDATE authaudit.lockout_state SET failure_count = $3, first_failure_at = {}, \
         last_failure_at = {}, locked = $6, locked_at = {}, locked_until = {}, lock_count = $9, \
         first_failure_ip = CASE WHEN $3 = 0 THEN NULL \
                                 WHEN $3 = 1 AND $10::inet IS NOT NULL THEN $10::inet \
                                 ELSE first_failure_ip END, \
         last_failure_ip = coalesce($10::inet, last_failure_ip), last_log_id = $11, updated_at = now() \
         WHERE tenant_id = $1 AND user_id = $2",
        ts(4),
        ts(5),
        ts(7),
        ts(8)
    );
    run(
        client,
        "save_account",
        &q,
        &[
            TEXTOID, TEXTOID, INT4OID, INT8OID, INT8OID, BOOLOID, INT8OID, INT8OID, INT4OID,
            TEXTOID, UUIDOID,
        ],
        &[
            tenant.into(),
            user.into(),
            s.failure_count.into(),
            s.first_failure_us.into(),
            s.last_failure_us.into(),
            s.locked.into(),
            s.locked_at_us.into(),
            s.locked_until_us.into(),
            s.lock_count.into(),
            failure_ip.into(),
            log_id.into(),
        ],
    )?;
    Ok(())
}

/// Counts a failure from `ip` (across accounts) and of `user` from `ip`;
/// returns the ends of the blocks this failure started, if any.
fn apply_ip_failure(
    client: &mut SpiClient<'_>,
    policy: &Policy,
    tenant: &str,
    user: &str,
    ip: &str,
    at_us: i64,
) -> Result<(Option<i64>, Option<i64>), AuditError> {
    use pgrx::pg_sys::BuiltinOid::*;
    let q = format!(
        "INSERT INTO authaudit.lockout_ip_state AS s (tenant_id, ip) VALUES ($1, $2::inet) \
         ON CONFLICT ON CONSTRAINT lockout_ip_state_pkey DO UPDATE SET updated_at = s.updated_at \
         RETURNING s.failure_count, {}, {}",
        us("s.first_failure_at"),
        us("s.blocked_until")
    );
    let ip_state = read_ip_state(run(
        client,
        "lock_ip",
        &q,
        &[TEXTOID, TEXTOID],
        &[tenant.into(), ip.into()],
    )?)?;
    let (next_ip, ip_blocked) = ip_state.on_failure(policy, at_us);
    let q = format!(
        "UPDATE authaudit.lockout_ip_state SET failure_count = $3, first_failure_at = {}, \
         blocked_until = {}, updated_at = now() WHERE tenant_id = $1 AND ip = $2::inet",
        ts(4),
        ts(5)
    );
    run(
        client,
        "save_ip",
        &q,
        &[TEXTOID, TEXTOID, INT4OID, INT8OID, INT8OID],
        &[
            tenant.into(),
            ip.into(),
            next_ip.failure_count.into(),
            next_ip.first_failure_us.into(),
            next_ip.blocked_until_us.into(),
        ],
    )?;
    let q = format!(
        "INSERT INTO authaudit.lockout_ip_account_state AS s (tenant_id, ip, user_id) \
         VALUES ($1, $2::inet, $3) \
         ON CONFLICT ON CONSTRAINT lockout_ip_account_state_pkey DO UPDATE SET updated_at = s.updated_at \
         RETURNING s.failure_count, {}, {}",
        us("s.first_failure_at"),
        us("s.blocked_until")
    );
    let pair = read_ip_state(run(
        client,
        "lock_pair",
        &q,
        &[TEXTOID, TEXTOID, TEXTOID],
        &[tenant.into(), ip.into(), user.into()],
    )?)?;
    let (next_pair, pair_blocked) = pair.on_account_failure(policy, at_us);
    let q = format!(
        "UPDATE authaudit.lockout_ip_account_state SET failure_count = $4, first_failure_at = {}, \
         blocked_until = {}, updated_at = now() \
         WHERE tenant_id = $1 AND ip = $2::inet AND user_id = $3",
        ts(5),
        ts(6)
    );
    run(
        client,
        "save_pair",
        &q,
        &[TEXTOID, TEXTOID, TEXTOID, INT4OID, INT8OID, INT8OID],
        &[
            tenant.into(),
            ip.into(),
            user.into(),
            next_pair.failure_count.into(),
            next_pair.first_failure_us.into(),
            next_pair.blocked_until_us.into(),
        ],
    )?;
    Ok((ip_blocked, pair_blocked))
}

fn read_ip_state(t: SpiTupleTable<'_>) -> Result<IpState, AuditError> {
    let r = t.first();
    Ok(IpState {
        failure_count: r.get(1)?.unwrap_or(0),
        first_failure_us: r.get(2)?,
        blocked_until_us: r.get(3)?,
    })
}

fn json_time(us: Option<i64>) -> String {
    match us {
        None => "null".into(),
        Some(v) => v.to_string(),
    }
}

/// Applies an event's lockout effects and returns what the event row records
/// (`facts`, a JSON object for `metadata._authaudit.lockout`) and, when this
/// event locked the account, the lock (`locked_until` NULL: permanent). A
/// new account belongs to `org_id`; a `writer_org` confines the effects to
/// accounts of that organisation (42501 otherwise).
#[allow(clippy::too_many_arguments)]
#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn lockout_apply_scoped(
    tenant_id: &str,
    user_id: &str,
    ip: Option<&str>,
    event_type: &str,
    at: TimestampWithTimeZone,
    log_id: Uuid,
    org_id: Option<&str>,
    writer_org: Option<&str>,
) -> Result<
    TableIterator<
        'static,
        (
            name!(facts, Option<pgrx::JsonB>),
            name!(new_lock, bool),
            name!(locked_until_us, Option<i64>),
            name!(lock_rule, Option<String>),
            name!(lock_failures, Option<i32>),
            name!(lock_count, Option<i32>),
        ),
    >,
    ErrorReport,
> {
    apply(
        Schema::Current,
        tenant_id,
        user_id,
        ip,
        event_type,
        at,
        log_id,
        org_id,
        writer_org,
    )
}

/// The row `_lockout_apply` returns.
type LockoutRow = TableIterator<
    'static,
    (
        name!(facts, Option<pgrx::JsonB>),
        name!(new_lock, bool),
        name!(locked_until_us, Option<i64>),
        name!(lock_rule, Option<String>),
        name!(lock_failures, Option<i32>),
        name!(lock_count, Option<i32>),
    ),
>;

#[allow(clippy::too_many_arguments)]
fn apply(
    schema: Schema,
    tenant_id: &str,
    user_id: &str,
    ip: Option<&str>,
    event_type: &str,
    at: TimestampWithTimeZone,
    log_id: Uuid,
    org_id: Option<&str>,
    writer_org: Option<&str>,
) -> Result<LockoutRow, ErrorReport> {
    let at_us = crate::time::unix_micros(at);
    let ip = ip.map(|i| i.split('/').next().unwrap_or(i).to_string());
    let row = Spi::connect_mut(|client| -> Result<_, AuditError> {
        let policy = crate::lockout_engine::policy(client, tenant_id)?;
        let (state, account_org) = lock_account(client, schema, tenant_id, user_id, org_id)?;
        // An organisation's writer affects accounts of its organisation only.
        if let Some(reach) = writer_org.map(|o| WriteReach::Organisation(o.to_owned())) {
            if !reach.reaches_account(account_org.as_deref()) {
                return Err(AuditError::AccountOfOtherOrganisation {
                    user: user_id.chars().take(80).collect(),
                    tenant: tenant_id.to_owned(),
                    org: writer_org.unwrap_or_default().to_owned(),
                });
            }
        }
        let mut lock = (false, None, None, None, None);
        let facts = match event_type {
            "login_failed" => {
                let (next, outcome) = state.on_failure(&policy, at_us);
                save_account(client, tenant_id, user_id, &next, ip.as_deref(), log_id)?;
                let (ip_blocked, pair_blocked) = match &ip {
                    Some(ip) => apply_ip_failure(client, &policy, tenant_id, user_id, ip, at_us)?,
                    None => (None, None),
                };
                let ip_json = format!(
                    ", \"ip_blocked_until_us\": {}, \"ip_account_blocked_until_us\": {}",
                    json_time(ip_blocked),
                    json_time(pair_blocked)
                );
                match outcome {
                    FailureOutcome::Counted { failures } => {
                        format!("{{\"failures_in_window\": {failures}{ip_json}}}")
                    }
                    FailureOutcome::Locked {
                        failures,
                        rule,
                        lock_count,
                        until_us,
                    } => {
                        lock = (
                            true,
                            until_us,
                            Some(rule.as_str().to_string()),
                            Some(failures),
                            Some(lock_count),
                        );
                        format!("{{\"failures_in_window\": {failures}, \"locked_account\": true{ip_json}}}")
                    }
                    FailureOutcome::WhileLocked { until_us } => format!(
                        "{{\"while_locked\": true, \"locked_until_us\": {}{ip_json}}}",
                        json_time(until_us)
                    ),
                }
            }
            "login_success" => {
                let (next, f) = state.on_success(at_us);
                save_account(client, tenant_id, user_id, &next, None, log_id)?;
                format!(
                    "{{\"preceding_failures\": {}, \"was_locked\": {}}}",
                    f.preceding_failures, f.was_locked
                )
            }
            "lockout_reset" => {
                let next = state.on_reset();
                save_account(client, tenant_id, user_id, &next, None, log_id)?;
                format!("{{\"was_locked\": {}}}", state.is_locked_at(at_us))
            }
            _ => return Ok((None, false, None, None, None, None)),
        };
        let facts: serde_json::Value =
            serde_json::from_str(&facts).expect("the engine writes valid JSON");
        Ok((
            Some(pgrx::JsonB(facts)),
            lock.0,
            lock.1,
            lock.2,
            lock.3,
            lock.4,
        ))
    })?;
    Ok(TableIterator::once(row))
}

/// `_lockout_apply` as release 0.1.0's SQL calls it (no organisations), so
/// that a database keeps recording between installing this library and
/// `ALTER EXTENSION pg_authaudit UPDATE`. Not part of the 0.2.0 schema.
/// (The row type is spelled out: the macro reads it to build a set-returning
/// function.)
#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn lockout_apply(
    tenant_id: &str,
    user_id: &str,
    ip: Option<&str>,
    event_type: &str,
    at: TimestampWithTimeZone,
    log_id: Uuid,
) -> Result<
    TableIterator<
        'static,
        (
            name!(facts, Option<pgrx::JsonB>),
            name!(new_lock, bool),
            name!(locked_until_us, Option<i64>),
            name!(lock_rule, Option<String>),
            name!(lock_failures, Option<i32>),
            name!(lock_count, Option<i32>),
        ),
    >,
    ErrorReport,
> {
    apply(
        Schema::V0_1,
        tenant_id,
        user_id,
        ip,
        event_type,
        at,
        log_id,
        None,
        None,
    )
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
