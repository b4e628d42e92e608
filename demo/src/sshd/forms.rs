//! sshd's and pam_unix's messages, read into the forms the importer knows
//! (docs/import.md lists each form and what it becomes). Pure: one
//! message in, one [`Form`] out; deciding which forms are attempts of their
//! own (PAM lines beside sshd's, a session's "maximum attempts" notice) is
//! `session.rs`'s work.
//!
//! An attempt line is read only when it is complete: `Failed`/`Accepted`,
//! a method, `for`, the user, `from <address> port <port>` and the
//! protocol (`ssh2`, `ssh1`, or the ssh1 `ruser <name>` ending), then
//! optionally `: <detail>`. The user, the ssh1 `ruser` and some details are
//! supplied by the client and may themselves hold ` from <address> port
//! <n> ssh2`: every split of the line that gives a complete form is kept
//! as a [`Reading`], and when the readings disagree on the source the
//! connection's own source decides (`session.rs`), never the text.

use std::net::IpAddr;

/// Why a line was not recorded as an event of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Skip {
    /// Another program's line.
    NotSshd,
    /// `Invalid user … from …`: its `Failed … for invalid user` line is the attempt.
    InvalidUserNotice,
    /// A PAM line about an attempt an sshd line records.
    PamDetail,
    /// An sshd or PAM line that is no authentication attempt.
    NotAnAttempt,
    /// `Postponed`/`Partial`: a step of an attempt, not its outcome.
    Intermediate,
    /// Another PAM module's notice (pam_unix's and sshd's lines are read).
    OtherPamModule,
    /// No timestamp, host and program could be read.
    Malformed,
    /// An attempt line that is not complete (user, address, port, protocol).
    IncompleteAttempt,
    /// An attempt whose source address cannot be told from a client-supplied field.
    AmbiguousSource,
    /// The file's last line has no line ending: it may be cut short.
    Unterminated,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Skip::NotSshd => "not an sshd line",
            Skip::InvalidUserNotice => {
                "\"Invalid user\" notice (its \"Failed ... for invalid user\" line is the attempt)"
            }
            Skip::PamDetail => "PAM detail of an attempt sshd logs itself",
            Skip::NotAnAttempt => "sshd line that is no authentication attempt",
            Skip::Intermediate => "\"Postponed\" or \"Partial\": a step of an attempt, not its outcome",
            Skip::OtherPamModule => "another PAM module's notice (pam_unix's and sshd's lines record the attempt)",
            Skip::Malformed => "malformed line (no timestamp, host and program)",
            Skip::IncompleteAttempt => {
                "incomplete attempt line (no user, address, port and protocol): never recorded from a prefix"
            }
            Skip::AmbiguousSource => {
                "attempt whose source a client-supplied field makes ambiguous (the connection's source is not known)"
            }
            Skip::Unterminated => "last line without a line ending (possibly truncated; --final-line-complete reads it)",
        })
    }
}

/// An address and port as sshd logged them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

/// The protocol an attempt line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Ssh2,
    Ssh1,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Ssh2 => "ssh2",
            Protocol::Ssh1 => "ssh1",
        }
    }
}

/// One complete reading of an attempt line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub user: String,
    pub source: Endpoint,
    pub protocol: Protocol,
    /// The ssh1 rhosts forms' client-supplied remote user.
    pub ruser: Option<String>,
}

/// A `Failed`/`Accepted` line, or a "maximum authentication attempts
/// exceeded" notice (`success` false, no method).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptLine {
    pub success: bool,
    pub method: Option<String>,
    pub invalid_user: bool,
    /// Never empty; more than one when a client-supplied field holds a
    /// source form of its own.
    pub readings: Vec<Reading>,
}

impl AttemptLine {
    /// The one source every reading agrees on.
    pub fn source(&self) -> Option<Endpoint> {
        let first = self.readings[0].source;
        self.readings
            .iter()
            .all(|r| r.source == first)
            .then_some(first)
    }

    /// Whether the method goes through PAM (so pam_unix logs its failure too).
    pub fn pam_method(&self) -> bool {
        self.method.as_deref().is_some_and(|m| {
            m == "password" || m == "challenge-response" || m.starts_with("keyboard-interactive")
        })
    }
}

/// What one message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    Attempt(AttemptLine),
    /// `maximum authentication attempts exceeded for … from …`.
    MaxAttempts(AttemptLine),
    /// pam_unix's `authentication failure; … rhost=… [user=…]`.
    PamFailure {
        user: Option<String>,
        rhost: String,
    },
    /// `[PAM ]N more authentication failures; … rhost=… [user=…]`.
    PamMore {
        n: u32,
        user: Option<String>,
        rhost: String,
    },
    /// pam_unix's `check pass; user unknown` (or `user (NAME) unknown`).
    UserUnknown {
        user: Option<String>,
    },
    /// `Invalid user NAME from …`: the session's user name and source.
    InvalidUserNotice {
        user: String,
        sources: Vec<Endpoint>,
    },
    /// A line that tells only the connection's source.
    Source(Endpoint),
    Skip(Skip),
}

/// Which program wrote a line, for the importer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// `sshd`, `sshd-session`, `sshd-auth`, `sshd-…`.
    Sshd,
    /// Linux-PAM before 0.99 logged as `sshd(pam_unix)`.
    SshdPamUnix,
    Other,
}

pub fn program(name: &str) -> Program {
    if name == "sshd" || name.starts_with("sshd-") {
        Program::Sshd
    } else if name == "sshd(pam_unix)" {
        Program::SshdPamUnix
    } else {
        Program::Other
    }
}

/// `message repeated N times: [ msg ]` as (N, msg); any other message as
/// (1, it). An unclosed `[` is no repetition.
pub fn repeated(message: &str) -> Result<(u32, &str), Skip> {
    let Some(rest) = message.strip_prefix("message repeated ") else {
        return Ok((1, message));
    };
    let Some((n, rest)) = rest.split_once(" times: [") else {
        return Ok((1, message));
    };
    let n: u32 = n.parse().map_err(|_| Skip::NotAnAttempt)?;
    let inner = rest.strip_suffix(']').ok_or(Skip::IncompleteAttempt)?;
    if n == 0 {
        return Err(Skip::NotAnAttempt);
    }
    Ok((n, inner.trim_start()))
}

/// Reads one message of `program`.
pub fn read(program: Program, message: &str) -> Form {
    match program {
        Program::Other => Form::Skip(Skip::NotSshd),
        Program::SshdPamUnix => pam_unix(message),
        Program::Sshd => sshd(message),
    }
}

fn sshd(message: &str) -> Form {
    // Messages of sshd's unprivileged child end in ` [preauth]` (or
    // ` [postauth]`), added by the monitor.
    let message = message
        .strip_suffix(" [preauth]")
        .or_else(|| message.strip_suffix(" [postauth]"))
        .unwrap_or(message);
    if let Some(rest) = message.strip_prefix("pam_unix(") {
        return match rest.split_once("): ") {
            Some((facility, m)) if facility.ends_with(":auth") => pam_unix(m),
            Some(_) => Form::Skip(Skip::NotAnAttempt),
            None => Form::Skip(Skip::NotAnAttempt),
        };
    }
    if message.starts_with("pam_") && message.contains("): ") {
        return Form::Skip(Skip::OtherPamModule);
    }
    if let Some(m) = message.strip_prefix("PAM ") {
        if let Some(f) = pam_more(m) {
            return f;
        }
        return Form::Skip(Skip::NotAnAttempt);
    }
    if message.starts_with("error: PAM: ") {
        return Form::Skip(Skip::PamDetail);
    }
    let plain = message.strip_prefix("error: ").unwrap_or(message);
    if let Some(rest) = plain.strip_prefix("maximum authentication attempts exceeded for ") {
        return match user_and_source(rest, false) {
            Some((invalid_user, readings)) => Form::MaxAttempts(AttemptLine {
                success: false,
                method: None,
                invalid_user,
                readings,
            }),
            None => Form::Skip(Skip::IncompleteAttempt),
        };
    }
    for (word, success) in [("Failed ", false), ("Accepted ", true)] {
        if let Some(rest) = message.strip_prefix(word) {
            return attempt(success, rest);
        }
    }
    if message.starts_with("Postponed ") || message.starts_with("Partial ") {
        return Form::Skip(Skip::Intermediate);
    }
    for word in ["Invalid user ", "Illegal user "] {
        if let Some(rest) = message.strip_prefix(word) {
            return invalid_user_notice(rest);
        }
    }
    match source_only(message) {
        Some(source) => Form::Source(source),
        None => Form::Skip(Skip::NotAnAttempt),
    }
}

/// `<method> for [invalid user |illegal user ]<user> from <ip> port <n> <protocol>[: detail]`.
fn attempt(success: bool, rest: &str) -> Form {
    let Some((method, rest)) = rest.split_once(" for ") else {
        return Form::Skip(Skip::IncompleteAttempt);
    };
    if method.is_empty() || method.contains(' ') {
        return Form::Skip(Skip::NotAnAttempt);
    }
    match user_and_source(rest, !detail_free(method)) {
        Some((invalid_user, readings)) => Form::Attempt(AttemptLine {
            success,
            method: Some(method.to_owned()),
            invalid_user,
            readings,
        }),
        None => Form::Skip(Skip::IncompleteAttempt),
    }
}

/// Methods whose lines sshd writes without a `: detail` (only public key,
/// host-based and GSSAPI attempts carry one).
fn detail_free(method: &str) -> bool {
    matches!(
        method,
        "password" | "none" | "challenge-response" | "rhosts" | "rsa" | "tis"
    ) || method.starts_with("keyboard-interactive")
}

/// Every complete reading of `[invalid user ]<user> from <ip> port <n> <protocol>…`.
fn user_and_source(rest: &str, detail_allowed: bool) -> Option<(bool, Vec<Reading>)> {
    let (invalid_user, rest) = match rest
        .strip_prefix("invalid user ")
        .or_else(|| rest.strip_prefix("illegal user "))
    {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let readings: Vec<Reading> = splits(rest, " from ")
        .filter_map(|i| {
            let (source, protocol, ruser) =
                source_and_protocol(&rest[i + " from ".len()..], detail_allowed)?;
            Some(Reading {
                user: rest[..i].to_owned(),
                source,
                protocol,
                ruser,
            })
        })
        .collect();
    (!readings.is_empty()).then_some((invalid_user, readings))
}

/// The byte offsets of every occurrence of `pat` in `s` (an empty user
/// puts one at 0: `invalid user  from …`).
fn splits<'s>(s: &'s str, pat: &'s str) -> impl Iterator<Item = usize> + 's {
    s.match_indices(pat).map(|(i, _)| i)
}

/// `<ip> port <n> ssh2[: detail]`, `<ip> port <n> ssh1[: detail]`,
/// `<ip> port <n> ruser <name>` or `<ip> ruser <name>`.
fn source_and_protocol(
    s: &str,
    detail_allowed: bool,
) -> Option<(Endpoint, Protocol, Option<String>)> {
    let (ip, rest) = s.split_once(' ')?;
    let ip: IpAddr = ip.parse().ok()?;
    if let Some(ruser) = rest.strip_prefix("ruser ") {
        return Some((
            Endpoint { ip, port: None },
            Protocol::Ssh1,
            Some(ruser.to_owned()),
        ));
    }
    let rest = rest.strip_prefix("port ")?;
    let (port, rest) = rest.split_once(' ')?;
    let port = port_number(port)?;
    let source = Endpoint {
        ip,
        port: Some(port),
    };
    if let Some(ruser) = rest.strip_prefix("ruser ") {
        return Some((source, Protocol::Ssh1, Some(ruser.to_owned())));
    }
    let (protocol, detail) = match rest.split_once(": ") {
        Some((p, d)) if !d.is_empty() => (p, Some(d)),
        Some(_) => return None,
        None => (rest, None),
    };
    if detail.is_some() && !detail_allowed {
        return None;
    }
    let protocol = match protocol {
        "ssh2" => Protocol::Ssh2,
        "ssh1" => Protocol::Ssh1,
        _ => return None,
    };
    Some((source, protocol, None))
}

/// A TCP port as sshd prints it (`%d`: no sign, no leading zero).
fn port_number(s: &str) -> Option<u16> {
    let ok = !s.is_empty()
        && s.len() <= 5
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    ok.then(|| s.parse().ok()).flatten()
}

/// `Invalid user <user> from <ip>[ port <n>]`.
fn invalid_user_notice(rest: &str) -> Form {
    let mut user = None;
    let mut sources = Vec::new();
    for i in splits(rest, " from ") {
        let after = &rest[i + " from ".len()..];
        let source = match after.split_once(" port ") {
            Some((ip, port)) => ip
                .parse()
                .ok()
                .zip(port_number(port))
                .map(|(ip, port)| Endpoint {
                    ip,
                    port: Some(port),
                }),
            None => after.parse().ok().map(|ip| Endpoint { ip, port: None }),
        };
        if let Some(s) = source {
            user.get_or_insert_with(|| rest[..i].to_owned());
            sources.push(s);
        }
    }
    match user {
        Some(user) => Form::InvalidUserNotice { user, sources },
        None => Form::Skip(Skip::InvalidUserNotice),
    }
}

/// Lines that name only the connection's source, where nothing the client
/// supplied follows the address.
fn source_only(message: &str) -> Option<Endpoint> {
    for prefix in [
        "Connection from ",
        "Connection closed by ",
        "Connection reset by ",
        "Disconnected from ",
        "Received disconnect from ",
        "Did not receive identification string from ",
        "Timeout before authentication for ",
        "Unable to negotiate with ",
    ] {
        let Some(rest) = message.strip_prefix(prefix) else {
            continue;
        };
        // `<ip> port <n>` first …
        let (ip, after) = rest.split_once(' ').unwrap_or((rest, ""));
        let ip = ip.trim_end_matches(':');
        if let Ok(ip) = ip.parse::<IpAddr>() {
            let port = after
                .strip_prefix("port ")
                .and_then(|p| port_number(p.split([' ', ':']).next().unwrap_or("")));
            return Some(Endpoint { ip, port });
        }
        // … or `(authenticating|invalid) user <user> <ip> port <n>` at the end.
        if rest.starts_with("authenticating user ")
            || rest.starts_with("invalid user ")
            || rest.starts_with("user ")
        {
            let mut tail = rest.rsplitn(4, ' ');
            let port = port_number(tail.next()?)?;
            if tail.next()? != "port" {
                return None;
            }
            let ip: IpAddr = tail.next()?.parse().ok()?;
            return Some(Endpoint {
                ip,
                port: Some(port),
            });
        }
        return None;
    }
    None
}

/// A pam_unix message (after `pam_unix(sshd:auth): `, or of `sshd(pam_unix)`).
fn pam_unix(message: &str) -> Form {
    if let Some(fields) = message.strip_prefix("authentication failure; ") {
        return match pam_fields(fields) {
            Some((rhost, user)) => Form::PamFailure { user, rhost },
            None => Form::Skip(Skip::IncompleteAttempt),
        };
    }
    if let Some(f) = pam_more(message) {
        return f;
    }
    if message == "check pass; user unknown" {
        return Form::UserUnknown { user: None };
    }
    if let Some(user) = message
        .strip_prefix("check pass; user (")
        .and_then(|r| r.strip_suffix(") unknown"))
    {
        return Form::UserUnknown {
            user: Some(user.to_owned()),
        };
    }
    Form::Skip(Skip::NotAnAttempt)
}

/// `N more authentication failure(s); <fields>`.
fn pam_more(message: &str) -> Option<Form> {
    let (n, rest) = message.split_once(" more authentication failure")?;
    let n: u32 = n.parse().ok().filter(|n| *n > 0)?;
    let fields = rest
        .strip_prefix("s; ")
        .or_else(|| rest.strip_prefix("; "))?;
    Some(match pam_fields(fields) {
        Some((rhost, user)) => Form::PamMore { n, user, rhost },
        None => Form::Skip(Skip::IncompleteAttempt),
    })
}

/// `logname=… uid=… euid=… tty=… ruser=… rhost=…[ user=…]`: the rhost and
/// the user (the user is last, and may hold spaces).
fn pam_fields(s: &str) -> Option<(String, Option<String>)> {
    let mut rest = s;
    let mut rhost = "";
    for key in ["logname=", "uid=", "euid=", "tty=", "ruser=", "rhost="] {
        rest = rest.strip_prefix(key)?;
        let end = rest.find(' ').unwrap_or(rest.len());
        if key == "rhost=" {
            rhost = &rest[..end];
        }
        rest = &rest[end..];
        if key != "rhost=" {
            rest = rest.strip_prefix(' ')?;
        }
    }
    let user = match rest.trim_start_matches(' ') {
        "" => None,
        r => Some(r.strip_prefix("user=")?.to_owned()),
    };
    Some((rhost.to_owned(), user))
}
