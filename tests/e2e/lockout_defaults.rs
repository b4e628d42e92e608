//! The default lockout policy is stated in three places a reader meets:
//! `lockout_policy`'s column defaults (a tenant's row as first written),
//! the `authaudit.lockout_*` parameters' defaults (tenants without a row)
//! and `authaudit_core::lockout::defaults` (the engine's and the replay's).
//! A change to one of them alone fails here.

use authaudit_core::lockout::{defaults, Increment, Policy};

#[test]
fn the_schema_the_parameters_and_the_engine_agree_on_the_default_policy() {
    let db = authaudit_tests::Cluster::shared().fresh_db_with_lockout("lockout_defaults");
    let mut c = db.connect();
    let mut tx = c.transaction().unwrap();
    // A tenant's row as its columns' defaults make it (rolled back).
    let row = tx
        .query_one(
            "INSERT INTO authaudit.lockout_policy (tenant_id) VALUES ('defaults-probe')
             RETURNING enabled, max_failures, extract(epoch FROM failure_window)::int4,
                       extract(epoch FROM lock_duration)::int4, lock_increment,
                       extract(epoch FROM max_lock_duration)::int4, permanent_after_locks,
                       quick_failure_interval IS NULL, ip_max_failures,
                       extract(epoch FROM ip_block_duration)::int4, ip_account_max_failures,
                       account_key_folding, ipv6_prefix::int4",
            &[],
        )
        .unwrap();
    let core = Policy::default();
    assert!(row.get::<_, bool>(0) && core.enabled);
    assert_eq!(row.get::<_, i32>(1), defaults::MAX_FAILURES);
    assert_eq!(row.get::<_, i32>(2), defaults::FAILURE_WINDOW_S);
    assert_eq!(row.get::<_, i32>(3), defaults::LOCK_DURATION_S);
    assert_eq!(row.get::<_, String>(4), "multiple");
    assert_eq!(core.increment, Increment::Multiple);
    assert_eq!(row.get::<_, i32>(5), defaults::MAX_LOCK_DURATION_S);
    assert_eq!(row.get::<_, Option<i32>>(6), core.permanent_after_locks);
    assert!(row.get::<_, bool>(7) && core.quick_failure_interval_us.is_none());
    assert_eq!(row.get::<_, i32>(8), defaults::IP_MAX_FAILURES);
    assert_eq!(row.get::<_, i32>(9), defaults::IP_BLOCK_DURATION_S);
    assert_eq!(row.get::<_, i32>(10), defaults::IP_ACCOUNT_MAX_FAILURES);
    assert_eq!(row.get::<_, String>(11), "canonical");
    assert_eq!(row.get::<_, i32>(12), defaults::IPV6_PREFIX);
    tx.rollback().unwrap();
    // The engine's default policy is the constants'.
    assert_eq!(core.max_failures, defaults::MAX_FAILURES);
    assert_eq!(
        core.failure_window_us,
        i64::from(defaults::FAILURE_WINDOW_S) * 1_000_000
    );
    assert_eq!(
        core.ip_block_duration_us,
        i64::from(defaults::IP_BLOCK_DURATION_S) * 1_000_000
    );
    // The parameters' built-in values (not this database's settings).
    let boot: std::collections::HashMap<String, String> = c
        .query(
            "SELECT name, boot_val FROM pg_settings WHERE name LIKE 'authaudit.lockout%'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (name, value) in [
        ("authaudit.lockout_enabled", "on".to_string()),
        (
            "authaudit.lockout_max_failures",
            defaults::MAX_FAILURES.to_string(),
        ),
        (
            "authaudit.lockout_failure_window",
            defaults::FAILURE_WINDOW_S.to_string(),
        ),
        (
            "authaudit.lockout_duration",
            defaults::LOCK_DURATION_S.to_string(),
        ),
        (
            "authaudit.lockout_max_duration",
            defaults::MAX_LOCK_DURATION_S.to_string(),
        ),
        (
            "authaudit.lockout_ip_max_failures",
            defaults::IP_MAX_FAILURES.to_string(),
        ),
        (
            "authaudit.lockout_ip_account_max_failures",
            defaults::IP_ACCOUNT_MAX_FAILURES.to_string(),
        ),
        (
            "authaudit.lockout_ip_block_duration",
            defaults::IP_BLOCK_DURATION_S.to_string(),
        ),
        (
            "authaudit.lockout_account_key_folding",
            "canonical".to_string(),
        ),
        (
            "authaudit.lockout_ipv6_prefix",
            defaults::IPV6_PREFIX.to_string(),
        ),
    ] {
        // Enum parameters name their values as the library spells them
        // (`Canonical`); PostgreSQL matches them case-insensitively.
        assert_eq!(
            boot.get(name).map(|v| v.to_lowercase()),
            Some(value),
            "{name}: {boot:?}"
        );
    }
}
