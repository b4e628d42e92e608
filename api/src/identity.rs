//! Who is calling: a bearer token verified against the identity provider's
//! keys (`iss`, `aud`, `exp`, `nbf`, an asymmetric signature), and the
//! PostgreSQL role its claims name, from the configured allow-list.
//!
//! Only asymmetric algorithms are accepted (RS*, PS*, ES256, ES384,
//! EdDSA): the API holds no shared secret, so a token signed with `HS256`
//! and a public key as its secret, or with `none`, is refused.

use crate::config::Identity as IdentityConfig;
use crate::key_set::{KeyError, KeySet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// Why a request has no identity (401) or no role (403).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum IdentityError {
    #[error("no bearer token: send Authorization: Bearer <token>")]
    Missing,
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's algorithm {0} is not accepted (asymmetric algorithms only)")]
    Algorithm(String),
    #[error("no key of the identity provider matches the token's key id")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token's issuer is not the configured one")]
    Issuer,
    #[error("the token's audience does not include this API")]
    Audience,
    #[error("the token lacks the claim {0}")]
    MissingClaim(String),
    #[error("the identity provider's keys cannot be read: {0}")]
    Keys(String),
    /// 403: authenticated, but no role of the allow-list.
    #[error("the token's claim {claim} names no role this API may use")]
    NoRole { claim: String },
    #[error("the token's claim {claim} names more than one role this API may use")]
    AmbiguousRole { claim: String },
}

impl From<KeyError> for IdentityError {
    fn from(e: KeyError) -> IdentityError {
        match e {
            KeyError::Unknown => IdentityError::UnknownKey,
            KeyError::Unreadable(reason) => IdentityError::Keys(reason),
        }
    }
}

impl IdentityError {
    /// Whether the caller is known but not allowed (403), not unknown (401).
    pub fn is_forbidden(&self) -> bool {
        matches!(
            self,
            IdentityError::NoRole { .. } | IdentityError::AmbiguousRole { .. }
        )
    }

    /// A server-side fault (503), not the caller's.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, IdentityError::Keys(_))
    }
}

/// A verified caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The PostgreSQL role the request runs as (one of the allow-list).
    pub role: String,
    /// The token's subject, recorded as the operator of what it changes.
    pub subject: Option<String>,
    /// Every claim, as the token carried them (available to SQL as
    /// `request.jwt.claims`).
    pub claims: Value,
}

const ACCEPTED: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Verifies tokens against the identity provider's keys and maps their
/// claims to a role.
#[derive(Debug)]
pub struct Verifier {
    config: IdentityConfig,
    keys: KeySet,
}

impl Verifier {
    pub fn new(config: IdentityConfig) -> Verifier {
        Verifier {
            keys: KeySet::new(
                config.key_source(),
                std::time::Duration::from_secs(config.jwks_refresh_seconds),
            ),
            config,
        }
    }

    /// Loads the key set now (at start-up: a missing or unreadable set is
    /// an error).
    pub async fn load(&self) -> Result<usize, IdentityError> {
        Ok(self.keys.load().await?)
    }

    /// Verifies an `Authorization` header's value and maps it to a caller.
    pub async fn verify(&self, authorization: Option<&str>) -> Result<Caller, IdentityError> {
        let token = bearer(authorization)?;
        let claims = self.decode(token, &self.config.audience).await?;
        let role = role_of(&claims, &self.config.role_claim, &self.config.roles)?;
        Ok(Caller {
            role,
            subject: claims
                .get("sub")
                .and_then(Value::as_str)
                .map(str::to_string),
            claims,
        })
    }

    /// Verifies an OpenID Connect ID token issued to `client_id` for the
    /// sign-in whose nonce is `nonce`; its claims.
    pub async fn verify_id_token(
        &self,
        token: &str,
        client_id: &str,
        nonce: &str,
    ) -> Result<Value, IdentityError> {
        let claims = self.decode(token, client_id).await?;
        match claims.get("nonce").and_then(Value::as_str) {
            Some(n) if authaudit_core::chain::ct_eq(n.as_bytes(), nonce.as_bytes()) => Ok(claims),
            _ => Err(IdentityError::MissingClaim("nonce".into())),
        }
    }

    /// A token's claims, its signature, issuer, `audience`, `exp` and
    /// `nbf` checked.
    async fn decode(&self, token: &str, audience: &str) -> Result<Value, IdentityError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| IdentityError::Malformed)?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(IdentityError::Algorithm(format!("{:?}", header.alg)));
        }
        let jwk = self.keys.key(header.kid.as_deref()).await?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| IdentityError::UnknownKey)?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.config.leeway_seconds;
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::InvalidSignature => IdentityError::Signature,
                K::ExpiredSignature => IdentityError::Expired,
                K::ImmatureSignature => IdentityError::NotYetValid,
                K::InvalidIssuer => IdentityError::Issuer,
                K::InvalidAudience => IdentityError::Audience,
                K::MissingRequiredClaim(c) => IdentityError::MissingClaim(c.clone()),
                K::InvalidAlgorithm | K::InvalidAlgorithmName => {
                    IdentityError::Algorithm(format!("{:?}", header.alg))
                }
                K::InvalidKeyFormat | K::InvalidEcdsaKey | K::InvalidRsaKey(_) => {
                    IdentityError::UnknownKey
                }
                _ => IdentityError::Malformed,
            }
        })?;
        Ok(data.claims)
    }
}

/// The token of an `Authorization: Bearer …` header.
pub fn bearer(authorization: Option<&str>) -> Result<&str, IdentityError> {
    let value = authorization.ok_or(IdentityError::Missing)?;
    let (scheme, token) = value.split_once(' ').ok_or(IdentityError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(IdentityError::Missing);
    }
    let token = token.trim();
    if token.is_empty() || token.len() > 16 * 1024 {
        return Err(IdentityError::Malformed);
    }
    Ok(token)
}

/// The one allowed role the claim at `path` (dotted) names.
pub fn role_of(claims: &Value, path: &str, allowed: &[String]) -> Result<String, IdentityError> {
    let no_role = || IdentityError::NoRole {
        claim: path.to_string(),
    };
    let mut value = claims;
    for part in path.split('.') {
        value = value.get(part).ok_or_else(no_role)?;
    }
    let named: Vec<&str> = match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let mut matching = named
        .into_iter()
        .filter(|r| allowed.iter().any(|a| a == r))
        .collect::<Vec<_>>();
    matching.dedup();
    match matching.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(no_role()),
        _ => Err(IdentityError::AmbiguousRole {
            claim: path.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn allowed() -> Vec<String> {
        vec!["agency1_analyst".into(), "agency1_helpdesk".into()]
    }

    #[test]
    fn a_role_claim_names_one_allowed_role() {
        let c = json!({"authaudit_role": "agency1_analyst"});
        assert_eq!(
            role_of(&c, "authaudit_role", &allowed()).unwrap(),
            "agency1_analyst"
        );
        let nested = json!({"realm_access": {"roles": ["offline_access", "agency1_helpdesk"]}});
        assert_eq!(
            role_of(&nested, "realm_access.roles", &allowed()).unwrap(),
            "agency1_helpdesk"
        );
    }

    #[test]
    fn a_role_outside_the_allow_list_or_two_of_it_is_refused() {
        for claims in [
            json!({"authaudit_role": "postgres"}),
            json!({"authaudit_role": ["postgres", "pg_read_all_data"]}),
            json!({"authaudit_role": 7}),
            json!({"authaudit_role": null}),
            json!({"authaudit_role": {"agency1_analyst": true}}),
            json!({}),
        ] {
            assert!(matches!(
                role_of(&claims, "authaudit_role", &allowed()),
                Err(IdentityError::NoRole { .. })
            ));
        }
        let two = json!({"authaudit_role": ["agency1_analyst", "agency1_helpdesk"]});
        assert!(matches!(
            role_of(&two, "authaudit_role", &allowed()),
            Err(IdentityError::AmbiguousRole { .. })
        ));
    }

    #[test]
    fn only_a_bearer_header_carries_a_token() {
        assert_eq!(bearer(Some("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer(Some("bearer abc")).unwrap(), "abc");
        for h in [None, Some("Basic abc"), Some("Bearer"), Some("abc")] {
            assert!(bearer(h).is_err(), "{h:?}");
        }
    }
}
