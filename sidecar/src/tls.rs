//! TLS with libpq's `sslmode` meanings, for every connection the sidecar
//! opens to PostgreSQL (the replication stream, the control connection and
//! `verify`) and to a SIEM collector over `tls://` (`siem.rs`).
//!
//! - `disable`: plain TCP.
//! - `prefer` (the default, as in libpq): TLS when the server offers it,
//!   without checking its certificate; plain otherwise.
//! - `require`: TLS or no connection; the certificate is not checked.
//! - `verify-ca`: TLS, and the certificate must chain to `--pg-sslrootcert`.
//! - `verify-full`: as `verify-ca`, and the certificate must name the host.

use crate::config::{PostgresConfig, SslMode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error as TlsError, RootCertStore,
    SignatureScheme,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why TLS could not be set up (before any connection is tried).
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("root certificates {path}: {message}")]
    RootCert { path: PathBuf, message: String },
    #[error("TLS: {0}")]
    Rustls(#[from] TlsError),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn root_store(path: &Path) -> Result<RootCertStore, TlsSetupError> {
    let bad = |message: String| TlsSetupError::RootCert {
        path: path.to_path_buf(),
        message,
    };
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        store
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if store.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    Ok(store)
}

/// Checks the server's certificate as the mode asks.
#[derive(Debug)]
struct Verifier {
    mode: SslMode,
    /// The chain (and name) check; None when the mode checks nothing.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let Some(webpki) = &self.webpki else {
            // prefer / require: encrypted, not authenticated (as libpq).
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            // verify-ca: a trusted chain is enough, whatever name it carries.
            Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if self.mode == SslMode::VerifyCa => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS client configuration that checks the server's certificate as
/// `mode` asks (`rootcert`: the authorities verify-ca and verify-full
/// trust).
pub fn client_config(
    mode: SslMode,
    rootcert: Option<&Path>,
) -> Result<ClientConfig, TlsSetupError> {
    let provider = provider();
    let webpki = match (rootcert, mode.verifies()) {
        (Some(path), true) => Some(
            WebPkiServerVerifier::builder_with_provider(
                Arc::new(root_store(path)?),
                provider.clone(),
            )
            .build()
            .map_err(|e| TlsSetupError::Rustls(TlsError::General(e.to_string())))?,
        ),
        _ => None,
    };
    let verifier = Verifier {
        mode,
        webpki,
        provider: provider.clone(),
    };
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// The TLS connector of the control connection and `verify`.
pub fn control_connector(
    postgres: &PostgresConfig,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, TlsSetupError> {
    let config = client_config(postgres.sslmode, postgres.sslrootcert.as_deref())?;
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The TLS settings of the replication stream (none over a Unix socket,
/// as with libpq).
pub fn replication_tls(postgres: &PostgresConfig) -> pgwire_replication::TlsConfig {
    use pgwire_replication::SslMode as M;
    pgwire_replication::TlsConfig {
        mode: match postgres.sslmode {
            _ if postgres.socket() => M::Disable,
            SslMode::Disable => M::Disable,
            SslMode::Prefer => M::Prefer,
            SslMode::Require => M::Require,
            SslMode::VerifyCa => M::VerifyCa,
            SslMode::VerifyFull => M::VerifyFull,
        },
        ca_pem_path: postgres.sslrootcert.clone(),
        ..Default::default()
    }
}
