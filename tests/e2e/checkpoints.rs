//! Checkpoints catch rows removed from the tail; retention removes old rows
//! up to a checkpoint, for admins only, leaving a chain that still verifies
//! and an event that says what went; the operational view counts per minute.

use crate::support::{db, fail, log_id, log_state, record, sqlstate, verify, Event};
use postgres::error::SqlState;
use postgres::Client;

const T: &str = "acme";

fn tamper(c: &mut Client, sql: &str) {
    c.batch_execute(&format!(
        "SET session_replication_role = replica; {sql}; RESET session_replication_role;"
    ))
    .unwrap();
}

fn checkpoint(c: &mut Client) -> Result<i64, postgres::Error> {
    c.query_one("SELECT seq FROM authaudit.checkpoint($1)", &[&T])
        .map(|r| r.get(0))
}

/// (ok, first_bad_seq, reason, anchor_seq, checkpoints_checked)
fn verify_full(c: &mut Client) -> (bool, Option<i64>, Option<String>, Option<i64>, i64) {
    let r = c
        .query_one("SELECT * FROM authaudit.verify_chain($1)", &[&T])
        .unwrap();
    (r.get(0), r.get(2), r.get(3), r.get(4), r.get(5))
}

/// Records a failure that happened `days_ago` days ago.
fn old_failure(c: &mut Client, n: u32, days_ago: f64) {
    let e = Event::failed(T, "alice")
        .log_id(&log_id(1, n))
        .ip("198.51.100.1")
        .ago(&format!("{days_ago} days"));
    record(c, &e);
}

#[test]
fn a_checkpoint_detects_rows_removed_from_the_tail() {
    let db = db("cp_tail");
    let mut c = db.connect_dated();
    for n in 1..=5 {
        fail(&mut c, &log_id(1, n), T, "alice");
    }
    assert_eq!(checkpoint(&mut c).unwrap(), 5);
    // Idempotent while the head stays.
    assert_eq!(checkpoint(&mut c).unwrap(), 5);
    for n in 6..=7 {
        fail(&mut c, &log_id(1, n), T, "alice");
    }
    assert_eq!(verify_full(&mut c), (true, None, None, None, 1));
    // Without a checkpoint past them, removing rows 6-7 would leave a
    // shorter chain that verifies; removing the checkpointed row 5 is caught.
    tamper(&mut c, "DELETE FROM authaudit.auth_log WHERE seq >= 5");
    let (ok, bad, reason, ..) = verify_full(&mut c);
    assert!(!ok);
    assert_eq!(bad, Some(5));
    assert!(reason.unwrap().contains("past the end of the chain"));
}

#[test]
fn a_checkpoint_catches_a_rewritten_checkpointed_row_and_never_anchors_tampering() {
    let db = db("cp_rewrite");
    let mut c = db.connect_dated();
    for n in 1..=4 {
        fail(&mut c, &log_id(1, n), T, "alice");
    }
    checkpoint(&mut c).unwrap();
    // A forger rewrites row 4 with consistent digests of its own making
    // (copies row 3's digests into it): the chain check or the checkpoint fails.
    tamper(
        &mut c,
        "UPDATE authaudit.auth_log l SET user_id = 'mallory' WHERE seq = 4",
    );
    assert!(!verify(&mut c, T).0);
    let before: i64 = c
        .query_one("SELECT count(*) FROM authaudit.checkpoints", &[])
        .unwrap()
        .get(0);
    fail(&mut c, &log_id(1, 5), T, "alice");
    let err = checkpoint(&mut c).unwrap_err();
    assert_eq!(sqlstate(&err), Some(SqlState::DATA_CORRUPTED), "{err}");
    let after: i64 = c
        .query_one("SELECT count(*) FROM authaudit.checkpoints", &[])
        .unwrap()
        .get(0);
    assert_eq!(before, after);
    // Checkpoints are append-only, even for the owner.
    for sql in [
        "UPDATE authaudit.checkpoints SET seq = 99",
        "DELETE FROM authaudit.checkpoints",
        "TRUNCATE authaudit.checkpoints",
    ] {
        let err = c.batch_execute(sql).unwrap_err();
        assert_eq!(
            sqlstate(&err),
            Some(SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}"
        );
        // The refusal names the table it protects, not the log.
        let db_err = err.as_db_error().unwrap();
        assert!(
            db_err
                .message()
                .contains("authaudit.checkpoints is not allowed: the table is append-only"),
            "{sql}: {}",
            db_err.message()
        );
        assert!(
            !db_err.hint().unwrap_or_default().contains("record_event"),
            "{sql}"
        );
    }
}

#[test]
fn a_horizon_inside_the_minimum_retention_is_refused_in_days() {
    let db = db("retention_days");
    let mut c = db.connect();
    fail(&mut c, &log_id(1, 1), T, "alice");
    let err = c
        .query(
            "SELECT * FROM authaudit.apply_retention($1, now() - interval '30 days')",
            &[&T],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some(SqlState::INVALID_PARAMETER_VALUE));
    let msg = err.as_db_error().unwrap().message().to_owned();
    assert!(
        msg.ends_with("is younger than authaudit.min_retention (365 days)"),
        "{msg}"
    );
}

#[test]
fn verification_can_start_from_a_checkpoint() {
    let db = db("cp_from");
    let mut c = db.connect_dated();
    for n in 1..=3 {
        fail(&mut c, &log_id(1, n), T, "alice");
    }
    checkpoint(&mut c).unwrap();
    for n in 4..=6 {
        fail(&mut c, &log_id(1, n), T, "alice");
    }
    // Rows before the checkpoint are not read: tampering there is outside.
    tamper(
        &mut c,
        "UPDATE authaudit.auth_log SET user_id = 'x' WHERE seq = 2",
    );
    let r = c
        .query_one(
            "SELECT ok, rows_checked, anchor_seq FROM authaudit.verify_chain_from_checkpoint($1, 3)",
            &[&T],
        )
        .unwrap();
    assert_eq!(
        (
            r.get::<_, bool>(0),
            r.get::<_, i64>(1),
            r.get::<_, Option<i64>>(2)
        ),
        (true, 3, Some(3))
    );
    tamper(
        &mut c,
        "UPDATE authaudit.auth_log SET user_id = 'x' WHERE seq = 5",
    );
    let r = c
        .query_one(
            "SELECT ok, first_bad_seq FROM authaudit.verify_chain_from_checkpoint($1, 3)",
            &[&T],
        )
        .unwrap();
    assert_eq!(
        (r.get::<_, bool>(0), r.get::<_, Option<i64>>(1)),
        (false, Some(5))
    );
}

#[test]
fn retention_removes_old_rows_up_to_a_checkpoint_and_the_rest_still_verifies() {
    let db = db("retention");
    let mut c = db.connect_dated();
    for n in 1..=4 {
        old_failure(&mut c, n, 400.0);
    }
    checkpoint(&mut c).unwrap(); // seq 4
    old_failure(&mut c, 5, 399.0); // old, but after the checkpoint: kept
    old_failure(&mut c, 6, 1.0);
    let p = db.name().to_string();
    c.batch_execute(&format!(
        "CREATE ROLE {p}_dpo LOGIN IN ROLE authaudit_admin;
         CREATE ROLE {p}_app LOGIN IN ROLE authaudit_writer;
         CREATE ROLE {p}_analyst LOGIN IN ROLE authaudit_reader;
         INSERT INTO authaudit.tenant_scope (role_name, tenant_id, can_read, can_write) VALUES
           ('{p}_app', '{T}', false, true), ('{p}_analyst', '{T}', true, false);"
    ))
    .unwrap();
    let connect = |who: &str| {
        Client::connect(
            &format!(
                "host=127.0.0.1 port={} user={p}_{who} dbname={p}",
                db.cluster().port()
            ),
            postgres::NoTls,
        )
        .unwrap()
    };
    // Refused for everyone but the admin role, with nothing removed.
    for who in ["app", "analyst"] {
        let err = connect(who)
            .query(
                "SELECT * FROM authaudit.apply_retention($1, now() - interval '1 year')",
                &[&T],
            )
            .unwrap_err();
        assert_eq!(
            sqlstate(&err),
            Some(SqlState::INSUFFICIENT_PRIVILEGE),
            "{who}: {err}"
        );
    }
    assert_eq!(log_state(&mut c, T), (6, 6));

    let mut dpo = connect("dpo");
    let r = dpo
        .query_one(
            "SELECT removed_rows, removed_from_seq, removed_to_seq, anchor_seq, event_log_id::text \
             FROM authaudit.apply_retention($1, now() - interval '1 year')",
            &[&T],
        )
        .unwrap();
    let (n, from, to, anchor): (i64, i64, i64, i64) = (r.get(0), r.get(1), r.get(2), r.get(3));
    assert_eq!((n, from, to, anchor), (4, 1, 4, 4));
    let event_id: String = r.get(4);
    let seqs: Vec<i64> = c
        .query("SELECT seq FROM authaudit.auth_log ORDER BY seq", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seqs, [5, 6, 7]);
    let r = c
        .query_one(
            "SELECT event_type, user_id, metadata::text FROM authaudit.auth_log WHERE log_id = $1::text::uuid",
            &[&event_id],
        )
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "retention_applied");
    assert_eq!(r.get::<_, String>(1), format!("{p}_dpo"));
    let meta: serde_json::Value = serde_json::from_str(&r.get::<_, String>(2)).unwrap();
    let ret = &meta["_authaudit"]["retention"];
    assert_eq!(
        (ret["removed_rows"].as_i64(), ret["removed_to_seq"].as_i64()),
        (Some(4), Some(4))
    );
    assert_eq!(ret["anchor"]["seq"], 4);
    assert_eq!(ret["mode"], "delete");
    // The event records the anchor's three digests: every chain restarts there.
    let cp: String = c
        .query_one(
            "SELECT concat_ws(' ', encode(link_sha256, 'hex'), encode(digest_sha512, 'hex'), \
             encode(digest_sha3_256, 'hex')) FROM authaudit.checkpoints WHERE tenant_id = $1 AND seq = 4",
            &[&T],
        )
        .unwrap()
        .get(0);
    let recorded = ["link_sha256", "digest_sha512", "digest_sha3_256"]
        .map(|k| ret["anchor"][k].as_str().unwrap_or_default().to_string())
        .join(" ");
    assert_eq!(recorded, cp);
    // The rest verifies from the checkpoint the log was cut at.
    assert_eq!(verify_full(&mut c), (true, None, None, Some(4), 0));
    // So does the independent verifier, from the export alone.
    let out = crate::support::run_python("tools/verify_chain.py", &db.psql(&[
        "-c",
        "COPY (SELECT * FROM authaudit.auth_log ORDER BY tenant_id, seq) TO STDOUT WITH (HEADER)",
    ]));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(
            "acme: ok, 3 rows (from seq 5, anchored at seq 4 by its retention_applied event)"
        ),
        "{text}"
    );
    // A checkpoint rewritten after the cut no longer matches the chained
    // event: the anchor is refused, one digest is enough.
    tamper(
        &mut c,
        "UPDATE authaudit.checkpoints SET digest_sha3_256 = sha256('forged') WHERE seq = 4",
    );
    let (ok, bad, reason, ..) = verify_full(&mut c);
    assert!(!ok);
    assert_eq!(bad, Some(4));
    assert!(reason.unwrap().contains("differs from the anchor"));
    // Without the checkpoint, the event alone anchors all three chains.
    tamper(&mut c, "DELETE FROM authaudit.checkpoints WHERE seq = 4");
    assert_eq!(verify_full(&mut c), (true, None, None, Some(4), 0));
    // A second call finds nothing more to remove (no checkpoint after seq 4
    // is older than the horizon) and records nothing.
    let n: i64 = dpo
        .query_one(
            "SELECT removed_rows FROM authaudit.apply_retention($1, now() - interval '1 year')",
            &[&T],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    assert_eq!(log_state(&mut c, T), (3, 7));
    // Deleting the oldest rows any other way is not a retention cut.
    tamper(&mut c, "DELETE FROM authaudit.auth_log WHERE seq = 5");
    let (ok, bad, ..) = verify_full(&mut c);
    assert!(!ok);
    assert_eq!(bad, Some(5));
}

#[test]
fn heads_removed_without_a_retention_event_are_reported() {
    let db = db("retention_forged");
    let mut c = db.connect_dated();
    for n in 1..=4 {
        fail(&mut c, &log_id(1, n), T, "alice");
    }
    checkpoint(&mut c).unwrap();
    fail(&mut c, &log_id(1, 5), T, "alice");
    tamper(&mut c, "DELETE FROM authaudit.auth_log WHERE seq <= 4");
    let (ok, bad, reason, ..) = verify_full(&mut c);
    assert!(!ok);
    assert_eq!(bad, Some(1));
    assert!(reason.unwrap().contains("no retention_applied event"));
}

#[test]
fn event_rates_count_per_minute_and_type_within_scope() {
    let db = db("event_rates");
    let mut c = db.connect_dated();
    for n in 1..=3 {
        fail(&mut c, &log_id(1, n), T, "alice");
    }
    record(&mut c, &Event::success(T, "alice").log_id(&log_id(1, 9)));
    fail(&mut c, &log_id(2, 1), "other", "bob");
    let p = db.name().to_string();
    c.batch_execute(&format!(
        "CREATE ROLE {p}_analyst LOGIN IN ROLE authaudit_reader;
         INSERT INTO authaudit.tenant_scope (role_name, tenant_id, can_read) VALUES ('{p}_analyst', '{T}', true);"
    ))
    .unwrap();
    let mut analyst = Client::connect(
        &format!(
            "host=127.0.0.1 port={} user={p}_analyst dbname={p}",
            db.cluster().port()
        ),
        postgres::NoTls,
    )
    .unwrap();
    let rows = analyst
        .query(
            "SELECT tenant_id, event_type, sum(events)::bigint, max(failure_ratio)::float8 \
             FROM authaudit.event_rates GROUP BY 1, 2 ORDER BY 1, 2",
            &[],
        )
        .unwrap();
    let got: Vec<(String, String, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        [
            (T.to_string(), "login_failed".to_string(), 3),
            (T.to_string(), "login_success".to_string(), 1)
        ]
    );
    // All four events fall in one or two minutes; the ratio is failures
    // over attempts of that tenant-minute.
    let ratio: f64 = rows[0].get(3);
    assert!((0.5..=1.0).contains(&ratio), "{ratio}");
    // Minutes are event time: a failure of 40 minutes ago recorded now
    // counts 40 minutes back, with its lag; an imported one too, marked.
    let carol = Event::failed(T, "carol")
        .log_id(&log_id(1, 20))
        .ago("40 minutes");
    record(&mut c, &carol);
    c.execute(
        "SELECT count(*) FROM authaudit.import_events(jsonb_build_array(jsonb_build_object( \
           'log_id', $1::text, 'tenant_id', $2::text, 'event_type', 'login_failed', 'user_id', 'dave', \
           'channel', 'ssh', 'occurred_at', now() - interval '30 minutes')))",
        &[&log_id(1, 21), &T],
    )
    .unwrap();
    let (minutes_back, lag, imported): (f64, f64, i64) = {
        let r = analyst
            .query_one(
                "SELECT extract(epoch FROM date_trunc('minute', now()) - min(minute))::float8 / 60, \
                        extract(epoch FROM max(max_recording_lag))::float8 / 60, sum(imported)::bigint \
                   FROM authaudit.event_rates WHERE event_type = 'login_failed'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert!((40.0..=41.0).contains(&minutes_back), "{minutes_back}");
    assert!((39.9..=41.0).contains(&lag), "{lag}");
    assert_eq!(imported, 1);
}

/// (ok, rows_checked, first_bad_seq, mode) of `verify_chain(T, full)`.
fn verify_mode(c: &mut Client, full: bool) -> (bool, i64, Option<i64>, String) {
    let r = c
        .query_one(
            "SELECT ok, rows_checked, first_bad_seq, mode FROM authaudit.verify_chain($1, $2)",
            &[&T, &full],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

#[test]
fn incremental_verification_checks_the_rows_since_the_latest_checkpoint_and_says_so() {
    let db = db("verify_incremental");
    let mut c = db.connect();
    // Without a checkpoint, an incremental verification is a full one.
    for n in 1..=6 {
        fail(&mut c, &log_id(1, n), T, "alice");
    }
    assert_eq!(verify_mode(&mut c, false), (true, 6, None, "full".into()));
    assert_eq!(checkpoint(&mut c).unwrap(), 6);
    for n in 7..=10 {
        fail(&mut c, &log_id(1, n), T, "alice");
    }
    // The checkpoint's own row (re-checked against it) and the four since.
    assert_eq!(
        verify_mode(&mut c, false),
        (true, 5, None, "from_checkpoint".into())
    );
    assert_eq!(verify_mode(&mut c, true), (true, 10, None, "full".into()));

    // A row after the checkpoint edited: both find it.
    tamper(
        &mut c,
        &format!(
            "UPDATE authaudit.auth_log SET user_id = 'mallory' WHERE tenant_id = '{T}' AND seq = 8"
        ),
    );
    assert_eq!(verify_mode(&mut c, false).2, Some(8));
    assert_eq!(verify_mode(&mut c, true).2, Some(8));
    tamper(
        &mut c,
        &format!(
            "UPDATE authaudit.auth_log SET user_id = 'alice' WHERE tenant_id = '{T}' AND seq = 8"
        ),
    );
    // The checkpointed row itself rewritten with fresh digests: the
    // checkpoint no longer agrees with it.
    tamper(
        &mut c,
        &format!(
            "UPDATE authaudit.auth_log SET link_sha256 = sha256(link_sha256) \
              WHERE tenant_id = '{T}' AND seq = 6"
        ),
    );
    let (ok, _, bad, mode) = verify_mode(&mut c, false);
    assert!(!ok && bad == Some(6), "{bad:?} {mode}");
    tamper(
        &mut c,
        &format!(
            "UPDATE authaudit.auth_log SET link_sha256 = (SELECT link_sha256 FROM authaudit.checkpoints \
               WHERE tenant_id = '{T}' AND seq = 6) WHERE tenant_id = '{T}' AND seq = 6"
        ),
    );
    // A row before the checkpoint edited: only the full verification looks
    // there (docs/sql-reference.md says so).
    tamper(
        &mut c,
        &format!(
            "UPDATE authaudit.auth_log SET user_id = 'mallory' WHERE tenant_id = '{T}' AND seq = 3"
        ),
    );
    assert_eq!(
        verify_mode(&mut c, false),
        (true, 5, None, "from_checkpoint".into())
    );
    assert_eq!(verify_mode(&mut c, true).2, Some(3));
    assert_eq!(
        verify_full(&mut c).1,
        Some(3),
        "the default is the full chain"
    );
}
