//! `authaudit-import sshd` (alias `authaudit-demo import-sshd`): OpenSSH/PAM
//! syslog files into a tenant's log as history (docs/import.md), through
//! `authaudit.import_events`, then a checkpoint and one
//! `authaudit.rebuild_lockout`. Reading the files is `sshd/`.
//!
//! Every file is read before anything is sent: a file that cannot be read
//! (damaged gzip, a year it cannot have) stops the import before the
//! database sees any of it. Each file is then imported in one transaction:
//! it is recorded wholly or not at all. A file the log refuses stops the
//! import; the files before it stay recorded, and a re-run records what is
//! missing and nothing twice (log ids are deterministic). The refusal names
//! the file, the line, the field and the server's SQLSTATE and message.
//! After the files, the recorded history is checkpointed (so
//! `apply_retention` can later remove it: a checkpoint taken after the
//! rebuild's own event, dated now, would anchor a row younger than any
//! horizon) and the lockout state rebuilt, also after a refusal. The
//! summary is printed in every case.

use crate::sshd::{self, uuid_text, Event, FileEvents, Input, Skip, YearChoice};
use authaudit_core::lockout_effect::iso_utc;
use indicatif::{ProgressBar, ProgressStyle};
use postgres::{Client, GenericClient};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

/// Events per `import_events` call (below `authaudit.max_batch_events`).
const BATCH: usize = 500;

/// The fields of an event, as the server's messages name them.
const FIELDS: [&str; 10] = [
    "user_id",
    "ip",
    "occurred_at",
    "metadata",
    "log_id",
    "tenant_id",
    "org_id",
    "channel",
    "event_type",
    "user_agent",
];

/// `authaudit-import sshd`'s arguments.
#[derive(Debug, clap::Args)]
pub struct SshdArgs {
    /// libpq connection string.
    #[arg(long, value_name = "CONNINFO")]
    pub url: String,
    /// Role to `SET ROLE` to after connecting (it needs `authaudit_writer`
    /// and a write binding for the tenant).
    #[arg(long)]
    pub role: Option<String>,
    /// Tenant to import into.
    #[arg(long)]
    pub tenant: String,
    /// Organisation of the events.
    #[arg(long)]
    pub org: Option<String>,
    /// Year of year-less (RFC 3164) lines: `FILE=YYYY` for one file's first
    /// line, or `YYYY` for the earliest line of the other files (read as
    /// one stretch of time). Without it, a file's modification time dates
    /// its last line.
    #[arg(long = "year", value_name = "YYYY|FILE=YYYY")]
    pub years: Vec<String>,
    /// Offset of the hosts' year-less times from UTC.
    #[arg(long, value_name = "+HH:MM", default_value = "+00:00", value_parser = parse_offset_arg)]
    pub utc_offset: i64,
    /// Do not rebuild the lockout state (an importer bound to one
    /// organisation: a tenant-wide writer then calls rebuild_lockout).
    #[arg(long)]
    pub no_rebuild: bool,
    /// Read a last line without a line ending as complete (by default it
    /// may be cut short, and is skipped).
    #[arg(long)]
    pub final_line_complete: bool,
    /// Log files (plain or gzip), in any order.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// The `authaudit-import` command line.
#[derive(Debug, clap::Parser)]
#[command(
    name = "authaudit-import",
    version,
    about = "Imports authentication history into pg_authaudit (docs/import.md)."
)]
pub enum ImportCli {
    /// Imports OpenSSH/PAM syslog files (auth.log, secure; rotated, gzip):
    /// each attempt once, or the line skipped with its reason.
    Sshd(SshdArgs),
}

/// `authaudit-demo import-sshd`, the same importer.
#[derive(Debug, clap::Parser)]
#[command(name = "authaudit-demo import-sshd")]
pub struct DemoAlias {
    #[command(flatten)]
    pub args: SshdArgs,
}

fn parse_offset_arg(s: &str) -> Result<i64, String> {
    parse_offset(s).ok_or_else(|| format!("{s:?} is not an offset such as +02:00"))
}

/// `+HH:MM` / `-HH:MM` as seconds east of UTC.
pub fn parse_offset(s: &str) -> Option<i64> {
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = s[1..].split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 14 && m < 60).then_some(sign * (h * 3600 + m * 60))
}

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Read(#[from] sshd::ReadError),
    #[error(transparent)]
    Plan(#[from] sshd::PlanError),
    #[error("{file} line {line}, {field}: refused by the log ({sqlstate}: {message}); nothing of {file} was recorded")]
    Refused {
        file: String,
        line: usize,
        field: &'static str,
        sqlstate: String,
        message: String,
    },
    #[error("{file} lines {first} to {last}: the database failed ({sqlstate}: {message}); nothing of {file} was recorded")]
    Batch {
        file: String,
        first: usize,
        last: usize,
        sqlstate: String,
        message: String,
    },
    #[error("no session with the database ({}); nothing was recorded", describe(.0))]
    Session(postgres::Error),
    #[error("database: {}", describe(.0))]
    Database(#[from] postgres::Error),
}

/// What became of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStatus {
    Imported,
    Refused,
    NotReached,
    /// No session with the database could be opened.
    NotSent,
}

/// What an import did with one file.
#[derive(Debug, Clone)]
pub struct FileReport {
    pub read: FileEvents,
    pub status: FileStatus,
    pub recorded: i64,
    pub already_recorded: i64,
}

/// What an import did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub files: Vec<FileReport>,
    /// The checkpoint's seq, or why none was taken.
    pub checkpoint: Option<Result<i64, String>>,
    /// `rebuild_lockout`'s (events, accounts, sources, pairs), when run.
    pub rebuilt: Option<(i64, i64, i64, i64)>,
    pub rebuild_asked: bool,
    /// Whether a session with the database was opened.
    pub reached: bool,
}

impl Report {
    fn events(&self) -> impl Iterator<Item = &Event> {
        self.files.iter().flat_map(|f| f.read.events.iter())
    }
}

fn utc(us: i64) -> String {
    iso_utc(us).replace('T', " ").replace("+00:00", "")
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.files {
            let file = &r.read;
            write!(
                f,
                "{}: {} lines, {} events",
                file.name,
                file.lines,
                file.events.len()
            )?;
            if let Some((a, b)) = file.span_us {
                write!(f, ", {} to {} UTC", utc(a), utc(b))?;
            }
            if let Some((y, how)) = file.first_year {
                let how = match how {
                    YearChoice::Given(_) => "given for the file",
                    YearChoice::Shared(_) => "from --year",
                    YearChoice::Modified(_) => "from its modification time",
                };
                write!(f, " (year-less lines from {y}, {how})")?;
            }
            match r.status {
                FileStatus::Imported => writeln!(f)?,
                FileStatus::Refused => writeln!(f, ": refused, nothing of it recorded")?,
                FileStatus::NotReached => {
                    writeln!(f, ": not imported (an earlier file was refused)")?
                }
                FileStatus::NotSent => writeln!(f, ": not imported")?,
            }
            if file.unterminated {
                writeln!(f, "warning: {}: the last line has no line ending (possibly truncated): skipped; --final-line-complete reads it", file.name)?;
            }
            if file.not_utf8_lines > 0 {
                writeln!(f, "note: {}: {} sshd/PAM lines held bytes that are not UTF-8, each replaced by U+FFFD", file.name, file.not_utf8_lines)?;
            }
        }
        let lines: usize = self.files.iter().map(|r| r.read.lines).sum();
        let successes = self.events().filter(|e| e.success).count();
        let failures = self.events().count() - successes;
        let recorded: i64 = self.files.iter().map(|r| r.recorded).sum();
        let before: i64 = self.files.iter().map(|r| r.already_recorded).sum();
        writeln!(
            f,
            "{lines} lines: {failures} failures and {successes} successes; {recorded} recorded now, {before} recorded before"
        )?;
        let mut skipped: BTreeMap<Skip, usize> = BTreeMap::new();
        for r in &self.files {
            for (why, n) in &r.read.skipped {
                *skipped.entry(*why).or_insert(0) += n;
            }
        }
        for (why, n) in &skipped {
            writeln!(f, "skipped {n}: {why}")?;
        }
        if !self.reached {
            return write!(f, "nothing recorded: no session with the database");
        }
        if failures + successes == 0 {
            return write!(
                f,
                "no authentication attempt in {lines} lines: nothing recorded, lockout state unchanged"
            );
        }
        match &self.checkpoint {
            Some(Ok(seq)) => writeln!(f, "checkpoint at seq {seq} (the history before the rebuild; apply_retention removes up to it once it is past the horizon)")?,
            Some(Err(why)) => writeln!(f, "warning: no checkpoint taken ({why}): apply_retention cannot remove this history until one is taken before a newer event")?,
            None => {}
        }
        match (self.rebuilt, self.rebuild_asked) {
            (Some((e, a, s, p)), _) => write!(
                f,
                "lockout state rebuilt from {e} events: {a} accounts, {s} sources, {p} (source, account) pairs"
            ),
            (None, true) => write!(f, "lockout state not rebuilt (the rebuild failed: call authaudit.rebuild_lockout)"),
            (None, false) => write!(f, "lockout state not rebuilt (call authaudit.rebuild_lockout)"),
        }
    }
}

/// Where the events go.
pub struct Options<'a> {
    pub tenant: &'a str,
    pub org: Option<&'a str>,
    pub rebuild: bool,
}

fn event_json(e: &Event, o: &Options<'_>) -> serde_json::Value {
    serde_json::json!({
        "log_id": uuid_text(&e.log_id),
        "tenant_id": o.tenant,
        "org_id": o.org,
        "event_type": if e.success { "login_success" } else { "login_failed" },
        "user_id": e.user,
        "channel": "ssh",
        "ip": e.ip.map(|ip| ip.to_string()),
        "occurred_at": iso_utc(e.at_us),
        "metadata": e.metadata,
    })
}

/// Sends one batch: (new, already recorded).
fn send(
    c: &mut impl GenericClient,
    events: &[serde_json::Value],
) -> Result<(i64, i64), postgres::Error> {
    let json = serde_json::Value::Array(events.to_vec()).to_string();
    let row = c.query_one(
        "SELECT count(*) FILTER (WHERE recorded_at >= statement_timestamp()), count(*) \
           FROM authaudit.import_events($1::text::jsonb, rebuild => false)",
        &[&json],
    )?;
    let (new, all): (i64, i64) = (row.get(0), row.get(1));
    Ok((new, all - new))
}

/// The server's SQLSTATE and message, or `-----` and the error with its
/// causes (`postgres::Error` shows only its kind, such as "db error").
fn state_and_message(e: &postgres::Error) -> (String, String) {
    if let Some(d) = e.as_db_error() {
        return (d.code().code().to_owned(), d.message().to_owned());
    }
    let mut message = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        message.push_str(&format!(": {c}"));
        cause = c.source();
    }
    ("-----".to_owned(), message)
}

/// `SQLSTATE: message` for the server's errors, else the error's causes.
fn describe(e: &postgres::Error) -> String {
    match state_and_message(e) {
        (state, message) if e.as_db_error().is_some() => format!("{state}: {message}"),
        (_, message) => message,
    }
}

/// The field a server message is about.
fn field_of(message: &str) -> &'static str {
    FIELDS
        .iter()
        .copied()
        .find(|f| {
            message
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .any(|w| w == *f)
        })
        .unwrap_or("event")
}

/// Sends `events` in a transaction that is rolled back: the error, if any.
fn probe(
    c: &mut Client,
    events: &[&serde_json::Value],
) -> Result<Option<postgres::Error>, postgres::Error> {
    let mut tx = c.transaction()?;
    let json: Vec<serde_json::Value> = events.iter().map(|j| (*j).clone()).collect();
    let outcome = send(&mut tx, &json).err();
    tx.rollback()?;
    Ok(outcome)
}

/// Finds the event of `batch` the log refuses: halves of the batch, each
/// sent in a transaction that is rolled back, narrow it to one event
/// (refusals are per event: its fields, or its log id recorded before with
/// other content).
fn locate(
    c: &mut Client,
    file: &str,
    batch: &[(&Event, serde_json::Value)],
) -> Result<Option<ImportError>, postgres::Error> {
    let json: Vec<&serde_json::Value> = batch.iter().map(|(_, j)| j).collect();
    let (mut lo, mut hi) = (0, batch.len());
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if probe(c, &json[lo..mid])?.is_some() {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let Some(err) = probe(c, &json[lo..hi])? else {
        return Ok(None);
    };
    let (sqlstate, message) = state_and_message(&err);
    Ok(Some(ImportError::Refused {
        file: file.to_owned(),
        line: batch[lo].0.line,
        field: field_of(&message),
        sqlstate,
        message,
    }))
}

/// Imports one file in one transaction: (new, already recorded).
fn import_file(
    c: &mut Client,
    file: &FileEvents,
    o: &Options<'_>,
    progress: &ProgressBar,
) -> Result<(i64, i64), ImportError> {
    let events: Vec<(&Event, serde_json::Value)> =
        file.events.iter().map(|e| (e, event_json(e, o))).collect();
    let mut tx = c.transaction()?;
    let (mut new, mut before) = (0, 0);
    for chunk in events.chunks(BATCH) {
        let json: Vec<serde_json::Value> = chunk.iter().map(|(_, j)| j.clone()).collect();
        match send(&mut tx, &json) {
            Ok((n, b)) => {
                new += n;
                before += b;
                progress.inc(chunk.len() as u64);
                progress.set_message(format!(
                    "{} line {}",
                    file.name,
                    chunk[chunk.len() - 1].0.line
                ));
            }
            Err(err) => {
                drop(tx);
                if let Some(refusal) = locate(c, &file.name, chunk)? {
                    return Err(refusal);
                }
                let (sqlstate, message) = state_and_message(&err);
                return Err(ImportError::Batch {
                    file: file.name.clone(),
                    first: chunk[0].0.line,
                    last: chunk[chunk.len() - 1].0.line,
                    sqlstate,
                    message,
                });
            }
        }
    }
    tx.commit()?;
    Ok((new, before))
}

/// Imports `files` (read by `sshd::read_files`) into `o.tenant`. The
/// report is returned whatever happened; the error, if any, beside it.
pub fn import(
    c: &mut Client,
    files: Vec<FileEvents>,
    o: &Options<'_>,
) -> (Report, Option<ImportError>) {
    let total: usize = files.iter().map(|f| f.events.len()).sum();
    let progress = ProgressBar::new(total as u64);
    progress.set_style(
        ProgressStyle::with_template("{spinner} {msg}: {pos}/{len} events ({per_sec}, {elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut report = Report {
        rebuild_asked: o.rebuild,
        reached: true,
        ..Report::default()
    };
    let mut error = None;
    for read in files {
        if error.is_some() {
            report.files.push(FileReport {
                read,
                status: FileStatus::NotReached,
                recorded: 0,
                already_recorded: 0,
            });
            continue;
        }
        let (status, recorded, already_recorded) = if read.events.is_empty() {
            (FileStatus::Imported, 0, 0)
        } else {
            match import_file(c, &read, o, &progress) {
                Ok((n, b)) => (FileStatus::Imported, n, b),
                Err(e) => {
                    error = Some(e);
                    (FileStatus::Refused, 0, 0)
                }
            }
        };
        report.files.push(FileReport {
            read,
            status,
            recorded,
            already_recorded,
        });
    }
    progress.finish_and_clear();
    let imported = report
        .files
        .iter()
        .any(|f| f.status == FileStatus::Imported && !f.read.events.is_empty());
    if imported {
        report.checkpoint = Some(
            c.query_one("SELECT seq FROM authaudit.checkpoint($1)", &[&o.tenant])
                .map(|r| r.get(0))
                .map_err(|e| {
                    let (s, m) = state_and_message(&e);
                    format!("{s}: {m}")
                }),
        );
        if o.rebuild {
            match c.query_one(
                "SELECT events, accounts, sources, pairs FROM authaudit.rebuild_lockout($1)",
                &[&o.tenant],
            ) {
                Ok(row) => report.rebuilt = Some((row.get(0), row.get(1), row.get(2), row.get(3))),
                Err(e) => {
                    error.get_or_insert(ImportError::Database(e));
                }
            }
        }
    }
    (report, error)
}

/// Runs `authaudit-import sshd` with `args`; `name` prefixes messages.
/// Exit status: 0 done, 1 stopped once the database was reached, 2 bad
/// arguments, 3 nothing recorded (a file unread, no session).
pub fn run_sshd(name: &str, args: SshdArgs) -> ExitCode {
    let (report, error) = run(args);
    if let Some(report) = report {
        println!("{report}");
    }
    let Some(e) = error else {
        return ExitCode::SUCCESS;
    };
    eprintln!("{name}: {e}");
    ExitCode::from(match e {
        ImportError::Usage(_) => 2,
        ImportError::Read(_) | ImportError::Plan(_) | ImportError::Session(_) => 3,
        ImportError::Refused { .. } | ImportError::Batch { .. } | ImportError::Database(_) => 1,
    })
}

/// The year choice of each file from the `--year` arguments.
fn year_choices(args: &SshdArgs, inputs: &[Input]) -> Result<Vec<Option<YearChoice>>, ImportError> {
    let mut shared = None;
    let mut given: BTreeMap<String, i32> = BTreeMap::new();
    let year = |s: &str| -> Result<i32, ImportError> {
        s.parse()
            .ok()
            .filter(|y| (1970..=9999).contains(y))
            .ok_or_else(|| {
                ImportError::Usage(format!("--year {s}: a year such as 2025 (or FILE=2025)"))
            })
    };
    for y in &args.years {
        match y.rsplit_once('=') {
            Some((file, y)) => {
                given.insert(file.to_owned(), year(y)?);
            }
            None if shared.is_some() => {
                return Err(ImportError::Usage(
                    "--year YYYY is given twice: give one, or FILE=YYYY per file".into(),
                ))
            }
            None => shared = Some(year(y)?),
        }
    }
    for file in given.keys() {
        if !inputs.iter().any(|i| &i.name == file) {
            return Err(ImportError::Usage(format!(
                "--year {file}=…: {file} is not one of the files given"
            )));
        }
    }
    Ok(inputs
        .iter()
        .map(|i| {
            given
                .get(&i.name)
                .map(|y| YearChoice::Given(*y))
                .or(shared.map(YearChoice::Shared))
                .or(i.modified.map(YearChoice::Modified))
        })
        .collect())
}

/// The summary (once the files were read) and the error, if any.
fn run(args: SshdArgs) -> (Option<Report>, Option<ImportError>) {
    let files = match read(&args) {
        Ok(files) => files,
        Err(e) => return (None, Some(e)),
    };
    let mut c = match session(&args) {
        Ok(c) => c,
        Err(e) => {
            let files = files
                .into_iter()
                .map(|read| FileReport {
                    read,
                    status: FileStatus::NotSent,
                    recorded: 0,
                    already_recorded: 0,
                })
                .collect();
            let report = Report {
                files,
                ..Report::default()
            };
            return (Some(report), Some(ImportError::Session(e)));
        }
    };
    let (report, error) = import(
        &mut c,
        files,
        &Options {
            tenant: &args.tenant,
            org: args.org.as_deref(),
            rebuild: !args.no_rebuild,
        },
    );
    (Some(report), error)
}

/// Reads every file given.
fn read(args: &SshdArgs) -> Result<Vec<FileEvents>, ImportError> {
    let inputs = args
        .files
        .iter()
        .map(|p| Input::read(p))
        .collect::<Result<Vec<_>, _>>()?;
    let choices = year_choices(args, &inputs)?;
    let files = sshd::read_files(
        &inputs,
        &choices,
        &sshd::ReadOptions {
            namespace: &args.tenant,
            utc_offset_s: args.utc_offset,
            final_line_complete: args.final_line_complete,
        },
    )?;
    Ok(files)
}

/// Connects, and takes `--role`.
fn session(args: &SshdArgs) -> Result<Client, postgres::Error> {
    let mut c = postgres::Client::connect(&args.url, postgres::NoTls)?;
    if let Some(role) = &args.role {
        c.batch_execute(&format!("SET ROLE \"{}\"", role.replace('"', "\"\"")))?;
    }
    Ok(c)
}
