//! The sidecar's metrics and health endpoint under hostile clients: the
//! real binary, with no database behind it (the endpoint serves while the
//! mirror retries its connections). Hundreds of clients sending endless
//! headers do not grow its memory, connections past the cap are closed,
//! and with its file descriptors exhausted the accept loop backs off
//! instead of spinning.

use authaudit_tests::free_port;
use authaudit_tests::mirror::sidecar_bin;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The sidecar with its endpoint on a free port, PostgreSQL and MongoDB
/// on ports nobody listens on; `nofile` lowers its file descriptor limit.
struct Endpoint {
    child: Child,
    port: u16,
}

impl Endpoint {
    fn start(env: &[(&str, &str)], nofile: Option<u32>) -> Endpoint {
        let port = free_port();
        let mut c = match nofile {
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\""))
                    .arg(sidecar_bin());
                c
            }
            None => Command::new(sidecar_bin()),
        };
        c.env("PGHOST", "127.0.0.1")
            .env("PGPORT", free_port().to_string())
            .env(
                "AUTHAUDIT_MONGODB_URI",
                format!(
                    "mongodb://127.0.0.1:{}/?serverSelectionTimeoutMS=500",
                    free_port()
                ),
            )
            .env("AUTHAUDIT_METRICS_LISTEN", format!("127.0.0.1:{port}"))
            .env("AUTHAUDIT_MAX_BACKOFF_MS", "2000")
            .env("AUTHAUDIT_LOG", "error")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let e = Endpoint {
            child: c.spawn().unwrap(),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !e.get("/health").starts_with("HTTP/1.1 503") {
            assert!(Instant::now() < deadline, "the endpoint never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
        e
    }

    fn get(&self, path: &str) -> String {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    fn metric(&self, sample: &str) -> f64 {
        self.get("/metrics")
            .lines()
            .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// A field of /proc/<pid>/status, in its own unit (kB for memory).
    fn status(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap()
            .lines()
            .find_map(|l| {
                l.strip_prefix(field)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap()
    }

    fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count()
    }

    /// CPU time used so far (user and system), in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        // Fields 14 and 15 of stat(5); the slice starts at field 3.
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// 300 clients, each sending 400 KB of a header that never ends, and
/// staying connected: the sidecar holds at most its connection cap and at
/// most the header limit for each, so its memory stays where it was.
#[test]
fn endless_headers_from_many_clients_do_not_grow_the_sidecar() {
    let e = Endpoint::start(&[], None);
    let rss_before = e.status("VmRSS:");
    let files_before = e.open_files();
    // 100 idle clients: the cap (64) holds them, and closes those past it
    // at once (each reads the end of its stream).
    let idle: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", e.port)).ok())
        .collect();
    for s in &idle {
        s.set_nonblocking(true).unwrap();
    }
    let closed = || {
        idle.iter()
            .filter(|s| {
                let mut r: &TcpStream = s;
                matches!(r.read(&mut [0u8; 1]), Ok(0))
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while closed() < 30 {
        assert!(
            Instant::now() < deadline,
            "{} of 100 idle clients closed past the cap",
            closed()
        );
        std::thread::yield_now();
    }
    drop(idle);
    let clients: Vec<_> = (0..300)
        .map(|_| {
            let port = e.port;
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
                s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
                let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nX-Pad: ");
                let chunk = vec![b'a'; 16 * 1024];
                for _ in 0..25 {
                    if s.write_all(&chunk).is_err() {
                        break;
                    }
                }
                Some(s)
            })
        })
        .collect();
    let held: Vec<TcpStream> = clients
        .into_iter()
        .filter_map(|c| c.join().unwrap())
        .collect();
    assert!(held.len() > 250, "{} clients connected", held.len());
    let grown_kb = e.status("VmRSS:").saturating_sub(rss_before);
    let files = e.open_files();
    assert!(
        grown_kb < 24 * 1024,
        "the sidecar grew by {grown_kb} kB for 300 hostile clients"
    );
    assert!(
        files <= files_before + 64 + 4,
        "{files} open files, {files_before} before (cap 64)"
    );
    // Refused past the cap, answered 431 within it; still serving.
    assert!(e.metric("authaudit_sidecar_http_refused_total{reason=\"connection_limit\"}") > 0.0);
    assert!(e.metric("authaudit_sidecar_http_refused_total{reason=\"header_too_large\"}") > 0.0);
    drop(held);
    assert!(e.get("/health").starts_with("HTTP/1.1 503"));
}

/// With its descriptors exhausted by idle clients (a limit of 48, a cap
/// of 1,000 connections), accepts fail with EMFILE: the loop backs off
/// (10 ms doubling to 1 s) and uses almost no CPU, where an immediate
/// retry spins a core. Once the clients leave, it serves again and has
/// counted the failed accepts.
#[test]
fn the_accept_loop_backs_off_when_out_of_file_descriptors() {
    let e = Endpoint::start(
        &[
            ("AUTHAUDIT_METRICS_MAX_CONNECTIONS", "1000"),
            ("AUTHAUDIT_METRICS_HEADER_TIMEOUT_MS", "8000"),
        ],
        Some(48),
    );
    let idle: Vec<TcpStream> = (0..120)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", e.port)).ok())
        .collect();
    assert!(idle.len() > 60, "{} clients connected", idle.len());
    std::thread::sleep(Duration::from_millis(500));
    let before = e.cpu_ticks();
    std::thread::sleep(Duration::from_secs(3));
    let used = e.cpu_ticks() - before;
    // Clock ticks are 1/100 s: 3 s of a spinning loop are about 300.
    assert!(
        used < 45,
        "{used} ticks of CPU in 3 s with accepts failing: the loop spins"
    );
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = e.metric("authaudit_sidecar_http_refused_total{reason=\"accept_error\"}");
        if n > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no failed accept counted");
        std::thread::sleep(Duration::from_millis(200));
    }
}
