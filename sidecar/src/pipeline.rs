//! The batch and acknowledgement state between the replication stream and
//! its destinations, without I/O.
//!
//! Changes join the open batch; a commit makes the open batch's position
//! (the commit's end) acknowledgeable once written. A batch is handed out
//! when it is full, or when its oldest change has waited long enough and it
//! holds a complete transaction (or only work of no transaction, such as
//! signed checkpoints). Every destination writes every batch, in order, and says
//! when it has; the position PostgreSQL may forget up to is that of the
//! newest batch **every** destination has acknowledged, never further.
//!
//! The stream waits while `outstanding` batches are handed out and not yet
//! acknowledged by every destination, so memory is bounded by the batch limits
//! times that number, whatever a slow or unreachable destination does.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What a batch holds, as far as the pipeline needs to know.
pub trait Contents: Default {
    /// Rows (documents) in the batch.
    fn rows(&self) -> usize;
    /// Approximate size, bytes.
    fn bytes(&self) -> usize;
    /// Whether the batch carries work that needs no commit to be written
    /// (signed checkpoints of rows already acknowledged).
    fn standalone(&self) -> bool {
        false
    }
}

/// Limits of a batch and of the batches in flight.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub rows: usize,
    pub bytes: usize,
    /// Longest the oldest change of the open batch waits for more.
    pub wait: Duration,
    /// Batches handed out and not yet acknowledged by every destination.
    pub outstanding: usize,
}

/// A batch handed to the destinations, and what it releases once every destination
/// acknowledged it.
#[derive(Debug, PartialEq, Eq)]
pub struct Handed<P> {
    pub number: u64,
    /// The end of its last complete transaction, if any.
    pub position: Option<P>,
    /// Commit times (Unix µs) of its transactions.
    pub commits: Vec<i64>,
    acked_by: Vec<bool>,
}

/// An acknowledgement that does not fit the order batches were handed out in.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    #[error("destination {destination} acknowledged batch {number}, which is not outstanding")]
    NotOutstanding { destination: usize, number: u64 },
    #[error("destination {destination} acknowledged batch {number} before batch {expected}")]
    OutOfOrder {
        destination: usize,
        number: u64,
        expected: u64,
    },
    #[error("no destination {0}")]
    NoDestination(usize),
}

/// The stream's batches and the acknowledgeable position.
#[derive(Debug)]
pub struct Pipeline<B, P> {
    limits: Limits,
    destinations: usize,
    open: B,
    open_position: Option<P>,
    open_commits: Vec<i64>,
    first_pending: Option<Instant>,
    in_transaction: bool,
    next_number: u64,
    outstanding: VecDeque<Handed<P>>,
    /// Per destination: the number of the next batch it must acknowledge.
    next_ack: Vec<u64>,
    acknowledged: Option<P>,
}

impl<B: Contents, P: Copy + Ord> Pipeline<B, P> {
    pub fn new(destinations: usize, limits: Limits) -> Self {
        Pipeline {
            limits: Limits {
                outstanding: limits.outstanding.max(1),
                ..limits
            },
            destinations,
            open: B::default(),
            open_position: None,
            open_commits: Vec::new(),
            first_pending: None,
            in_transaction: false,
            next_number: 0,
            outstanding: VecDeque::new(),
            next_ack: vec![0; destinations],
            acknowledged: None,
        }
    }

    /// The open batch, to add changes to.
    pub fn open(&mut self) -> &mut B {
        &mut self.open
    }

    pub fn open_ref(&self) -> &B {
        &self.open
    }

    /// A transaction began.
    pub fn begin(&mut self) {
        self.in_transaction = true;
    }

    /// Whether a transaction's changes are being received.
    pub fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    /// Something was added to the open batch at `now`.
    pub fn changed(&mut self, now: Instant) {
        self.first_pending.get_or_insert(now);
    }

    /// The transaction ending at `position`, committed at `commit_us`, is
    /// complete in the open batch.
    pub fn commit(&mut self, position: P, commit_us: i64, now: Instant) {
        self.in_transaction = false;
        self.open_position = Some(position);
        self.open_commits.push(commit_us);
        self.changed(now);
    }

    /// Whether the open batch should be handed out now (the caller then
    /// waits for room if `has_room` is false).
    pub fn due(&self, now: Instant) -> bool {
        let full = self.open.rows() >= self.limits.rows || self.open.bytes() >= self.limits.bytes;
        let waited = self
            .first_pending
            .is_some_and(|t| now.duration_since(t) >= self.limits.wait);
        full || (waited && (self.open_position.is_some() || self.open.standalone()))
    }

    /// Whether another batch may be handed out.
    pub fn has_room(&self) -> bool {
        self.outstanding.len() < self.limits.outstanding
    }

    /// Batches handed out and not acknowledged by every destination.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Hands out the open batch, with its number; a new batch opens.
    pub fn hand_out(&mut self) -> (u64, B) {
        let number = self.next_number;
        self.next_number += 1;
        self.outstanding.push_back(Handed {
            number,
            position: self.open_position.take(),
            commits: std::mem::take(&mut self.open_commits),
            acked_by: vec![false; self.destinations],
        });
        self.first_pending = None;
        (number, std::mem::take(&mut self.open))
    }

    /// Destination `destination` wrote batch `number`. Returns the batches every destination has
    /// now acknowledged, oldest first; the acknowledgeable position is then
    /// that of the newest of them that has one (also kept in
    /// [`Pipeline::acknowledged`]).
    pub fn acknowledge(
        &mut self,
        destination: usize,
        number: u64,
    ) -> Result<Vec<Handed<P>>, PipelineError> {
        let expected = *self
            .next_ack
            .get(destination)
            .ok_or(PipelineError::NoDestination(destination))?;
        if number != expected {
            let handed = self.outstanding.iter().any(|h| h.number == number);
            return Err(if handed && number > expected {
                PipelineError::OutOfOrder {
                    destination,
                    number,
                    expected,
                }
            } else {
                PipelineError::NotOutstanding {
                    destination,
                    number,
                }
            });
        }
        let Some(h) = self.outstanding.iter_mut().find(|h| h.number == number) else {
            return Err(PipelineError::NotOutstanding {
                destination,
                number,
            });
        };
        h.acked_by[destination] = true;
        self.next_ack[destination] += 1;
        let mut released = Vec::new();
        while self
            .outstanding
            .front()
            .is_some_and(|h| h.acked_by.iter().all(|a| *a))
        {
            let h = self.outstanding.pop_front().expect("checked");
            if let Some(p) = h.position {
                self.acknowledged = Some(self.acknowledged.map_or(p, |a| a.max(p)));
            }
            released.push(h);
        }
        Ok(released)
    }

    /// The newest position every destination has acknowledged.
    pub fn acknowledged(&self) -> Option<P> {
        self.acknowledged
    }

    /// Whether nothing is open, handed out or in a transaction: every
    /// change received is acknowledged by every destination.
    pub fn idle(&self) -> bool {
        !self.in_transaction
            && self.open.rows() == 0
            && self.open_position.is_none()
            && self.outstanding.is_empty()
    }

    /// The position of the open batch, and its newest commit time, for a
    /// last write at shutdown once nothing is outstanding.
    pub fn open_position(&self) -> Option<(P, i64)> {
        match (self.open_position, self.open_commits.last()) {
            (Some(p), Some(c)) => Some((p, *c)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, Eq)]
    struct Rows(usize, bool);

    impl Contents for Rows {
        fn rows(&self) -> usize {
            self.0
        }
        fn bytes(&self) -> usize {
            self.0 * 100
        }
        fn standalone(&self) -> bool {
            self.1
        }
    }

    fn limits(outstanding: usize) -> Limits {
        Limits {
            rows: 10,
            bytes: 1 << 20,
            wait: Duration::from_millis(20),
            outstanding,
        }
    }

    fn transaction(p: &mut Pipeline<Rows, u64>, rows: usize, end: u64, t: Instant) {
        p.begin();
        p.open().0 += rows;
        p.changed(t);
        p.commit(end, end as i64, t);
    }

    #[test]
    fn the_position_moves_only_to_what_every_destination_acknowledged() {
        let t = Instant::now();
        let mut p: Pipeline<Rows, u64> = Pipeline::new(2, limits(3));
        transaction(&mut p, 10, 100, t);
        let (b0, _) = p.hand_out();
        transaction(&mut p, 10, 200, t);
        let (b1, _) = p.hand_out();
        // The store has both; the SIEM neither: nothing may be forgotten.
        assert!(p.acknowledge(0, b0).unwrap().is_empty());
        assert!(p.acknowledge(0, b1).unwrap().is_empty());
        assert_eq!(p.acknowledged(), None);
        // The SIEM catches up one batch at a time.
        let r = p.acknowledge(1, b0).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(p.acknowledged(), Some(100));
        let r = p.acknowledge(1, b1).unwrap();
        assert_eq!(
            r.iter().map(|h| h.position).collect::<Vec<_>>(),
            [Some(200)]
        );
        assert_eq!(p.acknowledged(), Some(200));
        assert!(p.idle());
    }

    #[test]
    fn with_any_number_of_destinations_the_slowest_decides() {
        for destinations in 1..=4 {
            let t = Instant::now();
            let mut p: Pipeline<Rows, u64> = Pipeline::new(destinations, limits(8));
            let batches: Vec<u64> = (1..=5)
                .map(|i| {
                    transaction(&mut p, 10, i * 10, t);
                    p.hand_out().0
                })
                .collect();
            // Destination s acknowledges the first s+1 batches.
            for s in 0..destinations {
                for b in &batches[..=s.min(4)] {
                    p.acknowledge(s, *b).unwrap();
                }
            }
            // The slowest (destination 0) acknowledged one batch.
            assert_eq!(p.acknowledged(), Some(10), "{destinations} destinations");
            for b in &batches[1..] {
                for s in 0..destinations {
                    if s < *b as usize {
                        p.acknowledge(s, *b).unwrap();
                    }
                }
            }
            assert_eq!(p.acknowledged(), Some(50), "{destinations} destinations");
            assert_eq!(p.outstanding(), 0);
        }
    }

    #[test]
    fn a_batch_without_a_commit_releases_no_position() {
        let t = Instant::now();
        let mut p: Pipeline<Rows, u64> = Pipeline::new(1, limits(2));
        // A transaction larger than a batch: its first part is full.
        p.begin();
        p.open().0 = 10;
        p.changed(t);
        assert!(p.due(t));
        let (b0, _) = p.hand_out();
        assert!(p.acknowledge(0, b0).unwrap()[0].position.is_none());
        assert_eq!(p.acknowledged(), None);
        assert!(!p.idle(), "the transaction is still open");
        p.open().0 = 3;
        p.commit(70, 1, t);
        let (b1, _) = p.hand_out();
        p.acknowledge(0, b1).unwrap();
        assert_eq!(p.acknowledged(), Some(70));
    }

    #[test]
    fn acknowledgements_out_of_order_or_twice_are_refused() {
        let t = Instant::now();
        let mut p: Pipeline<Rows, u64> = Pipeline::new(2, limits(3));
        transaction(&mut p, 1, 1, t);
        let (b0, _) = p.hand_out();
        transaction(&mut p, 1, 2, t);
        let (b1, _) = p.hand_out();
        assert_eq!(
            p.acknowledge(0, b1),
            Err(PipelineError::OutOfOrder {
                destination: 0,
                number: 1,
                expected: 0
            })
        );
        p.acknowledge(0, b0).unwrap();
        assert_eq!(
            p.acknowledge(0, b0),
            Err(PipelineError::NotOutstanding {
                destination: 0,
                number: 0
            })
        );
        assert_eq!(p.acknowledge(2, b0), Err(PipelineError::NoDestination(2)));
        assert_eq!(p.acknowledged(), None, "destination 1 acknowledged nothing");
    }

    #[test]
    fn a_batch_is_due_when_full_or_when_a_commit_has_waited() {
        let t = Instant::now();
        let mut p: Pipeline<Rows, u64> = Pipeline::new(1, limits(1));
        assert!(!p.due(t + Duration::from_secs(1)), "nothing open");
        p.begin();
        p.open().0 = 2;
        p.changed(t);
        // Waited, but no transaction is complete: nothing to acknowledge.
        assert!(!p.due(t + Duration::from_millis(25)));
        p.commit(5, 0, t + Duration::from_millis(1));
        assert!(!p.due(t + Duration::from_millis(10)));
        assert!(p.due(t + Duration::from_millis(20)));
        p.open().0 = 10;
        assert!(p.due(t), "full");
        p.hand_out();
        assert!(!p.has_room(), "one outstanding at most");
        // Signed checkpoints need no commit.
        p.open().1 = true;
        p.open().0 = 1;
        p.changed(t);
        assert!(p.due(t + Duration::from_millis(20)));
    }

    #[test]
    fn the_open_batch_keeps_its_position_apart_from_what_was_acknowledged() {
        let t = Instant::now();
        let mut p: Pipeline<Rows, u64> = Pipeline::new(1, limits(2));
        transaction(&mut p, 1, 10, t);
        let (b0, _) = p.hand_out();
        p.acknowledge(0, b0).unwrap();
        transaction(&mut p, 1, 20, t);
        assert_eq!(p.open_position(), Some((20, 20)));
        assert_eq!(p.acknowledged(), Some(10));
        assert!(!p.idle(), "the open batch holds a commit");
    }
}
