//! Channels (docs/configuration.md, `authaudit.extra_channels`): the
//! built-in set, a deployment's own channels, and who may change them.

use crate::support::{log_id, record_batch, sqlstate, try_record, verify, Event};
use authaudit_tests::Cluster;
use authaudit_tests::Stored;
use postgres::error::SqlState;

/// Records alice's failure number `n` on `channel`.
fn record_on(c: &mut postgres::Client, n: u32, channel: &str) -> Result<Stored, postgres::Error> {
    let e = Event::failed("agency", "alice")
        .log_id(&log_id(1, n))
        .channel(channel);
    try_record(c, &e)
}

#[test]
fn a_deployment_adds_its_own_channels_and_only_a_superuser_changes_them() {
    let db = Cluster::shared().fresh_db_with_lockout("channels_extra");
    let p = db.name().to_string();
    let mut su = db.connect();
    su.batch_execute(&format!(
        "CREATE ROLE {p}_w LOGIN IN ROLE authaudit_writer;
         INSERT INTO authaudit.tenant_scope (role_name, tenant_id, org_id, can_read, can_write)
           VALUES ('{p}_w', 'agency', NULL, true, true);"
    ))
    .unwrap();
    let rows = |c: &mut postgres::Client| -> i64 {
        c.query_one("SELECT count(*) FROM authaudit.auth_log", &[])
            .unwrap()
            .get(0)
    };

    // Unconfigured: an unknown channel is refused, nothing written, and
    // the hint names the parameter.
    let mut w = db.connect_as(&format!("{p}_w"));
    let err = record_on(&mut w, 1, "kiosk").unwrap_err();
    assert_eq!(
        sqlstate(&err),
        Some(SqlState::INVALID_PARAMETER_VALUE),
        "{err}"
    );
    let hint = err
        .as_db_error()
        .unwrap()
        .hint()
        .unwrap_or_default()
        .to_owned();
    assert!(hint.contains("authaudit.extra_channels"), "{hint}");
    assert_eq!(rows(&mut su), 0);
    // A writer cannot add a channel for itself.
    let err = w
        .batch_execute("SET authaudit.extra_channels = 'kiosk'")
        .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        Some(SqlState::INSUFFICIENT_PRIVILEGE),
        "{err}"
    );

    // Malformed lists and the reserved name are refused where they are set.
    for bad in ["Kiosk", "kiosk, fax machine", "kiosk,system", "9lives"] {
        let err = su
            .batch_execute(&format!("SET authaudit.extra_channels = '{bad}'"))
            .unwrap_err();
        assert_eq!(
            sqlstate(&err),
            Some(SqlState::INVALID_PARAMETER_VALUE),
            "{bad}: {err}"
        );
        let detail = err
            .as_db_error()
            .unwrap()
            .detail()
            .unwrap_or_default()
            .to_owned();
        assert!(detail.contains("channel"), "{bad}: {detail}");
    }

    // The deployment's channels, set for the database.
    su.batch_execute(&format!(
        "ALTER DATABASE {} SET authaudit.extra_channels = 'kiosk, radius'",
        db.name()
    ))
    .unwrap();
    let mut w = db.connect_as(&format!("{p}_w"));
    let listed: Vec<(String, bool, bool)> = w
        .query(
            "SELECT channel, built_in, writable FROM authaudit.channels()",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let names: Vec<&str> = listed.iter().map(|l| l.0.as_str()).collect();
    assert_eq!(
        names,
        ["web", "mobile", "api", "ssh", "vpn", "sso", "system", "kiosk", "radius"]
    );
    assert!(listed
        .iter()
        .all(|(n, _, writable)| *writable == (n != "system")));
    assert!(listed[7..].iter().all(|(_, built_in, _)| !built_in));
    let channel = record_on(&mut w, 2, "kiosk").unwrap().channel;
    assert_eq!(channel, "kiosk");
    let radius = Event::success("agency", "alice")
        .log_id(&log_id(1, 3))
        .channel("radius");
    let channel = record_batch(&mut w, &[radius]).remove(0).channel;
    assert_eq!(channel, "radius");
    // system stays the extension's own.
    let err = record_on(&mut w, 4, "system").unwrap_err();
    assert_eq!(
        sqlstate(&err),
        Some(SqlState::INVALID_PARAMETER_VALUE),
        "{err}"
    );
    // CEF carries the channel like any other.
    let cef: String = su
        .query_one(
            "SELECT authaudit.to_cef(l) FROM authaudit.auth_log l WHERE channel = 'kiosk'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(cef.contains("cs3=kiosk cs3Label=channel"), "{cef}");

    // A channel taken out of the list again: new events are refused, the
    // recorded ones stay evidence and verify.
    su.batch_execute(&format!(
        "ALTER DATABASE {} RESET authaudit.extra_channels",
        db.name()
    ))
    .unwrap();
    let mut w = db.connect_as(&format!("{p}_w"));
    let err = record_on(&mut w, 5, "kiosk").unwrap_err();
    assert_eq!(
        sqlstate(&err),
        Some(SqlState::INVALID_PARAMETER_VALUE),
        "{err}"
    );
    let mut su = db.connect();
    assert_eq!(rows(&mut su), 2);
    assert!(verify(&mut su, "agency").0);
}
