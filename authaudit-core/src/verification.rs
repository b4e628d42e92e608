//! Verification of long chains: rows are decoded on the calling thread while
//! a worker thread recomputes the digests, so reading and hashing overlap.
//!
//! The worker only hashes and compares; it never calls back into the caller,
//! which keeps it safe inside a PostgreSQL backend.

use crate::chain::{ChainFault, ChainVerifier, StoredLinks};
use std::ops::Range;
use std::sync::mpsc;
use std::thread;

/// Rows to verify, packed into one buffer to avoid an allocation per row.
#[derive(Debug, Default)]
pub struct RowBatch {
    bytes: Vec<u8>,
    rows: Vec<PackedRow>,
}

#[derive(Debug)]
struct PackedRow {
    seq: i64,
    format_version: i16,
    body: Range<usize>,
    prev_link: Range<usize>,
    sha256: Range<usize>,
    sha512: Range<usize>,
    sha3_256: Range<usize>,
}

impl RowBatch {
    /// An empty batch with room for about `rows` rows.
    pub fn with_capacity(rows: usize) -> RowBatch {
        RowBatch {
            bytes: Vec::with_capacity(rows * 512),
            rows: Vec::with_capacity(rows),
        }
    }

    /// Number of rows in the batch.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the batch holds no row.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Adds a row whose body `encode` appends to the buffer it is given.
    pub fn push(&mut self, seq: i64, stored: &StoredLinks<'_>, encode: impl FnOnce(&mut Vec<u8>)) {
        let start = self.bytes.len();
        encode(&mut self.bytes);
        let body = start..self.bytes.len();
        let mut put = |b: &[u8]| {
            let s = self.bytes.len();
            self.bytes.extend_from_slice(b);
            s..self.bytes.len()
        };
        let prev_link = put(stored.prev_link);
        let sha256 = put(stored.sha256);
        let sha512 = put(stored.sha512);
        let sha3_256 = put(stored.sha3_256);
        self.rows.push(PackedRow {
            seq,
            format_version: stored.format_version,
            body,
            prev_link,
            sha256,
            sha512,
            sha3_256,
        });
    }

    fn check_all(&self, verifier: &mut ChainVerifier) -> Result<(), ChainFault> {
        for r in &self.rows {
            let b = &self.bytes;
            let stored = StoredLinks {
                format_version: r.format_version,
                prev_link: &b[r.prev_link.clone()],
                sha256: &b[r.sha256.clone()],
                sha512: &b[r.sha512.clone()],
                sha3_256: &b[r.sha3_256.clone()],
            };
            verifier.check(r.seq, &b[r.body.clone()], &stored)?;
        }
        Ok(())
    }
}

/// Verifies the batches that `next_batch` produces (until it returns
/// `Ok(None)`), hashing on a worker thread while the next batch is read.
/// Returns the verifier's final state and the first fault, if any. An error
/// from `next_batch` stops the run and is returned as is.
pub fn verify_batches<E>(
    verifier: ChainVerifier,
    mut next_batch: impl FnMut() -> Result<Option<RowBatch>, E>,
) -> Result<(ChainVerifier, Option<ChainFault>), E> {
    let (to_worker, from_reader) = mpsc::sync_channel::<RowBatch>(2);
    let (fault_tx, fault_rx) = mpsc::channel::<()>();
    thread::scope(|scope| {
        let worker = scope.spawn(move || {
            let mut verifier = verifier;
            for batch in from_reader {
                if let Err(fault) = batch.check_all(&mut verifier) {
                    let _ = fault_tx.send(());
                    return (verifier, Some(fault));
                }
            }
            (verifier, None)
        });
        let mut read_error = None;
        loop {
            if fault_rx.try_recv().is_ok() {
                break;
            }
            match next_batch() {
                Ok(Some(batch)) => {
                    if to_worker.send(batch).is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    read_error = Some(e);
                    break;
                }
            }
        }
        drop(to_worker);
        let outcome = worker.join().expect("chain verification worker panicked");
        match read_error {
            Some(e) => Err(e),
            None => Ok(outcome),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::ChainHead;

    fn batches(tenant: &str, n: i64, per_batch: usize, tamper_seq: Option<i64>) -> Vec<RowBatch> {
        let mut head = ChainHead::genesis(tenant);
        let mut out = vec![RowBatch::with_capacity(per_batch)];
        for seq in 1..=n {
            let body = format!("event {seq}").into_bytes();
            let next = head.next(seq, &body);
            let mut stored_body = body.clone();
            if tamper_seq == Some(seq) {
                stored_body[0] ^= 1;
            }
            let stored = StoredLinks {
                format_version: 1,
                prev_link: &head.sha256,
                sha256: &next.sha256,
                sha512: &next.sha512,
                sha3_256: &next.sha3_256,
            };
            if out.last().unwrap().len() == per_batch {
                out.push(RowBatch::with_capacity(per_batch));
            }
            out.last_mut()
                .unwrap()
                .push(seq, &stored, |buf| buf.extend_from_slice(&stored_body));
            head = next;
        }
        out
    }

    #[test]
    fn batches_verify_across_boundaries() {
        let mut it = batches("t", 1000, 64, None).into_iter();
        let (v, fault) =
            verify_batches::<()>(ChainVerifier::from_genesis("t"), || Ok(it.next())).unwrap();
        assert_eq!(fault, None);
        assert_eq!(v.checked(), 1000);
    }

    #[test]
    fn the_first_fault_is_reported_at_its_seq() {
        let mut it = batches("t", 1000, 64, Some(777)).into_iter();
        let (v, fault) =
            verify_batches::<()>(ChainVerifier::from_genesis("t"), || Ok(it.next())).unwrap();
        assert!(fault.is_some());
        assert_eq!(v.position(), 777);
        assert_eq!(v.checked(), 776);
    }

    #[test]
    fn a_read_error_is_returned() {
        let mut calls = 0;
        let r = verify_batches(ChainVerifier::from_genesis("t"), || {
            calls += 1;
            if calls == 2 {
                Err("disk on fire")
            } else {
                Ok(Some(RowBatch::default()))
            }
        });
        assert_eq!(r.unwrap_err(), "disk on fire");
    }
}
