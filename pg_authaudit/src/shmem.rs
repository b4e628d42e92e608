//! Shared-memory registration: one pair of postmaster hooks, chained to any
//! installed before them, runs the request and startup step of every module
//! that keeps state in shared memory.

use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ptr::{addr_of, addr_of_mut};

type Step = fn();
const MAX_MODULES: usize = 4;

static mut REQUESTS: [Option<Step>; MAX_MODULES] = [None; MAX_MODULES];
static mut STARTUPS: [Option<Step>; MAX_MODULES] = [None; MAX_MODULES];
static mut REGISTERED: usize = 0;
static mut PREV_REQUEST_HOOK: pg_sys::shmem_request_hook_type = None;
static mut PREV_STARTUP_HOOK: pg_sys::shmem_startup_hook_type = None;

/// Whether the library is being loaded through `shared_preload_libraries`,
/// the only time shared memory can be requested.
pub fn preloading() -> bool {
    // SAFETY: a plain read of a PostgreSQL global.
    unsafe { pg_sys::process_shared_preload_libraries_in_progress }
}

/// Registers a module's request step (`RequestAddinShmemSpace`, tranches)
/// and startup step (`ShmemInitStruct`). Call from `_PG_init` while
/// preloading.
pub fn register(request: Step, startup: Step) {
    // SAFETY: runs in the postmaster while it loads preload libraries, one
    // call at a time, before any backend exists.
    unsafe {
        let n = *addr_of!(REGISTERED);
        assert!(n < MAX_MODULES, "too many shared-memory modules");
        if n == 0 {
            PREV_REQUEST_HOOK = pg_sys::shmem_request_hook;
            pg_sys::shmem_request_hook = Some(shmem_request);
            PREV_STARTUP_HOOK = pg_sys::shmem_startup_hook;
            pg_sys::shmem_startup_hook = Some(shmem_startup);
        }
        (*addr_of_mut!(REQUESTS))[n] = Some(request);
        (*addr_of_mut!(STARTUPS))[n] = Some(startup);
        REGISTERED = n + 1;
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn shmem_request() {
    // SAFETY: the postmaster's shmem request phase; the arrays are only
    // written before it.
    unsafe {
        if let Some(prev) = PREV_REQUEST_HOOK {
            prev();
        }
        for step in (*addr_of!(REQUESTS)).iter().flatten() {
            step();
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn shmem_startup() {
    // SAFETY: the postmaster after creating shared memory (again after a
    // crash restart, with a fresh segment).
    unsafe {
        if let Some(prev) = PREV_STARTUP_HOOK {
            prev();
        }
        for step in (*addr_of!(STARTUPS)).iter().flatten() {
            step();
        }
    }
}
