//! The admin interface (`/admin` of the real `authaudit-api`) in headless
//! Chromium, signed in through a real OpenID Connect provider (the
//! `oidc-provider` library): the investigation of a campaign, the
//! help-desk reset, the live overview, other tenants' and organisations'
//! investigators, CSRF, CSP and accessibility (tests/ui/admin.test.mjs).
//! Screenshots of every page are kept in target/ui-screenshots.

use crate::support::log_id;
use authaudit_tests::{built_binary, free_port, repo_root};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where setup.sh installs the browser tests' npm packages.
const NODE_MODULES: &str = "/opt/authaudit-ui-tests/node_modules";

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ui_dir() -> PathBuf {
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
fn provider(port: u16, api_port: u16, accounts: &serde_json::Value) -> Killed {
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
        c.execute(
            "SELECT authaudit.record_event(log_id => $1::text::uuid, tenant_id => $2, org_id => 'field', \
             event_type => $3, user_id => $4, channel => 'web', ip => $5::text::inet)",
            &[&log_id(70, n), &tenant, &ty, &user, &ip],
        )
        .expect("record_event");
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
    record("tenant-b", "login_failed", "carol", "192.0.2.99");

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
    let config = dir.join("api.toml");
    std::fs::write(
        &config,
        format!(
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
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("api.log")).unwrap();
    let _api = Killed(
        Command::new(built_binary("authaudit-api"))
            .arg("--config")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start authaudit-api"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", api_port)).is_err() {
        assert!(Instant::now() < deadline, "the API did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
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
    // No token reached the logs.
    assert!(!api_log.contains("eyJ"), "a token in the API's log");
}
