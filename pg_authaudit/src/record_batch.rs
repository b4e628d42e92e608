//! `record_events` and `import_events`: a batch read from its JSON array in
//! place (`batch_input.rs`), each event checked and authorised in input
//! order before anything is locked or written, then recorded by the one
//! recording pipeline (`pipeline.rs`).
//!
//! Per event the semantics are those of `record_event`: a log id recorded
//! before (or earlier in the batch) with the same content is a retry and
//! changes nothing; with other content the batch is refused (23505); a
//! failure that locks its account is followed by the `account_locked` event.

use crate::batch_input;
use crate::error::AuditError;
use crate::pipeline::{self, Request};
use crate::record::{now_us, Args, Mode, Row};
use crate::sql_values::{Inet, Jsonb};
use crate::{gucs, scope};
use pgrx::datum::{TimestampWithTimeZone, Uuid};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{direct_function_call, FromDatum, IntoDatum, PgMemoryContexts};
use std::ffi::CString;

fn cstring(s: &str) -> CString {
    // Text from jsonb holds no NUL (PostgreSQL refuses \u0000 in text).
    CString::new(s).unwrap_or_default()
}

/// `text::uuid`, raising the cast's error (22P02).
fn to_uuid(s: &str) -> Uuid {
    let c = cstring(s);
    // SAFETY: uuid_in takes a C string valid for the call.
    unsafe {
        direct_function_call::<Uuid>(pg_sys::uuid_in, &[Some(pg_sys::Datum::from(c.as_ptr()))])
    }
    .expect("uuid_in returns a value")
}

/// `parse()`, the value of `field` of event `ord` (from 1) of the batch: a
/// value its type refuses raises the type's SQLSTATE (`22P02`, `22007`,
/// `22008`), the message naming the event and the field.
fn in_field<T>(ord: usize, field: &'static str, parse: impl FnOnce() -> T) -> T {
    PgTryBuilder::new(std::panic::AssertUnwindSafe(parse))
        .catch_others(|e| match e {
            pg_sys::panic::CaughtError::PostgresError(r) => {
                pg_sys::panic::ErrorReport::new(
                    r.sql_error_code(),
                    format!(
                        "pg_authaudit: event {ord} of the batch, field {field}: {}",
                        r.message()
                    ),
                    "record_events",
                )
                .report(PgLogLevel::ERROR);
                unreachable!("an ERROR does not return")
            }
            other => other.rethrow(),
        })
        .execute()
}

/// `text::timestamptz`, raising the cast's error.
fn to_timestamptz(s: &str) -> TimestampWithTimeZone {
    let c = cstring(s);
    // SAFETY: timestamptz_in takes a C string, the type's oid and a typmod.
    unsafe {
        direct_function_call::<TimestampWithTimeZone>(
            pg_sys::timestamptz_in,
            &[
                Some(pg_sys::Datum::from(c.as_ptr())),
                pg_sys::TIMESTAMPTZOID.into_datum(),
                (-1i32).into_datum(),
            ],
        )
    }
    .expect("timestamptz_in returns a value")
}

/// Records `events` and returns the stored rows in input order (a retry's
/// row as recorded before). The writer must be bound to every event's
/// tenant and organisation; the SQLSTATEs are `record_event`'s and
/// `docs/sql-reference.md`'s for a batch.
#[pg_extern(volatile, parallel_unsafe, security_definer, name = "record_events")]
#[search_path(pg_catalog, pg_temp)]
fn record_events_rows(
    events: Option<Jsonb>,
) -> Result<
    SetOfIterator<'static, pgrx::composite_type!('static, "auth_log")>,
    pgrx::pg_sys::panic::ErrorReport,
> {
    // The rows are kept in the context the set is returned from.
    let keep = PgMemoryContexts::CurrentMemoryContext.value();
    let (_, stored) = Spi::connect_mut(|client| run(client, events, Mode::Live, Some(keep)))?;
    Ok(SetOfIterator::new(stored.into_iter().map(|d| {
        // SAFETY: a composite datum of auth_log's row type, allocated in
        // the set's context.
        unsafe { Row::from_datum(d, false) }.expect("a stored row")
    })))
}

/// Records `events`, all of tenant `tenant_id`, and returns the stored rows
/// in input order: `record_events(events)` with the tenant as its own
/// argument, which Citus routes the call by (docs/scale-out.md). An event
/// without `tenant_id` is of `tenant_id`; one of another tenant is refused
/// (`22023`).
#[pg_extern(
    volatile,
    parallel_unsafe,
    security_definer,
    name = "record_events",
    requires = [record_events_rows]
)]
#[search_path(pg_catalog, pg_temp)]
fn record_tenant_events_rows(
    tenant_id: Option<String>,
    events: Option<Jsonb>,
) -> Result<
    SetOfIterator<'static, pgrx::composite_type!('static, "auth_log")>,
    pgrx::pg_sys::panic::ErrorReport,
> {
    let tenant = tenant_id.ok_or(AuditError::Event(
        authaudit_core::event::EventError::Missing("tenant_id"),
    ))?;
    let keep = PgMemoryContexts::CurrentMemoryContext.value();
    let (_, stored) =
        Spi::connect_mut(|client| run_for(client, Some(&tenant), events, Mode::Live, Some(keep)))?;
    Ok(SetOfIterator::new(stored.into_iter().map(|d| {
        // SAFETY: a composite datum of auth_log's row type, allocated in
        // the set's context.
        unsafe { Row::from_datum(d, false) }.expect("a stored row")
    })))
}

/// Records `events`; returns their log ids in input order (the pipeline of
/// `record_events` without the rows).
#[pg_extern(volatile, parallel_unsafe, name = "_record_events")]
fn record_events(events: Option<Jsonb>) -> Result<Vec<Uuid>, pgrx::pg_sys::panic::ErrorReport> {
    Ok(Spi::connect_mut(|client| run(client, events, Mode::Live, None))?.0)
}

/// Records `events` as history (`Mode::Import`); returns their log ids in
/// input order.
#[pg_extern(volatile, parallel_unsafe, name = "_import_events")]
fn import_events(events: Option<Jsonb>) -> Result<Vec<Uuid>, pgrx::pg_sys::panic::ErrorReport> {
    Ok(Spi::connect_mut(|client| run(client, events, Mode::Import, None))?.0)
}

/// Records `events`: their log ids in input order and, with `keep`, their
/// stored rows (composite datums allocated in `keep`), in input order.
fn run(
    client: &mut SpiClient<'_>,
    events: Option<Jsonb>,
    mode: Mode,
    keep: Option<pg_sys::MemoryContext>,
) -> Result<(Vec<Uuid>, Vec<pg_sys::Datum>), AuditError> {
    run_for(client, None, events, mode, keep)
}

/// [`run`], every event of `tenant` when one is given.
fn run_for(
    client: &mut SpiClient<'_>,
    tenant: Option<&str>,
    events: Option<Jsonb>,
    mode: Mode,
    keep: Option<pg_sys::MemoryContext>,
) -> Result<(Vec<Uuid>, Vec<pg_sys::Datum>), AuditError> {
    let events = events.ok_or(AuditError::BatchNotArray)?;
    let mut raws = batch_input::read(events, gucs::MAX_BATCH_EVENTS.get())?;
    if let Some(tenant) = tenant {
        for (i, r) in raws.iter_mut().enumerate() {
            match r.tenant.as_deref() {
                None => r.tenant = Some(tenant.to_owned()),
                Some(t) if t == tenant => {}
                Some(_) => {
                    return Err(AuditError::BatchOtherTenant {
                        event: i + 1,
                        tenant: tenant.to_owned(),
                    })
                }
            }
        }
    }
    // Each event's shape and the writer's right to it, in input order.
    let mut ids = Vec::with_capacity(raws.len());
    let mut writer_orgs = Vec::with_capacity(raws.len());
    for (i, r) in raws.iter().enumerate() {
        let reserved = r.metadata.is_some_and(|m| m.has_key("_authaudit"));
        writer_orgs.push(scope::authorise(
            r.tenant.as_deref(),
            r.org.as_deref(),
            r.event_type.as_deref(),
            r.channel.as_deref(),
            reserved,
        )?);
        ids.push(
            r.log_id
                .as_deref()
                .map(|s| in_field(i + 1, "log_id", || to_uuid(s))),
        );
    }
    // Every event rule, still before anything is locked.
    let mut checked = Vec::with_capacity(raws.len());
    for (i, (r, id)) in raws.iter().zip(&ids).enumerate() {
        checked.push(
            Args {
                log_id: *id,
                tenant: r.tenant.as_deref(),
                org: r.org.as_deref(),
                event_type: r.event_type.as_deref(),
                user: r.user.as_deref(),
                channel: r.channel.as_deref(),
                ip: r
                    .ip
                    .as_deref()
                    .map(|s| in_field(i + 1, "ip", || Inet::parse(s))),
                user_agent: r.user_agent.as_deref(),
                occurred_at: r
                    .occurred_at
                    .as_deref()
                    .map(|s| in_field(i + 1, "occurred_at", || to_timestamptz(s))),
                metadata: r.metadata,
            }
            .check(now_us(), mode)?,
        );
    }
    let recorded = pipeline::record(
        client,
        Request {
            events: checked,
            writer_orgs,
            mode,
            single: false,
            keep,
        },
    )?;
    Ok((recorded.ids, recorded.rows))
}
