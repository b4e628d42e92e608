//! Configuration parameters, all named `authaudit.*` and documented in
//! `docs/configuration.md`.

use authaudit_core::lockout::defaults;
use pgrx::{pg_sys, GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::{c_char, CStr, CString};

/// How far (seconds) an event's `occurred_at` may lie ahead of the server clock.
pub static MAX_FUTURE_SKEW: GucSetting<i32> = GucSetting::<i32>::new(300);
/// How far (seconds) a live event's `occurred_at` may lie behind the server
/// clock; older events are history, for `authaudit.import_events`.
pub static MAX_PAST_SKEW: GucSetting<i32> = GucSetting::<i32>::new(300);
pub static LOCKOUT_SNAPSHOT_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(50_000);

/// Whether tenants without a `lockout_policy` row lock accounts.
pub static LOCKOUT_ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);

/// Defaults of the lockout policy for tenants without a `lockout_policy` row
/// (their own defaults: `authaudit_core::lockout::defaults`).
pub static LOCKOUT_MAX_FAILURES: GucSetting<i32> = GucSetting::<i32>::new(defaults::MAX_FAILURES);
pub static LOCKOUT_FAILURE_WINDOW: GucSetting<i32> =
    GucSetting::<i32>::new(defaults::FAILURE_WINDOW_S);
pub static LOCKOUT_DURATION: GucSetting<i32> = GucSetting::<i32>::new(defaults::LOCK_DURATION_S);
pub static LOCKOUT_MAX_DURATION: GucSetting<i32> =
    GucSetting::<i32>::new(defaults::MAX_LOCK_DURATION_S);
pub static LOCKOUT_IP_MAX_FAILURES: GucSetting<i32> =
    GucSetting::<i32>::new(defaults::IP_MAX_FAILURES);
pub static LOCKOUT_IP_ACCOUNT_MAX_FAILURES: GucSetting<i32> =
    GucSetting::<i32>::new(defaults::IP_ACCOUNT_MAX_FAILURES);
pub static LOCKOUT_IP_BLOCK_DURATION: GucSetting<i32> =
    GucSetting::<i32>::new(defaults::IP_BLOCK_DURATION_S);

/// How tenants without a `lockout_policy` row key accounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, pgrx::PostgresGucEnum)]
pub enum AccountKeyFolding {
    Canonical,
    Exact,
}

pub static LOCKOUT_ACCOUNT_KEY_FOLDING: GucSetting<AccountKeyFolding> =
    GucSetting::<AccountKeyFolding>::new(AccountKeyFolding::Canonical);

/// The IPv6 prefix tenants without a `lockout_policy` row group sources by.
pub static LOCKOUT_IPV6_PREFIX: GucSetting<i32> = GucSetting::<i32>::new(defaults::IPV6_PREFIX);

/// Channels the deployment adds to the built-in ones, separated by commas
/// (`crate::channels`).
pub static EXTRA_CHANNELS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// Verifier keys of the witness whose signed checkpoints
/// `record_witness_checkpoint` accepts (`crate::witness`).
pub static WITNESS_KEYS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// The database whose event rates the rollup worker keeps
/// (`crate::rollup_worker`; empty: no worker).
pub static ROLLUP_DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));

/// Events a single `record_events` call may hold.
pub static MAX_BATCH_EVENTS: GucSetting<i32> = GucSetting::<i32>::new(1_000);

/// How long (minutes) events are kept at least: retention never removes
/// younger ones: a year by default.
pub static MIN_RETENTION: GucSetting<i32> = GucSetting::<i32>::new(365 * 24 * 60);

/// The check hook of `authaudit.extra_channels`: refuses a malformed list
/// with the rule it breaks.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn check_extra_channels(
    newval: *mut *mut c_char,
    _extra: *mut *mut std::ffi::c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: the hook's own argument, as PostgreSQL passed it.
    unsafe {
        check_string(newval, |list| {
            authaudit_core::channel::ChannelSet::parse(list)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

/// The check hook of `authaudit.witness_keys`: refuses a list that is not
/// verifier keys, with the reason in the detail.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn check_witness_keys(
    newval: *mut *mut c_char,
    _extra: *mut *mut std::ffi::c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: the hook's own argument, as PostgreSQL passed it.
    unsafe {
        check_string(newval, |list| {
            authaudit_core::note::verifier_list(list)
                .map(|_| ())
                .map_err(|e| {
                    format!("{e}; expected verifier keys name+id+base64 separated by commas")
                })
        })
    }
}

/// The body of a string parameter's check hook: `check` judges the proposed
/// value (NULL and an empty list pass as empty); a refusal's reason becomes
/// the error's detail.
///
/// # Safety
/// `newval` is the pointer PostgreSQL hands a check hook.
pub unsafe fn check_string(
    newval: *mut *mut c_char,
    check: impl FnOnce(&str) -> Result<(), String>,
) -> bool {
    // SAFETY: PostgreSQL hands the proposed value as a C string (or NULL).
    let value = unsafe {
        if newval.is_null() || (*newval).is_null() {
            return true;
        }
        CStr::from_ptr(*newval)
    };
    let Ok(text) = value.to_str() else {
        return false;
    };
    match check(text) {
        Ok(()) => true,
        Err(reason) => {
            let detail = CString::new(reason).unwrap_or_default();
            // SAFETY: GUC_check_errdetail: a palloc'd string PostgreSQL
            // reports with the refusal.
            unsafe {
                pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(detail.as_ptr());
            }
            false
        }
    }
}

fn define_int(
    name: &'static std::ffi::CStr,
    short: &'static std::ffi::CStr,
    setting: &'static GucSetting<i32>,
    max: i32,
    flags: GucFlags,
) {
    GucRegistry::define_int_guc(
        name,
        short,
        c"Default of the lockout policy for tenants without a lockout_policy row (docs/lockout.md).",
        setting,
        1,
        max,
        GucContext::Suset,
        flags,
    );
}

/// Registers every parameter; called once from `_PG_init`.
pub fn register() {
    define_int(
        c"authaudit.lockout_max_failures",
        c"Failures within the window that lock an account.",
        &LOCKOUT_MAX_FAILURES,
        100,
        GucFlags::default(),
    );
    define_int(
        c"authaudit.lockout_failure_window",
        c"How long failures keep counting.",
        &LOCKOUT_FAILURE_WINDOW,
        i32::MAX,
        GucFlags::UNIT_S,
    );
    define_int(
        c"authaudit.lockout_duration",
        c"Length of the first temporary lock.",
        &LOCKOUT_DURATION,
        i32::MAX,
        GucFlags::UNIT_S,
    );
    define_int(
        c"authaudit.lockout_max_duration",
        c"Upper bound of a temporary lock.",
        &LOCKOUT_MAX_DURATION,
        i32::MAX,
        GucFlags::UNIT_S,
    );
    define_int(
        c"authaudit.lockout_ip_max_failures",
        c"Failures from one IP across accounts that block the IP.",
        &LOCKOUT_IP_MAX_FAILURES,
        i32::MAX,
        GucFlags::default(),
    );
    define_int(
        c"authaudit.lockout_ip_account_max_failures",
        c"Failures of one account from one IP that block the IP for that account.",
        &LOCKOUT_IP_ACCOUNT_MAX_FAILURES,
        i32::MAX,
        GucFlags::default(),
    );
    define_int(
        c"authaudit.lockout_ip_block_duration",
        c"How long a blocked IP stays blocked.",
        &LOCKOUT_IP_BLOCK_DURATION,
        i32::MAX,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_bool_guc(
        c"authaudit.lockout_enabled",
        c"Whether tenants without a lockout_policy row lock accounts.",
        c"The default lockout policy's enabled flag; a tenant's lockout_policy row overrides it.",
        &LOCKOUT_ENABLED,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"authaudit.lockout_account_key_folding",
        c"How tenants without a lockout_policy row turn a user_id into the key lockouts count against.",
        c"canonical: NFKC, case folding, default-ignorable characters removed, dashes as '-', white space trimmed; exact: as given (docs/lockout.md).",
        &LOCKOUT_ACCOUNT_KEY_FOLDING,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"authaudit.lockout_ipv6_prefix",
        c"The IPv6 prefix length by which tenants without a lockout_policy row group sources.",
        c"Per-IP and per-(IP, account) rules count every address of one such network as one source (docs/lockout.md).",
        &LOCKOUT_IPV6_PREFIX,
        32,
        128,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"authaudit.max_batch_events",
        c"Events a single record_events call may hold.",
        c"Larger batches are refused with SQLSTATE 54000; a batch holds its tenants' chains for the whole call.",
        &MAX_BATCH_EVENTS,
        1,
        100_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"authaudit.min_retention",
        c"How long events are kept at least; apply_retention refuses younger horizons.",
        c"Only a superuser can change it (docs/retention.md).",
        &MIN_RETENTION,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_MIN,
    );
    GucRegistry::define_int_guc(
        c"authaudit.max_future_skew",
        c"How far an event's occurred_at may lie ahead of the server clock.",
        c"Events whose occurred_at is later than the server time plus this are refused with SQLSTATE 22008.",
        &MAX_FUTURE_SKEW,
        0,
        86_400,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    // SAFETY: the check hook is a #[pg_guard] function.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"authaudit.extra_channels",
            c"Channels this deployment records beside web, mobile, api, ssh, vpn and sso.",
            c"Names separated by commas: 1 to 32 bytes of lowercase letters, digits, '_' and '-', starting with a letter; 'system' is reserved. Only a superuser can change it (docs/configuration.md).",
            &EXTRA_CHANNELS,
            GucContext::Suset,
            GucFlags::default(),
            Some(check_extra_channels),
            None,
            None,
        );
    }
    // SAFETY: as above.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"authaudit.witness_keys",
            c"Verifier keys of the witness whose signed checkpoints PostgreSQL accepts.",
            c"Key texts name+id+base64 (authaudit-sidecar witness-key) separated by commas; record_witness_checkpoint refuses notes not signed by one of them. Only a superuser can change it (docs/sidecar.md, \"The witness\").",
            &WITNESS_KEYS,
            GucContext::Suset,
            GucFlags::default(),
            Some(check_witness_keys),
            None,
            None,
        );
    }
    GucRegistry::define_string_guc(
        c"authaudit.rollup_database",
        c"The database whose per-minute event counts the rollup worker keeps for authaudit.event_rates.",
        c"Empty: no worker (event_rates then reads each tenant's last hour of rows). Set at server start (docs/configuration.md).",
        &ROLLUP_DATABASE,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"authaudit.lockout_snapshot_interval",
        c"Lockout events a rebuild replays between two snapshots of the engine's state.",
        c"Lockout answers and rebuilds replay from the latest snapshot before the period they need; 0 makes and uses none (docs/lockout.md, \"Snapshots\"). Only a superuser can change it.",
        &LOCKOUT_SNAPSHOT_INTERVAL,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"authaudit.max_past_skew",
        c"How far a live event's occurred_at may lie behind the server clock.",
        c"Older events are refused with SQLSTATE 22008 by record_event and record_events; history is recorded with authaudit.import_events. Only a superuser can change it.",
        &MAX_PAST_SKEW,
        1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
}

/// `authaudit.rollup_database` (`None`: empty, no worker).
pub fn rollup_database() -> Option<String> {
    ROLLUP_DATABASE
        .get()
        .and_then(|d| d.into_string().ok())
        .filter(|d| !d.is_empty())
}

/// The skew limit in microseconds.
pub fn max_future_skew_us() -> i64 {
    i64::from(MAX_FUTURE_SKEW.get()) * 1_000_000
}

/// Lockout events between two snapshots a rebuild makes (0: snapshots
/// are neither made nor used).
pub fn lockout_snapshot_interval() -> u64 {
    u64::try_from(LOCKOUT_SNAPSHOT_INTERVAL.get()).unwrap_or(0)
}

/// The past skew limit of live recording in microseconds.
pub fn max_past_skew_us() -> i64 {
    i64::from(MAX_PAST_SKEW.get()) * 1_000_000
}

/// The default lockout policy, from the `authaudit.lockout_*` parameters.
pub fn default_lockout_policy() -> authaudit_core::lockout::Policy {
    let s = |g: &GucSetting<i32>| i64::from(g.get()) * 1_000_000;
    authaudit_core::lockout::Policy {
        enabled: LOCKOUT_ENABLED.get(),
        max_failures: LOCKOUT_MAX_FAILURES.get(),
        failure_window_us: s(&LOCKOUT_FAILURE_WINDOW),
        lock_duration_us: s(&LOCKOUT_DURATION),
        max_lock_duration_us: s(&LOCKOUT_MAX_DURATION),
        ip_max_failures: LOCKOUT_IP_MAX_FAILURES.get(),
        ip_account_max_failures: LOCKOUT_IP_ACCOUNT_MAX_FAILURES.get(),
        ip_block_duration_us: s(&LOCKOUT_IP_BLOCK_DURATION),
        ..authaudit_core::lockout::Policy::default()
    }
}

/// `authaudit.min_retention` in minutes, for `apply_retention`.
#[pgrx::pg_extern(stable, name = "_min_retention_minutes")]
fn min_retention_minutes() -> i32 {
    MIN_RETENTION.get()
}
