//! The API's configuration: a TOML file, every field typed and checked
//! before the server starts (docs/api.md, "Configuration").

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address and port to listen on, e.g. `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: String,
    pub database: Database,
    pub identity: Identity,
    #[serde(default)]
    pub limits: Limits,
    /// The admin interface (docs/admin.md); absent: not served.
    #[serde(default)]
    pub admin: Option<Admin>,
}

/// The admin interface's sign-in: OpenID Connect authorization code with
/// PKCE at the identity provider of `identity`, whose access tokens (JWTs
/// for `identity.audience`) the interface then uses as the API does.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// The interface's client at the provider.
    pub client_id: String,
    /// A file holding the client's secret (`client_secret_post`); absent:
    /// a public client (PKCE only).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// The provider's endpoints (its discovery document names them).
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    /// Where the provider sends the browser back: this server's
    /// `/admin/callback`, as the browser reaches it (https, or http to a
    /// loopback address). Its origin is the one forms must come from.
    pub redirect_uri: String,
    /// Scopes asked for (`openid` is always among them).
    #[serde(default = "default_scope")]
    pub scope: String,
    /// A resource indicator (RFC 8707) sent with the requests, for
    /// providers that issue JWT access tokens per resource.
    #[serde(default)]
    pub resource: Option<String>,
    /// The longest a session lasts, minutes (never past its token's expiry).
    #[serde(default = "default_session_minutes")]
    pub session_minutes: u64,
    /// Sessions and sign-ins in progress held at once.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("client_id", &self.client_id)
            .field("client_secret_file", &self.client_secret_file)
            .field("authorization_endpoint", &self.authorization_endpoint)
            .field("token_endpoint", &self.token_endpoint)
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

fn default_scope() -> String {
    "openid".into()
}
fn default_session_minutes() -> u64 {
    480
}
fn default_max_sessions() -> usize {
    10_000
}

/// The PostgreSQL side: the authenticator role the API connects as.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// A libpq-style connection string or URL for the authenticator role
    /// (a login role with `NOINHERIT`, granted each mapped role).
    pub url: String,
    /// Connections in the pool.
    #[serde(default = "default_pool")]
    pub pool_size: usize,
    /// A request's statements are cancelled after this many milliseconds.
    #[serde(default = "default_statement_timeout_ms")]
    pub statement_timeout_ms: u64,
    /// The authorities (PEM) the server's certificate is checked against
    /// (chain and host name); without it the API uses no TLS.
    #[serde(default)]
    pub sslrootcert: Option<PathBuf>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("Database")
            .field("url", &"<redacted>")
            .field("pool_size", &self.pool_size)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .field("sslrootcert", &self.sslrootcert)
            .finish()
    }
}

/// Who may call: bearer tokens signed by the identity provider's keys, and
/// the claim that names the PostgreSQL role a request runs as.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// An `aud` every token must carry.
    pub audience: String,
    /// The identity provider's signing keys, a JSON Web Key Set file. It is
    /// read again when it changes, so a key rotation needs no restart.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Or its URL (the provider's `jwks_uri`, https), fetched again every
    /// `jwks_refresh_seconds` and when a token names an unknown key.
    #[serde(default)]
    pub jwks_url: Option<String>,
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_seconds: u64,
    /// Tolerance for `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// The claim naming the role (a dotted path into the claims: a string,
    /// or an array holding exactly one role of `roles`).
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// The roles a token may name: nothing else is ever set.
    pub roles: Vec<String>,
}

/// Request limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// The longest a long-poll of `events` waits for a new event, seconds.
    #[serde(default = "default_max_wait")]
    pub max_wait_seconds: u64,
    /// Requests a second each caller (role and subject) may make on average.
    #[serde(default = "default_rate")]
    pub requests_per_second: u32,
    /// Requests a caller may make at once.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// The largest request body, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Connections open at once; more are closed when accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// The largest request head (request line and headers), in bytes.
    #[serde(default = "default_max_header")]
    pub max_header_bytes: usize,
    /// A request head must arrive within this, in milliseconds.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_ms: u64,
    /// On shutdown, the requests in flight are answered for up to this
    /// many seconds.
    #[serde(default = "default_drain")]
    pub shutdown_drain_seconds: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_wait_seconds: default_max_wait(),
            requests_per_second: default_rate(),
            burst: default_burst(),
            max_body_bytes: default_max_body(),
            max_connections: default_max_connections(),
            max_header_bytes: default_max_header(),
            header_timeout_ms: default_header_timeout(),
            shutdown_drain_seconds: default_drain(),
        }
    }
}

fn default_max_connections() -> usize {
    1024
}
fn default_max_header() -> usize {
    16 * 1024
}
fn default_header_timeout() -> u64 {
    10_000
}
fn default_drain() -> u64 {
    30
}

fn default_rate() -> u32 {
    50
}
fn default_burst() -> u32 {
    100
}
fn default_max_body() -> usize {
    1024 * 1024
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_pool() -> usize {
    8
}
fn default_statement_timeout_ms() -> u64 {
    10_000
}
fn default_jwks_refresh() -> u64 {
    300
}
fn default_leeway() -> u64 {
    30
}
fn default_role_claim() -> String {
    "authaudit_role".into()
}
fn default_max_wait() -> u64 {
    30
}

impl Identity {
    /// Where the keys come from.
    pub fn key_source(&self) -> crate::key_set::Source {
        match (&self.jwks_file, &self.jwks_url) {
            (Some(path), _) => crate::key_set::Source::File(path.clone()),
            (None, Some(url)) => crate::key_set::Source::Url(url.clone()),
            (None, None) => crate::key_set::Source::File(PathBuf::new()),
        }
    }
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.into(),
                source,
            },
            other => other,
        })
    }

    /// Parses and checks a configuration's text, with the environment's
    /// settings over the file's (`AUTHAUDIT_API_LISTEN`,
    /// `AUTHAUDIT_API_DATABASE_URL`, `AUTHAUDIT_API_JWKS_FILE`).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_with(text, |name| std::env::var(name).ok())
    }

    /// [`Config::parse`] with the environment given.
    pub fn parse_with(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: PathBuf::new(),
            source,
        })?;
        if let Some(v) = env("AUTHAUDIT_API_LISTEN") {
            config.listen = v;
        }
        if let Some(v) = env("AUTHAUDIT_API_DATABASE_URL") {
            config.database.url = v;
        }
        if let Some(v) = env("AUTHAUDIT_API_JWKS_FILE") {
            config.identity.jwks_file = Some(v.into());
            config.identity.jwks_url = None;
        }
        if let Some(v) = env("AUTHAUDIT_API_JWKS_URL") {
            config.identity.jwks_url = Some(v);
            config.identity.jwks_file = None;
        }
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: &str| ConfigError::Invalid {
            field,
            reason: reason.to_string(),
        };
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "listen",
                "must be an address and port, e.g. 127.0.0.1:8080",
            ));
        }
        if !(1..=256).contains(&self.database.pool_size) {
            return Err(invalid("database.pool_size", "must be 1 to 256"));
        }
        if self.database.statement_timeout_ms == 0 {
            return Err(invalid("database.statement_timeout_ms", "must be above 0"));
        }
        if self.identity.issuer.is_empty() {
            return Err(invalid("identity.issuer", "must not be empty"));
        }
        if self.identity.audience.is_empty() {
            return Err(invalid("identity.audience", "must not be empty"));
        }
        match (&self.identity.jwks_file, &self.identity.jwks_url) {
            (Some(_), None) => {}
            (None, Some(url)) => {
                crate::provider_http::check(url).map_err(|e| invalid("identity.jwks_url", &e))?;
            }
            _ => {
                return Err(invalid(
                    "identity.jwks_file",
                    "give exactly one of jwks_file and jwks_url",
                ))
            }
        }
        if !(10..=86_400).contains(&self.identity.jwks_refresh_seconds) {
            return Err(invalid(
                "identity.jwks_refresh_seconds",
                "must be 10 to 86400",
            ));
        }
        if self.identity.leeway_seconds > 300 {
            return Err(invalid("identity.leeway_seconds", "must be at most 300"));
        }
        if self.identity.role_claim.is_empty() {
            return Err(invalid("identity.role_claim", "must not be empty"));
        }
        if self.identity.roles.is_empty() {
            return Err(invalid("identity.roles", "must name at least one role"));
        }
        for role in &self.identity.roles {
            if role.is_empty() || role.len() > 63 || role.contains('\0') {
                return Err(invalid(
                    "identity.roles",
                    "each role is a PostgreSQL role name (1 to 63 bytes)",
                ));
            }
        }
        if !(1..=300).contains(&self.limits.max_wait_seconds) {
            return Err(invalid("limits.max_wait_seconds", "must be 1 to 300"));
        }
        if self.limits.requests_per_second == 0 || self.limits.burst == 0 {
            return Err(invalid(
                "limits.requests_per_second",
                "requests_per_second and burst must be above 0",
            ));
        }
        if !(1..=65_536).contains(&self.limits.max_connections) {
            return Err(invalid("limits.max_connections", "must be 1 to 65536"));
        }
        if !(8192..=1024 * 1024).contains(&self.limits.max_header_bytes) {
            return Err(invalid("limits.max_header_bytes", "must be 8 KiB to 1 MiB"));
        }
        if !(100..=600_000).contains(&self.limits.header_timeout_ms) {
            return Err(invalid("limits.header_timeout_ms", "must be 100 to 600000"));
        }
        if self.limits.shutdown_drain_seconds > 3600 {
            return Err(invalid(
                "limits.shutdown_drain_seconds",
                "must be at most 3600",
            ));
        }
        if !(1024..=256 * 1024 * 1024).contains(&self.limits.max_body_bytes) {
            return Err(invalid("limits.max_body_bytes", "must be 1 KiB to 256 MiB"));
        }
        if let Some(a) = &self.admin {
            if a.client_id.is_empty() {
                return Err(invalid("admin.client_id", "must not be empty"));
            }
            for (field, url) in [
                ("admin.authorization_endpoint", &a.authorization_endpoint),
                ("admin.token_endpoint", &a.token_endpoint),
                ("admin.redirect_uri", &a.redirect_uri),
            ] {
                crate::provider_http::check(url).map_err(|e| invalid(field, &e))?;
            }
            if !a.redirect_uri.ends_with("/admin/callback") {
                return Err(invalid(
                    "admin.redirect_uri",
                    "must be this server's /admin/callback",
                ));
            }
            if !(1..=7 * 24 * 60).contains(&a.session_minutes) {
                return Err(invalid("admin.session_minutes", "must be 1 to 10080"));
            }
            if !(1..=1_000_000).contains(&a.max_sessions) {
                return Err(invalid("admin.max_sessions", "must be 1 to 1000000"));
            }
        }
        Ok(())
    }

    pub fn statement_timeout(&self) -> Duration {
        Duration::from_millis(self.database.statement_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:9000"
[database]
url = "host=/var/run/postgresql user=authaudit_api dbname=auth"
[identity]
issuer = "https://idp.example"
audience = "authaudit-api"
jwks_file = "/etc/authaudit/jwks.json"
roles = ["agency1_analyst"]
"#;

    #[test]
    fn a_minimal_file_gets_the_documented_defaults() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.database.pool_size, 8);
        assert_eq!(c.identity.role_claim, "authaudit_role");
        assert_eq!(c.identity.leeway_seconds, 30);
        assert_eq!(c.limits.max_wait_seconds, 30);
        assert!(!format!("{c:?}").contains("host=/var/run"));
    }

    #[test]
    fn keys_come_from_exactly_one_file_or_https_url() {
        let url = GOOD.replace(
            r#"jwks_file = "/etc/authaudit/jwks.json""#,
            r#"jwks_url = "https://idp.example/certs""#,
        );
        assert!(Config::parse_with(&url, |_| None).is_ok());
        let both = GOOD.replace(
            r#"jwks_file = "/etc/authaudit/jwks.json""#,
            "jwks_file = \"/x\"\njwks_url = \"https://idp.example/certs\"",
        );
        let e = Config::parse_with(&both, |_| None).unwrap_err().to_string();
        assert!(e.starts_with("identity.jwks_file"), "{e}");
        let plain = url.replace("https://idp.example", "http://idp.example");
        let e = Config::parse_with(&plain, |_| None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("identity.jwks_url"), "{e}");
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let c = Config::parse_with(GOOD, |k| {
            (k == "AUTHAUDIT_API_DATABASE_URL").then(|| "host=db user=u password=s3cret".into())
        })
        .unwrap();
        assert_eq!(c.database.url, "host=db user=u password=s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused_by_name() {
        let typo = GOOD.replace("audience", "audiense");
        assert!(Config::parse(&typo).is_err());
        let none = GOOD.replace(r#"roles = ["agency1_analyst"]"#, "roles = []");
        let e = Config::parse(&none).unwrap_err().to_string();
        assert!(e.starts_with("identity.roles"), "{e}");
        let listen = GOOD.replace("127.0.0.1:9000", "localhost");
        let e = Config::parse(&listen).unwrap_err().to_string();
        assert!(e.starts_with("listen"), "{e}");
    }
}
