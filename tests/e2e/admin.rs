//! The admin interface (`/admin` of the real `authaudit-api`) in headless
//! Chromium, signed in through a real OpenID Connect provider (the
//! `oidc-provider` library): the investigation of a campaign, the
//! help-desk reset, the live overview, other tenants' and organisations'
//! investigators, CSRF, CSP and accessibility (tests/ui/admin.test.mjs).
//! Screenshots of every page are kept in target/ui-screenshots.

use crate::support::log_id;
use authaudit_tests::recording::{self, Event};
use authaudit_tests::{built_binary, free_port, repo_root};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An account name that would run script if a page did not escape it.
const HOSTILE: &str = "<img src=x onerror=alert(1)>\"'&";

/// Where setup.sh installs the browser tests' npm packages.
const NODE_MODULES: &str = "/opt/authaudit-ui-tests/node_modules";

/// A child process killed when dropped.
pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the real `authaudit-api` with `config` (written to
/// `dir/api.toml`), its output in `dir/api.log`; returns once it listens
/// on `port`.
pub(crate) fn start_api(dir: &Path, port: u16, config: &str) -> Killed {
    let path = dir.join("api.toml");
    std::fs::write(&path, config).unwrap();
    let log = std::fs::File::create(dir.join("api.log")).unwrap();
    let api = Killed(
        Command::new(built_binary("authaudit-api"))
            .arg("--config")
            .arg(&path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start authaudit-api"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the API did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    api
}

pub(crate) fn ui_dir() -> PathBuf {
    let dir = repo_root().join("tests/ui");
    let link = dir.join("node_modules");
    if !link.exists() {
        assert!(
            Path::new(NODE_MODULES).exists(),
            "{NODE_MODULES} is missing: run scripts/setup.sh"
        );
        std::os::unix::fs::symlink(NODE_MODULES, &link).expect("link node_modules");
    }
    dir
}

/// Starts the OpenID provider; returns it once it listens.
pub(crate) fn provider(port: u16, api_port: u16, accounts: &serde_json::Value) -> Killed {
    let mut child = Command::new("node")
        .arg("oidc-provider.mjs")
        .current_dir(ui_dir())
        .env("PORT", port.to_string())
        .env(
            "REDIRECT_URI",
            format!("http://localhost:{api_port}/admin/callback"),
        )
        .env("ACCOUNTS", accounts.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node runs the OpenID provider");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("ready"),
        "the provider did not start: {line}"
    );
    Killed(child)
}

#[test]
fn an_investigation_and_a_reset_in_the_browser() {
    let db = authaudit_tests::Cluster::shared().fresh_db_with_lockout("admin_ui");
    let p = db.name().to_string();
    let mut c = db.connect();
    c.batch_execute(&format!(
        "CREATE ROLE {p}_auth LOGIN NOINHERIT;
         CREATE ROLE {p}_investigator IN ROLE authaudit_reader;
         CREATE ROLE {p}_outsider IN ROLE authaudit_reader;
         CREATE ROLE {p}_hq IN ROLE authaudit_reader;
         CREATE ROLE {p}_helpdesk IN ROLE authaudit_writer, authaudit_reader;
         GRANT {p}_investigator, {p}_outsider, {p}_hq, {p}_helpdesk TO {p}_auth;
         INSERT INTO authaudit.tenant_scope (role_name, tenant_id, org_id, can_read, can_write) VALUES
           ('{p}_investigator', 'tenant-a', NULL, true, false),
           ('{p}_helpdesk', 'tenant-a', NULL, true, true),
           ('{p}_hq', 'tenant-a', 'hq', true, false),
           ('{p}_outsider', 'tenant-b', NULL, true, false);"
    ))
    .unwrap();
    // The campaign, in organisation `field` of tenant-a: a spray from one
    // source (with a success after failures), and a distributed brute
    // force that locks `alice`.
    let mut n = 0;
    let mut record = |tenant: &str, ty: &str, user: &str, ip: &str| {
        n += 1;
        let e = Event::new(tenant, ty, user)
            .log_id(&log_id(70, n))
            .org("field")
            .ip(ip);
        recording::record(&mut c, &e);
    };
    for i in 1..=12 {
        record(
            "tenant-a",
            "login_failed",
            &format!("user{i:02}"),
            "198.51.100.7",
        );
    }
    for _ in 0..4 {
        record("tenant-a", "login_failed", "bob", "198.51.100.7");
    }
    record("tenant-a", "login_success", "bob", "192.0.2.50");
    for i in 1..=6 {
        record(
            "tenant-a",
            "login_failed",
            "alice",
            &format!("203.0.113.{i}"),
        );
    }
    // An account name an attacker chose, shown on every page that lists it.
    record("tenant-a", "login_failed", HOSTILE, "198.51.100.7");
    record("tenant-b", "login_failed", "carol", "192.0.2.99");
    // The session token issued to bob: recorded by its claims and
    // fingerprint, shown in his timeline.
    let jwt = format!(
        "{}.{}.c2lnbmF0dXJl",
        "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            r#"{"sub":"bob","jti":"session-77","exp":4102444800}"#
        )
    );
    c.execute(
        "SELECT authaudit.record_token_issued($1::text::uuid, 'tenant-a', 'field', 'bob', $2, \
         '192.0.2.50', 'Browser/1.0', 'web')",
        &[&log_id(71, 1), &jwt],
    )
    .expect("record_token_issued");
    // The witness has signed tenant-a's tree as it stands (as the sidecar
    // does), so each of these events has an evidence bundle.
    let witness =
        authaudit_core::note::Signer25519::from_seed("authaudit-witness", [9; 32]).unwrap();
    let mut su = db.connect();
    su.batch_execute(&format!(
        "ALTER DATABASE {p} SET authaudit.witness_keys = '{}'",
        witness.verifier().text()
    ))
    .unwrap();
    let mut su = db.connect();
    let head: i64 = su
        .query_one(
            "SELECT max(seq) FROM authaudit.auth_log WHERE tenant_id = 'tenant-a'",
            &[],
        )
        .unwrap()
        .get(0);
    let note = witness.sign(&crate::witness::checkpoint(&mut su, "tenant-a", head).text());
    let agrees: Option<bool> = su
        .query_one(
            "SELECT agrees FROM authaudit.record_witness_checkpoint('tenant-a', $1)",
            &[&note],
        )
        .unwrap()
        .get(0);
    assert_eq!(agrees, Some(true));

    let api_port = free_port();
    let idp_port = free_port();
    let accounts = serde_json::json!({
        "ana.investigator": format!("{p}_investigator"),
        "olaf.outsider": format!("{p}_outsider"),
        "hanna.hq": format!("{p}_hq"),
        "dora.helpdesk": format!("{p}_helpdesk"),
    });
    let _idp = provider(idp_port, api_port, &accounts);
    let dir = std::env::temp_dir().join(format!("authaudit-admin-{p}"));
    std::fs::create_dir_all(&dir).unwrap();
    let _api = start_api(
        &dir,
        api_port,
        &format!(
            r#"listen = "127.0.0.1:{api_port}"
[database]
url = "host=127.0.0.1 port={} user={p}_auth dbname={p}"
[identity]
issuer = "http://localhost:{idp_port}"
audience = "authaudit-api"
jwks_url = "http://localhost:{idp_port}/jwks"
roles = ["{p}_investigator", "{p}_outsider", "{p}_hq", "{p}_helpdesk"]
[admin]
client_id = "authaudit-admin"
authorization_endpoint = "http://localhost:{idp_port}/auth"
token_endpoint = "http://localhost:{idp_port}/token"
redirect_uri = "http://localhost:{api_port}/admin/callback"
scope = "openid authaudit"
resource = "urn:authaudit:api"
"#,
            db.cluster().port()
        ),
    );
    let out = repo_root().join("target/ui-screenshots");
    let record_more = serde_json::json!([
        "/usr/lib/postgresql/15/bin/psql", "-X", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
        "-U", "postgres", "-p", db.cluster().port().to_string(), "-d", p,
        "-c", "SELECT authaudit.record_event(log_id => gen_random_uuid(), tenant_id => 'tenant-a', \
               org_id => 'field', event_type => 'login_failed', user_id => 'user' || g, channel => 'web', \
               ip => '198.51.100.8') FROM generate_series(20, 32) g"
    ]);
    let run = Command::new("node")
        .arg("admin.test.mjs")
        .current_dir(ui_dir())
        .env("BASE", format!("http://localhost:{api_port}"))
        .env("PROVIDER", format!("http://localhost:{idp_port}"))
        .env("TENANT", "tenant-a")
        .env("INVESTIGATOR", "ana.investigator")
        .env("OUTSIDER", "olaf.outsider")
        .env("ORG_READER", "hanna.hq")
        .env("HELPDESK", "dora.helpdesk")
        .env("TARGET", "alice")
        .env("SUCCESS_ACCOUNT", "bob")
        .env("SPRAY_SOURCE", "198.51.100.7")
        .env("HOSTILE", HOSTILE)
        .env("WITNESSED", "1")
        .env("RECORD_SQL_CMD", record_more.to_string())
        .env("OUT", &out)
        .output()
        .expect("node runs the browser test");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let api_log = std::fs::read_to_string(dir.join("api.log")).unwrap_or_default();
    assert!(
        run.status.success(),
        "{stdout}\n{}\napi log:\n{api_log}",
        String::from_utf8_lossy(&run.stderr)
    );
    // The help desk's reset is one event of the chain, with its ticket, and
    // the cross-site and token-less posts recorded nothing.
    let mut c = db.connect();
    let resets: Vec<(String, String)> = c
        .query(
            "SELECT user_id, metadata->>'ticket' FROM authaudit.auth_log \
             WHERE tenant_id = 'tenant-a' AND event_type = 'lockout_reset'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(resets, vec![("alice".to_string(), "INC-4711".to_string())]);
    let ok: bool = c
        .query_one("SELECT ok FROM authaudit.verify_chain('tenant-a')", &[])
        .unwrap()
        .get(0);
    assert!(ok, "the chain verifies after the reset");
    // The bundle the investigator downloaded verifies offline with the
    // witness's key alone.
    let (code, text) = crate::support::run_tool(
        "tools/verify_evidence.py",
        &[
            out.join("evidence-1.json").as_os_str(),
            "--key".as_ref(),
            witness.verifier().text().as_ref(),
        ],
    );
    assert_eq!(code, 0, "{text}");
    // No token reached the logs.
    assert!(!api_log.contains("eyJ"), "a token in the API's log");
}

/// A raw HTTP/1.1 exchange: status, lower-cased headers, body.
fn http(port: u16, request: &str) -> (u16, Vec<(String, String)>, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

fn get(port: u16, path: &str, extra: &str) -> (u16, Vec<(String, String)>, String) {
    http(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n"),
    )
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The interface without a browser or a provider, as an unauthenticated
/// network client attacks it.
#[test]
fn an_unauthenticated_client_gets_nothing_but_the_sign_in() {
    let db = authaudit_tests::Cluster::shared().fresh_db_with_lockout("admin_anon");
    let p = db.name().to_string();
    let mut c = db.connect();
    c.batch_execute(&format!(
        "CREATE ROLE {p}_auth LOGIN NOINHERIT; CREATE ROLE {p}_r IN ROLE authaudit_reader;
         GRANT {p}_r TO {p}_auth;"
    ))
    .unwrap();
    recording::record(
        &mut c,
        &Event::failed("tenant-a", "alice").ip("198.51.100.7"),
    );
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("authaudit-admin-{p}"));
    std::fs::create_dir_all(&dir).unwrap();
    // Keys that sign nothing: no session can be opened here.
    std::fs::write(dir.join("jwks.json"), r#"{"keys": []}"#).unwrap();
    let _api = start_api(
        &dir,
        port,
        &format!(
            r#"listen = "127.0.0.1:{port}"
[database]
url = "host=127.0.0.1 port={} user={p}_auth dbname={p}"
[identity]
issuer = "https://idp.test"
audience = "authaudit-api"
jwks_file = "{}"
roles = ["{p}_r"]
[admin]
client_id = "authaudit-admin"
authorization_endpoint = "https://idp.test/auth"
token_endpoint = "http://127.0.0.1:9/token"
redirect_uri = "http://localhost:{port}/admin/callback"
max_sessions = 5
"#,
            db.cluster().port(),
            dir.join("jwks.json").display()
        ),
    );
    let forged = "Cookie: authaudit_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n";
    for path in [
        "/admin/",
        "/admin/t/tenant-a/",
        "/admin/t/tenant-a/live",
        "/admin/t/tenant-a/campaigns",
        "/admin/t/tenant-a/search?type=login_failed",
        "/admin/t/tenant-a/export?format=csv",
        "/admin/t/tenant-a/accounts/alice",
        "/admin/t/tenant-a/sources/198.51.100.7",
        "/admin/t/tenant-a/report",
        "/admin/t/tenant-a/evidence",
        "/admin/t/tenant-a/evidence/1",
        "/admin/t/..%2F..%2Fetc/",
    ] {
        for extra in ["", forged] {
            let (status, h, body) = get(port, path, extra);
            assert_eq!(status, 401, "{path} {extra}");
            assert!(
                body.contains("/admin/login") && !body.contains("alice"),
                "{path}: {body}"
            );
            let csp = header(&h, "content-security-policy").unwrap_or("");
            assert!(
                csp.starts_with("default-src 'none'; script-src 'self'"),
                "{path}"
            );
            assert_eq!(header(&h, "x-frame-options"), Some("DENY"));
            assert_eq!(header(&h, "cache-control"), Some("no-store"));
        }
    }
    // A reset posted without a session records nothing.
    let body = "ticket=T&reason=R&csrf=x&key=k";
    let (status, _, _) = http(
        port,
        &format!(
            "POST /admin/t/tenant-a/accounts/alice/reset HTTP/1.1\r\nHost: localhost\r\n{forged}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(status, 401);
    // The callback without the sign-in's cookie, with an unknown state, or
    // replayed, opens no session.
    let (status, h, _) = get(port, "/admin/login", "");
    assert_eq!(status, 303);
    let location = header(&h, "location").unwrap().to_string();
    assert!(location.contains("code_challenge_method=S256") && location.contains("nonce="));
    let state = location
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("state="))
        .unwrap()
        .to_string();
    let login_cookie = header(&h, "set-cookie").unwrap().to_string();
    assert!(login_cookie.contains("HttpOnly; Secure; SameSite=Lax"));
    for (path, cookie) in [
        (
            format!("/admin/callback?state={state}&code=c"),
            String::new(),
        ),
        (
            "/admin/callback?state=unknown&code=c".to_string(),
            "Cookie: authaudit_login=unknown\r\n".to_string(),
        ),
        (
            format!("/admin/callback?state={state}&error=access_denied"),
            format!("Cookie: authaudit_login={state}\r\n"),
        ),
        // Used once (by the error above): replayed now.
        (
            format!("/admin/callback?state={state}&code=c"),
            format!("Cookie: authaudit_login={state}\r\n"),
        ),
    ] {
        let (status, h, _) = get(port, &path, &cookie);
        assert_eq!(status, 400, "{path}");
        assert!(header(&h, "set-cookie").is_none_or(|c| !c.contains("authaudit_session=")));
    }
    // A flood of sign-ins holds nothing on the server: each is sent on to
    // the provider, whatever max_sessions says.
    let statuses: Vec<u16> = (0..10).map(|_| get(port, "/admin/login", "").0).collect();
    assert!(statuses.iter().all(|s| *s == 303), "{statuses:?}");
}
