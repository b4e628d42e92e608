//! Every input boundary of recording fed every JSON type and shape: each
//! call either succeeds or fails with a documented SQLSTATE, never crashes
//! the server (the harness also fails the test when the server log shows a
//! crash), and a refused call leaves no trace: no row, no chain advance, no
//! lockout change. The cases are a fixed matrix (every field × every shape)
//! and a deterministic stream of generated JSON values.

use crate::support::{gapless, sqlstate, verify, Rng};
use authaudit_tests::Cluster;
use base64::Engine;
use postgres::Client;
use serde_json::{json, Value};

/// SQLSTATEs docs/errors.md documents for recording, importing and token
/// issuance, with PostgreSQL's own refusals of a value before the call
/// (docs/errors.md, "Refused before the call").
const DOCUMENTED: [&str; 15] = [
    "22004", "22023", "22P02", "22001", "54000", "22008", "22007", "22009", "22P05", "22021",
    "23505", "55000", "42501", "40001", "0A000",
];

/// JSON values of every type and shape, as JSON text.
fn shapes() -> Vec<(String, String)> {
    let deep = |n: usize, open: &str, close: &str| {
        let mut s = String::new();
        for _ in 0..n {
            s.push_str(open);
        }
        s.push('1');
        for _ in 0..n {
            s.push_str(close);
        }
        s
    };
    let mut v: Vec<(&str, String)> = vec![
        ("string", r#""alice""#.into()),
        ("empty string", r#""""#.into()),
        ("blank string", r#""   ""#.into()),
        ("long string", format!("\"{}\"", "a".repeat(20_000))),
        ("unicode escapes", r#""\u00e9\ud83d\ude00\u4e2d""#.into()),
        ("control character", r#""a\u0001b""#.into()),
        ("bidi override", r#""a\u202eb""#.into()),
        ("newline", r#""a\nb""#.into()),
        (
            "uuid string",
            r#""00000000-0000-4000-8000-000000000001""#.into(),
        ),
        ("address string", r#""198.51.100.9""#.into()),
        ("time string", r#""2026-01-01T00:00:00Z""#.into()),
        ("integer", "8888".into()),
        ("negative", "-12345".into()),
        ("huge integer", "123456789012345678901234567890".into()),
        ("1e400", "1e400".into()),
        ("-1e-400", "-1e-400".into()),
        ("fraction", "1.50".into()),
        ("negative zero", "-0".into()),
        ("true", "true".into()),
        ("false", "false".into()),
        ("null", "null".into()),
        ("empty object", "{}".into()),
        ("object", r#"{"a": 1, "b": [true, null]}"#.into()),
        ("empty array", "[]".into()),
        ("array", r#"[1, "x", {"y": 2}]"#.into()),
        ("object nested 64", deep(64, "{\"a\":", "}")),
        ("object nested 65", deep(65, "{\"a\":", "}")),
        ("object nested 130", deep(130, "{\"a\":", "}")),
        ("array nested 130", deep(130, "[", "]")),
        (
            "odd keys",
            r#"{"$x": 1, "a.b": 2, "": 3, "\u0000z": 4}"#.into(),
        ),
    ];
    // PostgreSQL refuses \u0000 in jsonb: keep the shape without it too.
    v.push(("odd keys, no NUL", r#"{"$x": 1, "a.b": 2, "": 3}"#.into()));
    v.into_iter().map(|(n, s)| (n.to_owned(), s)).collect()
}

/// What a test database holds that a refused call must not change.
#[derive(Debug, PartialEq)]
struct Trace {
    rows: i64,
    heads: Vec<(String, i64)>,
    accounts: Vec<(String, String, i32, bool)>,
    sources: i64,
    pairs: i64,
}

fn trace(c: &mut Client) -> Trace {
    let one = |c: &mut Client, q: &str| -> i64 { c.query_one(q, &[]).unwrap().get(0) };
    Trace {
        rows: one(c, "SELECT count(*) FROM authaudit.auth_log"),
        heads: c
            .query(
                "SELECT tenant_id, max(seq) FROM authaudit.auth_log GROUP BY 1 ORDER BY 1",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect(),
        accounts: c
            .query(
                "SELECT tenant_id, user_id, failure_count, locked FROM authaudit.lockout_state ORDER BY 1, 2",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect(),
        sources: one(c, "SELECT count(*) FROM authaudit.lockout_ip_state"),
        pairs: one(c, "SELECT count(*) FROM authaudit.lockout_ip_account_state"),
    }
}

/// Runs one case: success, or a documented SQLSTATE with nothing changed.
/// Returns whether it succeeded; what went wrong is added to `problems`.
fn case(
    c: &mut Client,
    problems: &mut Vec<String>,
    what: &str,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> bool {
    let before = trace(c);
    match c.execute(sql, params) {
        Ok(_) => true,
        Err(e) => {
            let Some(state) = sqlstate(&e) else {
                panic!("{what}: the call ended without an SQLSTATE (did the server crash?): {e}");
            };
            let msg = e
                .as_db_error()
                .map(|d| d.message().to_owned())
                .unwrap_or_default();
            if !DOCUMENTED.contains(&state.code()) {
                problems.push(format!(
                    "{what}: undocumented SQLSTATE {}: {msg}",
                    state.code()
                ));
            }
            if msg.contains("panicked") || msg.contains("RUST_BACKTRACE") {
                problems.push(format!("{what}: a Rust panic reached the client: {msg}"));
            }
            if trace(c) != before {
                problems.push(format!("{what}: a refused call left a trace"));
            }
            false
        }
    }
}

/// Fails the test with every problem found.
fn no_problems(problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// A valid event object for the batch functions.
fn event(n: u32, event_type: &str, occurred_at: &str) -> Value {
    json!({
        "log_id": format!("00000000-0000-4000-8000-{n:012x}"),
        "tenant_id": "acme",
        "org_id": "hq",
        "event_type": event_type,
        "user_id": format!("user{}", n % 7),
        "ip": format!("198.51.100.{}", n % 200 + 1),
        "user_agent": "test-agent",
        "channel": "web",
        "occurred_at": occurred_at,
        "metadata": {"reason": "bad_password"},
    })
}

const BATCH_FIELDS: [&str; 10] = [
    "log_id",
    "tenant_id",
    "org_id",
    "event_type",
    "user_id",
    "ip",
    "user_agent",
    "channel",
    "occurred_at",
    "metadata",
];

#[test]
fn every_batch_field_of_every_json_type_is_recorded_or_refused_with_a_documented_sqlstate() {
    let db = Cluster::shared().fresh_db_with_lockout("hostile_batch");
    let mut c = db.connect();
    let mut problems = Vec::new();
    let now: String = c
        .query_one(
            "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
            &[],
        )
        .unwrap()
        .get(0);
    let mut n = 0u32;
    let mut accepted = 0;
    for (function, time) in [
        ("authaudit.record_events(", now.as_str()),
        // The tenant's own batch: a tenant_id of any other shape than
        // "acme" or null is refused.
        ("authaudit.record_events('acme', ", now.as_str()),
        ("authaudit.import_events(", "2024-03-01T10:00:00Z"),
    ] {
        let sql = format!("SELECT count(*) FROM {function}$1::text::jsonb)");
        for field in BATCH_FIELDS {
            for (shape, text) in shapes() {
                n += 1;
                let mut e = event(n, "login_failed", time);
                let value: Value = match serde_json::from_str(&text) {
                    Ok(v) => v,
                    // serde_json refuses what PostgreSQL may accept (1e400,
                    // deep nesting): splice the text in instead.
                    Err(_) => Value::String("\u{1}SPLICE\u{1}".into()),
                };
                e[field] = value;
                // A valid event first: a refusal of the second must undo it.
                let good = event(100_000 + n, "login_failed", time);
                let batch = format!("[{good}, {e}]").replace("\"\\u0001SPLICE\\u0001\"", &text);
                let what = format!("{function}: {field} = {shape}");
                if case(&mut c, &mut problems, &what, &sql, &[&batch]) {
                    accepted += 1;
                }
            }
        }
        // The whole argument of every shape.
        for (shape, text) in shapes() {
            case(
                &mut c,
                &mut problems,
                &format!("{function}{shape})"),
                &sql,
                &[&text],
            );
        }
    }
    // The tenant argument of record_events(tenant_id, events), every shape
    // as text, over a valid batch of tenant acme.
    for (shape, text) in shapes() {
        n += 1;
        let batch = format!("[{}]", event(200_000 + n, "login_failed", &now));
        case(
            &mut c,
            &mut problems,
            &format!("authaudit.record_events(tenant_id = {shape}, …)"),
            "SELECT count(*) FROM authaudit.record_events($1, $2::text::jsonb)",
            &[&text, &batch],
        );
    }
    assert!(
        accepted > 0,
        "no case was accepted: the matrix tests nothing"
    );
    no_problems(&problems);
    gapless(&mut c, "acme");
    assert!(
        verify(&mut c, "acme").0,
        "the chain verifies after the matrix"
    );
}

#[test]
fn every_record_event_argument_of_every_shape_is_recorded_or_refused_with_a_documented_sqlstate() {
    let db = Cluster::shared().fresh_db_with_lockout("hostile_single");
    let mut c = db.connect();
    let mut problems = Vec::new();
    // Each argument given as the text of every shape (cast to its type),
    // the others valid.
    let args = [
        ("log_id", "uuid"),
        ("tenant_id", "text"),
        ("event_type", "text"),
        ("user_id", "text"),
        ("channel", "text"),
        ("org_id", "text"),
        ("ip", "inet"),
        ("user_agent", "text"),
        ("occurred_at", "timestamptz"),
        ("metadata", "jsonb"),
    ];
    let mut n = 0u32;
    for (arg, ty) in args {
        let mut shapes = shapes();
        // Text that is not UTF-8 cannot reach a text argument: PostgreSQL
        // refuses it at the conversion (22021).
        shapes.push(("invalid UTF-8".into(), "\u{1}BYTES\u{1}".into()));
        for (shape, text) in shapes {
            n += 1;
            let mut values: Vec<String> = vec![
                format!("'00000000-0000-4000-8000-{n:012x}'::uuid"),
                "'acme'".into(),
                "'login_failed'".into(),
                format!("'user{}'", n % 5),
                "'web'".into(),
                "'hq'".into(),
                format!("'198.51.100.{}'::inet", n % 200 + 1),
                "'agent'".into(),
                "now()".into(),
                r#"'{"reason": "x"}'::jsonb"#.into(),
            ];
            let i = args.iter().position(|(a, _)| *a == arg).unwrap();
            values[i] = if text == "\u{1}BYTES\u{1}" {
                format!("convert_from('\\xc328'::bytea, 'UTF8')::{ty}")
            } else {
                format!("$1::text::{ty}")
            };
            let sql =
                format!(
                "SELECT authaudit.record_event(log_id => {}, tenant_id => {}, event_type => {}, \
                 user_id => {}, channel => {}, org_id => {}, ip => {}, user_agent => {}, \
                 occurred_at => {}, metadata => {})",
                values[0], values[1], values[2], values[3], values[4], values[5], values[6],
                values[7], values[8], values[9]
            );
            let what = format!("record_event: {arg} = {shape}");
            if values[i].contains("$1") {
                case(&mut c, &mut problems, &what, &sql, &[&text]);
            } else {
                case(&mut c, &mut problems, &what, &sql, &[]);
            }
        }
    }
    no_problems(&problems);
    gapless(&mut c, "acme");
    assert!(verify(&mut c, "acme").0);
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn every_token_claim_of_every_json_type_is_recorded_or_refused_with_a_documented_sqlstate() {
    let db = Cluster::shared().fresh_db_with_lockout("hostile_token");
    let mut c = db.connect();
    let mut problems = Vec::new();
    let mut n = 0u32;
    let header_fields = ["alg", "typ", "kid"];
    let claims = ["sub", "iss", "aud", "exp", "iat", "nbf", "jti"];
    for (place, field) in header_fields
        .iter()
        .map(|f| ("header", *f))
        .chain(claims.iter().map(|f| ("claims", *f)))
    {
        for (shape, text) in shapes() {
            n += 1;
            let mut header = r#"{"alg": "RS256", "typ": "JWT"}"#.to_string();
            let mut body = format!(
                r#"{{"sub": "alice", "iss": "https://idp.example", "aud": "app", "exp": 4102444800, "iat": 1700000000, "jti": "j{n}"}}"#
            );
            let target = if place == "header" {
                &mut header
            } else {
                &mut body
            };
            // The shape's text spliced in as the field's value (replacing it
            // or added), so that PostgreSQL-only shapes reach the parser.
            let object: Value = serde_json::from_str(target).unwrap();
            let mut rest = object.as_object().unwrap().clone();
            rest.remove(field);
            let rest = Value::Object(rest).to_string();
            *target = format!("{{\"{field}\": {text}, {}", &rest[1..]);
            if rest == "{}" {
                *target = format!("{{\"{field}\": {text}}}");
            }
            let token = format!(
                "{}.{}.{}",
                b64url(header.as_bytes()),
                b64url(body.as_bytes()),
                b64url(b"signature")
            );
            let what = format!("record_token_issued: {place}.{field} = {shape}");
            case(
                &mut c,
                &mut problems,
                &what,
                "SELECT authaudit.record_token_issued(log_id => $1::text::uuid, tenant_id => 'acme', \
                 org_id => NULL, user_id => 'alice', token => $2, ip => '198.51.100.7', \
                 user_agent => NULL, channel => 'web')",
                &[&format!("00000000-0000-4000-8000-{n:012x}"), &token],
            );
        }
    }
    // Tokens that are not JWS of every shape.
    for (shape, text) in shapes() {
        n += 1;
        case(
            &mut c,
            &mut problems,
            &format!("record_token_issued: token = {shape}"),
            "SELECT authaudit.record_token_issued(log_id => $1::text::uuid, tenant_id => 'acme', \
             org_id => NULL, user_id => 'alice', token => $2, ip => NULL, user_agent => NULL, \
             channel => 'web')",
            &[&format!("00000000-0000-4000-8000-{n:012x}"), &text],
        );
    }
    no_problems(&problems);
    gapless(&mut c, "acme");
    assert!(verify(&mut c, "acme").0);
}

/// Generated cases (`support::Rng`: the same on every run).
impl Rng {
    /// A JSON text of any type, up to `depth` levels deep (deeper shapes
    /// come from the matrix).
    fn json(&mut self, depth: u32) -> String {
        let pick = if depth == 0 {
            self.below(7)
        } else {
            self.below(9)
        };
        match pick {
            0 => "null".into(),
            1 => if self.below(2) == 0 { "true" } else { "false" }.into(),
            2 => format!("{}", self.next() as i64),
            3 => {
                let digits: String = (0..self.below(60) + 1)
                    .map(|_| char::from(b'0' + self.below(10) as u8))
                    .collect();
                format!(
                    "{}{}.{}e{}",
                    if self.below(2) == 0 { "-" } else { "" },
                    digits,
                    self.below(1000),
                    self.below(800) as i64 - 400
                )
            }
            4 | 5 => {
                let pool = [
                    "a",
                    "é",
                    "😀",
                    "\\u0001",
                    "\\\"",
                    "\\\\",
                    "\\u202e",
                    " ",
                    "\\n",
                    "$",
                    ".",
                    "中",
                    "\\ud83d\\ude00",
                ];
                let s: String = (0..self.below(12))
                    .map(|_| pool[self.below(pool.len() as u64) as usize])
                    .collect();
                format!("\"{s}\"")
            }
            6 => format!("\"{}\"", "x".repeat(self.below(3000) as usize)),
            7 => {
                let items: Vec<String> = (0..self.below(5)).map(|_| self.json(depth - 1)).collect();
                format!("[{}]", items.join(", "))
            }
            _ => {
                let items: Vec<String> = (0..self.below(5))
                    .map(|i| {
                        format!(
                            "\"k{}{}\": {}",
                            i,
                            ["", "$", ".", " "][self.below(4) as usize],
                            self.json(depth - 1)
                        )
                    })
                    .collect();
                format!("{{{}}}", items.join(", "))
            }
        }
    }
}

#[test]
fn generated_json_in_every_batch_field_and_in_metadata_is_recorded_or_refused_cleanly() {
    let db = Cluster::shared().fresh_db_with_lockout("hostile_generated");
    let mut c = db.connect();
    let mut problems = Vec::new();
    let mut rng = Rng(0x5eed_2026_1207);
    let mut accepted = 0;
    for n in 0..400u32 {
        let field = BATCH_FIELDS[rng.below(BATCH_FIELDS.len() as u64) as usize];
        let text = if rng.below(2) == 0 {
            rng.json(4)
        } else {
            // Metadata objects are the likeliest to be accepted.
            format!("{{\"v\": {}}}", rng.json(6))
        };
        let field = if text.starts_with("{\"v\"") {
            "metadata"
        } else {
            field
        };
        let mut e = event(
            n,
            if n % 3 == 0 {
                "login_success"
            } else {
                "login_failed"
            },
            "2024-03-01T10:00:00Z",
        );
        e[field] = Value::String("\u{1}SPLICE\u{1}".into());
        let batch = format!("[{e}]").replace("\"\\u0001SPLICE\\u0001\"", &text);
        let what = format!("import_events: {field} = {text:.200}");
        if case(
            &mut c,
            &mut problems,
            &what,
            "SELECT count(*) FROM authaudit.import_events($1::text::jsonb)",
            &[&batch],
        ) {
            accepted += 1;
        }
    }
    assert!(
        accepted > 50,
        "only {accepted} generated cases were accepted"
    );
    no_problems(&problems);
    gapless(&mut c, "acme");
    assert!(verify(&mut c, "acme").0);
}

#[test]
fn metadata_nested_deeper_than_a_document_store_holds_is_refused_at_the_door() {
    let db = Cluster::shared().fresh_db("hostile_depth");
    let mut c = db.connect();
    let nested = |n: usize| format!("{}1{}", "{\"a\": ".repeat(n), "}".repeat(n));
    let record = |c: &mut Client, n: u32, metadata: &str| {
        c.query_one(
            "SELECT seq FROM authaudit.record_event(log_id => $1::text::uuid, tenant_id => 'acme', \
             event_type => 'login_failed', user_id => 'alice', channel => 'web', \
             metadata => $2::text::jsonb)",
            &[&format!("00000000-0000-4000-8000-{n:012x}"), &metadata],
        )
    };
    assert_eq!(record(&mut c, 1, &nested(64)).unwrap().get::<_, i64>(0), 1);
    for (n, depth) in [(2, 65), (3, 130), (4, 1000)] {
        let e = record(&mut c, n, &nested(depth)).unwrap_err();
        assert_eq!(sqlstate(&e).unwrap().code(), "22023", "{e}");
        assert!(
            e.as_db_error()
                .unwrap()
                .message()
                .contains(&format!("metadata nests {depth} levels deep")),
            "{e}"
        );
    }
    let array = format!("{{\"a\": {}1{}}}", "[".repeat(64), "]".repeat(64));
    assert_eq!(
        sqlstate(&record(&mut c, 5, &array).unwrap_err())
            .unwrap()
            .code(),
        "22023"
    );
    // The batch refuses it too, naming the limit.
    let batch = format!(
        r#"[{{"log_id": "00000000-0000-4000-8000-000000000009", "tenant_id": "acme",
             "event_type": "login_failed", "user_id": "bob", "channel": "web",
             "metadata": {}}}]"#,
        nested(65)
    );
    let e = c
        .execute(
            "SELECT count(*) FROM authaudit.record_events($1::text::jsonb)",
            &[&batch],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&e).unwrap().code(), "22023", "{e}");
    assert_eq!(gapless(&mut c, "acme"), 1);
}

#[test]
fn a_batch_value_its_type_refuses_names_the_event_and_the_field_and_writes_nothing() {
    let cluster = Cluster::shared();
    let db = cluster.fresh_db("batch_value_named");
    let mut c = db.connect();
    let now = "2026-01-01T00:00:00Z";
    c.batch_execute("SET authaudit.max_past_skew = '3650d'")
        .unwrap();
    for (field, value, state) in [
        ("ip", json!("999.1.1.1"), "22P02"),
        ("occurred_at", json!("yesterday-ish"), "22007"),
        ("log_id", json!("8888"), "22P02"),
    ] {
        let mut second = event(2, "login_failed", now);
        second[field] = value;
        let batch = json!([event(1, "login_failed", now), second]).to_string();
        let before = trace(&mut c);
        let err = c
            .execute(
                "SELECT count(*) FROM authaudit.record_events($1::text::jsonb)",
                &[&batch],
            )
            .unwrap_err();
        let db_err = err.as_db_error().expect("a database error");
        assert_eq!(db_err.code().code(), state, "{field}: {}", db_err.message());
        assert!(
            db_err.message().starts_with(&format!(
                "pg_authaudit: event 2 of the batch, field {field}: "
            )),
            "{field}: {}",
            db_err.message()
        );
        assert!(
            trace(&mut c) == before,
            "{field}: a refused batch left a trace"
        );
    }
}

#[test]
fn a_writers_malformed_tenant_or_organisation_is_bad_input_not_a_missing_binding() {
    let cluster = Cluster::shared();
    let db = cluster.fresh_db("writer_malformed_scope");
    let mut c = db.connect();
    let p = db.name().to_string();
    c.batch_execute(&format!(
        "CREATE ROLE {p}_w LOGIN IN ROLE authaudit_writer;
         INSERT INTO authaudit.tenant_scope (role_name, tenant_id, can_write) VALUES ('{p}_w', 'acme', true);"
    ))
    .unwrap();
    let mut w = db.connect_as(&format!("{p}_w"));
    for (tenant, org) in [("a b", None), ("", None), ("acme", Some("hq office"))] {
        let err = w
            .execute(
                "SELECT authaudit.record_event(gen_random_uuid(), $1, 'login_failed', 'alice', 'web', org_id => $2)",
                &[&tenant, &org],
            )
            .unwrap_err();
        assert_eq!(
            sqlstate(&err).map(|s| s.code().to_owned()),
            Some("22023".into()),
            "{tenant:?} {org:?}: {err}"
        );
        let batch = json!([{"log_id": "00000000-0000-4000-8000-000000000001", "tenant_id": tenant,
            "org_id": org, "event_type": "login_failed", "user_id": "alice", "channel": "web"}])
        .to_string();
        let err = w
            .execute(
                "SELECT count(*) FROM authaudit.record_events($1::text::jsonb)",
                &[&batch],
            )
            .unwrap_err();
        assert_eq!(
            sqlstate(&err).map(|s| s.code().to_owned()),
            Some("22023".into()),
            "batch {tenant:?} {org:?}: {err}"
        );
    }
    // A well-formed tenant the writer is not bound to stays a refusal of
    // the binding.
    let err = w
        .execute(
            "SELECT authaudit.record_event(gen_random_uuid(), 'other', 'login_failed', 'alice', 'web')",
            &[],
        )
        .unwrap_err();
    assert_eq!(
        sqlstate(&err).map(|s| s.code().to_owned()),
        Some("42501".into())
    );
    let rows: i64 = c
        .query_one("SELECT count(*) FROM authaudit.auth_log", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
}
