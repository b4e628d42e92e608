//! Session tokens as the demo's identity provider issues them: compact JWS,
//! HS256 (HMAC-SHA256, RFC 7518 §3.2), the registered claims of RFC 7519.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let ih = Sha256::new()
        .chain_update(&inner)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(&outer)
        .chain_update(ih)
        .finalize()
        .into()
}

/// A signed session token for `sub`, issued at `iat` (Unix seconds).
pub fn issue(key: &[u8], issuer: &str, sub: &str, jti: &str, iat: i64) -> String {
    let header = serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": "demo-2026-11"});
    let claims = serde_json::json!({
        "iss": issuer, "sub": sub, "aud": ["web", "mobile"],
        "iat": iat, "nbf": iat, "exp": iat + 3600, "jti": jti,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = hmac_sha256(key, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
