//! Where a chain whose oldest rows retention removed starts again.
//!
//! `apply_retention` records, in its chained `retention_applied` event, the
//! three digests of the row it cut after (the anchor), and the checkpoint at
//! that seq holds them too. A verifier re-anchors every chain (SHA-256,
//! SHA-512 and SHA3-256) at that head. The two copies must agree: the event
//! is verified with the rest of the chain, so a checkpoint rewritten after
//! the cut is caught here. Events of releases before 0.7.0 recorded only the
//! anchor's SHA-256 link; the checkpoint then supplies the other two, and the
//! link must still agree.

use crate::chain::{ct_eq, ChainHead};

/// The anchor digests a `retention_applied` event recorded (each `None` when
/// absent or not of its digest's length).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordedAnchor {
    pub sha256: Option<[u8; 32]>,
    pub sha512: Option<[u8; 64]>,
    pub sha3_256: Option<[u8; 32]>,
}

impl RecordedAnchor {
    /// Reads the event's digests from their stored bytes (hex-decoded).
    pub fn from_parts(
        sha256: Option<&[u8]>,
        sha512: Option<&[u8]>,
        sha3_256: Option<&[u8]>,
    ) -> RecordedAnchor {
        RecordedAnchor {
            sha256: sha256.and_then(|b| b.try_into().ok()),
            sha512: sha512.and_then(|b| b.try_into().ok()),
            sha3_256: sha3_256.and_then(|b| b.try_into().ok()),
        }
    }

    /// The whole head, when the event recorded all three digests.
    pub fn head(&self) -> Option<ChainHead> {
        Some(ChainHead {
            sha256: self.sha256?,
            sha512: self.sha512?,
            sha3_256: self.sha3_256?,
        })
    }
}

/// Why no anchor could be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnchorFault {
    #[error("neither a checkpoint nor a retention_applied event holds the anchor's digests")]
    Missing,
    #[error("the checkpoint differs from the anchor its retention_applied event recorded")]
    Disagrees,
}

/// The head to verify on from, given the checkpoint at the cut (if any) and
/// what the retention event recorded (all `None` without an event).
pub fn reanchor(
    checkpoint: Option<ChainHead>,
    recorded: RecordedAnchor,
) -> Result<ChainHead, AnchorFault> {
    match (checkpoint, recorded.head()) {
        (Some(cp), Some(event)) => {
            // Non-short-circuiting: all three comparisons always run.
            let same = ct_eq(&cp.sha256, &event.sha256)
                & ct_eq(&cp.sha512, &event.sha512)
                & ct_eq(&cp.sha3_256, &event.sha3_256);
            if same {
                Ok(event)
            } else {
                Err(AnchorFault::Disagrees)
            }
        }
        (None, Some(event)) => Ok(event),
        (Some(cp), None) => match recorded.sha256 {
            Some(link) if !ct_eq(&cp.sha256, &link) => Err(AnchorFault::Disagrees),
            _ => Ok(cp),
        },
        (None, None) => Err(AnchorFault::Missing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(n: u8) -> ChainHead {
        ChainHead::genesis("acme").next(i64::from(n), &[n])
    }

    fn recorded(h: &ChainHead) -> RecordedAnchor {
        RecordedAnchor {
            sha256: Some(h.sha256),
            sha512: Some(h.sha512),
            sha3_256: Some(h.sha3_256),
        }
    }

    #[test]
    fn the_event_and_the_checkpoint_must_agree() {
        let h = head(4);
        assert_eq!(reanchor(Some(h.clone()), recorded(&h)), Ok(h.clone()));
        assert_eq!(
            reanchor(Some(head(5)), recorded(&h)),
            Err(AnchorFault::Disagrees)
        );
        // One digest rewritten is enough to disagree.
        let mut cp = h.clone();
        cp.sha3_256[0] ^= 1;
        assert_eq!(
            reanchor(Some(cp), recorded(&h)),
            Err(AnchorFault::Disagrees)
        );
    }

    #[test]
    fn the_event_alone_anchors_all_three_chains() {
        let h = head(4);
        assert_eq!(reanchor(None, recorded(&h)), Ok(h.clone()));
    }

    #[test]
    fn a_link_only_event_needs_the_checkpoint_and_must_match_its_link() {
        let h = head(4);
        let link_only = RecordedAnchor {
            sha256: Some(h.sha256),
            ..RecordedAnchor::default()
        };
        assert_eq!(reanchor(Some(h.clone()), link_only), Ok(h.clone()));
        assert_eq!(
            reanchor(Some(head(3)), link_only),
            Err(AnchorFault::Disagrees)
        );
        assert_eq!(reanchor(None, link_only), Err(AnchorFault::Missing));
    }

    #[test]
    fn without_either_there_is_no_anchor() {
        assert_eq!(
            reanchor(None, RecordedAnchor::default()),
            Err(AnchorFault::Missing)
        );
        assert_eq!(
            reanchor(Some(head(1)), RecordedAnchor::default()),
            Ok(head(1))
        );
    }

    #[test]
    fn digests_of_the_wrong_length_are_absent() {
        let r = RecordedAnchor::from_parts(Some(&[1; 31]), Some(&[2; 64]), None);
        assert_eq!(r.sha256, None);
        assert_eq!(r.sha512, Some([2; 64]));
        assert_eq!(r.head(), None);
    }
}
