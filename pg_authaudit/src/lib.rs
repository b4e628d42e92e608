//! pg_authaudit: a tamper-evident, queryable authentication event log.
//!
//! The recording pipeline (`record.rs`), the chain heads, the lockout
//! engine, verification and the scope checks are Rust, delegating the pure
//! logic to `authaudit-core`; tables, policies and the SQL-facing wrappers
//! are in `sql/`.

// SQL-facing functions return pgrx's `ErrorReport` (large, by design) and
// spell out `TableIterator` row types inline, as pgrx's SQL generator needs.
#![allow(clippy::result_large_err, clippy::type_complexity)]

use pgrx::prelude::*;

mod batch_input;
mod cef;
mod chain;
mod channels;
mod error;
mod gucs;
mod heads;
mod legacy;
mod lockout_engine;
mod log_redaction;
mod login_check;
mod merkle;
mod pipeline;
mod placement;
mod record;
mod record_batch;
mod record_sql;
mod replay;
mod retention;
mod rollup_worker;
mod row_writes;
mod scope;
mod shmem;
mod snapshots;
mod spi_plans;
mod sql_values;
mod state_rows;
mod state_tables;
mod stored_rows;
mod time;
mod token;
mod verify;
mod witness;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!(
    "../../sql/record.sql",
    name = "record",
    requires = [
        "schema",
        chain::chain_append,
        chain::chain_unappend,
        chain::chain_settled_head,
        record::event_body,
        record_sql::record_internal,
        record_sql::record_event,
        record_batch::record_events,
        record_batch::record_events_rows,
        record_batch::import_events,
        replay::lockout_replay,
        replay::rebuild_lockout,
        replay::rebuild_after_import,
        replay::hold_for_rebuild,
        scope::authorise_event,
        scope::writes_tenant,
        scope::writer_role,
        scope::_policy_changed
    ]
);
extension_sql_file!(
    "../../sql/token.sql",
    name = "token",
    requires = ["record", token::token_facts, heads::lock_token_id]
);
extension_sql_file!("../../sql/cef.sql", name = "cef", requires = ["record"]);
extension_sql_file!(
    "../../sql/checkpoint.sql",
    name = "checkpoint",
    requires = [
        "token",
        verify::verify_chain_range,
        retention::allow_retention,
        retention::end_retention,
        scope::writer_is_overseer,
        scope::writer_is_admin,
        gucs::min_retention_minutes
    ]
);
extension_sql_file!(
    "../../sql/mirror.sql",
    name = "mirror",
    requires = ["checkpoint"]
);
extension_sql_file!(
    "../../sql/operations.sql",
    name = "operations",
    requires = ["record"]
);
extension_sql_file!(
    "../../sql/investigation.sql",
    name = "investigation",
    requires = ["record", replay::lockout_replay]
);
extension_sql_file!(
    "../../sql/evidence.sql",
    name = "evidence",
    requires = ["record", merkle::inclusion_proof]
);
extension_sql_file!(
    "../../sql/witness.sql",
    name = "witness",
    requires = [
        "checkpoint",
        "evidence",
        witness::open_witness_checkpoint,
        scope::writer_is_overseer,
        scope::writer_role
    ]
);
extension_sql_file!(
    "../../sql/scale_out.sql",
    name = "scale_out",
    requires = [
        "record",
        "checkpoint",
        "operations",
        "witness",
        record_batch::record_tenant_events_rows
    ]
);
extension_sql_file!("../../sql/security.sql", name = "security", finalize);

#[allow(non_snake_case)]
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // A Rust panic becomes an ERROR whose detail would carry a backtrace
    // when RUST_BACKTRACE is set in the server's environment: no backtrace
    // is ever captured, so none reaches a client (RUST_LIB_BACKTRACE rules
    // std's captures, whatever RUST_BACKTRACE says).
    // SAFETY: _PG_init runs while the process has one thread.
    unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    gucs::register();
    heads::init();
    scope::init();
    log_redaction::init();
    rollup_worker::init();
}

/// The extension's version, as installed.
#[pg_extern(immutable, parallel_safe)]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries = 'pg_authaudit'"]
    }
}
