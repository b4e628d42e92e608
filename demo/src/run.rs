//! Plays the campaign through the SQL API, as the applications would: the
//! web and the mobile application (each a writer role bound to the tenant)
//! call `check_login` before each attempt, then `record_event`, and
//! `record_token_issued` after a successful login; the help desk records a
//! `lockout_reset`.

use crate::campaign::{Action, Step, OTHER_TENANT, TENANT};
use crate::token;
use postgres::{Client, NoTls};
use std::io::Write;
use std::time::{Duration, Instant};

/// Role names of the demo (prefixed, so that tests can run several).
pub struct Roles {
    pub web: String,
    pub mobile: String,
    pub helpdesk: String,
    pub other_app: String,
    pub analyst: String,
}

impl Roles {
    pub fn new(prefix: &str) -> Roles {
        Roles {
            web: format!("{prefix}agency1_web"),
            mobile: format!("{prefix}agency1_mobile"),
            helpdesk: format!("{prefix}agency1_helpdesk"),
            other_app: format!("{prefix}agency2_app"),
            analyst: format!("{prefix}agency1_analyst"),
        }
    }
}

/// Creates the roles and their tenant bindings (idempotent).
pub fn set_up(admin: &mut Client, roles: &Roles) -> Result<(), postgres::Error> {
    for (role, group) in [
        (&roles.web, "authaudit_writer"),
        (&roles.mobile, "authaudit_writer"),
        (&roles.helpdesk, "authaudit_writer"),
        (&roles.other_app, "authaudit_writer"),
        (&roles.analyst, "authaudit_reader"),
    ] {
        admin.batch_execute(&format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
                 CREATE ROLE {role} LOGIN IN ROLE {group};
               END IF;
             END $$;"
        ))?;
    }
    admin.execute(
        "INSERT INTO authaudit.tenant_scope (role_name, tenant_id, can_read, can_write)
         VALUES ($1, $6, false, true), ($2, $6, false, true), ($3, $6, false, true),
                ($4, $7, false, true), ($5, $6, true, false)
         ON CONFLICT DO NOTHING",
        &[
            &roles.web,
            &roles.mobile,
            &roles.helpdesk,
            &roles.other_app,
            &roles.analyst,
            &TENANT,
            &OTHER_TENANT,
        ],
    )?;
    Ok(())
}

/// A connection acting as `role` (bound writers act through SET ROLE).
pub fn connect_as(url: &str, role: &str) -> Result<Client, postgres::Error> {
    let mut c = Client::connect(url, NoTls)?;
    c.batch_execute(&format!("SET ROLE {role}"))?;
    Ok(c)
}

/// A writer's connection for the compressed campaign: its events are dated
/// up to a day back, as it happened, and recorded live at once, so the
/// (superuser) session widens `authaudit.max_past_skew` for itself before
/// it becomes the writer. Deployed writers keep the default, and history
/// goes through `authaudit.import_events` (docs/lockout.md, "Event time").
fn connect_replaying(url: &str, role: &str) -> Result<Client, postgres::Error> {
    let mut c = Client::connect(url, NoTls)?;
    c.batch_execute(&format!(
        "SET authaudit.max_past_skew = '1d'; SET ROLE {role}"
    ))?;
    Ok(c)
}

/// Deterministic log ids: a retry of the demo records nothing twice.
fn log_id(run: u32, n: usize) -> String {
    format!("00000000-0000-4000-8000-{run:04x}{n:08x}")
}

/// Plays `steps` starting at `start_unix` (seconds); prints progress.
pub fn play(
    url: &str,
    roles: &Roles,
    steps: &[Step],
    start_unix: i64,
    run: u32,
    quiet: bool,
) -> Result<usize, postgres::Error> {
    let mut web = connect_replaying(url, &roles.web)?;
    let mut mobile = connect_replaying(url, &roles.mobile)?;
    let mut helpdesk = connect_replaying(url, &roles.helpdesk)?;
    let mut other = connect_replaying(url, &roles.other_app)?;
    let key = b"demo identity provider signing key (not a secret)";
    let began = Instant::now();
    let mut last_print = Instant::now() - Duration::from_secs(1);
    let mut refused = 0usize;
    for (n, s) in steps.iter().enumerate() {
        let at = start_unix + s.at_s;
        let c = match (s.tenant, s.channel) {
            (t, _) if t == OTHER_TENANT => &mut other,
            (_, "mobile") => &mut mobile,
            (_, "api") => &mut helpdesk,
            _ => &mut web,
        };
        let id = log_id(run, n);
        let at_f = at as f64;
        match &s.action {
            Action::Login { ok } => {
                // The application asks first; a refused attempt is still an
                // attempt, recorded as a failure with the reason.
                let row = c.query_one(
                    "SELECT allowed, reason FROM authaudit.check_login($1, $2, $3::text::inet)",
                    &[&s.tenant, &s.user, &s.ip],
                )?;
                let (allowed, reason): (bool, Option<String>) = (row.get(0), row.get(1));
                let (ty, meta) = match (allowed, ok) {
                    (true, true) => ("login_success", serde_json::json!({"method": "password"})),
                    (true, false) => (
                        "login_failed",
                        serde_json::json!({"reason": "bad_password"}),
                    ),
                    (false, _) => {
                        refused += 1;
                        (
                            "login_failed",
                            serde_json::json!({"reason": format!("refused: {}", reason.unwrap_or_default())}),
                        )
                    }
                };
                c.execute(
                    "SELECT authaudit.record_event($1::text::uuid, $2, $3, $4, $5, NULL, $6::text::inet,
                         $7, to_timestamp($8), $9::text::jsonb)",
                    &[&id, &s.tenant, &ty, &s.user, &s.channel, &s.ip, &user_agent(s.channel), &at_f, &meta.to_string()],
                )?;
            }
            Action::Token => {
                let jti = format!("demo-{run}-{n}");
                let tok = token::issue(key, "https://idp.agency.example", &s.user, &jti, at);
                c.execute(
                    "SELECT authaudit.record_token_issued($1::text::uuid, $2, NULL, $3, $4, $5::text::inet,
                         $6, $7, to_timestamp($8))",
                    &[&id, &s.tenant, &s.user, &tok, &s.ip, &user_agent(s.channel), &s.channel, &at_f],
                )?;
            }
            Action::Reset { ticket } => {
                c.execute(
                    "SELECT authaudit.record_event($1::text::uuid, $2, 'lockout_reset', $3, 'api',
                         NULL, $4::text::inet, NULL, to_timestamp($5),
                         jsonb_build_object('ticket', $6::text, 'by', 'help desk'))",
                    &[&id, &s.tenant, &s.user, &s.ip, &at_f, ticket],
                )?;
            }
        }
        if !quiet && (last_print.elapsed() >= Duration::from_millis(200) || n + 1 == steps.len()) {
            last_print = Instant::now();
            let done = n + 1;
            let width = 40;
            let filled = done * width / steps.len();
            print!(
                "\r  [{}{}] {done}/{} events  {:<20} {:.1}s",
                "#".repeat(filled),
                ".".repeat(width - filled),
                steps.len(),
                s.phase,
                began.elapsed().as_secs_f64()
            );
            let _ = std::io::stdout().flush();
        }
    }
    if !quiet {
        println!();
    }
    Ok(refused)
}

fn user_agent(channel: &str) -> &'static str {
    match channel {
        "mobile" => "AgencyApp/4.2 (Android 14)",
        "api" => "helpdesk-console/1.0",
        _ => "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0",
    }
}
