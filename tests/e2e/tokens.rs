//! JWT session issuance: claims and fingerprint recorded, the token never;
//! every refusal documented and leaving no trace; replays caught even when
//! racing.

use crate::support::{
    db, log_id, log_state, record, run_python, sqlstate, try_record, verify, Event,
};
use authaudit_tests::Cluster;
use postgres::error::SqlState;
use postgres::Client;
use serde_json::{json, Value};

/// Tokens issued by PyJWT: (token, sha256 hex).
fn issue(specs: Value) -> Vec<(String, String)> {
    let out = run_python("tests/jwt_issue.py", &specs.to_string());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["token"].as_str().unwrap().into(),
                v["sha256"].as_str().unwrap().into(),
            )
        })
        .collect()
}

fn session_claims(sub: &str, jti: &str) -> Value {
    json!({"claims": {"iss": "https://idp.example", "sub": sub, "aud": ["web", "api"],
                      "iat": 1_795_000_000, "nbf": 1_795_000_000, "exp": 1_795_000_900,
                      "jti": jti},
           "headers": {"kid": "key-2026-11"}})
}

fn issue_token(c: &mut Client, id: &str, user: &str, token: &str) -> Result<i64, postgres::Error> {
    c.query_one(
        "SELECT (authaudit.record_token_issued($1::text::uuid, 'acme', 'hq', $2, $3, \
         '203.0.113.5', 'AcmeMobile/3.1', 'mobile')).seq",
        &[&id, &user, &token],
    )
    .map(|r| r.get(0))
}

fn login_success(c: &mut Client, id: &str, user: &str) -> i64 {
    let e = Event::success("acme", user)
        .log_id(id)
        .channel("mobile")
        .org("hq")
        .ip("203.0.113.5");
    record(c, &e).seq
}

#[test]
fn issuance_records_claims_and_fingerprint_never_the_token() {
    let db = db("token_facts");
    let mut c = db.connect();
    let tokens = issue(json!([session_claims("alice", "jti-1")]));
    let (token, sha) = &tokens[0];
    login_success(&mut c, &log_id(1, 1), "alice");
    let login_seq = login_success(&mut c, &log_id(1, 2), "alice");
    let seq = issue_token(&mut c, &log_id(1, 3), "alice", token).unwrap();
    assert_eq!(seq, login_seq + 1);

    let meta: String = c
        .query_one(
            "SELECT metadata::text FROM authaudit.auth_log WHERE seq = $1",
            &[&seq],
        )
        .unwrap()
        .get(0);
    let meta: Value = serde_json::from_str(&meta).unwrap();
    let t = &meta["_authaudit"]["token"];
    assert_eq!(t["alg"], "HS256");
    assert_eq!(t["typ"], "JWT");
    assert_eq!(t["kid"], "key-2026-11");
    assert_eq!(t["iss"], "https://idp.example");
    assert_eq!(t["sub"], "alice");
    assert_eq!(t["aud"], json!(["web", "api"]));
    assert_eq!(t["exp"], 1_795_000_900);
    assert_eq!(t["iat"], 1_795_000_000);
    assert_eq!(t["nbf"], 1_795_000_000);
    assert_eq!(t["jti"], "jti-1");
    assert_eq!(t["fingerprint_sha256"], sha.as_str());
    // It follows the latest successful login of the user, by id and link.
    let (login_id, login_link): (String, String) = {
        let r = c
            .query_one(
                "SELECT log_id::text, encode(link_sha256, 'hex') FROM authaudit.auth_log WHERE seq = $1",
                &[&login_seq],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(
        meta["_authaudit"]["follows_login"]["log_id"],
        login_id.as_str()
    );
    assert_eq!(
        meta["_authaudit"]["follows_login"]["link_sha256"],
        login_link.as_str()
    );

    // Neither the token nor its signature is stored anywhere in the row.
    let signature = token.rsplit('.').next().unwrap();
    let stored: String = c
        .query_one(
            "SELECT string_agg(l::text, '|') FROM authaudit.auth_log l",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!stored.contains(token.as_str()) && !stored.contains(signature));

    // The SIEM line carries the fingerprint; the chain verifies.
    let cef: String = c
        .query_one(
            "SELECT authaudit.to_cef(l) FROM authaudit.auth_log l WHERE seq = $1",
            &[&seq],
        )
        .unwrap()
        .get(0);
    assert!(
        cef.contains(&format!("cs5={sha} cs5Label=tokenFingerprintSha256")),
        "{cef}"
    );
    assert!(!cef.contains(signature));
    assert!(verify(&mut c, "acme").0);
}

#[test]
fn a_retry_returns_the_stored_row_and_another_token_under_that_id_is_refused() {
    let db = db("token_retry");
    let mut c = db.connect();
    let tokens = issue(json!([
        session_claims("alice", "r-1"),
        session_claims("alice", "r-2")
    ]));
    login_success(&mut c, &log_id(2, 1), "alice");
    let first = issue_token(&mut c, &log_id(2, 2), "alice", &tokens[0].0).unwrap();
    let again = issue_token(&mut c, &log_id(2, 2), "alice", &tokens[0].0).unwrap();
    assert_eq!(first, again);
    let before = log_state(&mut c, "acme");
    let err = issue_token(&mut c, &log_id(2, 2), "alice", &tokens[1].0).unwrap_err();
    assert_eq!(sqlstate(&err), Some(SqlState::UNIQUE_VIOLATION), "{err}");
    assert_eq!(log_state(&mut c, "acme"), before);
}

#[test]
fn refused_tokens_leave_no_trace_and_never_echo_the_token() {
    let db = Cluster::shared().fresh_db_with_lockout("token_refusals");
    let mut c = db.connect();
    let tokens = issue(json!([
        session_claims("alice", "dup-1"),
        {"claims": {"sub": "alice", "jti": "none-1"}, "alg": "none"},
        session_claims("mallory", "sub-1"),
        {"claims": {"iss": "idp", "jti": "nosub-1"}},
        session_claims("bob", "locked-1"),
    ]));
    login_success(&mut c, &log_id(3, 1), "alice");
    issue_token(&mut c, &log_id(3, 2), "alice", &tokens[0].0).unwrap();
    // Lock bob: five failures under the default policy.
    for n in 0..5 {
        record(
            &mut c,
            &Event::failed("acme", "bob").log_id(&log_id(3, 10 + n)),
        );
    }
    let (tok, ..) = &tokens[0];
    let mut truncated = tok.clone();
    truncated.truncate(tok.len() - 10);
    let cases: Vec<(&str, String, SqlState)> = vec![
        (
            "alice",
            "not-a-token".into(),
            SqlState::INVALID_TEXT_REPRESENTATION,
        ),
        (
            "alice",
            format!("{tok}.extra"),
            SqlState::INVALID_TEXT_REPRESENTATION,
        ),
        (
            "alice",
            tok.replacen('.', ".!!", 1),
            SqlState::INVALID_TEXT_REPRESENTATION,
        ),
        (
            "alice",
            tokens[1].0.clone(),
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            "alice",
            tokens[2].0.clone(),
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            "alice",
            tokens[3].0.clone(),
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        ("alice", tok.clone(), SqlState::UNIQUE_VIOLATION),
        (
            "bob",
            tokens[4].0.clone(),
            SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
        ),
    ];
    for (n, (user, token, code)) in cases.into_iter().enumerate() {
        let before = log_state(&mut c, "acme");
        let lockout: i64 = c
            .query_one(
                "SELECT count(*) FROM authaudit.lockout_state WHERE locked",
                &[],
            )
            .unwrap()
            .get(0);
        let err = issue_token(&mut c, &log_id(3, 100 + n as u32), user, &token).unwrap_err();
        assert_eq!(sqlstate(&err), Some(code.clone()), "case {n}: {err}");
        let msg = err.as_db_error().unwrap().message().to_string();
        assert!(msg.starts_with("pg_authaudit:"), "{msg}");
        let signature = token.rsplit('.').next().unwrap_or_default();
        assert!(!msg.contains(&token), "case {n} echoed the token: {msg}");
        assert!(
            signature.len() < 8 || !msg.contains(signature),
            "case {n}: {msg}"
        );
        assert_eq!(
            log_state(&mut c, "acme"),
            before,
            "case {n} wrote something"
        );
        let after: i64 = c
            .query_one(
                "SELECT count(*) FROM authaudit.lockout_state WHERE locked",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(lockout, after);
    }
    // Token events only come with their facts: not through record_event,
    // and nobody forges the extension's facts.
    for (ty, meta) in [
        ("token_issued", "{}"),
        (
            "login_success",
            r#"{"_authaudit": {"token": {"jti": "forged"}}}"#,
        ),
    ] {
        let forged = Event::new("acme", ty, "alice")
            .log_id(&log_id(3, 200))
            .metadata_text(meta);
        let err = try_record(&mut c, &forged).unwrap_err();
        assert_eq!(
            sqlstate(&err),
            Some(SqlState::INVALID_PARAMETER_VALUE),
            "{err}"
        );
    }
    assert!(verify(&mut c, "acme").0);
}

#[test]
fn concurrent_replays_of_one_jti_record_it_once() {
    let db = db("token_race");
    let mut c = db.connect();
    login_success(&mut c, &log_id(4, 1), "alice");
    let tokens = issue(json!([session_claims("alice", "race-1")]));
    let token = tokens[0].0.clone();
    let url = db.url();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
    let handles: Vec<_> = (0..8u32)
        .map(|i| {
            let (url, token, barrier) = (url.clone(), token.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(&url, postgres::NoTls).unwrap();
                barrier.wait();
                issue_token(&mut c, &log_id(4, 10 + i), "alice", &token).map_err(|e| sqlstate(&e))
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .all(|e| *e == Some(SqlState::UNIQUE_VIOLATION)));
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM authaudit.auth_log WHERE event_type = 'token_issued'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    assert!(verify(&mut c, "acme").0);
}
