//! `record_event` and `_record`: thin wrappers whose event goes through
//! the one recording pipeline (`pipeline.rs`) as a batch of one, as
//! `record_events` and `import_events` (`record_batch.rs`) send theirs.

use crate::error::AuditError;
use crate::pipeline::{self, Request};
use crate::record::{now_us, Args, Event, Mode, Row};
use crate::scope;
use crate::sql_values::{Inet, Jsonb};
use pgrx::datum::{TimestampWithTimeZone, Uuid};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::PgMemoryContexts;

/// Records one checked event through the pipeline (`pipeline.rs`) and
/// returns its stored row as a composite datum allocated in `keep` (a
/// context that outlives the SPI connection: the row is made from it only
/// once the connection has ended, `Row::from_datum` allocating there);
/// `writer_org` confines its lockout effects to accounts of that
/// organisation.
pub fn record_one(
    client: &mut SpiClient<'_>,
    e: Event<'_>,
    writer_org: Option<&str>,
    keep: pg_sys::MemoryContext,
) -> Result<pg_sys::Datum, AuditError> {
    let recorded = pipeline::record(
        client,
        Request {
            events: vec![e],
            writer_orgs: vec![writer_org.map(str::to_owned)],
            mode: Mode::Live,
            single: true,
            keep: Some(keep),
        },
    )?;
    Ok(*recorded.rows.first().expect("the event's row"))
}

/// Records one event for the extension's own functions (`record_token_issued`,
/// `apply_retention`), which authorise it first: facts under metadata
/// `_authaudit` are theirs; `p_writer_org` confines lockout effects to
/// accounts of that organisation (NULL: none). Upsert on log_id: a new id
/// appends one row; the same id with the same content returns the original
/// row; with other content, 23505. Not executable by PUBLIC.
#[allow(clippy::too_many_arguments)]
#[pg_extern(volatile, parallel_unsafe, name = "_record")]
fn record_internal(
    log_id: Option<Uuid>,
    tenant_id: Option<&str>,
    event_type: Option<&str>,
    user_id: Option<&str>,
    channel: Option<&str>,
    org_id: Option<&str>,
    ip: Option<Inet>,
    user_agent: Option<&str>,
    occurred_at: Option<TimestampWithTimeZone>,
    metadata: Option<Jsonb>,
    p_writer_org: Option<&str>,
) -> Result<pgrx::composite_type!('static, "auth_log"), ErrorReport> {
    let args = Args {
        log_id,
        tenant: tenant_id,
        org: org_id,
        event_type,
        user: user_id,
        channel,
        ip,
        user_agent,
        occurred_at,
        metadata,
    };
    let e = args.check(now_us(), Mode::Live)?;
    // The stored row is kept in the context the function was called in.
    let keep = PgMemoryContexts::CurrentMemoryContext.value();
    let datum = Spi::connect_mut(|client| record_one(client, e, p_writer_org, keep))?;
    // SAFETY: a composite datum of auth_log's row type, allocated in the
    // context of this call (`keep`); the row is made here, after the SPI
    // connection ended, so everything it allocates lives in this context.
    Ok(unsafe { Row::from_datum(datum, false) }.expect("a stored row"))
}

/// Records one authentication event and returns the stored row (upsert on
/// log_id, as `_record`). The writer must be bound to the tenant and
/// organisation (42501); events only the extension appends, the system
/// channel and the `_authaudit` metadata key are refused (22023).
#[allow(clippy::too_many_arguments)]
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn record_event(
    log_id: Option<Uuid>,
    tenant_id: Option<&str>,
    event_type: Option<&str>,
    user_id: Option<&str>,
    channel: Option<&str>,
    org_id: default!(Option<&str>, "NULL"),
    ip: default!(Option<Inet>, "NULL"),
    user_agent: default!(Option<&str>, "NULL"),
    occurred_at: default!(Option<TimestampWithTimeZone>, "NULL"),
    metadata: default!(Option<Jsonb>, "'{}'"),
) -> Result<pgrx::composite_type!('static, "auth_log"), ErrorReport> {
    let reserved = metadata.is_some_and(|m| m.has_key("_authaudit"));
    let writer_org = scope::authorise(tenant_id, org_id, event_type, channel, reserved)?;
    record_internal(
        log_id,
        tenant_id,
        event_type,
        user_id,
        channel,
        org_id,
        ip,
        user_agent,
        occurred_at,
        metadata,
        writer_org.as_deref(),
    )
}
