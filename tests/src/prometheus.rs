//! A real Prometheus server (Debian package `prometheus`) for the metrics
//! tests: one private instance per test on a loopback port, scraping its
//! targets and evaluating its rules every second, its data in a directory
//! of its own.

use crate::cluster::free_port;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Prometheus.
pub struct Prometheus {
    dir: PathBuf,
    port: u16,
    child: Child,
}

impl Prometheus {
    /// Starts an instance named after `name` that scrapes
    /// `127.0.0.1:target_port` every second, and waits until it serves.
    pub fn start(name: &str, target_port: u16) -> Prometheus {
        Prometheus::start_with(name, &[("sidecar", target_port)], &[])
    }

    /// Starts an instance named after `name` that scrapes each
    /// `(job, port)` at `127.0.0.1:port` every second and evaluates the
    /// `rule_files` every second, and waits until it serves.
    pub fn start_with(name: &str, jobs: &[(&str, u16)], rule_files: &[&Path]) -> Prometheus {
        let dir = std::env::temp_dir().join(format!(
            "authaudit-prometheus-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n",
        );
        if !rule_files.is_empty() {
            config.push_str("rule_files:\n");
            for f in rule_files {
                config.push_str(&format!("  - '{}'\n", f.display()));
            }
        }
        config.push_str("scrape_configs:\n");
        for (job, port) in jobs {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
            ));
        }
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian package prometheus, scripts/setup.sh)");
        let p = Prometheus { dir, port, child };
        p.wait_for("ready", |p| p.get("/-/ready").is_some());
        p
    }

    /// The body of a GET of `path`, if the answer was 200 (HTTP/1.0: the
    /// body is not chunked).
    fn get(&self, path: &str) -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        (head.split(' ').nth(1) == Some("200")).then(|| body.to_string())
    }

    /// The `data` of an API answer (`/api/v1/...`, the query string
    /// already encoded).
    pub fn api(&self, path: &str) -> serde_json::Value {
        let body = self
            .get(path)
            .unwrap_or_else(|| panic!("{path}: no answer\n{}", self.log()));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{body}");
        v["data"].clone()
    }

    /// The instant vector of a PromQL `query` (URL-encoded by the caller).
    pub fn query(&self, query: &str) -> Vec<serde_json::Value> {
        self.api(&format!("/api/v1/query?query={query}"))["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits up to 60 s until `ok`.
    pub fn wait_for(&self, what: &str, ok: impl Fn(&Prometheus) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ok(self) {
            assert!(
                Instant::now() < deadline,
                "prometheus: {what} not within 60 s\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
