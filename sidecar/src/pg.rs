//! Connecting to PostgreSQL for queries: the control connection of a
//! mirror session, `verify`, `witness-check`, the operator commands and the
//! witness's write-back (the replication stream connects through
//! `pgwire_replication`). TLS as `--pg-sslmode` asks (`crate::tls`); a
//! `--pg-host` that starts with `/` is a Unix socket directory, and, as
//! with libpq, a socket connection is never encrypted whatever the mode.

use crate::config::PostgresConfig;
use crate::preflight::Misconfigured;
use crate::tls::{control_connector, TlsSetupError};

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("{0}")]
    Tls(#[from] TlsSetupError),
    /// PostgreSQL refused the configuration: retrying cannot help.
    #[error("{0}")]
    Misconfigured(#[from] Misconfigured),
    /// The server could not be reached or failed: worth a retry.
    #[error("cannot connect to PostgreSQL at {server}: {}", with_causes(.source))]
    Connect {
        server: String,
        source: tokio_postgres::Error,
    },
}

impl PgError {
    /// Whether retrying cannot help (the operator must change something).
    pub fn is_configuration(&self) -> bool {
        !matches!(self, PgError::Connect { .. })
    }
}

/// An error and its causes, "outer: inner: …" (a refused TLS handshake
/// says why, and a server error its message rather than `db error`).
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        // tokio_postgres says "db error" and puts the server's message in
        // its source: keep only the message.
        if text == "db error" {
            text = c_text;
        } else {
            text.push_str(": ");
            text.push_str(&c_text);
        }
        cause = c.source();
    }
    text
}

/// Opens a query connection; it lives until the client is dropped.
pub async fn connect(config: &PostgresConfig) -> Result<tokio_postgres::Client, PgError> {
    let refused = |source: tokio_postgres::Error| -> PgError {
        match source.as_db_error() {
            Some(db) => match Misconfigured::of_login(db.code().code(), db.message(), config) {
                Some(m) => PgError::Misconfigured(m),
                None => PgError::Connect {
                    server: config.server(),
                    source,
                },
            },
            None => PgError::Connect {
                server: config.server(),
                source,
            },
        }
    };
    let conninfo = config.conninfo();
    if config.socket() {
        spawned(&conninfo, tokio_postgres::NoTls)
            .await
            .map_err(refused)
    } else {
        spawned(&conninfo, control_connector(config)?)
            .await
            .map_err(refused)
    }
}

/// Connects with `tls` and drives the connection on a task of its own.
async fn spawned<T>(conninfo: &str, tls: T) -> Result<tokio_postgres::Client, tokio_postgres::Error>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = tokio_postgres::connect(conninfo, tls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "control connection closed");
        }
    });
    Ok(client)
}
