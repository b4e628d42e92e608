//! The sshd importer's reading: OpenSSH and PAM syslog files to
//! authentication events (docs/import.md). Pure: bytes in, events and the
//! reasons for skipped lines out; `import.rs` sends them to
//! `authaudit.import_events`.
//!
//! A file is read in four steps: each line's syslog envelope
//! ([`envelope`]: RFC 3164, RFC 3339, RFC 5424, Solaris tags) and message
//! form ([`forms`]: complete forms only, never a prefix); the year of
//! year-less lines ([`year`]); which lines are attempts, each once, by sshd
//! process ([`session`]: PAM lines beside sshd's, PAM-only failures,
//! "maximum attempts" sessions); and log ids that sort as the events
//! happened, file by file ([`log_id`]).
//!
//! Damaged input: a last line without a line ending may be cut short and
//! is skipped (unless the caller says it is complete); bytes that are not
//! UTF-8 are replaced by U+FFFD (other programs' lines are skipped anyway);
//! gzip is read ([`input`]).

pub mod envelope;
pub mod forms;
pub mod input;
pub mod log_id;
pub mod session;
pub mod year;

#[cfg(test)]
mod corpus;

pub use forms::Skip;
pub use input::{Input, ReadError};
pub use log_id::uuid_text;
pub use year::YearChoice;

use envelope::Stamp;
use forms::{Form, Program};
use serde_json::{Map, Value};
use session::{Line, Outcome};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::ops::Range;

/// One event to import.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The line it was read from (1-based).
    pub line: usize,
    pub log_id: [u8; 16],
    pub at_us: i64,
    pub success: bool,
    pub user: String,
    pub ip: Option<IpAddr>,
    pub metadata: Map<String, Value>,
}

/// A file's events, in line order, and what was not recorded.
#[derive(Debug, Clone, Default)]
pub struct FileEvents {
    pub name: String,
    pub lines: usize,
    pub events: Vec<Event>,
    pub skipped: BTreeMap<Skip, usize>,
    /// sshd and PAM lines whose bytes were not all UTF-8.
    pub not_utf8_lines: usize,
    /// The last line had no line ending and was skipped.
    pub unterminated: bool,
    /// The year of the first year-less line, and how it was chosen.
    pub first_year: Option<(i64, YearChoice)>,
    /// The times of the first and last dated lines (Unix µs).
    pub span_us: Option<(i64, i64)>,
}

/// How files are read.
#[derive(Debug, Clone)]
pub struct ReadOptions<'a> {
    /// Mixed into the log ids (the tenant).
    pub namespace: &'a str,
    /// The offset of year-less times, seconds east of UTC.
    pub utc_offset_s: i64,
    /// Read a last line without a line ending as complete.
    pub final_line_complete: bool,
}

/// Why files could not be read into events.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{file}: the year of its lines is not known (no modification time): give --year {file}=YYYY")]
    NoYear { file: String },
    #[error("{file} line {line}: {month:02}-{day:02} read in {year}, a year without that day: the year is wrong (give --year {file}=YYYY)")]
    NoSuchDay {
        file: String,
        line: usize,
        year: i64,
        month: u32,
        day: u32,
    },
}

/// A line with an envelope.
struct Entry {
    number: usize,
    raw: Range<usize>,
    stamp: Stamp,
    /// Index into the file's sshd/PAM lines.
    line: Option<usize>,
}

struct Scanned<'i> {
    input: &'i Input,
    entries: Vec<Entry>,
    lines: Vec<Line>,
    out: FileEvents,
}

fn scan<'i>(input: &'i Input, o: &ReadOptions<'_>) -> Scanned<'i> {
    let bytes = &input.bytes;
    let mut out = FileEvents {
        name: input.name.clone(),
        ..FileEvents::default()
    };
    let mut entries = Vec::new();
    let mut lines = Vec::new();
    let mut start = 0;
    let mut number = 0;
    while start < bytes.len() {
        let end = bytes[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| start + p);
        let (raw, next) = match end {
            Some(e) => (start..e, e + 1),
            None => (start..bytes.len(), bytes.len()),
        };
        start = next;
        number += 1;
        out.lines += 1;
        let skip = |out: &mut FileEvents, why| *out.skipped.entry(why).or_insert(0) += 1;
        if end.is_none() && !o.final_line_complete {
            out.unterminated = true;
            skip(&mut out, Skip::Unterminated);
            continue;
        }
        let mut body = &bytes[raw.clone()];
        if let Some(b) = body.strip_suffix(b"\r") {
            body = b;
        }
        let text = String::from_utf8_lossy(body);
        let Some(env) = envelope::parse(&text) else {
            skip(&mut out, Skip::Malformed);
            continue;
        };
        let program = forms::program(env.program);
        let mut entry = Entry {
            number,
            raw,
            stamp: env.stamp,
            line: None,
        };
        if program == Program::Other {
            skip(&mut out, Skip::NotSshd);
        } else {
            let not_utf8 = matches!(text, std::borrow::Cow::Owned(_));
            out.not_utf8_lines += usize::from(not_utf8);
            let (times, form) = match forms::repeated(env.message) {
                Ok((times, m)) => (times, forms::read(program, m)),
                Err(why) => (1, Form::Skip(why)),
            };
            entry.line = Some(lines.len());
            lines.push(Line {
                at_us: 0,
                host: env.host.to_owned(),
                pid: env.pid,
                times,
                form,
                not_utf8,
            });
        }
        entries.push(entry);
    }
    Scanned {
        input,
        entries,
        lines,
        out,
    }
}

/// Reads `inputs` into events: `choices[i]` says where the year of file
/// `i`'s year-less lines comes from (`None`: from nowhere, an error if it
/// has any).
pub fn read_files(
    inputs: &[Input],
    choices: &[Option<YearChoice>],
    o: &ReadOptions<'_>,
) -> Result<Vec<FileEvents>, PlanError> {
    let mut scanned: Vec<Scanned<'_>> = inputs.iter().map(|i| scan(i, o)).collect();
    let spans: Vec<year::Span> = scanned
        .iter()
        .map(|s| year::Span::of(s.entries.iter().map(|e| e.stamp)))
        .collect();
    // A file without a choice has no year-less line, or is refused.
    let mut resolved = Vec::with_capacity(inputs.len());
    for ((s, span), choice) in scanned.iter().zip(&spans).zip(choices) {
        match choice {
            Some(c) => resolved.push(*c),
            None if span.first.is_none() => resolved.push(YearChoice::Shared(1970)),
            None => {
                return Err(PlanError::NoYear {
                    file: s.input.name.clone(),
                })
            }
        }
    }
    let years = year::first_years(&spans, &resolved, o.utc_offset_s);
    let mut files = Vec::with_capacity(inputs.len());
    for ((s, first_year), choice) in scanned.iter_mut().zip(years).zip(resolved) {
        let mut calendar = year::Calendar::new(first_year.unwrap_or(1970), o.utc_offset_s);
        s.out.first_year = first_year.map(|y| (y, choice));
        let mut dated = Vec::with_capacity(s.entries.len());
        for e in &s.entries {
            let at = calendar.date(e.stamp).map_err(|d| PlanError::NoSuchDay {
                file: s.input.name.clone(),
                line: e.number,
                year: d.year,
                month: d.month,
                day: d.day,
            })?;
            if let Some(l) = e.line {
                s.lines[l].at_us = at;
            }
            dated.push(at);
        }
        s.out.span_us = dated.iter().min().copied().zip(dated.iter().max().copied());
        files.push(finish(s, &dated, o.namespace));
    }
    Ok(files)
}

/// Decides the file's attempts and gives them their log ids.
fn finish(s: &Scanned<'_>, dated: &[i64], namespace: &str) -> FileEvents {
    let mut out = s.out.clone();
    let Some(first) = s.entries.first() else {
        return out;
    };
    let file = log_id::FileKey::new(
        dated[0].div_euclid(1_000_000),
        &s.input.bytes[first.raw.clone()],
    );
    let outcomes = session::assemble(&s.lines);
    let mut per_second: HashMap<i64, u32> = HashMap::new();
    let mut seen: HashMap<&[u8], u32> = HashMap::new();
    for e in &s.entries {
        let Some(l) = e.line else { continue };
        let raw = &s.input.bytes[e.raw.clone()];
        match &outcomes[l] {
            Outcome::Skipped(why) => *out.skipped.entry(*why).or_insert(0) += 1,
            Outcome::Events(drafts) => {
                let occurrence = {
                    let n = seen.entry(raw).or_insert(0);
                    *n += 1;
                    *n - 1
                };
                for d in drafts {
                    let second = d.at_us.div_euclid(1_000_000);
                    let ordinal = {
                        let n = per_second.entry(second).or_insert(0);
                        *n += 1;
                        *n - 1
                    };
                    let origin = log_id::Origin {
                        namespace,
                        line: raw,
                        occurrence,
                        index: d.index,
                    };
                    out.events.push(Event {
                        line: e.number,
                        log_id: log_id::log_id(second, file, ordinal, origin),
                        at_us: d.at_us,
                        success: d.success,
                        user: d.user.clone(),
                        ip: d.ip,
                        metadata: d.metadata.clone(),
                    });
                }
            }
        }
    }
    out
}
