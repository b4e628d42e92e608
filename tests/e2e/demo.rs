//! The demo's campaign, played through the SQL API on a test database: the
//! reconstruction a tenant reader makes matches what was injected, and the
//! investigator's report renders in headless Chromium.

use authaudit_demo::campaign::{self, TENANT};
use authaudit_demo::{reconstruct, run, write_report};
use authaudit_tests::Cluster;
use std::process::Command;

#[test]
fn the_reconstruction_matches_the_injected_campaign_and_the_report_renders() {
    let db = Cluster::shared().fresh_db_with_lockout("demo");
    let url = db.url();
    let roles = run::Roles::new(&format!("{}_", db.name()));
    let mut admin = db.connect();
    run::set_up(&mut admin, &roles).unwrap();
    let now: i64 = admin
        .query_one(
            "SELECT extract(epoch FROM date_trunc('minute', now()))::int8",
            &[],
        )
        .unwrap()
        .get(0);
    let start = now - 3 * 3600;
    let (steps, truth) = campaign::campaign();
    run::play(&url, &roles, &steps, start, 7, true).unwrap();
    let mut web = run::connect_as(&url, &roles.web).unwrap();
    web.execute("SELECT authaudit.checkpoint($1)", &[&TENANT])
        .unwrap();

    let mut analyst = run::connect_as(&url, &roles.analyst).unwrap();
    let r = reconstruct::reconstruct(&mut analyst, TENANT, start, now + 60).unwrap();
    let checks = reconstruct::compare(&r, &truth);
    for c in &checks {
        assert!(
            c.ok(),
            "{}: injected {}, found {}",
            c.what,
            c.injected,
            c.found
        );
    }
    assert!(r.verified);
    assert!(r.checkpoint.is_some());
    // The reader sees nothing of the other tenant.
    assert!(r.accounts.iter().all(|a| !a.user.starts_with("emp")));

    let dir = std::env::temp_dir().join(format!("authaudit-report-{}", db.name()));
    let (html, cef) = write_report(&mut analyst, &r, start, now + 60, &dir).unwrap();
    let cef_lines = std::fs::read_to_string(&cef).unwrap();
    assert_eq!(cef_lines.lines().count() as i64, r.events);
    assert!(cef_lines
        .lines()
        .all(|l| l.starts_with("CEF:0|pg_authaudit|")));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(!page.contains("<script") && !page.contains("http://") && !page.contains("https://"));

    // Headless Chromium: the DOM has the timeline with its bars and lock
    // markers, and a screenshot is taken.
    let url = format!("file://{}", html.display());
    let dom = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--dump-dom",
            &url,
        ])
        .output()
        .expect("chromium (installed by scripts/setup.sh)");
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("id=\"timeline\""));
    assert!(dom.matches("<rect").count() > 20);
    assert!(dom.contains("j.smith"));
    // The campaigns first: the alerts grouped, fewer lines than alerts.
    let campaigns = dom
        .split("id=\"campaigns\"")
        .nth(1)
        .expect("the campaigns table");
    let campaigns = campaigns.split("</table>").next().unwrap();
    let lines = campaigns.matches("<tr>").count() - 1;
    assert!(
        (1..7).contains(&lines)
            && campaigns.contains("Password spray")
            && campaigns.contains("j.smith"),
        "{campaigns}"
    );
    // The campaign alerts of the period, one row each, named by rule.
    let alerts = dom.split("id=\"alerts\"").nth(1).expect("the alerts table");
    let alerts = alerts.split("</table>").next().unwrap();
    assert_eq!(
        alerts.matches("<b>Credential stuffing</b>").count(),
        3,
        "{alerts}"
    );
    assert_eq!(
        alerts.matches("<b>Password spray</b>").count(),
        1,
        "{alerts}"
    );
    assert!(
        alerts.contains("<b>Login succeeded after failures</b>"),
        "{alerts}"
    );
    assert!(
        alerts.contains("185.220.101.7") && alerts.contains("j.smith"),
        "{alerts}"
    );
    let shot = dir.join("report.png");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1100,1400",
            &format!("--screenshot={}", shot.display()),
            &url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        png.len() > 20_000,
        "screenshot too small to show the report"
    );
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(!errors.contains("Uncaught"), "{errors}");
    let _ = std::fs::remove_dir_all(&dir);
}
