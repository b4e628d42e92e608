//! PostgreSQL's rows of a tenant against the tree its witness signed.
//!
//! The signed tree's leaves are the `link_sha256` of the rows the witness
//! mirrored, seq 1 first. A row PostgreSQL holds agrees with the tree only
//! if its content, encoded canonically (`canonical`) and chained from the
//! signed link before it (`chain::link_sha256`), gives the signed link:
//! comparing the stored link alone would miss an edit that left the stored
//! digests as they were. [`TreeCheck`] walks the signed rows in seq order
//! beside PostgreSQL's and keeps the first [`Finding`].

use crate::chain::{ct_eq, link_sha256};
use std::fmt;

/// The first way PostgreSQL's rows part from the signed tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The row keeps the signed `link_sha256` (and its `prev_link` the one
    /// before), but its content no longer gives it: edited in place, the
    /// stored digests left as they were.
    Edited { seq: i64 },
    /// The row holds another `link_sha256` than the signed tree;
    /// `recomputed`: its content and its `prev_link` give its stored link,
    /// so the chain was recomputed after the edit.
    Rewritten { seq: i64, recomputed: bool },
    /// PostgreSQL has no row at `seq` (it has later ones).
    Missing { seq: i64 },
    /// PostgreSQL's rows end before the signed size.
    Truncated { from: i64, to: i64 },
}

impl Finding {
    /// The first seq it concerns.
    pub fn seq(&self) -> i64 {
        match self {
            Finding::Edited { seq } | Finding::Rewritten { seq, .. } | Finding::Missing { seq } => {
                *seq
            }
            Finding::Truncated { from, .. } => *from,
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Edited { seq } => write!(
                f,
                "seq {seq} was edited: its content no longer gives the link_sha256 the witness signed (its stored digests were left as they were)"
            ),
            Finding::Rewritten {
                seq,
                recomputed: true,
            } => write!(
                f,
                "seq {seq} was rewritten: its link_sha256 is not the signed tree's (its content was changed and the chain recomputed)"
            ),
            Finding::Rewritten {
                seq,
                recomputed: false,
            } => write!(
                f,
                "seq {seq} was rewritten: its link_sha256 is not the signed tree's"
            ),
            Finding::Missing { seq } => write!(f, "seq {seq} is missing from PostgreSQL"),
            Finding::Truncated { from, to } => write!(
                f,
                "rows {from} to {to} are missing from PostgreSQL (truncated past the signed checkpoint)"
            ),
        }
    }
}

/// PostgreSQL's row at or after a signed seq, as the check reads it.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub seq: i64,
    pub prev_link: &'a [u8],
    pub link_sha256: &'a [u8],
    /// The canonical body of its content (`canonical::encode_body`);
    /// `None` when the content cannot be encoded (a malformed value).
    pub body: Option<&'a [u8]>,
}

/// Walks a tenant's signed rows (seq 1, 2, … up to the signed size) beside
/// PostgreSQL's and keeps the first finding. Rows before `retained_from`
/// (removed by retention, a `retention_applied` event accounting for them)
/// are not asked of PostgreSQL.
#[derive(Debug)]
pub struct TreeCheck {
    retained_from: i64,
    size: i64,
    finding: Option<Finding>,
}

impl TreeCheck {
    pub fn new(size: i64, retained_from: i64) -> TreeCheck {
        TreeCheck {
            retained_from,
            size,
            finding: None,
        }
    }

    /// The signed row at `seq`, whose link is `signed` and follows
    /// `signed_prev`, against PostgreSQL's first row at or after it (`None`:
    /// PostgreSQL has no more). Returns whether that PostgreSQL row was
    /// this seq's (the caller reads the next one).
    pub fn step(
        &mut self,
        seq: i64,
        signed_prev: &[u8],
        signed: &[u8],
        pg: Option<Row<'_>>,
    ) -> bool {
        let here = pg.is_some_and(|r| r.seq == seq);
        if seq < self.retained_from || self.finding.is_some() {
            return here;
        }
        self.finding = match pg {
            None => Some(Finding::Truncated {
                from: seq,
                to: self.size,
            }),
            Some(r) if r.seq != seq => Some(Finding::Missing { seq }),
            Some(r) => {
                let from_content = |prev: &[u8]| r.body.map(|b| link_sha256(prev, seq, b));
                if ct_eq(r.link_sha256, signed) {
                    let gives = from_content(signed_prev).is_some_and(|l| ct_eq(&l, signed));
                    (!gives || !ct_eq(r.prev_link, signed_prev)).then_some(Finding::Edited { seq })
                } else {
                    let recomputed =
                        from_content(r.prev_link).is_some_and(|l| ct_eq(&l, r.link_sha256));
                    Some(Finding::Rewritten { seq, recomputed })
                }
            }
        };
        here
    }

    /// The first finding, if any.
    pub fn finding(self) -> Option<Finding> {
        self.finding
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::ChainHead;

    /// One stored row of a test chain.
    #[derive(Debug, Clone)]
    struct Stored {
        seq: i64,
        body: Vec<u8>,
        prev: [u8; 32],
        link: [u8; 32],
    }

    /// A tenant's rows, chained from the genesis.
    fn chain(bodies: &[&str]) -> Vec<Stored> {
        let mut prev = ChainHead::genesis("t").sha256;
        bodies
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let seq = i as i64 + 1;
                let link = link_sha256(&prev, seq, b.as_bytes());
                let row = Stored {
                    seq,
                    body: b.as_bytes().to_vec(),
                    prev,
                    link,
                };
                prev = link;
                row
            })
            .collect()
    }

    fn check(signed: &[Stored], pg: &[Stored], retained_from: i64) -> Option<Finding> {
        let mut c = TreeCheck::new(signed.len() as i64, retained_from);
        let mut rows = pg.iter().peekable();
        for s in signed {
            while rows.next_if(|r| r.seq < s.seq).is_some() {}
            let row = rows.peek().map(|r| Row {
                seq: r.seq,
                prev_link: &r.prev,
                link_sha256: &r.link,
                body: Some(&r.body),
            });
            if c.step(s.seq, &s.prev, &s.link, row) {
                rows.next();
            }
        }
        c.finding()
    }

    #[test]
    fn rows_that_are_the_signed_ones_agree() {
        let signed = chain(&["a", "b", "c", "d"]);
        assert_eq!(check(&signed, &signed, 1), None);
        // Retention removed the first two; the rest agree.
        assert_eq!(check(&signed, &signed[2..], 3), None);
    }

    #[test]
    fn an_edit_of_the_content_alone_is_named_at_its_seq() {
        let signed = chain(&["a", "b", "c", "d"]);
        let mut pg = signed.clone();
        pg[2].body = b"c, edited".to_vec();
        let f = check(&signed, &pg, 1).unwrap();
        assert_eq!(f, Finding::Edited { seq: 3 });
        assert!(f.to_string().contains("seq 3 was edited"), "{f}");
        // Its prev_link alone changed: edited too.
        let mut pg = signed.clone();
        pg[1].prev = [7; 32];
        assert_eq!(check(&signed, &pg, 1), Some(Finding::Edited { seq: 2 }));
    }

    #[test]
    fn a_recomputed_rewrite_a_deletion_and_a_truncation_are_named() {
        let signed = chain(&["a", "b", "c", "d", "e"]);
        // Row 2 changed and every later link recomputed with the public
        // algorithm.
        let pg = chain(&["a", "B", "c", "d", "e"]);
        let f = check(&signed, &pg, 1).unwrap();
        assert_eq!(
            f,
            Finding::Rewritten {
                seq: 2,
                recomputed: true
            }
        );
        assert!(f
            .to_string()
            .starts_with("seq 2 was rewritten: its link_sha256 is not the signed tree's"));
        // A link overwritten without recomputing.
        let mut pg = signed.clone();
        pg[3].link = [9; 32];
        assert_eq!(
            check(&signed, &pg, 1),
            Some(Finding::Rewritten {
                seq: 4,
                recomputed: false
            })
        );
        let mut pg = signed.clone();
        pg.remove(2);
        assert_eq!(check(&signed, &pg, 1), Some(Finding::Missing { seq: 3 }));
        let f = check(&signed, &signed[..3], 1).unwrap();
        assert_eq!(f, Finding::Truncated { from: 4, to: 5 });
        assert_eq!(f.seq(), 4);
    }

    #[test]
    fn unreadable_content_never_passes() {
        let signed = chain(&["a", "b"]);
        let mut c = TreeCheck::new(2, 1);
        let s = &signed[0];
        let row = Row {
            seq: s.seq,
            prev_link: &s.prev,
            link_sha256: &s.link,
            body: None,
        };
        assert!(c.step(s.seq, &s.prev, &s.link, Some(row)));
        assert_eq!(c.finding(), Some(Finding::Edited { seq: 1 }));
    }
}
