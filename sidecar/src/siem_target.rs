//! Where the SIEM destination sends (`--siem-target`): `relp://host:port`,
//! `tcp://host:port` or `tls://host:port`. Parsed with the configuration,
//! used by the SIEM destination (`siem`).

use std::fmt;
use std::str::FromStr;

/// How messages reach the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Relp,
    Tcp,
    Tls,
}

/// `relp://host:port`, `tcp://host:port` or `tls://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub transport: Transport,
    pub host: String,
    pub port: u16,
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Target, String> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| format!("{s:?}: expected relp://, tcp:// or tls:// and host:port"))?;
        let transport = match scheme {
            "relp" => Transport::Relp,
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls,
            other => return Err(format!("{other}://: expected relp, tcp or tls")),
        };
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?}: no port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = port
            .trim_end_matches('/')
            .parse()
            .map_err(|_| format!("{s:?}: bad port"))?;
        if host.is_empty() {
            return Err(format!("{s:?}: no host"));
        }
        Ok(Target {
            transport,
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.transport {
            Transport::Relp => "relp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}
