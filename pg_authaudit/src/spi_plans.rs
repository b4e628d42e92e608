//! The extension's internal statements, each prepared once per backend and
//! kept for the session (PostgreSQL re-plans a kept plan by itself when a
//! table it reads changes).

use crate::error::AuditError;
use pgrx::datum::DatumWithOid;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiTupleTable};
use pgrx::{PgBuiltInOids, PgOid};
use std::cell::RefCell;
use std::collections::HashMap;

thread_local! {
    static PLANS: RefCell<HashMap<&'static str, OwnedPreparedStatement>> = RefCell::new(HashMap::new());
}

/// Runs a kept plan of `sql` (parameters typed `types`) under `key`.
pub fn run<'c>(
    client: &mut SpiClient<'c>,
    key: &'static str,
    sql: &str,
    types: &[PgBuiltInOids],
    args: &[DatumWithOid<'_>],
) -> Result<SpiTupleTable<'c>, AuditError> {
    PLANS.with(|plans| {
        let mut plans = plans.borrow_mut();
        if !plans.contains_key(key) {
            let oids: Vec<PgOid> = types.iter().map(|t| PgOid::BuiltIn(*t)).collect();
            let stmt = client.prepare_mut(sql, &oids)?.keep();
            plans.insert(key, stmt);
        }
        let stmt = plans.get(key).expect("just inserted");
        Ok(client.update(stmt, None, args)?)
    })
}
