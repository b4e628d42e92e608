//! The rollup worker: a background worker, connected to
//! `authaudit.rollup_database`, that runs `authaudit.roll_up_event_rates()`
//! once a second, so that `authaudit.event_rates` reads per-minute counts
//! and the rows recorded since the last pass, not the hour's rows
//! (docs/sql-reference.md, "event_rates").
//!
//! The worker writes only the rollup tables; the log and its chain are
//! untouched, and `event_rates` stays exact without it (a tenant the rollup
//! has not looked at within five minutes is counted from its rows). In a
//! database without the extension, or before its `ALTER EXTENSION ...
//! UPDATE` to a version with the rollup, it waits. It starts once recovery
//! is finished (never on a standby) and, after an error, again ten seconds
//! later.

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::prelude::*;
use std::time::Duration;

/// How often a pass runs.
const PASS_EVERY: Duration = Duration::from_secs(1);

/// Whether the database has the extension's rollup function: the function
/// of that name that belongs to the extension pg_authaudit (which only a
/// superuser can create), not any function of that name. The worker runs as
/// a superuser: a database owner could otherwise create a schema
/// `authaudit` before the extension and have the worker run its function.
const INSTALLED: &str = "SELECT EXISTS (
    SELECT FROM pg_catalog.pg_depend d
      JOIN pg_catalog.pg_extension e ON e.oid OPERATOR(pg_catalog.=) d.refobjid
     WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
       AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
       AND d.deptype OPERATOR(pg_catalog.=) 'e'
       AND e.extname OPERATOR(pg_catalog.=) 'pg_authaudit'
       AND d.objid OPERATOR(pg_catalog.=)
           pg_catalog.to_regprocedure('authaudit.roll_up_event_rates(pg_catalog.int8)'))";

/// Every name the worker's statements use is resolved in the catalog (and
/// the extension's schema, qualified), never in a schema others can create
/// objects in.
const SEARCH_PATH: &str = "SET LOCAL search_path = pg_catalog, pg_temp";

/// Registers the worker when the library is preloaded and a database is
/// configured. Called from `_PG_init`.
pub fn init() {
    if !crate::shmem::preloading() || crate::gucs::rollup_database().is_none() {
        return;
    }
    BackgroundWorkerBuilder::new("pg_authaudit rollup")
        .set_type("pg_authaudit rollup")
        .set_library("pg_authaudit")
        .set_function("authaudit_rollup_worker_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(10)))
        .load();
}

/// The worker's entry point (named in `init`).
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn authaudit_rollup_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let Some(database) = crate::gucs::rollup_database() else {
        return;
    };
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    while BackgroundWorker::wait_latch(Some(PASS_EVERY)) {
        if BackgroundWorker::sighup_received() {
            // SAFETY: re-reads the configuration files, as any backend does
            // on SIGHUP, between transactions.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        BackgroundWorker::transaction(|| {
            Spi::connect_mut(|client| {
                client
                    .update(SEARCH_PATH, None, &[])
                    .unwrap_or_else(|e| pgrx::error!("pg_authaudit rollup: {e}"));
                let installed = client
                    .select(INSTALLED, None, &[])
                    .ok()
                    .and_then(|t| t.first().get_one::<bool>().ok().flatten())
                    .unwrap_or(false);
                if installed {
                    client
                        .update("SELECT authaudit.roll_up_event_rates()", None, &[])
                        .map(|_| ())
                        .unwrap_or_else(|e| pgrx::error!("pg_authaudit rollup: {e}"));
                }
            })
        });
        // Flush this process's statistics (pg_stat_database counts its
        // passes), as a backend does when it goes idle.
        // SAFETY: between transactions, in a backend connected to a database.
        unsafe {
            pg_sys::pgstat_report_stat(false);
        }
    }
}
