//! The errors of the one-shot commands (`verify`, `witness-check`, the
//! operator commands) and the process's exit codes. Each error names its
//! cause (the server's own message, never a bare `db error`) and, where the
//! operator must act, what to do.

use crate::mongo_store::StoreError;
use crate::pg::{with_causes, PgError};
use crate::preflight::Misconfigured;
use std::path::PathBuf;

/// The process's exit codes (docs/sidecar.md, "Exit codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done: stopped cleanly, or a command found nothing.
    Ok = 0,
    /// `verify` or `witness-check` found a difference (printed).
    Findings = 1,
    /// An option, the configuration file or a file an option names is
    /// invalid.
    Usage = 2,
    /// A store could not be read (a transient fault: try again).
    Unreadable = 3,
    /// PostgreSQL or the store refuses the configuration (a missing
    /// database, extension, right or publication): fix it, retrying cannot
    /// help.
    Misconfigured = 4,
    /// SIGTERM's `--shutdown-timeout-ms` passed with deliveries in flight:
    /// they stay unacknowledged and are replayed at the next start.
    ShutdownDeadline = 5,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

/// Why a command could not finish.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{0}")]
    Misconfigured(#[from] Misconfigured),
    #[error("{0}")]
    Connect(#[from] PgError),
    #[error("PostgreSQL: {}", with_causes(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("MongoDB: {}", with_causes(.0))]
    Mongo(#[from] mongodb::error::Error),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a PostgreSQL row could not be read: {0}")]
    Row(#[from] crate::documents::RowError),
    /// The command was refused as asked (no such alarm, no such row, …);
    /// the text says what to do.
    #[error("{0}")]
    Refused(String),
}

impl ToolError {
    /// The exit code this error ends the process with.
    pub fn exit(&self) -> Exit {
        match self {
            ToolError::Misconfigured(_) => Exit::Misconfigured,
            ToolError::Connect(e) if e.is_configuration() => Exit::Misconfigured,
            ToolError::Store(e) if e.is_configuration() => Exit::Misconfigured,
            ToolError::Refused(_) => Exit::Usage,
            _ => Exit::Unreadable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_faults_exit_4_and_transient_ones_3() {
        let m = ToolError::Misconfigured(Misconfigured::NotAuditor { role: "r".into() });
        assert_eq!(m.exit(), Exit::Misconfigured);
        let io = ToolError::File {
            path: "/x".into(),
            source: std::io::Error::other("gone"),
        };
        assert_eq!(io.exit(), Exit::Unreadable);
        assert_eq!(ToolError::Refused("no".into()).exit(), Exit::Usage);
    }
}
