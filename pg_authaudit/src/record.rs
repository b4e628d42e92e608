//! Validation and canonical encoding of an event at the recording boundary.
//! The recording functions themselves are SQL (`sql/record.sql`).

use crate::error::{AuditError, SqlResult};
use crate::{gucs, time};
use authaudit_core::canonical::{encode_body, Record};
use authaudit_core::event::{EventError, EventInput};
use pgrx::datum::{TimestampWithTimeZone, Uuid};
use pgrx::prelude::*;

/// Checks every rule of an event and returns its canonical body (the chained
/// bytes without format version and seq). Raises the documented SQLSTATE
/// for the first rule it breaks.
#[allow(clippy::too_many_arguments)]
#[pg_extern(stable, parallel_safe, name = "_event_body")]
fn event_body(
    log_id: Option<Uuid>,
    tenant_id: Option<&str>,
    org_id: Option<&str>,
    event_type: Option<&str>,
    user_id: Option<&str>,
    ip: Option<&str>,
    user_agent: Option<&str>,
    channel: Option<&str>,
    occurred_at: Option<TimestampWithTimeZone>,
    recorded_at: TimestampWithTimeZone,
    metadata: Option<&str>,
) -> SqlResult<Vec<u8>> {
    let log_id = log_id.ok_or(AuditError::Event(EventError::Missing("log_id")))?;
    let recorded_at_us = time::unix_micros(recorded_at);
    let input = EventInput {
        log_id: *log_id.as_bytes(),
        tenant_id,
        org_id,
        event_type,
        user_id,
        ip,
        user_agent,
        channel,
        occurred_at_us: occurred_at.map_or(recorded_at_us, time::unix_micros),
        recorded_at_us,
        metadata: metadata.unwrap_or("{}"),
    };
    let event = input
        .validate(gucs::max_future_skew_us())
        .map_err(AuditError::from)?;
    Ok(encode_body(&Record::from(&event)))
}
