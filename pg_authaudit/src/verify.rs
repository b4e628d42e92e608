//! Chain verification: recomputes every digest of a tenant's chain from the
//! stored rows and compares in constant time.

use crate::error::AuditError;
use crate::stored_rows;
use authaudit_core::chain::{ChainFault, ChainHead, ChainVerifier};
use authaudit_core::verification::verify_batches;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

/// One verification result, as returned to SQL.
struct Outcome {
    rows_checked: i64,
    fault: Option<(i64, String)>,
}

type VerifyRow = (bool, i64, Option<i64>, Option<String>);

impl Outcome {
    fn into_row(self) -> TableIterator<'static, VerifyRow> {
        let ok = self.fault.is_none();
        let (bad, reason) = match self.fault {
            Some((seq, reason)) => (Some(seq), Some(reason)),
            None => (None, None),
        };
        TableIterator::once((ok, self.rows_checked, bad, reason))
    }
}

/// Verifies a tenant's whole chain. (Rows removed from the end of a chain
/// leave a shorter chain that verifies; checkpoints detect that.)
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
        ),
    >,
    ErrorReport,
> {
    Ok(run(tenant_id, 1, i64::MAX)?.into_row())
}

/// Verifies the rows `from_seq` to `to_seq` of a tenant's chain, anchored at
/// the stored digests of row `from_seq - 1` (or the genesis for seq 1).
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
        ),
    >,
    ErrorReport,
> {
    Ok(run(tenant_id, from_seq.max(1), to_seq)?.into_row())
}

const ROWS: &str = include_str!("../../sql/queries/verify_rows.sql");
const ANCHOR: &str = "SELECT link_sha256, digest_sha512, digest_sha3_256 \
                      FROM authaudit.auth_log WHERE tenant_id = $1 AND seq = $2";
const FETCH_ROWS: i64 = 2000;
const MAY_VERIFY: &str = "SELECT authaudit._may_verify($1)";

fn run(tenant_id: &str, from_seq: i64, to_seq: i64) -> Result<Outcome, AuditError> {
    Spi::connect(|client| {
        let allowed = client
            .select(MAY_VERIFY, Some(1), &[tenant_id.into()])?
            .first()
            .get::<bool>(1)?
            .unwrap_or(false);
        if !allowed {
            return Err(AuditError::NoVerifyScope(tenant_id.to_string()));
        }
        let Some(verifier) = anchor(client, tenant_id, from_seq)? else {
            return Ok(Outcome {
                rows_checked: 0,
                fault: Some((from_seq - 1, "anchor row is missing or malformed".into())),
            });
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
            // SAFETY: SPI_tuptable is the table `fetch` just produced and
            // `table` keeps it alive; rows are decoded in place.
            let (batch, bad) = unsafe { stored_rows::decode(pg_sys::SPI_tuptable, tenant_id) };
            unreadable = bad;
            Ok(Some(batch))
        })?;
        if let Some(f) = chain_fault {
            return Ok(fault_at(&verifier, f));
        }
        if let Some((seq, reason)) = unreadable {
            return Ok(fault(&verifier, seq, reason));
        }
        // The extra row past the range was verified too; do not count it.
        let past_range = i64::from(verifier.position() - 1 > to_seq);
        Ok(Outcome {
            rows_checked: i64::try_from(verifier.checked()).unwrap_or(i64::MAX) - past_range,
            fault: None,
        })
    })
}

/// The verifier positioned just before `from_seq`, or `None` when the anchor
/// row cannot be read.
fn anchor(
    client: &SpiClient<'_>,
    tenant_id: &str,
    from_seq: i64,
) -> Result<Option<ChainVerifier>, AuditError> {
    if from_seq <= 1 {
        return Ok(Some(ChainVerifier::from_genesis(tenant_id)));
    }
    let table = client.select(ANCHOR, Some(1), &[tenant_id.into(), (from_seq - 1).into()])?;
    if table.is_empty() {
        return Ok(None);
    }
    let row = table.first();
    let (a, b, c) = (
        row.get::<Vec<u8>>(1)?.unwrap_or_default(),
        row.get::<Vec<u8>>(2)?.unwrap_or_default(),
        row.get::<Vec<u8>>(3)?.unwrap_or_default(),
    );
    Ok(ChainHead::from_parts(&a, &b, &c).map(|head| ChainVerifier::from_anchor(from_seq, head)))
}

fn fault(verifier: &ChainVerifier, seq: i64, reason: String) -> Outcome {
    Outcome {
        rows_checked: i64::try_from(verifier.checked()).unwrap_or(i64::MAX),
        fault: Some((seq, reason)),
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
