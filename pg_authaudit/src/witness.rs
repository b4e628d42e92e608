//! The witness's signed checkpoints, written back to PostgreSQL for
//! analysts (`authaudit.record_witness_checkpoint`, sql/witness.sql). The
//! note is accepted only with a valid signature by a key of
//! `authaudit.witness_keys`, and is compared with the tenant's row at the
//! signed tree size: whether PostgreSQL still holds what the witness
//! signed.

use crate::error::AuditError;
use authaudit_core::chain::ct_eq;
use authaudit_core::note::{open_with_any, verifier_list, Checkpoint, NoteError};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

const HEAD_ROW: &str = "SELECT link_sha256, digest_sha512, digest_sha3_256 \
                        FROM authaudit.auth_log WHERE tenant_id = $1 AND seq = $2";
const LAST_SEQ: &str = "SELECT coalesce(max(seq), 0) FROM authaudit.auth_log WHERE tenant_id = $1";

fn hex_bytes(field: &'static str, hex_text: &str) -> Result<Vec<u8>, AuditError> {
    hex::decode(hex_text).map_err(|_| AuditError::WitnessNote(NoteError::Malformed(field)))
}

type Opened = (
    i64,
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
    String,
    String,
    String,
    Option<bool>,
);

/// Opens a signed checkpoint of `tenant_id`'s log: the signature by a key
/// of `authaudit.witness_keys` (55000 when none is set, 22023 when none
/// signed it), its origin naming the tenant, and whether the tenant's row
/// at the signed size holds the signed digests (NULL: retention removed
/// it). Internal: `record_witness_checkpoint` calls it.
#[pg_extern(stable, strict, name = "_open_witness_checkpoint")]
fn open_witness_checkpoint(
    tenant_id: &str,
    note: &str,
) -> Result<
    TableIterator<
        'static,
        (
            name!(tree_size, i64),
            name!(root_hash, Vec<u8>),
            name!(link_sha256, Vec<u8>),
            name!(digest_sha512, Vec<u8>),
            name!(digest_sha3_256, Vec<u8>),
            name!(signed_at, String),
            name!(key_name, String),
            name!(witness_key, String),
            name!(agrees, Option<bool>),
        ),
    >,
    ErrorReport,
> {
    Ok(TableIterator::once(open(tenant_id, note)?))
}

fn open(tenant_id: &str, note: &str) -> Result<Opened, AuditError> {
    let configured = crate::gucs::WITNESS_KEYS
        .get()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default();
    let keys = verifier_list(&configured).map_err(AuditError::WitnessNote)?;
    if keys.is_empty() {
        return Err(AuditError::WitnessKeysUnset);
    }
    let (text, key) = open_with_any(&keys, note).map_err(AuditError::WitnessNote)?;
    let c = Checkpoint::parse(text).map_err(AuditError::WitnessNote)?;
    if !c.origin.ends_with(&format!("/{tenant_id}")) {
        return Err(AuditError::WitnessOrigin {
            origin: c.origin,
            tenant: tenant_id.to_string(),
        });
    }
    let size = i64::try_from(c.tree_size)
        .map_err(|_| AuditError::WitnessNote(NoteError::Malformed("tree size")))?;
    let signed = [
        hex_bytes("link_sha256", &c.link_sha256)?,
        hex_bytes("digest_sha512", &c.digest_sha512)?,
        hex_bytes("digest_sha3_256", &c.digest_sha3_256)?,
    ];
    let agrees = Spi::connect(|client| -> Result<Option<bool>, AuditError> {
        let table = client.select(HEAD_ROW, Some(1), &[tenant_id.into(), size.into()])?;
        if table.is_empty() {
            let last = client
                .select(LAST_SEQ, Some(1), &[tenant_id.into()])?
                .first()
                .get::<i64>(1)?
                .unwrap_or(0);
            // Past the end: rows the witness signed are gone. Below the
            // first row: retention removed it.
            return Ok((last < size).then_some(false));
        }
        let row = table.first();
        let mut same = true;
        for (i, digest) in signed.iter().enumerate() {
            let stored = row.get::<Vec<u8>>(i + 1)?.unwrap_or_default();
            // Non-short-circuiting: all three comparisons always run.
            same &= ct_eq(&stored, digest);
        }
        Ok(Some(same))
    })?;
    let [link, sha512, sha3] = signed;
    Ok((
        size,
        c.root.to_vec(),
        link,
        sha512,
        sha3,
        c.time,
        key.name().to_string(),
        key.text(),
        agrees,
    ))
}
