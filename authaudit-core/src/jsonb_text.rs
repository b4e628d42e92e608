//! The text PostgreSQL's `jsonb_out` writes for a value (the canonical
//! metadata text the chain hashes, docs/chain-format.md), computed without
//! PostgreSQL: object keys in jsonb's order (shorter first, then bytewise),
//! `", "` and `": "` between items, strings escaped as `escape_json` does.
//!
//! Only what the recording path needs: the extension's own facts (integers,
//! booleans, strings, nulls, arrays and objects of them) and one entry added
//! to an object whose text is canonical already. Anything else (a
//! fractional number, a top-level key with an escape) gives `None`, and the
//! caller asks PostgreSQL.

use serde_json::{Map, Value};
use std::cmp::Ordering;

/// jsonb's order of object keys: by length in bytes, then bytewise.
pub fn key_order(a: &str, b: &str) -> Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// The canonical text of `v`; `None` for a number that is not an integer.
pub fn value(v: &Value) -> Option<String> {
    let mut out = String::new();
    write(v, &mut out)?;
    Some(out)
}

fn write(v: &Value, out: &mut String) -> Option<()> {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => out.push_str(&i.to_string()),
            (None, Some(u)) => out.push_str(&u.to_string()),
            _ => return None,
        },
        Value::String(s) => string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => write_object(map, out)?,
    }
    Some(())
}

/// The canonical text of an object; `None` as for `value`.
pub fn object(map: &Map<String, Value>) -> Option<String> {
    let mut out = String::new();
    write_object(map, &mut out)?;
    Some(out)
}

fn write_object(map: &Map<String, Value>, out: &mut String) -> Option<()> {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| key_order(a.0, b.0));
    out.push('{');
    for (i, (k, item)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        string(k, out);
        out.push_str(": ");
        write(item, out)?;
    }
    out.push('}');
    Some(())
}

/// A JSON string as `escape_json` writes it.
fn string(s: &str, out: &mut String) {
    out.push('"');
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
}

/// The canonical text of `object` (the canonical text of a JSON object)
/// with one more entry, `key` (no escapes needed) with canonical text
/// `value`, in its place. `None` when `object` is not an object's text,
/// holds `key` already, or has a top-level key with an escape.
pub fn with_entry(object: &str, key: &str, value: &str) -> Option<String> {
    if key
        .chars()
        .any(|c| c == '"' || c == '\\' || (c as u32) < 0x20)
    {
        return None;
    }
    let b = object.as_bytes();
    if b.first() != Some(&b'{') || b.last() != Some(&b'}') {
        return None;
    }
    let entry = format!("\"{key}\": {value}");
    if object == "{}" {
        return Some(format!("{{{entry}}}"));
    }
    // Each top-level entry: where it starts, and its key.
    let mut at = 1;
    loop {
        if b.get(at) != Some(&b'"') {
            return None;
        }
        let start = at;
        let end = at + 1 + object[at + 1..].find('"')?;
        let k = &object[at + 1..end];
        if k.contains('\\') {
            return None;
        }
        match key_order(key, k) {
            Ordering::Equal => return None,
            Ordering::Less => {
                return Some(format!("{}{entry}, {}", &object[..start], &object[start..]));
            }
            Ordering::Greater => {}
        }
        if !object[end + 1..].starts_with(": ") {
            return None;
        }
        at = skip_value(b, end + 3)?;
        match b.get(at) {
            Some(b'}') if at == b.len() - 1 => {
                return Some(format!("{}, {entry}}}", &object[..at]));
            }
            Some(b',') if b.get(at + 1) == Some(&b' ') => at += 2,
            _ => return None,
        }
    }
}

/// The position just after the JSON value that starts at `at`.
fn skip_value(b: &[u8], mut at: usize) -> Option<usize> {
    let mut depth = 0usize;
    loop {
        match *b.get(at)? {
            b'"' => {
                at += 1;
                loop {
                    match *b.get(at)? {
                        b'\\' => at += 2,
                        b'"' => break,
                        _ => at += 1,
                    }
                }
                at += 1;
            }
            b'{' | b'[' => {
                depth += 1;
                at += 1;
            }
            b'}' | b']' if depth == 0 => return Some(at),
            b'}' | b']' => {
                depth -= 1;
                at += 1;
            }
            b',' if depth == 0 => return Some(at),
            _ => at += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_in_jsonb_order_shorter_first_then_bytewise() {
        let v = json!({"bb": 1, "a": 2, "ab": 3, "B": 4, "_x": 5});
        assert_eq!(
            value(&v).unwrap(),
            r#"{"B": 4, "a": 2, "_x": 5, "ab": 3, "bb": 1}"#
        );
    }

    #[test]
    fn values_are_written_as_jsonb_out_writes_them() {
        let v = json!({"n": null, "t": true, "f": false, "i": -42, "u": u64::MAX,
                       "a": [1, [], {}, "x"], "o": {"k": "v"}});
        assert_eq!(
            value(&v).unwrap(),
            format!(
                r#"{{"a": [1, [], {{}}, "x"], "f": false, "i": -42, "n": null, "o": {{"k": "v"}}, "t": true, "u": {}}}"#,
                u64::MAX
            )
        );
    }

    #[test]
    fn strings_are_escaped_as_escape_json_does() {
        let v = json!("q\" b\\ \u{8}\u{c}\n\r\t \u{1} \u{1f} \u{7f} é 😀 /");
        assert_eq!(
            value(&v).unwrap(),
            "\"q\\\" b\\\\ \\b\\f\\n\\r\\t \\u0001 \\u001f \u{7f} é 😀 /\""
        );
    }

    #[test]
    fn a_fractional_number_is_left_to_postgresql() {
        assert_eq!(value(&json!({"x": 0.5})), None);
    }

    #[test]
    fn an_entry_goes_where_jsonb_puts_its_key() {
        let facts = r#"{"x": 1}"#;
        assert_eq!(
            with_entry("{}", "_authaudit", facts).unwrap(),
            r#"{"_authaudit": {"x": 1}}"#
        );
        assert_eq!(
            with_entry(r#"{"reason": "bad_password"}"#, "_authaudit", facts).unwrap(),
            r#"{"reason": "bad_password", "_authaudit": {"x": 1}}"#
        );
        assert_eq!(
            with_entry(
                r#"{"a": [1, {"b": "}, ]"}], "zzzzzzzzzzz": 2}"#,
                "_authaudit",
                facts
            )
            .unwrap(),
            r#"{"a": [1, {"b": "}, ]"}], "_authaudit": {"x": 1}, "zzzzzzzzzzz": 2}"#
        );
        assert_eq!(
            with_entry(
                r#"{"Zauthaudit": 1, "aauthaudit": {"q": "\"x\""}}"#,
                "_authaudit",
                "0"
            )
            .unwrap(),
            r#"{"Zauthaudit": 1, "_authaudit": 0, "aauthaudit": {"q": "\"x\""}}"#
        );
    }

    #[test]
    fn an_entry_that_cannot_be_placed_with_certainty_is_refused() {
        assert_eq!(with_entry(r#"{"_authaudit": 1}"#, "_authaudit", "2"), None);
        assert_eq!(with_entry(r#"{"a\"b": 1}"#, "_authaudit", "2"), None);
        assert_eq!(with_entry("[1]", "_authaudit", "2"), None);
        assert_eq!(with_entry(r#"{"a":1}"#, "_authaudit", "2"), None);
    }
}
