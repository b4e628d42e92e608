//! Who is asking, and what `authaudit.tenant_scope` lets that role do. One
//! notion of the asker serves the row-level security policies, the row
//! checks and the recording functions alike (docs/security.md):
//!
//! - a read is asked by the current role at the moment the check runs (for a
//!   query through a view, the role running the query); a policy written
//!   `TO authaudit_reader` is only half the check, so the row check also
//!   requires that same role to have the privileges of `authaudit_reader`;
//! - a write is asked by the role the session acts as outside the
//!   extension's security-definer functions (its login role, or the role it
//!   `SET ROLE` to).
//!
//! Bindings are cached per backend and role. Every change to
//! `authaudit.tenant_scope` bumps a generation counter in shared memory
//! (when the change is made and again once its transaction has ended), and
//! the cache is rebuilt when the counter moved. The rebuild reads the
//! bindings with the latest snapshot, not the transaction's: a cache built
//! inside a long REPEATABLE READ transaction therefore never holds a binding
//! that was revoked before the counter it is stamped with.

use crate::error::{AuditError, SqlResult};
use crate::{shmem, spi_plans};
use authaudit_core::event::{Channel, EventType};
use authaudit_core::scope::{check_writer_event, Binding, Scope, WriteReach};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{register_xact_callback, PgXactCallbackEvent};
use std::cell::{Cell, RefCell};
use std::ffi::CStr;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicU64, Ordering};

static mut GENERATION: *mut AtomicU64 = null_mut();
/// Installs the shared counter; only while preload libraries are loaded.
pub fn init() {
    if shmem::preloading() {
        shmem::register(shmem_request, shmem_startup);
    }
}

fn shmem_request() {
    // SAFETY: the postmaster's shmem request phase.
    unsafe { pg_sys::RequestAddinShmemSpace(std::mem::size_of::<AtomicU64>()) };
}

fn shmem_startup() {
    // SAFETY: the postmaster after creating shared memory.
    unsafe {
        let mut found = false;
        let p = pg_sys::ShmemInitStruct(
            c"pg_authaudit scope generation".as_ptr(),
            std::mem::size_of::<AtomicU64>(),
            &mut found,
        ) as *mut AtomicU64;
        if !found {
            p.write(AtomicU64::new(1));
        }
        GENERATION = p;
    }
}

fn generation() -> Option<u64> {
    // SAFETY: set once by the postmaster before backends fork.
    let p = unsafe { GENERATION };
    // SAFETY: a valid AtomicU64 in shared memory when non-null.
    (!p.is_null()).then(|| unsafe { (*p).load(Ordering::Acquire) })
}

fn bump() {
    // SAFETY: as in `generation`.
    let p = unsafe { GENERATION };
    if !p.is_null() {
        // SAFETY: a valid AtomicU64 in shared memory.
        unsafe { (*p).fetch_add(1, Ordering::AcqRel) };
    }
}

struct Cached {
    role: pg_sys::Oid,
    generation: u64,
    scope: Scope,
}

thread_local! {
    /// The latest scopes built, one per role asked about (readers and the
    /// writer role of the recording functions differ within one call).
    static CACHE: RefCell<Vec<Cached>> = const { RefCell::new(Vec::new()) };
    static BUMP_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// Roles whose scopes are cached at once per backend.
const CACHED_ROLES: usize = 4;

/// A binding holds its role's oid (`role_oid`): a dropped role's bindings
/// bind no role created later under its name.
const BINDINGS: &CStr = c"SELECT s.tenant_id, s.org_id, s.can_read, s.can_write \
                          FROM authaudit.tenant_scope s \
                          WHERE s.role_oid OPERATOR(pg_catalog.=) $1::pg_catalog.int8::pg_catalog.oid";

/// Runs `f` on the bindings of `role`, from the cache when it is current.
fn with_scope<T>(role: pg_sys::Oid, f: impl Fn(&Scope) -> T) -> T {
    // Read before the bindings: a change committed after this read bumps
    // the counter past it, so the entry built below is rebuilt next time.
    let generation = generation();
    if let Some(g) = generation {
        let hit = CACHE.with(|c| {
            c.borrow()
                .iter()
                .find(|c| c.role == role && c.generation == g)
                .map(|c| f(&c.scope))
        });
        if let Some(v) = hit {
            return v;
        }
    }
    let scope = load(role);
    let v = f(&scope);
    if let Some(g) = generation {
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            c.retain(|e| e.role != role);
            if c.len() >= CACHED_ROLES {
                c.remove(0);
            }
            c.push(Cached {
                role,
                generation: g,
                scope,
            });
        });
    }
    v
}

/// The bindings of `role`, read with the latest snapshot (a revocation
/// committed after this transaction's snapshot is seen, in any isolation).
fn load(role: pg_sys::Oid) -> Scope {
    let by_oid = crate::legacy::sql().is_ok_and(|s| s == crate::legacy::Sql::Current);
    let (sql, key) = if by_oid {
        let oid = i64::from(u32::from(role));
        (
            BINDINGS,
            (pg_sys::INT8OID, oid.into_datum().expect("an oid")),
        )
    } else {
        let name = role_name(role);
        (
            crate::legacy::BINDINGS_BY_NAME,
            (pg_sys::TEXTOID, name.as_str().into_datum().expect("text")),
        )
    };
    // On Citus, tenant_scope is a reference table: its copy on this node is
    // read directly, as a query inside a shard's query may read no
    // distributed relation (docs/scale-out.md, "Readers").
    let local = crate::placement::reference_copy(c"tenant_scope")
        .expect("read Citus metadata")
        .map(|copy| crate::placement::reading(sql.to_str().expect("ASCII"), "tenant_scope", &copy));
    let sql = local.as_deref().unwrap_or(sql);
    let bindings = Spi::connect(|_| {
        spi_plans::read_latest(sql, &[key], |row| {
            Ok(Binding {
                tenant: row.get(1)?.unwrap_or_default(),
                org: row.get(2)?,
                can_read: row.get(3)?.unwrap_or(false),
                can_write: row.get(4)?.unwrap_or(false),
            })
        })
    })
    .expect("read authaudit.tenant_scope");
    Scope::new(bindings)
}

/// The name of a role (empty when it no longer exists).
pub fn role_name(role: pg_sys::Oid) -> String {
    // SAFETY: GetUserNameFromId with noerr returns NULL or a palloc'd string.
    unsafe {
        let p = pg_sys::GetUserNameFromId(role, true);
        if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

/// The role asking for a read: the current role.
fn reader() -> pg_sys::Oid {
    // SAFETY: reads the current role.
    unsafe { pg_sys::GetUserId() }
}

/// The role asking for a write: the session's role outside security-definer
/// functions (the login role, or the role it SET ROLE to).
pub fn writer() -> pg_sys::Oid {
    // SAFETY: reads the outer role.
    unsafe { pg_sys::GetOuterUserId() }
}

thread_local! {
    /// (role, group, whether role has the privileges of group), forgotten
    /// whenever a role or a role membership changes (syscache callbacks).
    static MEMBERSHIP: RefCell<Vec<(pg_sys::Oid, &'static CStr, bool)>> = const { RefCell::new(Vec::new()) };
    static MEMBERSHIP_WATCHED: Cell<bool> = const { Cell::new(false) };
}

#[pg_guard]
unsafe extern "C-unwind" fn forget_membership(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    MEMBERSHIP.with(|m| m.borrow_mut().clear());
}

/// Whether `role` has the privileges of the group role `group` (what a
/// policy written `TO group` checks), cached until roles change.
fn has_privs_of(role: pg_sys::Oid, group: &'static CStr) -> bool {
    if !MEMBERSHIP_WATCHED.with(Cell::get) {
        // SAFETY: registers this backend's callbacks once; they only clear
        // a thread-local cache.
        unsafe {
            for cache in [
                pg_sys::SysCacheIdentifier::AUTHMEMMEMROLE,
                pg_sys::SysCacheIdentifier::AUTHOID,
            ] {
                pg_sys::CacheRegisterSyscacheCallback(
                    cache as i32,
                    Some(forget_membership),
                    pg_sys::Datum::from(0),
                );
            }
        }
        MEMBERSHIP_WATCHED.with(|w| w.set(true));
    }
    let hit = MEMBERSHIP.with(|m| {
        m.borrow()
            .iter()
            .find(|(r, g, _)| *r == role && *g == group)
            .map(|e| e.2)
    });
    if let Some(v) = hit {
        return v;
    }
    // SAFETY: catalog lookups; a missing group role is no privilege.
    let v = unsafe {
        let g = pg_sys::get_role_oid(group.as_ptr(), true);
        g != pg_sys::InvalidOid && pg_sys::has_privs_of_role(role, g)
    };
    MEMBERSHIP.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() >= 16 {
            m.clear();
        }
        m.push((role, group, v));
    });
    v
}

fn is_superuser(role: pg_sys::Oid) -> bool {
    // SAFETY: a catalog lookup.
    unsafe { pg_sys::superuser_arg(role) }
}

/// The tenants the current role may read (each once): the policies' index
/// condition, so the index is probed once per bound tenant. Empty for a role
/// without the privileges of `authaudit_reader`.
#[pg_extern(stable, parallel_restricted, name = "_read_tenants")]
fn read_tenants() -> Vec<String> {
    let role = reader();
    if !has_privs_of(role, c"authaudit_reader") {
        return Vec::new();
    }
    with_scope(role, |s| s.read_tenants().to_vec())
}

/// Whether the current role may read a row of `tenant` in organisation
/// `org` (NULL: asks for tenant-wide access): the policies' row check. The
/// role must itself have the privileges of `authaudit_reader`, whoever owns
/// the view the query went through.
#[pg_extern(stable, parallel_restricted, name = "_may_read")]
fn may_read(tenant: &str, org: Option<&str>) -> bool {
    let role = reader();
    has_privs_of(role, c"authaudit_reader") && with_scope(role, |s| s.may_read(tenant, org))
}

/// Whether the current role may verify (and so read every row of) a
/// tenant's chain: a superuser, an `authaudit_auditor`, or a reader with a
/// tenant-wide binding.
#[pg_extern(stable, parallel_restricted, name = "_may_verify")]
pub fn may_verify(tenant: &str) -> bool {
    let role = reader();
    is_superuser(role)
        || has_privs_of(role, c"authaudit_auditor")
        || (has_privs_of(role, c"authaudit_reader")
            && with_scope(role, |s| s.may_read_tenant(tenant)))
}

/// What the caller of a `SECURITY DEFINER` function (the session's role,
/// not the definer) may read of `tenant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerReads {
    Nothing,
    /// Every row: a superuser, an auditor or a tenant-wide reader.
    Tenant,
    /// The rows of the organisations it is bound to (`caller_may_read`).
    Organisations,
}

/// The caller's read access to `tenant` (see [`CallerReads`]).
pub fn caller_reads(tenant: &str) -> CallerReads {
    let role = writer();
    if is_superuser(role) || has_privs_of(role, c"authaudit_auditor") {
        return CallerReads::Tenant;
    }
    if !has_privs_of(role, c"authaudit_reader") {
        return CallerReads::Nothing;
    }
    with_scope(role, |s| {
        if s.may_read_tenant(tenant) {
            CallerReads::Tenant
        } else if s.read_tenants().iter().any(|t| t == tenant) {
            CallerReads::Organisations
        } else {
            CallerReads::Nothing
        }
    })
}

/// Whether the caller may read a row of `tenant` in organisation `org`.
pub fn caller_may_read(tenant: &str, org: Option<&str>) -> bool {
    let role = writer();
    is_superuser(role)
        || has_privs_of(role, c"authaudit_auditor")
        || (has_privs_of(role, c"authaudit_reader")
            && with_scope(role, |s| s.may_read(tenant, org)))
}

/// Whether the caller may re-derive `tenant`'s lockout state: a superuser,
/// an `authaudit_admin`, or a writer bound to the whole tenant.
pub fn may_rebuild(tenant: &str) -> bool {
    let role = writer();
    is_superuser(role)
        || has_privs_of(role, c"authaudit_admin")
        || with_scope(role, |s| {
            matches!(s.write_reach(tenant, None), Some(WriteReach::Tenant))
        })
}

/// How far the writer reaches in `tenant` for an event of organisation
/// `org`, or None when it may not write it.
fn write_reach(tenant: &str, org: Option<&str>) -> Option<WriteReach> {
    let role = writer();
    if is_superuser(role) {
        return Some(WriteReach::Tenant);
    }
    with_scope(role, |s| s.write_reach(tenant, org))
}

/// Whether the writer has any write binding for `tenant` (checkpoints).
#[pg_extern(stable, name = "_writes_tenant")]
fn writes_tenant(tenant: &str) -> bool {
    let role = writer();
    is_superuser(role) || with_scope(role, |s| s.writes_tenant(tenant))
}

/// Whether the writer has the privileges of `authaudit_auditor` or `authaudit_admin`.
#[pg_extern(stable, name = "_writer_is_overseer")]
fn writer_is_overseer() -> bool {
    let role = writer();
    is_superuser(role)
        || has_privs_of(role, c"authaudit_auditor")
        || has_privs_of(role, c"authaudit_admin")
}

/// Whether the writer may apply retention: `authaudit_admin` or a superuser.
#[pg_extern(stable, name = "_writer_is_admin")]
fn writer_is_admin() -> bool {
    let role = writer();
    is_superuser(role) || has_privs_of(role, c"authaudit_admin")
}

/// The writer's name, for messages and `created_by` columns.
#[pg_extern(stable, name = "_writer_role")]
fn writer_role() -> String {
    role_name(writer())
}

/// Checks a writer's event before anything is locked or written: the
/// writer's binding covers the tenant and organisation (42501), and the
/// event is not one only the extension records (engine event types, the
/// `system` channel, the `_authaudit` metadata key: 22023). Returns the
/// organisation the writer is confined to, NULL for a tenant-wide writer;
/// the lockout engine refuses effects on accounts outside it.
#[pg_extern(stable, name = "_authorise_event")]
fn authorise_event(
    tenant_id: Option<&str>,
    org_id: Option<&str>,
    event_type: Option<&str>,
    channel: Option<&str>,
    metadata: Option<crate::sql_values::Jsonb>,
) -> SqlResult<Option<String>> {
    let reserved = metadata.is_some_and(|m| m.has_key("_authaudit"));
    Ok(authorise(tenant_id, org_id, event_type, channel, reserved)?)
}

/// The check of `_authorise_event` (`reserved`: the metadata holds the
/// `_authaudit` key): the organisation the writer is confined to.
pub fn authorise(
    tenant_id: Option<&str>,
    org_id: Option<&str>,
    event_type: Option<&str>,
    channel: Option<&str>,
    reserved: bool,
) -> Result<Option<String>, AuditError> {
    // A missing or malformed tenant or organisation is refused as bad
    // input (22023), before the bindings are asked (a writer is bound to
    // none of them, which would be 42501); other fields by the event rules
    // later.
    let tenant = tenant_id.ok_or(AuditError::Event(
        authaudit_core::event::EventError::Missing("tenant_id"),
    ))?;
    authaudit_core::event::check_scope_id("tenant_id", tenant).map_err(AuditError::Event)?;
    if let Some(org) = org_id {
        authaudit_core::event::check_scope_id("org_id", org).map_err(AuditError::Event)?;
    }
    let reach = write_reach(tenant, org_id).ok_or_else(|| AuditError::NotBound {
        role: role_name(writer()),
        tenant: tenant.chars().take(80).collect(),
        org: org_id.map(|o| o.chars().take(80).collect()),
    })?;
    check_writer_event(
        event_type.and_then(|t| t.parse::<EventType>().ok()),
        channel.and_then(Channel::built_in),
        reserved,
    )?;
    Ok(match reach {
        WriteReach::Tenant => None,
        WriteReach::Organisation(o) => Some(o),
    })
}

/// The generation of the configuration the recording path caches (role
/// bindings, lockout policies): it moves whenever either changes.
pub fn config_generation() -> Option<u64> {
    generation()
}

/// Invalidates every backend's cached configuration now and again when
/// this transaction ends (so that a cache built from the rows before the
/// commit does not outlive it).
fn config_changed() {
    bump();
    if !BUMP_REGISTERED.with(Cell::get) {
        BUMP_REGISTERED.with(|b| b.set(true));
        let reset = || {
            BUMP_REGISTERED.with(|b| b.set(false));
            bump();
        };
        register_xact_callback(PgXactCallbackEvent::Commit, reset);
        register_xact_callback(PgXactCallbackEvent::Abort, reset);
    }
}

/// Trigger on `authaudit.tenant_scope`: the cached scopes are rebuilt.
#[pg_trigger]
fn _scope_changed<'a>(
    _trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, impl WhoAllocated>>, pgrx::PgTriggerError> {
    config_changed();
    Ok(None::<PgHeapTuple<'_, AllocatedByPostgres>>)
}

/// Trigger on `authaudit.lockout_policy`: the cached policies are re-read.
#[pg_trigger]
fn _policy_changed<'a>(
    _trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, impl WhoAllocated>>, pgrx::PgTriggerError> {
    config_changed();
    Ok(None::<PgHeapTuple<'_, AllocatedByPostgres>>)
}
