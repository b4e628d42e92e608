//! JSON read exactly: numbers as their text, whatever their size or scale;
//! any depth, without recursion; strings unescaped only when asked.
//!
//! A general-purpose decoder refuses what PostgreSQL's jsonb holds without
//! complaint (`1e400` does not fit an `f64`, nesting stops at 128 levels),
//! so the mirror, the SIEM encoder and the detections read jsonb's text
//! with this reader instead:
//!
//! - [`Reader`]: a pull parser yielding [`Event`]s, with an explicit stack;
//! - [`text_at`]: `#>>` (and `->>`) of PostgreSQL, from the text;
//! - [`canonical`]: the text jsonb writes for any JSON text (`'…'::jsonb::text`):
//!   keys in jsonb's order with the last of duplicates kept, `", "` and
//!   `": "` between items, numbers as `numeric` writes them, strings
//!   escaped as `escape_json` does.

use crate::jsonb_text::key_order;
use crate::numeric::{self, NumericError};
use std::borrow::Cow;

/// Why a text is not JSON PostgreSQL accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("invalid JSON at byte {0}: unexpected end")]
    End(usize),
    #[error("invalid JSON at byte {0}: unexpected character")]
    Unexpected(usize),
    #[error("invalid JSON at byte {0}: bad escape sequence")]
    Escape(usize),
    #[error("invalid JSON at byte {0}: a control character must be escaped")]
    Control(usize),
    #[error("invalid JSON at byte {0}: text after the value")]
    Trailing(usize),
    /// `\u0000`, which jsonb refuses (the reader itself takes it).
    #[error("invalid JSON at byte {0}: \\u0000 cannot be held by jsonb")]
    Nul(usize),
    #[error("invalid JSON number: {0}")]
    Number(#[from] NumericError),
}

/// One step of a JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    ObjectStart,
    ObjectEnd,
    ArrayStart,
    ArrayEnd,
    /// An object member's key, unescaped.
    Key(Cow<'a, str>),
    Null,
    Bool(bool),
    /// A number's token as written (see `numeric::canonical`).
    Number(&'a str),
    /// A string, unescaped.
    String(Cow<'a, str>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Value,
    ValueOrArrayEnd,
    KeyOrObjectEnd,
    Key,
    CommaOrEnd,
    Done,
}

/// A pull parser over one JSON text. Containers are kept on a stack of
/// one byte each, so depth costs no recursion.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    text: &'a str,
    at: usize,
    /// `true` for an object, `false` for an array.
    stack: Vec<bool>,
    expect: Expect,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl<'a> Reader<'a> {
    pub fn new(text: &'a str) -> Reader<'a> {
        Reader {
            text,
            at: 0,
            stack: Vec::new(),
            expect: Expect::Value,
        }
    }

    /// Containers open around the reader's position.
    pub fn depth(&self) -> usize {
        self.stack.len()
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn skip_space(&mut self) {
        while self.bytes().get(self.at).copied().is_some_and(is_space) {
            self.at += 1;
        }
    }

    fn peek(&self) -> Result<u8, JsonError> {
        self.bytes()
            .get(self.at)
            .copied()
            .ok_or(JsonError::End(self.at))
    }

    /// The position just after the next value's leading white space.
    fn value_start(&mut self) -> usize {
        self.skip_space();
        self.at
    }

    /// The next step; `None` once the text's one value has ended.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Event<'a>>, JsonError> {
        loop {
            self.skip_space();
            match self.expect {
                Expect::Done => {
                    return match self.at == self.text.len() {
                        true => Ok(None),
                        false => Err(JsonError::Trailing(self.at)),
                    };
                }
                Expect::Value => return self.value().map(Some),
                Expect::ValueOrArrayEnd => {
                    if self.peek()? == b']' {
                        return Ok(Some(self.close(Event::ArrayEnd)));
                    }
                    return self.value().map(Some);
                }
                Expect::KeyOrObjectEnd | Expect::Key => {
                    let c = self.peek()?;
                    if c == b'}' && self.expect == Expect::KeyOrObjectEnd {
                        return Ok(Some(self.close(Event::ObjectEnd)));
                    }
                    if c != b'"' {
                        return Err(JsonError::Unexpected(self.at));
                    }
                    let key = self.string()?;
                    self.skip_space();
                    if self.peek()? != b':' {
                        return Err(JsonError::Unexpected(self.at));
                    }
                    self.at += 1;
                    self.expect = Expect::Value;
                    return Ok(Some(Event::Key(key)));
                }
                Expect::CommaOrEnd => {
                    let object = *self.stack.last().expect("inside a container");
                    match (self.peek()?, object) {
                        (b',', true) => {
                            self.at += 1;
                            self.expect = Expect::Key;
                        }
                        (b',', false) => {
                            self.at += 1;
                            self.expect = Expect::Value;
                        }
                        (b'}', true) => return Ok(Some(self.close(Event::ObjectEnd))),
                        (b']', false) => return Ok(Some(self.close(Event::ArrayEnd))),
                        _ => return Err(JsonError::Unexpected(self.at)),
                    }
                }
            }
        }
    }

    fn close(&mut self, e: Event<'a>) -> Event<'a> {
        self.at += 1;
        self.stack.pop();
        self.after_value();
        e
    }

    fn after_value(&mut self) {
        self.expect = if self.stack.is_empty() {
            Expect::Done
        } else {
            Expect::CommaOrEnd
        };
    }

    fn value(&mut self) -> Result<Event<'a>, JsonError> {
        let e = match self.peek()? {
            b'{' => {
                self.at += 1;
                self.stack.push(true);
                self.expect = Expect::KeyOrObjectEnd;
                return Ok(Event::ObjectStart);
            }
            b'[' => {
                self.at += 1;
                self.stack.push(false);
                self.expect = Expect::ValueOrArrayEnd;
                return Ok(Event::ArrayStart);
            }
            b'"' => Event::String(self.string()?),
            b't' => self.literal("true", Event::Bool(true))?,
            b'f' => self.literal("false", Event::Bool(false))?,
            b'n' => self.literal("null", Event::Null)?,
            b'-' | b'0'..=b'9' => Event::Number(self.number()?),
            _ => return Err(JsonError::Unexpected(self.at)),
        };
        self.after_value();
        Ok(e)
    }

    fn literal(&mut self, word: &str, e: Event<'a>) -> Result<Event<'a>, JsonError> {
        if self.text[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(e)
        } else {
            Err(JsonError::Unexpected(self.at))
        }
    }

    /// A number token (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`).
    fn number(&mut self) -> Result<&'a str, JsonError> {
        let start = self.at;
        let b = self.bytes();
        let mut at = start;
        while b
            .get(at)
            .is_some_and(|c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E'))
        {
            at += 1;
        }
        let token = &self.text[start..at];
        // The grammar is checked by the numeric module's splitter.
        if !numeric::is_canonical(token) {
            match numeric::canonical(token) {
                Ok(_) | Err(NumericError::Exponent(_) | NumericError::Overflow(_)) => {}
                Err(NumericError::Syntax(_)) => return Err(JsonError::Unexpected(start)),
            }
        }
        self.at = at;
        Ok(token)
    }

    /// A string at `"`, unescaped (borrowed when it has no escape).
    fn string(&mut self) -> Result<Cow<'a, str>, JsonError> {
        let b = self.bytes();
        let start = self.at + 1;
        let mut at = start;
        loop {
            match b.get(at) {
                None => return Err(JsonError::End(at)),
                Some(b'"') => {
                    self.at = at + 1;
                    return Ok(Cow::Borrowed(&self.text[start..at]));
                }
                Some(b'\\') => break,
                Some(c) if *c < 0x20 => return Err(JsonError::Control(at)),
                Some(_) => at += 1,
            }
        }
        let mut out = String::from(&self.text[start..at]);
        loop {
            match b.get(at) {
                None => return Err(JsonError::End(at)),
                Some(b'"') => {
                    self.at = at + 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    let c = match b.get(at + 1) {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            let (c, len) = self.unicode_escape(at)?;
                            out.push(c);
                            at += len;
                            continue;
                        }
                        _ => return Err(JsonError::Escape(at)),
                    };
                    out.push(c);
                    at += 2;
                }
                Some(c) if *c < 0x20 => return Err(JsonError::Control(at)),
                Some(_) => {
                    // Copy up to the next quote or backslash in one piece.
                    let end = b[at..]
                        .iter()
                        .position(|c| matches!(c, b'"' | b'\\') || *c < 0x20)
                        .map_or(b.len(), |n| at + n);
                    out.push_str(&self.text[at..end]);
                    at = end;
                }
            }
        }
    }

    /// The character of the `\uXXXX` escape at `at` (a surrogate pair
    /// takes two escapes) and the bytes it spans.
    fn unicode_escape(&self, at: usize) -> Result<(char, usize), JsonError> {
        let hex = |from: usize| -> Option<u32> {
            let h = self.text.get(from..from + 4)?;
            if !h.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            u32::from_str_radix(h, 16).ok()
        };
        let first = hex(at + 2).ok_or(JsonError::Escape(at))?;
        match first {
            0xD800..=0xDBFF => {
                if self.text.get(at + 6..at + 8) != Some("\\u") {
                    return Err(JsonError::Escape(at));
                }
                let second = hex(at + 8).ok_or(JsonError::Escape(at))?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(JsonError::Escape(at));
                }
                let c = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                Ok((char::from_u32(c).ok_or(JsonError::Escape(at))?, 12))
            }
            0xDC00..=0xDFFF => Err(JsonError::Escape(at)),
            c => Ok((char::from_u32(c).ok_or(JsonError::Escape(at))?, 6)),
        }
    }

    /// Reads the next value whole (an array's next element, an object
    /// member's value); returns where it starts and ends in the text.
    pub fn skip_value(&mut self) -> Result<(usize, usize), JsonError> {
        self.skip_space();
        if self.expect == Expect::CommaOrEnd
            && self.stack.last() == Some(&false)
            && self.peek()? == b','
        {
            self.at += 1;
            self.expect = Expect::Value;
        }
        let start = self.value_start();
        let depth = self.depth();
        match self.next()?.ok_or(JsonError::End(self.at))? {
            Event::ObjectStart | Event::ArrayStart => {}
            Event::ObjectEnd | Event::ArrayEnd | Event::Key(_) => {
                return Err(JsonError::Unexpected(start))
            }
            _ => return Ok((start, self.at)),
        }
        while self.depth() > depth {
            self.next()?.ok_or(JsonError::End(self.at))?;
        }
        Ok((start, self.at))
    }
}

/// The nesting depth of a JSON text: 0 for a scalar, 1 for `{}` or `[1]`.
pub fn depth(text: &str) -> Result<usize, JsonError> {
    let mut r = Reader::new(text);
    let mut most = 0;
    while r.next()?.is_some() {
        most = most.max(r.depth());
    }
    Ok(most)
}

/// The span of the value `key` leads to in `container`: an object's
/// member (the last of that name, as jsonb keeps one), or an array's
/// element by index (negative from the end), as `#>` takes a path step.
fn step<'a>(container: &'a str, key: &str) -> Result<Option<&'a str>, JsonError> {
    let mut r = Reader::new(container);
    match r.next()? {
        Some(Event::ObjectStart) => {
            let mut found = None;
            loop {
                match r.next()? {
                    Some(Event::Key(k)) => {
                        let (start, end) = r.skip_value()?;
                        if k == key {
                            found = Some(&container[start..end]);
                        }
                    }
                    Some(Event::ObjectEnd) => return Ok(found),
                    _ => return Err(JsonError::Unexpected(r.at)),
                }
            }
        }
        Some(Event::ArrayStart) => {
            // strtoint's syntax: leading white space, a sign, digits.
            let Ok(index) = key
                .trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c'])
                .parse::<i32>()
            else {
                return Ok(None);
            };
            let mut spans = Vec::new();
            let mut probe = r.clone();
            while probe.next()? != Some(Event::ArrayEnd) {
                spans.push(r.skip_value()?);
                probe = r.clone();
            }
            let at = if index >= 0 {
                usize::try_from(index).ok()
            } else {
                spans.len().checked_sub(index.unsigned_abs() as usize)
            };
            Ok(at
                .and_then(|i| spans.get(i))
                .map(|(start, end)| &container[*start..*end]))
        }
        _ => Ok(None),
    }
}

/// `json #>> path` of PostgreSQL (`->>` for one step): the value at `path`
/// (object keys, array indexes) as text: a string unescaped, `null` as
/// `None`, any other value as jsonb's text of it. `None` when the path
/// leads nowhere.
pub fn text_at<'a>(json: &'a str, path: &[&str]) -> Result<Option<Cow<'a, str>>, JsonError> {
    let mut at = json.trim_matches(|c: char| c.is_ascii() && is_space(c as u8));
    for key in path {
        match step(at, key)? {
            Some(v) => at = v,
            None => return Ok(None),
        }
    }
    let mut r = Reader::new(at);
    Ok(match r.next()? {
        None => None,
        Some(Event::Null) => None,
        Some(Event::String(s)) => Some(s),
        Some(Event::Bool(b)) => Some(Cow::Borrowed(if b { "true" } else { "false" })),
        Some(Event::Number(n)) => Some(numeric::canonical(n)?),
        Some(_) => {
            let text = canonical(at)?;
            Some(if text == at {
                Cow::Borrowed(at)
            } else {
                Cow::Owned(text)
            })
        }
    })
}

/// One open container while [`canonical`] writes.
enum Frame {
    /// An object written from `start` (just after its `{`): its members
    /// as (key, start, end) in the output, and the one being written.
    Object {
        start: usize,
        members: Vec<(String, usize, usize)>,
        open: Option<(String, usize)>,
    },
    Array {
        first: bool,
    },
}

/// The text jsonb writes for the JSON text `json` (what
/// `json::jsonb::text` returns in PostgreSQL). Written into one buffer; an
/// object's members are reordered only if they are not in jsonb's order
/// already, so jsonb's own text costs one pass at any depth.
pub fn canonical(json: &str) -> Result<String, JsonError> {
    let mut r = Reader::new(json);
    let mut stack: Vec<Frame> = Vec::new();
    let mut out = String::with_capacity(json.len());
    let mut any = false;
    while let Some(e) = r.next()? {
        let at = r.at;
        // A value begins: separated from the previous one of its array.
        if !matches!(e, Event::Key(_) | Event::ObjectEnd | Event::ArrayEnd) {
            any = true;
            if let Some(Frame::Array { first }) = stack.last_mut() {
                if !std::mem::take(first) {
                    out.push_str(", ");
                }
            }
        }
        match e {
            Event::ObjectStart => {
                out.push('{');
                stack.push(Frame::Object {
                    start: out.len(),
                    members: Vec::new(),
                    open: None,
                });
            }
            Event::ArrayStart => {
                out.push('[');
                stack.push(Frame::Array { first: true });
            }
            Event::Key(k) => {
                if k.contains('\0') {
                    return Err(JsonError::Nul(at));
                }
                let Some(Frame::Object { members, open, .. }) = stack.last_mut() else {
                    unreachable!("keys are read inside objects")
                };
                if let Some((key, from)) = open.take() {
                    members.push((key, from, out.len()));
                }
                if !members.is_empty() {
                    out.push_str(", ");
                }
                let from = out.len();
                escape_into(&k, &mut out);
                out.push_str(": ");
                *open = Some((k.into_owned(), from));
            }
            Event::ObjectEnd => {
                let Some(Frame::Object {
                    start,
                    mut members,
                    open,
                }) = stack.pop()
                else {
                    unreachable!("the reader pairs containers")
                };
                if let Some((key, from)) = open {
                    members.push((key, from, out.len()));
                }
                let ordered = members
                    .windows(2)
                    .all(|w| key_order(&w[0].0, &w[1].0).is_lt());
                if !ordered {
                    // Stable: of equal keys the last written stays last.
                    members.sort_by(|a, b| key_order(&a.0, &b.0));
                    let mut body = String::with_capacity(out.len() - start);
                    for (i, (k, from, to)) in members.iter().enumerate() {
                        if members.get(i + 1).is_some_and(|next| next.0 == *k) {
                            continue;
                        }
                        if !body.is_empty() {
                            body.push_str(", ");
                        }
                        body.push_str(&out[*from..*to]);
                    }
                    out.truncate(start);
                    out.push_str(&body);
                }
                out.push('}');
            }
            Event::ArrayEnd => {
                stack.pop();
                out.push(']');
            }
            Event::Null => out.push_str("null"),
            Event::Bool(b) => out.push_str(if b { "true" } else { "false" }),
            Event::Number(n) => out.push_str(&numeric::canonical(n)?),
            Event::String(s) => {
                if s.contains('\0') {
                    return Err(JsonError::Nul(at));
                }
                escape_into(&s, &mut out);
            }
        }
    }
    if !any {
        return Err(JsonError::End(json.len()));
    }
    Ok(out)
}

/// A JSON string as `escape_json` writes it.
pub fn escape_into(s: &str, out: &mut String) {
    out.push('"');
    let mut from = 0;
    for (i, c) in s.char_indices() {
        let esc: &str = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\u{8}' => "\\b",
            '\u{c}' => "\\f",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        out.push_str(&s[from..i]);
        if esc.is_empty() {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push_str(esc);
        }
        from = i + c.len_utf8();
    }
    out.push_str(&s[from..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(text: &str) -> Vec<Event<'_>> {
        let mut r = Reader::new(text);
        let mut out = Vec::new();
        while let Some(e) = r.next().unwrap() {
            out.push(e);
        }
        out
    }

    #[test]
    fn numbers_are_read_as_written_whatever_their_size() {
        let text = r#"{"n": 1e400, "f": 1.50, "big": 1234567890123456789012345678901234567890}"#;
        let e = events(text);
        assert_eq!(e[2], Event::Number("1e400"));
        assert_eq!(e[4], Event::Number("1.50"));
        assert_eq!(
            e[6],
            Event::Number("1234567890123456789012345678901234567890")
        );
    }

    #[test]
    fn deep_nesting_reads_without_recursion() {
        let n = 100_000;
        let text = "[".repeat(n) + "{\"a\": 1}" + &"]".repeat(n);
        assert_eq!(depth(&text).unwrap(), n + 1);
        assert_eq!(canonical(&text).unwrap(), text);
        let objects = "{\"a\": ".repeat(n) + "null" + &"}".repeat(n);
        assert_eq!(depth(&objects).unwrap(), n);
        assert_eq!(canonical(&objects).unwrap(), objects);
        // Each step of a path reads what is left: a long path is slower.
        let n = 1000;
        let objects = "{\"a\": ".repeat(n) + "null" + &"}".repeat(n);
        let path: Vec<&str> = vec!["a"; n - 1];
        assert_eq!(text_at(&objects, &path).unwrap().unwrap(), "{\"a\": null}");
    }

    #[test]
    fn strings_are_unescaped_and_surrogate_pairs_joined() {
        let e = events(r#"["a\"b\\c\/d\b\f\n\r\t", "\u00e9\ud83d\ude00", "plain é"]"#);
        assert_eq!(
            e[1],
            Event::String("a\"b\\c/d\u{8}\u{c}\n\r\t".to_string().into())
        );
        assert_eq!(e[2], Event::String("é😀".to_string().into()));
        assert!(matches!(&e[3], Event::String(Cow::Borrowed("plain é"))));
    }

    #[test]
    fn invalid_json_is_refused_with_its_place() {
        for (bad, err) in [
            ("", JsonError::End(0)),
            ("{", JsonError::End(1)),
            ("{\"a\" 1}", JsonError::Unexpected(5)),
            ("[1,]", JsonError::Unexpected(3)),
            ("[1 2]", JsonError::Unexpected(3)),
            ("{\"a\": 1,}", JsonError::Unexpected(8)),
            ("\"a\nb\"", JsonError::Control(2)),
            ("\"\\x\"", JsonError::Escape(1)),
            ("\"\\ud800\"", JsonError::Escape(1)),
            ("\"\\udc00\"", JsonError::Escape(1)),
            ("01", JsonError::Unexpected(0)),
            ("1 2", JsonError::Trailing(2)),
            ("tru", JsonError::Unexpected(0)),
            ("{1: 2}", JsonError::Unexpected(1)),
        ] {
            let mut r = Reader::new(bad);
            let got = loop {
                match r.next() {
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("{bad:?} was read"),
                    Err(e) => break e,
                }
            };
            assert_eq!(got, err, "{bad:?}");
        }
    }

    #[test]
    fn text_at_is_postgresqls_arrow_operators() {
        let m = r#"{"reason": {"b": [1, 2.50], "a": true}, "s": "x\"y", "n": null, "i": 1e2, "t": true, "z": 1.50}"#;
        assert_eq!(
            text_at(m, &["reason"]).unwrap().unwrap(),
            r#"{"a": true, "b": [1, 2.50]}"#
        );
        assert_eq!(text_at(m, &["s"]).unwrap().unwrap(), "x\"y");
        assert_eq!(text_at(m, &["n"]).unwrap(), None);
        assert_eq!(text_at(m, &["i"]).unwrap().unwrap(), "100");
        assert_eq!(text_at(m, &["t"]).unwrap().unwrap(), "true");
        assert_eq!(text_at(m, &["z"]).unwrap().unwrap(), "1.50");
        assert_eq!(text_at(m, &["reason", "a"]).unwrap().unwrap(), "true");
        assert_eq!(text_at(m, &["reason", "b"]).unwrap().unwrap(), "[1, 2.50]");
        assert_eq!(text_at(m, &["reason", "b", "0"]).unwrap().unwrap(), "1");
        assert_eq!(text_at(m, &["reason", "b", "-1"]).unwrap().unwrap(), "2.50");
        assert_eq!(text_at(m, &["reason", "b", "2"]).unwrap(), None);
        assert_eq!(text_at(m, &["reason", "b", "-3"]).unwrap(), None);
        assert_eq!(text_at(m, &["reason", "b", "x"]).unwrap(), None);
        assert_eq!(text_at(m, &["missing"]).unwrap(), None);
        assert_eq!(text_at(m, &["s", "x"]).unwrap(), None);
        assert_eq!(text_at("[1]", &["a"]).unwrap(), None);
        assert_eq!(text_at("[]", &["0"]).unwrap(), None);
        // Of duplicate keys, jsonb keeps the last.
        assert_eq!(
            text_at(r#"{"a": 1, "a": 2}"#, &["a"]).unwrap().unwrap(),
            "2"
        );
        assert!(matches!(
            text_at(m, &["reason", "b"]).unwrap().unwrap(),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn canonical_is_the_text_jsonb_writes() {
        for (input, jsonb) in [
            (r#"{"b":1,"a":2}"#, r#"{"a": 2, "b": 1}"#),
            (r#"{"bb":1,"a":2,"c":3}"#, r#"{"a": 2, "c": 3, "bb": 1}"#),
            (r#"{"a":1,"a":2}"#, r#"{"a": 2}"#),
            (
                r#" [ 1 , -0 , 1.50 , 1e2 , "\u0041" ] "#,
                r#"[1, 0, 1.50, 100, "A"]"#,
            ),
            (
                r#"{"$x":{},"a.b":[],"":null}"#,
                r#"{"": null, "$x": {}, "a.b": []}"#,
            ),
            (r#""\u001f\u007f\u2028/""#, "\"\\u001f\u{7f}\u{2028}/\""),
            ("true", "true"),
        ] {
            assert_eq!(canonical(input).unwrap(), jsonb, "{input}");
            assert_eq!(canonical(jsonb).unwrap(), jsonb, "a fixed point");
        }
        assert!(matches!(
            canonical(r#"{"a\u0000": 1}"#),
            Err(JsonError::Nul(_))
        ));
        assert!(matches!(canonical("1e1001"), Err(JsonError::Number(_))));
    }
}
