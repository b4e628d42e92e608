//! The SIEM destination: every mirrored log row as one CEF line in an RFC 5424
//! syslog message, to a collector over RELP, TCP or TLS.
//!
//! - `relp://host:port`: RELP (`relp.rs`). A batch counts as delivered when
//!   the collector answered `200 OK` for every message of it; only then may
//!   the slot position move past it.
//! - `tcp://host:port` (RFC 6587 octet counting) and `tls://host:port` (RFC
//!   5425): a batch counts as delivered once it is written to the socket.
//!   The protocol has no acknowledgement: what the collector had not read
//!   when it went away is lost, without the sidecar knowing.
//!
//! A failed delivery drops the connection and is retried whole on a new
//! one, so a message can arrive twice; each carries its row's log id as
//! `externalId` for de-duplication.

use crate::config::{SiemConfig, SslMode};
use crate::documents::{self, Get, RowError};
pub use crate::siem_target::{Target, Transport};
use crate::syslog::{self, Origin};
use crate::{relp, tls};
use authaudit_core::cef::{classify, line, CefEvent, MetadataFields};
use authaudit_core::event::parse_host_ip;
use futures_util::FutureExt;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Messages sent before waiting for the first answer.
const RELP_WINDOW: usize = 128;

/// One log row as the SIEM receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiemEvent {
    pub line: String,
    pub severity: u8,
    /// `recorded_at`, milliseconds since the Unix epoch: the syslog
    /// timestamp (the CEF `rt` is the event's own time).
    pub time_ms: i64,
}

/// The CEF line of a log row, as `authaudit.to_cef` writes it for the same
/// row (the encoder is `authaudit_core::cef`; the metadata's fields are
/// read from jsonb's text as `to_cef` reads them: `cef::MetadataFields`).
pub fn event(get: Get<'_, '_>) -> Result<SiemEvent, RowError> {
    let req = |c: &'static str| get(c).ok_or(RowError::Missing(c));
    let time = |c: &'static str| {
        let v = req(c)?;
        documents::parse_timestamptz(v)
            .map(|us| us.div_euclid(1000))
            .ok_or(RowError::Bad {
                column: c,
                value: v.to_string(),
            })
    };
    let seq_text = req("seq")?;
    let seq = seq_text.parse().map_err(|_| RowError::Bad {
        column: "seq",
        value: seq_text.to_string(),
    })?;
    let link =
        documents::hex_column(get, "link_sha256")?.ok_or(RowError::Missing("link_sha256"))?;
    let m = MetadataFields::read(get("metadata").unwrap_or("{}"));
    let recorded_ms = time("recorded_at")?;
    let e = CefEvent {
        event_type: req("event_type")?,
        user_id: req("user_id")?,
        ip: get("ip").and_then(|t| parse_host_ip(t).ok()),
        user_agent: get("user_agent"),
        occurred_at_ms: time("occurred_at")?,
        log_id: req("log_id")?,
        tenant_id: req("tenant_id")?,
        org_id: get("org_id"),
        channel: req("channel")?,
        seq,
        link_sha256_hex: &link,
        reason: m.reason.as_deref(),
        preceding_failures: m.preceding_failures,
        was_locked: m.was_locked,
        token_fingerprint: m.token_fingerprint.as_deref(),
        imported_at_ms: m.imported.then_some(recorded_ms),
    };
    Ok(SiemEvent {
        line: line(&e, env!("CARGO_PKG_VERSION")),
        severity: classify(&e).2,
        time_ms: recorded_ms,
    })
}

/// Why a delivery failed (retried on a new connection).
#[derive(Debug, thiserror::Error)]
pub enum SiemError {
    #[error("SIEM {target}: {source}")]
    Io {
        target: String,
        source: std::io::Error,
    },
    #[error("SIEM {target}: no answer within {ms} ms")]
    Timeout { target: String, ms: u64 },
    #[error("SIEM {target}: {source}")]
    Relp {
        target: String,
        #[source]
        source: relp::RelpError,
    },
    #[error("SIEM {target}: {message}")]
    Refused { target: String, message: String },
    #[error("SIEM TLS: {0}")]
    Tls(#[from] tls::TlsSetupError),
}

/// The connection's stream, plain or TLS, over TCP.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(bytes).await,
            Stream::Tls(s) => s.write_all(bytes).await,
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush().await,
            Stream::Tls(s) => s.flush().await,
        }
    }

    /// Reads what arrived; then acknowledges at once. A RELP server sends
    /// its answers as they come, and with Nagle's algorithm on its side each
    /// one after the first waits for the acknowledgement of the previous
    /// one: a delayed acknowledgement here would cost every batch about
    /// 40 ms (measured against rsyslog's imrelp).
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = match self {
            Stream::Plain(s) => s.read(buf).await?,
            Stream::Tls(s) => s.read(buf).await?,
        };
        let _ = socket2::SockRef::from(self.tcp()).set_tcp_quickack(true);
        Ok(n)
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.shutdown().await,
            Stream::Tls(s) => s.shutdown().await,
        }
    }
}

struct Connection {
    io: Stream,
    txnr: u32,
    parser: relp::Parser,
}

/// The SIEM collector of one target.
pub struct Siem {
    target: Target,
    origin: Origin,
    timeout: Duration,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    conn: tokio::sync::Mutex<Option<Connection>>,
}

impl Siem {
    /// The SIEM `[siem]` configures, if any.
    pub fn from_config(config: &SiemConfig) -> Result<Option<Arc<Siem>>, SiemError> {
        let Some(target) = &config.target else {
            return Ok(None);
        };
        let tls =
            match target.transport {
                Transport::Tls => {
                    let mode = match config.tls_mode {
                        SslMode::Disable | SslMode::Prefer => SslMode::Require,
                        m => m,
                    };
                    let config = tls::client_config(mode, config.tls_rootcert.as_deref())?;
                    let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                        .map_err(|e| SiemError::Refused {
                            target: target.to_string(),
                            message: format!("not a TLS server name: {e}"),
                        })?;
                    Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
                }
                _ => None,
            };
        Ok(Some(Arc::new(Siem {
            target: target.clone(),
            origin: Origin {
                hostname: config.hostname.clone().unwrap_or_else(hostname),
                app_name: "pg_authaudit".into(),
            },
            timeout: Duration::from_millis(config.timeout_ms.max(100)),
            tls,
            conn: tokio::sync::Mutex::new(None),
        })))
    }

    fn io_error(&self, source: std::io::Error) -> SiemError {
        SiemError::Io {
            target: self.target.to_string(),
            source,
        }
    }

    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, SiemError>>,
    ) -> Result<T, SiemError> {
        tokio::time::timeout(self.timeout, f)
            .await
            .unwrap_or_else(|_| {
                Err(SiemError::Timeout {
                    target: self.target.to_string(),
                    ms: self.timeout.as_millis() as u64,
                })
            })
    }

    async fn connect(&self) -> Result<Connection, SiemError> {
        let tcp = self
            .timed(async {
                TcpStream::connect((self.target.host.as_str(), self.target.port))
                    .await
                    .map_err(|e| self.io_error(e))
            })
            .await?;
        let _ = tcp.set_nodelay(true);
        let io = match &self.tls {
            Some((connector, name)) => Stream::Tls(Box::new(
                self.timed(async {
                    connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|e| self.io_error(e))
                })
                .await?,
            )),
            None => Stream::Plain(tcp),
        };
        let mut c = Connection {
            io,
            txnr: 0,
            parser: relp::Parser::default(),
        };
        if self.target.transport == Transport::Relp {
            c.txnr = 1;
            let mut out = Vec::new();
            relp::frame(&mut out, 1, "open", relp::open_offers().as_bytes());
            self.send(&mut c, &out).await?;
            let f = self.read_frame(&mut c).await?;
            if f.command != "rsp" || f.txnr != 1 || f.status() != Some(200) {
                return Err(self.refused(&f));
            }
        }
        tracing::info!(target = %self.target, "connected to the SIEM collector");
        Ok(c)
    }

    fn refused(&self, f: &relp::Frame) -> SiemError {
        SiemError::Refused {
            target: self.target.to_string(),
            message: format!(
                "{} {} {}",
                f.txnr,
                f.command,
                String::from_utf8_lossy(&f.data)
                    .lines()
                    .next()
                    .unwrap_or("")
            ),
        }
    }

    async fn send(&self, c: &mut Connection, bytes: &[u8]) -> Result<(), SiemError> {
        self.timed(async {
            c.io.write_all(bytes).await.map_err(|e| self.io_error(e))?;
            c.io.flush().await.map_err(|e| self.io_error(e))
        })
        .await
    }

    async fn read_frame(&self, c: &mut Connection) -> Result<relp::Frame, SiemError> {
        self.timed(async {
            let mut buf = [0u8; 4096];
            loop {
                if let Some(f) = c.parser.next_frame().map_err(|source| SiemError::Relp {
                    target: self.target.to_string(),
                    source,
                })? {
                    return Ok(f);
                }
                let n = c.io.read(&mut buf).await.map_err(|e| self.io_error(e))?;
                if n == 0 {
                    return Err(self.io_error(std::io::ErrorKind::UnexpectedEof.into()));
                }
                c.parser.feed(&buf[..n]);
            }
        })
        .await
    }

    /// Whether the collector closed a connection that only we write to (a
    /// TCP or TLS collector never sends): sending on it would be lost.
    fn peer_gone(c: &mut Connection) -> bool {
        let mut b = [0u8; 1];
        matches!(c.io.read(&mut b).now_or_never(), Some(Ok(0) | Err(_)))
    }

    /// Delivers every event, in order: acknowledged by the collector
    /// (RELP) or written to the socket (TCP, TLS).
    pub async fn deliver(&self, events: &[SiemEvent]) -> Result<(), SiemError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_mut() {
            if self.target.transport != Transport::Relp && Self::peer_gone(c) {
                *guard = None;
            }
        }
        if guard.is_none() {
            *guard = Some(self.connect().await?);
        }
        let c = guard.as_mut().expect("connected");
        let result = match self.target.transport {
            Transport::Relp => self.deliver_relp(c, events).await,
            Transport::Tcp | Transport::Tls => {
                let mut out = Vec::with_capacity(events.len() * 600);
                for e in events {
                    let msg = syslog::message(&self.origin, e.severity, e.time_ms, &e.line);
                    syslog::octet_counted(&mut out, &msg);
                }
                self.send(c, &out).await
            }
        };
        if result.is_err() {
            *guard = None;
        }
        result
    }

    async fn deliver_relp(
        &self,
        c: &mut Connection,
        events: &[SiemEvent],
    ) -> Result<(), SiemError> {
        let mut next = 0;
        let mut waiting: VecDeque<u32> = VecDeque::with_capacity(RELP_WINDOW);
        let mut out = Vec::new();
        while next < events.len() || !waiting.is_empty() {
            // The window is refilled in one write once half of it is
            // answered: a write per message would cost a round of system
            // calls and segments for each answer.
            if next < events.len() && waiting.len() <= RELP_WINDOW / 2 {
                out.clear();
                while next < events.len() && waiting.len() < RELP_WINDOW {
                    let e = &events[next];
                    let msg = syslog::message(&self.origin, e.severity, e.time_ms, &e.line);
                    c.txnr = relp::next_txnr(c.txnr);
                    relp::frame(&mut out, c.txnr, "syslog", msg.as_bytes());
                    waiting.push_back(c.txnr);
                    next += 1;
                }
                self.send(c, &out).await?;
            }
            let f = self.read_frame(c).await?;
            match (f.command.as_str(), waiting.front()) {
                ("rsp", Some(t)) if *t == f.txnr && f.status() == Some(200) => {
                    waiting.pop_front();
                }
                _ => return Err(self.refused(&f)),
            }
        }
        Ok(())
    }

    /// Closes the session politely (RELP `close`), if one is open.
    pub async fn close(&self) {
        let mut guard = self.conn.lock().await;
        if let Some(mut c) = guard.take() {
            if self.target.transport == Transport::Relp {
                let mut out = Vec::new();
                relp::frame(&mut out, relp::next_txnr(c.txnr), "close", b"");
                if self.send(&mut c, &out).await.is_ok() {
                    let _ = self.read_frame(&mut c).await;
                }
            }
            let _ = c.io.shutdown().await;
        }
    }
}

/// The machine's host name (the syslog HOSTNAME).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn targets_parse_with_their_transport() {
        assert_eq!(
            "relp://127.0.0.1:2514".parse::<Target>().unwrap(),
            Target {
                transport: Transport::Relp,
                host: "127.0.0.1".into(),
                port: 2514
            }
        );
        let t: Target = "tls://[::1]:6514".parse().unwrap();
        assert_eq!(
            (t.transport, t.host.as_str(), t.port),
            (Transport::Tls, "::1", 6514)
        );
        assert_eq!(t.to_string(), "tls://::1:6514");
        for bad in ["udp://h:514", "h:514", "tcp://h", "tcp://:514", "tcp://h:x"] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }

    fn row() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("log_id", "0b1f7c8e-6a34-4c1e-9a1d-2f0e5c7b9d11"),
            ("tenant_id", "acme"),
            ("seq", "7"),
            ("event_type", "login_success"),
            ("user_id", "alice"),
            ("ip", "203.0.113.9"),
            ("channel", "web"),
            ("occurred_at", "2026-01-01 00:00:05.123456+00"),
            ("recorded_at", "2026-01-01 00:00:06.5+00"),
            ("link_sha256", "\\xABCD"),
            (
                "metadata",
                r#"{"reason": "ok=1", "_authaudit": {"lockout": {"preceding_failures": 3, "was_locked": false}}}"#,
            ),
        ])
    }

    #[test]
    fn a_row_becomes_the_line_to_cef_writes() {
        let r = row();
        let get = |c: &str| r.get(c).copied();
        let e = event(&get).unwrap();
        assert_eq!(e.severity, 7, "a success after failures");
        assert_eq!(e.time_ms, 1_767_225_606_500);
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            e.line,
            format!(
                "CEF:0|pg_authaudit|pg_authaudit|{version}|100|Login succeeded after failures|7|\
                 rt=1767225605123 duser=alice src=203.0.113.9 outcome=success act=login_success \
                 cat=/Authentication reason=ok\\=1 externalId=0b1f7c8e-6a34-4c1e-9a1d-2f0e5c7b9d11 \
                 cs1=acme cs1Label=tenant cs3=web cs3Label=channel cs4=abcd cs4Label=chainLinkSha256 \
                 cs6=3 cs6Label=precedingFailures cn1=7 cn1Label=chainSeq"
            )
        );
    }

    #[test]
    fn a_reason_that_is_not_a_string_is_written_as_postgresql_writes_it() {
        for (reason, written) in [
            ("1.50", "1.50"),
            ("1e400", &*format!("1{}", "0".repeat(400))),
            ("12345678901234567890123", "12345678901234567890123"),
            (
                r#"{"b": [1, 2.50], "a": {"x=": null}}"#,
                r#"{"a": {"x\=": null}, "b": [1, 2.50]}"#,
            ),
            ("true", "true"),
            (r#""a\u00e9\n""#, "aé\\n"),
        ] {
            let mut r = row();
            let m = format!("{{\"reason\": {reason}}}");
            r.insert("metadata", Box::leak(m.into_boxed_str()));
            let get = |c: &str| r.get(c).copied();
            let line = event(&get).unwrap().line;
            assert!(
                line.contains(&format!(" reason={written} externalId=")),
                "{reason}: {line}"
            );
        }
    }

    #[test]
    fn an_imported_row_carries_its_recording_time() {
        let mut r = row();
        r.insert("metadata", r#"{"_authaudit": {"imported": true}}"#);
        r.insert("event_type", "login_failed");
        let get = |c: &str| r.get(c).copied();
        let e = event(&get).unwrap();
        assert!(
            e.line
                .ends_with("deviceCustomDate1=1767225606500 deviceCustomDate1Label=importedAt"),
            "{}",
            e.line
        );
        r.remove("seq");
        let get = |c: &str| r.get(c).copied();
        assert!(matches!(event(&get), Err(RowError::Missing("seq"))));
    }
}
