//! Keys of the extension's heavyweight locks (chain ownership, token jti).
//!
//! `pg_locks` shows every lock's key to every role. A key computable from a
//! tenant name would tell anyone when that tenant writes, so keys are a
//! keyed hash: SHA-256 over a secret drawn at server start, a domain label
//! and the length-prefixed parts, cut to 64 bits.

use sha2::{Digest, Sha256};

/// Bytes of the per-server secret.
pub const SECRET_BYTES: usize = 32;

/// The 64-bit lock key of `parts` in `domain` under `secret`.
pub fn lock_key(secret: &[u8; SECRET_BYTES], domain: &str, parts: &[&[u8]]) -> u64 {
    let mut h = Sha256::new();
    h.update(secret);
    h.update((domain.len() as u32).to_be_bytes());
    h.update(domain.as_bytes());
    for p in parts {
        h.update((p.len() as u32).to_be_bytes());
        h.update(p);
    }
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_secret_domain_and_every_part() {
        let s1 = [1u8; SECRET_BYTES];
        let s2 = [2u8; SECRET_BYTES];
        let k = lock_key(&s1, "chain", &[b"db", b"tenant-a"]);
        assert_eq!(k, lock_key(&s1, "chain", &[b"db", b"tenant-a"]));
        assert_ne!(k, lock_key(&s2, "chain", &[b"db", b"tenant-a"]));
        assert_ne!(k, lock_key(&s1, "jti", &[b"db", b"tenant-a"]));
        assert_ne!(k, lock_key(&s1, "chain", &[b"db", b"tenant-b"]));
        // Length prefixes: moving a byte between parts changes the key.
        assert_ne!(
            lock_key(&s1, "chain", &[b"ab", b"c"]),
            lock_key(&s1, "chain", &[b"a", b"bc"])
        );
    }
}
