//! Where a tenant's rows are kept: the extension's own tables on one
//! server, the tenant's shards on a Citus worker (docs/scale-out.md).
//!
//! The recording path reads and writes rows without statements
//! (`state_rows`, `row_writes`), by relation. On a node where
//! `authaudit.auth_log` is a Citus distributed table, the relation named
//! `auth_log` is an empty shell: the tenant's rows live in its shard
//! (`auth_log_<shardid>`, with indexes `<index>_<shardid>`), placed on one
//! worker. [`enter`] resolves the tenant's shards on this node for the
//! length of one call, and [`local`] maps a table or index to the tenant's
//! shard of it. A node that does not hold the tenant's shards refuses the
//! call (`55000`): a shell table is never written.
//!
//! On a server without Citus, [`distributed`] is one catalog lookup per
//! backend (again after a relation-cache invalidation) and nothing else
//! changes.

use crate::error::AuditError;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::{CStr, CString};

thread_local! {
    /// Whether auth_log is distributed here, forgotten on any relation
    /// cache invalidation (`create_distributed_table` changes it).
    static DISTRIBUTED: Cell<Option<bool>> = const { Cell::new(None) };
    static WATCHING: Cell<bool> = const { Cell::new(false) };
    /// The shards of the tenant of the call in progress.
    static CURRENT: RefCell<Option<Shards>> = const { RefCell::new(None) };
}

/// One tenant's shards held on this node: per distributed table (its oid),
/// the shard id.
struct Shards {
    tenant: String,
    by_table: HashMap<pg_sys::Oid, i64>,
    log_shard: pg_sys::Oid,
}

/// Runs inside PostgreSQL's invalidation processing: never panics.
#[pg_guard]
unsafe extern "C-unwind" fn forget(_arg: pg_sys::Datum, _relid: pg_sys::Oid) {
    DISTRIBUTED.with(|d| d.set(None));
}

/// Whether `authaudit.auth_log` is a Citus distributed table on this node.
pub fn distributed() -> Result<bool, AuditError> {
    if let Some(d) = DISTRIBUTED.with(Cell::get) {
        return Ok(d);
    }
    if !WATCHING.with(Cell::get) {
        // SAFETY: PostgreSQL's callback registry, once per backend.
        unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(forget), pg_sys::Datum::from(0)) };
        WATCHING.with(|w| w.set(true));
    }
    // SAFETY: a catalog lookup by name; a missing extension is InvalidOid.
    let citus = unsafe { pg_sys::get_extension_oid(c"citus".as_ptr(), true) };
    let d = citus != pg_sys::InvalidOid
        && Spi::get_one::<bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition \
              WHERE logicalrelid = 'authaudit.auth_log'::pg_catalog.regclass)",
        )?
        .unwrap_or(false);
    DISTRIBUTED.with(|c| c.set(Some(d)));
    Ok(d)
}

/// The tenant's shards for one call; when dropped, the shards entered
/// before (by a call this one runs inside) are current again.
pub struct Entered(Option<Shards>);

impl Drop for Entered {
    fn drop(&mut self) {
        let before = self.0.take();
        CURRENT.with(|c| *c.borrow_mut() = before);
    }
}

const LOCAL_SHARDS: &str = "\
SELECT p.logicalrelid::pg_catalog.oid, s.shardid
  FROM pg_catalog.pg_dist_partition p
  JOIN pg_catalog.pg_dist_shard s ON s.logicalrelid = p.logicalrelid
  JOIN pg_catalog.pg_dist_placement pl ON pl.shardid = s.shardid
 WHERE p.colocationid = (SELECT colocationid FROM pg_catalog.pg_dist_partition
                          WHERE logicalrelid = 'authaudit.auth_log'::pg_catalog.regclass)
   AND s.shardid = pg_catalog.get_shard_id_for_distribution_column(p.logicalrelid, $1)
   AND pl.groupid = (SELECT groupid FROM pg_catalog.pg_dist_local_group)
   AND pl.shardstate = 1";

/// Resolves `tenant`'s shards on this node for the call in progress. On a
/// single server: nothing. Refuses (`ShardElsewhere`) on a node that does
/// not hold them.
pub fn enter(tenant: &str) -> Result<Option<Entered>, AuditError> {
    if !distributed()? {
        return Ok(None);
    }
    let by_table: HashMap<pg_sys::Oid, i64> = Spi::connect(|client| {
        let table = client.select(LOCAL_SHARDS, None, &[tenant.into()])?;
        let mut rows = HashMap::new();
        for row in table {
            if let (Some(t), Some(s)) = (row.get::<pg_sys::Oid>(1)?, row.get::<i64>(2)?) {
                rows.insert(t, s);
            }
        }
        Ok::<_, AuditError>(rows)
    })?;
    let log = relation(c"auth_log").ok_or(AuditError::MissingRelation("auth_log".into()))?;
    let Some(&log_id) = by_table.get(&log) else {
        return Err(AuditError::ShardElsewhere(tenant.to_owned()));
    };
    let log_shard = shard_relid(c"auth_log", log_id)
        .ok_or_else(|| AuditError::ShardElsewhere(tenant.to_owned()))?;
    let before = CURRENT.with(|c| {
        c.borrow_mut().replace(Shards {
            tenant: tenant.to_owned(),
            by_table,
            log_shard,
        })
    });
    Ok(Some(Entered(before)))
}

/// The relation of schema `authaudit` named `name`, if it exists.
fn relation(name: &CStr) -> Option<pg_sys::Oid> {
    // SAFETY: catalog lookups by name.
    let id = unsafe {
        let nsp = pg_sys::get_namespace_oid(c"authaudit".as_ptr(), false);
        pg_sys::get_relname_relid(name.as_ptr(), nsp)
    };
    (id != pg_sys::InvalidOid).then_some(id)
}

/// The relation of schema `authaudit` named `name` with `_<shard>` added.
fn shard_relid(name: &CStr, shard: i64) -> Option<pg_sys::Oid> {
    relation(&CString::new(format!("{}_{shard}", name.to_string_lossy())).ok()?)
}

/// `sql` reading relation `local` of schema `authaudit` where it names
/// `authaudit.<table>` (followed by a space): a shard, or a reference
/// table's copy on this node.
pub fn reading(sql: &str, table: &str, local: &str) -> CString {
    let sql = sql.replace(
        &format!("authaudit.{table} "),
        &format!("authaudit.{} ", pgrx::spi::quote_identifier(local)),
    );
    CString::new(sql).expect("no NUL in a statement")
}

/// The relation to read and write for table or index `logical` (named
/// `name`): itself on a single server, the entered tenant's shard of it on
/// a Citus node.
pub fn local(logical: pg_sys::Oid, name: &'static CStr) -> Result<pg_sys::Oid, AuditError> {
    if !distributed()? {
        return Ok(logical);
    }
    // SAFETY: syscache lookups of an existing relation.
    let table = unsafe {
        if pg_sys::get_rel_relkind(logical) == pg_sys::RELKIND_INDEX as std::ffi::c_char {
            pg_sys::IndexGetRelation(logical, false)
        } else {
            logical
        }
    };
    CURRENT.with(|c| {
        let c = c.borrow();
        let Some(shards) = c.as_ref() else {
            return Err(AuditError::ShardElsewhere(String::new()));
        };
        shards
            .by_table
            .get(&table)
            .and_then(|s| shard_relid(name, *s))
            .ok_or_else(|| AuditError::ShardElsewhere(shards.tenant.clone()))
    })
}

/// Whether a tenant's shards are entered (on Citus, inside a call).
pub fn entered() -> bool {
    CURRENT.with(|c| c.borrow().is_some())
}

/// The name of the entered tenant's auth_log shard (`None` on a single
/// server).
pub fn log_shard_name() -> Option<String> {
    CURRENT.with(|c| {
        c.borrow().as_ref().map(|s| {
            // SAFETY: a syscache lookup of an existing relation.
            let name = unsafe { pg_sys::get_rel_name(s.log_shard) };
            // SAFETY: a palloc'd, NUL-terminated name (or NULL).
            let name = unsafe { name.as_ref().map(|n| CStr::from_ptr(n)) };
            name.map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
    })
}

/// The name of this node's copy of reference table `name` (`None` on a
/// single server, or where the node holds no copy).
pub fn reference_copy(name: &CStr) -> Result<Option<String>, AuditError> {
    if !distributed()? {
        return Ok(None);
    }
    let table = format!("authaudit.{}", name.to_string_lossy());
    let shard = Spi::get_one_with_args::<i64>(
        "SELECT shardid FROM pg_catalog.pg_dist_shard \
          WHERE logicalrelid = $1::pg_catalog.regclass",
        &[table.as_str().into()],
    )?;
    Ok(shard.and_then(|s| {
        shard_relid(name, s)?;
        Some(format!("{}_{s}", name.to_string_lossy()))
    }))
}
