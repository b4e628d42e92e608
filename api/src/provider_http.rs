//! HTTP to the identity provider: its key set (`identity.jwks_url`, a
//! GET) and the admin interface's token requests (`admin.token_endpoint`,
//! a form POST). One HTTP/1.1 request over TLS with the Web PKI's roots
//! (plain HTTP only to a loopback address), a deadline, and a size limit.

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::Uri;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;

/// The largest key set accepted.
pub const MAX_BYTES: usize = 1024 * 1024;

/// Whether `url` may be fetched: `https://`, or `http://` to a loopback
/// host. Returns the parsed URI or why not.
pub fn check(url: &str) -> Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    let host = uri.host().ok_or("the URL has no host")?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("the URL must not carry credentials".into());
    }
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if matches!(host, "127.0.0.1" | "[::1]" | "::1" | "localhost") => Ok(uri),
        Some("http") => Err("plain http only to a loopback address; use https".into()),
        _ => Err("the URL must be https://".into()),
    }
}

/// GETs `url` within `deadline`; the body (200 only) as text.
pub async fn get(url: &str, deadline: Duration) -> Result<String, String> {
    let (status, body) = send(url, None, deadline).await?;
    if status != 200 {
        return Err(format!("HTTP {status}"));
    }
    Ok(body)
}

/// POSTs `form` (`application/x-www-form-urlencoded`) to `url` within
/// `deadline`; the status and the body as text.
pub async fn post_form(
    url: &str,
    form: String,
    deadline: Duration,
) -> Result<(u16, String), String> {
    send(url, Some(form), deadline).await
}

async fn send(
    url: &str,
    form: Option<String>,
    deadline: Duration,
) -> Result<(u16, String), String> {
    tokio::time::timeout(deadline, send_now(url, form))
        .await
        .map_err(|_| format!("no answer within {} s", deadline.as_secs()))?
}

async fn send_now(url: &str, form: Option<String>) -> Result<(u16, String), String> {
    let uri = check(url)?;
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connect {host}:{port}: {e}"))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    if https {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("{host}: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host}: {e}"))?;
        request(TokioIo::new(tls), &authority, &path, form).await
    } else {
        request(TokioIo::new(tcp), &authority, &path, form).await
    }
}

async fn request<T>(
    io: TokioIo<T>,
    authority: &str,
    path: &str,
    form: Option<String>,
) -> Result<(u16, String), String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let builder = match &form {
        Some(_) => hyper::Request::post(path).header(
            hyper::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        ),
        None => hyper::Request::get(path),
    };
    let req = builder
        .header(hyper::header::HOST, authority)
        .header(hyper::header::ACCEPT, "application/json")
        .header(hyper::header::USER_AGENT, "authaudit-api")
        .body(Full::new(Bytes::from(form.unwrap_or_default())))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_BYTES)
        .collect()
        .await
        .map_err(|e| format!("the answer could not be read (at most {MAX_BYTES} bytes): {e}"))?
        .to_bytes();
    let text = String::from_utf8(body.to_vec()).map_err(|_| "the answer is not UTF-8")?;
    Ok((status, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http_is_fetched() {
        assert!(check("https://idp.example.org/realms/a/protocol/openid-connect/certs").is_ok());
        assert!(check("http://127.0.0.1:8080/jwks").is_ok());
        assert!(check("http://localhost/jwks").is_ok());
        for bad in [
            "http://idp.example.org/jwks",
            "ftp://idp.example.org/jwks",
            "https://user:pw@idp.example.org/jwks",
            "/jwks",
            "not a url",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
