//! A Merkle tree per tenant over its log (RFC 9162, section 2.1), with
//! inclusion and consistency proofs and their verification.
//!
//! The leaves are the tenant's rows in seq order: leaf `i` (from 0) is the
//! 32-byte `link_sha256` of the row at seq `i + 1`. The link covers the
//! row's canonical record and the link before it (docs/chain-format.md), so
//! a leaf stands for the whole row. Hashes are SHA-256:
//! leaf hash `H(0x00 ‖ link)`, node hash `H(0x01 ‖ left ‖ right)`, and the
//! empty tree's root `H()`.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// `H(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `H(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two smaller than `n` (`n` > 1).
fn split(n: usize) -> usize {
    debug_assert!(n > 1);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The root (Merkle tree hash) of the leaves whose leaf hashes are `leaves`.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        _ => {
            // Bottom-up, one level at a time: an odd node is carried up, which
            // gives the same tree as the recursive definition's splits.
            let mut level: Vec<Hash> = leaves.to_vec();
            while level.len() > 1 {
                let mut next = Vec::with_capacity(level.len().div_ceil(2));
                for pair in level.chunks(2) {
                    next.push(match pair {
                        [l, r] => node_hash(l, r),
                        [single] => *single,
                        _ => unreachable!(),
                    });
                }
                level = next;
            }
            level[0]
        }
    }
}

/// A tree grown one leaf at a time, keeping only the roots of its perfect
/// subtrees (one per set bit of the size, largest first): the root of any
/// size in O(log n) memory, as a witness holds each tenant's tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactTree {
    size: u64,
    peaks: Vec<Hash>,
}

impl CompactTree {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The tree of `size` leaves from its peaks, as [`CompactTree::peaks`]
    /// gave them (`None` if there is not one peak per set bit of `size`).
    pub fn from_peaks(size: u64, peaks: Vec<Hash>) -> Option<CompactTree> {
        (peaks.len() == size.count_ones() as usize).then_some(CompactTree { size, peaks })
    }

    /// The roots of the perfect subtrees, largest first: with the size,
    /// everything needed to grow the tree further.
    pub fn peaks(&self) -> &[Hash] {
        &self.peaks
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = leaf;
        let mut size = self.size;
        // Each trailing one bit of the old size is a peak of the same
        // height as the new node: they merge.
        while size & 1 == 1 {
            let left = self.peaks.pop().expect("a peak per set bit");
            node = node_hash(&left, &node);
            size >>= 1;
        }
        self.peaks.push(node);
        self.size += 1;
    }

    /// The root of the tree as it stands.
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        match peaks.next() {
            None => Sha256::digest([]).into(),
            Some(last) => peaks.fold(*last, |right, left| node_hash(left, &right)),
        }
    }
}

/// Why a proof cannot be made or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is outside a tree of size {size}")]
    LeafOutsideTree { index: u64, size: u64 },
    #[error("tree size {old} is not between 1 and the newer size {new}")]
    BadSizes { old: u64, new: u64 },
    #[error("the proof has the wrong number of hashes")]
    WrongLength,
    #[error("the proof does not lead to the root")]
    RootMismatch,
}

/// The inclusion proof (audit path) of leaf `index` in the tree of
/// `leaves` (RFC 9162, 2.1.3.1), from the leaf up.
pub fn inclusion_proof(index: usize, leaves: &[Hash]) -> Result<Vec<Hash>, ProofError> {
    if index >= leaves.len() {
        return Err(ProofError::LeafOutsideTree {
            index: index as u64,
            size: leaves.len() as u64,
        });
    }
    let mut path = Vec::new();
    path_into(index, leaves, &mut path);
    Ok(path)
}

fn path_into(m: usize, d: &[Hash], out: &mut Vec<Hash>) {
    let n = d.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path_into(m, &d[..k], out);
        out.push(root(&d[k..]));
    } else {
        path_into(m - k, &d[k..], out);
        out.push(root(&d[..k]));
    }
}

/// The consistency proof between the tree of the first `old_size` leaves
/// and the tree of all `leaves` (RFC 9162, 2.1.4.1).
pub fn consistency_proof(old_size: usize, leaves: &[Hash]) -> Result<Vec<Hash>, ProofError> {
    if old_size == 0 || old_size > leaves.len() {
        return Err(ProofError::BadSizes {
            old: old_size as u64,
            new: leaves.len() as u64,
        });
    }
    let mut proof = Vec::new();
    subproof(old_size, leaves, true, &mut proof);
    Ok(proof)
}

fn subproof(m: usize, d: &[Hash], whole: bool, out: &mut Vec<Hash>) {
    let n = d.len();
    if m == n {
        if !whole {
            out.push(root(d));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, &d[..k], whole, out);
        out.push(root(&d[k..]));
    } else {
        subproof(m - k, &d[k..], false, out);
        out.push(root(&d[..k]));
    }
}

/// Verifies that `leaf` (a leaf hash) is leaf `index` of the tree of
/// `size` leaves whose root is `root` (RFC 9162, 2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::LeafOutsideTree { index, size });
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return Err(ProofError::WrongLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength);
    }
    if crate::chain::ct_eq(&r, root) {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Verifies that the tree of `old_size` leaves with root `old_root` is a
/// prefix of the tree of `new_size` leaves with root `new_root` (RFC 9162,
/// 2.1.4.2).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size == 0 || old_size > new_size {
        return Err(ProofError::BadSizes {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if crate::chain::ct_eq(old_root, new_root) {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    // A power-of-two old tree is its own first node.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return Err(ProofError::WrongLength);
    };
    let (mut f_n, mut s_n) = (old_size - 1, new_size - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s_n == 0 {
            return Err(ProofError::WrongLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength);
    }
    if crate::chain::ct_eq(&fr, old_root) && crate::chain::ct_eq(&sr, new_root) {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
            .collect()
    }

    /// The recursive definition of RFC 9162, 2.1.1, as written there.
    fn mth(d: &[Hash]) -> Hash {
        match d.len() {
            0 => Sha256::digest([]).into(),
            1 => d[0],
            n => {
                let k = split(n);
                node_hash(&mth(&d[..k]), &mth(&d[k..]))
            }
        }
    }

    #[test]
    fn the_root_is_the_rfc_definition() {
        for n in 0..70 {
            assert_eq!(root(&leaves(n)), mth(&leaves(n)), "{n}");
        }
        assert_eq!(
            hex::encode(root(&[])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn every_inclusion_proof_verifies_and_no_other_leaf_does() {
        for n in 1..40 {
            let d = leaves(n);
            let r = root(&d);
            for i in 0..n {
                let p = inclusion_proof(i, &d).unwrap();
                verify_inclusion(i as u64, n as u64, &d[i], &p, &r).unwrap();
                let other = d[(i + 1) % n];
                if n > 1 {
                    assert_eq!(
                        verify_inclusion(i as u64, n as u64, &other, &p, &r),
                        Err(ProofError::RootMismatch)
                    );
                }
                if !p.is_empty() {
                    assert!(verify_inclusion(i as u64, n as u64, &d[i], &p[1..], &r).is_err());
                }
            }
        }
        assert!(inclusion_proof(3, &leaves(3)).is_err());
    }

    #[test]
    fn every_consistency_proof_verifies_and_a_rewritten_prefix_does_not() {
        for n in 1..40 {
            let d = leaves(n);
            let new_root = root(&d);
            for m in 1..=n {
                let p = consistency_proof(m, &d).unwrap();
                let old_root = root(&d[..m]);
                verify_consistency(m as u64, n as u64, &old_root, &new_root, &p).unwrap();
                // The old tree rewritten: one of its leaves changed.
                let mut forged = d.clone();
                forged[m - 1] = leaf_hash(b"forged");
                assert_eq!(
                    verify_consistency(m as u64, n as u64, &old_root, &root(&forged), &p),
                    Err(ProofError::RootMismatch),
                    "{m} of {n}"
                );
            }
        }
    }

    #[test]
    fn a_compact_tree_has_the_root_of_the_whole_tree_at_every_size() {
        let d = leaves(300);
        let mut t = CompactTree::default();
        assert_eq!(t.root(), root(&[]));
        for (i, leaf) in d.iter().enumerate() {
            t.push(*leaf);
            assert_eq!(t.size(), i as u64 + 1);
            assert_eq!(t.root(), root(&d[..=i]), "{i}");
            assert_eq!(t.peaks.len(), (i + 1).count_ones() as usize);
            // Saved and restored, it grows on as the original.
            let mut again = CompactTree::from_peaks(t.size(), t.peaks().to_vec()).unwrap();
            if let Some(next) = d.get(i + 1) {
                again.push(*next);
                assert_eq!(again.root(), root(&d[..=i + 1]));
            }
        }
        assert!(CompactTree::from_peaks(3, vec![[0; 32]]).is_none());
    }

    /// RFC 9162's test shape: a seven-leaf tree, proofs by hand.
    #[test]
    fn a_seven_leaf_tree_has_the_rfc_paths() {
        let d = leaves(7);
        let h = |a: usize, b: usize| root(&d[a..b]);
        assert_eq!(inclusion_proof(0, &d).unwrap(), [d[1], h(2, 4), h(4, 7)]);
        assert_eq!(inclusion_proof(6, &d).unwrap(), [h(4, 6), h(0, 4)]);
        assert_eq!(
            consistency_proof(3, &d).unwrap(),
            [d[2], d[3], h(0, 2), h(4, 7)]
        );
        assert_eq!(consistency_proof(4, &d).unwrap(), [h(4, 7)]);
        assert_eq!(consistency_proof(6, &d).unwrap(), [h(4, 6), d[6], h(0, 4)]);
    }
}
