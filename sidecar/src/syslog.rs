//! Syslog messages for the SIEM destination: RFC 5424 with a CEF line as the
//! message, framed by octet counting (RFC 6587 section 3.4.1; RFC 5425
//! frames TLS the same way).

use std::fmt::Write;

/// The facility of every message: `authpriv` (10), security and
/// authorisation messages.
pub const FACILITY_AUTHPRIV: u8 = 10;

/// The syslog severity (RFC 5424, 0 emergency … 7 debug) of a CEF severity
/// (0–10): 9–10 critical, 7–8 error, 4–6 warning, 2–3 notice, 0–1
/// informational.
pub fn severity(cef_severity: u8) -> u8 {
    match cef_severity {
        9.. => 2,
        7..=8 => 3,
        4..=6 => 4,
        2..=3 => 5,
        _ => 6,
    }
}

/// RFC 3339 UTC time with milliseconds of `ms` since the Unix epoch.
pub fn timestamp(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rest = ms.rem_euclid(86_400_000);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000
    )
}

/// An RFC 5424 header field: printable US-ASCII without spaces, at most
/// `max` characters, `-` when empty.
fn field(out: &mut String, value: &str, max: usize) {
    let start = out.len();
    for c in value.chars().filter(|c| c.is_ascii_graphic()).take(max) {
        out.push(c);
    }
    if out.len() == start {
        out.push('-');
    }
}

/// The names in every message's header.
#[derive(Debug, Clone)]
pub struct Origin {
    pub hostname: String,
    pub app_name: String,
}

/// One RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME - MSGID - MSG`,
/// with the CEF line as MSG and `CEF` as MSGID.
pub fn message(origin: &Origin, cef_severity: u8, time_ms: i64, cef_line: &str) -> String {
    let pri = u16::from(FACILITY_AUTHPRIV) * 8 + u16::from(severity(cef_severity));
    let mut out = String::with_capacity(cef_line.len() + 96);
    let _ = write!(out, "<{pri}>1 {} ", timestamp(time_ms));
    field(&mut out, &origin.hostname, 255);
    out.push(' ');
    field(&mut out, &origin.app_name, 48);
    out.push_str(" - CEF - ");
    out.push_str(cef_line);
    out
}

/// Appends `msg` framed by octet counting: `LEN SP MSG`.
pub fn octet_counted(out: &mut Vec<u8>, msg: &str) {
    let _ = write!(Counted(out), "{} ", msg.len());
    out.extend_from_slice(msg.as_bytes());
}

struct Counted<'a>(&'a mut Vec<u8>);

impl Write for Counted<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(1_767_225_605_123), "2026-01-01T00:00:05.123Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(timestamp(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn a_message_has_the_rfc5424_header_and_the_cef_line() {
        let o = Origin {
            hostname: "db 1".into(),
            app_name: "pg_authaudit".into(),
        };
        let m = message(
            &o,
            3,
            1_767_225_605_123,
            "CEF:0|a|b|c|101|Login failed|3|x=y",
        );
        assert_eq!(
            m,
            "<85>1 2026-01-01T00:00:05.123Z db1 pg_authaudit - CEF - CEF:0|a|b|c|101|Login failed|3|x=y"
        );
        let empty = Origin {
            hostname: String::new(),
            app_name: "é".into(),
        };
        assert!(
            message(&empty, 9, 0, "x").starts_with("<82>1 1970-01-01T00:00:00.000Z - - - CEF - x")
        );
    }

    #[test]
    fn octet_counting_counts_bytes_not_characters() {
        let mut out = Vec::new();
        octet_counted(&mut out, "héllo");
        octet_counted(&mut out, "x");
        assert_eq!(out, "6 héllo1 x".as_bytes());
    }

    #[test]
    fn severities_map_from_cef_to_syslog() {
        let got: Vec<u8> = (0..=10).map(severity).collect();
        assert_eq!(got, [6, 6, 5, 5, 4, 4, 4, 3, 3, 2, 2]);
    }
}
