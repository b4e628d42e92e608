//! Each request is one transaction on a pooled connection of the
//! authenticator role, under `SET LOCAL ROLE` to the caller's role, with
//! the token's claims in `request.jwt.claims`. The extension's bindings
//! and row-level security do all the scoping.
//!
//! A request's database work runs in a task of its own, so a client that
//! goes away cannot cut a transaction in half: it commits or rolls back,
//! and the connection returns to the pool clean (`RecyclingMethod::Clean`
//! also resets the session before the connection is used again).

use crate::identity::Caller;
use crate::problem::ApiError;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Transaction};
use std::path::Path;
use std::time::Duration;

/// The TLS of the database connections, with `sslrootcert` (PEM): the
/// server's certificate is verified against it, chain and host name
/// (libpq's `verify-full`), whenever the URL's `sslmode` (`prefer`, the
/// default, or `require`) leads to TLS. Without `sslrootcert` the API
/// speaks no TLS (a Unix socket or a trusted network): it never encrypts
/// without knowing whom to.
pub fn tls(rootcert: &Path) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let shown = rootcert.display();
    let pem = std::fs::read(rootcert).map_err(|e| format!("database.sslrootcert: {shown}: {e}"))?;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("database.sslrootcert: {shown}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("database.sslrootcert: {shown}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "database.sslrootcert: {shown}: no PEM certificate in it"
        ));
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Builds the pool (connections are opened on demand).
pub fn pool(url: &str, size: usize, rootcert: Option<&Path>) -> Result<Pool, String> {
    let config: tokio_postgres::Config = url.parse().map_err(|e| format!("database.url: {e}"))?;
    let recycling = || ManagerConfig {
        recycling_method: RecyclingMethod::Clean,
    };
    let manager = match rootcert {
        Some(path) => Manager::from_config(config, tls(path)?, recycling()),
        None if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require => {
            return Err(
                "database.url: sslmode=require needs database.sslrootcert (the authority \
                 that signed the server's certificate)"
                    .into(),
            )
        }
        None => Manager::from_config(config, tokio_postgres::NoTls, recycling()),
    };
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| format!("database pool: {e}"))
}

/// A role name as a quoted SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Opens the request's transaction as `caller`.
pub async fn begin<'a>(
    client: &'a mut deadpool_postgres::Client,
    caller: &Caller,
    read_only: bool,
    timeout: Duration,
) -> Result<Transaction<'a>, ApiError> {
    let tx = client
        .build_transaction()
        .read_only(read_only)
        .start()
        .await?;
    tx.batch_execute(&format!(
        "SET LOCAL ROLE {}; SET LOCAL statement_timeout = {}; SET LOCAL TimeZone = 'UTC'",
        quote_ident(&caller.role),
        timeout.as_millis()
    ))
    .await?;
    tx.execute(
        "SELECT pg_catalog.set_config('request.jwt.claims', $1, true)",
        &[&caller.claims.to_string()],
    )
    .await?;
    Ok(tx)
}

/// Takes a connection from the pool.
pub async fn connection(pool: &Pool) -> Result<deadpool_postgres::Client, ApiError> {
    pool.get().await.map_err(|e| {
        tracing::warn!(error = %e, "no database connection");
        ApiError::Unavailable(e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_quoted_as_identifiers() {
        assert_eq!(quote_ident("agency1_analyst"), "\"agency1_analyst\"");
        assert_eq!(
            quote_ident("a\"; RESET ROLE; --"),
            "\"a\"\"; RESET ROLE; --\""
        );
    }
}
