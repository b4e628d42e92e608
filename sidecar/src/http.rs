//! The HTTP endpoint on `--metrics-listen` (hyper, HTTP/1.1):
//! `GET /metrics` and `GET /health`.

use crate::metrics::Metrics;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT_0_0_4: &str = "text/plain; version=0.0.4; charset=utf-8";
/// A client that has not sent its request headers by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `/metrics` and `/health` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let m = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let reply = respond(&m, &req);
                async move { Ok::<_, Infallible>(reply) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}

/// Whether the client's `Accept` header asks for OpenMetrics (Prometheus
/// lists it first; anything else gets the 0.0.4 text format).
fn wants_openmetrics<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|m| {
            m.split(';').next().is_some_and(|t| {
                t.trim()
                    .eq_ignore_ascii_case("application/openmetrics-text")
            })
        })
}

fn respond<B>(m: &Metrics, req: &Request<B>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, ctype: &'static str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static(ctype));
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let om = wants_openmetrics(req);
            let ctype = if om { OPENMETRICS } else { TEXT_0_0_4 };
            reply(StatusCode::OK, ctype, m.render(om))
        }
        "/health" => match m.health() {
            None => reply(StatusCode::OK, "text/plain", "ok\n".into()),
            Some(why) => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", why),
        },
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, accept: Option<&str>) -> Request<()> {
        let mut b = Request::builder().uri(path);
        if let Some(a) = accept {
            b = b.header(ACCEPT, a);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn the_format_follows_the_accept_header() {
        let m = Metrics::new(false);
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let r = respond(&m, &get("/metrics", Some(prometheus)));
        assert_eq!(r.headers()[CONTENT_TYPE], OPENMETRICS);
        let r = respond(&m, &get("/metrics", Some("text/plain")));
        assert_eq!(r.headers()[CONTENT_TYPE], TEXT_0_0_4);
        let r = respond(&m, &get("/metrics", None));
        assert_eq!(r.headers()[CONTENT_TYPE], TEXT_0_0_4);
    }

    #[test]
    fn health_is_503_until_streaming_and_other_paths_are_404() {
        let m = Metrics::new(false);
        assert_eq!(
            respond(&m, &get("/health", None)).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        m.streaming.set(1);
        m.last_progress_unix.store(
            crate::metrics::unix_now_us() / 1_000_000,
            std::sync::atomic::Ordering::Relaxed,
        );
        assert_eq!(respond(&m, &get("/health", None)).status(), StatusCode::OK);
        m.tamper_unresolved.set(1);
        assert_eq!(
            respond(&m, &get("/health", None)).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            respond(&m, &get("/nope", None)).status(),
            StatusCode::NOT_FOUND
        );
        let post = Request::builder()
            .method(Method::POST)
            .uri("/metrics")
            .body(())
            .unwrap();
        assert_eq!(respond(&m, &post).status(), StatusCode::METHOD_NOT_ALLOWED);
    }
}
