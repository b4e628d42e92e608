//! In-database tests run by `cargo pgrx test`: each function directly and
//! through SQL.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn record(log_id: &str, tenant: &str, event_type: &str) -> i64 {
        Spi::get_one::<i64>(&format!(
            "SELECT (authaudit.record_event(log_id => '{log_id}', tenant_id => '{tenant}', \
             event_type => '{event_type}', user_id => 'alice', channel => 'web', \
             ip => '192.0.2.1', metadata => '{{\"attempt\": 3}}')).seq"
        ))
        .unwrap()
        .unwrap()
    }

    #[pg_test]
    fn no_backtrace_is_captured_whatever_the_environment() {
        // SAFETY: the test backend runs one thread.
        unsafe { std::env::set_var("RUST_BACKTRACE", "1") };
        assert_eq!(
            std::backtrace::Backtrace::capture().status(),
            std::backtrace::BacktraceStatus::Disabled
        );
    }

    #[pg_test]
    fn extension_reports_its_version() {
        let v = Spi::get_one::<&str>("SELECT authaudit.version()").unwrap();
        assert_eq!(v, Some(env!("CARGO_PKG_VERSION")));
    }

    #[pg_test]
    fn events_chain_and_verify() {
        assert_eq!(
            record("00000000-0000-4000-8000-000000000001", "t1", "login_failed"),
            1
        );
        assert_eq!(
            record(
                "00000000-0000-4000-8000-000000000002",
                "t1",
                "login_success"
            ),
            2
        );
        assert_eq!(
            record("00000000-0000-4000-8000-000000000003", "t2", "login_failed"),
            1
        );
        let ok = Spi::get_one::<bool>("SELECT ok FROM authaudit.verify_chain('t1')").unwrap();
        assert_eq!(ok, Some(true));
    }

    #[pg_test]
    fn a_retry_returns_the_original_row() {
        let id = "00000000-0000-4000-8000-0000000000aa";
        assert_eq!(record(id, "t1", "login_failed"), 1);
        assert_eq!(record(id, "t1", "login_failed"), 1);
        let n = Spi::get_one::<i64>("SELECT count(*) FROM authaudit.auth_log").unwrap();
        assert_eq!(n, Some(1));
    }

    #[pg_test(error = "pg_authaudit: unknown event type \"login_maybe\"")]
    fn unknown_event_types_are_refused() {
        record("00000000-0000-4000-8000-000000000001", "t1", "login_maybe");
    }

    #[pg_test]
    fn chain_functions_match_the_core_crate() {
        let genesis = Spi::get_one::<Vec<u8>>("SELECT authaudit._chain_genesis('t1')")
            .unwrap()
            .unwrap();
        assert_eq!(
            genesis,
            authaudit_core::chain::ChainHead::genesis("t1")
                .to_bytes()
                .to_vec()
        );
    }

    #[pg_test]
    fn every_recorded_field_is_in_the_body() {
        let body = |metadata: &str, ip: &str| {
            Spi::get_one::<Vec<u8>>(&format!(
                "SELECT authaudit._event_body('00000000-0000-4000-8000-000000000001', 't1', NULL, \
                 'login_failed', 'alice', '{ip}', NULL, 'web', NULL, now(), '{metadata}')"
            ))
            .unwrap()
            .unwrap()
        };
        assert_ne!(body("{}", "192.0.2.1"), body("{\"k\": 1}", "192.0.2.1"));
        assert_ne!(body("{}", "192.0.2.1"), body("{}", "192.0.2.2"));
    }
}
