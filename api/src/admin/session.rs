//! Browser sessions of the admin interface, held in this process only.
//!
//! A session holds the access token the sign-in obtained; the browser
//! holds a random 256-bit identifier in an `HttpOnly`, `Secure`,
//! `SameSite=Lax` cookie, and the store keys sessions by that identifier's
//! SHA-256, so the store's memory does not hold what a cookie carries.
//! A sign-in in progress is held the same way, by its `state`, with the
//! PKCE verifier and the nonce. Both are bounded in number and lifetime;
//! when the store is full of live sessions, new sign-ins are refused.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "authaudit_session";
/// The cookie binding a sign-in to the browser that started it.
pub const LOGIN_COOKIE: &str = "authaudit_login";
/// How long a sign-in may take at the provider.
pub const LOGIN_LIFETIME: Duration = Duration::from_secs(600);

/// A signed-in browser.
#[derive(Clone)]
pub struct Session {
    /// The access token: sent to the API's handlers as a bearer token,
    /// never to the browser.
    pub token: String,
    pub role: String,
    pub subject: String,
    /// The token forms carry (compared in constant time).
    pub csrf: String,
    pub expires: Instant,
}

/// A sign-in in progress.
pub struct Pending {
    pub verifier: String,
    pub nonce: String,
    pub expires: Instant,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<[u8; 32], Session>,
    pending: HashMap<[u8; 32], Pending>,
}

/// The sessions and sign-ins of this process.
pub struct Sessions {
    inner: Mutex<Inner>,
    max: usize,
}

/// 32 random bytes, base64url.
pub fn random_token() -> String {
    use base64::Engine;
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the operating system's random source");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    pub fn new(max: usize) -> Sessions {
        Sessions {
            inner: Mutex::new(Inner::default()),
            max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a sign-in: its `state`, or `None` when the store is full.
    pub fn start(&self, pending: Pending) -> Option<String> {
        let mut inner = self.lock();
        let now = Instant::now();
        if inner.pending.len() + inner.sessions.len() >= self.max {
            inner.pending.retain(|_, p| p.expires > now);
            inner.sessions.retain(|_, s| s.expires > now);
            if inner.pending.len() + inner.sessions.len() >= self.max {
                return None;
            }
        }
        let state = random_token();
        inner.pending.insert(key(&state), pending);
        Some(state)
    }

    /// Takes the sign-in of `state` (once), if it has not expired.
    pub fn finish(&self, state: &str) -> Option<Pending> {
        let p = self.lock().pending.remove(&key(state))?;
        (p.expires > Instant::now()).then_some(p)
    }

    /// Opens a session: the cookie's value, or `None` when full.
    pub fn open(&self, session: Session) -> Option<String> {
        let mut inner = self.lock();
        let now = Instant::now();
        if inner.pending.len() + inner.sessions.len() >= self.max {
            inner.pending.retain(|_, p| p.expires > now);
            inner.sessions.retain(|_, s| s.expires > now);
            if inner.pending.len() + inner.sessions.len() >= self.max {
                return None;
            }
        }
        let id = random_token();
        inner.sessions.insert(key(&id), session);
        Some(id)
    }

    /// The live session of a cookie's value.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut inner = self.lock();
        let k = key(id);
        match inner.sessions.get(&k) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                inner.sessions.remove(&k);
                None
            }
            None => None,
        }
    }

    /// Ends a session.
    pub fn close(&self, id: &str) {
        self.lock().sessions.remove(&key(id));
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: Option<&'a str>, name: &str) -> Option<&'a str> {
    header?.split(';').find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// A `Set-Cookie` value: `HttpOnly`, `Secure`, `SameSite=Lax`, on `/admin`.
pub fn set_cookie(name: &str, value: &str, max_age: Duration) -> String {
    format!(
        "{name}={value}; Path=/admin; Max-Age={}; HttpOnly; Secure; SameSite=Lax",
        max_age.as_secs()
    )
}

/// A `Set-Cookie` value that removes cookie `name`.
pub fn clear_cookie(name: &str) -> String {
    format!("{name}=; Path=/admin; Max-Age=0; HttpOnly; Secure; SameSite=Lax")
}

/// Whether two tokens are equal, in time independent of where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(ttl: Duration) -> Session {
        Session {
            token: "t".into(),
            role: "r".into(),
            subject: "s".into(),
            csrf: "c".into(),
            expires: Instant::now() + ttl,
        }
    }

    #[test]
    fn a_sign_in_is_finished_once_and_a_session_is_found_by_its_cookie_only() {
        let s = Sessions::new(10);
        let state = s
            .start(Pending {
                verifier: "v".into(),
                nonce: "n".into(),
                expires: Instant::now() + LOGIN_LIFETIME,
            })
            .unwrap();
        assert!(s.finish(&state).is_some());
        assert!(s.finish(&state).is_none(), "a state is single-use");
        let id = s.open(session(Duration::from_secs(60))).unwrap();
        assert!(s.get(&id).is_some());
        assert!(s.get(&random_token()).is_none());
        s.close(&id);
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn an_expired_session_is_gone_and_a_full_store_refuses_new_sign_ins() {
        let s = Sessions::new(2);
        let old = s.open(session(Duration::ZERO)).unwrap();
        assert!(s.get(&old).is_none());
        s.open(session(Duration::from_secs(60))).unwrap();
        s.open(session(Duration::from_secs(60))).unwrap();
        assert!(s
            .start(Pending {
                verifier: "v".into(),
                nonce: "n".into(),
                expires: Instant::now() + LOGIN_LIFETIME,
            })
            .is_none());
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let h = Some("a=1; authaudit_session_x=2; authaudit_session=3");
        assert_eq!(cookie(h, SESSION_COOKIE), Some("3"));
        assert_eq!(cookie(h, "b"), None);
        assert!(set_cookie(SESSION_COOKIE, "v", Duration::from_secs(5))
            .contains("HttpOnly; Secure; SameSite=Lax"));
        assert!(same_token("abc", "abc") && !same_token("abc", "abd") && !same_token("a", "ab"));
    }
}
