//! Chain verification: recomputes every digest of a tenant's chain from the
//! stored rows and compares in constant time.

use crate::error::AuditError;
use crate::stored_rows;
use authaudit_core::chain::{ct_eq, ChainFault, ChainHead, ChainVerifier};
use authaudit_core::retention::{reanchor, AnchorFault, RecordedAnchor};
use authaudit_core::verification::verify_batches;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

/// One verification result, as returned to SQL.
struct Outcome {
    rows_checked: i64,
    fault: Option<(i64, String)>,
    /// The checkpoint the verification started from (None: the genesis).
    anchor_seq: Option<i64>,
    checkpoints_checked: i64,
}

type VerifyRow = (bool, i64, Option<i64>, Option<String>, Option<i64>, i64);

impl Outcome {
    fn into_row(self) -> TableIterator<'static, VerifyRow> {
        let ok = self.fault.is_none();
        let (bad, reason) = match self.fault {
            Some((seq, reason)) => (Some(seq), Some(reason)),
            None => (None, None),
        };
        TableIterator::once((
            ok,
            self.rows_checked,
            bad,
            reason,
            self.anchor_seq,
            self.checkpoints_checked,
        ))
    }
}

/// Verifies a tenant's whole chain, and the chain against every checkpoint
/// of the tenant: rows removed from the tail after a checkpoint are
/// detected. A chain whose oldest rows were removed by `apply_retention`
/// starts from the checkpoint it was cut at.
#[pg_extern(stable, strict, name = "verify_chain")]
fn verify_chain(
    tenant_id: &str,
) -> Result<
    TableIterator<
        'static,
        (
            name!(ok, bool),
            name!(rows_checked, i64),
            name!(first_bad_seq, Option<i64>),
            name!(reason, Option<String>),
            name!(anchor_seq, Option<i64>),
            name!(checkpoints_checked, i64),
        ),
    >,
    ErrorReport,
> {
    Ok(run(tenant_id, Start::Oldest, i64::MAX)?.into_row())
}

/// Verifies a tenant's chain in full (`full`: as `verify_chain(tenant_id)`)
/// or from its latest checkpoint on: every checkpoint was recorded only
/// after the rows since the one before it verified, so the rows from the
/// latest checkpoint's own row (re-checked against the checkpoint and
/// anchored at the row before it) to the head are what is new since. Says
/// which it did (`mode`: `full` or `from_checkpoint`; a tenant without a
/// checkpoint is verified in full).
#[pg_extern(stable, strict, name = "verify_chain")]
fn verify_chain_mode(
    tenant_id: &str,
    full: bool,
) -> Result<
    TableIterator<
        'static,
        (
            name!(ok, bool),
            name!(rows_checked, i64),
            name!(first_bad_seq, Option<i64>),
            name!(reason, Option<String>),
            name!(anchor_seq, Option<i64>),
            name!(checkpoints_checked, i64),
            name!(mode, String),
        ),
    >,
    ErrorReport,
> {
    let latest = if full {
        None
    } else {
        latest_checkpoint(tenant_id)?
    };
    let (start, mode) = match latest {
        None => (Start::Oldest, "full"),
        Some((seq, true)) => (Start::Seq(seq), "from_checkpoint"),
        Some((seq, false)) => (Start::Checkpoint(seq), "from_checkpoint"),
    };
    let outcome = run(tenant_id, start, i64::MAX)?;
    let ok = outcome.fault.is_none();
    let (bad, reason) = match outcome.fault {
        Some((seq, reason)) => (Some(seq), Some(reason)),
        None => (None, None),
    };
    Ok(TableIterator::once((
        ok,
        outcome.rows_checked,
        bad,
        reason,
        outcome.anchor_seq,
        outcome.checkpoints_checked,
        mode.to_owned(),
    )))
}

const LATEST_CHECKPOINT: &str = "SELECT c.seq, EXISTS (SELECT FROM authaudit.auth_log l \
        WHERE l.tenant_id = c.tenant_id AND l.seq = c.seq) \
      FROM authaudit.checkpoints c WHERE c.tenant_id = $1 ORDER BY c.seq DESC LIMIT 1";

/// The tenant's latest checkpoint and whether its row is still stored
/// (retention removes the row a chain was cut at).
fn latest_checkpoint(tenant_id: &str) -> Result<Option<(i64, bool)>, AuditError> {
    if !crate::scope::may_verify(tenant_id) {
        return Err(AuditError::NoVerifyScope(tenant_id.to_string()));
    }
    Spi::connect(|client| {
        let table = client.select(LATEST_CHECKPOINT, Some(1), &[tenant_id.into()])?;
        if table.is_empty() {
            return Ok(None);
        }
        let row = table.first();
        Ok(row
            .get::<i64>(1)?
            .map(|seq| (seq, row.get::<bool>(2).ok().flatten().unwrap_or(false))))
    })
}

/// Verifies the rows `from_seq` to `to_seq` of a tenant's chain, anchored at
/// the stored digests of row `from_seq - 1` (the genesis for seq 1, the
/// checkpoint at `from_seq - 1` when retention removed that row), and
/// against the checkpoints in the range.
#[pg_extern(stable, strict, name = "verify_chain")]
fn verify_chain_range(
    tenant_id: &str,
    from_seq: i64,
    to_seq: i64,
) -> Result<
    TableIterator<
        'static,
        (
            name!(ok, bool),
            name!(rows_checked, i64),
            name!(first_bad_seq, Option<i64>),
            name!(reason, Option<String>),
            name!(anchor_seq, Option<i64>),
            name!(checkpoints_checked, i64),
        ),
    >,
    ErrorReport,
> {
    Ok(run(tenant_id, Start::Seq(from_seq.max(1)), to_seq)?.into_row())
}

/// Verifies a tenant's chain from a checkpoint on: the checkpoint's digests
/// are the anchor (trusted, e.g. because a witness outside PostgreSQL holds
/// them), then every later row and checkpoint is checked.
#[pg_extern(stable, strict, name = "verify_chain_from_checkpoint")]
fn verify_chain_from_checkpoint(
    tenant_id: &str,
    checkpoint_seq: i64,
) -> Result<
    TableIterator<
        'static,
        (
            name!(ok, bool),
            name!(rows_checked, i64),
            name!(first_bad_seq, Option<i64>),
            name!(reason, Option<String>),
            name!(anchor_seq, Option<i64>),
            name!(checkpoints_checked, i64),
        ),
    >,
    ErrorReport,
> {
    Ok(run(tenant_id, Start::Checkpoint(checkpoint_seq), i64::MAX)?.into_row())
}

/// Where a verification starts.
#[derive(Clone, Copy)]
enum Start {
    /// The oldest stored row (seq 1, or after a retention cut).
    Oldest,
    /// A seq, anchored at the row (or checkpoint) before it.
    Seq(i64),
    /// Just after a checkpoint, anchored at the checkpoint's digests.
    Checkpoint(i64),
}

const ROWS: &str = include_str!("../../sql/queries/verify_rows.sql");
const ANCHOR: &str = "SELECT link_sha256, digest_sha512, digest_sha3_256 \
                      FROM authaudit.auth_log WHERE tenant_id = $1 AND seq = $2";
const FETCH_ROWS: i64 = 2000;

fn run(tenant_id: &str, start: Start, to_seq: i64) -> Result<Outcome, AuditError> {
    if !crate::scope::may_verify(tenant_id) {
        return Err(AuditError::NoVerifyScope(tenant_id.to_string()));
    }
    Spi::connect(|client| {
        let (from_seq, anchored) = match start {
            Start::Seq(s) => (s, anchor(client, tenant_id, s)?),
            Start::Checkpoint(c) => (
                c.saturating_add(1),
                checkpoint_head(client, tenant_id, c)?
                    .map(|h| Anchor {
                        verifier: ChainVerifier::from_anchor(c.saturating_add(1), h),
                        checkpoint: Some(c),
                    })
                    .ok_or_else(|| NO_ANCHOR.to_string()),
            ),
            Start::Oldest => {
                let first = client
                    .select(FIRST_SEQ, Some(1), &[tenant_id.into()])?
                    .first()
                    .get::<i64>(1)?
                    .unwrap_or(1);
                let cut = if first > 1 {
                    retention_cut(client, tenant_id, first)?
                } else {
                    0
                };
                if first > 1 && cut != first - 1 {
                    return Ok(Outcome {
                        rows_checked: 0,
                        fault: Some((
                            cut + 1,
                            format!(
                                "rows {} to {} are missing and no retention_applied event accounts for them",
                                cut + 1,
                                first - 1
                            ),
                        )),
                        anchor_seq: None,
                        checkpoints_checked: 0,
                    });
                }
                (first, anchor(client, tenant_id, first)?)
            }
        };
        let Anchor {
            verifier,
            checkpoint: anchor_seq,
        } = match anchored {
            Ok(a) => a,
            Err(reason) => {
                return Ok(Outcome {
                    rows_checked: 0,
                    fault: Some((from_seq - 1, reason)),
                    anchor_seq: None,
                    checkpoints_checked: 0,
                })
            }
        };
        // One row past the range, so that a missing last row shows as a gap.
        let upper = to_seq.saturating_add(1);
        let mut cursor =
            client.open_cursor(ROWS, &[tenant_id.into(), from_seq.into(), upper.into()]);
        let mut unreadable: Option<(i64, String)> = None;
        let (verifier, chain_fault) = verify_batches(verifier, || -> Result<_, AuditError> {
            if unreadable.is_some() {
                return Ok(None);
            }
            let table = cursor.fetch(FETCH_ROWS)?;
            if table.is_empty() {
                return Ok(None);
            }
            // SAFETY: SPI_tuptable is the table `fetch` just produced (the
            // 16 columns of verify_rows.sql); its rows are decoded into
            // `batch` (copies), then it is freed: SPI would keep every
            // fetched batch until the connection ends, a chain's size.
            let (batch, bad) = unsafe {
                let t = pg_sys::SPI_tuptable;
                let decoded = stored_rows::decode(t, tenant_id);
                pg_sys::SPI_freetuptable(t);
                decoded
            };
            unreadable = bad;
            Ok(Some(batch))
        })?;
        let mut out = if let Some(f) = chain_fault {
            fault_at(&verifier, f)
        } else if let Some((seq, reason)) = unreadable {
            fault(&verifier, seq, reason)
        } else {
            // The extra row past the range was verified too; do not count it.
            let past_range = i64::from(verifier.position() - 1 > to_seq);
            Outcome {
                rows_checked: i64::try_from(verifier.checked()).unwrap_or(i64::MAX) - past_range,
                fault: None,
                anchor_seq: None,
                checkpoints_checked: 0,
            }
        };
        out.anchor_seq = anchor_seq;
        if out.fault.is_none() {
            // Every stored digest up to here is the recomputed one: compare
            // the checkpoints in the range with the rows they name.
            let last_seq = verifier.position() - 1;
            let (checked, bad) = check_checkpoints(client, tenant_id, from_seq, to_seq, last_seq)?;
            out.checkpoints_checked = checked;
            out.fault = bad;
        }
        Ok(out)
    })
}

const FIRST_SEQ: &str = "SELECT min(seq) FROM authaudit.auth_log WHERE tenant_id = $1";
const RETENTION_CUT: &str =
    "SELECT coalesce(max((metadata #>> '{_authaudit,retention,anchor,seq}')::bigint), 0) \
       FROM authaudit.auth_log \
      WHERE tenant_id = $1 AND event_type = 'retention_applied' \
        AND (metadata #>> '{_authaudit,retention,anchor,seq}')::bigint < $2";
/// Hex that is not hex reads as absent rather than failing the verification.
const RECORDED_ANCHOR: &str = "SELECT \
        CASE WHEN a ->> 'link_sha256' ~ '^[0-9a-f]{64}$' THEN decode(a ->> 'link_sha256', 'hex') END, \
        CASE WHEN a ->> 'digest_sha512' ~ '^[0-9a-f]{128}$' THEN decode(a ->> 'digest_sha512', 'hex') END, \
        CASE WHEN a ->> 'digest_sha3_256' ~ '^[0-9a-f]{64}$' THEN decode(a ->> 'digest_sha3_256', 'hex') END \
       FROM (SELECT metadata #> '{_authaudit,retention,anchor}' AS a, seq \
               FROM authaudit.auth_log \
              WHERE tenant_id = $1 AND event_type = 'retention_applied' \
                AND (metadata #>> '{_authaudit,retention,anchor,seq}')::bigint = $2) r \
      ORDER BY r.seq DESC LIMIT 1";
const CHECKPOINT: &str = "SELECT link_sha256, digest_sha512, digest_sha3_256 \
                          FROM authaudit.checkpoints WHERE tenant_id = $1 AND seq = $2";
const CHECKPOINTS: &str = "SELECT c.seq, c.link_sha256, c.digest_sha512, c.digest_sha3_256, \
            l.link_sha256, l.digest_sha512, l.digest_sha3_256 \
       FROM authaudit.checkpoints c \
       LEFT JOIN authaudit.auth_log l ON l.tenant_id = c.tenant_id AND l.seq = c.seq \
      WHERE c.tenant_id = $1 AND c.seq >= $2 AND c.seq <= $3 ORDER BY c.seq";

const REMOVED_BY_RETENTION: &str =
    "SELECT coalesce(max((metadata #>> '{_authaudit,retention,anchor,seq}')::bigint), 0) \
       FROM authaudit.auth_log WHERE tenant_id = $1 AND event_type = 'retention_applied'";

/// The last seq a retention_applied event (itself chained, so verified with
/// the rest) says was removed; 0 if none.
fn removed_by_retention(client: &SpiClient<'_>, tenant_id: &str) -> Result<i64, AuditError> {
    Ok(client
        .select(REMOVED_BY_RETENTION, Some(1), &[tenant_id.into()])?
        .first()
        .get::<i64>(1)?
        .unwrap_or(0))
}

/// The latest seq below `first` after which a retention_applied event (itself
/// chained, so verified with the rest) says the log was cut; 0 if none.
fn retention_cut(client: &SpiClient<'_>, tenant_id: &str, first: i64) -> Result<i64, AuditError> {
    Ok(client
        .select(RETENTION_CUT, Some(1), &[tenant_id.into(), first.into()])?
        .first()
        .get::<i64>(1)?
        .unwrap_or(0))
}

fn checkpoint_head(
    client: &SpiClient<'_>,
    tenant_id: &str,
    seq: i64,
) -> Result<Option<ChainHead>, AuditError> {
    let table = client.select(CHECKPOINT, Some(1), &[tenant_id.into(), seq.into()])?;
    if table.is_empty() {
        return Ok(None);
    }
    let row = table.first();
    let (a, b, c) = (
        row.get::<Vec<u8>>(1)?.unwrap_or_default(),
        row.get::<Vec<u8>>(2)?.unwrap_or_default(),
        row.get::<Vec<u8>>(3)?.unwrap_or_default(),
    );
    Ok(ChainHead::from_parts(&a, &b, &c))
}

/// Compares every checkpoint with seq in `from_seq..=to_seq` with the row it
/// names (constant time); a checkpoint past `last_seq`, the end of the
/// verified chain, means rows were removed from the tail.
fn check_checkpoints(
    client: &SpiClient<'_>,
    tenant_id: &str,
    from_seq: i64,
    to_seq: i64,
    last_seq: i64,
) -> Result<(i64, Option<(i64, String)>), AuditError> {
    let mut checked = 0;
    let rows = client.select(
        CHECKPOINTS,
        None,
        &[tenant_id.into(), from_seq.into(), to_seq.into()],
    )?;
    for row in rows {
        let seq = row.get::<i64>(1)?.unwrap_or_default();
        let get = |i: usize| -> Result<Option<Vec<u8>>, AuditError> { Ok(row.get::<Vec<u8>>(i)?) };
        let (Some(l1), Some(l2), Some(l3)) = (get(5)?, get(6)?, get(7)?) else {
            let reason = if seq > last_seq {
                format!("checkpoint at seq {seq} is past the end of the chain (seq {last_seq}): rows were removed from the tail")
            } else {
                format!("checkpoint at seq {seq} names a missing row")
            };
            return Ok((checked, Some((last_seq + 1, reason))));
        };
        let (c1, c2, c3) = (
            get(2)?.unwrap_or_default(),
            get(3)?.unwrap_or_default(),
            get(4)?.unwrap_or_default(),
        );
        // Non-short-circuiting: all three comparisons always run.
        let same = ct_eq(&c1, &l1) & ct_eq(&c2, &l2) & ct_eq(&c3, &l3);
        if !same {
            return Ok((
                checked,
                Some((seq, format!("row seq {seq} does not match its checkpoint"))),
            ));
        }
        checked += 1;
    }
    Ok((checked, None))
}

/// A verifier positioned at the start, and the checkpoint it stands on.
struct Anchor {
    verifier: ChainVerifier,
    checkpoint: Option<i64>,
}

const NO_ANCHOR: &str = "anchor row is missing or malformed";

/// The verifier positioned just before `from_seq`: at the genesis, the
/// stored row `from_seq - 1`, or (when retention removed that row) the head
/// its `retention_applied` event and checkpoint hold
/// (`authaudit_core::retention::reanchor`); the fault's reason when none can
/// be taken.
fn anchor(
    client: &SpiClient<'_>,
    tenant_id: &str,
    from_seq: i64,
) -> Result<Result<Anchor, String>, AuditError> {
    if from_seq <= 1 {
        return Ok(Ok(Anchor {
            verifier: ChainVerifier::from_genesis(tenant_id),
            checkpoint: None,
        }));
    }
    let table = client.select(ANCHOR, Some(1), &[tenant_id.into(), (from_seq - 1).into()])?;
    if table.is_empty() {
        let cut = from_seq - 1;
        // A missing row is an anchor only where retention removed it: a
        // checkpoint past rows a superuser deleted anchors nothing.
        if cut > removed_by_retention(client, tenant_id)? {
            return Ok(Err(format!(
                "row {cut} is missing and no retention_applied event accounts for it"
            )));
        }
        let checkpoint = checkpoint_head(client, tenant_id, cut)?;
        let recorded = recorded_anchor(client, tenant_id, cut)?;
        return Ok(match reanchor(checkpoint, recorded) {
            Ok(head) => Ok(Anchor {
                verifier: ChainVerifier::from_anchor(from_seq, head),
                checkpoint: Some(cut),
            }),
            Err(AnchorFault::Missing) => Err(NO_ANCHOR.to_string()),
            Err(f @ AnchorFault::Disagrees) => Err(format!("retention anchor at seq {cut}: {f}")),
        });
    }
    let row = table.first();
    let (a, b, c) = (
        row.get::<Vec<u8>>(1)?.unwrap_or_default(),
        row.get::<Vec<u8>>(2)?.unwrap_or_default(),
        row.get::<Vec<u8>>(3)?.unwrap_or_default(),
    );
    Ok(ChainHead::from_parts(&a, &b, &c)
        .map(|head| Anchor {
            verifier: ChainVerifier::from_anchor(from_seq, head),
            checkpoint: None,
        })
        .ok_or_else(|| NO_ANCHOR.to_string()))
}

/// The anchor digests the latest `retention_applied` event cut at `seq`
/// recorded (all absent without one).
fn recorded_anchor(
    client: &SpiClient<'_>,
    tenant_id: &str,
    seq: i64,
) -> Result<RecordedAnchor, AuditError> {
    let table = client.select(RECORDED_ANCHOR, Some(1), &[tenant_id.into(), seq.into()])?;
    if table.is_empty() {
        return Ok(RecordedAnchor::default());
    }
    let row = table.first();
    let (a, b, c) = (
        row.get::<Vec<u8>>(1)?,
        row.get::<Vec<u8>>(2)?,
        row.get::<Vec<u8>>(3)?,
    );
    Ok(RecordedAnchor::from_parts(
        a.as_deref(),
        b.as_deref(),
        c.as_deref(),
    ))
}

fn fault(verifier: &ChainVerifier, seq: i64, reason: String) -> Outcome {
    Outcome {
        rows_checked: i64::try_from(verifier.checked()).unwrap_or(i64::MAX),
        fault: Some((seq, reason)),
        anchor_seq: None,
        checkpoints_checked: 0,
    }
}

fn fault_at(verifier: &ChainVerifier, f: ChainFault) -> Outcome {
    let seq = match &f {
        ChainFault::Gap { expected, .. } => *expected,
        ChainFault::OutOfOrder { seq } => *seq,
        _ => verifier.position(),
    };
    fault(verifier, seq, f.to_string())
}
