//! A real rsyslog (Debian packages `rsyslog`, `rsyslog-relp`,
//! `rsyslog-gnutls`) for the SIEM tests: one private instance per test on
//! loopback ports, receiving RELP (imrelp), octet-counted TCP (imtcp) and
//! TLS (imtcp with the gtls driver), each writing the messages' MSG part to
//! a file of its own.

use crate::cluster::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The rsyslogd binary.
fn rsyslogd() -> PathBuf {
    for p in ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("rsyslogd not found: run scripts/setup.sh (Debian packages rsyslog, rsyslog-relp, rsyslog-gnutls)");
}

/// A running rsyslogd and where it writes.
pub struct Rsyslog {
    dir: PathBuf,
    pub relp_port: u16,
    pub tcp_port: u16,
    pub tls_port: u16,
    child: Option<Child>,
}

impl Rsyslog {
    /// Starts an instance in a new directory named after `name`; a TLS input
    /// with a certificate for 127.0.0.1 signed by `ca.pem` of that
    /// directory.
    pub fn start(name: &str) -> Rsyslog {
        let dir =
            std::env::temp_dir().join(format!("authaudit-rsyslog-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("work")).unwrap();
        make_certificates(&dir);
        let mut r = Rsyslog {
            relp_port: free_port(),
            tcp_port: free_port(),
            tls_port: free_port(),
            dir,
            child: None,
        };
        std::fs::write(r.dir.join("rsyslog.conf"), r.config()).unwrap();
        r.run();
        r
    }

    /// The collector's configuration. It keeps control characters as they
    /// arrive (a tab in a value is a tab, not rsyslog's `#011`), so the
    /// tests compare the very bytes the sidecar sent.
    fn config(&self) -> String {
        let d = self.dir.display();
        format!(
            r#"global(workDirectory="{d}/work"
       parser.escapeControlCharactersOnReceive="off"
       defaultNetstreamDriverCAFile="{d}/ca.pem"
       defaultNetstreamDriverCertFile="{d}/server.pem"
       defaultNetstreamDriverKeyFile="{d}/server.key")
module(load="imrelp")
module(load="imtcp" maxSessions="100")
template(name="msg" type="string" string="%msg%\n")
ruleset(name="relp") {{ action(type="omfile" file="{d}/relp.log" template="msg") }}
ruleset(name="tcp") {{ action(type="omfile" file="{d}/tcp.log" template="msg") }}
ruleset(name="tls") {{ action(type="omfile" file="{d}/tls.log" template="msg") }}
input(type="imrelp" address="127.0.0.1" port="{relp}" ruleset="relp")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="tcp")
input(type="imtcp" address="127.0.0.1" port="{tls}" ruleset="tls"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
"#,
            relp = self.relp_port,
            tcp = self.tcp_port,
            tls = self.tls_port,
        )
    }

    fn run(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("rsyslogd.out"))
            .unwrap();
        let child = Command::new(rsyslogd())
            .arg("-n")
            .arg("-f")
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in [self.relp_port, self.tcp_port, self.tls_port] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "rsyslogd did not listen on {port}: {}",
                    std::fs::read_to_string(self.dir.join("rsyslogd.out")).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Stops rsyslogd with SIGTERM (it writes what it has taken) and waits.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            c.wait().unwrap();
        }
    }

    /// Stops and starts it again on the same ports and files.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate the TLS input's certificate chains to.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The lines written for `input` ("relp", "tcp" or "tls"), trimmed.
    pub fn lines(&self, input: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.join(format!("{input}.log")))
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A CA and a server certificate for 127.0.0.1 (openssl).
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=authaudit test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("san.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
        "-out",
        "server.pem",
    ]);
}
