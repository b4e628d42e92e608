//! The tenant's Merkle tree at the SQL boundary: its root, inclusion and
//! consistency proofs (`authaudit_core::merkle`, RFC 9162). Leaf `i` is the
//! `link_sha256` of the row at seq `i + 1`. Scope-checked like
//! `verify_chain`: the proofs summarise every row of the tenant.

use crate::error::AuditError;
use authaudit_core::merkle::{self, Hash};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

const LEAVES: &str = "SELECT seq, link_sha256 FROM authaudit.auth_log \
                      WHERE tenant_id = $1 AND seq <= $2 ORDER BY seq";
const HEAD: &str = "SELECT coalesce(max(seq), 0) FROM authaudit.auth_log WHERE tenant_id = $1";

/// The leaf hashes of the first `size` rows of `tenant` (`None`: up to
/// the head), checked complete.
fn leaves(tenant: &str, size: Option<i64>) -> Result<Vec<Hash>, AuditError> {
    if !crate::scope::may_verify(tenant) {
        return Err(AuditError::NoVerifyScope(tenant.to_string()));
    }
    Spi::connect(|client| {
        let head = client
            .select(HEAD, Some(1), &[tenant.into()])?
            .first()
            .get::<i64>(1)?
            .unwrap_or(0);
        let size = size.unwrap_or(head);
        if size < 1 || size > head {
            return Err(AuditError::TreeSize {
                tenant: tenant.to_string(),
                asked: size,
                head,
            });
        }
        let rows = client.select(LEAVES, None, &[tenant.into(), size.into()])?;
        let mut out = Vec::with_capacity(rows.len());
        for (i, row) in rows.enumerate() {
            let seq: i64 = row.get(1)?.unwrap_or(0);
            if seq != i as i64 + 1 {
                return Err(AuditError::TreeRetained {
                    tenant: tenant.to_string(),
                    removed_to: seq - 1,
                });
            }
            let link: Vec<u8> = row.get(2)?.unwrap_or_default();
            out.push(merkle::leaf_hash(&link));
        }
        Ok(out)
    })
}

/// The root of the tree of the tenant's first `tree_size` rows (`NULL`:
/// every row).
#[pg_extern(stable, name = "merkle_root")]
fn merkle_root(
    tenant_id: &str,
    tree_size: default!(Option<i64>, "NULL"),
) -> Result<TableIterator<'static, (name!(tree_size, i64), name!(root_hash, Vec<u8>))>, ErrorReport>
{
    let leaves = leaves(tenant_id, tree_size)?;
    let size = leaves.len() as i64;
    Ok(TableIterator::once((size, merkle::root(&leaves).to_vec())))
}

/// The inclusion proof of the row at `seq` in the tree of the tenant's
/// first `tree_size` rows: the leaf's hash, the root, and the audit path
/// from the leaf up.
#[pg_extern(stable, strict, name = "inclusion_proof")]
fn inclusion_proof(
    tenant_id: &str,
    seq: i64,
    tree_size: i64,
) -> Result<
    TableIterator<
        'static,
        (
            name!(leaf_index, i64),
            name!(tree_size, i64),
            name!(leaf_hash, Vec<u8>),
            name!(root_hash, Vec<u8>),
            name!(path, Vec<Vec<u8>>),
        ),
    >,
    ErrorReport,
> {
    let leaves = leaves(tenant_id, Some(tree_size))?;
    if seq < 1 || seq > tree_size {
        return Err(AuditError::SeqOutsideTree {
            tenant: tenant_id.to_string(),
            seq,
            size: tree_size,
        }
        .into());
    }
    let index = (seq - 1) as usize;
    let path = merkle::inclusion_proof(index, &leaves).expect("index checked");
    Ok(TableIterator::once((
        seq - 1,
        tree_size,
        leaves[index].to_vec(),
        merkle::root(&leaves).to_vec(),
        path.iter().map(|h| h.to_vec()).collect(),
    )))
}

/// The consistency proof between the trees of the tenant's first
/// `old_size` and first `new_size` rows, with both roots.
#[pg_extern(stable, strict, name = "consistency_proof")]
fn consistency_proof(
    tenant_id: &str,
    old_size: i64,
    new_size: i64,
) -> Result<
    TableIterator<
        'static,
        (
            name!(old_size, i64),
            name!(new_size, i64),
            name!(old_root, Vec<u8>),
            name!(new_root, Vec<u8>),
            name!(proof, Vec<Vec<u8>>),
        ),
    >,
    ErrorReport,
> {
    let leaves = leaves(tenant_id, Some(new_size))?;
    if old_size < 1 || old_size > new_size {
        return Err(AuditError::OldTreeSize {
            tenant: tenant_id.to_string(),
            old_size,
            new_size,
        }
        .into());
    }
    let proof = merkle::consistency_proof(old_size as usize, &leaves).expect("sizes checked");
    Ok(TableIterator::once((
        old_size,
        new_size,
        merkle::root(&leaves[..old_size as usize]).to_vec(),
        merkle::root(&leaves).to_vec(),
        proof.iter().map(|h| h.to_vec()).collect(),
    )))
}
