//! OpenID Connect sign-in: the authorization code flow with PKCE (S256),
//! a `state` bound to the browser by a cookie, and a `nonce` checked in
//! the ID token. The access token the provider returns is what the
//! session then presents to the API's handlers; it is verified by the
//! same rules as any bearer token (`identity`), so the interface has the
//! API's identity and scope, and nothing more.

use crate::config::Admin as AdminConfig;
use crate::query::encode;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// The token endpoint must answer within this.
const TOKEN_DEADLINE: Duration = Duration::from_secs(10);

/// Why a sign-in failed (shown to the user without the provider's details).
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("the sign-in was not started here, or took longer than 10 minutes")]
    UnknownState,
    #[error("the identity provider refused the sign-in ({0})")]
    Refused(String),
    #[error("the identity provider's token endpoint failed: {0}")]
    TokenEndpoint(String),
    #[error("the identity provider's answer lacks {0}")]
    Incomplete(&'static str),
    #[error("the ID token does not verify: {0}")]
    IdToken(crate::identity::IdentityError),
    #[error("the access token does not verify: {0}")]
    AccessToken(crate::identity::IdentityError),
    #[error("too many sessions are open; try again later")]
    Full,
}

/// The PKCE challenge of a verifier (RFC 7636, S256).
pub fn challenge(verifier: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The provider's authorization URL for a sign-in.
pub fn authorize_url(cfg: &AdminConfig, state: &str, nonce: &str, verifier: &str) -> String {
    let scope = if cfg.scope.split(' ').any(|s| s == "openid") {
        cfg.scope.clone()
    } else {
        format!("openid {}", cfg.scope)
    };
    let sep = if cfg.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    let mut url = format!(
        "{}{sep}response_type=code&client_id={}&redirect_uri={}&scope={}&state={}&nonce={}&code_challenge={}&code_challenge_method=S256",
        cfg.authorization_endpoint,
        encode(&cfg.client_id),
        encode(&cfg.redirect_uri),
        encode(&scope),
        encode(state),
        encode(nonce),
        encode(&challenge(verifier)),
    );
    if let Some(r) = &cfg.resource {
        url.push_str("&resource=");
        url.push_str(&encode(r));
    }
    url
}

/// What the token endpoint answers.
#[derive(Deserialize)]
pub struct Tokens {
    pub access_token: Option<String>,
    pub id_token: Option<String>,
}

/// Exchanges an authorization code (with its PKCE verifier) for tokens.
pub async fn exchange(
    cfg: &AdminConfig,
    secret: Option<&str>,
    code: &str,
    verifier: &str,
) -> Result<Tokens, SignInError> {
    let mut form = format!(
        "grant_type=authorization_code&code={}&redirect_uri={}&client_id={}&code_verifier={}",
        encode(code),
        encode(&cfg.redirect_uri),
        encode(&cfg.client_id),
        encode(verifier)
    );
    if let Some(s) = secret {
        form.push_str("&client_secret=");
        form.push_str(&encode(s));
    }
    if let Some(r) = &cfg.resource {
        form.push_str("&resource=");
        form.push_str(&encode(r));
    }
    let (status, body) = crate::provider_http::post_form(&cfg.token_endpoint, form, TOKEN_DEADLINE)
        .await
        .map_err(SignInError::TokenEndpoint)?;
    if status != 200 {
        // The provider's error code only (RFC 6749 §5.2), never its body.
        let code = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .filter(|e| e.len() <= 64 && e.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or_else(|| format!("HTTP {status}"));
        return Err(SignInError::Refused(code));
    }
    serde_json::from_str(&body).map_err(|_| SignInError::Incomplete("a JSON token response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_is_rfc_7636s_example() {
        // RFC 7636, appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn the_authorization_url_carries_pkce_state_and_nonce_encoded() {
        let cfg: crate::config::Config = toml::from_str(
            r#"
[database]
url = "postgres://x"
[identity]
issuer = "https://idp"
audience = "authaudit-api"
jwks_file = "/dev/null"
roles = ["r"]
[admin]
client_id = "admin ui"
authorization_endpoint = "https://idp/auth"
token_endpoint = "https://idp/token"
redirect_uri = "https://audit.example/admin/callback"
scope = "profile"
"#,
        )
        .unwrap();
        let url = authorize_url(cfg.admin.as_ref().unwrap(), "s&t", "n", "v");
        assert!(url.starts_with("https://idp/auth?response_type=code&client_id=admin%20ui&"));
        assert!(url.contains("scope=openid%20profile"));
        assert!(url.contains("state=s%26t&nonce=n&code_challenge="));
        assert!(url.ends_with("code_challenge_method=S256"));
    }
}
