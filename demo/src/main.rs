//! `authaudit-demo`: the campaign and the investigator's report.
//!
//!   authaudit-demo campaign --url URL --out DIR      play, reconstruct, report
//!   authaudit-demo report --url URL --role ROLE --tenant T --from TIME --to TIME --out DIR
//!   authaudit-demo import-sshd …   the history importer, `authaudit-import sshd`

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
    authaudit-demo import-sshd [ARGS] FILE...
        The same as `authaudit-import sshd` (docs/import.md): OpenSSH/PAM
        syslog files into a tenant's log as history.";

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
        Some("import-sshd") => {
            use clap::Parser;
            let alias = import::DemoAlias::parse_from(
                std::iter::once("authaudit-demo import-sshd".to_owned())
                    .chain(args[2..].iter().cloned()),
            );
            return import::run_sshd("authaudit-demo import-sshd", alias.args);
        }
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
