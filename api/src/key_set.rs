//! The identity provider's signing keys: a JWKS file, read again when it
//! changes, or a JWKS URL, fetched again every `jwks_refresh_seconds` and
//! when a token names a key the set does not hold (at most every
//! [`MIN_REFETCH`] or `jwks_refresh_seconds`, whichever is shorter, so
//! tokens with invented key ids cannot make the API hammer the provider). A set that cannot be read or fetched keeps the
//! last good one.

use jsonwebtoken::jwk::{Jwk, JwkSet};
use std::path::PathBuf;
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime};

/// Why the key set has no key for a token.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KeyError {
    #[error("no key of the identity provider matches the token's key id")]
    Unknown,
    #[error("the identity provider's keys cannot be read: {0}")]
    Unreadable(String),
}

/// The shortest time between two fetches for an unknown key id.
pub const MIN_REFETCH: Duration = Duration::from_secs(30);
/// How long one fetch may take.
const FETCH_DEADLINE: Duration = Duration::from_secs(5);

/// Where the keys come from.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    Url(String),
}

#[derive(Debug)]
struct Loaded {
    set: JwkSet,
    modified: Option<SystemTime>,
    fetched: Instant,
}

#[derive(Debug)]
pub struct KeySet {
    source: Source,
    refresh: Duration,
    loaded: RwLock<Option<Loaded>>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
}

impl KeySet {
    pub fn new(source: Source, refresh: Duration) -> KeySet {
        KeySet {
            source,
            refresh,
            loaded: RwLock::new(None),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// Loads the set now (at start-up: an error if there is none).
    pub async fn load(&self) -> Result<usize, KeyError> {
        self.reload(true).await?;
        Ok(self.with(|l| l.set.keys.len()).unwrap_or(0))
    }

    fn with<T>(&self, f: impl FnOnce(&Loaded) -> T) -> Option<T> {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(f)
    }

    fn find(&self, kid: Option<&str>) -> Option<Jwk> {
        self.with(|l| {
            match kid {
                Some(kid) => l
                    .set
                    .keys
                    .iter()
                    .find(|k| k.common.key_id.as_deref() == Some(kid)),
                None if l.set.keys.len() == 1 => l.set.keys.first(),
                None => None,
            }
            .cloned()
        })
        .flatten()
    }

    /// The key a token's header names.
    pub async fn key(&self, kid: Option<&str>) -> Result<Jwk, KeyError> {
        let stale = match &self.source {
            Source::File(path) => {
                let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
                self.with(|l| l.modified != modified || modified.is_none())
                    .unwrap_or(true)
            }
            Source::Url(_) => self
                .with(|l| l.fetched.elapsed() >= self.refresh)
                .unwrap_or(true),
        };
        if stale {
            self.reload(false).await?;
        }
        if let Some(k) = self.find(kid) {
            return Ok(k);
        }
        // A key the provider has just rotated in.
        if matches!(self.source, Source::Url(_))
            && self
                .with(|l| l.fetched.elapsed() >= MIN_REFETCH.min(self.refresh))
                .unwrap_or(true)
        {
            self.reload(false).await?;
            if let Some(k) = self.find(kid) {
                return Ok(k);
            }
        }
        Err(KeyError::Unknown)
    }

    /// Reads or fetches the set; on failure keeps the last one (unless
    /// `required`: at start-up there is none to keep).
    async fn reload(&self, required: bool) -> Result<(), KeyError> {
        let _one = self.fetching.lock().await;
        let (text, modified) = match &self.source {
            Source::File(path) => {
                let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
                (
                    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display())),
                    modified,
                )
            }
            Source::Url(url) => (
                crate::provider_http::get(url, FETCH_DEADLINE)
                    .await
                    .map_err(|e| format!("{url}: {e}")),
                None,
            ),
        };
        let set = text.and_then(|t| {
            serde_json::from_str::<JwkSet>(&t).map_err(|e| format!("not a JSON Web Key Set: {e}"))
        });
        let mut loaded = self.loaded.write().unwrap_or_else(|e| e.into_inner());
        match set {
            Ok(set) => {
                *loaded = Some(Loaded {
                    set,
                    modified,
                    fetched: Instant::now(),
                });
                Ok(())
            }
            Err(e) if loaded.is_some() && !required => {
                tracing::warn!(error = %e, "the identity provider's keys could not be read; keeping the last ones");
                // Not again before the next refresh.
                if let Some(l) = loaded.as_mut() {
                    l.fetched = Instant::now();
                    l.modified = modified.or(l.modified);
                }
                Ok(())
            }
            Err(e) => Err(KeyError::Unreadable(e)),
        }
    }
}
