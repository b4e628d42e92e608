//! ArcSight Common Event Format (CEF) version 0 lines for SIEMs.
//!
//! `CEF:0|Vendor|Product|Version|Signature ID|Name|Severity|Extension`, with
//! the header escaping (`\` and `|`) and the extension escaping (`\`, `=`,
//! newline as `\n`, carriage return as `\r`) of the CEF specification. The
//! field mapping is documented in `docs/cef.md`.

use crate::exact_json::text_at;
use std::borrow::Cow;
use std::fmt::Write;
use std::net::IpAddr;

/// Vendor and product in every header.
pub const VENDOR: &str = "pg_authaudit";
pub const PRODUCT: &str = "pg_authaudit";

/// One recorded event, as the exporter sees it.
#[derive(Debug, Clone, Copy)]
pub struct CefEvent<'a> {
    pub event_type: &'a str,
    pub user_id: &'a str,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<&'a str>,
    /// Milliseconds since the Unix epoch.
    pub occurred_at_ms: i64,
    pub log_id: &'a str,
    pub tenant_id: &'a str,
    pub org_id: Option<&'a str>,
    pub channel: &'a str,
    pub seq: i64,
    /// Lowercase hex of `link_sha256`.
    pub link_sha256_hex: &'a str,
    /// The caller's `metadata.reason`, if any.
    pub reason: Option<&'a str>,
    /// For `login_success`: failures that preceded it.
    pub preceding_failures: Option<i32>,
    /// For `login_success`: whether the account was locked at that moment.
    pub was_locked: Option<bool>,
    /// For `token_issued`: the SHA-256 fingerprint of the token, hex.
    pub token_fingerprint: Option<&'a str>,
    /// For an event recorded by `import_events`: when it was recorded
    /// (milliseconds since the Unix epoch); `rt` stays the event's time.
    pub imported_at_ms: Option<i64>,
}

/// The fields `authaudit.to_cef` takes from a row's metadata
/// (`sql/cef.sql`), read the same way from jsonb's text, so that every
/// encoder of a row writes the same bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataFields<'a> {
    /// `metadata ->> 'reason'`: a string unescaped, any other value as
    /// jsonb writes it (`1.50`, `{"a": 1}`, `true`), `null` as none.
    pub reason: Option<Cow<'a, str>>,
    /// `(metadata #>> '{_authaudit,lockout,preceding_failures}')::integer`.
    pub preceding_failures: Option<i32>,
    /// `(metadata #>> '{_authaudit,lockout,was_locked}')::boolean`.
    pub was_locked: Option<bool>,
    /// `metadata #>> '{_authaudit,token,fingerprint_sha256}'`.
    pub token_fingerprint: Option<Cow<'a, str>>,
    /// `metadata #>> '{_authaudit,imported}' = 'true'`.
    pub imported: bool,
}

impl<'a> MetadataFields<'a> {
    /// The fields of a row's metadata, from jsonb's text. A value the SQL
    /// cast would refuse (`'abc'::integer`, where `to_cef` fails) is none;
    /// a text that is not JSON gives no fields.
    pub fn read(metadata: &'a str) -> MetadataFields<'a> {
        let at = |path: &[&str]| text_at(metadata, path).ok().flatten();
        MetadataFields {
            reason: at(&["reason"]),
            preceding_failures: at(&["_authaudit", "lockout", "preceding_failures"])
                .and_then(|t| pg_int4(&t)),
            was_locked: at(&["_authaudit", "lockout", "was_locked"]).and_then(|t| pg_bool(&t)),
            token_fingerprint: at(&["_authaudit", "token", "fingerprint_sha256"]),
            imported: at(&["_authaudit", "imported"]).as_deref() == Some("true"),
        }
    }
}

/// C's `isspace` in the C locale.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\u{b}' | '\u{c}' | '\r')
}

/// A text cast to `integer` as PostgreSQL 15's `int4in` does: white space
/// around, an optional sign, decimal digits; `None` where it raises an error.
pub fn pg_int4(text: &str) -> Option<i32> {
    let t = text.trim_matches(is_c_space);
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.strip_prefix('+').unwrap_or(t).parse().ok()
}

/// A text cast to `boolean` as PostgreSQL's `boolin` does: white space
/// around, then any prefix of `true`, `false`, `yes`, `no` (`on` and `off`
/// from two letters), or `1` and `0`, in any case.
pub fn pg_bool(text: &str) -> Option<bool> {
    let t = text.trim_matches(is_c_space).to_ascii_lowercase();
    let prefix_of = |word: &str, min: usize| t.len() >= min && word.starts_with(t.as_str());
    match t.as_bytes().first()? {
        b't' if prefix_of("true", 1) => Some(true),
        b'f' if prefix_of("false", 1) => Some(false),
        b'y' if prefix_of("yes", 1) => Some(true),
        b'n' if prefix_of("no", 1) => Some(false),
        b'o' if prefix_of("on", 2) => Some(true),
        b'o' if prefix_of("off", 2) => Some(false),
        b'1' if t == "1" => Some(true),
        b'0' if t == "0" => Some(false),
        _ => None,
    }
}

/// Signature id, name and severity (0–10) of an event.
pub fn classify(e: &CefEvent<'_>) -> (&'static str, &'static str, u8) {
    match e.event_type {
        "login_success" if e.was_locked == Some(true) => ("100", "Login succeeded while locked", 9),
        "login_success" if e.preceding_failures.unwrap_or(0) > 0 => {
            ("100", "Login succeeded after failures", 7)
        }
        "login_success" => ("100", "Login succeeded", 1),
        "login_failed" => ("101", "Login failed", 3),
        "account_locked" => ("102", "Account locked", 6),
        "lockout_reset" => ("103", "Lockout reset", 4),
        "token_issued" => ("104", "Session token issued", 1),
        "retention_applied" => ("105", "Log retention applied", 5),
        "lockout_rebuilt" => ("106", "Lockout state rebuilt", 4),
        _ => ("199", "Authentication event", 3),
    }
}

/// Escapes a header field: backslash and pipe.
pub fn escape_header(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_header(&mut out, s);
    out
}

fn push_header(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
}

/// Escapes an extension value: backslash, equals sign, newline, carriage return.
pub fn escape_extension(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_extension(&mut out, s);
    out
}

fn push_extension(out: &mut String, s: &str) {
    // Most values need no escape: copied whole.
    if !s.bytes().any(|b| matches!(b, b'\\' | b'=' | b'\n' | b'\r')) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// The extension fields of one line, written in order into one string.
struct Extension<'o> {
    out: &'o mut String,
    first: bool,
}

impl Extension<'_> {
    /// A field whose value is escaped.
    fn text(&mut self, key: &str, value: &str) {
        self.key(key);
        push_extension(self.out, value);
    }

    /// A field whose value needs no escape (numbers, addresses, the
    /// extension's own labels).
    fn plain(&mut self, key: &str, value: impl std::fmt::Display) {
        self.key(key);
        let _ = write!(self.out, "{value}");
    }

    fn key(&mut self, key: &str) {
        if !std::mem::take(&mut self.first) {
            self.out.push(' ');
        }
        self.out.push_str(key);
        self.out.push('=');
    }
}

/// The CEF line of one event (no trailing newline).
pub fn line(e: &CefEvent<'_>, version: &str) -> String {
    let (sig, name, severity) = classify(e);
    let mut out = String::with_capacity(512);
    out.push_str("CEF:0|");
    for field in [VENDOR, PRODUCT, version] {
        push_header(&mut out, field);
        out.push('|');
    }
    out.push_str(sig);
    out.push('|');
    push_header(&mut out, name);
    let _ = write!(out, "|{severity}|");
    let mut x = Extension {
        out: &mut out,
        first: true,
    };
    x.plain("rt", e.occurred_at_ms);
    x.text("duser", e.user_id);
    match e.ip {
        Some(IpAddr::V4(v4)) => x.plain("src", v4),
        Some(IpAddr::V6(v6)) => {
            x.plain("c6a2", v6);
            x.plain("c6a2Label", "Source IPv6 Address");
        }
        None => {}
    }
    if let Some(ua) = e.user_agent {
        x.text("requestClientApplication", ua);
    }
    let outcome = match e.event_type {
        "login_failed" => "failure",
        "login_success" | "token_issued" | "lockout_reset" | "account_locked"
        | "retention_applied" | "lockout_rebuilt" => "success",
        _ => "unknown",
    };
    x.plain("outcome", outcome);
    x.text("act", e.event_type);
    x.plain("cat", "/Authentication");
    if let Some(reason) = e.reason {
        x.text("reason", reason);
    }
    x.text("externalId", e.log_id);
    x.text("cs1", e.tenant_id);
    x.plain("cs1Label", "tenant");
    if let Some(org) = e.org_id {
        x.text("cs2", org);
        x.plain("cs2Label", "organisation");
    }
    x.text("cs3", e.channel);
    x.plain("cs3Label", "channel");
    x.text("cs4", e.link_sha256_hex);
    x.plain("cs4Label", "chainLinkSha256");
    if let Some(fp) = e.token_fingerprint {
        x.text("cs5", fp);
        x.plain("cs5Label", "tokenFingerprintSha256");
    }
    if let Some(n) = e.preceding_failures {
        x.plain("cs6", n);
        x.plain("cs6Label", "precedingFailures");
    }
    x.plain("cn1", e.seq);
    x.plain("cn1Label", "chainSeq");
    if let Some(at) = e.imported_at_ms {
        x.plain("deviceCustomDate1", at);
        x.plain("deviceCustomDate1Label", "importedAt");
    }
    out
}

/// The CEF line of a campaign alert (`detection.rs`): its rule's signature
/// id (201–206), name and severity, the tenant, the accounts and sources
/// it names, and the window and chain positions of its evidence.
pub fn alert_line(a: &crate::detection::Alert, version: &str) -> String {
    let (sig, name, severity) = a.rule.cef();
    let mut out = String::with_capacity(512);
    out.push_str("CEF:0|");
    for field in [VENDOR, PRODUCT, version] {
        push_header(&mut out, field);
        out.push('|');
    }
    out.push_str(sig);
    out.push('|');
    push_header(&mut out, name);
    let _ = write!(out, "|{severity}|");
    let mut x = Extension {
        out: &mut out,
        first: true,
    };
    x.plain("rt", a.last_ms);
    x.plain("start", a.first_ms);
    x.plain("end", a.last_ms);
    x.text("act", a.rule.as_str());
    x.plain("cat", "/Authentication/Campaign");
    x.text("externalId", &a.id());
    x.text("cs1", &a.tenant);
    x.plain("cs1Label", "tenant");
    x.text("duser", &a.accounts.join(","));
    if let [one] = a.sources.as_slice() {
        match one.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => x.plain("src", v4),
            Ok(IpAddr::V6(v6)) => {
                x.plain("c6a2", v6);
                x.plain("c6a2Label", "Source IPv6 Address");
            }
            Err(_) => {}
        }
    }
    x.text("cs2", &a.sources.join(","));
    x.plain("cs2Label", "sources");
    x.plain("cn1", a.first_seq);
    x.plain("cn1Label", "firstSeq");
    x.plain("cn2", a.last_seq);
    x.plain("cn2Label", "lastSeq");
    x.plain("cn3", a.events);
    x.plain("cn3Label", "events");
    x.plain("cs3", a.account_count);
    x.plain("cs3Label", "accountCount");
    x.plain("cs4", a.source_count);
    x.plain("cs4Label", "sourceCount");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> CefEvent<'static> {
        CefEvent {
            event_type: "login_failed",
            user_id: "alice",
            ip: Some("198.51.100.7".parse().unwrap()),
            user_agent: Some("curl/8.0"),
            occurred_at_ms: 1_767_225_600_000,
            log_id: "00000000-0000-4000-8000-000000000001",
            tenant_id: "acme",
            org_id: Some("hq"),
            channel: "web",
            seq: 42,
            link_sha256_hex: "ab",
            reason: Some("bad_password"),
            preceding_failures: None,
            was_locked: None,
            token_fingerprint: None,
            imported_at_ms: None,
        }
    }

    #[test]
    fn a_plain_line() {
        assert_eq!(
            line(&event(), "0.1.0"),
            "CEF:0|pg_authaudit|pg_authaudit|0.1.0|101|Login failed|3|rt=1767225600000 duser=alice \
             src=198.51.100.7 requestClientApplication=curl/8.0 outcome=failure act=login_failed \
             cat=/Authentication reason=bad_password externalId=00000000-0000-4000-8000-000000000001 \
             cs1=acme cs1Label=tenant cs2=hq cs2Label=organisation cs3=web cs3Label=channel cs4=ab \
             cs4Label=chainLinkSha256 cn1=42 cn1Label=chainSeq"
        );
    }

    #[test]
    fn hostile_values_are_escaped() {
        let e = CefEvent {
            user_id: "a=b\\c|d",
            user_agent: Some("x\ny\rz CEF:0|evil|x|1|2|3|10| src=6.6.6.6"),
            ..event()
        };
        let l = line(&e, "0.1.0");
        assert!(l.contains("duser=a\\=b\\\\c|d "), "{l}");
        assert!(
            l.contains("requestClientApplication=x\\ny\\rz CEF:0|evil|x|1|2|3|10| src\\=6.6.6.6 "),
            "{l}"
        );
        assert_eq!(l.matches(" src=").count(), 1);
        assert!(!l.contains('\n') && !l.contains('\r'));
    }

    #[test]
    fn ipv6_goes_to_c6a2_and_signals_raise_severity() {
        let e = CefEvent {
            event_type: "login_success",
            ip: Some("2001:db8::1".parse().unwrap()),
            preceding_failures: Some(4),
            was_locked: Some(false),
            ..event()
        };
        let l = line(&e, "0.1.0");
        assert!(l.contains("|100|Login succeeded after failures|7|"), "{l}");
        assert!(
            l.contains("c6a2=2001:db8::1 c6a2Label=Source IPv6 Address"),
            "{l}"
        );
        let locked = CefEvent {
            was_locked: Some(true),
            ..e
        };
        assert!(line(&locked, "0.1.0").contains("|Login succeeded while locked|9|"));
    }

    #[test]
    fn an_imported_event_keeps_its_time_in_rt_and_says_when_it_was_imported() {
        let e = CefEvent {
            imported_at_ms: Some(1_767_300_000_000),
            ..event()
        };
        let l = line(&e, "0.1.0");
        assert!(l.contains("|rt=1767225600000 "), "{l}");
        assert!(
            l.ends_with(" cn1=42 cn1Label=chainSeq deviceCustomDate1=1767300000000 deviceCustomDate1Label=importedAt"),
            "{l}"
        );
    }

    #[test]
    fn header_fields_escape_pipes_and_backslashes() {
        assert_eq!(escape_header("a|b\\c"), "a\\|b\\\\c");
    }

    /// The line as a list of escaped fields, the encoder's first form: the
    /// one-string encoder must write the same bytes.
    fn reference_line(e: &CefEvent<'_>, version: &str) -> String {
        let (sig, name, severity) = classify(e);
        let mut out = format!(
            "CEF:0|{}|{}|{}|{}|{}|{}|",
            escape_header(VENDOR),
            escape_header(PRODUCT),
            escape_header(version),
            sig,
            escape_header(name),
            severity
        );
        let mut ext: Vec<(&str, String)> = vec![
            ("rt", e.occurred_at_ms.to_string()),
            ("duser", e.user_id.to_string()),
        ];
        match e.ip {
            Some(IpAddr::V4(v4)) => ext.push(("src", v4.to_string())),
            Some(IpAddr::V6(v6)) => {
                ext.push(("c6a2", v6.to_string()));
                ext.push(("c6a2Label", "Source IPv6 Address".into()));
            }
            None => {}
        }
        if let Some(ua) = e.user_agent {
            ext.push(("requestClientApplication", ua.to_string()));
        }
        let outcome = match e.event_type {
            "login_failed" => "failure",
            "login_success" | "token_issued" | "lockout_reset" | "account_locked"
            | "retention_applied" | "lockout_rebuilt" => "success",
            _ => "unknown",
        };
        ext.push(("outcome", outcome.into()));
        ext.push(("act", e.event_type.to_string()));
        ext.push(("cat", "/Authentication".into()));
        if let Some(reason) = e.reason {
            ext.push(("reason", reason.to_string()));
        }
        ext.push(("externalId", e.log_id.to_string()));
        ext.push(("cs1", e.tenant_id.to_string()));
        ext.push(("cs1Label", "tenant".into()));
        if let Some(org) = e.org_id {
            ext.push(("cs2", org.to_string()));
            ext.push(("cs2Label", "organisation".into()));
        }
        ext.push(("cs3", e.channel.to_string()));
        ext.push(("cs3Label", "channel".into()));
        ext.push(("cs4", e.link_sha256_hex.to_string()));
        ext.push(("cs4Label", "chainLinkSha256".into()));
        if let Some(fp) = e.token_fingerprint {
            ext.push(("cs5", fp.to_string()));
            ext.push(("cs5Label", "tokenFingerprintSha256".into()));
        }
        if let Some(n) = e.preceding_failures {
            ext.push(("cs6", n.to_string()));
            ext.push(("cs6Label", "precedingFailures".into()));
        }
        ext.push(("cn1", e.seq.to_string()));
        ext.push(("cn1Label", "chainSeq".into()));
        if let Some(at) = e.imported_at_ms {
            ext.push(("deviceCustomDate1", at.to_string()));
            ext.push(("deviceCustomDate1Label", "importedAt".into()));
        }
        for (i, (k, v)) in ext.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            let _ = write!(out, "{k}={}", escape_extension(v));
        }
        out
    }

    #[test]
    fn the_one_string_encoder_writes_the_reference_bytes() {
        let hostile = "a=b\\c|d\ne\r|";
        let events = [
            event(),
            CefEvent {
                user_id: hostile,
                user_agent: Some(hostile),
                reason: Some(hostile),
                org_id: Some("hq"),
                token_fingerprint: Some("ab12"),
                preceding_failures: Some(4),
                imported_at_ms: Some(-1),
                ip: Some("2001:db8::1".parse().unwrap()),
                ..event()
            },
            CefEvent {
                event_type: "account_locked",
                user_agent: Some("ends with a pipe|"),
                ip: None,
                was_locked: Some(true),
                ..event()
            },
            CefEvent {
                event_type: "something_else",
                user_id: "zo\u{eb} \u{1F600}",
                ..event()
            },
        ];
        for e in &events {
            for version in ["0.7.0", "a|b\\c"] {
                assert_eq!(line(e, version), reference_line(e, version));
            }
        }
    }

    #[test]
    fn metadata_fields_are_read_as_to_cef_reads_them() {
        let f = MetadataFields::read(
            r#"{"reason": {"b": [1, 2.50], "a": true}, "_authaudit": {"lockout": {"was_locked": "yes", "preceding_failures": " 12 "}, "imported": true}}"#,
        );
        assert_eq!(f.reason.as_deref(), Some(r#"{"a": true, "b": [1, 2.50]}"#));
        assert_eq!(f.preceding_failures, Some(12));
        assert_eq!(f.was_locked, Some(true));
        assert!(f.imported);
        for (reason, text) in [
            ("1.50", Some("1.50")),
            ("12345678901234567890123", Some("12345678901234567890123")),
            ("true", Some("true")),
            ("null", None),
            ("[1, \"a\"]", Some("[1, \"a\"]")),
            ("\"line\\nbreak \\u00e9\"", Some("line\nbreak é")),
        ] {
            let m = format!("{{\"reason\": {reason}}}");
            let got = MetadataFields::read(&m).reason.map(Cow::into_owned);
            assert_eq!(got.as_deref(), text, "{reason}");
        }
        let huge = MetadataFields::read(r#"{"reason": 1e400}"#).reason.unwrap();
        assert_eq!(huge.len(), 401);
        assert_eq!(MetadataFields::read("not json"), MetadataFields::default());
    }

    #[test]
    fn casts_follow_postgresql() {
        for (t, v) in [
            ("12", Some(12)),
            (" +7\n", Some(7)),
            ("-2147483648", Some(i32::MIN)),
            ("2147483648", None),
            ("1.0", None),
            ("", None),
            ("+", None),
            ("1 2", None),
        ] {
            assert_eq!(pg_int4(t), v, "{t:?}");
        }
        for (t, v) in [
            ("t", Some(true)),
            ("TRU", Some(true)),
            ("true", Some(true)),
            ("truee", None),
            (" yes ", Some(true)),
            ("n", Some(false)),
            ("o", None),
            ("on", Some(true)),
            ("of", Some(false)),
            ("OFF", Some(false)),
            ("1", Some(true)),
            ("0", Some(false)),
            ("10", None),
            ("", None),
        ] {
            assert_eq!(pg_bool(t), v, "{t:?}");
        }
    }

    #[test]
    fn an_alert_line_names_its_evidence() {
        use crate::detection::{Alert, Rule};
        let a = Alert {
            rule: Rule::PasswordSpray,
            tenant: "acme".into(),
            accounts: vec!["a=1".into(), "b".into()],
            sources: vec!["198.51.100.7".into()],
            account_count: 2,
            source_count: 1,
            first_ms: 1000,
            last_ms: 2000,
            first_seq: 4,
            last_seq: 9,
            events: 6,
        };
        assert_eq!(
            alert_line(&a, "0.7.0"),
            "CEF:0|pg_authaudit|pg_authaudit|0.7.0|201|Password spray|8|rt=2000 start=1000 end=2000 \
             act=password_spray cat=/Authentication/Campaign externalId=acme/password_spray/9 cs1=acme \
             cs1Label=tenant duser=a\\=1,b src=198.51.100.7 cs2=198.51.100.7 cs2Label=sources cn1=4 \
             cn1Label=firstSeq cn2=9 cn2Label=lastSeq cn3=6 cn3Label=events cs3=2 cs3Label=accountCount \
             cs4=1 cs4Label=sourceCount"
        );
    }
}
