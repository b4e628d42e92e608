//! The sshd importer's parsing: OpenSSH and PAM syslog lines to
//! authentication events (docs/import.md). Pure: lines in, events and the
//! reasons for skipped lines out; `import` sends them to
//! `authaudit.import_events`.
//!
//! Recognised: `Failed <method> for [invalid user] <user> from <ip> port
//! <port>`, `Accepted <method> for <user> from <ip> port <port>`, and
//! rsyslog's `message repeated N times: [ … ]` around either (N events).
//! Skipped, each with its reason: `Invalid user … from …` and PAM's
//! `authentication failure` lines (notices of an attempt its `Failed` line
//! records: counting both would count it twice), other sshd lines
//! (connections, disconnects), other programs' lines, malformed lines.
//!
//! Timestamps: RFC 3164 (`Nov 20 03:14:07`, no year: the caller gives the
//! year of the file's first line, and a month that goes back by more than
//! six months starts the next year) at a fixed UTC offset, or RFC 3339
//! (`2025-11-20T03:14:07.123456+00:00`, as rsyslog's high-precision format).
//!
//! Log ids are deterministic, so a re-run records nothing twice, and sort
//! as the lines did: 48 bits of the event's second, 12 bits of its ordinal
//! among the file's events of that second, then bits of the SHA-256 of the
//! tenant, the line and its occurrence (UUID version 8; log ids are unique
//! across tenants, so one file can go into two tenants). Events of one second are
//! decided in log_id order (docs/lockout.md, "Event time"), so in line order.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

/// One authentication event read from a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub log_id: [u8; 16],
    pub at_us: i64,
    pub success: bool,
    pub user: String,
    pub ip: IpAddr,
    pub port: Option<u16>,
    pub method: String,
    pub invalid_user: bool,
    pub host: String,
}

/// Why a line was not imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Skip {
    /// Another program's line.
    NotSshd,
    /// `Invalid user … from …`: its `Failed … for invalid user` line is the attempt.
    InvalidUserNotice,
    /// A PAM line about an attempt sshd logs itself.
    PamDetail,
    /// An sshd line that is no authentication attempt (connect, disconnect, …).
    NotAnAttempt,
    /// No timestamp, host and program could be read.
    Malformed,
    /// An attempt line whose user or address could not be read.
    UnreadableAttempt,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Skip::NotSshd => "not an sshd line",
            Skip::InvalidUserNotice => {
                "\"Invalid user\" notice (its \"Failed ... for invalid user\" line is the attempt)"
            }
            Skip::PamDetail => "PAM detail of an attempt sshd logs itself",
            Skip::NotAnAttempt => "sshd line that is no authentication attempt",
            Skip::Malformed => "malformed line (no timestamp, host and program)",
            Skip::UnreadableAttempt => "attempt whose user or address could not be read",
        })
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Days from 1970-01-01 to the given proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn hms(s: &str) -> Option<i64> {
    let mut p = s.split(':');
    let h: i64 = p.next()?.parse().ok()?;
    let m: i64 = p.next()?.parse().ok()?;
    let sec: i64 = p.next()?.parse().ok()?;
    (p.next().is_none() && h < 24 && m < 60 && sec < 61).then_some(h * 3600 + m * 60 + sec)
}

/// An RFC 3339 timestamp to Unix microseconds.
fn rfc3339_us(s: &str) -> Option<i64> {
    let (date, rest) = s.split_once('T')?;
    let mut d = date.split('-');
    let y: i64 = d.next()?.parse().ok()?;
    let m: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let (time, offset_s) = if let Some(t) = rest.strip_suffix('Z') {
        (t, 0)
    } else {
        let i = rest.rfind(['+', '-'])?;
        let (t, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':')?;
        (
            t,
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60),
        )
    };
    let (whole, frac) = time.split_once('.').unwrap_or((time, ""));
    let micros: i64 = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().chain("000000".chars()).take(6).collect();
        digits.parse().ok()?
    };
    let secs = days_from_civil(y, m, day) * 86_400 + hms(whole)? - offset_s;
    Some(secs * 1_000_000 + micros)
}

/// Reads the sshd lines of one file in order.
pub struct Reader {
    /// Mixed into the log ids (the tenant).
    namespace: String,
    year: i64,
    utc_offset_s: i64,
    last_month: Option<u32>,
    /// Events so far per second, for the log ids' ordinal.
    per_second: HashMap<i64, u32>,
    /// Occurrences so far of each line text.
    seen: HashMap<String, u32>,
}

impl Reader {
    /// A reader for a file whose first year-less line lies in `year`, its
    /// times at `utc_offset_s` east of UTC, its log ids in `namespace`.
    pub fn new(namespace: &str, year: i32, utc_offset_s: i64) -> Reader {
        Reader {
            namespace: namespace.to_owned(),
            year: i64::from(year),
            utc_offset_s,
            last_month: None,
            per_second: HashMap::new(),
            seen: HashMap::new(),
        }
    }

    /// The line's timestamp (Unix µs) and the rest after it.
    fn timestamp<'l>(&mut self, line: &'l str) -> Option<(i64, &'l str)> {
        if line.as_bytes().first().is_some_and(u8::is_ascii_digit) {
            let (ts, rest) = line.split_once(' ')?;
            return Some((rfc3339_us(ts)?, rest));
        }
        let month = MONTHS.iter().position(|m| line.starts_with(m))? as u32 + 1;
        let rest = line.get(3..)?.trim_start();
        let (day, rest) = rest.split_once(' ')?;
        let day: u32 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
        let (time, rest) = rest.split_once(' ')?;
        let secs_of_day = hms(time)?;
        if let Some(last) = self.last_month {
            if month + 6 < last {
                self.year += 1;
            }
        }
        self.last_month = Some(month);
        let secs =
            days_from_civil(self.year, month, day) * 86_400 + secs_of_day - self.utc_offset_s;
        Some((secs * 1_000_000, rest))
    }

    /// The events of one line (several for `message repeated N times`), or
    /// why it has none.
    pub fn line(&mut self, line: &str) -> Result<Vec<Attempt>, Skip> {
        let line = line.trim_end_matches(['\r', '\n']);
        let (at_us, rest) = self.timestamp(line).ok_or(Skip::Malformed)?;
        let (host, rest) = rest.split_once(' ').ok_or(Skip::Malformed)?;
        let (program, message) = rest.split_once(": ").ok_or(Skip::Malformed)?;
        let name = program.split('[').next().unwrap_or(program);
        if name != "sshd" && !name.starts_with("sshd-") {
            return Err(Skip::NotSshd);
        }
        let (times, message) = repeated(message);
        let message = message.trim();
        if message.starts_with("pam_unix(")
            || message.starts_with("PAM ")
            || message.contains("authentication failure;")
        {
            return Err(Skip::PamDetail);
        }
        if message.starts_with("Invalid user ") {
            return Err(Skip::InvalidUserNotice);
        }
        let (success, after) = if let Some(m) = message.strip_prefix("Failed ") {
            (false, m)
        } else if let Some(m) = message.strip_prefix("Accepted ") {
            (true, m)
        } else {
            return Err(Skip::NotAnAttempt);
        };
        let (method, after) = after.split_once(" for ").ok_or(Skip::NotAnAttempt)?;
        let (invalid_user, after) = match after.strip_prefix("invalid user ") {
            Some(a) => (true, a),
            None => (false, after),
        };
        // The user name may hold spaces: the address is after the last " from ".
        let (user, after) = after.rsplit_once(" from ").ok_or(Skip::UnreadableAttempt)?;
        let mut words = after.split_whitespace();
        let ip: IpAddr = words
            .next()
            .and_then(|w| w.parse().ok())
            .ok_or(Skip::UnreadableAttempt)?;
        let port = match (words.next(), words.next()) {
            (Some("port"), Some(p)) => p.parse().ok(),
            _ => None,
        };
        if user.is_empty() {
            return Err(Skip::UnreadableAttempt);
        }
        let occurrence = {
            let n = self.seen.entry(line.to_owned()).or_insert(0);
            *n += 1;
            *n
        };
        Ok((0..times)
            .map(|k| Attempt {
                log_id: self.log_id(at_us, line, occurrence, k),
                at_us,
                success,
                user: user.to_owned(),
                ip,
                port,
                method: method.to_owned(),
                invalid_user,
                host: host.to_owned(),
            })
            .collect())
    }

    fn log_id(&mut self, at_us: i64, line: &str, occurrence: u32, k: u32) -> [u8; 16] {
        let second = at_us.div_euclid(1_000_000);
        let ordinal = {
            let n = self.per_second.entry(second).or_insert(0);
            *n += 1;
            *n - 1
        };
        let mut h = Sha256::new();
        h.update((self.namespace.len() as u64).to_be_bytes());
        h.update(self.namespace.as_bytes());
        h.update(line.as_bytes());
        h.update(occurrence.to_be_bytes());
        h.update(k.to_be_bytes());
        let h = h.finalize();
        let mut id = [0u8; 16];
        id[..6].copy_from_slice(&second.to_be_bytes()[2..]);
        id[6] = 0x80 | ((ordinal >> 8) & 0x0f) as u8;
        id[7] = (ordinal & 0xff) as u8;
        id[8] = 0x80 | (h[0] & 0x3f);
        id[9..].copy_from_slice(&h[1..8]);
        id
    }
}

/// `message repeated N times: [ msg ]` as (N, msg); any other message as (1, it).
fn repeated(message: &str) -> (u32, &str) {
    let Some(rest) = message.strip_prefix("message repeated ") else {
        return (1, message);
    };
    let Some((n, rest)) = rest.split_once(" times: [") else {
        return (1, message);
    };
    match n.parse::<u32>() {
        Ok(n) if n > 0 => (n, rest.trim_end().trim_end_matches(']')),
        _ => (1, message),
    }
}

/// The log id as the uuid text form.
pub fn uuid_text(id: &[u8; 16]) -> String {
    let h: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use authaudit_core::lockout_effect::iso_utc;

    fn one(r: &mut Reader, line: &str) -> Attempt {
        let mut v = r.line(line).unwrap();
        assert_eq!(v.len(), 1, "{line}");
        v.remove(0)
    }

    #[test]
    fn failures_and_successes_are_read_with_their_user_address_and_method() {
        let mut r = Reader::new("t", 2025, 0);
        let a = one(
            &mut r,
            "Nov 20 03:14:07 bastion sshd[4242]: Failed password for root from 203.0.113.10 port 52144 ssh2",
        );
        assert!(!a.success && !a.invalid_user);
        assert_eq!((a.user.as_str(), a.method.as_str()), ("root", "password"));
        assert_eq!(a.ip.to_string(), "203.0.113.10");
        assert_eq!(a.port, Some(52144));
        assert_eq!(a.host, "bastion");
        assert_eq!(iso_utc(a.at_us), "2025-11-20T03:14:07+00:00");
        let b = one(
            &mut r,
            "Nov 20 03:15:00 bastion sshd[4250]: Failed password for invalid user oracle from 2001:db8::7 port 4000 ssh2",
        );
        assert!(b.invalid_user);
        assert_eq!(b.user, "oracle");
        let c = one(
            &mut r,
            "Nov 20 03:16:00 bastion sshd[4260]: Accepted publickey for alice from 192.0.2.5 port 50022 ssh2: ED25519 SHA256:abc",
        );
        assert!(c.success);
        assert_eq!(c.method, "publickey");
    }

    #[test]
    fn a_repeated_message_is_that_many_events_in_line_order() {
        let mut r = Reader::new("t", 2025, 0);
        let first = one(
            &mut r,
            "Nov 20 03:14:07 h sshd[1]: Failed password for root from 203.0.113.10 port 1 ssh2",
        );
        let v = r
            .line("Nov 20 03:14:07 h sshd[1]: message repeated 3 times: [ Failed password for root from 203.0.113.10 port 1 ssh2]")
            .unwrap();
        assert_eq!(v.len(), 3);
        let mut ids: Vec<[u8; 16]> = std::iter::once(first.log_id)
            .chain(v.iter().map(|a| a.log_id))
            .collect();
        let in_line_order = ids.clone();
        ids.sort();
        ids.dedup();
        assert_eq!(ids, in_line_order, "distinct, and sorted as the lines");
        assert_eq!(uuid_text(&ids[0]).as_bytes()[14], b'8', "version 8");
    }

    #[test]
    fn notices_and_other_lines_are_skipped_with_their_reason() {
        let mut r = Reader::new("t", 2025, 0);
        for (line, why) in [
            ("Nov 20 03:14:06 h sshd[1]: Invalid user oracle from 203.0.113.10 port 1", Skip::InvalidUserNotice),
            ("Nov 20 03:14:07 h sshd[1]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.10  user=root", Skip::PamDetail),
            ("Nov 20 03:14:09 h sshd[1]: PAM 2 more authentication failures; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.10  user=root", Skip::PamDetail),
            ("Nov 20 03:14:08 h sshd[1]: Connection closed by authenticating user root 203.0.113.10 port 1 [preauth]", Skip::NotAnAttempt),
            ("Nov 20 03:14:08 h CRON[9]: pam_unix(cron:session): session opened for user root", Skip::NotSshd),
            ("garbage", Skip::Malformed),
            ("Nov 20 03:14:08 h sshd[1]: Failed password for root from not-an-ip port 1 ssh2", Skip::UnreadableAttempt),
        ] {
            assert_eq!(r.line(line), Err(why), "{line}");
        }
    }

    #[test]
    fn year_less_lines_roll_into_the_next_year_and_offsets_apply() {
        let mut r = Reader::new("t", 2025, 2 * 3600);
        let dec = one(
            &mut r,
            "Dec 31 23:59:59 h sshd[1]: Failed password for root from 192.0.2.1 port 1 ssh2",
        );
        let jan = one(
            &mut r,
            "Jan  1 00:00:01 h sshd[1]: Failed password for root from 192.0.2.1 port 1 ssh2",
        );
        assert_eq!(iso_utc(dec.at_us), "2025-12-31T21:59:59+00:00");
        assert_eq!(iso_utc(jan.at_us), "2025-12-31T22:00:01+00:00");
        let iso = one(
            &mut r,
            "2026-03-01T10:00:00.250+01:00 h sshd[1]: Accepted password for bob from 192.0.2.2 port 1 ssh2",
        );
        assert_eq!(iso_utc(iso.at_us), "2026-03-01T09:00:00.25+00:00");
    }

    #[test]
    fn the_same_file_gives_the_same_ids() {
        let lines = [
            "Nov 20 03:14:07 h sshd[1]: Failed password for root from 203.0.113.10 port 1 ssh2",
            "Nov 20 03:14:07 h sshd[1]: Failed password for root from 203.0.113.10 port 1 ssh2",
        ];
        let ids = |lines: &[&str]| -> Vec<[u8; 16]> {
            let mut r = Reader::new("t", 2025, 0);
            lines
                .iter()
                .flat_map(|l| r.line(l).unwrap())
                .map(|a| a.log_id)
                .collect()
        };
        let a = ids(&lines);
        assert_eq!(a, ids(&lines));
        assert_ne!(a[0], a[1], "two identical lines are two attempts");
    }
}
