//! Snapshots of a tenant's event-time replay (`authaudit.lockout_snapshots`,
//! docs/lockout.md, "Snapshots"): the lockout engine's state after every
//! lockout event up to a point in event time, so that an answer about a
//! period and a rebuild replay from the snapshot before it, not from the
//! tenant's first event. The answers are those of a replay from the start:
//!
//! - a snapshot is used only under the policy and key rules it was made
//!   with (a fingerprint of both);
//! - a snapshot records `max_seq`, the highest seq of the tenant its replay
//!   saw. A tenant's committed events are a prefix of its seqs (an append
//!   waits for the transaction of the one before it), so the snapshot holds
//!   every lockout event up to its point with a seq up to `max_seq`, and a
//!   reader that sees a seq below `max_seq` does not use it;
//! - history chained behind a snapshot (seq above `max_seq`, event time at
//!   or before its point) leaves a row in
//!   `authaudit.lockout_snapshot_invalidations`, committed with it: imported
//!   events, live events older than `MARGIN_US`, a retention (which makes
//!   the replay start at the oldest row left). A reader that sees that
//!   history sees the row, and passes the snapshot over;
//! - live events within `MARGIN_US` leave no row: snapshots are made only
//!   at points `MARGIN_US` older than the clock, once no live recording of
//!   the tenant is in flight (`heads::no_recorder_in_flight`) and nothing
//!   committed since the replay's snapshot lies before the point. A live
//!   event recorded later read the clock later, so it lies after the point.
//!
//! Snapshots are made by `rebuild_lockout` (at day boundaries, every
//! `authaudit.lockout_snapshot_interval` events replayed, and at the latest
//! one allowed) and by `lockout_replay` (at the day boundary before the
//! period asked about, when it replayed at least `lazy_events` events
//! before it).

use crate::error::AuditError;
use crate::heads;
use crate::lockout_engine::Rules;
use crate::spi_plans::{self, Pinned};
use crate::time;
use authaudit_core::engine_state::EngineState;
use pgrx::datum::Uuid;
use pgrx::pg_sys;
use pgrx::IntoDatum;
use std::ffi::CStr;

/// Snapshots are made at points at least this old (one day); a live event
/// older than this invalidates the snapshots after it.
pub const MARGIN_US: i64 = 86_400_000_000;
/// A rebuild makes a snapshot once at least this many events were replayed
/// since the last one (`authaudit.lockout_snapshot_interval`; 0: snapshots
/// are neither made nor used).
pub fn every_events() -> u64 {
    crate::gucs::lockout_snapshot_interval()
}

/// Whether the database's schema has the snapshot tables: not the
/// previous release's SQL (`legacy`), before its `ALTER EXTENSION …
/// UPDATE`.
pub fn installed() -> Result<bool, AuditError> {
    Ok(crate::legacy::sql()? == crate::legacy::Sql::Current)
}

/// Whether snapshots are made and used here: switched on, and installed.
pub fn enabled() -> Result<bool, AuditError> {
    Ok(every_events() > 0 && installed()?)
}

/// An answer makes a snapshot before its period when it replayed at least
/// this many events before the period (and a rebuild, at the latest day
/// boundary allowed).
pub fn lazy_events() -> u64 {
    every_events().min(1_000)
}
/// Snapshots kept per tenant; beyond, those with the oldest points go.
const KEPT: i64 = 1_000;
const DAY_US: i64 = 86_400_000_000;

/// The fingerprint of the rules a replay runs under.
pub fn fingerprint(rules: &Rules) -> String {
    authaudit_core::chain::sha256_hex(
        format!(
            "{} {:?} {:?}",
            env!("CARGO_PKG_VERSION"),
            rules.policy,
            rules.keys
        )
        .as_bytes(),
    )
}

/// The latest UTC day boundary at or before `us`.
pub fn day_floor(us: i64) -> i64 {
    us.div_euclid(DAY_US) * DAY_US
}

/// The latest day boundary a snapshot's point may precede now: one at
/// least `MARGIN_US` old.
pub fn latest_boundary(now_us: i64) -> i64 {
    day_floor(now_us - MARGIN_US)
}

fn text(v: &str) -> (pg_sys::Oid, pg_sys::Datum) {
    (pg_sys::TEXTOID, v.into_datum().expect("text"))
}

fn int8(v: i64) -> (pg_sys::Oid, pg_sys::Datum) {
    (pg_sys::INT8OID, pg_sys::Datum::from(v))
}

fn at(us: i64) -> (pg_sys::Oid, pg_sys::Datum) {
    (pg_sys::TIMESTAMPTZOID, time::datum_of_unix_micros(us))
}

fn uuid(id: [u8; 16]) -> (pg_sys::Oid, pg_sys::Datum) {
    (
        pg_sys::UUIDOID,
        Uuid::from_bytes(id).into_datum().expect("uuid"),
    )
}

const VISIBLE_MAX_SEQ: &CStr =
    c"SELECT coalesce(max(seq), 0) FROM authaudit.auth_log WHERE tenant_id = $1";

/// The highest seq of `tenant` in `pin` (0: none).
pub fn visible_max_seq(pin: &Pinned, tenant: &str) -> Result<i64, AuditError> {
    let seqs = pin.read(VISIBLE_MAX_SEQ, &[text(tenant)], |r| {
        Ok(r.get::<i64>(1)?.unwrap_or(0))
    })?;
    Ok(seqs.first().copied().unwrap_or(0))
}

const BEST_BEFORE: &CStr = c"SELECT s.state FROM authaudit.lockout_snapshots s \
      WHERE s.tenant_id = $1 AND s.rules = $2 AND s.point_at < $3 AND s.max_seq <= $4 \
        AND NOT EXISTS (SELECT FROM authaudit.lockout_snapshot_invalidations i \
                         WHERE i.tenant_id = s.tenant_id AND i.seq > s.max_seq \
                           AND i.from_at <= s.point_at) \
      ORDER BY s.point_at DESC, s.point_log_id DESC LIMIT 1";

/// The latest snapshot of `tenant` made under `rules` whose point is before
/// `before_us` and that holds what `pin` holds up to its point, where
/// `visible` is the highest seq `pin` sees.
pub fn best_before(
    pin: &Pinned,
    tenant: &str,
    rules: &str,
    before_us: i64,
    visible: i64,
) -> Result<Option<EngineState>, AuditError> {
    let found = pin.read(
        BEST_BEFORE,
        &[text(tenant), text(rules), at(before_us), int8(visible)],
        |r| {
            let bytes: Vec<u8> = r.get(1)?.unwrap_or_default();
            Ok(EngineState::decode(&bytes))
        },
    )?;
    // A state this library cannot read is passed over: the replay starts
    // from the beginning instead.
    Ok(found.into_iter().find_map(Result::ok))
}

/// Whether this transaction may write a snapshot: not read-only, not on a
/// standby, not in a parallel operation.
fn writable() -> bool {
    // SAFETY: plain reads of this backend's transaction state.
    unsafe { !pg_sys::XactReadOnly && !pg_sys::RecoveryInProgress() && !pg_sys::IsInParallelMode() }
}

/// A lockout event of the tenant committed after seq `$2` at or before the
/// point (`$3`, `$4`).
const COMMITTED_BEHIND: &CStr = c"SELECT FROM authaudit.auth_log \
      WHERE tenant_id = $1 AND seq > $2 \
        AND event_type IN ('login_failed', 'login_success', 'lockout_reset') \
        AND occurred_at <= $3 AND (occurred_at, log_id) <= ($3, $4) LIMIT 1";

/// How the maker of a snapshot knows that no history before its point is
/// missing from it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Made {
    /// By a rebuild, which holds the tenant's lockout state and saw every
    /// event committed since its replay lie after the point.
    UnderRebuild,
    /// By an answer: checked now (see the module comment).
    Unchecked,
}

const INSERT: &str = "INSERT INTO authaudit.lockout_snapshots \
       (tenant_id, point_at, point_log_id, max_seq, events, rules, state) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT ON CONSTRAINT lockout_snapshots_pkey DO NOTHING";

/// Snapshots of the tenant that are not used any more: passed over for
/// history behind them, or beyond the newest `KEPT`.
const CLEAN: &str = "DELETE FROM authaudit.lockout_snapshots s WHERE s.tenant_id = $1 \
       AND (EXISTS (SELECT FROM authaudit.lockout_snapshot_invalidations i \
                     WHERE i.tenant_id = s.tenant_id AND i.seq > s.max_seq \
                       AND i.from_at <= s.point_at) \
            OR (s.point_at, s.point_log_id) < ALL ( \
                 SELECT k.point_at, k.point_log_id FROM authaudit.lockout_snapshots k \
                  WHERE k.tenant_id = $1 ORDER BY k.point_at DESC, k.point_log_id DESC LIMIT $2))";

/// Writes a snapshot of `tenant` made under `rules` from a replay that saw
/// seqs up to `max_seq`, unless this transaction cannot write or (`Made::
/// Unchecked`) a live recording of the tenant is in flight or history
/// before the point was committed since. Whether it was written.
pub fn store(
    client: &mut pgrx::spi::SpiClient<'_>,
    tenant: &str,
    rules: &str,
    state: &EngineState,
    max_seq: i64,
    made: Made,
) -> Result<bool, AuditError> {
    let Some((at_us, id)) = state.last else {
        return Ok(false);
    };
    if !writable() {
        return Ok(false);
    }
    if made == Made::Unchecked {
        if !heads::no_recorder_in_flight(tenant) {
            return Ok(false);
        }
        let behind = spi_plans::read_latest(
            COMMITTED_BEHIND,
            &[text(tenant), int8(max_seq), at(at_us), uuid(id)],
            |_| Ok(()),
        )?;
        if !behind.is_empty() {
            return Ok(false);
        }
    }
    use pgrx::pg_sys::BuiltinOid::{BYTEAOID, INT8OID, TEXTOID, TIMESTAMPTZOID, UUIDOID};
    let point = time::from_unix_micros(at_us);
    let bytes = state.encode();
    spi_plans::run(
        client,
        "snapshot_insert",
        INSERT,
        &[
            TEXTOID,
            TIMESTAMPTZOID,
            UUIDOID,
            INT8OID,
            INT8OID,
            TEXTOID,
            BYTEAOID,
        ],
        &[
            tenant.into(),
            point.into(),
            Uuid::from_bytes(id).into(),
            max_seq.into(),
            (state.applied as i64).into(),
            rules.into(),
            bytes.as_slice().into(),
        ],
    )?;
    spi_plans::run(
        client,
        "snapshot_clean",
        CLEAN,
        &[TEXTOID, INT8OID],
        &[tenant.into(), KEPT.into()],
    )?;
    Ok(true)
}

const INVALIDATE: &str =
    "INSERT INTO authaudit.lockout_snapshot_invalidations (tenant_id, seq, from_at) \
     SELECT * FROM unnest($1::text[], $2::int8[], $3::timestamptz[]) \
     ON CONFLICT ON CONSTRAINT lockout_snapshot_invalidations_pkey \
     DO UPDATE SET from_at = least(EXCLUDED.from_at, lockout_snapshot_invalidations.from_at)";

/// History chained behind snapshots, per tenant: the highest seq a
/// statement chained and the earliest event time among its events.
#[derive(Default)]
pub struct Behind(std::collections::BTreeMap<String, (i64, i64)>);

impl Behind {
    pub fn add(&mut self, tenant: &str, seq: i64, at_us: i64) {
        let e = self.0.entry(tenant.to_owned()).or_insert((seq, at_us));
        e.0 = e.0.max(seq);
        e.1 = e.1.min(at_us);
    }

    /// Records it (`authaudit.lockout_snapshot_invalidations`).
    pub fn record(self, client: &mut pgrx::spi::SpiClient<'_>) -> Result<(), AuditError> {
        if self.0.is_empty() || !installed()? {
            return Ok(());
        }
        use pgrx::pg_sys::BuiltinOid::{INT8ARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID};
        let tenants: Vec<String> = self.0.keys().cloned().collect();
        let seqs: Vec<i64> = self.0.values().map(|v| v.0).collect();
        let ats: Vec<Option<pgrx::datum::TimestampWithTimeZone>> = self
            .0
            .values()
            .map(|v| time::from_unix_micros(v.1))
            .collect();
        spi_plans::run_with(
            client,
            "snapshot_invalidate",
            INVALIDATE,
            &[TEXTARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID],
            &[tenants.into(), seqs.into(), ats.into()],
            spi_plans::Plans::PerCall,
        )?;
        Ok(())
    }
}
