//! `authaudit-demo`: the campaign and the investigator's report.
//!
//!   authaudit-demo campaign --url URL --out DIR      play, reconstruct, report
//!   authaudit-demo report --url URL --role ROLE --tenant T --from TIME --to TIME --out DIR
//!   authaudit-demo import-sshd --url URL --tenant T --year YYYY FILE...   history from sshd logs

use authaudit_demo::campaign::{self, OTHER_TENANT, TENANT};
use authaudit_demo::{import, reconstruct, run, write_report};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str =
    "authaudit-demo: the pg_authaudit brute-force demo and the investigator's report

USAGE:
    authaudit-demo campaign --url CONNINFO [--out DIR] [--prefix ROLE_PREFIX]
        Plays the campaign (password spray, focused attack with lockouts and
        escalation, credential stuffing, a help-desk reset, legitimate web and
        mobile logins with session tokens, one compromised account) through the
        SQL API as the applications' writer roles, checkpoints, reconstructs it
        as a tenant reader, compares with what was injected (exit 1 on any
        difference) and writes DIR/report.html and DIR/agency-1.cef.
        CONNINFO: a superuser connection (it creates the demo roles).
    authaudit-demo report --url CONNINFO --role ROLE --tenant TENANT --from TIME --to TIME --out DIR
        Writes the report for any tenant and period, reading as ROLE (a tenant
        reader: row-level security applies). TIME: any timestamptz literal.
    authaudit-demo import-sshd --url CONNINFO [--role ROLE] --tenant TENANT [--org ORG]
                               --year YYYY [--utc-offset +HH:MM] [--no-rebuild] FILE...
        Imports OpenSSH/PAM syslog files (auth.log, secure; rotated files in
        any order) as history: failed and accepted logins, \"message repeated
        N times\" as N events, channel ssh, deterministic log ids (a re-run
        records nothing twice). YYYY is the year of each file's first
        year-less line; times are at --utc-offset (default +00:00). Then
        rebuilds the tenant's lockout state, unless --no-rebuild. Prints what
        it recorded and every skipped line's reason (docs/import.md).";

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("campaign") => campaign_cmd(&args),
        Some("report") => report_cmd(&args),
        Some("import-sshd") => import_cmd(&args),
        Some("-h" | "--help") | None => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("authaudit-demo: unknown command {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("authaudit-demo: {e}");
            ExitCode::from(3)
        }
    }
}

fn campaign_cmd(args: &[String]) -> Result<bool, Box<dyn std::error::Error>> {
    let url = arg(args, "--url").ok_or("--url is required")?;
    let out = PathBuf::from(arg(args, "--out").unwrap_or_else(|| "demo-report".into()));
    let roles = run::Roles::new(&arg(args, "--prefix").unwrap_or_default());
    let mut admin = postgres::Client::connect(&url, postgres::NoTls)?;
    run::set_up(&mut admin, &roles)?;
    let now: i64 = admin
        .query_one(
            "SELECT extract(epoch FROM date_trunc('minute', now()))::int8",
            &[],
        )?
        .get(0);
    let start = now - 3 * 3600;
    let (steps, truth) = campaign::campaign();
    println!("Playing the campaign: {} events through the SQL API (web and mobile applications, help desk)", steps.len());
    let refused = run::play(&url, &roles, &steps, start, 1, false)?;
    if refused > 0 {
        println!("  {refused} attempts were refused by check_login (locked account or blocked IP) and recorded as such");
    }
    let mut web = run::connect_as(&url, &roles.web)?;
    web.execute("SELECT authaudit.checkpoint($1)", &[&TENANT])?;
    admin.execute("SELECT authaudit.checkpoint($1)", &[&OTHER_TENANT])?;
    let mut analyst = run::connect_as(&url, &roles.analyst)?;
    let r = reconstruct::reconstruct(&mut analyst, TENANT, start, now + 60)?;
    let checks = reconstruct::compare(&r, &truth);
    print!("\n{}", reconstruct::print(&r, &checks));
    let (html, cef) = write_report(&mut analyst, &r, start, now + 60, &out)?;
    println!(
        "\nInvestigator's report: {}\nCEF export:            {}",
        html.display(),
        cef.display()
    );
    Ok(checks.iter().all(reconstruct::Check::ok) && r.verified)
}

fn report_cmd(args: &[String]) -> Result<bool, Box<dyn std::error::Error>> {
    let need = |n: &str| arg(args, n).ok_or_else(|| format!("{n} is required"));
    let (url, role, tenant) = (need("--url")?, need("--role")?, need("--tenant")?);
    let out = PathBuf::from(need("--out")?);
    let mut c = run::connect_as(&url, &role)?;
    let b = c.query_one(
        "SELECT extract(epoch FROM $1::text::timestamptz)::int8, extract(epoch FROM $2::text::timestamptz)::int8",
        &[&need("--from")?, &need("--to")?],
    )?;
    let (from, to): (i64, i64) = (b.get(0), b.get(1));
    let r = reconstruct::reconstruct(&mut c, &tenant, from, to)?;
    let (html, cef) = write_report(&mut c, &r, from, to, &out)?;
    println!("{}\n{}", html.display(), cef.display());
    Ok(true)
}

fn import_cmd(args: &[String]) -> Result<bool, Box<dyn std::error::Error>> {
    let need = |n: &str| arg(args, n).ok_or_else(|| format!("{n} is required"));
    let url = need("--url")?;
    let tenant = need("--tenant")?;
    let year: i32 = need("--year")?
        .parse()
        .map_err(|_| "--year must be a year such as 2025")?;
    let offset = match arg(args, "--utc-offset") {
        Some(o) => import::parse_offset(&o).ok_or("--utc-offset must look like +02:00")?,
        None => 0,
    };
    let org = arg(args, "--org");
    // Every argument after the options is a file.
    let mut files = Vec::new();
    let mut i = 2;
    while i < args.len() {
        match args[i].as_str() {
            "--no-rebuild" => i += 1,
            a if a.starts_with("--") => i += 2,
            f => {
                files.push(std::path::Path::new(f));
                i += 1;
            }
        }
    }
    if files.is_empty() {
        return Err("no file to import".into());
    }
    let mut c = postgres::Client::connect(&url, postgres::NoTls)?;
    if let Some(role) = arg(args, "--role") {
        c.batch_execute(&format!("SET ROLE {role}"))?;
    }
    let report = import::import(
        &mut c,
        &files,
        &import::Options {
            tenant: &tenant,
            org: org.as_deref(),
            year,
            utc_offset_s: offset,
            rebuild: !args.iter().any(|a| a == "--no-rebuild"),
        },
    )?;
    println!("{report}");
    Ok(true)
}
