//! CEF export: hostile values survive a round trip through an independent
//! CEF parser (pycef), tampered lines are caught, scope applies.

use crate::support::{db, log_id, record, run_python, Event};

fn parse_with_pycef(lines: &[String]) -> Vec<serde_json::Value> {
    let out = run_python("tests/cef_parse.py", &lines.join("\n"));
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn hostile_values_round_trip_through_an_independent_parser() {
    let db = db("cef_roundtrip");
    let mut c = db.connect();
    let hostile_user = "ev|l=user\\name ü 😀";
    let hostile_ua =
        "Mozilla\\5.0 | x=y\nCEF:0|Evil|Inc|1|100|Injected|10|src=6.6.6.6\r dst=1.2.3.4";
    let cases: Vec<(String, &str, &str, Option<&str>)> = vec![
        (
            log_id(1, 1),
            "login_failed",
            hostile_user,
            Some("203.0.113.9"),
        ),
        (log_id(1, 2), "login_failed", "bob", Some("2001:db8::42")),
        (log_id(1, 3), "login_success", hostile_user, None),
    ];
    for (id, ty, user, ip) in &cases {
        let e = Event::new("acme", ty, user)
            .set("ip", *ip)
            .log_id(id)
            .org("hq")
            .user_agent(hostile_ua)
            .metadata(serde_json::json!({"reason": "bad=pass|word\\"}));
        record(&mut c, &e);
    }
    let lines: Vec<String> = c
        .query(
            "SELECT line FROM authaudit.export_cef('acme', now() - interval '1 day', now() + interval '1 day') AS line",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| !l.contains('\n') && !l.contains('\r')));
    let parsed = parse_with_pycef(&lines);
    for (p, (id, ty, user, ip)) in parsed.iter().zip(&cases) {
        assert_eq!(p["CEFVersion"], "0", "{p}");
        assert_eq!(p["DeviceVendor"], "pg_authaudit");
        assert_eq!(p["duser"], *user, "{p}");
        assert_eq!(p["requestClientApplication"], hostile_ua, "{p}");
        assert_eq!(p["reason"], "bad=pass|word\\", "{p}");
        assert_eq!(p["externalId"], *id);
        assert_eq!(p["act"], *ty);
        // pycef names custom fields by their labels.
        assert_eq!(p["tenant"], "acme");
        assert_eq!(p["organisation"], "hq");
        assert_eq!(p["channel"], "web");
        assert!(
            p.get("dst").is_none(),
            "an injected key must not appear: {p}"
        );
        match ip {
            Some(v6) if v6.contains(':') => assert_eq!(p["Source IPv6 Address"], *v6),
            Some(v4) => assert_eq!(p["src"], *v4),
            None => assert!(p.get("src").is_none() && p.get("Source IPv6 Address").is_none()),
        }
    }
    assert_eq!(parsed[0]["Severity"], "3");
    // The success follows a failure of the same account: a forensic signal.
    assert_eq!(parsed[2]["Name"], "Login succeeded after failures");
    assert_eq!(parsed[2]["Severity"], "7");
    assert_eq!(parsed[2]["precedingFailures"], "1");
    assert_eq!(
        parsed
            .iter()
            .map(|p| p["chainSeq"].as_str().unwrap().to_string())
            .collect::<Vec<_>>(),
        ["1", "2", "3"]
    );
}

#[test]
fn a_tampered_cef_line_is_caught() {
    let db = db("cef_tamper");
    let mut c = db.connect();
    let alice = Event::failed("acme", "alice")
        .log_id(&log_id(1, 1))
        .ip("198.51.100.7");
    record(&mut c, &alice);
    let line: String = c
        .query_one("SELECT authaudit.to_cef(l) FROM authaudit.auth_log l", &[])
        .unwrap()
        .get(0);
    let check = |c: &mut postgres::Client, l: &str| -> Option<bool> {
        c.query_one("SELECT authaudit.verify_cef($1)", &[&l])
            .unwrap()
            .get(0)
    };
    assert_eq!(check(&mut c, &line), Some(true));
    for tampered in [
        line.replace("duser=alice", "duser=mallory"),
        line.replace("src=198.51.100.7", "src=10.0.0.1"),
        line.replace("|Login failed|3|", "|Login failed|1|"),
        line.replace("outcome=failure", "outcome=success"),
    ] {
        assert_ne!(tampered, line);
        assert_eq!(check(&mut c, &tampered), Some(false), "{tampered}");
    }
    let unknown = line.replace(&log_id(1, 1), &log_id(9, 9));
    assert_eq!(check(&mut c, &unknown), None);
    // The same log id in another tenant: each line is checked against its
    // own tenant's row (cs1), and a line moved to the other tenant is caught.
    record(
        &mut c,
        &Event {
            tenant: "zenith".into(),
            ..alice
        },
    );
    let other: String = c
        .query_one(
            "SELECT authaudit.to_cef(l) FROM authaudit.auth_log l WHERE tenant_id = 'zenith'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(check(&mut c, &line), Some(true));
    assert_eq!(check(&mut c, &other), Some(true));
    let moved = line.replace("cs1=acme ", "cs1=zenith ");
    assert_ne!(moved, line);
    assert_eq!(check(&mut c, &moved), Some(false));
}
