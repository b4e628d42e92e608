//! The platform API (`authaudit-api`, the real binary) against a real
//! PostgreSQL: every request under the role its token names, scoped by the
//! extension's bindings and row-level security, attacked as an
//! unauthenticated client, a forger, another tenant's reader, an
//! organisation's reader and a client that goes away mid-request.

use crate::support::log_id;
use authaudit_tests::recording::{self, Event};
use authaudit_tests::{built_binary, free_port, TestDb};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "authaudit-api";

/// An identity provider's key: signs tokens, published in a JWKS file.
struct Key {
    kid: String,
    signing: SigningKey,
}

impl Key {
    fn new(kid: &str, seed: u8) -> Key {
        Key {
            kid: kid.into(),
            signing: SigningKey::from_bytes(&[seed; 32]),
        }
    }

    fn jwk(&self) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": self.kid,
               "x": B64.encode(self.signing.verifying_key().as_bytes())})
    }

    /// A JWT signed with this key, with `header` fields over the defaults.
    fn sign_with(&self, header: Value, claims: &Value) -> String {
        let mut h = json!({"alg": "EdDSA", "typ": "JWT", "kid": self.kid});
        for (k, v) in header.as_object().unwrap() {
            h[k] = v.clone();
        }
        let input = format!(
            "{}.{}",
            B64.encode(h.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = self.signing.sign(input.as_bytes());
        format!("{input}.{}", B64.encode(sig.to_bytes()))
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_with(json!({}), claims)
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims naming `role`, valid for five minutes.
fn claims(role: &str) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": format!("{role}@idp"), "exp": now() + 300,
           "nbf": now() - 5, "authaudit_role": role})
}

/// A response: status, headers (lower-case names), body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The `after` of the `Link: <…>; rel="next"` header.
    fn next(&self) -> Option<String> {
        let link = self.header("link")?;
        let target = link.strip_prefix('<')?.split_once('>')?.0;
        Some(target.to_string())
    }
}

/// The scene: roles bound to tenants, an authenticator role granted them,
/// a running API.
struct Api {
    db: TestDb,
    prefix: String,
    port: u16,
    child: Child,
    jwks: PathBuf,
    key: Key,
}

impl Api {
    fn start(hint: &str, pool_size: usize) -> Api {
        Api::start_with(hint, pool_size, "")
    }

    /// With `limits` lines added to the `[limits]` section.
    fn start_with(hint: &str, pool_size: usize, limits: &str) -> Api {
        // The default lockout policy: five failures lock an account.
        let db = authaudit_tests::Cluster::shared().fresh_db_with_lockout(hint);
        let p = db.name().to_string();
        let mut c = db.connect();
        c.batch_execute(&format!(
            "CREATE ROLE {p}_auth LOGIN NOINHERIT;
             CREATE ROLE {p}_reader_a IN ROLE authaudit_reader;
             CREATE ROLE {p}_reader_b IN ROLE authaudit_reader;
             CREATE ROLE {p}_reader_hq IN ROLE authaudit_reader;
             CREATE ROLE {p}_outsider;
             CREATE ROLE {p}_writer_a IN ROLE authaudit_writer;
             CREATE ROLE {p}_helpdesk IN ROLE authaudit_writer, authaudit_reader;
             GRANT {p}_reader_a, {p}_reader_b, {p}_reader_hq, {p}_outsider, {p}_writer_a, {p}_helpdesk TO {p}_auth;
             INSERT INTO authaudit.tenant_scope (role_name, tenant_id, org_id, can_read, can_write) VALUES
               ('{p}_writer_a', 'tenant-a', NULL, false, true),
               ('{p}_helpdesk', 'tenant-a', NULL, true, true),
               ('{p}_reader_a', 'tenant-a', NULL, true, false),
               ('{p}_reader_b', 'tenant-b', NULL, true, false),
               ('{p}_reader_hq', 'tenant-a', 'hq', true, false);"
        ))
        .unwrap();
        let key = Key::new("k1", 7);
        let dir = std::env::temp_dir().join(format!("authaudit-api-{p}"));
        std::fs::create_dir_all(&dir).unwrap();
        let jwks = dir.join("jwks.json");
        std::fs::write(&jwks, json!({"keys": [key.jwk()]}).to_string()).unwrap();
        let port = free_port();
        let config = dir.join("api.toml");
        std::fs::write(
            &config,
            format!(
                r#"listen = "127.0.0.1:{port}"
[database]
url = "host=127.0.0.1 port={} user={p}_auth dbname={p}"
pool_size = {pool_size}
[identity]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
jwks_file = "{}"
leeway_seconds = 5
roles = ["{p}_reader_a", "{p}_reader_b", "{p}_reader_hq", "{p}_outsider", "{p}_writer_a", "{p}_helpdesk"]
[limits]
max_wait_seconds = 10
{limits}
"#,
                db.cluster().port(),
                jwks.display()
            ),
        )
        .unwrap();
        let child = Command::new(built_binary("authaudit-api"))
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start authaudit-api");
        let api = Api {
            db,
            prefix: p,
            port,
            child,
            jwks,
            key,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while api.try_get("/v1/health", None).map(|r| r.status) != Some(200) {
            assert!(Instant::now() < deadline, "the API did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        api
    }

    /// Restarts the API with its configuration file edited by `edit`;
    /// waits until `/healthz` answers (any status).
    fn restart(&mut self, edit: impl Fn(&str) -> String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let config = std::env::temp_dir()
            .join(format!("authaudit-api-{}", self.prefix))
            .join("api.toml");
        let text = edit(&std::fs::read_to_string(&config).unwrap());
        std::fs::write(&config, text).unwrap();
        self.child = Command::new(built_binary("authaudit-api"))
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.try_get("/healthz", None).is_none() {
            assert!(Instant::now() < deadline, "the API did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn role(&self, name: &str) -> String {
        format!("{}_{name}", self.prefix)
    }

    fn token(&self, role: &str) -> String {
        self.key.sign(&claims(&self.role(role)))
    }

    fn try_get(&self, path: &str, token: Option<&str>) -> Option<Reply> {
        self.request("GET", path, token, &[], None)
    }

    /// A request with extra header lines and a body.
    fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[&str],
        body: Option<&str>,
    ) -> Option<Reply> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
        let body = body.unwrap_or("");
        s.write_all(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).ok()?;
        let text = String::from_utf8_lossy(&raw).to_string();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let mut lines = head.lines();
        let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Some(Reply {
            status,
            headers,
            body: body.to_string(),
        })
    }

    fn post(&self, path: &str, token: &str, headers: &[&str], body: &str) -> Reply {
        let mut all = vec!["Content-Type: application/json"];
        all.extend_from_slice(headers);
        self.request("POST", path, Some(token), &all, Some(body))
            .unwrap_or_else(|| panic!("POST {path}: no reply"))
    }

    fn get(&self, path: &str, token: &str) -> Reply {
        self.try_get(path, Some(token))
            .unwrap_or_else(|| panic!("GET {path}: no reply"))
    }

    /// Records `n` failures for tenant/org from number `from` on.
    fn record(&self, tenant: &str, org: &str, from: u32, n: u32) {
        let mut c = self.db.connect();
        let slot = if tenant == "tenant-a" { 1 } else { 2 };
        for i in from..from + n {
            let e = Event::failed(tenant, &format!("user{}", i % 7))
                .log_id(&log_id(slot, i))
                .org(org)
                .ip("198.51.100.7")
                .metadata_text(r#"{"reason": "bad_password", "n": 12345678901234567890.10}"#);
            recording::record(&mut c, &e);
        }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn problem(r: &Reply, status: u16) -> Value {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{}",
        r.body
    );
    let p = r.json();
    assert_eq!(p["status"], status);
    assert!(!r.body.contains("panicked") && !r.body.contains("backtrace"));
    p
}

#[test]
fn a_forged_expired_or_foreign_token_gets_401_and_an_unlisted_role_403() {
    let api = Api::start("api_tokens", 2);
    api.record("tenant-a", "hq", 0, 3);
    let path = "/v1/tenants/tenant-a/events";
    let good = api.token("reader_a");
    assert_eq!(api.get(path, &good).json().as_array().unwrap().len(), 3);

    let r = api.try_get(path, None).unwrap();
    problem(&r, 401);
    assert!(r.header("www-authenticate").is_some());
    let role = api.role("reader_a");
    let other_key = Key::new("k1", 8);
    let mut expired = claims(&role);
    expired["exp"] = json!(now() - 60);
    let mut early = claims(&role);
    early["nbf"] = json!(now() + 600);
    let mut wrong_aud = claims(&role);
    wrong_aud["aud"] = json!("another-api");
    let mut wrong_iss = claims(&role);
    wrong_iss["iss"] = json!("https://evil.test");
    let mut no_exp = claims(&role);
    no_exp.as_object_mut().unwrap().remove("exp");
    // `alg: none`, and HS256 keyed with the published public key.
    let body = |c: &Value| {
        format!(
            "{}.{}",
            B64.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
            B64.encode(c.to_string())
        )
    };
    let none = format!("{}.", body(&claims(&role)));
    let hs_input = format!(
        "{}.{}",
        B64.encode(json!({"alg": "HS256", "typ": "JWT", "kid": "k1"}).to_string()),
        B64.encode(claims(&role).to_string())
    );
    let hs = format!(
        "{hs_input}.{}",
        B64.encode(b"not-a-real-mac-but-refused-before")
    );
    let tampered = {
        let t = good.clone();
        let mut parts: Vec<&str> = t.split('.').collect();
        let mut c = claims(&role);
        c["authaudit_role"] = json!(api.role("reader_b"));
        let forged = B64.encode(c.to_string());
        parts[1] = &forged;
        parts.join(".")
    };
    for (what, token) in [
        ("another key", other_key.sign(&claims(&role))),
        (
            "unknown kid",
            api.key.sign_with(json!({"kid": "k9"}), &claims(&role)),
        ),
        ("expired", api.key.sign(&expired)),
        ("not yet valid", api.key.sign(&early)),
        ("another audience", api.key.sign(&wrong_aud)),
        ("another issuer", api.key.sign(&wrong_iss)),
        ("no exp", api.key.sign(&no_exp)),
        ("alg none", none),
        ("HS256", hs),
        ("claims swapped under a valid signature", tampered),
        ("garbage", "a.b.c".to_string()),
    ] {
        let r = api.get(path, &token);
        let p = problem(&r, 401);
        assert!(p["detail"].is_string(), "{what}: {}", r.body);
    }
    // Signed, but naming a role outside the allow-list, or a superuser.
    for role in ["postgres".to_string(), format!("{}_auth", api.prefix)] {
        let r = api.get(path, &api.key.sign(&claims(&role)));
        problem(&r, 403);
    }
    // An allowed role bound to nothing reads nothing: the database refuses.
    let r = api.get(path, &api.token("outsider"));
    assert!(
        r.status == 403 || r.json().as_array().is_some_and(Vec::is_empty),
        "{}",
        r.body
    );
    // A key rotation: the new key is used as soon as the file changes.
    let next = Key::new("k2", 9);
    std::fs::write(
        &api.jwks,
        json!({"keys": [api.key.jwk(), next.jwk()]}).to_string(),
    )
    .unwrap();
    let r = api.get(path, &next.sign(&claims(&role)));
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn each_reader_sees_exactly_its_tenant_and_organisation() {
    let api = Api::start("api_scope", 1);
    api.record("tenant-a", "hq", 0, 4);
    api.record("tenant-a", "branch", 4, 3);
    api.record("tenant-b", "hq", 0, 5);
    let seqs = |r: &Reply| -> Vec<(String, String, i64)> {
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["tenant_id"].as_str().unwrap().to_string(),
                    e["org_id"].as_str().unwrap().to_string(),
                    e["seq"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let a = api.get("/v1/tenants/tenant-a/events", &api.token("reader_a"));
    assert_eq!(seqs(&a).len(), 7);
    // Metadata numbers keep every digit.
    assert!(a.body.contains("12345678901234567890.10"), "{}", a.body);
    let hq = api.get("/v1/tenants/tenant-a/events", &api.token("reader_hq"));
    assert!(seqs(&hq)
        .iter()
        .all(|(t, o, _)| t == "tenant-a" && o == "hq"));
    assert_eq!(seqs(&hq).len(), 4);
    // Another tenant's events, by list or by id, are not there.
    let cross = api.get("/v1/tenants/tenant-b/events", &api.token("reader_a"));
    assert_eq!(cross.status, 200);
    assert!(seqs(&cross).is_empty());
    let id = log_id(2, 0);
    let r = api.get(
        &format!("/v1/tenants/tenant-b/events/{id}"),
        &api.token("reader_a"),
    );
    problem(&r, 404);
    let r = api.get(
        &format!("/v1/tenants/tenant-b/events/{id}"),
        &api.token("reader_b"),
    );
    assert_eq!(r.json()["log_id"], id);
    // A branch event is not the hq reader's.
    let branch = log_id(1, 5);
    let r = api.get(
        &format!("/v1/tenants/tenant-a/events/{branch}"),
        &api.token("reader_hq"),
    );
    problem(&r, 404);
    // A request the database refuses (an organisation's reader may not
    // verify the whole tenant) leaves the one pooled connection clean:
    // the next caller gets exactly its own scope.
    let r = api.get("/v1/tenants/tenant-a/verify", &api.token("reader_hq"));
    assert!(r.status == 403 || r.status == 200, "{}", r.body);
    let b = api.get("/v1/tenants/tenant-b/events", &api.token("reader_b"));
    assert_eq!(seqs(&b).len(), 5);
    assert!(seqs(&b).iter().all(|(t, _, _)| t == "tenant-b"));
    let v = api
        .get("/v1/tenants/tenant-b/verify", &api.token("reader_b"))
        .json();
    assert_eq!(
        (v["ok"].as_bool(), v["rows_checked"].as_i64()),
        (Some(true), Some(5))
    );
    // Clients that go away in the middle of a long-poll leave nothing
    // behind on the one connection.
    for _ in 0..5 {
        let mut s = TcpStream::connect(("127.0.0.1", api.port)).unwrap();
        let t = api.token("reader_a");
        s.write_all(
            format!("GET /v1/tenants/tenant-a/events?after=100&wait=2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        drop(s);
    }
    let b = api.get("/v1/tenants/tenant-b/events", &api.token("reader_b"));
    assert!(seqs(&b).iter().all(|(t, _, _)| t == "tenant-b"));
    assert_eq!(seqs(&b).len(), 5);
    // The investigation questions, as the reader's scope allows.
    let r = api.get(
        "/v1/tenants/tenant-a/investigation/targeted-accounts?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z",
        &api.token("reader_a"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let total: i64 = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["failures"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 7);
    let r = api.get(
        "/v1/tenants/tenant-a/accounts/user1",
        &api.token("reader_a"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["failure_count"], 1);
}

#[test]
fn the_seq_cursor_pages_and_polls_without_skipping_or_repeating() {
    let api = Api::start("api_cursor", 2);
    let mut c = api.db.connect();
    let stored = |c: &mut postgres::Client| -> Vec<i64> {
        c.query(
            "SELECT seq FROM authaudit.auth_log WHERE tenant_id = 'tenant-a' ORDER BY seq",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let seqs = |r: &Reply| -> Vec<i64> {
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_i64().unwrap())
            .collect()
    };
    api.record("tenant-a", "hq", 0, 250);
    let token = api.token("reader_a");
    let mut seen = Vec::new();
    let mut path = "/v1/tenants/tenant-a/events?limit=100".to_string();
    // Polling (no `until`): pages until an empty one, whose next link
    // stays at the last event seen.
    loop {
        let r = api.get(&path, &token);
        assert_eq!(r.status, 200, "{}", r.body);
        let page = seqs(&r);
        path = r.next().expect("polling always has a next link");
        if page.is_empty() {
            break;
        }
        seen.extend(page);
    }
    let all = stored(&mut c);
    assert!(all.len() >= 250);
    assert_eq!(seen, all);
    let last = *all.last().unwrap();
    assert!(path.contains(&format!("after={last}")), "{path}");
    // Events recorded later come through the same link, once each.
    api.record("tenant-a", "hq", 250, 3);
    let r = api.get(&path, &token);
    let all = stored(&mut c);
    assert_eq!(seqs(&r), all[seen.len()..].to_vec());
    // A bounded window ends: no next link after its last page.
    let r = api.get(
        "/v1/tenants/tenant-a/events?until=2100-01-01T00:00:00Z&limit=1000",
        &token,
    );
    assert_eq!(seqs(&r), all);
    assert!(r.next().is_none());
    // A long-poll returns a new event within a second of its commit.
    let last = *all.last().unwrap();
    let (r, after_commit) = std::thread::scope(|s| {
        let h = s.spawn(|| {
            api.get(
                &format!("/v1/tenants/tenant-a/events?after={last}&wait=8"),
                &token,
            )
        });
        std::thread::sleep(Duration::from_millis(1500));
        let committed = Instant::now();
        api.record("tenant-a", "hq", 253, 1);
        let r = h.join().unwrap();
        (r, committed.elapsed())
    });
    assert_eq!(seqs(&r), stored(&mut c)[all.len()..].to_vec());
    assert!(!seqs(&r).is_empty());
    assert!(after_commit < Duration::from_secs(1), "{after_commit:?}");
}

#[test]
fn bad_parameters_are_refused_naming_the_parameter() {
    let api = Api::start("api_params", 2);
    api.record("tenant-a", "hq", 0, 2);
    let token = api.token("reader_a");
    for (path, field) in [
        ("/v1/tenants/tenant-a/events?limit=5000", "limit"),
        ("/v1/tenants/tenant-a/events?usr=alice", "usr"),
        ("/v1/tenants/tenant-a/events?since=yesterday", "since"),
        ("/v1/tenants/tenant-a/events?source=300.1.1.1", "source"),
        ("/v1/tenants/tenant-a/events?type=login", "type"),
        ("/v1/tenants/tenant-a/events?wait=11", "wait"),
        ("/v1/tenants/-bad/events", "tenant"),
        ("/v1/tenants/tenant-a/events/not-a-uuid", "log_id"),
        ("/v1/tenants/tenant-a/investigation/everything?from=2026-01-01T00:00:00Z&to=2027-01-01T00:00:00Z", "question"),
        ("/v1/tenants/tenant-a/investigation/attack-sources?from=2026-01-01T00:00:00Z", "to"),
        ("/v1/tenants/tenant-a/verify?full=true", "full"),
    ] {
        let r = api.get(path, &token);
        let p = problem(&r, 400);
        assert_eq!(p["field"], field, "{path}: {}", r.body);
    }
    // Values that look like SQL are values.
    let r = api.get(
        "/v1/tenants/tenant-a/events?user=x%27%20OR%20%271%27%3D%271",
        &token,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!([]));
    let r = api.get("/v1/tenants/tenant-a/nothing", &token);
    problem(&r, 404);
}

#[test]
fn writers_record_and_reset_through_the_api_idempotently() {
    let api = Api::start("api_write", 2);
    let writer = api.token("writer_a");
    let id = log_id(1, 1);
    let event = json!({"log_id": id, "event_type": "login_failed", "user_id": "Alice",
                       "channel": "web", "ip": "203.0.113.9"})
    .to_string()
    .replace("}", r#", "metadata": {"n": 12345678901234567890.10}}"#);
    let r = api.post("/v1/tenants/tenant-a/events", &writer, &[], &event);
    assert_eq!(r.status, 200, "{}", r.body);
    let first = r.json();
    assert_eq!(
        (first["seq"].as_i64(), first["tenant_id"].as_str()),
        (Some(1), Some("tenant-a"))
    );
    assert!(r.body.contains("12345678901234567890.10"), "{}", r.body);
    // A retry is the same row, not a second event.
    let again = api.post("/v1/tenants/tenant-a/events", &writer, &[], &event);
    assert_eq!(again.json(), first);
    // A batch; another tenant's event in it is refused and nothing of it is written.
    let batch = json!([
        {"log_id": log_id(1, 2), "event_type": "login_failed", "user_id": "alice", "channel": "web"},
        {"log_id": log_id(1, 3), "tenant_id": "tenant-b", "event_type": "login_failed", "user_id": "x", "channel": "web"}
    ]);
    let r = api.post(
        "/v1/tenants/tenant-a/events",
        &writer,
        &[],
        &batch.to_string(),
    );
    assert_eq!(problem(&r, 400)["field"], "[1].tenant_id");
    // The writer is not bound to tenant-b: the database refuses, 403.
    let b = json!({"log_id": log_id(2, 1), "event_type": "login_failed", "user_id": "x", "channel": "web"});
    let r = api.post("/v1/tenants/tenant-b/events", &writer, &[], &b.to_string());
    assert_eq!(problem(&r, 403)["sqlstate"], "42501");
    // An event the extension refuses: 422 with its SQLSTATE, nothing written.
    let bad = json!({"log_id": log_id(1, 4), "event_type": "account_locked", "user_id": "x", "channel": "web"});
    let r = api.post(
        "/v1/tenants/tenant-a/events",
        &writer,
        &[],
        &bad.to_string(),
    );
    assert_eq!(problem(&r, 422)["sqlstate"], "22023");
    // A reader may not record.
    let r = api.post(
        "/v1/tenants/tenant-a/events",
        &api.token("reader_a"),
        &[],
        &b.to_string().replace("tenant-b", "tenant-a"),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    // Wrong media type, malformed body, too large.
    let r = api
        .request(
            "POST",
            "/v1/tenants/tenant-a/events",
            Some(&writer),
            &["Content-Type: text/plain"],
            Some(&event),
        )
        .unwrap();
    problem(&r, 415);
    for body in ["", "{", "[]", "7", "[1]"] {
        let r = api.post("/v1/tenants/tenant-a/events", &writer, &[], body);
        problem(&r, 422);
    }
    // Over authaudit.max_batch_events: the database refuses the batch.
    let many = format!("[{}]", vec![event.as_str(); 3000].join(","));
    let r = api.post("/v1/tenants/tenant-a/events", &writer, &[], &many);
    assert_eq!(problem(&r, 422)["sqlstate"], "54000");
    // Over limits.max_body_bytes: refused before the database.
    let huge = format!("[{}]", vec![event.as_str(); 8000].join(","));
    let r = api.post("/v1/tenants/tenant-a/events", &writer, &[], &huge);
    problem(&r, 413);
    let mut c = api.db.connect();
    let rows: i64 = c
        .query_one(
            "SELECT count(*) FROM authaudit.auth_log WHERE tenant_id = 'tenant-a'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);

    // Lock alice, then the help desk resets her through the API.
    for n in 10..16 {
        let e = json!({"log_id": log_id(1, n), "event_type": "login_failed", "user_id": "alice", "channel": "web"});
        assert_eq!(
            api.post("/v1/tenants/tenant-a/events", &writer, &[], &e.to_string())
                .status,
            200
        );
    }
    let helpdesk = api.token("helpdesk");
    let state = api
        .get("/v1/tenants/tenant-a/accounts/alice", &helpdesk)
        .json();
    assert_eq!(state["locked"], true, "{state}");
    let body = json!({"ticket": "HD-4711", "reason": "identity confirmed by phone"}).to_string();
    let path = "/v1/tenants/tenant-a/accounts/alice/reset";
    let r = api.post(path, &helpdesk, &[], &body);
    assert_eq!(problem(&r, 400)["field"], "Idempotency-Key");
    let r = api.post(path, &helpdesk, &["Idempotency-Key: k-1"], &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let reset = r.json();
    assert_eq!(reset["event_type"], "lockout_reset");
    assert_eq!(reset["metadata"]["ticket"], "HD-4711");
    assert_eq!(
        reset["metadata"]["operator"]["sub"],
        format!("{}@idp", api.role("helpdesk"))
    );
    assert_eq!(reset["metadata"]["operator"]["role"], api.role("helpdesk"));
    assert!(!r.body.contains(&helpdesk), "the token is never stored");
    // The same key again: the same event, no second reset.
    let again = api.post(path, &helpdesk, &["Idempotency-Key: k-1"], &body);
    assert_eq!(again.json()["seq"], reset["seq"]);
    // The same key with another ticket: a conflict, 409.
    let other = json!({"ticket": "HD-9999", "reason": "x"}).to_string();
    let r = api.post(path, &helpdesk, &["Idempotency-Key: k-1"], &other);
    assert_eq!(problem(&r, 409)["sqlstate"], "23505");
    let state = api
        .get("/v1/tenants/tenant-a/accounts/alice", &helpdesk)
        .json();
    assert_eq!(state["locked"], false, "{state}");
    let resets: i64 = c
        .query_one(
            "SELECT count(*) FROM authaudit.auth_log WHERE tenant_id = 'tenant-a' AND event_type = 'lockout_reset'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(resets, 1);
    // Body fields are checked by name.
    let r = api.post(
        path,
        &helpdesk,
        &["Idempotency-Key: k-2"],
        &json!({"ticket": " ", "reason": "x"}).to_string(),
    );
    assert_eq!(problem(&r, 400)["field"], "ticket");
    let r = api.post(
        path,
        &helpdesk,
        &["Idempotency-Key: k-3"],
        &json!({"ticket": "t", "reason": "x", "extra": 1}).to_string(),
    );
    problem(&r, 422);
    // A reader may not reset.
    let r = api.post(
        path,
        &api.token("reader_a"),
        &["Idempotency-Key: k-4"],
        &body,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    // No witness has signed anything: the evidence is not there yet.
    let r = api.get("/v1/tenants/tenant-a/evidence/1", &api.token("reader_a"));
    assert_eq!(problem(&r, 409)["sqlstate"], "55000");
    verify_all(&mut c);
}

fn verify_all(c: &mut postgres::Client) {
    for t in ["tenant-a", "tenant-b"] {
        let ok: bool = c
            .query_one("SELECT ok FROM authaudit.verify_chain($1)", &[&t])
            .unwrap()
            .get(0);
        assert!(ok, "{t}");
    }
}

#[test]
fn a_caller_over_its_rate_gets_429_and_the_metrics_count_it() {
    let api = Api::start_with("api_limits", 2, "requests_per_second = 1\nburst = 5");
    let token = api.token("reader_a");
    let statuses: Vec<u16> = (0..8)
        .map(|_| api.get("/v1/tenants/tenant-a/events", &token).status)
        .collect();
    assert_eq!(&statuses[..5], &[200; 5]);
    let r = api.get("/v1/tenants/tenant-a/events", &token);
    problem(&r, 429);
    assert!(r.header("retry-after").is_some());
    // Another caller is not affected.
    assert_eq!(
        api.get("/v1/tenants/tenant-b/events", &api.token("reader_b"))
            .status,
        200
    );
    let metrics = api.try_get("/metrics", None).unwrap();
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains(
            r#"authaudit_api_requests_total{route="/v1/tenants/{tenant}/events",status="429"}"#
        ),
        "{}",
        metrics.body
    );
    assert!(
        !metrics.body.contains("tenant-a"),
        "no tenant in the metrics"
    );
    assert_eq!(api.try_get("/healthz", None).unwrap().status, 200);
}

/// A tool of the contract-test environment (`scripts/setup.sh`).
fn contract_tool(name: &str) -> PathBuf {
    let dir = std::env::var("AUTHAUDIT_SCHEMATHESIS_VENV")
        .unwrap_or_else(|_| "/opt/authaudit-schemathesis".into());
    let path = PathBuf::from(dir).join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh",
        path.display()
    );
    path
}

#[test]
fn the_api_keeps_its_openapi_description_under_schemathesis() {
    let spec = authaudit_tests::repo_root().join("api/openapi.json");
    let out = Command::new(contract_tool("openapi-spec-validator"))
        .arg(&spec)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let api = Api::start_with(
        "api_schemathesis",
        4,
        "requests_per_second = 10000\nburst = 10000",
    );
    api.record("tenant-a", "hq", 0, 20);
    // The served description is the file's.
    let served = api.try_get("/v1/openapi.json", None).unwrap();
    assert!(
        served.json()
            == serde_json::from_str::<Value>(&std::fs::read_to_string(&spec).unwrap()).unwrap(),
        "the served description is not api/openapi.json (rebuild authaudit-api)"
    );
    let token = api.token("helpdesk");
    let out = Command::new(contract_tool("schemathesis"))
        .arg("run")
        .arg(&spec)
        .arg("--url")
        .arg(format!("http://127.0.0.1:{}", api.port))
        .arg("--header")
        .arg(format!("Authorization: Bearer {token}"))
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        // One worker: hypothesis's lambda-source cache is not safe across
        // threads (schemathesis 4.32.5 reported "AST constructor recursion
        // depth mismatch" as an error of its own with two).
        .args(["--max-examples", "40", "--workers", "1", "--seed", "1"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--generation-database", "none"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    // Whatever it sent, the chains still verify and nothing crashed.
    verify_all(&mut api.db.connect());
    api.db.cluster().assert_no_crash();
}

#[test]
fn exports_stream_ndjson_and_cef_with_bounded_memory() {
    let api = Api::start("api_export", 2);
    let mut c = api.db.connect();
    // 20,000 events in batches of 1,000.
    for b in 0..20u32 {
        c.execute(
            "SELECT count(*) FROM authaudit.record_events((SELECT jsonb_agg(jsonb_build_object(
               'log_id', format('00000000-0000-4000-8000-%s', lpad(to_hex($1 * 1000 + i), 12, '0')),
               'tenant_id', 'tenant-a', 'org_id', 'hq', 'event_type', 'login_failed',
               'user_id', 'user' || (i % 97), 'channel', 'web', 'ip', '198.51.100.' || (i % 200),
               'metadata', jsonb_build_object('reason', 'bad_password', 'pad', repeat('x', 200))))
             FROM generate_series(0, 999) i))",
            &[&(b as i32)],
        )
        .unwrap();
    }
    let token = api.token("reader_a");
    let rss = || -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", api.child.id()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    let before = rss();
    let r = api
        .request(
            "GET",
            "/v1/tenants/tenant-a/events",
            Some(&token),
            &["Accept: application/x-ndjson"],
            None,
        )
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    let body = dechunk(&r.body);
    let seqs: Vec<i64> = body
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_i64()
                .unwrap()
        })
        .collect();
    let stored: Vec<i64> = c
        .query(
            "SELECT seq FROM authaudit.auth_log WHERE tenant_id = 'tenant-a' ORDER BY seq",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seqs, stored);
    let grew = rss().saturating_sub(before);
    println!(
        "an NDJSON export of {} bytes grew the API's peak RSS by {grew} kB",
        body.len()
    );
    assert!(
        grew * 1024 < body.len() as u64 / 4,
        "the export of {} bytes grew the API's peak memory by {grew} kB",
        body.len()
    );
    // CEF: the lines export_cef writes, filtered the same way.
    let r = api
        .request(
            "GET",
            "/v1/tenants/tenant-a/events?user=user5&since=2000-01-01T00:00:00Z",
            Some(&token),
            &["Accept: text/x-cef"],
            None,
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let lines: Vec<String> = dechunk(&r.body).lines().map(str::to_string).collect();
    let expected: Vec<String> = c
        .query(
            "SELECT authaudit.to_cef(l) FROM authaudit.auth_log l WHERE tenant_id = 'tenant-a' AND user_id = 'user5' ORDER BY seq",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(lines, expected);
    // Another tenant's export is empty; a format it does not serve is 406.
    let r = api
        .request(
            "GET",
            "/v1/tenants/tenant-b/events",
            Some(&token),
            &["Accept: application/x-ndjson"],
            None,
        )
        .unwrap();
    assert_eq!(dechunk(&r.body), "");
    let r = api
        .request(
            "GET",
            "/v1/tenants/tenant-a/events",
            Some(&token),
            &["Accept: text/html"],
            None,
        )
        .unwrap();
    problem(&r, 406);
}

/// The body of a chunked response.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
}

#[test]
fn a_poller_following_next_links_gets_every_row_once_under_concurrent_writers_and_imports() {
    let api = Api::start_with(
        "api_poller",
        4,
        "requests_per_second = 10000\nburst = 10000",
    );
    let token = api.token("reader_a");
    let writers = 3u32;
    let per_writer = 150u32;
    let done = std::sync::atomic::AtomicU32::new(0);
    let polled = std::thread::scope(|s| {
        for w in 0..writers {
            let api = &api;
            let done = &done;
            s.spawn(move || {
                let mut c = api.db.connect();
                let mut n = 0;
                while n < per_writer {
                    // Live events one by one, and imported history in
                    // batches, interleaved.
                    if n % 50 == 25 {
                        let batch: Vec<Value> = (n..n + 10)
                            .map(|i| json!({"log_id": log_id(10 + w, i), "tenant_id": "tenant-a",
                                "org_id": "hq", "event_type": "login_failed", "user_id": format!("w{w}"),
                                "channel": "web", "occurred_at": "2026-01-01T00:00:00Z"}))
                            .collect();
                        // (rebuild => false: an import that rebuilds the
                        // lockout state while live events are recorded into
                        // the same tenant can deadlock with them, 40P01.)
                        c.execute(
                            "SELECT count(*) FROM authaudit.import_events($1::text::jsonb, rebuild => false)",
                            &[&Value::Array(batch).to_string()],
                        )
                        .unwrap();
                        n += 10;
                    } else {
                        let e = Event::failed("tenant-a", &format!("w{w}"))
                            .log_id(&log_id(10 + w, n))
                            .org("hq");
                        recording::record(&mut c, &e);
                        n += 1;
                    }
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        // The poller: follow next links, pages of a random size, until the
        // writers are done and a page comes back empty.
        let mut seen: Vec<i64> = Vec::new();
        let mut path = "/v1/tenants/tenant-a/events?limit=7".to_string();
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let finished = done.load(std::sync::atomic::Ordering::SeqCst) == writers;
            let r = api.get(&path, &token);
            assert_eq!(r.status, 200, "{}", r.body);
            let page: Vec<i64> = r
                .json()
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["seq"].as_i64().unwrap())
                .collect();
            let next = r.next().expect("a next link");
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let limit = 1 + rng % 40;
            path = next
                .split('&')
                .map(|p| {
                    if p.starts_with("limit=") {
                        format!("limit={limit}")
                    } else {
                        p.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("&");
            if page.is_empty() && finished {
                break;
            }
            seen.extend(page);
            assert!(Instant::now() < deadline, "the poller did not finish");
        }
        seen
    });
    let stored: Vec<i64> = api
        .db
        .connect()
        .query(
            "SELECT seq FROM authaudit.auth_log WHERE tenant_id = 'tenant-a' ORDER BY seq",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // The writers' events and the lockouts they caused.
    assert!(stored.len() >= (writers * per_writer) as usize);
    assert_eq!(
        polled, stored,
        "the pages are exactly the rows, in seq order"
    );
}

#[test]
fn idle_and_oversized_clients_cannot_hold_the_api() {
    let api = Api::start_with(
        "api_slowloris",
        2,
        "max_connections = 20\nheader_timeout_ms = 500\nmax_header_bytes = 8192",
    );
    // Twenty clients that open a connection and send half a request head.
    let idle: Vec<TcpStream> = (0..20)
        .filter_map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", api.port)).ok()?;
            s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
                .ok()?;
            Some(s)
        })
        .collect();
    assert_eq!(idle.len(), 20);
    // Past the header timeout they are closed, and others are served.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if api.try_get("/healthz", None).map(|r| r.status) == Some(200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "idle clients kept the API from answering"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        // Closed by the server (end of stream), not left open.
        let closed = s.read_to_end(&mut buf);
        assert!(
            closed.is_ok(),
            "an idle connection was left open: {closed:?}"
        );
    }
    // A request head above the limit is refused, not buffered.
    let token = api.token("reader_a");
    let big = format!("X-Filler: {}", "a".repeat(20_000));
    let r = api.request(
        "GET",
        "/v1/tenants/tenant-a/events",
        Some(&token),
        &[&big],
        None,
    );
    assert!(
        r.is_none_or(|r| r.status == 431),
        "an oversized head was served"
    );
    assert_eq!(api.get("/v1/tenants/tenant-a/events", &token).status, 200);
}

#[test]
fn sigterm_answers_the_requests_in_flight_then_exits() {
    let mut api = Api::start("api_shutdown", 2);
    api.record("tenant-a", "hq", 0, 1);
    let token = api.token("reader_a");
    let r = std::thread::scope(|s| {
        let h = s.spawn(|| api.get("/v1/tenants/tenant-a/events?after=1&wait=3", &token));
        std::thread::sleep(Duration::from_millis(500));
        let kill = Command::new("kill")
            .args(["-TERM", &api.child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        h.join().unwrap()
    });
    // The long-poll in flight got its answer (no new event: an empty page).
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!([]));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(code) = api.child.try_wait().unwrap() {
            assert!(code.success(), "{code:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the API did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    // And it accepts nothing more.
    assert!(api.try_get("/healthz", None).is_none());
}

#[test]
fn ocsf_output_of_every_event_type_validates_against_the_ocsf_schemas() {
    let api = Api::start("api_ocsf", 2);
    let mut c = api.db.connect();
    api.record("tenant-a", "hq", 0, 6); // six failures: user0..5, no lock
    for n in 0..5u32 {
        // five failures of one account: locked
        let e = Event::failed("tenant-a", "mallory")
            .log_id(&log_id(5, n))
            .org("hq")
            .channel("mobile")
            .ip("2001:db8::7");
        recording::record(&mut c, &e);
    }
    let reset = Event::new("tenant-a", "lockout_reset", "mallory")
        .log_id(&log_id(6, 1))
        .org("hq");
    recording::record(&mut c, &reset);
    let success = Event::success("tenant-a", "mallory")
        .log_id(&log_id(6, 2))
        .org("hq")
        .ip("203.0.113.4")
        .user_agent("Mozilla/5.0");
    recording::record(&mut c, &success);
    c.batch_execute(&format!(
        "SELECT * FROM authaudit.record_token_issued('{}', 'tenant-a', 'hq', 'alice',
                'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImp0aSI6ImoxIn0.c2ln',
                '203.0.113.5', 'AgencyApp/3.1', 'mobile');
         SELECT * FROM authaudit.rebuild_lockout('tenant-a');",
        log_id(6, 3)
    ))
    .unwrap();
    let types: Vec<String> = c
        .query("SELECT DISTINCT event_type FROM authaudit.auth_log WHERE tenant_id = 'tenant-a' ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        types,
        [
            "account_locked",
            "lockout_rebuilt",
            "lockout_reset",
            "login_failed",
            "login_success",
            "token_issued"
        ]
    );
    let rows: i64 = c
        .query_one(
            "SELECT count(*) FROM authaudit.auth_log WHERE tenant_id = 'tenant-a'",
            &[],
        )
        .unwrap()
        .get(0);
    let token = api.token("reader_a");
    let export = |accept: &str| -> String {
        let r = api
            .request(
                "GET",
                "/v1/tenants/tenant-a/events",
                Some(&token),
                &[&format!("Accept: {accept}")],
                None,
            )
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("content-type"), Some(accept));
        dechunk(&r.body)
    };
    let ocsf = export("application/x-ocsf+ndjson");
    assert_eq!(ocsf.lines().count() as i64, rows);
    // Validated by jsonschema (Draft 2020-12) against ../shared/ocsf.
    let shared = authaudit_tests::repo_root().join("../shared/ocsf");
    let shared = std::env::var("AUTHAUDIT_OCSF_SCHEMAS").map_or(shared, PathBuf::from);
    let check = r#"
import json, sys, jsonschema
schemas = {3002: json.load(open(sys.argv[1] + "/authentication-3002.schema.json")),
           3001: json.load(open(sys.argv[1] + "/account-change-3001.schema.json"))}
bad = 0
for n, line in enumerate(sys.stdin):
    e = json.loads(line)
    for err in jsonschema.Draft202012Validator(schemas[e["class_uid"]]).iter_errors(e):
        bad += 1
        print(n, e.get("unmapped", {}).get("pg_authaudit", {}).get("event_type"), err.json_path, err.message)
print("checked", n + 1, "bad", bad)
sys.exit(1 if bad else 0)
"#;
    let mut child = Command::new(contract_tool("python3"))
        .args(["-c", check])
        .arg(&shared)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ocsf.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("checked {rows} bad 0")), "{text}");
    // Classes and activities as documented; the chain's digests are there.
    let events: Vec<Value> = ocsf
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |t: &str| {
        events
            .iter()
            .find(|e| e["unmapped"]["pg_authaudit"]["event_type"] == t)
            .unwrap()
    };
    assert_eq!(of("login_failed")["type_uid"], 300201);
    assert_eq!(of("login_failed")["status_id"], 2);
    assert_eq!(of("token_issued")["type_uid"], 300203);
    assert_eq!(of("account_locked")["type_uid"], 300109);
    assert_eq!(of("lockout_reset")["type_uid"], 300112);
    assert_eq!(of("login_success")["metadata"]["tenant_uid"], "tenant-a");
    let stored_link: String = c
        .query_one(
            "SELECT encode(link_sha256, 'hex') FROM authaudit.auth_log WHERE tenant_id = 'tenant-a' AND seq = 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        events[0]["unmapped"]["pg_authaudit"]["link_sha256"],
        stored_link
    );
    // ECS: one document per event, in seq order.
    let ecs = export("application/x-ecs+ndjson");
    let docs: Vec<Value> = ecs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len() as i64, rows);
    assert!(docs
        .windows(2)
        .all(|w| w[0]["event"]["sequence"].as_i64() < w[1]["event"]["sequence"].as_i64()));
    assert_eq!(docs[0]["event"]["outcome"], "failure");
    assert_eq!(docs[0]["event"]["category"], json!(["authentication"]));
}

/// Serves `body` (changeable) at `/certs` on loopback, counting requests.
struct JwksServer {
    port: u16,
    body: std::sync::Arc<std::sync::Mutex<String>>,
    hits: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl JwksServer {
    fn start(body: String) -> JwksServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let body = std::sync::Arc::new(std::sync::Mutex::new(body));
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (b, h) = (body.clone(), hits.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = b.lock().unwrap().clone();
                let _ = s.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        });
        JwksServer { port, body, hits }
    }
}

#[test]
fn keys_fetched_from_the_providers_url_follow_its_rotation() {
    let k1 = Key::new("k1", 21);
    let k2 = Key::new("k2", 22);
    let idp = JwksServer::start(json!({"keys": [k1.jwk()]}).to_string());
    let mut api = Api::start("api_jwks_url", 2);
    // Fetched again every 10 s (the shortest allowed), and for an unknown
    // key id at most as often.
    let url = format!(
        "jwks_url = \"http://127.0.0.1:{}/certs\"\njwks_refresh_seconds = 10",
        idp.port
    );
    api.restart(|text| {
        text.lines()
            .map(|l| {
                if l.starts_with("jwks_file") {
                    url.clone()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    let role = api.role("reader_a");
    let path = "/v1/tenants/tenant-a/events";
    assert_eq!(api.get(path, &k1.sign(&claims(&role))).status, 200);
    let fetched = idp.hits.load(std::sync::atomic::Ordering::SeqCst);
    // Many requests, one fetch: the set is kept.
    for _ in 0..5 {
        assert_eq!(api.get(path, &k1.sign(&claims(&role))).status, 200);
    }
    assert_eq!(idp.hits.load(std::sync::atomic::Ordering::SeqCst), fetched);
    // The provider rotates to k2.
    *idp.body.lock().unwrap() = json!({"keys": [k2.jwk()]}).to_string();
    let forged = Key::new("k9", 23);
    let started = Instant::now();
    // Invented key ids do not make it fetch more than once per interval.
    for _ in 0..5 {
        let r = api.get(path, &forged.sign(&claims(&role)));
        problem(&r, 401);
    }
    assert!(idp.hits.load(std::sync::atomic::Ordering::SeqCst) <= fetched + 1);
    // Once the interval has passed, k2 is fetched and accepted, k1 no longer.
    let deadline = started + Duration::from_secs(30);
    loop {
        let r = api.get(path, &k2.sign(&claims(&role)));
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rotated key was not fetched: {}",
            r.body
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let r = api.get(path, &k1.sign(&claims(&role)));
    problem(&r, 401);
}

#[test]
fn the_database_connections_use_tls_and_check_the_servers_certificate() {
    let mut api = Api::start("api_tls", 2);
    let tls = api.db.cluster().dir().join("tls");
    let over_tls = |text: &str, ca: &std::path::Path| {
        text.lines()
            .map(|l| {
                if l.starts_with("url = ") {
                    format!(
                        "{} sslmode=require\"\nsslrootcert = \"{}\"",
                        l.trim_end_matches('"')
                            .replace("host=127.0.0.1", "host=localhost"),
                        ca.display()
                    )
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    api.restart(|text| over_tls(text, &tls.join("ca.crt")));
    let r = api.get("/v1/tenants/tenant-a/events", &api.token("reader_a"));
    assert_eq!(r.status, 200, "{}", r.body);
    let mut c = api.db.connect();
    let (all, n): (Option<bool>, i64) = {
        let row = c
            .query_one(
                "SELECT bool_and(s.ssl), count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                  WHERE a.usename = $1",
                &[&format!("{}_auth", api.prefix)],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(
        n > 0 && all == Some(true),
        "the API's connections: {n}, all TLS: {all:?}"
    );
    // Against an authority that did not sign the server's certificate, the
    // API connects to nothing: health is 503, requests 503, never plaintext.
    let original = std::fs::read_to_string(
        std::env::temp_dir()
            .join(format!("authaudit-api-{}", api.prefix))
            .join("api.toml"),
    )
    .unwrap();
    let other = tls.join("other-ca.crt");
    api.restart(|text| {
        text.replace(
            &tls.join("ca.crt").display().to_string(),
            &other.display().to_string(),
        )
    });
    assert!(original.contains("ca.crt"));
    let h = api.try_get("/healthz", None).unwrap();
    problem(&h, 503);
    let r = api.get("/v1/tenants/tenant-a/events", &api.token("reader_a"));
    problem(&r, 503);
}

/// Reads server-sent events from `s` until `n` events arrived or the
/// deadline: their ids and data.
fn sse_events(s: &mut TcpStream, n: usize, deadline: Instant) -> Vec<(i64, Value)> {
    let mut buf = String::new();
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    while out.len() < n && Instant::now() < deadline {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(k) => buf.push_str(&String::from_utf8_lossy(&chunk[..k])),
            Err(_) => continue,
        }
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let id = event
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .and_then(|v| v.trim().parse().ok());
            let data = event.lines().find_map(|l| l.strip_prefix("data: "));
            if let (Some(id), Some(data)) = (id, data) {
                out.push((id, serde_json::from_str(data).unwrap()));
            }
        }
    }
    out
}

fn open_tail(api: &Api, token: &str, extra: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", api.port)).unwrap();
    s.write_all(
        format!(
            "GET /v1/tenants/tenant-a/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n{extra}\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    s
}

#[test]
fn a_tail_of_server_sent_events_resumes_from_its_last_id_and_ends_with_the_server() {
    let mut api = Api::start("api_sse", 2);
    api.record("tenant-a", "hq", 0, 3);
    api.record("tenant-b", "hq", 0, 2);
    let token = api.token("reader_a");
    let mut s = open_tail(&api, &token, "");
    // The backlog, then live events within a second of their commit.
    let first = sse_events(&mut s, 3, Instant::now() + Duration::from_secs(10));
    assert_eq!(
        first.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let committed = Instant::now();
    api.record("tenant-a", "hq", 3, 2);
    let live = sse_events(&mut s, 2, Instant::now() + Duration::from_secs(10));
    assert_eq!(live.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [4, 5]);
    assert!(
        committed.elapsed() < Duration::from_secs(1),
        "{:?}",
        committed.elapsed()
    );
    assert!(live.iter().all(|(_, e)| e["tenant_id"] == "tenant-a"));
    drop(s);
    // A client that reconnects with Last-Event-ID misses nothing and gets
    // nothing twice.
    api.record("tenant-a", "hq", 5, 2);
    let mut s = open_tail(&api, &token, "Last-Event-ID: 5\r\n");
    let resumed = sse_events(&mut s, 2, Instant::now() + Duration::from_secs(10));
    assert_eq!(
        resumed.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [6, 7]
    );
    // Another tenant's reader tails nothing of tenant-a.
    let mut other = open_tail(&api, &api.token("reader_b"), "");
    assert!(sse_events(&mut other, 1, Instant::now() + Duration::from_millis(800)).is_empty());
    // A tail has no end: `until` is refused.
    let r = api
        .request(
            "GET",
            "/v1/tenants/tenant-a/events?until=2100-01-01T00:00:00Z",
            Some(&token),
            &["Accept: text/event-stream"],
            None,
        )
        .unwrap();
    assert_eq!(problem(&r, 400)["field"], "until");
    // SIGTERM ends open tails, and the API exits promptly.
    let stopped = Instant::now();
    Command::new("kill")
        .args(["-TERM", &api.child.id().to_string()])
        .status()
        .unwrap();
    loop {
        if let Some(code) = api.child.try_wait().unwrap() {
            assert!(code.success(), "{code:?}");
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "open tails held the shutdown"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_tail_ends_when_its_token_expires() {
    let api = Api::start("api_sse_expiry", 2);
    api.record("tenant-a", "hq", 0, 1);
    let mut c = claims(&api.role("reader_a"));
    c["exp"] = json!(now() + 2);
    let token = api.key.sign(&c);
    let mut s = open_tail(&api, &token, "");
    assert_eq!(
        sse_events(&mut s, 1, Instant::now() + Duration::from_secs(5)).len(),
        1
    );
    // Within a few seconds of exp the server ends the response (the last,
    // empty chunk; or it closes the connection).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if seen.windows(5).any(|w| w == b"0\r\n\r\n") {
            break;
        }
        assert!(Instant::now() < deadline, "the tail outlived its token");
    }
}

#[test]
fn thirty_seconds_of_wrk_get_only_answers_with_bounded_memory() {
    let api = Api::start_with(
        "api_load",
        4,
        "requests_per_second = 100000\nburst = 100000",
    );
    api.record("tenant-a", "hq", 0, 300);
    let token = api.token("reader_a");
    let out = Command::new("wrk")
        .args(["-t", "2", "-c", "8", "-d", "30s", "--latency"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(format!(
            "http://127.0.0.1:{}/v1/tenants/tenant-a/events?limit=100&type=login_failed",
            api.port
        ))
        .output()
        .expect("wrk (scripts/setup.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    println!("{text}");
    assert!(!text.contains("Non-2xx"), "{text}");
    assert!(!text.contains("Socket errors"), "{text}");
    let requests: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(requests > 10.0, "{text}");
    let peak_kib: u64 = std::fs::read_to_string(format!("/proc/{}/status", api.child.id()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(
        peak_kib < 64 * 1024,
        "the API peaked at {peak_kib} kB under load"
    );
    api.db.cluster().assert_no_crash();
}
