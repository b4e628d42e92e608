//! Connecting to PostgreSQL for queries: the control connection of a
//! mirror session, `verify`, `witness-check` and the witness's write-back
//! (the replication stream connects through `pgwire_replication`). TLS as
//! `--pg-sslmode` asks (`crate::tls`).

use crate::config::Options;
use crate::tls::{control_connector, TlsSetupError};

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("{0}")]
    Tls(#[from] TlsSetupError),
    #[error("PostgreSQL: {}", with_causes(.0))]
    Connect(#[from] tokio_postgres::Error),
}

/// An error and its causes, "outer: inner: …" (a refused TLS handshake
/// says why).
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Opens a query connection; it lives until the client is dropped.
pub async fn connect(opts: &Options) -> Result<tokio_postgres::Client, PgError> {
    let connector = control_connector(opts)?;
    let (client, connection) = tokio_postgres::connect(&opts.pg_conninfo(), connector).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "control connection closed");
        }
    });
    Ok(client)
}
