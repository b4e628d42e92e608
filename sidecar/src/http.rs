//! The HTTP endpoint on `--metrics-listen` (hyper, HTTP/1.1):
//! `GET /metrics` and `GET /health`, with limits, so that no client can
//! grow the sidecar's memory or spin its accept loop:
//!
//! - at most `max_connections` at once: a connection past the cap is
//!   closed as soon as it is accepted (no file descriptor is kept);
//! - a request head (request line and headers) of at most
//!   `max_header_bytes`, answered `431` and closed beyond; the read buffer
//!   is held to the same size, so a connection costs a few KiB;
//! - a request head read within `header_timeout` from the time the
//!   connection waits for one (accepted, or idle after a response), else
//!   the connection is closed; and any connection closed after
//!   [`CONNECTION_LIFETIME`], whatever it does (a client that never reads
//!   its response);
//! - an accept that fails for want of resources (`EMFILE`, `ENFILE`,
//!   `ENOBUFS`, `ENOMEM`) is retried after a back-off of 10 ms doubling to
//!   1 s, instead of at once: the pending connection keeps the socket
//!   readable, so an immediate retry would spin.
//!
//! Each refusal is counted in `authaudit_sidecar_http_refused_total{reason}`.

use crate::metrics::{HttpRefusal, Metrics};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT_0_0_4: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The longest a connection stays open, whatever it does.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// The first and the longest wait after an accept that failed for want of
/// resources.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));
/// The smallest read buffer hyper takes.
const MIN_BUFFER: usize = 8192;
/// Headers a request may carry.
const MAX_HEADERS: usize = 64;

/// The endpoint's limits (`--metrics-max-connections`,
/// `--metrics-max-header-bytes`, `--metrics-header-timeout-ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub header_timeout: Duration,
}

impl Limits {
    /// The limits `[metrics]` sets.
    pub fn of(config: &crate::config::MetricsConfig) -> Limits {
        Limits {
            max_connections: config.max_connections,
            max_header_bytes: config.max_header_bytes,
            header_timeout: Duration::from_millis(config.header_timeout_ms),
        }
    }
}

/// Whether an accept failed for want of resources: the connection waits in
/// the backlog and the next accept would fail the same way at once.
fn out_of_resources(e: &std::io::Error) -> bool {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    const ENOBUFS: i32 = 105;
    const ENOMEM: i32 = 12;
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM))
}

/// Serves `/metrics` and `/health` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, limits: Limits) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(MIN_BUFFER))
        .max_headers(MAX_HEADERS);
    let builder = Arc::new(builder);
    let mut backoff = ACCEPT_BACKOFF.0;
    loop {
        let socket = match listener.accept().await {
            Ok((socket, _)) => {
                backoff = ACCEPT_BACKOFF.0;
                socket
            }
            Err(e) if out_of_resources(&e) => {
                metrics.http_refused(HttpRefusal::AcceptError);
                if backoff == ACCEPT_BACKOFF.0 {
                    tracing::warn!(error = %e, "the metrics endpoint cannot accept a connection; backing off");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                continue;
            }
            // The client went away before the accept: nothing to wait for.
            Err(_) => continue,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.http_refused(HttpRefusal::ConnectionLimit);
            drop(socket);
            continue;
        };
        let (m, builder) = (metrics.clone(), builder.clone());
        tokio::spawn(async move {
            m.http_connections.inc();
            let service = hyper::service::service_fn({
                let m = m.clone();
                move |req: Request<Incoming>| {
                    let reply = respond(&m, &req);
                    async move { Ok::<_, Infallible>(reply) }
                }
            });
            let conn = builder.serve_connection(TokioIo::new(socket), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                Ok(Err(e)) if e.is_parse_too_large() => m.http_refused(HttpRefusal::HeaderTooLarge),
                Ok(Err(e)) if e.is_timeout() => m.http_refused(HttpRefusal::HeaderTimeout),
                Err(_) => m.http_refused(HttpRefusal::Lifetime),
                Ok(_) => {}
            }
            m.http_connections.dec();
            drop(permit);
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// The endpoint on a loopback port, with `limits`.
    async fn endpoint(limits: Limits) -> (std::net::SocketAddr, Arc<Metrics>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let m = Arc::new(Metrics::new(false));
        tokio::spawn(serve(l, m.clone(), limits));
        (addr, m)
    }

    const LIMITS: Limits = Limits {
        max_connections: 4,
        max_header_bytes: 8192,
        header_timeout: Duration::from_secs(30),
    };

    /// Everything the server sends until it closes (or `within` passes:
    /// then `None`).
    async fn until_closed(s: &mut TcpStream, within: Duration) -> Option<String> {
        let mut out = Vec::new();
        let read = tokio::time::timeout(within, async {
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        read.ok()
            .map(|()| String::from_utf8_lossy(&out).into_owned())
    }

    async fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn refused(m: &Metrics, why: HttpRefusal) -> u64 {
        let i = HttpRefusal::ALL.iter().position(|x| *x == why).unwrap();
        m.http_refused[i].get()
    }

    #[tokio::test]
    async fn connections_past_the_cap_are_closed_at_once() {
        let (addr, m) = endpoint(LIMITS).await;
        let mut idle = Vec::new();
        for _ in 0..4 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        wait_for("four connections held", || m.http_connections.get() == 4).await;
        let mut fifth = TcpStream::connect(addr).await.unwrap();
        let got = until_closed(&mut fifth, Duration::from_secs(2)).await;
        assert_eq!(got.as_deref(), Some(""), "closed without an answer");
        assert_eq!(refused(&m, HttpRefusal::ConnectionLimit), 1);
        // A place freed is a place for the next client.
        drop(idle.pop());
        wait_for("a place freed", || m.http_connections.get() == 3).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let got = until_closed(&mut s, Duration::from_secs(5)).await.unwrap();
        assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    }

    #[tokio::test]
    async fn a_request_head_past_the_limit_is_answered_431_and_closed() {
        let (addr, m) = endpoint(LIMITS).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        // 400 KB of a header that never ends, written while the answer is
        // read (the server stops reading once past the limit).
        let (mut r, mut w) = s.split();
        let write = async {
            let _ = w.write_all(b"GET /metrics HTTP/1.1\r\nX-Pad: ").await;
            let _ = w.write_all(&vec![b'a'; 400 * 1024]).await;
        };
        let read = async {
            let mut out = Vec::new();
            let mut buf = [0u8; 1024];
            while let Ok(n) = r.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            String::from_utf8_lossy(&out).into_owned()
        };
        let (_, got) =
            tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(write, read) })
                .await
                .expect("answered and closed at once");
        assert!(got.starts_with("HTTP/1.1 431"), "{got}");
        wait_for("counted", || refused(&m, HttpRefusal::HeaderTooLarge) == 1).await;
        wait_for("closed", || m.http_connections.get() == 0).await;
        // A head within the limit is served.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let pad = "a".repeat(6000);
        s.write_all(
            format!("GET /metrics HTTP/1.1\r\nX-Pad: {pad}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let got = until_closed(&mut s, Duration::from_secs(5)).await.unwrap();
        assert!(got.starts_with("HTTP/1.1 200"), "{got:.200}");
    }

    #[tokio::test]
    async fn a_slow_or_idle_client_is_closed_after_the_header_timeout() {
        let limits = Limits {
            header_timeout: Duration::from_millis(300),
            ..LIMITS
        };
        let (addr, m) = endpoint(limits).await;
        let started = tokio::time::Instant::now();
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /metr").await.unwrap();
        let mut idle = TcpStream::connect(addr).await.unwrap();
        assert!(until_closed(&mut slow, Duration::from_secs(3))
            .await
            .is_some());
        assert!(until_closed(&mut idle, Duration::from_secs(3))
            .await
            .is_some());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        wait_for("both counted", || {
            refused(&m, HttpRefusal::HeaderTimeout) == 2
        })
        .await;
        // After a response, an idle keep-alive connection is closed too.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let got = until_closed(&mut s, Duration::from_secs(3)).await.unwrap();
        assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    }

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
