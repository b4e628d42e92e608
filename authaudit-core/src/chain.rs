//! Per-tenant hash chains: genesis, links, and streaming verification.
//!
//! Each recorded event carries three digests over the same canonical record
//! bytes, each chained to the same algorithm's digest of the previous event:
//! `link = H(domain(H) || previous link || record)`. Any one algorithm alone
//! verifies the log. All comparisons are constant-time.

use crate::canonical::{put_field, FORMAT_VERSION};
use sha2::{Digest, Sha256, Sha512};
use sha3::Sha3_256;
use std::fmt;
use subtle::ConstantTimeEq;

/// The digest algorithms of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha512,
    Sha3_256,
}

impl Algorithm {
    /// The label written into the domain-separation prefix.
    pub fn label(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
            Algorithm::Sha3_256 => "sha3-256",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

const LINK_DOMAIN: &str = "pg_authaudit.chain.v1.";
const GENESIS_DOMAIN: &str = "pg_authaudit.genesis.v1.";

/// Size of [`ChainHead::to_bytes`]: SHA-256, SHA-512 and SHA3-256 digests.
pub const HEAD_BYTES: usize = 32 + 64 + 32;

/// The three digests at one position of a tenant's chain.
#[derive(Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub sha256: [u8; 32],
    pub sha512: [u8; 64],
    pub sha3_256: [u8; 32],
}

impl fmt::Debug for ChainHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainHead")
            .field("sha256", &hex_short(&self.sha256))
            .finish_non_exhaustive()
    }
}

fn hex_short(bytes: &[u8]) -> String {
    bytes[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn prefixed<D: Digest>(domain: &str, alg: Algorithm, parts: &[&[u8]]) -> D {
    let mut h = D::new();
    h.update(domain.as_bytes());
    h.update(alg.label().as_bytes());
    h.update([0u8]);
    for p in parts {
        h.update(p);
    }
    h
}

/// One algorithm's link over the canonical record (version, seq, body),
/// hashed in parts so that the record is never copied.
pub(crate) fn link<D: Digest>(
    alg: Algorithm,
    prev: &[u8],
    seq: i64,
    body: &[u8],
) -> sha2::digest::Output<D> {
    prefixed::<D>(
        LINK_DOMAIN,
        alg,
        &[prev, &[FORMAT_VERSION], &seq.to_be_bytes(), body],
    )
    .finalize()
}

impl ChainHead {
    /// The position before a tenant's first event. It depends on the tenant
    /// id, so one tenant's rows can never verify as another's.
    pub fn genesis(tenant_id: &str) -> ChainHead {
        let mut tenant = Vec::with_capacity(5 + tenant_id.len());
        put_field(&mut tenant, Some(tenant_id.as_bytes()));
        let parts: [&[u8]; 1] = [&tenant];
        ChainHead {
            sha256: prefixed::<Sha256>(GENESIS_DOMAIN, Algorithm::Sha256, &parts)
                .finalize()
                .into(),
            sha512: prefixed::<Sha512>(GENESIS_DOMAIN, Algorithm::Sha512, &parts)
                .finalize()
                .into(),
            sha3_256: prefixed::<Sha3_256>(GENESIS_DOMAIN, Algorithm::Sha3_256, &parts)
                .finalize()
                .into(),
        }
    }

    /// The head after appending the event at `seq` whose canonical body is `body`.
    pub fn next(&self, seq: i64, body: &[u8]) -> ChainHead {
        ChainHead {
            sha256: link::<Sha256>(Algorithm::Sha256, &self.sha256, seq, body).into(),
            sha512: link::<Sha512>(Algorithm::Sha512, &self.sha512, seq, body).into(),
            sha3_256: link::<Sha3_256>(Algorithm::Sha3_256, &self.sha3_256, seq, body).into(),
        }
    }

    /// The packed form kept in `authaudit.chain_head.head`.
    pub fn to_bytes(&self) -> [u8; HEAD_BYTES] {
        let mut out = [0u8; HEAD_BYTES];
        out[..32].copy_from_slice(&self.sha256);
        out[32..96].copy_from_slice(&self.sha512);
        out[96..].copy_from_slice(&self.sha3_256);
        out
    }

    /// Reads the packed form; `None` unless exactly [`HEAD_BYTES`] long.
    pub fn from_bytes(bytes: &[u8]) -> Option<ChainHead> {
        if bytes.len() != HEAD_BYTES {
            return None;
        }
        Some(ChainHead {
            sha256: bytes[..32].try_into().ok()?,
            sha512: bytes[32..96].try_into().ok()?,
            sha3_256: bytes[96..].try_into().ok()?,
        })
    }

    /// Builds a head from stored digest columns; `None` if a length is wrong.
    pub fn from_parts(sha256: &[u8], sha512: &[u8], sha3_256: &[u8]) -> Option<ChainHead> {
        Some(ChainHead {
            sha256: sha256.try_into().ok()?,
            sha512: sha512.try_into().ok()?,
            sha3_256: sha3_256.try_into().ok()?,
        })
    }
}

/// The SHA-256 link of the row at `seq` whose canonical body is `body`,
/// after the row whose link is `prev` (the genesis's for seq 1): what a
/// witness recomputes from a row's content alone.
pub fn link_sha256(prev: &[u8], seq: i64, body: &[u8]) -> [u8; 32] {
    link::<Sha256>(Algorithm::Sha256, prev, seq, body).into()
}

/// The SHA-256 of `data` in lowercase hex (what the engine records of a cut
/// user agent).
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Constant-time equality of two byte strings (lengths are not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// The chain columns stored with one row.
#[derive(Debug, Clone, Copy)]
pub struct StoredLinks<'a> {
    pub format_version: i16,
    pub prev_link: &'a [u8],
    pub sha256: &'a [u8],
    pub sha512: &'a [u8],
    pub sha3_256: &'a [u8],
}

/// The first thing wrong with a chain, with the position where it shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainFault {
    #[error("seq {expected} is missing (next stored row has seq {found})")]
    Gap { expected: i64, found: i64 },
    #[error("seq {seq} appears more than once or out of order")]
    OutOfOrder { seq: i64 },
    #[error("unknown format_version {version}")]
    UnknownFormat { version: i16 },
    #[error("prev_link does not match the previous row's sha256 link")]
    PrevLinkMismatch,
    #[error("{0} digest does not match the recomputed value")]
    DigestMismatch(Algorithm),
}

/// Verifies consecutive rows of one tenant's chain as they stream past.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    expected_seq: i64,
    head: ChainHead,
    checked: u64,
}

impl ChainVerifier {
    /// Starts before seq 1 of `tenant_id`.
    pub fn from_genesis(tenant_id: &str) -> ChainVerifier {
        ChainVerifier::from_anchor(1, ChainHead::genesis(tenant_id))
    }

    /// Starts at `next_seq`, trusting `anchor` as the head just before it.
    pub fn from_anchor(next_seq: i64, anchor: ChainHead) -> ChainVerifier {
        ChainVerifier {
            expected_seq: next_seq,
            head: anchor,
            checked: 0,
        }
    }

    /// Checks the next stored row. On failure the verifier must not be fed
    /// further; the fault names what is wrong at [`Self::position`].
    pub fn check(
        &mut self,
        seq: i64,
        body: &[u8],
        stored: &StoredLinks<'_>,
    ) -> Result<(), ChainFault> {
        if seq > self.expected_seq {
            return Err(ChainFault::Gap {
                expected: self.expected_seq,
                found: seq,
            });
        }
        if seq < self.expected_seq {
            return Err(ChainFault::OutOfOrder { seq });
        }
        if stored.format_version != i16::from(FORMAT_VERSION) {
            return Err(ChainFault::UnknownFormat {
                version: stored.format_version,
            });
        }
        let next = self.head.next(seq, body);
        // Evaluate every comparison before branching so the work done does
        // not depend on which digest differs.
        let prev_ok = ct_eq(stored.prev_link, &self.head.sha256);
        let ok256 = ct_eq(stored.sha256, &next.sha256);
        let ok512 = ct_eq(stored.sha512, &next.sha512);
        let ok3 = ct_eq(stored.sha3_256, &next.sha3_256);
        if !prev_ok {
            return Err(ChainFault::PrevLinkMismatch);
        }
        if !ok256 {
            return Err(ChainFault::DigestMismatch(Algorithm::Sha256));
        }
        if !ok512 {
            return Err(ChainFault::DigestMismatch(Algorithm::Sha512));
        }
        if !ok3 {
            return Err(ChainFault::DigestMismatch(Algorithm::Sha3_256));
        }
        self.head = next;
        self.expected_seq += 1;
        self.checked += 1;
        Ok(())
    }

    /// The seq the next row must have; after a fault, the first bad seq.
    pub fn position(&self) -> i64 {
        self.expected_seq
    }

    /// Rows verified so far.
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// The head after the last verified row.
    pub fn head(&self) -> &ChainHead {
        &self.head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(tenant: &str, bodies: &[&[u8]]) -> Vec<(i64, Vec<u8>, ChainHead, ChainHead)> {
        let mut head = ChainHead::genesis(tenant);
        let mut rows = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            let seq = i as i64 + 1;
            let next = head.next(seq, body);
            rows.push((seq, body.to_vec(), head.clone(), next.clone()));
            head = next;
        }
        rows
    }

    fn verify(
        tenant: &str,
        rows: &[(i64, Vec<u8>, ChainHead, ChainHead)],
    ) -> Result<u64, (i64, ChainFault)> {
        let mut v = ChainVerifier::from_genesis(tenant);
        for (seq, body, prev, link) in rows {
            let stored = StoredLinks {
                format_version: 1,
                prev_link: &prev.sha256,
                sha256: &link.sha256,
                sha512: &link.sha512,
                sha3_256: &link.sha3_256,
            };
            v.check(*seq, body, &stored)
                .map_err(|f| (v.position(), f))?;
        }
        Ok(v.checked())
    }

    #[test]
    fn an_intact_chain_verifies() {
        let rows = build("t", &[b"a", b"b", b"c"]);
        assert_eq!(verify("t", &rows), Ok(3));
    }

    #[test]
    fn a_chain_does_not_verify_as_another_tenant() {
        let rows = build("t", &[b"a"]);
        assert_eq!(verify("u", &rows).unwrap_err().0, 1);
    }

    #[test]
    fn an_edited_body_is_found_at_its_seq() {
        let mut rows = build("t", &[b"a", b"b", b"c"]);
        rows[1].1 = b"B".to_vec();
        assert_eq!(
            verify("t", &rows),
            Err((2, ChainFault::DigestMismatch(Algorithm::Sha256)))
        );
    }

    #[test]
    fn a_deleted_row_is_a_gap() {
        let mut rows = build("t", &[b"a", b"b", b"c"]);
        rows.remove(1);
        assert_eq!(
            verify("t", &rows),
            Err((
                2,
                ChainFault::Gap {
                    expected: 2,
                    found: 3
                }
            ))
        );
    }

    #[test]
    fn each_digest_is_checked_on_its_own() {
        let rows = build("t", &[b"a"]);
        let (seq, body, prev, link) = &rows[0];
        let mut bad512 = link.sha512;
        bad512[0] ^= 1;
        let stored = StoredLinks {
            format_version: 1,
            prev_link: &prev.sha256,
            sha256: &link.sha256,
            sha512: &bad512,
            sha3_256: &link.sha3_256,
        };
        let mut v = ChainVerifier::from_genesis("t");
        assert_eq!(
            v.check(*seq, body, &stored),
            Err(ChainFault::DigestMismatch(Algorithm::Sha512))
        );
    }

    #[test]
    fn head_bytes_round_trip() {
        let h = ChainHead::genesis("x").next(1, b"body");
        assert_eq!(ChainHead::from_bytes(&h.to_bytes()), Some(h));
        assert_eq!(ChainHead::from_bytes(&[0; 3]), None);
    }
}
