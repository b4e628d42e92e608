//! Signed checkpoints in the transparency-log form stock tools check: a
//! C2SP signed note (`c2sp.org/signed-note`) whose text is a C2SP
//! checkpoint (`c2sp.org/tlog-checkpoint`):
//!
//! ```text
//! pg_authaudit/agency-1          origin: the witness's prefix and the tenant
//! 1042                           tree size: rows 1 to 1042
//! 3q2+7w==…                      the Merkle root (RFC 9162), base64
//! seq 1042                       extension lines: the head row's digests
//! link_sha256 ab01…                and when the witness signed
//! digest_sha512 …
//! digest_sha3_256 …
//! time 2026-12-01T20:51:34Z
//!
//! — authaudit-witness Aa1bB2cc…   key name, base64(key id ‖ Ed25519 signature)
//! ```
//!
//! Keys are Ed25519, written as Go's `golang.org/x/mod/sumdb/note` writes
//! them: the signer key `PRIVATE+KEY+<name>+<id>+<base64(0x01 ‖ seed)>`
//! (kept in a file, never in PostgreSQL) and the verifier key
//! `<name>+<id>+<base64(0x01 ‖ public key)>` (published), where the key id
//! is the first four bytes of SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

const ED25519: u8 = 0x01;
/// The signature line's lead: an em dash and a space.
const DASH: &str = "\u{2014} ";

/// Why a key or note was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("malformed key: {0}")]
    Key(&'static str),
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    #[error("no signature by key {0} on the note")]
    NotSigned(String),
    #[error("the signature by key {0} does not verify")]
    BadSignature(String),
}

fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ED25519]);
    h.update(public);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// `<name>+<key id>+<base64(0x01 ‖ bytes)>`: the key text of both forms
/// (`bytes` the seed of a signer key, the public key of a verifier key).
fn key_text(name: &str, public: &[u8; 32], bytes: &[u8; 32]) -> String {
    let mut data = vec![ED25519];
    data.extend_from_slice(bytes);
    format!(
        "{name}+{}+{}",
        hex::encode(key_id(name, public)),
        B64.encode(data)
    )
}

/// The 32 key bytes of `base64(0x01 ‖ bytes)`.
fn key_bytes(data: &str) -> Result<[u8; 32], NoteError> {
    let bytes = B64
        .decode(data)
        .map_err(|_| NoteError::Key("key is not base64"))?;
    let [ED25519, key @ ..] = &bytes[..] else {
        return Err(NoteError::Key("not an Ed25519 key"));
    };
    key.try_into()
        .map_err(|_| NoteError::Key("an Ed25519 key is 32 bytes"))
}

fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains(['+', ' ', '\n', '\t']) {
        return Err(NoteError::Key(
            "a key name is non-empty, without '+' or spaces",
        ));
    }
    Ok(())
}

/// A signer key.
pub struct Signer25519 {
    name: String,
    key: SigningKey,
}

impl Signer25519 {
    /// A key from 32 bytes of seed.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Signer25519, NoteError> {
        check_name(name)?;
        Ok(Signer25519 {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Parses `PRIVATE+KEY+<name>+<id>+<base64>`.
    pub fn parse(text: &str) -> Result<Signer25519, NoteError> {
        // The key data is base64, which may hold '+': four cuts, the rest.
        let parts: Vec<&str> = text.trim().splitn(5, '+').collect();
        let [p, k, name, id, data] = parts[..] else {
            return Err(NoteError::Key("expected PRIVATE+KEY+name+id+key"));
        };
        if p != "PRIVATE" || k != "KEY" {
            return Err(NoteError::Key("expected PRIVATE+KEY+name+id+key"));
        }
        let signer = Signer25519::from_seed(name, key_bytes(data)?)?;
        if hex::encode(key_id(name, signer.key.verifying_key().as_bytes())) != id {
            return Err(NoteError::Key("the key id does not match the key"));
        }
        Ok(signer)
    }

    /// The signer key's text (for the key file).
    pub fn private_text(&self) -> String {
        let public = self.key.verifying_key().to_bytes();
        format!(
            "PRIVATE+KEY+{}",
            key_text(&self.name, &public, self.key.as_bytes())
        )
    }

    /// The verifier key to publish.
    pub fn verifier(&self) -> Verifier25519 {
        Verifier25519 {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// `text` (newline-terminated) signed: the note.
    pub fn sign(&self, text: &str) -> String {
        debug_assert!(text.ends_with('\n'));
        let sig = self.key.sign(text.as_bytes());
        let mut data = key_id(&self.name, self.key.verifying_key().as_bytes()).to_vec();
        data.extend_from_slice(&sig.to_bytes());
        format!("{text}\n{DASH}{} {}\n", self.name, B64.encode(data))
    }
}

/// A verifier key.
#[derive(Clone)]
pub struct Verifier25519 {
    name: String,
    key: VerifyingKey,
}

impl Verifier25519 {
    /// Parses `<name>+<id>+<base64(0x01 ‖ public key)>`.
    pub fn parse(text: &str) -> Result<Verifier25519, NoteError> {
        let parts: Vec<&str> = text.trim().splitn(3, '+').collect();
        let [name, id, data] = parts[..] else {
            return Err(NoteError::Key("expected name+id+key"));
        };
        check_name(name)?;
        let public = key_bytes(data)?;
        if hex::encode(key_id(name, &public)) != id {
            return Err(NoteError::Key("the key id does not match the key"));
        }
        let key = VerifyingKey::from_bytes(&public).map_err(|_| NoteError::Key("not a point"))?;
        Ok(Verifier25519 {
            name: name.to_owned(),
            key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key's text.
    pub fn text(&self) -> String {
        let public = self.key.to_bytes();
        key_text(&self.name, &public, &public)
    }

    /// The text of `note` if this key signed it.
    pub fn open<'n>(&self, note: &'n str) -> Result<&'n str, NoteError> {
        let split = note
            .find("\n\n")
            .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
        let (text, signatures) = (&note[..split + 1], &note[split + 2..]);
        let id = key_id(&self.name, self.key.as_bytes());
        for line in signatures.lines() {
            let Some(rest) = line.strip_prefix(DASH) else {
                return Err(NoteError::Malformed(
                    "a signature line starts with an em dash",
                ));
            };
            let Some((name, data)) = rest.split_once(' ') else {
                return Err(NoteError::Malformed(
                    "a signature line is name and signature",
                ));
            };
            if name != self.name {
                continue;
            }
            let bytes = B64
                .decode(data)
                .map_err(|_| NoteError::Malformed("a signature is base64"))?;
            if bytes.len() != 68 || bytes[..4] != id {
                continue;
            }
            let sig = Signature::from_slice(&bytes[4..])
                .map_err(|_| NoteError::Malformed("a signature is 64 bytes"))?;
            return match self.key.verify(text.as_bytes(), &sig) {
                Ok(()) => Ok(text),
                Err(_) => Err(NoteError::BadSignature(self.name.clone())),
            };
        }
        Err(NoteError::NotSigned(self.name.clone()))
    }
}

/// Verifier keys listed in one setting, separated by commas or whitespace
/// (a key text holds neither).
pub fn verifier_list(text: &str) -> Result<Vec<Verifier25519>, NoteError> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|k| !k.is_empty())
        .map(Verifier25519::parse)
        .collect()
}

/// The text of `note` and the key that signed it, if one of `keys` did.
pub fn open_with_any<'n, 'k>(
    keys: &'k [Verifier25519],
    note: &'n str,
) -> Result<(&'n str, &'k Verifier25519), NoteError> {
    let mut last = NoteError::NotSigned("(none)".into());
    for key in keys {
        match key.open(note) {
            Ok(text) => return Ok((text, key)),
            Err(e @ NoteError::Malformed(_)) => return Err(e),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// `text` (newline-terminated) signed by each of `signers`, in order: one
/// note with a signature line per key.
pub fn sign_all(text: &str, signers: &[&Signer25519]) -> String {
    let mut note = format!("{text}\n");
    for s in signers {
        let signed = s.sign(text);
        note.push_str(&signed[text.len() + 1..]);
    }
    note
}

/// A witness key rotation: the old key hands over to the new one. The
/// statement is a signed note carrying both keys' signatures, so whoever
/// trusts the old key learns the new one from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// Verifier key texts.
    pub old: String,
    pub new: String,
    /// RFC 3339, UTC.
    pub time: String,
}

const ROTATION: &str = "pg_authaudit witness key rotation";

impl Rotation {
    /// The statement's text (what both keys sign).
    pub fn text(&self) -> String {
        format!(
            "{ROTATION}\nold {}\nnew {}\ntime {}\n",
            self.old, self.new, self.time
        )
    }

    pub fn parse(text: &str) -> Result<Rotation, NoteError> {
        let bad = NoteError::Malformed;
        let mut lines = text.lines();
        if lines.next() != Some(ROTATION) {
            return Err(bad("not a key rotation statement"));
        }
        let mut field = |name: &str| -> Result<String, NoteError> {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name))
                .and_then(|l| l.strip_prefix(' '))
                .map(str::to_owned)
                .ok_or(bad("a rotation statement is old, new and time lines"))
        };
        Ok(Rotation {
            old: field("old")?,
            new: field("new")?,
            time: field("time")?,
        })
    }

    /// The statement `note` if `old` signed it, names `old` as the old key,
    /// and the new key it names signed it too; the new key.
    pub fn open(note: &str, old: &Verifier25519) -> Result<(Rotation, Verifier25519), NoteError> {
        let text = old.open(note)?;
        let r = Rotation::parse(text)?;
        if r.old != old.text() {
            return Err(NoteError::Malformed("the statement names another old key"));
        }
        let new = Verifier25519::parse(&r.new)?;
        new.open(note)?;
        Ok((r, new))
    }
}

/// A checkpoint of one tenant's mirrored log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub tree_size: u64,
    pub root: [u8; 32],
    /// The head row's link and digests, hex.
    pub link_sha256: String,
    pub digest_sha512: String,
    pub digest_sha3_256: String,
    /// RFC 3339, UTC.
    pub time: String,
}

impl Checkpoint {
    /// The checkpoint's text (what is signed).
    pub fn text(&self) -> String {
        format!(
            "{}\n{}\n{}\nseq {}\nlink_sha256 {}\ndigest_sha512 {}\ndigest_sha3_256 {}\ntime {}\n",
            self.origin,
            self.tree_size,
            B64.encode(self.root),
            self.tree_size,
            self.link_sha256,
            self.digest_sha512,
            self.digest_sha3_256,
            self.time
        )
    }

    /// Parses a checkpoint's text.
    pub fn parse(text: &str) -> Result<Checkpoint, NoteError> {
        let bad = NoteError::Malformed;
        let mut lines = text.lines();
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or(bad("no origin"))?;
        let tree_size = lines
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or(bad("no tree size"))?;
        let root: [u8; 32] = lines
            .next()
            .and_then(|r| B64.decode(r).ok())
            .and_then(|r| r.try_into().ok())
            .ok_or(bad("no root hash"))?;
        let mut ext = std::collections::HashMap::new();
        for line in lines {
            if let Some((k, v)) = line.split_once(' ') {
                ext.insert(k, v);
            }
        }
        let field = |k: &str| {
            ext.get(k)
                .map(|v| v.to_string())
                .ok_or(bad("a digest line is missing"))
        };
        Ok(Checkpoint {
            origin: origin.to_owned(),
            tree_size,
            root,
            link_sha256: field("link_sha256")?,
            digest_sha512: field("digest_sha512")?,
            digest_sha3_256: field("digest_sha3_256")?,
            time: field("time")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "pg_authaudit/agency-1".into(),
            tree_size: 1042,
            root: [7; 32],
            link_sha256: "ab".repeat(32),
            digest_sha512: "cd".repeat(64),
            digest_sha3_256: "ef".repeat(32),
            time: "2026-12-01T20:51:34Z".into(),
        }
    }

    #[test]
    fn a_signed_checkpoint_opens_with_its_key_only() {
        let signer = Signer25519::from_seed("authaudit-witness", [9; 32]).unwrap();
        let verifier = Verifier25519::parse(&signer.verifier().text()).unwrap();
        let c = checkpoint();
        let note = signer.sign(&c.text());
        assert!(note.contains("\n\n\u{2014} authaudit-witness "));
        let text = verifier.open(&note).unwrap();
        assert_eq!(Checkpoint::parse(text).unwrap(), c);
        // Any change to the text breaks the signature.
        let forged = note.replace("\n1042\n", "\n1043\n");
        assert_eq!(
            verifier.open(&forged),
            Err(NoteError::BadSignature("authaudit-witness".into()))
        );
        // Another key's signature is not this key's.
        let other = Signer25519::from_seed("authaudit-witness", [8; 32]).unwrap();
        assert_eq!(
            verifier.open(&other.sign(&c.text())),
            Err(NoteError::NotSigned("authaudit-witness".into()))
        );
    }

    #[test]
    fn keys_round_trip_in_the_sumdb_note_text_form() {
        let signer = Signer25519::from_seed("w1", [3; 32]).unwrap();
        let text = signer.private_text();
        assert!(text.starts_with("PRIVATE+KEY+w1+"));
        let again = Signer25519::parse(&text).unwrap();
        assert_eq!(again.verifier().text(), signer.verifier().text());
        let v = signer.verifier().text();
        // Keys whose base64 holds '+' round-trip too.
        for seed in 0..64u8 {
            let s = Signer25519::from_seed("w2", [seed; 32]).unwrap();
            assert_eq!(
                Signer25519::parse(&s.private_text())
                    .unwrap()
                    .verifier()
                    .text(),
                s.verifier().text()
            );
            Verifier25519::parse(&s.verifier().text()).unwrap();
        }
        // A key id that does not match the key is refused.
        let mut parts: Vec<String> = v.splitn(3, '+').map(str::to_owned).collect();
        parts[1] = "00000000".into();
        assert!(Verifier25519::parse(&parts.join("+")).is_err());
        assert!(Signer25519::from_seed("bad name", [3; 32]).is_err());
    }

    /// The signed checkpoint of docs/chain-test-vectors.txt, reproduced.
    #[test]
    fn the_published_signed_checkpoint_vector() {
        let published = include_str!("../../docs/chain-test-vectors.txt");
        let vector = |name: &str| -> String {
            published
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} = ")))
                .unwrap_or_else(|| panic!("{name} is published"))
                .to_owned()
        };
        let seed: [u8; 32] = std::array::from_fn(|i| i as u8);
        let signer = Signer25519::from_seed("vectors-witness", seed).unwrap();
        let verifier = signer.verifier();
        let root: [u8; 32] = hex::decode(vector("merkle.root4"))
            .unwrap()
            .try_into()
            .unwrap();
        let c = Checkpoint {
            origin: "pg_authaudit/acme".into(),
            tree_size: 4,
            root,
            link_sha256: vector("seq4.sha256"),
            digest_sha512: vector("seq4.sha512"),
            digest_sha3_256: vector("seq4.sha3_256"),
            time: "2026-01-01T00:00:05+00:00".into(),
        };
        assert_eq!(hex::encode(c.text()), vector("witness.text"));
        let note = signer.sign(&c.text());
        let sig = B64
            .decode(note.rsplit(' ').next().unwrap().trim_end())
            .unwrap();
        assert_eq!(hex::encode(&sig[..4]), vector("witness.key_id"));
        assert_eq!(hex::encode(&sig[4..]), vector("witness.signature"));
        assert_eq!(
            hex::encode(
                &B64.decode(verifier.text().splitn(3, '+').nth(2).unwrap())
                    .unwrap()[1..]
            ),
            vector("witness.public_key")
        );
        assert!(published.contains(&format!("#   {}\n", verifier.text())));
        assert_eq!(Checkpoint::parse(verifier.open(&note).unwrap()).unwrap(), c);
    }

    #[test]
    fn a_note_opens_with_any_listed_key_and_names_it() {
        let a = Signer25519::from_seed("witness-a", [1; 32]).unwrap();
        let b = Signer25519::from_seed("witness-b", [2; 32]).unwrap();
        let c = Signer25519::from_seed("witness-c", [3; 32]).unwrap();
        let keys = verifier_list(&format!(
            "{}, {}\n",
            a.verifier().text(),
            b.verifier().text()
        ))
        .unwrap();
        assert_eq!(keys.len(), 2);
        let note = b.sign("pg_authaudit/t\n1\nAA==\n");
        let (text, key) = open_with_any(&keys, &note).unwrap();
        assert_eq!(
            (text, key.name()),
            ("pg_authaudit/t\n1\nAA==\n", "witness-b")
        );
        let other = c.sign("pg_authaudit/t\n1\nAA==\n");
        assert!(open_with_any(&keys, &other).is_err());
        assert!(open_with_any(&[], &note).is_err());
        assert!(verifier_list("not-a-key").is_err());
        assert!(verifier_list(" ").unwrap().is_empty());
    }

    #[test]
    fn a_rotation_needs_both_keys_and_names_the_old_one() {
        let old = Signer25519::from_seed("authaudit-witness", [1; 32]).unwrap();
        let new = Signer25519::from_seed("authaudit-witness", [2; 32]).unwrap();
        let other = Signer25519::from_seed("authaudit-witness", [3; 32]).unwrap();
        let r = Rotation {
            old: old.verifier().text(),
            new: new.verifier().text(),
            time: "2026-12-01T23:30:00+00:00".into(),
        };
        let both = sign_all(&r.text(), &[&new, &old]);
        let (got, key) = Rotation::open(&both, &old.verifier()).unwrap();
        assert_eq!(got, r);
        assert_eq!(key.text(), new.verifier().text());
        // The new key alone, the old key alone, or a statement naming
        // another old key: none hands over.
        assert!(Rotation::open(&new.sign(&r.text()), &old.verifier()).is_err());
        assert!(Rotation::open(&old.sign(&r.text()), &old.verifier()).is_err());
        let hijack = Rotation {
            old: other.verifier().text(),
            ..r.clone()
        };
        let note = sign_all(&hijack.text(), &[&new, &old]);
        assert!(Rotation::open(&note, &old.verifier()).is_err());
        // Seen from the new key, the statement is signed but not a hand-over
        // from it.
        assert!(Rotation::open(&both, &new.verifier()).is_err());
    }
}
