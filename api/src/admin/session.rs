//! Browser sessions of the admin interface, held in this process only,
//! and sign-ins in progress, held by nobody.
//!
//! A session holds the access token the sign-in obtained; the browser
//! holds a random 256-bit identifier in an `HttpOnly`, `Secure`,
//! `SameSite=Lax` cookie, and the store keys sessions by that identifier's
//! SHA-256, so the store's memory does not hold what a cookie carries.
//! Sessions are bounded in number (`max_sessions`) and lifetime.
//!
//! A sign-in in progress costs the server nothing until the provider has
//! authenticated someone, so a flood of sign-ins cannot fill anything: its
//! `state` is its expiry, 16 random bytes and a MAC under a key of this
//! process ([`SignIns`]), and its PKCE verifier and nonce are MACs of the
//! state under the same key (never sent anywhere but to the token
//! endpoint, and not computable without the key). The browser holds the
//! state in a cookie that binds it to the sign-in; a state is used once
//! (a bounded set of used states, kept until they expire).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "authaudit_session";
/// The cookie binding a sign-in to the browser that started it.
pub const LOGIN_COOKIE: &str = "authaudit_login";
/// How long a sign-in may take at the provider.
pub const LOGIN_LIFETIME: Duration = Duration::from_secs(600);
/// Used states remembered at once (each until it expires); beyond, the
/// oldest are forgotten (a forgotten state still needs a fresh code from
/// the provider to open anything).
const MAX_USED_STATES: usize = 100_000;

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

/// The sessions of this process.
pub struct Sessions {
    inner: Mutex<HashMap<[u8; 32], Session>>,
    max: usize,
}

/// 32 random bytes, base64url.
pub fn random_token() -> String {
    b64(&random::<32>())
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system's random source");
    b
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    pub fn new(max: usize) -> Sessions {
        Sessions {
            inner: Mutex::new(HashMap::new()),
            max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session: the cookie's value, or `None` when full.
    pub fn open(&self, session: Session) -> Option<String> {
        let mut sessions = self.lock();
        if sessions.len() >= self.max {
            let now = Instant::now();
            sessions.retain(|_, s| s.expires > now);
            if sessions.len() >= self.max {
                return None;
            }
        }
        let id = random_token();
        sessions.insert(key(&id), session);
        Some(id)
    }

    /// The live session of a cookie's value.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut sessions = self.lock();
        let k = key(id);
        match sessions.get(&k) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                sessions.remove(&k);
                None
            }
            None => None,
        }
    }

    /// Ends a session.
    pub fn close(&self, id: &str) {
        self.lock().remove(&key(id));
    }
}

/// Sign-ins in progress: states made and checked under a key of this
/// process, and the states already used.
pub struct SignIns {
    key: [u8; 32],
    used: Mutex<HashMap<[u8; 32], u64>>,
}

/// What a sign-in's state stands for.
pub struct SignIn {
    pub state: String,
    pub verifier: String,
    pub nonce: String,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl SignIns {
    pub fn new() -> SignIns {
        SignIns {
            key: random::<32>(),
            used: Mutex::new(HashMap::new()),
        }
    }

    fn mac(&self, label: &[u8], data: &[u8]) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        m.update(label);
        m.update(&[0]);
        m.update(data);
        m.finalize().into_bytes().into()
    }

    fn sign_in(&self, state: String) -> SignIn {
        SignIn {
            verifier: b64(&self.mac(b"pkce", state.as_bytes())),
            nonce: b64(&self.mac(b"nonce", state.as_bytes())),
            state,
        }
    }

    /// A new sign-in, valid for [`LOGIN_LIFETIME`].
    pub fn start(&self) -> SignIn {
        let mut raw = Vec::with_capacity(40);
        raw.extend_from_slice(&(unix_now() + LOGIN_LIFETIME.as_secs()).to_be_bytes());
        raw.extend_from_slice(&random::<16>());
        let tag = self.mac(b"state", &raw);
        raw.extend_from_slice(&tag[..16]);
        self.sign_in(b64(&raw))
    }

    /// The sign-in of `state` if this process made it, it has not expired,
    /// and it was not used before (it is used now).
    pub fn finish(&self, state: &str) -> Option<SignIn> {
        use base64::Engine;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(state)
            .ok()
            .filter(|r| r.len() == 40)?;
        let tag = self.mac(b"state", &raw[..24]);
        if !authaudit_core::chain::ct_eq(&tag[..16], &raw[24..]) {
            return None;
        }
        let expires = u64::from_be_bytes(raw[..8].try_into().ok()?);
        let now = unix_now();
        if expires <= now {
            return None;
        }
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if used.len() >= MAX_USED_STATES {
            used.retain(|_, e| *e > now);
            while used.len() >= MAX_USED_STATES {
                let oldest = used.iter().min_by_key(|(_, e)| **e).map(|(k, _)| *k)?;
                used.remove(&oldest);
            }
        }
        if used.insert(key(state), expires).is_some() {
            return None;
        }
        Some(self.sign_in(state.to_string()))
    }
}

impl Default for SignIns {
    fn default() -> SignIns {
        SignIns::new()
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
    authaudit_core::chain::ct_eq(a.as_bytes(), b.as_bytes())
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
    fn a_sign_in_is_finished_once_and_only_by_the_process_that_began_it() {
        let s = SignIns::new();
        let a = s.start();
        assert!(a.verifier.len() >= 43 && a.verifier != a.nonce);
        let b = s.finish(&a.state).unwrap();
        assert_eq!((b.verifier, b.nonce), (a.verifier, a.nonce));
        assert!(s.finish(&a.state).is_none(), "a state is single-use");
        assert!(
            SignIns::new().finish(&s.start().state).is_none(),
            "another key"
        );
        // A state with its expiry or its random part changed.
        let mut raw = base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            s.start().state,
        )
        .unwrap();
        raw[7] ^= 1;
        assert!(s.finish(&b64(&raw)).is_none());
        assert!(s.finish("").is_none() && s.finish("not base64!").is_none());
    }

    #[test]
    fn a_flood_of_sign_ins_holds_nothing_and_blocks_nobody() {
        let s = SignIns::new();
        let mine = s.start();
        for _ in 0..10_000 {
            s.start();
        }
        assert!(s.finish(&mine.state).is_some());
        assert_eq!(s.used.lock().unwrap().len(), 1);
    }

    #[test]
    fn sessions_are_found_by_their_cookie_only_and_bounded() {
        let s = Sessions::new(2);
        let id = s.open(session(Duration::from_secs(60))).unwrap();
        assert!(s.get(&id).is_some());
        assert!(s.get(&random_token()).is_none());
        s.close(&id);
        assert!(s.get(&id).is_none());
        let old = s.open(session(Duration::ZERO)).unwrap();
        assert!(s.get(&old).is_none());
        s.open(session(Duration::from_secs(60))).unwrap();
        s.open(session(Duration::from_secs(60))).unwrap();
        assert!(s.open(session(Duration::from_secs(60))).is_none());
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
