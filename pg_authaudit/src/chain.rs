//! Chain digests as SQL functions, used by the recording path under the
//! tenant's chain-head row lock.

use crate::error::{AuditError, SqlResult};
use crate::heads;
use authaudit_core::chain::{ChainHead, HEAD_BYTES};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// The packed genesis head (SHA-256 ‖ SHA-512 ‖ SHA3-256) of a tenant.
#[pg_extern(immutable, strict, parallel_safe, name = "_chain_genesis")]
fn chain_genesis(tenant_id: &str) -> Vec<u8> {
    ChainHead::genesis(tenant_id).to_bytes().to_vec()
}

/// The packed head after appending the event `body` at `seq` to `head`.
#[pg_extern(immutable, strict, parallel_safe, name = "_chain_next")]
fn chain_next(head: &[u8], seq: i64, body: &[u8]) -> SqlResult<Vec<u8>> {
    let prev = ChainHead::from_bytes(head).ok_or(AuditError::MalformedHead {
        expected: HEAD_BYTES,
        got: head.len(),
    })?;
    Ok(prev.next(seq, body).to_bytes().to_vec())
}

/// Appends an event body to the tenant's chain and returns its position and
/// digests. Internal to `record_event`, which inserts the row in the same
/// statement; not executable by PUBLIC.
#[pg_extern(volatile, parallel_unsafe, name = "_chain_append")]
fn chain_append(
    tenant_id: &str,
    body: &[u8],
) -> Result<
    TableIterator<
        'static,
        (
            name!(seq, i64),
            name!(prev_link, Vec<u8>),
            name!(link_sha256, Vec<u8>),
            name!(digest_sha512, Vec<u8>),
            name!(digest_sha3_256, Vec<u8>),
        ),
    >,
    ErrorReport,
> {
    crate::legacy::sql()?;
    let (seq, prev, next) = heads::append(tenant_id, body)?;
    Ok(TableIterator::once((
        seq,
        prev.sha256.to_vec(),
        next.sha256.to_vec(),
        next.sha512.to_vec(),
        next.sha3_256.to_vec(),
    )))
}

/// Takes back this transaction's latest append to the tenant's chain.
/// Internal to `record_event` (a retry whose row exists); not executable by
/// PUBLIC.
#[pg_extern(volatile, parallel_unsafe, name = "_chain_unappend")]
fn chain_unappend(tenant_id: &str) -> SqlResult<()> {
    Ok(heads::unappend(tenant_id)?)
}

/// The tenant's chain head once every appender has ended, after checking
/// that the table's last row is the head the extension appended last
/// (XX001 otherwise). Internal to `checkpoint`; not executable by PUBLIC.
#[pg_extern(volatile, parallel_unsafe, name = "_chain_settled_head")]
fn chain_settled_head(
    tenant_id: &str,
) -> Result<TableIterator<'static, (name!(seq, i64), name!(link_sha256, Vec<u8>))>, ErrorReport> {
    let (seq, head) = heads::settled_head(tenant_id)?;
    Ok(TableIterator::once((seq, head.sha256.to_vec())))
}
