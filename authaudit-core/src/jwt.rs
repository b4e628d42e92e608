//! JWT (RFC 7519) session tokens as the log records them: the JOSE header
//! fields `alg`, `kid`, `typ`, the registered claims and a SHA-256
//! fingerprint of the whole token. The token itself and its signature are
//! never kept.
//!
//! Only the JWS compact serialization (RFC 7515 §7.1) is accepted: three
//! base64url parts without padding, a JSON object header and a JSON object
//! claims set. Unsecured tokens (`alg: none`, RFC 7519 §6) are refused: an
//! application that issues them has no session security to audit. The
//! signature is not checked (the key lives with the issuer); the record
//! proves which token was issued, not that it was genuine.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Longest token accepted (bytes); real session tokens are a few hundred.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a token was refused. Messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    #[error("token claim \"{0}\" has the wrong type")]
    ClaimType(&'static str),
    #[error("unsecured token (alg \"none\") refused")]
    Unsecured,
    #[error("token has no sub claim")]
    NoSubject,
    #[error("token sub does not match user_id")]
    SubjectMismatch,
}

/// What the log keeps of an issued token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenFacts {
    pub alg: String,
    pub kid: Option<String>,
    pub typ: Option<String>,
    pub iss: Option<String>,
    pub sub: String,
    /// `aud` as the token has it: absent, one string or a list.
    pub aud: Option<Value>,
    pub exp: Option<Value>,
    pub iat: Option<Value>,
    pub nbf: Option<Value>,
    pub jti: Option<String>,
    /// Lowercase hex SHA-256 of the token's bytes.
    pub fingerprint_sha256: String,
}

/// Lowercase hex SHA-256 of a token (what the log stores instead of it).
pub fn fingerprint(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(b & 15), 16).unwrap_or('0'));
    }
    out
}

/// Parses a compact JWS and checks that it was issued to `user_id`.
pub fn parse(token: &str, user_id: &str) -> Result<TokenFacts, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed("longer than 16384 bytes"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed(
            "not three base64url parts separated by '.' (JWS compact serialization)",
        ));
    };
    let header = json_object(h, "header is not base64url-encoded JSON object")?;
    let claims = json_object(c, "claims are not a base64url-encoded JSON object")?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) => a.clone(),
        Some(_) => return Err(TokenError::ClaimType("alg")),
        None => return Err(TokenError::Malformed("header has no alg")),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(TokenError::Unsecured);
    }
    if s.is_empty() || URL_SAFE_NO_PAD.decode(s).is_err() {
        return Err(TokenError::Malformed("signature is empty or not base64url"));
    }
    if header.contains_key("enc") {
        return Err(TokenError::Malformed(
            "encrypted tokens (JWE) are not accepted",
        ));
    }
    let sub = opt_string(&claims, "sub")?.ok_or(TokenError::NoSubject)?;
    if sub != user_id {
        return Err(TokenError::SubjectMismatch);
    }
    let aud = match claims.get("aud") {
        None => None,
        Some(v @ Value::String(_)) => Some(v.clone()),
        Some(v @ Value::Array(items)) if items.iter().all(Value::is_string) => Some(v.clone()),
        Some(_) => return Err(TokenError::ClaimType("aud")),
    };
    Ok(TokenFacts {
        kid: opt_string(&header, "kid")?,
        typ: opt_string(&header, "typ")?,
        iss: opt_string(&claims, "iss")?,
        aud,
        exp: numeric_date(&claims, "exp")?,
        iat: numeric_date(&claims, "iat")?,
        nbf: numeric_date(&claims, "nbf")?,
        jti: opt_string(&claims, "jti")?,
        sub,
        alg,
        fingerprint_sha256: fingerprint(token),
    })
}

impl TokenFacts {
    /// The facts as the JSON object stored under `metadata._authaudit.token`
    /// (absent header fields and claims are left out).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("alg".into(), Value::String(self.alg.clone()));
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                m.insert(k.into(), v);
            }
        };
        put("kid", self.kid.clone().map(Value::String));
        put("typ", self.typ.clone().map(Value::String));
        put("iss", self.iss.clone().map(Value::String));
        put("sub", Some(Value::String(self.sub.clone())));
        put("aud", self.aud.clone());
        put("exp", self.exp.clone());
        put("iat", self.iat.clone());
        put("nbf", self.nbf.clone());
        put("jti", self.jti.clone().map(Value::String));
        put(
            "fingerprint_sha256",
            Some(Value::String(self.fingerprint_sha256.clone())),
        );
        Value::Object(m)
    }
}

fn json_object(part: &str, what: &'static str) -> Result<Map<String, Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed(what))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(TokenError::Malformed(what)),
    }
}

fn opt_string(m: &Map<String, Value>, key: &'static str) -> Result<Option<String>, TokenError> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(TokenError::ClaimType(key)),
    }
}

/// A NumericDate (RFC 7519 §2): a JSON number of seconds, possibly fractional.
fn numeric_date(m: &Map<String, Value>, key: &'static str) -> Result<Option<Value>, TokenError> {
    match m.get(key) {
        None => Ok(None),
        Some(v @ Value::Number(n)) if n.as_f64().is_some_and(f64::is_finite) => Ok(Some(v.clone())),
        Some(_) => Err(TokenError::ClaimType(key)),
    }
}

/// Whether `text` holds something shaped like a compact JWS: a base64url
/// segment that starts as a JSON object does (`eyJ`, the encoding of `{"`),
/// a dot, a second base64url segment and another dot. Used to keep such
/// text out of the server log; it errs on the side of finding one.
pub fn contains_compact_jws(text: &str) -> bool {
    !compact_jws_spans(text).is_empty()
}

/// The byte ranges of the compact-JWS-shaped parts of `text` (see
/// `contains_compact_jws`), each from its `eyJ` to the end of its third
/// segment, in order and apart.
pub fn compact_jws_spans(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let seg_end = |mut i: usize| {
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'-' || b[i] == b'_') {
            i += 1;
        }
        i
    };
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(off) = text[from..].find("eyJ") {
        let at = from + off;
        let end = seg_end(at);
        if b.get(end) == Some(&b'.') {
            let end2 = seg_end(end + 1);
            if end2 > end + 1 && b.get(end2) == Some(&b'.') {
                let end3 = seg_end(end2 + 1);
                spans.push((at, end3));
                from = end3;
                continue;
            }
        }
        from = at + 3;
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_tokens_are_found_in_statement_text() {
        let tok = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";
        assert!(contains_compact_jws(tok));
        assert!(contains_compact_jws(&format!(
            "SELECT authaudit.record_token_issued(..., '{tok}', ...)"
        )));
        // Unsigned compact form (empty signature) still has both dots.
        assert!(contains_compact_jws(
            "x eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0. y"
        ));
        assert!(!contains_compact_jws("SELECT 1"));
        assert!(!contains_compact_jws(
            "eyJ alone, eyJabc. and eyJa.b without a second dot"
        ));
    }

    fn b64(v: &str) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    fn token(header: &str, claims: &str) -> String {
        format!("{}.{}.{}", b64(header), b64(claims), b64("signature-bytes"))
    }

    #[test]
    fn keeps_header_fields_claims_and_fingerprint() {
        let t = token(
            r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#,
            r#"{"iss":"idp","sub":"alice","aud":["web","api"],"exp":1800000000,"iat":1799999100,"nbf":1799999100,"jti":"j-1","name":"Alice"}"#,
        );
        let f = parse(&t, "alice").unwrap();
        assert_eq!(f.alg, "HS256");
        assert_eq!(f.kid.as_deref(), Some("k1"));
        assert_eq!(f.jti.as_deref(), Some("j-1"));
        assert_eq!(f.fingerprint_sha256, fingerprint(&t));
        let json = f.to_json().to_string();
        assert!(json.contains(r#""aud":["web","api"]"#), "{json}");
        // Private claims and the signature are not kept.
        assert!(!json.contains("Alice") && !json.contains(&b64("signature-bytes")));
    }

    #[test]
    fn fingerprint_is_sha256_hex() {
        // FIPS 180-4 example: SHA-256("abc").
        assert_eq!(
            fingerprint("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn refuses_unsecured_tokens_in_any_case() {
        for alg in ["none", "None", "NONE"] {
            let t = format!(
                "{}.{}.",
                b64(&format!(r#"{{"alg":"{alg}"}}"#)),
                b64(r#"{"sub":"alice"}"#)
            );
            assert_eq!(parse(&t, "alice"), Err(TokenError::Unsecured));
        }
    }

    #[test]
    fn refuses_malformed_tokens() {
        let good_claims = r#"{"sub":"alice"}"#;
        let cases = [
            String::new(),
            "a.b".into(),
            "a.b.c.d".into(),
            format!("{}.{}.{}", "!!", b64(good_claims), b64("s")),
            format!("{}.{}.{}", b64("[1]"), b64(good_claims), b64("s")),
            format!(
                "{}.{}.{}",
                b64(r#"{"typ":"JWT"}"#),
                b64(good_claims),
                b64("s")
            ),
            format!("{}.{}.", b64(r#"{"alg":"HS256"}"#), b64(good_claims)),
            format!(
                "{}.{}.{}",
                b64(r#"{"alg":"HS256"}"#),
                b64("not json"),
                b64("s")
            ),
            format!(
                "{}.{}.{}",
                b64(r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#),
                b64(good_claims),
                b64("s")
            ),
            "x".repeat(MAX_TOKEN_BYTES + 1),
        ];
        for t in cases {
            assert!(
                matches!(parse(&t, "alice"), Err(TokenError::Malformed(_))),
                "accepted {t:.40}"
            );
        }
    }

    #[test]
    fn refuses_wrong_claim_types() {
        for claims in [
            r#"{"sub":"alice","exp":"tomorrow"}"#,
            r#"{"sub":"alice","aud":[1]}"#,
            r#"{"sub":7}"#,
            r#"{"sub":"alice","jti":{}}"#,
        ] {
            let t = token(r#"{"alg":"ES256"}"#, claims);
            assert!(
                matches!(parse(&t, "alice"), Err(TokenError::ClaimType(_))),
                "{claims}"
            );
        }
    }

    #[test]
    fn the_subject_must_be_the_user() {
        let t = token(r#"{"alg":"HS256"}"#, r#"{"sub":"mallory"}"#);
        assert_eq!(parse(&t, "alice"), Err(TokenError::SubjectMismatch));
        let t = token(r#"{"alg":"HS256"}"#, r#"{"iss":"idp"}"#);
        assert_eq!(parse(&t, "alice"), Err(TokenError::NoSubject));
    }

    #[test]
    fn errors_never_echo_the_token() {
        let t = token(r#"{"alg":"none"}"#, r#"{"sub":"secret-subject"}"#);
        for e in [parse(&t, "x"), parse(&format!("{t}.x"), "x")] {
            let msg = e.unwrap_err().to_string();
            assert!(!msg.contains("secret") && !msg.contains(&t[..10]), "{msg}");
        }
    }
}
