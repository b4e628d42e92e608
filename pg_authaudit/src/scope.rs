//! The caller's read scope for the row-level security policy, cached per
//! backend. Every change to `authaudit.tenant_scope` bumps a generation
//! counter in shared memory (when the change is made and again when its
//! transaction ends), and a backend rebuilds its cache when the counter or
//! the current role changes. The policy thus costs a lookup, not a query.

use crate::shmem;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{register_xact_callback, PgXactCallbackEvent};
use std::cell::{Cell, RefCell};
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
    tenants: Vec<String>,
    /// (tenant, organisation or None for the whole tenant).
    bindings: Vec<(String, Option<String>)>,
}

thread_local! {
    static CACHE: RefCell<Option<Cached>> = const { RefCell::new(None) };
    static BUMP_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

const SCOPE: &str = "SELECT s.tenant_id, s.org_id FROM authaudit.tenant_scope s \
                     WHERE s.role_name = current_user AND s.can_read";

/// The tenants the current role may read (each once): the policy's index
/// condition, so the index is probed once per bound tenant.
#[pg_extern(stable, parallel_safe, name = "_read_tenants")]
fn read_tenants() -> Vec<String> {
    cached(|c| c.tenants.clone())
}

/// Whether the current role may read a row of `tenant` in organisation
/// `org`: a tenant-wide binding, or a binding to that organisation (a row
/// without organisation needs a tenant-wide binding). The policies' row
/// check: one call per row that passed the index condition, no subquery to
/// start per statement.
#[pg_extern(stable, parallel_safe, name = "_may_read")]
fn may_read(tenant: &str, org: Option<&str>) -> bool {
    cached(|c| {
        c.bindings
            .iter()
            .any(|(t, o)| t == tenant && (o.is_none() || o.as_deref() == org))
    })
}

/// Runs `f` on the current role's scope, from the cache when it is valid.
fn cached<T>(f: impl Fn(&Cached) -> T) -> T {
    // SAFETY: reads the current role.
    let role = unsafe { pg_sys::GetUserId() };
    let generation = generation();
    if let Some(g) = generation {
        let hit = CACHE.with(|c| {
            c.borrow()
                .as_ref()
                .filter(|c| c.role == role && c.generation == g)
                .map(&f)
        });
        if let Some(v) = hit {
            return v;
        }
    }
    let mut built = Spi::connect(|client| {
        let mut built = Cached {
            role,
            generation: generation.unwrap_or(0),
            tenants: Vec::new(),
            bindings: Vec::new(),
        };
        for row in client.select(SCOPE, None, &[]).expect("read tenant_scope") {
            let tenant: String = row.get(1).ok().flatten().unwrap_or_default();
            let org: Option<String> = row.get(2).ok().flatten();
            built.tenants.push(tenant.clone());
            built.bindings.push((tenant, org));
        }
        built
    });
    built.tenants.sort();
    built.tenants.dedup();
    let v = f(&built);
    if generation.is_some() {
        CACHE.with(|c| *c.borrow_mut() = Some(built));
    }
    v
}

/// Trigger on `authaudit.tenant_scope`: invalidates every backend's cached
/// scope now and again when this transaction ends (so that a cache built
/// from the rows before the commit does not outlive it).
#[pg_trigger]
fn _scope_changed<'a>(
    _trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, impl WhoAllocated>>, pgrx::PgTriggerError> {
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
    Ok(None::<PgHeapTuple<'_, AllocatedByPostgres>>)
}
