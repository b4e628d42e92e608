//! The dashboard's poll (`authaudit.event_rates`) over its rollup: the same
//! answer whether a tenant's minutes are rolled up or read from its rows,
//! for every reader's scope, and kept by the rollup worker.

use crate::support::{db, log_id, record, Event, Rng};
use authaudit_tests::Cluster;
use postgres::{Client, GenericClient, IsolationLevel};
use std::time::{Duration, Instant};

/// (tenant, minute as epoch seconds, event type, events, imported,
/// largest lag in ms) per row of the view.
type Rates = Vec<(String, i64, String, i64, i64, i64)>;

const FROM_VIEW: &str =
    "SELECT tenant_id, extract(epoch FROM minute)::bigint, event_type, events, \
       imported, (extract(epoch FROM max_recording_lag) * 1000)::bigint \
  FROM authaudit.event_rates ORDER BY 1, 2, 3";

/// The same counts from the rows the caller sees, as the view defines them.
const FROM_ROWS: &str = "SELECT tenant_id, extract(epoch FROM date_trunc('minute', occurred_at))::bigint, \
       event_type, count(*), count(*) FILTER (WHERE metadata #>> '{_authaudit,imported}' = 'true'), \
       (extract(epoch FROM max(recorded_at - occurred_at)) * 1000)::bigint \
  FROM authaudit.auth_log \
 WHERE occurred_at >= date_trunc('minute', now()) - interval '59 minutes' \
 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3";

fn rows(c: &mut impl GenericClient, sql: &str) -> Rates {
    c.query(sql, &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect()
}

/// The view and the rows, read in one snapshot (one `now()`).
fn view_and_rows(c: &mut Client) -> (Rates, Rates) {
    let mut tx = c
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .unwrap();
    let view = rows(&mut tx, FROM_VIEW);
    let truth = rows(&mut tx, FROM_ROWS);
    tx.commit().unwrap();
    (view, truth)
}

const TENANTS: [&str; 3] = ["rates-a", "rates-b", "rates-c"];
const ORGS: [Option<&str>; 3] = [None, Some("org-1"), Some("org-2")];
const TYPES: [&str; 3] = ["login_failed", "login_success", "lockout_reset"];

/// Records one random event: live or imported, now or up to 90 minutes
/// ago (across the hour's edge), in a random tenant and organisation.
fn record_random(c: &mut Client, rng: &mut Rng, n: u32) {
    let tenant = TENANTS[rng.index(TENANTS.len())];
    let org = ORGS[rng.index(ORGS.len())];
    let kind = TYPES[rng.index(TYPES.len())];
    let user = format!("user{}", rng.below(4));
    let ago = format!("{} seconds", rng.below(90 * 60));
    let id = log_id(9, n);
    if rng.below(4) == 0 {
        c.execute(
            "SELECT count(*) FROM authaudit.import_events(jsonb_build_array(jsonb_build_object( \
               'log_id', $1::text, 'tenant_id', $2::text, 'org_id', $3::text, 'event_type', $4::text, \
               'user_id', $5::text, 'channel', 'ssh', 'occurred_at', now() - $6::text::interval)))",
            &[&id, &tenant, &org, &kind, &user, &ago],
        )
        .unwrap();
    } else {
        let e = Event::new(tenant, kind, &user)
            .set("org_id", org)
            .log_id(&id)
            .ago(&ago);
        record(c, &e);
    }
}

#[test]
fn event_rates_equal_the_rows_whether_rolled_up_or_not_for_every_scope() {
    let db = db("rates_rollup");
    let mut admin = db.connect_dated();
    let p = db.name().to_string();
    admin
        .batch_execute(&format!(
            "CREATE ROLE {p}_soc LOGIN IN ROLE authaudit_auditor;
             CREATE ROLE {p}_tenant LOGIN IN ROLE authaudit_reader;
             CREATE ROLE {p}_org LOGIN IN ROLE authaudit_reader;
             INSERT INTO authaudit.tenant_scope (role_name, tenant_id, org_id, can_read) VALUES
               ('{p}_tenant', 'rates-a', NULL, true),
               ('{p}_org', 'rates-b', 'org-1', true);"
        ))
        .unwrap();
    let mut readers: Vec<(&str, Client)> = vec![
        ("superuser", db.connect()),
        ("auditor", db.connect_as(&format!("{p}_soc"))),
        ("tenant reader", db.connect_as(&format!("{p}_tenant"))),
        ("organisation reader", db.connect_as(&format!("{p}_org"))),
    ];
    let mut rng = Rng(0x5eed_4a7e);
    let mut n = 0;
    let mut rolled_passes = 0;
    for step in 0..60 {
        for _ in 0..rng.below(6) {
            n += 1;
            record_random(&mut admin, &mut rng, n);
        }
        // A pass over a few rows at a time leaves rows after each tenant's
        // seq for the view to read, or over all of them.
        if rng.below(3) > 0 {
            let max_rows = [1_i64, 3, 1000][rng.index(3)];
            admin
                .execute("SELECT authaudit.roll_up_event_rates($1)", &[&max_rows])
                .unwrap();
            rolled_passes += 1;
        }
        for (who, c) in readers.iter_mut() {
            let (view, truth) = view_and_rows(c);
            assert_eq!(view, truth, "{who}, step {step}");
        }
    }
    assert!(rolled_passes > 20);
    // Every scope saw something, and the organisation reader only its own.
    let (org_view, _) = view_and_rows(&mut readers[3].1);
    assert!(!org_view.is_empty());
    assert!(org_view.iter().all(|r| r.0 == "rates-b"));
    let org_events: i64 = org_view.iter().map(|r| r.3).sum();
    let all_b: i64 = admin
        .query_one(
            "SELECT sum(events)::bigint FROM authaudit.event_rates WHERE tenant_id = 'rates-b'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(org_events < all_b, "{org_events} of {all_b}");
    // The rollup holds each tenant up to its last seq once caught up.
    admin
        .execute("SELECT authaudit.roll_up_event_rates()", &[])
        .unwrap();
    let behind: i64 = admin
        .query_one(
            "SELECT count(*) FROM authaudit.event_minutes_rolled r \
              WHERE r.seq <> (SELECT max(seq) FROM authaudit.auth_log l WHERE l.tenant_id = r.tenant_id)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(behind, 0);
}

#[test]
fn a_stale_or_reset_rollup_is_not_trusted() {
    let db = db("rates_stale");
    let mut c = db.connect_dated();
    let mut rng = Rng(7);
    for n in 1..=20 {
        record_random(&mut c, &mut rng, n);
    }
    c.execute("SELECT authaudit.roll_up_event_rates()", &[])
        .unwrap();
    // A rollup nobody has looked at for ten minutes (its worker stopped)
    // is passed over, even when its minutes are wrong.
    c.batch_execute(
        "UPDATE authaudit.event_minutes_rolled SET checked_at = now() - interval '10 minutes';
         UPDATE authaudit.event_minutes SET events = events + 1000;",
    )
    .unwrap();
    let (view, truth) = view_and_rows(&mut c);
    assert_eq!(view, truth);
    // A tenant whose rollup position is lost is counted again from its
    // rows, not added to what its minutes held.
    c.batch_execute("DELETE FROM authaudit.event_minutes_rolled")
        .unwrap();
    c.execute("SELECT authaudit.roll_up_event_rates()", &[])
        .unwrap();
    let (view, truth) = view_and_rows(&mut c);
    assert_eq!(view, truth);
    let fresh: i64 = c
        .query_one(
            "SELECT count(*) FROM authaudit.event_minutes_rolled \
              WHERE checked_at >= now() - interval '1 minute'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(fresh as usize, TENANTS.len());
}

#[test]
fn roll_up_refuses_a_bad_limit_and_is_the_administrators_only() {
    let db = db("rates_rights");
    let mut c = db.connect();
    let err = c
        .execute("SELECT authaudit.roll_up_event_rates(0)", &[])
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&postgres::error::SqlState::INVALID_PARAMETER_VALUE)
    );
    let p = db.name().to_string();
    c.batch_execute(&format!(
        "CREATE ROLE {p}_w LOGIN IN ROLE authaudit_writer;
         CREATE ROLE {p}_r LOGIN IN ROLE authaudit_reader;
         CREATE ROLE {p}_a LOGIN IN ROLE authaudit_admin;"
    ))
    .unwrap();
    for who in ["w", "r"] {
        let mut other = db.connect_as(&format!("{p}_{who}"));
        let err = other
            .execute("SELECT authaudit.roll_up_event_rates()", &[])
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{who}"
        );
        // Nobody but the rollup writes its tables.
        let err = other
            .batch_execute(
                "INSERT INTO authaudit.event_minutes VALUES ('x', NULL, now(), 'login_failed', 1, 0, '0')",
            )
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{who}"
        );
    }
    let mut admin = db.connect_as(&format!("{p}_a"));
    admin
        .execute("SELECT authaudit.roll_up_event_rates()", &[])
        .unwrap();
}

#[test]
fn the_rollup_worker_keeps_the_minutes_of_its_database() {
    let cluster = Cluster::dedicated("rollup_worker");
    let db = cluster.fresh_db("rollup_worker");
    let mut admin = cluster.admin();
    admin
        .batch_execute(&format!(
            "ALTER SYSTEM SET authaudit.rollup_database = '{}'",
            db.name()
        ))
        .unwrap();
    cluster.restart();
    let mut c = db.connect_dated();
    let worker: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
              WHERE backend_type = 'pg_authaudit rollup' AND datname = current_database()",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(worker, 1);
    let mut rng = Rng(11);
    for n in 1..=30 {
        record_random(&mut c, &mut rng, n);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let behind: i64 = c
            .query_one(
                "SELECT count(*) FROM (SELECT DISTINCT tenant_id FROM authaudit.auth_log) t \
                  WHERE NOT EXISTS (SELECT FROM authaudit.event_minutes_rolled r \
                                     WHERE r.tenant_id = t.tenant_id \
                                       AND r.seq = (SELECT max(seq) FROM authaudit.auth_log l \
                                                     WHERE l.tenant_id = t.tenant_id))",
                &[],
            )
            .unwrap()
            .get(0);
        if behind == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not roll up within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (view, truth) = view_and_rows(&mut c);
    assert_eq!(view, truth);
    let minutes: i64 = c
        .query_one(
            "SELECT sum(events)::bigint FROM authaudit.event_minutes",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(minutes > 0);
}

#[test]
fn a_database_owner_cannot_have_the_rollup_worker_run_its_own_function() {
    // The worker runs as the bootstrap superuser in the database it is
    // configured for. That database's owner, not a superuser, prepares a
    // look-alike before the extension is there: a schema authaudit with a
    // roll_up_event_rates of its own, and public functions named like the
    // catalog's.
    let cluster = Cluster::dedicated("rollup_owner");
    let mut admin = cluster.admin();
    for sql in [
        "CREATE ROLE rollup_owner LOGIN",
        "CREATE DATABASE rollup_owned OWNER rollup_owner",
        "ALTER SYSTEM SET authaudit.rollup_database = 'rollup_owned'",
    ] {
        admin.batch_execute(sql).unwrap();
    }
    cluster.restart();
    let mut admin = cluster.admin();
    let mut owner = postgres::Client::connect(
        &format!(
            "host=127.0.0.1 port={} user=rollup_owner dbname=rollup_owned",
            cluster.port()
        ),
        postgres::NoTls,
    )
    .unwrap();
    owner
        .batch_execute(
            "CREATE SCHEMA authaudit;
             CREATE FUNCTION authaudit.roll_up_event_rates(max_rows bigint DEFAULT 100000)
             RETURNS bigint LANGUAGE plpgsql AS $$
             BEGIN ALTER ROLE rollup_owner SUPERUSER; RETURN 0; END $$;
             CREATE FUNCTION public.to_regprocedure(anyelement) RETURNS regprocedure
             LANGUAGE plpgsql AS $$
             BEGIN ALTER ROLE rollup_owner SUPERUSER; RETURN NULL; END $$;",
        )
        .unwrap();
    // Ten of the worker's passes in that database (one a second), counted
    // from another database.
    let commits = |admin: &mut postgres::Client| -> i64 {
        admin
            .query_one(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'rollup_owned'",
                &[],
            )
            .unwrap()
            .get(0)
    };
    let start = commits(&mut admin);
    let deadline = Instant::now() + Duration::from_secs(60);
    while commits(&mut admin) < start + 10 {
        assert!(Instant::now() < deadline, "the worker ran no pass in 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    let superuser: bool = admin
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'rollup_owner'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        !superuser,
        "the rollup worker ran the owner's function as a superuser"
    );
}
