//! Hostile metadata through the mirror, the witness and the SIEM: every
//! JSON shape PostgreSQL's jsonb accepts (numbers of any size and scale,
//! `1e400`, `-0`, trailing zeros, keys such as `$x`, `a.b` and `""`,
//! unicode escapes, nesting to the extension's limit of 64 and, written by
//! a superuser around the extension, to 130 and 1,000 levels, and 17 MiB
//! of metadata), recorded before the slot (the initial copy) and after it
//! (the stream), plus values from a fixed-seed generator. Every row is
//! mirrored (exactly, or in the documented fallback form), `verify` finds
//! the stores identical, `witness-check` agrees, and the SIEM receives
//! `to_cef`'s bytes for every row, which `verify_cef` accepts.

use crate::siem::{check_lines, external_id, siem_mirror, wait_all};
use crate::support::Rng;
use authaudit_core::canonical::{encode_body, Record};
use authaudit_core::chain::ChainHead;
use authaudit_core::exact_json::{canonical, escape_into};
use authaudit_core::numeric::Exact;
use authaudit_tests::mirror::{sidecar_bin, Store};
use authaudit_tests::recording::{self, Event};
use authaudit_tests::{Cluster, Rsyslog, TestDb};
use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

/// Metadata the extension records as it is (at most 64 levels, 8 KiB).
fn recorded_values() -> Vec<String> {
    let nested =
        |n: usize, open: &str, close: &str| format!("{}1{}", open.repeat(n), close.repeat(n));
    let mut v: Vec<String> = [
        r#"{"reason": 1.50, "n": 1e400, "tiny": 1e-400, "z": -0, "zz": 0.00, "neg": -1.50e-3}"#,
        r#"{"reason": 12345678901234567890123, "big": 1234567890123456789012345678901234567890}"#,
        r#"{"reason": {"b": [1, 2.50], "a": {"$x": null, "a.b": true, "": false}}}"#,
        r#"{"reason": [1, "x", {"k": 1e2}]}"#,
        r#"{"reason": true}"#,
        r#"{"reason": null, "other": "x"}"#,
        r#"{"reason": "tab\there=\\ \u00e9 \ud83d\ude00 \u2028 | CEF:0|"}"#,
        r#"{"$date": {"$numberLong": "5"}, "a.b.c": 1, "": "", "k\"ey": "\u0001"}"#,
        r#"{"reason": 9223372036854775808, "i64": -9223372036854775808}"#,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(format!("{{\"deep\": {}}}", nested(63, "{\"a\": ", "}")));
    v.push(format!("{{\"arrays\": {}}}", nested(63, "[", "]")));
    // A scale past Decimal128's exponents: no BSON number holds it.
    v.push(format!("{{\"reason\": 0.{}1}}", "0".repeat(6200)));
    v
}

/// Generated values (`support::Rng`: the same on every run).
impl Rng {
    /// A JSON value of any type, up to `depth` levels deep, numbers of any
    /// width and exponent.
    fn wide_json(&mut self, depth: usize) -> String {
        const KEYS: &[&str] = &["", "$x", "a.b", "a", "reason", "é", "\\u0000x", "_x", "0"];
        const STRINGS: &[&str] = &[
            "",
            "a=b",
            "\\n\\r\\t",
            "\\ud83d\\ude00",
            "\\u00e9|\\\\",
            " ",
        ];
        match self.index(if depth == 0 { 6 } else { 8 }) {
            0 => "null".into(),
            1 => ["true", "false"][self.index(2)].into(),
            2 => {
                let digits: String = (0..1 + self.index(45))
                    .map(|i| char::from(b'1' + (self.index(9) as u8) * u8::from(i == 0)))
                    .collect();
                let frac = "0".repeat(self.index(4));
                let sign = ["", "-"][self.index(2)];
                match self.index(4) {
                    0 => format!("{sign}{digits}"),
                    1 => format!("{sign}{digits}.{frac}5"),
                    2 => format!("{sign}{digits}e{}", self.index(500)),
                    _ => format!("{sign}0.{frac}{digits}E-{}", self.index(40)),
                }
            }
            3 | 4 => format!("\"{}\"", STRINGS[self.index(STRINGS.len())]),
            5 => format!("{}", self.next() as i64),
            6 => {
                let n = self.index(4);
                let items: Vec<String> = (0..n).map(|_| self.wide_json(depth - 1)).collect();
                format!("[{}]", items.join(", "))
            }
            _ => {
                let n = self.index(4);
                let items: Vec<String> = (0..n)
                    .map(|_| {
                        let k = KEYS[self.index(KEYS.len())];
                        format!("\"{k}\": {}", self.wide_json(depth - 1))
                    })
                    .collect();
                format!("{{{}}}", items.join(", "))
            }
        }
    }
}

/// Generated metadata objects, each with a reason of any type.
fn generated_values(n: usize) -> Vec<String> {
    let mut rng = Rng(0x5EED_CAFE_F00D_0001);
    (0..n)
        .map(|_| {
            format!(
                "{{\"reason\": {}, \"x\": {}}}",
                rng.wide_json(3),
                rng.wide_json(4)
            )
        })
        .collect()
}

/// Records `metadata` as a failure of tenant `tenant-h1`; `None` when the
/// extension refuses it (a key it refuses, `\u0000` in a string).
fn record(db: &TestDb, n: u32, metadata: &str) -> Option<i64> {
    let e = Event::failed("tenant-h1", "alice")
        .log_id(&format!("00000000-0000-4000-8000-{n:012x}"))
        .ip("198.51.100.7")
        .metadata_text(metadata);
    recording::try_record(&mut db.connect(), &e)
        .ok()
        .map(|s| s.seq)
}

/// A superuser's rows around the extension (triggers off) in tenant
/// `tenant-h2`, each continuing the tenant's chain with digests computed
/// by the published algorithm over jsonb's text of its metadata.
struct Insider {
    head: ChainHead,
    seq: i64,
}

impl Insider {
    fn new() -> Insider {
        Insider {
            head: ChainHead::genesis("tenant-h2"),
            seq: 0,
        }
    }

    fn insert(&mut self, db: &TestDb, metadata: &str) {
        self.seq += 1;
        let text = canonical(metadata).unwrap();
        let id: [u8; 16] =
            (0x0000_0000_0000_4000_a000_0000_0000_0000_u128 + self.seq as u128).to_be_bytes();
        let at_us = 1_767_225_600_000_000 + self.seq * 1000;
        let body = encode_body(&Record {
            log_id: id,
            tenant_id: "tenant-h2",
            org_id: None,
            event_type: "login_failed",
            user_id: "mallory",
            ip: Some("198.51.100.66".parse().unwrap()),
            user_agent: None,
            channel: "web",
            occurred_at_us: at_us,
            recorded_at_us: at_us,
            metadata: &text,
        });
        let next = self.head.next(self.seq, &body);
        let mut c = db.connect();
        let mut tx = c.transaction().unwrap();
        tx.batch_execute("SET LOCAL session_replication_role = replica")
            .unwrap();
        tx.execute(
            "INSERT INTO authaudit.auth_log (log_id, tenant_id, seq, event_type, user_id, ip, channel, \
               occurred_at, recorded_at, metadata, format_version, prev_link, link_sha256, digest_sha512, \
               digest_sha3_256) \
             VALUES ($1::text::uuid, 'tenant-h2', $2, 'login_failed', 'mallory', '198.51.100.66', 'web', \
               'epoch'::timestamptz + $3::int8 * interval '1 microsecond', \
               'epoch'::timestamptz + $3::int8 * interval '1 microsecond', \
               $4::text::jsonb, 1, $5, $6, $7, $8)",
            &[
                &uuid_text(id),
                &self.seq,
                &at_us,
                &metadata,
                &self.head.sha256.as_slice(),
                &next.sha256.as_slice(),
                &next.sha512.as_slice(),
                &next.sha3_256.as_slice(),
            ],
        )
        .unwrap();
        // jsonb's own text is the one the digests were computed over.
        let stored: String = tx
            .query_one(
                "SELECT metadata::text FROM authaudit.auth_log WHERE tenant_id = 'tenant-h2' AND seq = $1",
                &[&self.seq],
            )
            .unwrap()
            .get(0);
        assert!(
            stored == text,
            "canonical differs from jsonb_out for {metadata:.80}"
        );
        tx.commit().unwrap();
        self.head = next;
    }
}

fn uuid_text(id: [u8; 16]) -> String {
    let h = hex::encode(id);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// jsonb's text of a stored metadata value: Int64 and Decimal128 through
/// their exact text, members in stored order (jsonb's).
fn jsonb_of(b: bson::RawBsonRef<'_>) -> String {
    use bson::RawBsonRef as B;
    let string = |s: &str| {
        let mut out = String::new();
        escape_into(s, &mut out);
        out
    };
    match b {
        B::Null => "null".into(),
        B::Boolean(x) => x.to_string(),
        B::Int64(i) => i.to_string(),
        B::Decimal128(d) => Exact::Decimal128(d.bytes()).text().unwrap(),
        B::String(s) => string(s),
        B::Array(a) => format!(
            "[{}]",
            a.into_iter()
                .map(|v| jsonb_of(v.unwrap()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        B::Document(d) => format!(
            "{{{}}}",
            d.into_iter()
                .map(|e| {
                    let (k, v) = e.unwrap();
                    format!("{}: {}", string(k), jsonb_of(v))
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => panic!("a metadata value of another BSON type: {other:?}"),
    }
}

/// Metadata as the sidecar of release 0.8.0 embedded it: integers within
/// 64 bits as Int64, every other number as a Double.
fn release_0_8_metadata(v: &serde_json::Value) -> bson::RawBson {
    use serde_json::Value as J;
    match v {
        J::Null => bson::RawBson::Null,
        J::Bool(b) => bson::RawBson::Boolean(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => bson::RawBson::Int64(i),
            None => bson::RawBson::Double(n.as_f64().unwrap()),
        },
        J::String(s) => bson::RawBson::String(s.clone()),
        J::Array(a) => {
            let mut out = bson::RawArrayBuf::new();
            a.iter().for_each(|x| out.push(release_0_8_metadata(x)));
            bson::RawBson::Array(out)
        }
        J::Object(m) => {
            let mut out = bson::RawDocumentBuf::new();
            m.iter()
                .for_each(|(k, x)| out.append(k, release_0_8_metadata(x)));
            bson::RawBson::Document(out)
        }
    }
}

#[test]
fn hostile_metadata_is_mirrored_exactly_verified_witnessed_and_sent_as_to_cef() {
    let db = Cluster::shared().fresh_db_with_lockout("mirror_hostile");
    let store = Store::new("hostile");
    let rs = Rsyslog::start("hostile");
    let dir = std::env::temp_dir().join(format!("authaudit-hostile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("witness.key");
    let out = Command::new(sidecar_bin())
        .args(["witness-keygen", "--out"])
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let public = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    // Before the slot: the initial copy takes these.
    let recorded = recorded_values();
    let generated = generated_values(80);
    let mut n = 0;
    let mut accepted = 0;
    for m in recorded.iter().take(6) {
        n += 1;
        assert!(record(&db, n, m).is_some(), "refused: {m:.80}");
    }
    let mut insider = Insider::new();
    insider.insert(
        &db,
        &format!("{}1{}", "{\"a\": ".repeat(130), "}".repeat(130)),
    );
    // 17 MiB: past the store's document limit even as text alone.
    let huge = format!("{{\"big\": \"{}\"}}", "x€".repeat(17 << 18));
    insider.insert(&db, &huge);

    let mut m = siem_mirror(&db, &store, format!("relp://127.0.0.1:{}", rs.relp_port));
    m.env.extend([
        (
            "AUTHAUDIT_WITNESS_KEY_FILE".to_string(),
            key_file.display().to_string(),
        ),
        ("AUTHAUDIT_WITNESS_EVERY".into(), "5".into()),
        ("AUTHAUDIT_WITNESS_INTERVAL_MS".into(), "300".into()),
    ]);
    m.start();
    m.wait_streaming();

    // Streamed: the rest, the generated values and two more insider rows.
    for v in recorded.iter().skip(6) {
        n += 1;
        assert!(record(&db, n, v).is_some(), "refused: {v:.80}");
    }
    for v in &generated {
        n += 1;
        accepted += usize::from(record(&db, n, v).is_some());
    }
    assert!(accepted > 60, "only {accepted} generated values recorded");
    insider.insert(
        &db,
        &format!("{{\"x\": {}1{}}}", "[".repeat(1000), "]".repeat(1000)),
    );
    insider.insert(
        &db,
        r#"{"reason": 1234567890123456789012345678901234567890, "n": 1e400}"#,
    );
    let mut c = db.connect();
    let ok: bool = c
        .query_one("SELECT ok FROM authaudit.verify_chain('tenant-h2')", &[])
        .unwrap()
        .get(0);
    assert!(ok, "the insider's chain verifies in PostgreSQL");

    let text = m.wait_identical(Duration::from_secs(120));
    assert!(text.contains("identical"), "{text}");
    assert_eq!(m.metric("authaudit_sidecar_chain_gaps_total"), 0.0);

    // Every document: its metadata exactly, or the fallback form.
    let rows: HashMap<(String, i64), String> = c
        .query(
            "SELECT tenant_id, seq, metadata::text FROM authaudit.auth_log",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    let docs = store.raw_documents("auth_log", bson::doc! {"tenant_id": 1, "seq": 1});
    assert_eq!(docs.len(), rows.len());
    let mut fallbacks: HashMap<String, usize> = HashMap::new();
    for d in &docs {
        let key = (
            d.get_str("tenant_id").unwrap().to_string(),
            d.get_i64("seq").unwrap(),
        );
        let text = &rows[&key];
        let metadata = d.get("metadata").unwrap().unwrap();
        match d.get_str("metadata_fallback") {
            Ok(reason) => {
                *fallbacks.entry(reason.to_string()).or_default() += 1;
                assert_eq!(metadata, bson::RawBsonRef::Null, "{key:?}");
            }
            Err(_) => {
                assert_eq!(&jsonb_of(metadata), text, "{key:?}");
                assert_eq!(d.get_str("metadata_text").unwrap(), text, "{key:?}");
            }
        }
    }
    // 40 significant digits and a scale of 6,201 (twice each: recorded and
    // generated values may add more), nesting of 130 and 1,000, 17 MiB.
    assert!(
        fallbacks.get("number").copied().unwrap_or(0) >= 3,
        "{fallbacks:?}"
    );
    assert_eq!(fallbacks.get("depth"), Some(&2), "{fallbacks:?}");
    assert_eq!(fallbacks.get("size"), Some(&1), "{fallbacks:?}");
    let parted = docs
        .iter()
        .find(|d| d.get_str("metadata_fallback").ok() == Some("size"))
        .unwrap();
    assert_eq!(
        parted.get("metadata_text").unwrap(),
        Some(bson::RawBsonRef::Null)
    );
    assert!(store.count("auth_log_parts") >= 5);
    for (reason, count) in &fallbacks {
        let sample = format!("authaudit_sidecar_fallback_rows_total{{reason=\"{reason}\"}}");
        assert!(m.metric(&sample) >= *count as f64, "{sample}");
    }

    // A document as a sidecar before 0.9.0 wrote it (the integer beyond
    // 64 bits as a Double) is noted, not a difference, and rewritten.
    let earlier = docs
        .iter()
        .find(|d| {
            d.get_str("metadata_text")
                .is_ok_and(|t| t.contains(r#""reason": 9223372036854775808"#))
        })
        .unwrap();
    let mut rounded = bson::RawDocumentBuf::new();
    for (k, v) in earlier.iter().map(Result::unwrap) {
        if k == "metadata" {
            let text = earlier.get_str("metadata_text").unwrap();
            rounded.append(
                k,
                release_0_8_metadata(&serde_json::from_str(text).unwrap()),
            );
        } else {
            rounded.append(k, v.to_raw_bson());
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        mongodb::Client::with_uri_str(&store.uri)
            .await
            .unwrap()
            .database(&store.database)
            .collection::<bson::RawDocumentBuf>("auth_log")
            .replace_one(
                bson::doc! {"_id": earlier.get_str("_id").unwrap()},
                &rounded,
            )
            .await
            .unwrap();
    });
    let (code, text) = m.verify();
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("tenant tenant-h1: 1 log documents hold their metadata numbers as releases before 0.9.0"), "{text}");
    let out = m
        .command()
        .args(["verify", "--rewrite-earlier-numbers"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("1 log documents rewritten"), "{text}");
    let (code, text) = m.verify();
    assert!(code == 0 && !text.contains("note:"), "{text}");

    // The SIEM has to_cef's bytes for every row, and verify_cef agrees.
    let lines = wait_all(&rs, "relp", &db, Duration::from_secs(60));
    assert_eq!(check_lines(&db, &lines), 0);
    for l in &lines {
        let ok: Option<bool> = c
            .query_one("SELECT authaudit.verify_cef($1)", &[l])
            .unwrap()
            .get(0);
        assert_eq!(ok, Some(true), "verify_cef refuses {:?}", external_id(l));
    }
    assert!(lines.iter().any(|l| l.contains(" reason=1.50 ")));
    assert!(lines
        .iter()
        .any(|l| l.contains(" reason=1234567890123456789012345678901234567890 ")));

    // The witness signed both tenants' heads, and PostgreSQL agrees.
    let heads: Vec<(String, i64)> = c
        .query(
            "SELECT tenant_id, max(seq) FROM authaudit.auth_log GROUP BY tenant_id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let signed = store.documents("witness_checkpoints", bson::doc! {});
        let at_head = heads.iter().all(|(t, h)| {
            signed.iter().any(|d| {
                d.get_str("tenant_id").ok() == Some(t.as_str())
                    && d.get_i64("tree_size").ok() == Some(*h)
            })
        });
        if at_head {
            break;
        }
        assert!(Instant::now() < deadline, "no checkpoints at the heads");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = m
        .command()
        .args(["witness-check", "--public-key", &public])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("2 tenants agree"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
