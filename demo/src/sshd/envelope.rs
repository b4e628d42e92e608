//! The syslog envelope of a line: its time, host, program, process id and
//! message. Three forms are read:
//!
//! - RFC 3164 (`Nov 20 03:14:07 host sshd[4242]: message`), optionally
//!   after a `<PRI>` field, with the Solaris message tag
//!   (`[ID 800047 auth.info] `) removed from the message;
//! - the same with an RFC 3339 timestamp (rsyslog's high-precision form,
//!   `journalctl -o short-iso`, offsets `+02:00` or `+0200`);
//! - RFC 5424 (`<38>1 2025-11-20T03:14:07.5Z host sshd 4242 - - message`),
//!   its structured data skipped and a leading byte order mark removed.
//!
//! RFC 3164 times carry no year: they are read as a [`Stamp::Yearless`]
//! and dated once the file's year is known (`year.rs`).

/// A line's time as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// Unix microseconds (the line carried its date and offset).
    Dated(i64),
    /// Month (1–12), day and seconds since midnight, at the host's offset.
    Yearless { month: u32, day: u32, secs: u32 },
}

/// The parts of a syslog line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'l> {
    pub stamp: Stamp,
    pub host: &'l str,
    /// The program name (`sshd`, `sshd-session`, `sshd(pam_unix)`, …).
    pub program: &'l str,
    pub pid: Option<u32>,
    pub message: &'l str,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Days from 1970-01-01 to the given proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days in `month` of `year`.
pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn digits<T: std::str::FromStr>(s: &str, len: usize) -> Option<T> {
    (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// `hh:mm:ss` as seconds since midnight (a leap second `60` allowed).
fn hms(s: &str) -> Option<u32> {
    let mut p = s.split(':');
    let h: u32 = digits(p.next()?, 2)?;
    let m: u32 = digits(p.next()?, 2)?;
    let sec: u32 = digits(p.next()?, 2)?;
    (p.next().is_none() && h < 24 && m < 60 && sec <= 60).then_some(h * 3600 + m * 60 + sec)
}

/// An RFC 3339 timestamp (offset `Z`, `±hh:mm` or `±hhmm`) as Unix µs.
pub fn rfc3339_us(s: &str) -> Option<i64> {
    let (date, rest) = s.split_once('T')?;
    let mut d = date.split('-');
    let y: i64 = digits(d.next()?, 4)?;
    let m: u32 = digits(d.next()?, 2)?;
    let day: u32 = digits(d.next()?, 2)?;
    if d.next().is_some() || !(1..=12).contains(&m) || day == 0 || day > days_in_month(y, m) {
        return None;
    }
    let (time, offset_s) = if let Some(t) = rest.strip_suffix('Z') {
        (t, 0)
    } else {
        let i = rest.rfind(['+', '-'])?;
        let (t, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let off = &off[1..];
        let (oh, om) = off
            .split_once(':')
            .unwrap_or((off.get(..2)?, off.get(2..)?));
        let (oh, om): (i64, i64) = (digits(oh, 2)?, digits(om, 2)?);
        if oh > 23 || om > 59 {
            return None;
        }
        (t, sign * (oh * 3600 + om * 60))
    };
    let (whole, frac) = time.split_once('.').unwrap_or((time, ""));
    let micros: i64 = if frac.is_empty() {
        0
    } else {
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digits: String = frac.chars().chain("000000".chars()).take(6).collect();
        digits.parse().ok()?
    };
    let secs = days_from_civil(y, m, day) * 86_400 + i64::from(hms(whole)?) - offset_s;
    Some(secs * 1_000_000 + micros)
}

/// Removes a leading `<PRI>` (1 to 3 digits).
fn strip_pri(line: &str) -> &str {
    if let Some(rest) = line.strip_prefix('<') {
        if let Some((pri, after)) = rest.split_once('>') {
            if (1..=3).contains(&pri.len()) && pri.bytes().all(|b| b.is_ascii_digit()) {
                return after;
            }
        }
    }
    line
}

/// Reads the envelope of one line (without its line ending), or `None`
/// when it has no readable time, host and program.
pub fn parse(line: &str) -> Option<Envelope<'_>> {
    let line = strip_pri(line);
    if let Some(rest) = line.strip_prefix("1 ") {
        return rfc5424(rest);
    }
    let (stamp, rest) = if line.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        let (ts, rest) = line.split_once(' ')?;
        (Stamp::Dated(rfc3339_us(ts)?), rest)
    } else {
        let month = MONTHS.iter().position(|m| line.starts_with(m))? as u32 + 1;
        let rest = line.get(3..)?.strip_prefix(' ')?;
        // The day is space-padded (`Nov  1`) or not (`Nov 1`, `Nov 01`).
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        let (day, rest) = rest.split_once(' ')?;
        let day: u32 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
        let (time, rest) = rest.split_once(' ')?;
        let secs = hms(time)?;
        (Stamp::Yearless { month, day, secs }, rest)
    };
    let (host, rest) = rest.split_once(' ')?;
    let (tag, message) = rest.split_once(": ").or_else(|| {
        // A tag with an empty message: `sshd[1]:`.
        rest.strip_suffix(':').map(|t| (t, ""))
    })?;
    let (program, pid) = tag_parts(tag)?;
    if host.is_empty() {
        return None;
    }
    Some(Envelope {
        stamp,
        host,
        program,
        pid,
        message: solaris_tag(message),
    })
}

/// `name[pid]` or `name`.
fn tag_parts(tag: &str) -> Option<(&str, Option<u32>)> {
    if tag.is_empty() || tag.contains(' ') {
        return None;
    }
    match tag.strip_suffix(']').and_then(|t| t.rsplit_once('[')) {
        Some((name, pid)) => Some((name, Some(pid.parse().ok()?))),
        None => Some((tag, None)),
    }
}

/// Removes Solaris' message tag `[ID <number> <facility>.<level>] `.
fn solaris_tag(message: &str) -> &str {
    let Some(rest) = message.strip_prefix("[ID ") else {
        return message;
    };
    let Some((inside, after)) = rest.split_once("] ") else {
        return message;
    };
    let mut parts = inside.split(' ');
    let well_formed = parts
        .next()
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        && parts.next().is_some_and(|f| f.contains('.'))
        && parts.next().is_none();
    if well_formed {
        after
    } else {
        message
    }
}

/// The fields after `<PRI>1 `: TIMESTAMP HOSTNAME APP-NAME PROCID MSGID
/// STRUCTURED-DATA [MSG].
fn rfc5424(rest: &str) -> Option<Envelope<'_>> {
    let mut fields = rest.splitn(5, ' ');
    let ts = fields.next()?;
    let host = fields.next()?;
    let app = fields.next()?;
    let procid = fields.next()?;
    let rest = fields.next()?;
    let (_msgid, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let message = skip_structured_data(rest)?;
    let message = message.strip_prefix('\u{feff}').unwrap_or(message);
    let stamp = Stamp::Dated(rfc3339_us(ts)?);
    if host == "-" || app == "-" {
        return None;
    }
    let pid = match procid {
        "-" => None,
        p => Some(p.parse().ok()?),
    };
    Some(Envelope {
        stamp,
        host,
        program: app,
        pid,
        message,
    })
}

/// The message after STRUCTURED-DATA (`-` or `[id k="v" …]…`, values with
/// `\"`, `\\` and `\]` escapes), or `None` when it is not well formed.
fn skip_structured_data(s: &str) -> Option<&str> {
    if let Some(rest) = s.strip_prefix('-') {
        return Some(rest.strip_prefix(' ').unwrap_or(rest));
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    if bytes.first() != Some(&b'[') {
        return None;
    }
    while bytes.get(i) == Some(&b'[') {
        let mut quoted = false;
        i += 1;
        loop {
            match *bytes.get(i)? {
                b'\\' if quoted => i += 2,
                b'"' => {
                    quoted = !quoted;
                    i += 1;
                }
                b']' if !quoted => {
                    i += 1;
                    break;
                }
                _ => i += 1,
            }
        }
    }
    let rest = &s[i..];
    Some(rest.strip_prefix(' ').unwrap_or(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3164_lines_give_a_yearless_time_host_program_and_pid() {
        let e = parse("Nov  2 03:14:07 bastion sshd[4242]: Failed password").unwrap();
        assert_eq!(
            e.stamp,
            Stamp::Yearless {
                month: 11,
                day: 2,
                secs: 3 * 3600 + 14 * 60 + 7
            }
        );
        assert_eq!(
            (e.host, e.program, e.pid, e.message),
            ("bastion", "sshd", Some(4242), "Failed password")
        );
        let e = parse("<38>Nov 20 03:14:07 h sshd(pam_unix)[7]: check pass; user unknown").unwrap();
        assert_eq!((e.program, e.pid), ("sshd(pam_unix)", Some(7)));
        let e = parse("Nov 20 03:14:07 h sshd: no pid").unwrap();
        assert_eq!((e.program, e.pid, e.message), ("sshd", None, "no pid"));
    }

    #[test]
    fn the_solaris_message_tag_is_removed() {
        let e = parse("Nov 20 03:14:07 sol sshd[603]: [ID 800047 auth.info] Failed password for root from 192.0.2.1 port 22 ssh2").unwrap();
        assert!(e.message.starts_with("Failed password"), "{}", e.message);
        let e = parse("Nov 20 03:14:07 sol sshd[603]: [ID x auth.info] kept").unwrap();
        assert_eq!(e.message, "[ID x auth.info] kept");
    }

    #[test]
    fn rfc3339_and_rfc5424_lines_carry_their_date() {
        let e = parse("2025-11-20T03:14:07.250+01:00 h sshd[1]: m").unwrap();
        assert_eq!(
            e.stamp,
            Stamp::Dated(
                (days_from_civil(2025, 11, 20) * 86_400 + 2 * 3600 + 14 * 60 + 7) * 1_000_000
                    + 250_000
            )
        );
        let e = parse("2025-11-20T03:14:07+0100 h sshd[1]: m").unwrap();
        assert_eq!(
            e.stamp,
            Stamp::Dated(
                (days_from_civil(2025, 11, 20) * 86_400 + 2 * 3600 + 14 * 60 + 7) * 1_000_000
            )
        );
        let e = parse("<38>1 2025-11-20T03:14:07.5Z bastion sshd 4242 - [origin ip=\"192.0.2.9\" x=\"a\\]b\"][meta sequenceId=\"1\"] \u{feff}Failed password").unwrap();
        assert_eq!(
            (e.host, e.program, e.pid, e.message),
            ("bastion", "sshd", Some(4242), "Failed password")
        );
        let e = parse("<38>1 2025-11-20T03:14:07Z bastion sshd-session - - - Accepted").unwrap();
        assert_eq!(
            (e.program, e.pid, e.message),
            ("sshd-session", None, "Accepted")
        );
        assert_eq!(parse("<38>1 - bastion sshd 1 - - m"), None, "no time");
    }

    #[test]
    fn lines_without_a_time_host_or_program_have_no_envelope() {
        for line in [
            "",
            "garbage",
            "Nov 20 03:14:07",
            "Nov 20 03:14:07 host",
            "Nov 32 03:14:07 h sshd[1]: m",
            "Nov 20 24:00:00 h sshd[1]: m",
            "Nov 20 03:14 h sshd[1]: m",
            "2025-02-29T00:00:00Z h sshd[1]: m",
            "Nov 20 03:14:07 h sshd[x]: m",
        ] {
            assert_eq!(parse(line), None, "{line}");
        }
    }
}
