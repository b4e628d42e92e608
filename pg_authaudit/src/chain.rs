//! Chain digests as SQL functions, used by the recording path under the
//! tenant's chain-head row lock.

use crate::error::{AuditError, SqlResult};
use authaudit_core::chain::{ChainHead, HEAD_BYTES};
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
