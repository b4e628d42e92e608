//! Log ids of imported events: deterministic (a re-run records nothing
//! twice) and sorting as the events happened. `authaudit.lockout_replay`
//! decides the events of one instant in `log_id` order
//! (docs/lockout.md, "Event time"), so an id sorts by, in this order:
//!
//! 1. the event's second (48 bits);
//! 2. its file, earliest-starting first: 28 bits that fall as the time from
//!    the file's first dated line to the event grows, then 8 bits of the
//!    SHA-256 of that first line (files starting in the same second);
//! 3. its ordinal among the file's events of that second (20 bits): line
//!    order, and order within a line;
//! 4. 18 bits of the SHA-256 of the namespace (the tenant), the line's
//!    bytes, how many identical lines came before it in the file, and the
//!    event's index within the line.
//!
//! Rotated files split inside one second thus keep their order whatever
//! order they are given in, and a file's ids depend on the file alone (not
//! on the other files of the run, nor on lines appended to it later). The
//! id is a UUID of version 8 (RFC 9562: custom layout).

use sha2::{Digest, Sha256};

/// What places a file among the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileKey {
    /// The second of the file's first dated line.
    pub start_second: i64,
    /// The first byte of the SHA-256 of that line.
    pub tag: u8,
}

impl FileKey {
    pub fn new(start_second: i64, first_line: &[u8]) -> FileKey {
        FileKey {
            start_second,
            tag: Sha256::digest(first_line)[0],
        }
    }
}

/// Where an event comes from, for its id.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub namespace: &'a str,
    pub line: &'a [u8],
    /// Identical lines before this one in the file.
    pub occurrence: u32,
    /// The event's index within its line.
    pub index: u32,
}

const DELTA_BITS: u32 = 28;
const ORDINAL_BITS: u32 = 20;
const HASH_BITS: u32 = 18;

/// The id of an event at `second`, the `ordinal`-th of its file in that second.
pub fn log_id(second: i64, file: FileKey, ordinal: u32, origin: Origin<'_>) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update((origin.namespace.len() as u64).to_be_bytes());
    h.update(origin.namespace.as_bytes());
    h.update((origin.line.len() as u64).to_be_bytes());
    h.update(origin.line);
    h.update(origin.occurrence.to_be_bytes());
    h.update(origin.index.to_be_bytes());
    let h = h.finalize();
    let hash = u128::from(u32::from_be_bytes([h[0], h[1], h[2], h[3]]) >> (32 - HASH_BITS));
    let delta_max = (1i64 << DELTA_BITS) - 1;
    let delta = (second - file.start_second).clamp(0, delta_max);
    let fall = (delta_max - delta) as u128;
    let ordinal = u128::from(ordinal.min((1 << ORDINAL_BITS) - 1));
    // 74 bits after the second: fall, tag, ordinal, hash.
    let x: u128 = (fall << (8 + ORDINAL_BITS + HASH_BITS))
        | (u128::from(file.tag) << (ORDINAL_BITS + HASH_BITS))
        | (ordinal << HASH_BITS)
        | hash;
    let second = (second as u64 & 0xffff_ffff_ffff) as u128;
    let id: u128 =
        (second << 80) | (0x8 << 76) | ((x >> 62) << 64) | (0b10 << 62) | (x & ((1 << 62) - 1));
    id.to_be_bytes()
}

/// The log id as the uuid text form.
pub fn uuid_text(id: &[u8; 16]) -> String {
    let h: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(line: &[u8]) -> Origin<'_> {
        Origin {
            namespace: "t",
            line,
            occurrence: 0,
            index: 0,
        }
    }

    #[test]
    fn ids_sort_by_second_then_file_start_then_ordinal() {
        let older = FileKey::new(1_000, b"older");
        let newer = FileKey::new(2_000, b"newer");
        let s = 2_000;
        let mut ids = vec![
            log_id(s + 1, older, 0, origin(b"e")),
            log_id(s, newer, 1, origin(b"d")),
            log_id(s, newer, 0, origin(b"c")),
            log_id(s, older, 1, origin(b"b")),
            log_id(s, older, 0, origin(b"a")),
        ];
        ids.reverse();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ids);
    }

    #[test]
    fn ids_are_uuid_version_8_and_deterministic() {
        let f = FileKey::new(5, b"first");
        let a = log_id(10, f, 3, origin(b"line"));
        assert_eq!(a, log_id(10, f, 3, origin(b"line")));
        let text = uuid_text(&a);
        assert_eq!(text.as_bytes()[14], b'8');
        assert!(
            matches!(text.as_bytes()[19], b'8' | b'9' | b'a' | b'b'),
            "{text}"
        );
        let other_tenant = Origin {
            namespace: "u",
            ..origin(b"line")
        };
        assert_ne!(a, log_id(10, f, 3, other_tenant));
        assert_eq!(&a[..6], &10u64.to_be_bytes()[2..]);
    }
}
