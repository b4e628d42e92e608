//! Configuration parameters, all named `authaudit.*` and documented in
//! `docs/configuration.md`.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// How far (seconds) an event's `occurred_at` may lie ahead of the server clock.
pub static MAX_FUTURE_SKEW: GucSetting<i32> = GucSetting::<i32>::new(300);

/// Whether tenants without a `lockout_policy` row lock accounts.
pub static LOCKOUT_ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);

/// Registers every parameter; called once from `_PG_init`.
pub fn register() {
    GucRegistry::define_bool_guc(
        c"authaudit.lockout_enabled",
        c"Whether tenants without a lockout_policy row lock accounts.",
        c"The default lockout policy's enabled flag; a tenant's lockout_policy row overrides it.",
        &LOCKOUT_ENABLED,
        GucContext::Suset,
        GucFlags::default(),
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
}

/// The skew limit in microseconds.
pub fn max_future_skew_us() -> i64 {
    i64::from(MAX_FUTURE_SKEW.get()) * 1_000_000
}
