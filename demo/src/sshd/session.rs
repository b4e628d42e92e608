//! Which lines of a file are attempts, each recorded once.
//!
//! sshd and pam_unix may both log one attempt. The rules, by sshd process
//! (host and process id; pam_unix logs with the pid of the sshd process
//! that called PAM):
//!
//! - A pam_unix `authentication failure` line at time T is the same attempt
//!   as the first later sshd `Failed` line of the same process for a PAM
//!   method (`password`, `keyboard-interactive…`, `challenge-response`),
//!   at most 10 s after T, not yet paired. Failing that, it is the same
//!   attempt as such a `keyboard-interactive` line of another process of
//!   the same host within 10 s with the same user and source (sshd runs
//!   keyboard-interactive PAM in a child process). Failing both, it is an
//!   attempt of its own: a **PAM-only failure**.
//! - `check pass; user unknown` is the detail of the same process's next
//!   `authentication failure` line within 10 s, else a PAM-only failure.
//! - pam_unix logs one `authentication failure` per connection and sums
//!   the later ones at the end: `N more authentication failures` stands for
//!   N attempts, the same as up to N unpaired PAM-method `Failed` lines of
//!   the process in the 10 minutes before it; the rest are PAM-only
//!   failures dated at that line.
//! - `maximum authentication attempts exceeded` is an attempt of its own
//!   only when its process logged no attempt (no `Failed`/`Accepted`
//!   line, no PAM failure) in the 10 minutes before it.
//!
//! "Before" and "after" are places in the file, and a window bounds how
//! much earlier (or later) a line is dated than the other: a line dated
//! out of order by a clock stepped back stays with its process.
//!
//! Sources: an sshd line's own address when its readings agree; otherwise
//! the connection's source, known from the process's other lines in the
//! 10 minutes around (`Connection from`, `Connection closed by`, attempt
//! lines that read one way, …); a PAM-only failure takes `rhost` when it is
//! an address, else the connection's source, else none (its `rhost` is in
//! the metadata).

use super::forms::{AttemptLine, Endpoint, Form, Reading, Skip};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::ops::Range;

const PAIR_WINDOW_US: i64 = 10_000_000;
const SESSION_WINDOW_US: i64 = 600_000_000;

/// The account recorded for an attempt on an empty user name.
pub const EMPTY_USER: &str = "(empty)";
/// The account recorded for a PAM-only failure whose user nobody logged.
pub const UNKNOWN_USER: &str = "(unknown)";

/// An sshd or PAM line of a file, dated.
#[derive(Debug, Clone)]
pub struct Line {
    pub at_us: i64,
    pub host: String,
    pub pid: Option<u32>,
    /// `message repeated N times`.
    pub times: u32,
    pub form: Form,
    pub not_utf8: bool,
}

/// An event read from a line, before its log id.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// Its index among the line's events.
    pub index: u32,
    pub at_us: i64,
    pub success: bool,
    pub user: String,
    pub ip: Option<IpAddr>,
    pub metadata: Map<String, Value>,
}

/// What became of a line.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Events(Vec<Draft>),
    Skipped(Skip),
}

/// Some lines of a file (a process's, or a host's attempt lines), in line
/// order.
#[derive(Debug, Default)]
struct Timeline {
    lines: Vec<usize>,
    /// Whether their times never go back. A clock stepped back (NTP, a
    /// local time leaving summer time) dates later lines before earlier
    /// ones; only without such a step are the lines within a window of a
    /// time next to each other.
    ordered: bool,
}

impl Timeline {
    /// Adds line `i`, which follows the lines added before.
    fn push(&mut self, lines: &[Line], i: usize) {
        self.ordered = self
            .lines
            .last()
            .is_none_or(|&last| self.ordered && lines[last].at_us <= lines[i].at_us);
        self.lines.push(i);
    }
}

/// The lines of `t` before line `i` dated at most `window` before it, and
/// those after it dated at most `window` after it, each side nearest first.
/// A line dated out of order counts on its side of `i` by its place in
/// the file. In an ordered timeline the look-up stops at the first line
/// out of the window; otherwise it reads the whole timeline.
fn around<'s>(
    lines: &'s [Line],
    t: &'s Timeline,
    i: usize,
    window: i64,
) -> (
    impl Iterator<Item = usize> + 's,
    impl Iterator<Item = usize> + 's,
) {
    let at = lines[i].at_us;
    let pos = t.lines.partition_point(|&j| j < i);
    let after = pos + usize::from(t.lines.get(pos) == Some(&i));
    let ordered = t.ordered;
    let before_within = move |j: &usize| at - lines[*j].at_us <= window;
    let after_within = move |j: &usize| lines[*j].at_us - at <= window;
    (
        t.lines[..pos]
            .iter()
            .rev()
            .copied()
            .take_while(move |j| !ordered || before_within(j))
            .filter(before_within),
        t.lines[after..]
            .iter()
            .copied()
            .take_while(move |j| !ordered || after_within(j))
            .filter(after_within),
    )
}

/// The indices of `units` (in line order) that stand for line `line`.
fn units_at(units: &[Unit], line: usize) -> Range<usize> {
    units.partition_point(|u| u.line < line)..units.partition_point(|u| u.line <= line)
}

#[derive(Debug, Clone, Copy)]
struct Unit {
    line: usize,
    paired: bool,
}

/// The outcome of every line of `lines` (one file, in order).
pub fn assemble(lines: &[Line]) -> Vec<Outcome> {
    // By host and process id; lines without one are a host's group of
    // their own, which only PAM's "N more" pairing reads.
    let mut processes: HashMap<(&str, Option<u32>), Timeline> = HashMap::new();
    for (i, l) in lines.iter().enumerate() {
        processes
            .entry((&l.host, l.pid))
            .or_default()
            .push(lines, i);
    }
    let no_session = Timeline::default();
    let session_of = |i: usize| -> &Timeline {
        match lines[i].pid {
            Some(_) => &processes[&(lines[i].host.as_str(), lines[i].pid)],
            None => &no_session,
        }
    };

    // check pass; user unknown: detail of the next authentication failure.
    let mut absorbed = vec![false; lines.len()];
    let mut unknown_name: HashMap<usize, String> = HashMap::new();
    for (i, l) in lines.iter().enumerate() {
        if let Form::UserUnknown { user } = &l.form {
            let (_, mut later) = around(lines, session_of(i), i, PAIR_WINDOW_US);
            let next = later.find(|&j| matches!(lines[j].form, Form::PamFailure { .. }));
            if let Some(j) = next {
                absorbed[i] = true;
                if let Some(u) = user {
                    unknown_name.entry(j).or_insert_with(|| u.clone());
                }
            }
        }
    }

    // PAM failure units and PAM-method Failed units, per line.
    let mut pam_units: Vec<Unit> = Vec::new();
    let mut failed_units: Vec<Unit> = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let n = l.times as usize;
        match &l.form {
            Form::PamFailure { .. } => pam_units.extend((0..n).map(|_| Unit {
                line: i,
                paired: false,
            })),
            Form::UserUnknown { .. } if !absorbed[i] => pam_units.extend((0..n).map(|_| Unit {
                line: i,
                paired: false,
            })),
            Form::Attempt(a) if !a.success && a.pam_method() => {
                failed_units.extend((0..n).map(|_| Unit {
                    line: i,
                    paired: false,
                }))
            }
            _ => {}
        }
    }
    pair_within_process(lines, &mut pam_units, &mut failed_units);
    pair_keyboard_interactive(lines, &mut pam_units, &mut failed_units, |i| {
        resolve(lines, session_of(i), i)
    });

    let mut out = Vec::with_capacity(lines.len());
    let mut pam_cursor = 0;
    for (i, l) in lines.iter().enumerate() {
        let session = session_of(i);
        let outcome = match &l.form {
            Form::Skip(s) => Outcome::Skipped(*s),
            Form::Source(_) => Outcome::Skipped(Skip::NotAnAttempt),
            Form::InvalidUserNotice { .. } => Outcome::Skipped(Skip::InvalidUserNotice),
            Form::Attempt(a) => match resolve_reading(lines, session, i, a) {
                Some(r) => Outcome::Events(
                    (0..l.times)
                        .map(|k| sshd_draft(l, k, a, &r, false))
                        .collect(),
                ),
                None => Outcome::Skipped(Skip::AmbiguousSource),
            },
            Form::MaxAttempts(a) => {
                let (mut earlier, _) = around(lines, session, i, SESSION_WINDOW_US);
                let attempted = earlier.any(|j| {
                    matches!(
                        lines[j].form,
                        Form::Attempt(_)
                            | Form::PamFailure { .. }
                            | Form::UserUnknown { .. }
                            | Form::PamMore { .. }
                    )
                });
                if attempted {
                    Outcome::Skipped(Skip::NotAnAttempt)
                } else {
                    match resolve_reading(lines, session, i, a) {
                        Some(r) => Outcome::Events(vec![sshd_draft(l, 0, a, &r, true)]),
                        None => Outcome::Skipped(Skip::AmbiguousSource),
                    }
                }
            }
            Form::PamFailure { .. } | Form::UserUnknown { .. } => {
                if absorbed[i] {
                    Outcome::Skipped(Skip::PamDetail)
                } else {
                    let mut drafts = Vec::new();
                    while pam_cursor < pam_units.len() && pam_units[pam_cursor].line == i {
                        if !pam_units[pam_cursor].paired {
                            drafts.push(pam_draft(
                                lines,
                                session,
                                i,
                                drafts.len() as u32,
                                &unknown_name,
                                false,
                            ));
                        }
                        pam_cursor += 1;
                    }
                    if drafts.is_empty() {
                        Outcome::Skipped(Skip::PamDetail)
                    } else {
                        Outcome::Events(drafts)
                    }
                }
            }
            Form::PamMore { n, .. } => {
                let wanted = (*n as usize) * l.times as usize;
                let mut taken = 0;
                let process = &processes[&(l.host.as_str(), l.pid)];
                let (earlier, _) = around(lines, process, i, SESSION_WINDOW_US);
                let mut earlier: Vec<usize> = earlier.collect();
                earlier.reverse();
                for j in earlier {
                    for k in units_at(&failed_units, j) {
                        if taken < wanted && !failed_units[k].paired {
                            failed_units[k].paired = true;
                            taken += 1;
                        }
                    }
                }
                let drafts: Vec<Draft> = (taken..wanted)
                    .enumerate()
                    .map(|(k, _)| pam_draft(lines, session, i, k as u32, &unknown_name, true))
                    .collect();
                if drafts.is_empty() {
                    Outcome::Skipped(Skip::PamDetail)
                } else {
                    Outcome::Events(drafts)
                }
            }
        };
        out.push(outcome);
    }
    out
}

/// Pairs each PAM failure unit with the first later PAM-method `Failed`
/// unit of its process within the pairing window.
fn pair_within_process(lines: &[Line], pam: &mut [Unit], failed: &mut [Unit]) {
    let mut pending: HashMap<(&str, u32), VecDeque<usize>> = HashMap::new();
    let (mut p, mut f) = (0, 0);
    // Walk both unit lists in line order.
    while p < pam.len() || f < failed.len() {
        let take_pam = f >= failed.len() || (p < pam.len() && pam[p].line < failed[f].line);
        if take_pam {
            let l = &lines[pam[p].line];
            if let Some(pid) = l.pid {
                pending.entry((&l.host, pid)).or_default().push_back(p);
            }
            p += 1;
        } else {
            let l = &lines[failed[f].line];
            if let Some(q) = l
                .pid
                .and_then(|pid| pending.get_mut(&(l.host.as_str(), pid)))
            {
                while let Some(&front) = q.front() {
                    if l.at_us - lines[pam[front].line].at_us > PAIR_WINDOW_US {
                        q.pop_front();
                    } else {
                        break;
                    }
                }
                if let Some(front) = q.pop_front() {
                    pam[front].paired = true;
                    failed[f].paired = true;
                }
            }
            f += 1;
        }
    }
}

/// Pairs PAM units left over with a `keyboard-interactive` `Failed` unit of
/// another process of the same host: same user and source, within the window.
fn pair_keyboard_interactive(
    lines: &[Line],
    pam: &mut [Unit],
    failed: &mut [Unit],
    source_of: impl Fn(usize) -> Option<Endpoint>,
) {
    // The lines of the Failed units, by host.
    let mut by_host: HashMap<&str, Timeline> = HashMap::new();
    for (k, f) in failed.iter().enumerate() {
        if k == 0 || failed[k - 1].line != f.line {
            by_host
                .entry(&lines[f.line].host)
                .or_default()
                .push(lines, f.line);
        }
    }
    for u in pam.iter_mut().filter(|u| !u.paired) {
        let l = &lines[u.line];
        let Some(host) = by_host.get(l.host.as_str()) else {
            continue;
        };
        let (pam_user, rhost) = match &l.form {
            Form::PamFailure { user, rhost } => (user.as_deref(), rhost.parse::<IpAddr>().ok()),
            _ => (None, None),
        };
        let (_, later) = around(lines, host, u.line, PAIR_WINDOW_US);
        let found = later.flat_map(|j| units_at(failed, j)).find(|&k| {
            let fl = &lines[failed[k].line];
            let Form::Attempt(a) = &fl.form else {
                return false;
            };
            !failed[k].paired
                && fl.pid != l.pid
                && a.method
                    .as_deref()
                    .is_some_and(|m| m.starts_with("keyboard-interactive"))
                && pam_user.is_none_or(|pu| a.readings.iter().any(|r| r.user == pu))
                && rhost.is_none_or(|ip| source_of(failed[k].line).is_some_and(|s| s.ip == ip))
        });
        if let Some(k) = found {
            failed[k].paired = true;
            u.paired = true;
        }
    }
}

/// The connection's source, from the process's lines around line `i`
/// that name one source.
fn resolve(lines: &[Line], session: &Timeline, i: usize) -> Option<Endpoint> {
    if let Form::Attempt(a) | Form::MaxAttempts(a) = &lines[i].form {
        if let Some(s) = a.source() {
            return Some(s);
        }
    }
    let mut found: Vec<Endpoint> = Vec::new();
    let at = lines[i].at_us;
    let (earlier, later) = around(lines, session, i, SESSION_WINDOW_US);
    let near = earlier
        .chain(later)
        .filter(|&j| (lines[j].at_us - at).abs() <= SESSION_WINDOW_US);
    for j in near {
        let s = match &lines[j].form {
            Form::Source(s) => Some(*s),
            Form::Attempt(a) | Form::MaxAttempts(a) => a.source(),
            Form::InvalidUserNotice { sources, .. } => match sources.as_slice() {
                [first, rest @ ..] if rest.iter().all(|s| s.ip == first.ip) => Some(*first),
                _ => None,
            },
            _ => None,
        };
        found.extend(s);
    }
    let first = *found.first()?;
    if !found.iter().all(|s| s.ip == first.ip) {
        return None;
    }
    let port = found
        .iter()
        .all(|s| s.port == first.port || s.port.is_none())
        .then_some(first.port)
        .flatten();
    Some(Endpoint { ip: first.ip, port })
}

/// The reading of an attempt line: the one its readings agree on, else
/// the one whose source is the connection's.
fn resolve_reading(
    lines: &[Line],
    session: &Timeline,
    i: usize,
    a: &AttemptLine,
) -> Option<Reading> {
    if a.source().is_some() {
        // Agreeing on the source, readings differ only in where the user
        // ends: a client-supplied ssh1 `ruser` follows the real source, a
        // server-written detail follows it in ssh2 lines.
        let r = if a.readings[0].ruser.is_some() {
            &a.readings[0]
        } else {
            a.readings.last().expect("never empty")
        };
        return Some(r.clone());
    }
    let known = resolve(lines, session, i)?;
    let mut matching = a.readings.iter().filter(|r| {
        r.source.ip == known.ip && (known.port.is_none() || r.source.port == known.port)
    });
    let r = matching.next()?;
    matching.next().is_none().then(|| r.clone())
}

fn sshd_draft(l: &Line, index: u32, a: &AttemptLine, r: &Reading, max_attempts: bool) -> Draft {
    let mut m = Map::new();
    m.insert("source".into(), json!("sshd"));
    m.insert("host".into(), json!(l.host));
    if let Some(method) = &a.method {
        m.insert("method".into(), json!(method));
    }
    m.insert("port".into(), json!(r.source.port));
    m.insert("protocol".into(), json!(r.protocol.as_str()));
    m.insert("invalid_user".into(), json!(a.invalid_user));
    if let Some(ruser) = &r.ruser {
        m.insert("ruser".into(), json!(ruser));
    }
    if max_attempts {
        m.insert("max_attempts_exceeded".into(), json!(true));
    }
    let user = if r.user.is_empty() {
        m.insert("empty_user".into(), json!(true));
        EMPTY_USER.to_owned()
    } else {
        r.user.clone()
    };
    if l.not_utf8 {
        m.insert("not_utf8".into(), json!(true));
    }
    Draft {
        index,
        at_us: l.at_us,
        success: a.success,
        user,
        ip: Some(r.source.ip),
        metadata: m,
    }
}

fn pam_draft(
    lines: &[Line],
    session: &Timeline,
    i: usize,
    index: u32,
    unknown_name: &HashMap<usize, String>,
    more: bool,
) -> Draft {
    let l = &lines[i];
    let (user, rhost) = match &l.form {
        Form::PamFailure { user, rhost } | Form::PamMore { user, rhost, .. } => {
            (user.clone(), Some(rhost.as_str()))
        }
        Form::UserUnknown { user } => (user.clone(), None),
        _ => (None, None),
    };
    let invalid_user = user.is_none() || matches!(l.form, Form::UserUnknown { .. });
    let user = user.or_else(|| unknown_name.get(&i).cloned()).or_else(|| {
        // The process's `Invalid user NAME` notice, the latest before.
        let (mut earlier, _) = around(lines, session, i, SESSION_WINDOW_US);
        earlier.find_map(|j| match &lines[j].form {
            Form::InvalidUserNotice { user, .. } => Some(user.clone()),
            _ => None,
        })
    });
    let mut m = Map::new();
    m.insert("source".into(), json!("pam_unix"));
    m.insert("host".into(), json!(l.host));
    if let Some(r) = rhost {
        m.insert("rhost".into(), json!(r));
    }
    m.insert("invalid_user".into(), json!(invalid_user));
    if more {
        m.insert("pam_more_failures".into(), json!(true));
    }
    let user = match user {
        Some(u) if u.is_empty() => {
            m.insert("empty_user".into(), json!(true));
            EMPTY_USER.to_owned()
        }
        Some(u) => u,
        None => {
            m.insert("unknown_user".into(), json!(true));
            UNKNOWN_USER.to_owned()
        }
    };
    let ip = rhost
        .and_then(|r| r.parse::<IpAddr>().ok())
        .or_else(|| resolve(lines, session, i).map(|s| s.ip));
    if l.not_utf8 {
        m.insert("not_utf8".into(), json!(true));
    }
    Draft {
        index,
        at_us: l.at_us,
        success: false,
        user,
        ip,
        metadata: m,
    }
}
