//! The pg_authaudit demo: plays a brute-force campaign through the SQL API
//! ([`campaign`], [`run`]), reconstructs it as an investigator would
//! ([`reconstruct`]) and writes the investigator's report ([`report`]);
//! imports OpenSSH/PAM syslog files as history ([`sshd`], [`import`];
//! the `authaudit-import` binary).

pub mod campaign;
pub mod import;
pub mod reconstruct;
pub mod report;
pub mod run;
pub mod sshd;
pub mod token;

use postgres::Client;
use std::path::{Path, PathBuf};

/// Writes `report.html` and `<tenant>.cef` into `dir`; returns their paths.
pub fn write_report(
    analyst: &mut Client,
    r: &reconstruct::Reconstruction,
    from_unix: i64,
    to_unix: i64,
    dir: &Path,
) -> Result<(PathBuf, PathBuf), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let cef_name = format!("{}.cef", r.tenant);
    let mut cef = String::new();
    for row in analyst.query(
        "SELECT line FROM authaudit.export_cef($1, to_timestamp($2), to_timestamp($3)) AS line",
        &[&r.tenant, &(from_unix as f64), &(to_unix as f64)],
    )? {
        cef.push_str(row.get::<_, &str>(0));
        cef.push('\n');
    }
    let cef_path = dir.join(&cef_name);
    std::fs::write(&cef_path, cef)?;
    let html_path = dir.join("report.html");
    std::fs::write(&html_path, report::html(r, &cef_name))?;
    Ok((html_path, cef_path))
}
