//! The monitoring mixin (`monitoring/`, docs/monitoring.md): its rules pass
//! promtool's check and unit tests, every alert has its runbook section,
//! and a real Prometheus scraping the real sidecar and API under a load of
//! events loads the rules without an error, fires the detections' alerts,
//! and answers every query of the Grafana dashboard.

use authaudit_tests::mirror::{Mirror, Store};
use authaudit_tests::recording::{record, try_record, Event};
use authaudit_tests::{built_binary, free_port, repo_root, Cluster, Prometheus, TestDb};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "authaudit-api";
/// The window the dashboard's `$__rate_interval` and `$__range` stand for.
const WINDOW: &str = "1m";

/// `monitoring/check.sh`: promtool checks the rules and runs their unit
/// tests, and the dashboard is JSON.
#[test]
fn the_rules_pass_promtool_check_and_their_unit_tests() {
    let out = Command::new("sh")
        .arg(repo_root().join("monitoring/check.sh"))
        .output()
        .expect("sh runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "monitoring/check.sh failed:\n{text}");
    assert!(text.contains("rules found"), "{text}");
    assert!(
        text.contains("SUCCESS") && !text.contains("FAILED"),
        "{text}"
    );
}

/// Every alert's `runbook_url` names a section of docs/monitoring.md, and
/// the unit tests exercise every alert.
#[test]
fn every_alert_has_a_runbook_section_and_a_unit_test() {
    let root = repo_root();
    let rules = std::fs::read_to_string(root.join("monitoring/rules/authaudit.rules.yml")).unwrap();
    let tests =
        std::fs::read_to_string(root.join("monitoring/tests/authaudit.rules.test.yml")).unwrap();
    let docs = std::fs::read_to_string(root.join("docs/monitoring.md")).unwrap();
    // GitHub's anchors of the headings: lower case, spaces as dashes.
    let anchors: Vec<String> = docs
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| {
            h.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    let runbooks: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook_url: docs/monitoring.md#"))
        .collect();
    assert!(!alerts.is_empty());
    assert_eq!(alerts.len(), runbooks.len(), "an alert without runbook_url");
    for (alert, anchor) in alerts.iter().zip(&runbooks) {
        assert_eq!(alert.to_lowercase(), *anchor, "{alert}'s runbook_url");
        assert!(
            anchors.iter().any(|a| a == anchor),
            "docs/monitoring.md has no section #{anchor}"
        );
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "{alert} has no unit test"
        );
        assert!(
            docs.contains(&format!("`{alert}`")),
            "{alert} not in the table"
        );
    }
}

/// A real Prometheus scrapes the sidecar and the API every second with the
/// rules loaded. After a load of events (12 accounts of one tenant locked
/// by failures from one source: a password spray and a lockout storm) and
/// some reads through the API, every rule evaluates without an error, the
/// campaign and lockout storm alerts fire and no outage alert does, and
/// every query of every panel of the dashboard answers with data.
#[test]
fn every_dashboard_query_answers_from_a_real_prometheus() {
    let db = Cluster::shared().fresh_db_with_lockout("monitoring");
    let store = Store::new("monitoring");
    let mut m = Mirror::new(&db, &store);
    m.env
        .push(("AUTHAUDIT_TENANT_METRICS".into(), "true".into()));
    m.start();
    m.wait_streaming();
    let api = Api::start(&db);
    let rules = repo_root().join("monitoring/rules/authaudit.rules.yml");
    let prom = Prometheus::start_with(
        "monitoring",
        &[
            ("authaudit-sidecar", m.metrics_port),
            ("authaudit-api", api.port),
        ],
        &[&rules],
    );
    // Both targets scraped before the load, so that the counters' rises
    // are seen.
    prom.wait_for("both targets up", |p| {
        p.query(&encode("up == 1")).len() == 2
    });

    let mut c = db.connect();
    for round in 0..5 {
        for u in 0..12 {
            let e = Event::failed("acme", &format!("user{u}"))
                .ip("198.51.100.7")
                .metadata(json!({"reason": "bad_password"}));
            try_record(&mut c, &e).unwrap_or_else(|e| panic!("round {round}, user{u}: {e}"));
        }
    }
    for u in 0..4 {
        record(
            &mut c,
            &Event::success("globex", &format!("staff{u}")).ip("203.0.113.9"),
        );
    }
    let locked: i64 = c
        .query_one(
            "SELECT count(*) FROM authaudit.auth_log WHERE tenant_id = 'acme' AND event_type = 'account_locked'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(locked, 12, "the load locks every account");

    let token = api.token();
    assert_eq!(
        api.get("/v1/tenants/acme/events?limit=50", Some(&token)),
        200
    );
    assert_eq!(api.get("/v1/tenants/acme/events", None), 401);
    assert_eq!(api.get("/v1/health", None), 200);

    prom.wait_for("the load in the sidecar's series", |p| {
        value(
            p,
            "authaudit_sidecar_tenant_failures_total{tenant=\"acme\"}",
        ) == Some(60.0)
            && value(
                p,
                "authaudit_sidecar_tenant_events_total{tenant=\"globex\"}",
            ) == Some(4.0)
            && value(p, "authaudit_sidecar_alerts_total{rule=\"lockout_storm\"}") >= Some(1.0)
            && value(p, "authaudit_sidecar_alerts_total{rule=\"password_spray\"}") >= Some(1.0)
    });
    prom.wait_for("the reads in the API's series", |p| {
        value(p, "authaudit_api_events_served_total") >= Some(50.0)
            && value(p, "sum(authaudit_api_requests_total{status=\"401\"})") == Some(1.0)
    });

    // Every rule loaded, evaluated, without an error.
    prom.wait_for("every rule evaluated", |p| {
        rules_of(p)
            .iter()
            .all(|r| r["health"] == "ok" && r["lastEvaluation"] != "0001-01-01T00:00:00Z")
    });
    let loaded = rules_of(&prom);
    let text = std::fs::read_to_string(&rules).unwrap();
    let in_file = text
        .lines()
        .filter(|l| {
            let l = l.trim();
            l.starts_with("- record: ") || l.starts_with("- alert: ")
        })
        .count();
    assert_eq!(loaded.len(), in_file, "{loaded:?}");
    for r in &loaded {
        assert_eq!(r["health"], "ok", "{r}");
        assert_eq!(r["lastError"].as_str().unwrap_or(""), "", "{r}");
    }

    // The detections' alerts fire; nothing is down, tampered or lagging.
    prom.wait_for("the campaign and lockout storm alerts", |p| {
        let firing = alerts(p, "firing");
        firing.contains(&"AuthauditCampaignDetected/password_spray".to_string())
            && firing.contains(&"AuthauditLockoutStorm/lockout_storm".to_string())
    });
    let active: Vec<String> = alerts(&prom, "firing")
        .into_iter()
        .chain(alerts(&prom, "pending"))
        .collect();
    for quiet in [
        "AuthauditSidecarDown",
        "AuthauditSidecarAbsent",
        "AuthauditAPIDown",
        "AuthauditMirrorNotStreaming",
        "AuthauditDestinationDown",
        "AuthauditTamperAlarm",
        "AuthauditWitnessDisagreement",
        "AuthauditChainGap",
        "AuthauditFallbackRows",
        "AuthauditMirrorLag",
        "AuthauditSlotRetainingWAL",
    ] {
        assert!(
            !active.iter().any(|a| a.split('/').next() == Some(quiet)),
            "{quiet} is active: {active:?}"
        );
    }

    // Every query of the dashboard answers with data.
    let queries = dashboard_queries();
    assert!(queries.len() >= 40, "{} queries", queries.len());
    for (panel, expr) in &queries {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let result = prom.query(&encode(expr));
            if !result.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "panel {panel:?}: no data for\n  {expr}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    drop(prom);
    drop(api);
    m.kill();
}

/// The panels' queries of monitoring/dashboards/authaudit.json as
/// (panel title, PromQL), with the template variables replaced as Grafana
/// replaces them when "All" is chosen and the built-in intervals by
/// [`WINDOW`].
fn dashboard_queries() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(repo_root().join("monitoring/dashboards/authaudit.json")).unwrap();
    let d: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(d["schemaVersion"], 39);
    let vars = d["templating"]["list"].as_array().unwrap();
    assert!(
        vars.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "no prometheus datasource variable"
    );
    let mut substitutions: Vec<(String, String)> = ["$__rate_interval", "$__interval", "$__range"]
        .iter()
        .map(|b| (b.to_string(), WINDOW.to_string()))
        .collect();
    for v in vars.iter().filter(|v| v["type"] == "query") {
        let name = v["name"].as_str().unwrap();
        let all = v["allValue"].as_str().unwrap_or(".*").to_string();
        substitutions.push((format!("${{{name}}}"), all.clone()));
        substitutions.push((format!("${name}"), all));
    }
    let mut out = Vec::new();
    let mut panels: Vec<&Value> = d["panels"].as_array().unwrap().iter().collect();
    while let Some(p) = panels.pop() {
        if let Some(nested) = p["panels"].as_array() {
            panels.extend(nested);
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{t}");
            let mut expr = t["expr"].as_str().unwrap().to_string();
            for (from, to) in &substitutions {
                expr = expr.replace(from, to);
            }
            assert!(!expr.contains('$'), "a variable left in {expr}");
            out.push((p["title"].as_str().unwrap_or("").to_string(), expr));
        }
    }
    out.reverse();
    out
}

/// Percent-encodes a query for a URL's query string.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of a query that answers one series, if it does.
fn value(p: &Prometheus, q: &str) -> Option<f64> {
    let r = p.query(&encode(q));
    match r.as_slice() {
        [one] => one["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
}

/// Every rule Prometheus loaded.
fn rules_of(p: &Prometheus) -> Vec<Value> {
    p.api("/api/v1/rules")["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The active alerts in `state` (`firing`, `pending`), as `name/rule`.
fn alerts(p: &Prometheus, state: &str) -> Vec<String> {
    p.api("/api/v1/alerts")["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["state"] == state)
        .map(|a| {
            format!(
                "{}/{}",
                a["labels"]["alertname"].as_str().unwrap_or(""),
                a["labels"]["rule"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// The platform API (the real binary) on a database of the test: one
/// reader role of tenant acme behind an authenticator role, tokens signed
/// by a key of its JWKS file.
struct Api {
    port: u16,
    child: Child,
    dir: std::path::PathBuf,
    role: String,
    signing: SigningKey,
}

impl Api {
    fn start(db: &TestDb) -> Api {
        let p = db.name().to_string();
        db.connect()
            .batch_execute(&format!(
                "CREATE ROLE {p}_auth LOGIN NOINHERIT;
                 CREATE ROLE {p}_reader IN ROLE authaudit_reader;
                 GRANT {p}_reader TO {p}_auth;
                 INSERT INTO authaudit.tenant_scope (role_name, tenant_id, org_id, can_read, can_write)
                   VALUES ('{p}_reader', 'acme', NULL, true, false);"
            ))
            .unwrap();
        let signing = SigningKey::from_bytes(&[11; 32]);
        let dir = std::env::temp_dir().join(format!("authaudit-api-{p}"));
        std::fs::create_dir_all(&dir).unwrap();
        let jwks = dir.join("jwks.json");
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": "k1",
                         "x": B64.encode(signing.verifying_key().as_bytes())});
        std::fs::write(&jwks, json!({ "keys": [jwk] }).to_string()).unwrap();
        let port = free_port();
        let config = dir.join("api.toml");
        std::fs::write(
            &config,
            format!(
                r#"listen = "127.0.0.1:{port}"
[database]
url = "host=127.0.0.1 port={} user={p}_auth dbname={p}"
pool_size = 2
[identity]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
jwks_file = "{}"
roles = ["{p}_reader"]
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
            .stderr(Stdio::null())
            .spawn()
            .expect("start authaudit-api");
        let api = Api {
            port,
            child,
            dir,
            role: format!("{p}_reader"),
            signing,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while api.get("/v1/health", None) != 200 {
            assert!(Instant::now() < deadline, "the API did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        api
    }

    /// A token for the reader role, valid for five minutes.
    fn token(&self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": "k1"});
        let claims = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "monitoring@idp",
                            "exp": now + 300, "nbf": now - 5, "authaudit_role": self.role});
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = self.signing.sign(input.as_bytes());
        format!("{input}.{}", B64.encode(sig.to_bytes()))
    }

    /// The status of a GET of `path` (0 without an answer).
    fn get(&self, path: &str, token: Option<&str>) -> u16 {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return 0;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        if s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").as_bytes(),
        )
        .is_err()
        {
            return 0;
        }
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        String::from_utf8_lossy(&raw)
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
