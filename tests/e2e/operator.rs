//! The operator's day: a witness that never gives false assurance, a
//! sidecar that fails safe. The real sidecar binary against the real
//! cluster: `witness-check` recomputes every row's link from its content;
//! a store that goes down shows at once, and one that comes back empty or
//! short of acknowledged rows raises an alarm and is never refilled from
//! PostgreSQL; misconfiguration stops the sidecar with code 4 and no slot;
//! `verify` refuses a role that cannot see every tenant; the operator's
//! commands (alarms, alerts, restore); Unix sockets; SIGTERM within its
//! deadline whatever the destinations do; progress lines; synchronous
//! mirroring with PostgreSQL's own synchronous replication.

use crate::support::log_id;
use authaudit_tests::mirror::{recompute_chain, record_some, sidecar_bin, Mirror, Store};
use authaudit_tests::recording::{self, Event};
use authaudit_tests::{built_binary, free_port, Cluster, TestDb};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Waits until `ok`, at most `within`.
fn wait_until(what: &str, within: Duration, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A command's (exit code, stdout + stderr), or `None` if it has not ended
/// within `within` (it is killed then).
fn run_bounded(mut c: Command, within: Duration) -> Option<(i32, String)> {
    let dir = std::env::temp_dir();
    let n = free_port();
    let (out, err) = (
        dir.join(format!("op-out-{n}")),
        dir.join(format!("op-err-{n}")),
    );
    let mut child = c
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = String::from_utf8_lossy(&std::fs::read(&out).unwrap_or_default()).into_owned()
        + &String::from_utf8_lossy(&std::fs::read(&err).unwrap_or_default());
    let _ = (std::fs::remove_file(out), std::fs::remove_file(err));
    status.map(|s| (s.code().unwrap_or(-1), text))
}

/// A sidecar command of mirror `m` with `args`: (exit code, output).
fn sidecar(m: &Mirror, args: &[&str]) -> (i32, String) {
    let mut c = m.command();
    c.args(args);
    run_bounded(c, Duration::from_secs(60)).expect("the command ends within 60 s")
}

/// The project's MongoDB-wire server as a process of its own, which a test
/// stops and starts again (empty, as a store that lost its data) on the
/// same port.
struct WireProcess {
    child: Option<Child>,
    port: u16,
}

impl WireProcess {
    fn start() -> WireProcess {
        let mut w = WireProcess {
            child: None,
            port: free_port(),
        };
        w.restart();
        w
    }

    fn restart(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new(built_binary("authaudit-mongowire"))
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_until("the wire server listens", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn store(&self) -> Store {
        Store::at(format!(
            "mongodb://127.0.0.1:{}/?directConnection=true&serverSelectionTimeoutMS=2000",
            self.port
        ))
    }
}

impl Drop for WireProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A key file and its verifier key, in a directory of the test's own.
fn witness_key(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let key = dir.join("witness.key");
    let out = Command::new(sidecar_bin())
        .args(["witness-keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    (
        key,
        String::from_utf8(out.stdout).unwrap().trim().to_owned(),
    )
}

/// The largest tree size the store holds a signed checkpoint of.
fn signed_size(store: &Store, tenant: &str) -> i64 {
    store
        .documents("witness_checkpoints", bson::doc! {"tree_size": -1})
        .iter()
        .filter(|d| d.get_str("tenant_id").ok() == Some(tenant))
        .map(|d| d.get_i64("tree_size").unwrap())
        .max()
        .unwrap_or(0)
}

fn head(db: &TestDb, tenant: &str) -> i64 {
    db.connect()
        .query_one(
            "SELECT coalesce(max(seq), 0) FROM authaudit.auth_log WHERE tenant_id = $1",
            &[&tenant],
        )
        .unwrap()
        .get(0)
}

fn record(db: &TestDb, tag: u32, tenant: &str, n: u32) {
    let mut c = db.connect();
    for i in 0..n {
        let e = Event::failed(tenant, &format!("user{}", i % 5))
            .log_id(&log_id(tag, i))
            .ip("198.51.100.20");
        recording::record(&mut c, &e);
    }
}

/// The tamper alarms of the store, by `_id`.
fn alarms(store: &Store) -> Vec<bson::Document> {
    store.documents("tamper_events", bson::doc! {"_id": 1})
}

fn unresolved(store: &Store) -> Vec<bson::Document> {
    alarms(store)
        .into_iter()
        .filter(|d| d.get("resolved").is_none())
        .collect()
}

/// Finding 1: `witness-check` recomputes every PostgreSQL row's link from
/// its content. A superuser who changed a row's user_id and ip and left
/// its digests as they were, one who rewrote a row and recomputed the
/// chain after it, and one who cut a tail, are each named by tenant and
/// seq.
#[test]
fn witness_check_recomputes_each_link_from_the_rows_content() {
    let db = Cluster::shared().fresh_db("op_witness_content");
    let store = Store::new("op_witness_content");
    let dir = std::env::temp_dir().join(format!("op-witness-{}", std::process::id()));
    let (key, public) = witness_key(&dir);
    for (i, t) in ["tenant-0", "tenant-1", "tenant-2"].iter().enumerate() {
        record(&db, 300 + i as u32, t, 8);
    }
    let mut m = Mirror::new(&db, &store);
    m.env = vec![
        (
            "AUTHAUDIT_WITNESS_KEY_FILE".into(),
            key.display().to_string(),
        ),
        ("AUTHAUDIT_WITNESS_EVERY".into(), "4".into()),
        ("AUTHAUDIT_WITNESS_INTERVAL_MS".into(), "300".into()),
        ("AUTHAUDIT_WITNESS_WRITE_BACK".into(), "false".into()),
    ];
    m.start();
    m.wait_identical(Duration::from_secs(60));
    // The first streamed row of each tenant starts its tree.
    for (i, t) in ["tenant-0", "tenant-1", "tenant-2"].iter().enumerate() {
        record(&db, 310 + i as u32, t, 1);
    }
    wait_until("checkpoints at the heads", Duration::from_secs(60), || {
        ["tenant-0", "tenant-1", "tenant-2"]
            .iter()
            .all(|t| signed_size(&store, t) == head(&db, t))
    });
    assert!(m.terminate().success());
    let check = || sidecar(&m, &["witness-check", "--public-key", &public]);
    let (code, text) = check();
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("3 tenants agree"), "{text}");

    let mut su = db.connect();
    su.batch_execute(
        "SET session_replication_role = replica;
         UPDATE authaudit.auth_log SET user_id = 'mallory', ip = '203.0.113.66'
          WHERE tenant_id = 'tenant-0' AND seq = 5;
         UPDATE authaudit.auth_log SET user_id = 'mallory' WHERE tenant_id = 'tenant-1' AND seq = 3;
         DELETE FROM authaudit.auth_log WHERE tenant_id = 'tenant-2' AND seq >= 7;
         RESET session_replication_role;",
    )
    .unwrap();
    recompute_chain(&mut su, "tenant-1");
    let (code, text) = check();
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("WITNESS: tenant tenant-0: seq 5 was edited: its content no longer gives the link_sha256 the witness signed"),
        "a content-only edit: {text}"
    );
    assert!(
        text.contains("WITNESS: tenant tenant-1: seq 3 was rewritten: its link_sha256 is not the signed tree's (its content was changed and the chain recomputed)"),
        "a recomputed rewrite: {text}"
    );
    assert!(
        text.contains("WITNESS: tenant tenant-2: rows 7 to 9 are missing from PostgreSQL"),
        "a truncation: {text}"
    );
    assert!(
        text.contains("0 tenants agree with their signed checkpoints, 3 findings"),
        "{text}"
    );
}

/// Finding 2: the store goes down: within seconds `/health` is 503 naming
/// it, the errors count and the lag (from the slot's position) grows. It
/// comes back empty: a tamper alarm, and not one of the rows acknowledged
/// before is copied from PostgreSQL as an "original". An operator who
/// resolves the alarm lets the next start copy, on their word. The first
/// start says it takes its copy as the originals.
#[test]
fn a_lost_store_shows_at_once_and_is_never_refilled_from_postgresql_unasked() {
    let db = Cluster::shared().fresh_db("op_store_lost");
    let mut wire = WireProcess::start();
    let store = wire.store();
    let dir = std::env::temp_dir().join(format!("op-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    record_some(&db, 320, 20);
    let mut m = Mirror::new(&db, &store);
    m.env = vec![
        (
            "AUTHAUDIT_STATE_FILE".into(),
            dir.join("state.json").display().to_string(),
        ),
        ("AUTHAUDIT_HEALTH_TIMEOUT_MS".into(), "2000".into()),
        ("AUTHAUDIT_STORE_TIMEOUT_MS".into(), "1000".into()),
        ("AUTHAUDIT_LOG".into(), "info".into()),
    ];
    m.start();
    m.wait_identical(Duration::from_secs(60));
    assert!(
        m.log().contains("first start: copying the rows committed before the slot existed; they are taken as the originals"),
        "{}",
        m.log()
    );
    wait_until("healthy", Duration::from_secs(30), || {
        m.get("/health").starts_with("HTTP/1.1 200")
    });
    let before = head(&db, "tenant-0");

    // Down: shown at once.
    wire.stop();
    let stopped = Instant::now();
    record(&db, 321, "tenant-0", 5);
    wait_until(
        "health, errors and lag show the store is down",
        Duration::from_secs(10),
        || {
            let h = m.get("/health");
            h.starts_with("HTTP/1.1 503")
                && h.contains("the document store")
                && m.metric("authaudit_sidecar_errors_total{source=\"mongodb\"}") > 0.0
                && m.metric("authaudit_sidecar_replication_lag_bytes") > 0.0
        },
    );
    assert!(stopped.elapsed() < Duration::from_secs(10));
    assert_eq!(
        m.metric("authaudit_sidecar_destination_up{destination=\"mongodb\"}"),
        0.0
    );

    // Back, empty.
    wire.restart();
    wait_until(
        "an alarm for the lost store",
        Duration::from_secs(60),
        || {
            alarms(&store)
                .iter()
                .any(|d| d.get_str("kind") == Ok("store_replaced"))
        },
    );
    wait_until(
        "the rows recorded while down arrive",
        Duration::from_secs(60),
        || store.count("auth_log") == 5,
    );
    let docs = store.documents("auth_log", bson::doc! {"seq": 1});
    assert!(
        docs.iter().all(|d| d.get_i64("seq").unwrap() > before),
        "rows acknowledged before were copied again: {docs:?}"
    );
    let h = m.get("/health");
    assert!(
        h.starts_with("HTTP/1.1 503") && h.contains("unresolved tamper alarm"),
        "{h}"
    );
    assert_eq!(m.log().matches("copying").count(), 1, "{}", m.log());
    assert!(
        m.log()
            .contains("STORE: the document store holds no mirror state"),
        "{}",
        m.log()
    );

    // The operator decides: the store is rebuilt from PostgreSQL.
    let (code, list) = sidecar(&m, &["alarms", "list"]);
    assert_eq!(code, 0, "{list}");
    let id = list
        .lines()
        .find(|l| l.contains("store_replaced"))
        .and_then(|l| l.split('\t').next())
        .unwrap()
        .to_owned();
    assert!(id.starts_with("custody/store/"), "{list}");
    let (code, out) = sidecar(
        &m,
        &[
            "alarms",
            "resolve",
            &id,
            "--note",
            "INC-7: store rebuilt from PostgreSQL",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(m.terminate().success());
    m.start();
    let text = m.wait_identical(Duration::from_secs(60));
    assert!(text.contains("identical"), "{text}");
    assert!(
        m.log().contains("copying PostgreSQL's rows into the store on the operator's word (resolved alarms: custody/store/"),
        "{}",
        m.log()
    );
    assert!(m.log().contains("INC-7: store rebuilt from PostgreSQL"));
    wait_until("healthy again", Duration::from_secs(30), || {
        m.get("/health").starts_with("HTTP/1.1 200")
    });
    assert!(m.terminate().success());
}

/// A store an earlier release mirrored into (its state has no identity)
/// is given one at the first start of this release: no alarm, no copy,
/// and it still holds every row. Only a store whose state is gone is taken
/// for an emptied one.
#[test]
fn a_store_from_before_identities_is_given_one_without_an_alarm() {
    let db = Cluster::shared().fresh_db("op_store_upgrade");
    let store = Store::new("op_store_upgrade");
    record(&db, 390, "tenant-0", 5);
    let mut m = Mirror::new(&db, &store);
    m.env = vec![("AUTHAUDIT_LOG".into(), "info".into())];
    m.start();
    m.wait_identical(Duration::from_secs(60));
    assert!(m.terminate().success());
    // As an earlier release left it: the state without an identity.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = mongodb::Client::with_uri_str(&store.uri).await.unwrap();
        c.database(&store.database)
            .collection::<bson::Document>("_authaudit_sidecar")
            .update_many(bson::doc! {}, bson::doc! {"$unset": {"store_id": ""}})
            .await
            .unwrap();
    });
    m.start();
    m.wait_streaming();
    record(&db, 391, "tenant-0", 2);
    let text = m.wait_identical(Duration::from_secs(60));
    assert!(text.contains("identical"), "{text}");
    assert!(
        m.log().contains(
            "the store's mirror state has no identity (an earlier release wrote it): given one"
        ),
        "{}",
        m.log()
    );
    assert!(alarms(&store).is_empty(), "{:?}", alarms(&store));
    assert_eq!(m.log().matches("copying").count(), 1, "{}", m.log());
    wait_until("healthy", Duration::from_secs(30), || {
        m.get("/health").starts_with("HTTP/1.1 200")
    });
    assert!(m.terminate().success());
}

/// Finding 2, without a state file: the witness's signed checkpoints (its
/// log, and those written back to PostgreSQL) say what the store held; a
/// store that lost the tail of a tenant's rows is named by tenant and seq
/// at the next start, and nothing is copied into it.
#[test]
fn a_store_short_of_the_rows_its_witness_signed_raises_an_alarm() {
    let db = Cluster::shared().fresh_db("op_store_short");
    let store = Store::new("op_store_short");
    let dir = std::env::temp_dir().join(format!("op-short-{}", std::process::id()));
    let (key, _) = witness_key(&dir);
    record(&db, 330, "tenant-0", 12);
    let mut m = Mirror::new(&db, &store);
    m.env = vec![
        (
            "AUTHAUDIT_WITNESS_KEY_FILE".into(),
            key.display().to_string(),
        ),
        (
            "AUTHAUDIT_WITNESS_LOG".into(),
            dir.join("witness.log").display().to_string(),
        ),
        ("AUTHAUDIT_WITNESS_EVERY".into(), "5".into()),
        ("AUTHAUDIT_WITNESS_INTERVAL_MS".into(), "300".into()),
        ("AUTHAUDIT_LOG".into(), "info".into()),
    ];
    m.start();
    m.wait_identical(Duration::from_secs(60));
    record(&db, 331, "tenant-0", 1);
    wait_until("a checkpoint at the head", Duration::from_secs(60), || {
        signed_size(&store, "tenant-0") == 13
    });
    assert!(m.terminate().success());
    // The store loses seq 11 to 13.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = mongodb::Client::with_uri_str(&store.uri).await.unwrap();
        c.database(&store.database)
            .collection::<bson::Document>("auth_log")
            .delete_many(bson::doc! {"tenant_id": "tenant-0", "seq": {"$gte": 11}})
            .await
            .unwrap();
    });
    m.start();
    wait_until(
        "an alarm naming the tenant and seq",
        Duration::from_secs(60),
        || {
            alarms(&store)
                .iter()
                .any(|d| d.get_str("_id") == Ok("custody/missing/tenant-0/13"))
        },
    );
    wait_until("health degraded", Duration::from_secs(30), || {
        m.get("/health").starts_with("HTTP/1.1 503")
    });
    assert!(
        m.log().contains("STORE: tenant tenant-0: seq 13 was acknowledged to the store, which no longer holds it (its rows of the tenant end at seq 10)"),
        "{}",
        m.log()
    );
    assert_eq!(
        store.count("auth_log"),
        10,
        "nothing is copied into the store"
    );
    assert!(m.terminate().success());
}

/// Finding 3: pointed at a database without the extension, with a role
/// without REPLICATION, or at a database that does not exist, the sidecar
/// stops at once with exit code 4 and a message that says what to do, and
/// leaves no replication slot behind. `verify` names the cause too.
#[test]
fn misconfiguration_stops_with_code_4_says_what_to_do_and_leaves_no_slot() {
    let db = Cluster::shared().fresh_db("op_misconf");
    let bare = Cluster::shared().empty_db("op_misconf_bare");
    let store = Store::new("op_misconf");
    let p = db.name().to_string();
    let mut su = db.connect();
    su.batch_execute(&format!(
        "CREATE ROLE {p}_norepl LOGIN IN ROLE authaudit_auditor"
    ))
    .unwrap();
    let slots = |name: &str| -> i64 {
        db.connect()
            .query_one(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
                &[&name],
            )
            .unwrap()
            .get(0)
    };
    let m = Mirror::new(&db, &store);
    let cases: [(&str, &str, &str); 3] = [
        ("PGDATABASE", bare.name(), "CREATE EXTENSION pg_authaudit"),
        (
            "PGUSER",
            &format!("{p}_norepl"),
            &format!("ALTER ROLE {p}_norepl REPLICATION"),
        ),
        ("PGDATABASE", &format!("{p}_nosuch"), "does not exist"),
    ];
    for (i, (var, value, remedy)) in cases.iter().enumerate() {
        let slot = format!("{p}_case{i}");
        let mut c = m.command();
        c.env(var, value).env("AUTHAUDIT_SLOT", &slot);
        let (code, text) = run_bounded(c, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{var}={value}: still retrying after 20 s"));
        assert_eq!(code, 4, "{var}={value}: {text}");
        assert!(text.contains(remedy), "{var}={value}: {text}");
        assert_eq!(slots(&slot), 0, "{var}={value}: a slot was created");
    }
    let mut c = m.command();
    c.env("PGDATABASE", format!("{p}_nosuch")).arg("verify");
    let (code, text) = run_bounded(c, Duration::from_secs(20)).unwrap();
    assert_eq!(code, 4, "{text}");
    assert!(!text.contains("db error"), "{text}");
    assert!(
        text.contains(&format!("database \"{p}_nosuch\" does not exist")),
        "{text}"
    );
    su.batch_execute(&format!("DROP ROLE {p}_norepl")).unwrap();
}

/// Finding 4: `verify` as a role that row-level security shows no tenant
/// (a reader without bindings) refuses with a permission error instead of
/// reporting every tenant's rows as deleted.
#[test]
fn verify_refuses_a_role_that_cannot_see_every_tenant() {
    let db = Cluster::shared().fresh_db("op_verify_scope");
    let store = Store::new("op_verify_scope");
    let p = db.name().to_string();
    record(&db, 340, "tenant-0", 3);
    record(&db, 341, "tenant-1", 3);
    let mut m = Mirror::new(&db, &store);
    m.start();
    m.wait_identical(Duration::from_secs(60));
    assert!(m.terminate().success());
    let mut su = db.connect();
    su.batch_execute(&format!(
        "CREATE ROLE {p}_reader LOGIN IN ROLE authaudit_reader"
    ))
    .unwrap();
    let (code, text) = m.verify_with(&[("PGUSER", &format!("{p}_reader"))]);
    assert_eq!(code, 4, "{text}");
    assert!(
        text.contains(&format!("role \"{p}_reader\" cannot read every tenant")),
        "{text}"
    );
    assert!(!text.contains("deleted there"), "{text}");
    su.batch_execute(&format!("DROP ROLE {p}_reader")).unwrap();
}

/// Finding 5: the operator's runbook has tools. A tampered row's alarm is
/// listed; `restore` prints the SQL that puts the mirror's original back,
/// which a superuser runs: the sidecar records the restoration as a
/// resolved alarm, not a new one; `alarms resolve` clears `/health`.
/// `restore --execute` does it all at once. Campaign alerts are listed,
/// and a restart neither raises nor counts them again.
#[test]
fn the_operator_lists_and_resolves_alarms_restores_rows_and_lists_alerts() {
    let db = Cluster::shared().fresh_db("op_runbook");
    let store = Store::new("op_runbook");
    record(&db, 350, "tenant-0", 10);
    let mut m = Mirror::new(&db, &store);
    m.start();
    m.wait_identical(Duration::from_secs(60));
    wait_until("healthy", Duration::from_secs(30), || {
        m.get("/health").starts_with("HTTP/1.1 200")
    });
    let chain_ok = || -> bool {
        db.connect()
            .query_one("SELECT ok FROM authaudit.verify_chain('tenant-0')", &[])
            .unwrap()
            .get(0)
    };
    let mut su = db.connect();
    su.batch_execute(
        "SET session_replication_role = replica;
         UPDATE authaudit.auth_log SET user_id = 'mallory' WHERE tenant_id = 'tenant-0' AND seq = 4;
         RESET session_replication_role;",
    )
    .unwrap();
    wait_until("the alarm", Duration::from_secs(30), || {
        unresolved(&store).len() == 1
    });
    assert!(!chain_ok());
    let (code, list) = sidecar(&m, &["alarms", "list"]);
    assert_eq!(code, 0, "{list}");
    assert!(list.contains("\tupdate\tauth_log\ttenant-0\t4\t"), "{list}");
    assert!(list.contains("alarms: 1 unresolved"), "{list}");
    let id = unresolved(&store)[0].get_str("_id").unwrap().to_owned();

    // The SQL, run by a superuser as printed.
    let (code, sql) = sidecar(&m, &["restore", "--tenant", "tenant-0", "--seq", "4"]);
    assert_eq!(code, 0, "{sql}");
    assert!(sql.contains("session_replication_role = replica"), "{sql}");
    assert!(sql.contains(&format!("alarms resolve {id}")), "{sql}");
    let path = std::env::temp_dir().join(format!("{}-restore.sql", db.name()));
    std::fs::write(&path, &sql).unwrap();
    db.psql(&["-f", path.to_str().unwrap()]);
    assert!(chain_ok(), "the original is back");
    wait_until(
        "the restoration recorded, resolved",
        Duration::from_secs(30),
        || {
            alarms(&store)
                .iter()
                .any(|d| d.get_str("kind") == Ok("restore") && d.get_str("resolved").is_ok())
        },
    );
    assert_eq!(
        unresolved(&store).len(),
        1,
        "no new alarm: {:?}",
        alarms(&store)
    );
    assert_eq!(m.metric("authaudit_sidecar_restorations_total"), 1.0);
    let (code, out) = sidecar(
        &m,
        &[
            "alarms",
            "resolve",
            &id,
            "--note",
            "INC-42: restored from the mirror",
        ],
    );
    assert_eq!(code, 0, "{out}");
    wait_until(
        "healthy after the resolution",
        Duration::from_secs(30),
        || m.get("/health").starts_with("HTTP/1.1 200"),
    );
    let (_, list) = sidecar(&m, &["alarms", "list"]);
    assert!(list.contains("alarms: 0 unresolved"), "{list}");

    // A deleted row, restored in one step.
    su.batch_execute(
        "SET session_replication_role = replica;
         DELETE FROM authaudit.auth_log WHERE tenant_id = 'tenant-0' AND seq = 6;
         RESET session_replication_role;",
    )
    .unwrap();
    wait_until("the alarm", Duration::from_secs(30), || {
        unresolved(&store).len() == 1
    });
    let (code, out) = sidecar(
        &m,
        &[
            "restore",
            "--tenant",
            "tenant-0",
            "--seq",
            "6",
            "--execute",
            "--note",
            "INC-43",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("restored seq 6 of tenant tenant-0 from the mirror"),
        "{out}"
    );
    assert!(
        out.contains("resolved: restored from the mirror: INC-43"),
        "{out}"
    );
    assert!(chain_ok());
    wait_until("healthy", Duration::from_secs(30), || {
        m.get("/health").starts_with("HTTP/1.1 200")
    });
    m.wait_identical(Duration::from_secs(60));

    // A password spray (ten accounts from one source) raises one alert.
    let mut c = db.connect();
    for i in 0..10 {
        let e = Event::failed("tenant-2", &format!("sprayed{i}"))
            .log_id(&log_id(352, i))
            .ip("198.51.100.99");
        recording::record(&mut c, &e);
    }
    wait_until("the alert", Duration::from_secs(30), || {
        store.count("alerts") == 1
    });
    assert_eq!(
        m.metric("authaudit_sidecar_alerts_total{rule=\"password_spray\"}"),
        1.0
    );
    let (code, list) = sidecar(&m, &["alerts", "list", "--tenant", "tenant-2"]);
    assert_eq!(code, 0, "{list}");
    assert!(list.contains("tenant-2/password_spray/"), "{list}");
    assert!(list.contains("alerts: 1 shown"), "{list}");
    assert!(m.terminate().success());
    let logged = m.log().matches("campaign alert").count();
    m.start();
    m.wait_streaming();
    record(&db, 353, "tenant-0", 1);
    m.wait_identical(Duration::from_secs(60));
    assert_eq!(
        m.metric("authaudit_sidecar_alerts_total{rule=\"password_spray\"}"),
        0.0
    );
    assert_eq!(store.count("alerts"), 1);
    assert_eq!(
        m.log().matches("campaign alert").count(),
        logged,
        "raised again after the restart"
    );
    assert!(m.terminate().success());
}

/// A superuser rewrites a failure, a rebuild then keeps lockout snapshots
/// made over the rewritten history, and the operator restores the row
/// from the mirror: the restore passes over those snapshots, so every
/// lockout answer is again the one a replay of the restored history from
/// the first event gives (docs/lockout.md, "Snapshots").
#[test]
fn a_restore_passes_over_the_lockout_snapshots_made_over_the_tampered_row() {
    use crate::snapshots::{self, T};
    use authaudit_core::lockout_effect::iso_utc;
    let (db, mut c, start) = snapshots::fresh("op_restore_snap");
    let events = snapshots::history(start);
    for (n, chunk) in events.chunks(500).enumerate() {
        snapshots::import(&mut c, 1000 + n as u32, chunk, false);
    }
    let store = Store::new("op_restore_snap");
    let mut m = Mirror::new(&db, &store);
    m.start();
    m.wait_identical(Duration::from_secs(60));
    // The first day's failures of an attacked account name another one:
    // its locks of that day go, and every later lock of it is shorter
    // (its lock count is one lower).
    let seqs: Vec<i64> = c
        .query(
            "SELECT seq FROM authaudit.auth_log \
              WHERE tenant_id = $1 AND event_type = 'login_failed' \
                AND occurred_at < $2::text::timestamptz \
                AND user_id = (SELECT user_id FROM authaudit.auth_log \
                                WHERE tenant_id = $1 AND event_type = 'login_failed' \
                                  AND user_id LIKE 'acct%' AND occurred_at < $2::text::timestamptz \
                                GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 1) \
              ORDER BY seq",
            &[&T, &iso_utc(start + 86_400_000_000)],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(seqs.len() >= 5, "{seqs:?}");
    let list = seqs
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    c.batch_execute(&format!(
        "SET session_replication_role = replica;
         UPDATE authaudit.auth_log SET user_id = 'mallory' WHERE tenant_id = '{T}' AND seq IN ({list});
         RESET session_replication_role;"
    ))
    .unwrap();
    c.query("SELECT * FROM authaudit.rebuild_lockout($1)", &[&T])
        .unwrap();
    assert!(
        snapshots::snapshots(&mut c) > 0,
        "the rebuild kept snapshots"
    );
    wait_until("the alarms", Duration::from_secs(30), || {
        unresolved(&store).len() == seqs.len()
    });
    for seq in &seqs {
        let seq = seq.to_string();
        let (code, out) = sidecar(
            &m,
            &[
                "restore",
                "--tenant",
                T,
                "--seq",
                &seq,
                "--execute",
                "--note",
                "INC-44",
            ],
        );
        assert_eq!(code, 0, "{out}");
    }
    snapshots::assert_answers_agree(&mut c, start, "after the restore");
    assert!(m.terminate().success());
}

/// Finding 6: every PostgreSQL connection of the sidecar and its commands
/// (the replication stream, the control connection, `verify`) works over
/// a Unix socket, with `--pg-sslmode disable` and with the default.
#[test]
fn every_postgresql_connection_works_over_a_unix_socket() {
    let db = Cluster::shared().fresh_db("op_socket");
    let store = Store::new("op_socket");
    let socket_dir = db.cluster().dir().display().to_string();
    record(&db, 360, "tenant-0", 5);
    let mut m = Mirror::new(&db, &store);
    m.env = vec![
        ("PGHOST".into(), socket_dir.clone()),
        ("PGSSLMODE".into(), "disable".into()),
        (
            "AUTHAUDIT_APPLICATION_NAME".into(),
            "authaudit-socket".into(),
        ),
    ];
    m.start();
    m.wait_streaming();
    record(&db, 361, "tenant-0", 5);
    let text = m.wait_identical(Duration::from_secs(60));
    assert!(text.contains("identical"), "{text}");
    let (code, text) = m.verify_with(&[("PGSSLMODE", "prefer")]);
    assert_eq!(code, 0, "{text}");
    // The walsender and the control connection came over the socket.
    let over_socket: i64 = db
        .connect()
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'authaudit-socket' \
               AND client_addr IS NULL AND client_port = -1",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        over_socket >= 2,
        "{over_socket} connections over the socket"
    );
    assert!(m.terminate().success());
}

/// Finding 10: SIGTERM stops the sidecar within `--shutdown-timeout-ms`
/// when the store is gone (refusing connections) or hangs (accepting and
/// never answering), and nothing it did not deliver is acknowledged.
#[test]
fn sigterm_stops_within_its_deadline_whatever_the_store_does() {
    let db = Cluster::shared().fresh_db("op_sigterm");
    // Gone: the store's process is stopped.
    let mut wire = WireProcess::start();
    let store = wire.store();
    let mut m = Mirror::new(&db, &store);
    m.env = vec![
        ("AUTHAUDIT_SHUTDOWN_TIMEOUT_MS".into(), "2000".into()),
        ("AUTHAUDIT_LOG".into(), "info".into()),
    ];
    m.start();
    record(&db, 370, "tenant-0", 3);
    m.wait_identical(Duration::from_secs(60));
    wire.stop();
    record(&db, 371, "tenant-0", 3);
    wait_until("a failed delivery", Duration::from_secs(20), || {
        m.metric("authaudit_sidecar_errors_total{source=\"mongodb\"}") > 0.0
    });
    let t = Instant::now();
    let status = m.terminate();
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "stopped after {:?}",
        t.elapsed()
    );
    assert!(matches!(status.code(), Some(0 | 5)), "{status:?}");
    let held = m.unacknowledged_log_ids();
    assert!(
        (0..3).all(|i| held.contains(&log_id(371, i))),
        "an undelivered row was acknowledged: the slot holds {held:?}"
    );

    // Hanging: every command waits a minute; the process stops at its
    // deadline with exit code 5.
    let db2 = Cluster::shared().fresh_db("op_sigterm_hang");
    let store2 = Store::new("op_sigterm_hang");
    let Some(faults) = store2.faults() else {
        return; // a real MongoDB cannot be made to hang
    };
    let mut m2 = Mirror::new(&db2, &store2);
    m2.env = vec![
        ("AUTHAUDIT_SHUTDOWN_TIMEOUT_MS".into(), "2000".into()),
        ("AUTHAUDIT_STORE_TIMEOUT_MS".into(), "60000".into()),
    ];
    m2.start();
    record(&db2, 372, "tenant-0", 3);
    m2.wait_identical(Duration::from_secs(60));
    faults.stall_for(Duration::from_secs(60));
    record(&db2, 373, "tenant-0", 3);
    // The rows reached the sidecar, which now waits on the store.
    let lsn: String = db2
        .connect()
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .unwrap()
        .get(0);
    let slot = db2.name().replace('-', "_");
    wait_until(
        "the rows sent to the sidecar",
        Duration::from_secs(20),
        || {
            db2.connect()
                .query_one(
                    "SELECT coalesce(bool_or(r.sent_lsn >= $1::text::pg_lsn), false) \
                   FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid \
                  WHERE s.slot_name = $2",
                    &[&lsn, &slot],
                )
                .unwrap()
                .get(0)
        },
    );
    let t = Instant::now();
    let status = m2.terminate();
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "stopped after {:?}",
        t.elapsed()
    );
    assert_eq!(status.code(), Some(5), "{status:?}");
    faults.clear();
    let held = m2.unacknowledged_log_ids();
    assert!(
        (0..3).all(|i| held.contains(&log_id(373, i))),
        "an undelivered row was acknowledged: the slot holds {held:?}"
    );
}

/// Finding 10: the initial copy and `verify` say how far they are on a
/// timer (`--progress-interval-ms`).
#[test]
fn the_initial_copy_and_verify_log_their_progress() {
    let db = Cluster::shared().fresh_db("op_progress");
    let store = Store::new("op_progress");
    // Four batches of a thousand (a batch holds at most that many).
    let mut c = db.connect();
    for b in 0..4 {
        c.execute(
            "SELECT count(*) FROM authaudit.record_events((SELECT jsonb_agg(jsonb_build_object(
               'log_id', gen_random_uuid(), 'tenant_id', 'tenant-' || (g % 4), 'event_type', 'login_success',
               'user_id', 'u' || g, 'channel', 'web')) FROM generate_series($1 * 1000 + 1, $1 * 1000 + 1000) g))",
            &[&b],
        )
        .unwrap();
    }
    let mut m = Mirror::new(&db, &store);
    m.env = vec![
        ("AUTHAUDIT_PROGRESS_INTERVAL_MS".into(), "100".into()),
        ("AUTHAUDIT_BATCH_ROWS".into(), "50".into()),
        ("AUTHAUDIT_LOG".into(), "info".into()),
    ];
    m.start();
    m.wait_identical(Duration::from_secs(120));
    assert!(m.log().contains("initial copy under way"), "{}", m.log());
    let (code, text) = m.verify();
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("verify under way: log rows compared"),
        "{text}"
    );
    assert!(m.terminate().success());
}

/// Resets `synchronous_standby_names` when the test ends, however it ends.
struct SyncStandbys<'a>(&'a Cluster);

impl Drop for SyncStandbys<'_> {
    fn drop(&mut self) {
        let mut c = self.0.admin();
        let _ = c.batch_execute("ALTER SYSTEM RESET synchronous_standby_names");
        let _ = c.batch_execute("SELECT pg_reload_conf()");
    }
}

/// Finding 11: synchronous mirroring with PostgreSQL's own mechanism. The
/// sidecar's walsender is the synchronous standby `synchronous_standby_names`
/// names by its application_name; it reports a commit's position once the
/// store took it. Right after a synchronous commit returns, the event is in
/// the store; while the store hangs, a synchronous commit waits and an
/// asynchronous one does not; once the store answers, the waiting commit
/// returns. (The extension leaves the commit flush to PostgreSQL when
/// synchronous standbys are configured.)
#[test]
fn a_synchronous_commit_returns_once_the_store_holds_the_event() {
    let cluster = Cluster::dedicated("sync_mirror");
    let db = cluster.fresh_db("op_sync");
    let store = Store::new("op_sync");
    let Some(faults) = store.faults().cloned() else {
        return; // a real MongoDB cannot be made to hang
    };
    let name = format!("authaudit_sync_{}", std::process::id());
    let mut m = Mirror::new(&db, &store);
    m.env = vec![
        ("AUTHAUDIT_SYNCHRONOUS".into(), "true".into()),
        ("AUTHAUDIT_APPLICATION_NAME".into(), name.clone()),
    ];
    m.start();
    m.wait_streaming();
    let _reset = SyncStandbys(cluster);
    let mut admin = cluster.admin();
    admin
        .batch_execute(&format!(
            "ALTER SYSTEM SET synchronous_standby_names = '\"{name}\"'"
        ))
        .unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_until(
        "the sidecar is the synchronous standby",
        Duration::from_secs(30),
        || {
            db.connect()
            .query_one(
                "SELECT count(*) FROM pg_stat_replication WHERE application_name = $1 AND sync_state = 'sync'",
                &[&name],
            )
            .unwrap()
            .get::<_, i64>(0)
            == 1
        },
    );
    let in_store = |id: &str| {
        store
            .documents("auth_log", bson::doc! {"seq": 1})
            .iter()
            .any(|d| d.get_str("log_id") == Ok(id))
    };
    let commit = |url: String, id: String, level: &'static str| {
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            c.batch_execute(&format!("SET synchronous_commit = {level}"))
                .unwrap();
            recording::record(&mut c, &Event::failed("tenant-0", "alice").log_id(&id));
        })
    };
    // Synchronous: in the store when the commit returns.
    for i in 0..5 {
        let id = log_id(380, i);
        let t = Instant::now();
        commit(db.url(), id.clone(), "on").join().unwrap();
        assert!(t.elapsed() < Duration::from_secs(10));
        assert!(
            in_store(&id),
            "commit {i} returned before the store held it"
        );
    }
    // The store hangs: an asynchronous commit returns, a synchronous one
    // waits until the store answers again.
    faults.stall_for(Duration::from_secs(60));
    let async_id = log_id(381, 0);
    let t = Instant::now();
    commit(db.url(), async_id.clone(), "local").join().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "an asynchronous commit waited {:?}",
        t.elapsed()
    );
    let sync_id = log_id(381, 1);
    let waiting = commit(db.url(), sync_id.clone(), "on");
    std::thread::sleep(Duration::from_secs(3)); // the commit must still wait after this long
    assert!(
        !waiting.is_finished(),
        "a synchronous commit returned while the store hung"
    );
    faults.clear();
    let t = Instant::now();
    waiting.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(30));
    assert!(in_store(&sync_id) && in_store(&async_id));
    drop(_reset);
    assert!(m.terminate().success());
}
