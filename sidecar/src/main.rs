//! The pg_authaudit mirror. Its replication loop arrives with the sidecar
//! issue; until then the binary only reports what it is.

use std::process::ExitCode;

const USAGE: &str =
    "authaudit-sidecar: mirrors pg_authaudit's auth log from logical replication into MongoDB.

USAGE:
    authaudit-sidecar --version
    authaudit-sidecar --help

The mirroring commands are not part of this release yet; see docs/sidecar.md.";

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("--version") | Some("-V") => {
            println!("authaudit-sidecar {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("--help") | Some("-h") | None => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("authaudit-sidecar: unknown argument {other:?}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
