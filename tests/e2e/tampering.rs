//! A superuser edits storage directly; verification finds the first bad row.

use crate::support::{db, fail, log_id, verify};
use postgres::Client;

const TENANT: &str = "victim";

/// Ten events for the victim tenant and three for a bystander tenant.
fn seeded(hint: &str) -> (authaudit_tests::TestDb, Client) {
    let db = db(hint);
    let mut c = db.connect();
    for n in 1..=10 {
        fail(&mut c, &log_id(1, n), TENANT, &format!("user{}", n % 3));
    }
    for n in 1..=3 {
        fail(&mut c, &log_id(2, n), "bystander", "carol");
    }
    assert_eq!(verify(&mut c, TENANT), (true, 10, None, None));
    (db, c)
}

/// Runs `sql` with triggers off, as an attacker with superuser rights would.
fn tamper(c: &mut Client, sql: &str) {
    c.batch_execute(&format!(
        "SET session_replication_role = replica; {sql}; RESET session_replication_role;"
    ))
    .unwrap();
}

fn assert_first_bad(c: &mut Client, seq: i64) {
    let (ok, _, bad, reason) = verify(c, TENANT);
    assert!(!ok, "tampering went unnoticed");
    assert_eq!(bad, Some(seq), "reason: {reason:?}");
    assert!(
        verify(c, "bystander").0,
        "another tenant's chain is affected"
    );
}

#[test]
fn an_edited_field_is_found_in_every_column() {
    let edits = [
        ("ip", "ip = '10.9.9.9'", 4),
        ("metadata", "metadata = '{\"reason\": \"ok\"}'", 5),
        (
            "occurred_at",
            "occurred_at = occurred_at - interval '1 microsecond'",
            6,
        ),
        (
            "recorded_at",
            "recorded_at = recorded_at + interval '1 second'",
            7,
        ),
        ("user_id", "user_id = 'someone-else'", 2),
        ("event_type", "event_type = 'login_success'", 3),
        ("user_agent", "user_agent = NULL", 8),
        ("org_id", "org_id = 'hq'", 9),
        ("channel", "channel = 'mobile'", 10),
        ("log_id", "log_id = gen_random_uuid()", 1),
    ];
    for (column, set, seq) in edits {
        let (_db, mut c) = seeded(&format!("edit_{column}"));
        tamper(
            &mut c,
            &format!(
                "UPDATE authaudit.auth_log SET {set} WHERE tenant_id = '{TENANT}' AND seq = {seq}"
            ),
        );
        assert_first_bad(&mut c, seq);
    }
}

#[test]
fn a_deleted_row_is_found() {
    let (_db, mut c) = seeded("deleted");
    tamper(
        &mut c,
        &format!("DELETE FROM authaudit.auth_log WHERE tenant_id = '{TENANT}' AND seq = 6"),
    );
    assert_first_bad(&mut c, 6);
}

/// SQL inserting a forged row at `seq` that copies row `from` (its digests
/// included, and its link as `prev_link`) with `event_type` as given.
fn forged_copy(from: i64, seq: i64, event_type: &str) -> String {
    format!(
        "INSERT INTO authaudit.auth_log
         SELECT gen_random_uuid(), tenant_id, org_id, {seq}, {event_type}, user_id, ip, user_agent,
                channel, occurred_at, recorded_at, metadata, format_version, link_sha256,
                link_sha256, digest_sha512, digest_sha3_256
           FROM authaudit.auth_log WHERE tenant_id = '{TENANT}' AND seq = {from}"
    )
}

#[test]
fn an_inserted_forged_row_is_found() {
    let (_db, mut c) = seeded("forged");
    // Make room at seq 5 and slip in a copy of row 4 posing as a success.
    tamper(
        &mut c,
        &format!(
            "UPDATE authaudit.auth_log SET seq = seq + 100 WHERE tenant_id = '{TENANT}' AND seq >= 5;
             UPDATE authaudit.auth_log SET seq = seq - 99 WHERE tenant_id = '{TENANT}' AND seq >= 105;
             {}",
            forged_copy(4, 5, "'login_success'")
        ),
    );
    assert_first_bad(&mut c, 5);
}

#[test]
fn a_forged_row_appended_at_the_end_is_found() {
    let (_db, mut c) = seeded("appended");
    tamper(&mut c, &forged_copy(10, 11, "event_type"));
    assert_first_bad(&mut c, 11);
}

#[test]
fn two_swapped_rows_are_found() {
    let (_db, mut c) = seeded("swapped");
    tamper(
        &mut c,
        &format!(
            "UPDATE authaudit.auth_log SET seq = 1003 WHERE tenant_id = '{TENANT}' AND seq = 3;
             UPDATE authaudit.auth_log SET seq = 3 WHERE tenant_id = '{TENANT}' AND seq = 4;
             UPDATE authaudit.auth_log SET seq = 4 WHERE tenant_id = '{TENANT}' AND seq = 1003"
        ),
    );
    assert_first_bad(&mut c, 3);
}

#[test]
fn an_overwritten_digest_is_found_for_each_algorithm() {
    for (column, seq) in [
        ("link_sha256", 7),
        ("digest_sha512", 2),
        ("digest_sha3_256", 9),
        ("prev_link", 5),
    ] {
        let (_db, mut c) = seeded(&format!("digest_{column}"));
        tamper(
            &mut c,
            &format!(
                "UPDATE authaudit.auth_log SET {column} = sha256({column}) \
                 WHERE tenant_id = '{TENANT}' AND seq = {seq}"
            ),
        );
        assert_first_bad(&mut c, seq);
    }
}

#[test]
fn edits_with_triggers_disabled_are_found() {
    let (_db, mut c) = seeded("triggers_off");
    c.batch_execute(&format!(
        "ALTER TABLE authaudit.auth_log DISABLE TRIGGER ALL;
         UPDATE authaudit.auth_log SET digest_sha3_256 = sha256('x') WHERE tenant_id = '{TENANT}' AND seq = 8;
         ALTER TABLE authaudit.auth_log ENABLE TRIGGER ALL;"
    ))
    .unwrap();
    assert_first_bad(&mut c, 8);
}

#[test]
fn a_range_is_verified_from_its_anchor() {
    let (_db, mut c) = seeded("range");
    let row = c
        .query_one("SELECT * FROM authaudit.verify_chain($1, 4, 7)", &[&TENANT])
        .unwrap();
    assert_eq!((row.get::<_, bool>(0), row.get::<_, i64>(1)), (true, 4));
    tamper(
        &mut c,
        &format!("DELETE FROM authaudit.auth_log WHERE tenant_id = '{TENANT}' AND seq = 6"),
    );
    let row = c
        .query_one(
            "SELECT ok, first_bad_seq FROM authaudit.verify_chain($1, 4, 7)",
            &[&TENANT],
        )
        .unwrap();
    assert_eq!(
        (row.get::<_, bool>(0), row.get::<_, Option<i64>>(1)),
        (false, Some(6))
    );
    // A range that ends before the damage still verifies.
    let row = c
        .query_one(
            "SELECT ok FROM authaudit.verify_chain($1, 1, 5)",
            &[&TENANT],
        )
        .unwrap();
    assert!(row.get::<_, bool>(0));
}

#[test]
fn an_unknown_tenant_has_an_empty_valid_chain() {
    let (_db, mut c) = seeded("unknown_tenant");
    assert_eq!(verify(&mut c, "nobody"), (true, 0, None, None));
}
