//! Conversion of PostgreSQL timestamps to the chain's Unix microseconds.

use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys;

/// Microseconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// Unix microseconds, UTC; `-infinity` and `infinity` map to `i64::MIN` and
/// `i64::MAX`, which the event rules refuse.
pub fn unix_micros(ts: TimestampWithTimeZone) -> i64 {
    unix_micros_of_raw(ts.into())
}

/// [`unix_micros`] of a raw `TimestampTz` (microseconds since 2000-01-01).
/// The last years PostgreSQL accepts (after 294247) saturate to `i64::MAX`,
/// refused like `infinity`.
pub fn unix_micros_of_raw(raw: pg_sys::TimestampTz) -> i64 {
    match raw {
        i64::MIN | i64::MAX => raw,
        _ => raw.saturating_add(PG_EPOCH_OFFSET_US),
    }
}

/// The timestamp of Unix microseconds (`None` if out of range).
pub fn from_unix_micros(us: i64) -> Option<TimestampWithTimeZone> {
    TimestampWithTimeZone::try_from(us.checked_sub(PG_EPOCH_OFFSET_US)?).ok()
}

/// The raw `TimestampTz` of Unix microseconds: `i64::MIN` and `i64::MAX`
/// are `-infinity` and `infinity`; others saturate to them.
pub fn raw_of_unix_micros(us: i64) -> pg_sys::TimestampTz {
    match us {
        i64::MIN | i64::MAX => us,
        _ => us.saturating_sub(PG_EPOCH_OFFSET_US),
    }
}

/// A `timestamptz` datum of Unix microseconds (see `raw_of_unix_micros`).
pub fn datum_of_unix_micros(us: i64) -> pg_sys::Datum {
    pg_sys::Datum::from(raw_of_unix_micros(us))
}
