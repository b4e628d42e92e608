//! Recording: the returned row, idempotent retries, refused input, batches,
//! append-only protection.

use crate::support::{
    db, fail, log_id, log_state, record, sqlstate, try_record, verify, Event, StoredExt,
};
use authaudit_core::chain::ChainHead;
use postgres::error::SqlState;

#[test]
fn a_recorded_event_carries_its_chain_position_and_digests() {
    let db = db("returned_row");
    let mut c = db.connect();
    let row = c
        .query_one(
            "SELECT seq, prev_link, link_sha256, digest_sha512, digest_sha3_256, format_version, \
                    recorded_at >= occurred_at AS server_time_set \
               FROM authaudit.record_event(log_id => $1::text::uuid, tenant_id => 'agency', \
                    event_type => 'login_failed', user_id => 'alice', channel => 'web')",
            &[&log_id(1, 1)],
        )
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    let prev: Vec<u8> = row.get(1);
    assert_eq!(prev, ChainHead::genesis("agency").sha256.to_vec());
    assert_eq!(row.get::<_, Vec<u8>>(2).len(), 32);
    assert_eq!(row.get::<_, Vec<u8>>(3).len(), 64);
    assert_eq!(row.get::<_, Vec<u8>>(4).len(), 32);
    assert_eq!(row.get::<_, i16>(5), 1);
    assert!(row.get::<_, bool>(6));
    assert_eq!(fail(&mut c, &log_id(1, 2), "agency", "alice"), 2);
    assert!(verify(&mut c, "agency").0);
}

#[test]
fn web_and_mobile_paths_produce_rows_of_identical_shape() {
    let db = db("channels");
    let mut c = db.connect_dated();
    let sql = "SELECT (to_jsonb(r) - ARRAY['log_id','seq','channel','recorded_at','prev_link',
                                          'link_sha256','digest_sha512','digest_sha3_256'])::text
                 FROM authaudit.record_event(log_id => $1::text::uuid, tenant_id => 'agency', org_id => 'hq',
                      event_type => 'login_success', user_id => 'bob', channel => $2,
                      ip => '2001:db8::7', user_agent => 'ua/1.0',
                      occurred_at => '2026-11-01 10:00:00+00',
                      metadata => '{\"mfa\": true, \"method\": \"password\"}') r";
    let web: String = c.query_one(sql, &[&log_id(1, 1), &"web"]).unwrap().get(0);
    let mobile: String = c
        .query_one(sql, &[&log_id(1, 2), &"mobile"])
        .unwrap()
        .get(0);
    assert_eq!(web, mobile);
    assert!(web.contains("\"ip\": \"2001:db8::7\""), "{web}");
}

#[test]
fn a_retry_returns_the_original_row_and_changes_nothing() {
    let db = db("retry");
    let mut c = db.connect();
    let id = log_id(1, 1);
    assert_eq!(fail(&mut c, &id, "agency", "alice"), 1);
    let first: Vec<u8> = c
        .query_one(
            "SELECT link_sha256 FROM authaudit.auth_log WHERE log_id = $1::text::uuid",
            &[&id],
        )
        .unwrap()
        .get(0);
    for _ in 0..3 {
        let retry = Event::failed("agency", "alice")
            .log_id(&id)
            .ip("198.51.100.7")
            .user_agent("test-agent")
            .metadata(serde_json::json!({"reason": "bad_password"}));
        let again = record(&mut c, &retry);
        assert_eq!(again.seq, 1);
        assert_eq!(again.link_sha256, hex::encode(&first));
    }
    assert_eq!(log_state(&mut c, "agency"), (1, 1));
    assert_eq!(fail(&mut c, &log_id(1, 2), "agency", "alice"), 2);
}

#[test]
fn a_reused_log_id_with_other_content_is_refused_and_changes_nothing() {
    let db = db("reuse");
    let mut c = db.connect();
    let id = log_id(1, 1);
    fail(&mut c, &id, "agency", "alice");
    for (tenant, user) in [("agency", "mallory"), ("agency", "alice ")] {
        let err = try_record(&mut c, &Event::failed(tenant, user).log_id(&id)).unwrap_err();
        assert_eq!(sqlstate(&err), Some(SqlState::UNIQUE_VIOLATION), "{err}");
        let msg = err.as_db_error().unwrap();
        assert!(msg
            .message()
            .contains("already recorded with different content"));
        // Nothing of the stored row is revealed to the caller.
        assert!(msg.detail().is_none());
        assert!(!msg.message().contains("alice") || user == "alice");
    }
    assert_eq!(log_state(&mut c, "agency"), (1, 1));
}

/// A log id is unique within its tenant: the same log recorded into a
/// second tenant is a new event there, and each tenant's retries stay
/// retries of its own row.
#[test]
fn one_log_id_is_one_event_per_tenant() {
    let db = db("log_id_per_tenant");
    let mut c = db.connect();
    let id = log_id(1, 1);
    assert_eq!(fail(&mut c, &id, "agency", "alice"), 1);
    assert_eq!(fail(&mut c, &log_id(1, 2), "other-tenant", "bob"), 1);
    // Another tenant, other content: recorded there, nothing refused.
    assert_eq!(fail(&mut c, &id, "other-tenant", "carol"), 2);
    // Retries in each tenant return that tenant's row.
    assert_eq!(fail(&mut c, &id, "agency", "alice"), 1);
    assert_eq!(fail(&mut c, &id, "other-tenant", "carol"), 2);
    let err = try_record(&mut c, &Event::failed("other-tenant", "alice").log_id(&id)).unwrap_err();
    assert_eq!(sqlstate(&err), Some(SqlState::UNIQUE_VIOLATION), "{err}");
    // A batch holding one id for two tenants returns both rows in input
    // order, a retry of a recorded one included.
    let id2 = log_id(1, 3);
    let batch = format!(
        r#"[{{"log_id":"{id2}","tenant_id":"other-tenant","event_type":"login_failed","user_id":"dave","channel":"ssh"}},
            {{"log_id":"{id2}","tenant_id":"agency","event_type":"login_success","user_id":"erin","channel":"vpn"}},
            {{"log_id":"{id}","tenant_id":"agency","event_type":"login_failed","user_id":"alice","channel":"web","ip":"198.51.100.7","user_agent":"test-agent","metadata":{{"reason":"bad_password"}}}}]"#
    );
    let rows = c
        .query(
            "SELECT tenant_id, user_id, seq FROM authaudit.record_events($1::text::jsonb)",
            &[&batch],
        )
        .unwrap();
    let got: Vec<(String, String, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("other-tenant".into(), "dave".into(), 3),
            ("agency".into(), "erin".into(), 2),
            ("agency".into(), "alice".into(), 1),
        ]
    );
    // History too: the same import into two tenants.
    let mut dated = db.connect_dated();
    let history = format!(
        r#"[{{"log_id":"{h}","tenant_id":"TENANT","event_type":"login_failed","user_id":"root","channel":"ssh","occurred_at":"2025-03-01 10:00:00+00"}}]"#,
        h = log_id(1, 4)
    );
    for (tenant, seq) in [("agency", 3i64), ("other-tenant", 4)] {
        let got: i64 = dated
            .query_one(
                "SELECT seq FROM authaudit.import_events($1::text::jsonb)",
                &[&history.replace("TENANT", tenant)],
            )
            .unwrap()
            .get(0);
        assert_eq!(got, seq);
    }
    // Each import ends with its tenant's lockout_rebuilt event.
    assert_eq!(log_state(&mut c, "agency"), (9, 4));
    assert!(verify(&mut c, "agency").0 && verify(&mut c, "other-tenant").0);
}

/// Each bad input raises its documented SQLSTATE (docs/errors.md) and leaves
/// no row and no chain advance.
#[test]
fn bad_input_is_refused_with_its_sqlstate_and_leaves_no_trace() {
    let db = db("bad_input");
    let mut c = db.connect();
    fail(&mut c, &log_id(1, 1), "agency", "alice");
    let long_user = "u".repeat(257);
    let big_meta = format!("{{\"k\": \"{}\"}}", "x".repeat(9000));
    let cases: Vec<(&str, String, SqlState)> = vec![
        (
            "unknown event type",
            "event_type => 'login_maybe'".into(),
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            "unknown channel",
            "channel => 'fax'".into(),
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            "malformed ip",
            "ip => '999.1.1.1'".into(),
            SqlState::INVALID_TEXT_REPRESENTATION,
        ),
        (
            "network, not host",
            "ip => '10.0.0.0/8'".into(),
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            "missing tenant",
            "tenant_id => NULL".into(),
            SqlState::NULL_VALUE_NOT_ALLOWED,
        ),
        (
            "malformed tenant",
            "tenant_id => 'a b'".into(),
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            "malformed org",
            "org_id => 'x;drop'".into(),
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            "empty user",
            "user_id => ''".into(),
            SqlState::NULL_VALUE_NOT_ALLOWED,
        ),
        (
            "missing user",
            "user_id => NULL".into(),
            SqlState::NULL_VALUE_NOT_ALLOWED,
        ),
        (
            "long user",
            format!("user_id => '{long_user}'"),
            SqlState::STRING_DATA_RIGHT_TRUNCATION,
        ),
        (
            "control char in user",
            "user_id => E'root\\nadmin'".into(),
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            "metadata array",
            "metadata => '[1]'".into(),
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            "metadata scalar",
            "metadata => '\"x\"'".into(),
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            "metadata too big",
            format!("metadata => '{big_meta}'"),
            SqlState::PROGRAM_LIMIT_EXCEEDED,
        ),
        (
            "reserved metadata key",
            "metadata => '{\"_authaudit\": 1}'".into(),
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            "future event",
            "occurred_at => now() + interval '1 day'".into(),
            SqlState::DATETIME_FIELD_OVERFLOW,
        ),
        (
            "infinite time",
            "occurred_at => 'infinity'".into(),
            SqlState::DATETIME_FIELD_OVERFLOW,
        ),
        (
            "missing log id",
            "log_id => NULL".into(),
            SqlState::NULL_VALUE_NOT_ALLOWED,
        ),
    ];
    for (what, override_arg, expected) in cases {
        let mut args = vec![
            ("log_id", format!("'{}'", log_id(1, 2))),
            ("tenant_id", "'agency'".to_string()),
            ("event_type", "'login_failed'".to_string()),
            ("user_id", "'alice'".to_string()),
            ("channel", "'web'".to_string()),
        ];
        let name = override_arg.split(" =>").next().unwrap().to_string();
        args.retain(|(n, _)| *n != name);
        let mut sql_args: Vec<String> = args.iter().map(|(n, v)| format!("{n} => {v}")).collect();
        sql_args.push(override_arg.clone());
        let sql = format!("SELECT authaudit.record_event({})", sql_args.join(", "));
        let err = c.batch_execute(&sql).unwrap_err();
        assert_eq!(sqlstate(&err), Some(expected.clone()), "{what}: {err}");
        assert_eq!(log_state(&mut c, "agency"), (1, 1), "{what} left a trace");
    }
    assert_eq!(fail(&mut c, &log_id(1, 2), "agency", "alice"), 2);
    assert!(verify(&mut c, "agency").0);
}

#[test]
fn an_oversized_user_agent_is_cut_and_the_cut_is_recorded() {
    let db = db("long_ua");
    let mut c = db.connect();
    let ua = "A".repeat(600);
    let e = Event::failed("agency", "alice")
        .log_id(&log_id(1, 1))
        .user_agent(&ua)
        .metadata(serde_json::json!({"k": "v"}));
    let row = record(&mut c, &e);
    let meta = row.metadata_json();
    assert_eq!(row.user_agent.unwrap_or_default().chars().count(), 512);
    assert_eq!(
        meta["_authaudit"]["user_agent_truncated"]["chars"].to_string(),
        "600"
    );
    assert_eq!(meta["k"], "v");
    assert!(verify(&mut c, "agency").0);
}

#[test]
fn a_batch_returns_rows_in_input_order_and_is_all_or_nothing() {
    let db = db("batch");
    let mut c = db.connect();
    let batch = format!(
        r#"[{{"log_id":"{a}","tenant_id":"zeta","event_type":"login_failed","user_id":"u1","channel":"mobile","ip":"203.0.113.9"}},
            {{"log_id":"{b}","tenant_id":"alpha","event_type":"login_failed","user_id":"u2","channel":"web","metadata":{{"n":1}}}},
            {{"log_id":"{c}","tenant_id":"zeta","event_type":"login_success","user_id":"u1","channel":"mobile"}}]"#,
        a = log_id(1, 1),
        b = log_id(1, 2),
        c = log_id(1, 3)
    );
    let rows = c
        .query(
            "SELECT log_id::text, tenant_id, seq FROM authaudit.record_events($1::text::jsonb)",
            &[&batch],
        )
        .unwrap();
    let got: Vec<(String, String, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![
            (log_id(1, 1), "zeta".into(), 1),
            (log_id(1, 2), "alpha".into(), 1),
            (log_id(1, 3), "zeta".into(), 2),
        ]
    );
    // A batch with one bad event records nothing at all.
    let bad = format!(
        r#"[{{"log_id":"{a}","tenant_id":"zeta","event_type":"login_failed","user_id":"u1","channel":"web"}},
            {{"log_id":"{b}","tenant_id":"zeta","event_type":"login_failed","user_id":"u1","channel":"web","colour":"red"}}]"#,
        a = log_id(1, 4),
        b = log_id(1, 5)
    );
    let err = c
        .query(
            "SELECT * FROM authaudit.record_events($1::text::jsonb)",
            &[&bad],
        )
        .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        Some(SqlState::INVALID_PARAMETER_VALUE),
        "{err}"
    );
    assert!(err.as_db_error().unwrap().message().contains("colour"));
    assert_eq!(log_state(&mut c, "zeta"), (3, 2));
    // Not an array.
    let err = c
        .query("SELECT * FROM authaudit.record_events('{}')", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some(SqlState::INVALID_PARAMETER_VALUE));
    assert!(verify(&mut c, "zeta").0 && verify(&mut c, "alpha").0);
}

#[test]
fn the_log_is_append_only_even_for_its_owner() {
    let db = db("append_only");
    let mut c = db.connect();
    fail(&mut c, &log_id(1, 1), "agency", "alice");
    for sql in [
        "UPDATE authaudit.auth_log SET user_id = 'bob'",
        "DELETE FROM authaudit.auth_log",
        "TRUNCATE authaudit.auth_log",
        "UPDATE authaudit.auth_log SET user_id = 'bob' WHERE false",
    ] {
        let err = c.batch_execute(sql).unwrap_err();
        assert_eq!(
            sqlstate(&err),
            Some(SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {err}"
        );
    }
    assert_eq!(log_state(&mut c, "agency"), (1, 1));
}
