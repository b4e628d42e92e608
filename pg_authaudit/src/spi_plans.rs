//! The extension's internal statements, each prepared once per backend and
//! kept for the session (PostgreSQL re-plans a kept plan by itself when a
//! table it reads changes). A statement about one event runs with its
//! generic plan: PostgreSQL's plan cache would otherwise keep planning
//! statements whose parameters switch parts of them on and off anew for
//! every call (a custom plan looks cheaper). A statement over a batch's
//! arrays is planned for its arrays (`Plans::PerCall`): a generic plan
//! cannot see how many elements they hold, and one made while the tables
//! were small scans them whole.

use crate::error::AuditError;
use pgrx::datum::DatumWithOid;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiTupleTable};
use pgrx::{pg_sys, PgBuiltInOids, PgOid};
use std::cell::RefCell;
use std::collections::HashMap;

thread_local! {
    static PLANS: RefCell<HashMap<&'static str, OwnedPreparedStatement>> = RefCell::new(HashMap::new());
}

/// Runs a kept plan of `sql` (parameters typed `types`) under `key`, with
/// its generic plan.
pub fn run<'c>(
    client: &mut SpiClient<'c>,
    key: &'static str,
    sql: &str,
    types: &[PgBuiltInOids],
    args: &[DatumWithOid<'_>],
) -> Result<SpiTupleTable<'c>, AuditError> {
    run_with(client, key, sql, types, args, Plans::Generic)
}

/// How a kept statement is planned.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Plans {
    /// Once, for any parameters.
    Generic,
    /// As PostgreSQL's plan cache decides (for the parameters of the call
    /// while a custom plan is cheaper).
    PerCall,
}

/// Runs a kept plan of `sql` under `key`, planned as `plans` says.
pub fn run_with<'c>(
    client: &mut SpiClient<'c>,
    key: &'static str,
    sql: &str,
    types: &[PgBuiltInOids],
    args: &[DatumWithOid<'_>],
    plans: Plans,
) -> Result<SpiTupleTable<'c>, AuditError> {
    PLANS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if !cache.contains_key(key) {
            let oids: Vec<PgOid> = types.iter().map(|t| PgOid::BuiltIn(*t)).collect();
            let stmt = client.prepare_mut(sql, &oids)?.keep();
            cache.insert(key, stmt);
        }
        let stmt = cache.get(key).expect("just inserted");
        let _generic = (plans == Plans::Generic).then(GenericPlans::now);
        Ok(client.update(stmt, None, args)?)
    })
}

/// `plan_cache_mode = force_generic_plan` until dropped (also when an error
/// unwinds through it), the setting before restored then.
struct GenericPlans(std::ffi::c_int);

impl GenericPlans {
    fn now() -> GenericPlans {
        // SAFETY: a plain global of this backend, read by the plan cache
        // when a statement runs; set back by Drop.
        unsafe {
            let before = pg_sys::plan_cache_mode;
            pg_sys::plan_cache_mode =
                pg_sys::PlanCacheMode::PLAN_CACHE_MODE_FORCE_GENERIC_PLAN as std::ffi::c_int;
            GenericPlans(before)
        }
    }
}

impl Drop for GenericPlans {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { pg_sys::plan_cache_mode = self.0 }
    }
}
