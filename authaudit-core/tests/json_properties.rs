//! Property tests of the exact JSON reader, the numeric forms and the CEF
//! rendering of metadata values, over JSON generated from a fixed seed:
//! every JSON type and shape jsonb accepts (unicode escapes, huge
//! integers, `1e400`, `-0`, fractions with trailing zeros, odd keys such
//! as `$x`, `a.b` and `""`, duplicate keys, nesting past 100 levels),
//! written in many equivalent ways. The expected texts are computed from
//! the generated model by rules written here, independently of the code
//! under test (jsonb's key order, `numeric_out`, `escape_json`).

use authaudit_core::cef::{self, CefEvent, MetadataFields};
use authaudit_core::exact_json::{canonical, depth, text_at, Reader};
use authaudit_core::numeric::Exact;

/// xorshift64*: the same cases on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// A JSON value as jsonb holds it.
#[derive(Debug, Clone)]
enum V {
    Null,
    Bool(bool),
    /// `digits` × 10^-`scale`: the unscaled integer without leading zeros.
    Num {
        negative: bool,
        digits: String,
        scale: usize,
    },
    Str(String),
    Arr(Vec<V>),
    /// Members as written, duplicates included (jsonb keeps the last).
    Obj(Vec<(String, V)>),
}

const CHARS: &[char] = &[
    'a', 'b', 'Z', ' ', '"', '\\', '/', '\n', '\r', '\t', '\u{8}', '\u{c}', '\u{1}', '\u{1f}',
    '\u{7f}', 'é', 'ß', '€', '\u{2028}', '\u{feff}', '😀', '𝄞', '=', '|', '$', '.',
];
const KEYS: &[&str] = &[
    "",
    "$x",
    "a.b",
    "a",
    "b",
    "aa",
    "reason",
    "_authaudit",
    "$date",
    "é",
    "\u{1}",
    "a\"b",
    "10",
    "0",
];

fn string(rng: &mut Rng) -> String {
    let n = rng.below(8);
    (0..n).map(|_| CHARS[rng.below(CHARS.len())]).collect()
}

fn number(rng: &mut Rng) -> V {
    let (digits, scale) = match rng.below(6) {
        0 => ("0".to_string(), rng.below(4)),
        1 => ("1".to_string() + &"0".repeat(400), 0),
        2 => {
            // Up to 45 significant digits, around the Decimal128 limit.
            let n = 1 + rng.below(45);
            let d: String = (0..n)
                .map(|i| char::from(b'0' + (rng.below(9) + usize::from(i == 0)) as u8))
                .collect();
            (d, rng.below(n + 3))
        }
        3 => {
            let d = (1 + rng.below(999)).to_string() + &"0".repeat(rng.below(30));
            (d, rng.below(6))
        }
        4 => (i64::MAX.to_string(), 0),
        _ => ((rng.next() % 100_000).to_string(), rng.below(3)),
    };
    V::Num {
        negative: rng.chance(40),
        digits,
        scale,
    }
}

fn value(rng: &mut Rng, depth: usize) -> V {
    let leaf = depth > 6 || rng.chance(45);
    if leaf {
        return match rng.below(5) {
            0 => V::Null,
            1 => V::Bool(rng.chance(50)),
            2 | 3 => number(rng),
            _ => V::Str(string(rng)),
        };
    }
    let n = rng.below(5);
    if rng.chance(50) {
        V::Arr((0..n).map(|_| value(rng, depth + 1)).collect())
    } else {
        V::Obj(
            (0..n)
                .map(|_| {
                    let k = if rng.chance(70) {
                        KEYS[rng.below(KEYS.len())].to_string()
                    } else {
                        string(rng)
                    };
                    (k, value(rng, depth + 1))
                })
                .collect(),
        )
    }
}

/// A chain of `n` containers around `inner`.
fn deep(rng: &mut Rng, n: usize, inner: V) -> V {
    (0..n).fold(inner, |v, _| {
        if rng.chance(50) {
            V::Arr(vec![v])
        } else {
            V::Obj(vec![(KEYS[rng.below(KEYS.len())].to_string(), v)])
        }
    })
}

/// jsonb's key order: by length in bytes, then bytewise.
fn jsonb_order(a: &str, b: &str) -> std::cmp::Ordering {
    (a.len(), a.as_bytes()).cmp(&(b.len(), b.as_bytes()))
}

/// An object's members as jsonb keeps them: the last of each key, sorted.
fn members(m: &[(String, V)]) -> Vec<(String, V)> {
    let mut out: Vec<(String, V)> = Vec::new();
    for (k, v) in m {
        out.retain(|(k2, _)| k2 != k);
        out.push((k.clone(), v.clone()));
    }
    out.sort_by(|a, b| jsonb_order(&a.0, &b.0));
    out
}

fn escape_json(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `numeric_out` of digits × 10^-scale.
fn numeric_text(negative: bool, digits: &str, scale: usize) -> String {
    let padded = if digits.len() <= scale {
        "0".repeat(scale + 1 - digits.len()) + digits
    } else {
        digits.to_string()
    };
    let (i, f) = padded.split_at(padded.len() - scale);
    let zero = digits.bytes().all(|b| b == b'0');
    let mut out = String::new();
    if negative && !zero {
        out.push('-');
    }
    out.push_str(i);
    if scale > 0 {
        out.push('.');
        out.push_str(f);
    }
    out
}

/// The text jsonb writes for `v`.
fn jsonb(v: &V) -> String {
    match v {
        V::Null => "null".into(),
        V::Bool(b) => b.to_string(),
        V::Num {
            negative,
            digits,
            scale,
        } => numeric_text(*negative, digits, *scale),
        V::Str(s) => escape_json(s),
        V::Arr(a) => format!("[{}]", a.iter().map(jsonb).collect::<Vec<_>>().join(", ")),
        V::Obj(m) => format!(
            "{{{}}}",
            members(m)
                .iter()
                .map(|(k, v)| format!("{}: {}", escape_json(k), jsonb(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `->>`'s text of `v`.
fn arrow_text(v: &V) -> Option<String> {
    match v {
        V::Null => None,
        V::Str(s) => Some(s.clone()),
        other => Some(jsonb(other)),
    }
}

/// White space, in the ways JSON allows it.
fn space(rng: &mut Rng) -> &'static str {
    [" ", "", "", "\n", "\t ", "\r\n"][rng.below(6)]
}

/// A string written with escapes chosen at random.
fn write_string(rng: &mut Rng, s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        let must = matches!(c, '"' | '\\') || (c as u32) < 0x20;
        if must || rng.chance(25) {
            match c {
                '"' if rng.chance(50) => out.push_str("\\\""),
                '\\' if rng.chance(50) => out.push_str("\\\\"),
                '/' if rng.chance(50) => out.push_str("\\/"),
                '\n' if rng.chance(50) => out.push_str("\\n"),
                '\t' if rng.chance(50) => out.push_str("\\t"),
                c => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        if rng.chance(50) {
                            out.push_str(&format!("\\u{u:04x}"));
                        } else {
                            out.push_str(&format!("\\u{u:04X}"));
                        }
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out.push('"');
    out
}

/// A number written in one of the JSON forms `numeric_in` reads as it.
fn write_number(rng: &mut Rng, negative: bool, digits: &str, scale: usize) -> String {
    let sign = if negative { "-" } else { "" };
    let form = rng.below(4);
    // An exponent e with the mantissa's own scale s + e keeps scale s.
    if form == 1 {
        let e = rng.below(4) as i64 - rng.below(scale + 1).min(3) as i64;
        let ms = (scale as i64 + e) as usize;
        let m = numeric_text(false, digits, ms);
        let mark = ["e", "E", "e+", "E+"][rng.below(4)];
        return match e {
            0 if rng.chance(50) => format!("{sign}{m}"),
            e if e < 0 => format!("{sign}{m}{}{}", ["e", "E"][rng.below(2)], e),
            e => format!("{sign}{m}{mark}{e}"),
        };
    }
    // An integer's trailing zeros as an exponent.
    if form == 2 && scale == 0 && digits != "0" {
        let zeros = digits.len() - digits.trim_end_matches('0').len();
        let k = rng.below(zeros + 1);
        let m = &digits[..digits.len() - k];
        return if k == 0 {
            format!("{sign}{m}")
        } else {
            format!("{sign}{m}e{k}")
        };
    }
    format!("{sign}{}", numeric_text(false, digits, scale))
}

/// `v` written as JSON with white space, escapes and number forms chosen
/// at random (duplicate keys kept as generated).
fn write(rng: &mut Rng, v: &V) -> String {
    match v {
        V::Null => "null".into(),
        V::Bool(b) => b.to_string(),
        V::Num {
            negative,
            digits,
            scale,
        } => write_number(rng, *negative, digits, *scale),
        V::Str(s) => write_string(rng, s),
        V::Arr(a) => {
            let items: Vec<String> = a
                .iter()
                .map(|x| format!("{}{}{}", space(rng), write(rng, x), space(rng)))
                .collect();
            format!("[{}{}]", items.join(","), space(rng))
        }
        V::Obj(m) => {
            let items: Vec<String> = m
                .iter()
                .map(|(k, x)| {
                    format!(
                        "{}{}{}:{}{}",
                        space(rng),
                        write_string(rng, k),
                        space(rng),
                        space(rng),
                        write(rng, x)
                    )
                })
                .collect();
            format!("{{{}{}}}", items.join(","), space(rng))
        }
    }
}

fn model_depth(v: &V) -> usize {
    match v {
        V::Arr(a) => 1 + a.iter().map(model_depth).max().unwrap_or(0),
        V::Obj(m) => {
            1 + members(m)
                .iter()
                .map(|(_, v)| model_depth(v))
                .max()
                .unwrap_or(0)
        }
        _ => 0,
    }
}

/// Every path to a value of `v` (object keys, array indexes), with the value.
fn paths(v: &V, prefix: &mut Vec<String>, out: &mut Vec<(Vec<String>, V)>) {
    out.push((prefix.clone(), v.clone()));
    if out.len() > 200 {
        return;
    }
    match v {
        V::Arr(a) => {
            for (i, x) in a.iter().enumerate() {
                prefix.push(i.to_string());
                paths(x, prefix, out);
                prefix.pop();
            }
        }
        V::Obj(m) => {
            for (k, x) in members(m) {
                prefix.push(k);
                paths(&x, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn numbers(v: &V, out: &mut Vec<(bool, String, usize)>) {
    match v {
        V::Num {
            negative,
            digits,
            scale,
        } => out.push((*negative, digits.clone(), *scale)),
        V::Arr(a) => a.iter().for_each(|x| numbers(x, out)),
        V::Obj(m) => m.iter().for_each(|(_, x)| numbers(x, out)),
        _ => {}
    }
}

fn cases() -> Vec<V> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out: Vec<V> = (0..1500).map(|_| value(&mut rng, 0)).collect();
    for n in [64, 99, 100, 101, 130, 500] {
        let inner = value(&mut rng, 0);
        out.push(deep(&mut rng, n, inner));
    }
    out
}

#[test]
fn any_json_text_becomes_jsonbs_text() {
    let mut rng = Rng(17);
    for v in cases() {
        let want = jsonb(&v);
        for _ in 0..3 {
            let written = write(&mut rng, &v);
            assert_eq!(canonical(&written).unwrap(), want, "{written}");
        }
        assert_eq!(canonical(&want).unwrap(), want, "a fixed point");
        assert_eq!(depth(&want).unwrap(), model_depth(&v), "{want}");
    }
}

#[test]
fn every_path_reads_as_postgresqls_hash_arrow_arrow() {
    for v in cases() {
        let text = jsonb(&v);
        let mut all = Vec::new();
        paths(&v, &mut Vec::new(), &mut all);
        for (path, sub) in all.into_iter().take(60) {
            let p: Vec<&str> = path.iter().map(String::as_str).collect();
            let got = text_at(&text, &p).unwrap().map(|c| c.into_owned());
            assert_eq!(got, arrow_text(&sub), "{text} #>> {path:?}");
        }
        // A step past a scalar, or to a missing key, leads nowhere.
        assert_eq!(text_at(&text, &["no such key", "x"]).unwrap(), None);
    }
}

#[test]
fn every_number_keeps_its_text_through_its_exact_form() {
    let mut checked = (0, 0);
    for v in cases() {
        let mut ns = Vec::new();
        numbers(&v, &mut ns);
        for (negative, digits, scale) in ns {
            let text = numeric_text(negative, &digits, scale);
            let significant = digits.trim_end_matches('0').len().max(1);
            // A fraction keeps every digit; an integer drops its trailing
            // zeros into the exponent.
            let width = if scale > 0 {
                digits.trim_start_matches('0').len()
            } else {
                significant
            };
            match Exact::of(&text) {
                Some(e) => {
                    assert_eq!(e.text().as_deref(), Some(text.as_str()));
                    checked.0 += 1;
                }
                None => {
                    assert!(width > 34, "{text} has an exact form");
                    checked.1 += 1;
                }
            }
        }
    }
    assert!(checked.0 > 1000 && checked.1 > 50, "{checked:?}");
}

#[test]
fn broken_json_is_refused_never_a_panic() {
    let mut rng = Rng(99);
    for v in cases().iter().take(400) {
        let text = write(&mut rng, v);
        for cut in [1, 2, text.len() / 2] {
            let Some(head) = text.get(..text.len().saturating_sub(cut)) else {
                continue;
            };
            let mut r = Reader::new(head);
            let mut ok = true;
            loop {
                match r.next() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => {
                        ok = false;
                        break;
                    }
                }
            }
            // A cut text is rarely still one JSON value (`12` from `123`).
            if ok {
                assert!(canonical(head).is_ok(), "{head}");
            }
        }
    }
}

/// The reference line of the CEF specification's escaping for the reason
/// value: the encoder must write the same bytes for every metadata.
#[test]
fn a_reason_of_any_json_type_renders_as_to_cef_renders_it() {
    for v in cases().into_iter().take(600) {
        let metadata = jsonb(&V::Obj(vec![("reason".into(), v.clone())]));
        let fields = MetadataFields::read(&metadata);
        let want = arrow_text(&v);
        assert_eq!(fields.reason.as_deref(), want.as_deref(), "{metadata}");
        let e = CefEvent {
            event_type: "login_failed",
            user_id: "alice",
            ip: None,
            user_agent: None,
            occurred_at_ms: 0,
            log_id: "00000000-0000-4000-8000-000000000001",
            tenant_id: "acme",
            org_id: None,
            channel: "web",
            seq: 1,
            link_sha256_hex: "ab",
            reason: fields.reason.as_deref(),
            preceding_failures: None,
            was_locked: None,
            token_fingerprint: None,
            imported_at_ms: None,
        };
        let line = cef::line(&e, "0.9.0");
        match want {
            Some(r) => {
                let escaped = r
                    .replace('\\', "\\\\")
                    .replace('=', "\\=")
                    .replace('\n', "\\n")
                    .replace('\r', "\\r");
                assert!(
                    line.contains(&format!(" reason={escaped} externalId=")),
                    "{line}"
                );
            }
            None => assert!(!line.contains(" reason="), "{line}"),
        }
    }
}
