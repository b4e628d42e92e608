//! `authaudit-import`: history into pg_authaudit (docs/import.md).
//!
//!   authaudit-import sshd --url CONNINFO --tenant T [--year YYYY|FILE=YYYY]... FILE...

use authaudit_demo::import::{run_sshd, ImportCli};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    match ImportCli::parse() {
        ImportCli::Sshd(args) => run_sshd("authaudit-import sshd", args),
    }
}
