//! pg_authaudit distributed by tenant on Citus (docs/scale-out.md): a
//! coordinator and two workers on loopback. Runs when
//! `AUTHAUDIT_CITUS_PG_CONFIG` names a PostgreSQL 15 tree with Citus;
//! skipped, with the reason printed, otherwise.

use authaudit_tests::citus::{Citus, Node};
use authaudit_tests::log_id;
use authaudit_tests::mirror::{sidecar_bin, Store};
use postgres::error::SqlState;
use postgres::{Client, GenericClient};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One sidecar per worker, all mirroring into one store, each reading its
/// worker's changes through Citus's change data capture.
struct Mirrors {
    children: Vec<Child>,
    logs: Vec<std::path::PathBuf>,
}

fn sidecar(node: &Node, store: &Store, slot: &str) -> Command {
    let mut c = Command::new(sidecar_bin());
    c.env("PGHOST", "127.0.0.1")
        .env("PGPORT", node.port.to_string())
        .env("PGUSER", "postgres")
        .env("PGDATABASE", "postgres")
        .env("AUTHAUDIT_SLOT", slot)
        .env("AUTHAUDIT_MONGODB_URI", &store.uri)
        .env("AUTHAUDIT_MONGODB_DATABASE", &store.database)
        .env("AUTHAUDIT_METRICS_LISTEN", "127.0.0.1:0")
        .env("AUTHAUDIT_MAX_BACKOFF_MS", "500")
        .env("AUTHAUDIT_LOG", "warn");
    c
}

impl Mirrors {
    /// One sidecar per worker, each a witness signing with one key.
    fn start(citus: &Citus, store: &Store) -> Mirrors {
        let mut m = Mirrors {
            children: Vec::new(),
            logs: Vec::new(),
        };
        let key = std::env::temp_dir().join(format!("authaudit-citus-{}.key", std::process::id()));
        let out = Command::new(sidecar_bin())
            .args(["witness-keygen", "--out"])
            .arg(&key)
            .output()
            .expect("witness-keygen");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (i, w) in citus.workers.iter().enumerate() {
            let log = std::env::temp_dir().join(format!(
                "authaudit-citus-sidecar-{}-{i}.log",
                std::process::id()
            ));
            let file = std::fs::File::create(&log).expect("sidecar log");
            let child = sidecar(w, store, &format!("mirror_worker_{i}"))
                .env("AUTHAUDIT_WITNESS_KEY_FILE", &key)
                .env("AUTHAUDIT_WITNESS_EVERY", "2")
                .env("AUTHAUDIT_WITNESS_INTERVAL_MS", "200")
                .env("AUTHAUDIT_WITNESS_LOG", log.with_extension("witness"))
                .stdout(Stdio::null())
                .stderr(file)
                .spawn()
                .expect("start a sidecar");
            m.children.push(child);
            m.logs.push(log);
        }
        m
    }

    /// The sidecars' alarms: chain gaps and tampering (a connection the
    /// worker's restart cut is not one).
    fn alarms(&self) -> Vec<String> {
        self.logs
            .iter()
            .flat_map(|l| {
                String::from_utf8_lossy(&std::fs::read(l).unwrap_or_default())
                    .lines()
                    .filter(|l| {
                        l.contains("chain gap") || l.contains("tamper") || l.contains("witness:")
                    })
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Waits until `verify` (through worker 1) finds the store identical
    /// to PostgreSQL.
    fn wait_identical(&self, citus: &Citus, store: &Store) -> String {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out = sidecar(&citus.workers[0], store, "mirror_worker_0")
                .arg("verify")
                .output()
                .expect("sidecar verify");
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "the store still differs:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Mirrors {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

const TENANTS: [&str; 8] = [
    "agency-1", "agency-2", "agency-3", "agency-4", "agency-5", "agency-6", "agency-7", "agency-8",
];

/// Records one event through `c` with every value a bind parameter or a
/// constant (what Citus delegates); returns its seq.
fn record(
    c: &mut impl GenericClient,
    id: &str,
    tenant: &str,
    event_type: &str,
    user: &str,
) -> Result<i64, postgres::Error> {
    c.query_one(
        "SELECT seq FROM authaudit.record_event($1::text::uuid, $2, $3, $4, 'web', NULL, '192.0.2.7')",
        &[&id, &tenant, &event_type, &user],
    )
    .map(|r| r.get(0))
}

fn state(e: &postgres::Error) -> Option<&SqlState> {
    e.code()
}

/// Each tenant's (rows, last seq), as the coordinator sees them.
fn counts(c: &mut Client) -> BTreeMap<String, (i64, i64)> {
    c.query(
        "SELECT tenant_id, count(*), max(seq) FROM authaudit.auth_log GROUP BY 1",
        &[],
    )
    .expect("count rows")
    .into_iter()
    .map(|r| (r.get(0), (r.get(1), r.get(2))))
    .collect()
}

/// `verify_chain` of every tenant through the coordinator: ok, over `rows`.
fn verify_all(c: &mut Client, expected: &BTreeMap<String, (i64, i64)>) {
    for (t, (rows, last)) in expected {
        assert_eq!(rows, last, "tenant {t}: its seqs are gapless");
        let r = c
            .query_one(
                "SELECT ok, rows_checked FROM authaudit.verify_chain($1)",
                &[t],
            )
            .expect("verify_chain");
        assert!(r.get::<_, bool>(0), "tenant {t}: chain verifies");
        assert_eq!(r.get::<_, i64>(1), *rows, "tenant {t}: every row checked");
    }
}

#[test]
fn a_distributed_install_keeps_every_guarantee() {
    let Some(citus) = Citus::start("guarantees") else {
        return;
    };
    let mut coord = citus.coordinator.connect();

    // The helper distributes and delegates; a second call changes nothing.
    let rows = coord
        .query(
            "SELECT object, distributed_as FROM authaudit.distribute(8)",
            &[],
        )
        .expect("authaudit.distribute()");
    assert_eq!(rows.len(), 18, "13 tables and 5 functions");
    let again = coord
        .query("SELECT object FROM authaudit.distribute(8)", &[])
        .expect("authaudit.distribute() again");
    assert_eq!(again.len(), 18);
    coord
        .execute(
            "SELECT authaudit.ensure_mirror_publication('authaudit_mirror')",
            &[],
        )
        .expect("the mirror's publication, on every node");
    let store = Store::new("citus");
    let mirrors = Mirrors::start(&citus, &store);

    // 8 tenants recorded through the coordinator: gapless seqs from 1.
    let mut n = 0;
    for (t, tenant) in TENANTS.iter().enumerate() {
        for k in 1..=3 {
            n += 1;
            let seq = record(
                &mut coord,
                &log_id(t as u32, k),
                tenant,
                "login_success",
                "alice",
            )
            .expect("record through the coordinator");
            assert_eq!(seq, i64::from(k), "tenant {tenant}");
        }
    }
    assert_eq!(n, 24);
    // The rows are in each tenant's shard on its worker; no node's own
    // (shell) table was written.
    for tenant in TENANTS {
        let shard: i64 = coord
            .query_one(
                "SELECT get_shard_id_for_distribution_column('authaudit.auth_log', $1::text)",
                &[&tenant],
            )
            .expect("shard id")
            .get(0);
        let w = citus.worker_of(tenant);
        let in_shard: i64 = citus.workers[w]
            .connect()
            .query_one(
                &format!("SELECT count(*) FROM authaudit.auth_log_{shard} WHERE tenant_id = $1"),
                &[&tenant],
            )
            .expect("read the shard on its worker")
            .get(0);
        assert_eq!(in_shard, 3, "tenant {tenant}'s rows are in shard {shard}");
    }
    for node in std::iter::once(&citus.coordinator).chain(&citus.workers) {
        let size: i64 = node
            .connect()
            .query_one(
                "SELECT pg_relation_size('authaudit.auth_log') \
                      + pg_relation_size('authaudit.lockout_state')",
                &[],
            )
            .expect("shell sizes")
            .get(0);
        assert_eq!(size, 0, "node {}: the shell tables stay empty", node.port);
    }
    let mut expected = counts(&mut coord);
    assert_eq!(expected.len(), 8);
    verify_all(&mut coord, &expected);

    lockout_is_enforced(&citus, &mut coord);
    rls_scopes_writers_and_readers(&citus, &mut coord);
    refusals_write_nothing(&citus, &mut coord);
    unsupported_calls_refuse(&mut coord);
    one_transaction_per_worker(&citus, &mut coord);

    // A worker restart: its tenants' heads are read from their shards, and
    // a retry returns the recorded row instead of looping.
    let tenant = TENANTS[0];
    let w = citus.worker_of(tenant);
    let before = counts(&mut coord)[tenant].1;
    citus.restart_worker(w);
    let mut coord = citus.coordinator.connect();
    let id = log_id(100, 1);
    let seq = record(&mut coord, &id, tenant, "login_success", "alice").expect("after restart");
    assert_eq!(seq, before + 1, "the chain continues after the restart");
    let retry = record(&mut coord, &id, tenant, "login_success", "alice").expect("retry");
    assert_eq!(retry, seq, "a retry returns the recorded row");

    // The rebalancer moves every shard off the worker that was not
    // restarted (it still caches its tenants' heads) and back; each chain
    // continues at its next seq wherever its shard is.
    let drained = 1 - w;
    let port = i32::from(citus.workers[drained].port);
    coord
        .execute("SELECT citus_drain_node('127.0.0.1', $1)", &[&port])
        .expect("drain a worker");
    for tenant in TENANTS {
        assert_eq!(citus.worker_of(tenant), w, "{tenant} moved off");
    }
    record_one_each(&mut coord, 101);
    coord
        .execute(
            "SELECT citus_set_node_property('127.0.0.1', $1, 'shouldhaveshards', true)",
            &[&port],
        )
        .expect("the drained worker takes shards again");
    coord
        .execute("SELECT rebalance_table_shards()", &[])
        .expect("rebalance");
    let back: Vec<&str> = TENANTS
        .iter()
        .copied()
        .filter(|t| citus.worker_of(t) == drained)
        .collect();
    assert!(!back.is_empty(), "the rebalancer moved tenants back");
    // That worker cached these tenants' heads before they left: the first
    // checkpoint or event there reads the head from the shard.
    let now = counts(&mut coord);
    for (i, tenant) in back.iter().enumerate() {
        if i % 2 == 0 {
            let seq: i64 = coord
                .query_one("SELECT seq FROM authaudit.checkpoint($1)", &[tenant])
                .unwrap_or_else(|e| panic!("checkpoint of {tenant} after its return: {e:?}"))
                .get(0);
            assert_eq!(seq, now[*tenant].1, "{tenant}");
        } else {
            let seq = record(
                &mut coord,
                &log_id(103, i as u32),
                tenant,
                "login_success",
                "alice",
            )
            .unwrap_or_else(|e| panic!("an event of {tenant} after its return: {e:?}"));
            assert_eq!(seq, now[*tenant].1 + 1, "{tenant}");
        }
    }
    record_one_each(&mut coord, 102);
    expected = counts(&mut coord);
    verify_all(&mut coord, &expected);

    // Checkpoints and proofs through the coordinator.
    let seq: i64 = coord
        .query_one("SELECT seq FROM authaudit.checkpoint($1)", &[&TENANTS[2]])
        .expect("checkpoint")
        .get(0);
    let root: i64 = coord
        .query_one(
            "SELECT tree_size FROM authaudit.merkle_root($1, $2)",
            &[&TENANTS[2], &seq],
        )
        .expect("merkle_root")
        .get(0);
    assert_eq!(seq, expected[TENANTS[2]].1);
    assert_eq!(root, seq);

    // The mirror holds every committed row once, through the moves, the
    // restart and the refused transactions, with no chain gap raised.
    let report = mirrors.wait_identical(&citus, &store);
    let total: i64 = counts(&mut coord).values().map(|(n, _)| n).sum();
    assert!(report.contains(&format!("{total} rows")), "{report}");
    assert_eq!(store.count("auth_log"), total as u64, "each row once");
    assert_eq!(mirrors.alarms(), Vec::<String>::new(), "no false alarm");
    // The witnesses signed every tenant's whole tree, wherever its shard
    // was: its latest checkpoint covers all its rows.
    let deadline = Instant::now() + Duration::from_secs(60);
    let last = counts(&mut coord);
    loop {
        let mut signed: BTreeMap<String, i64> = BTreeMap::new();
        for d in store.documents("witness_checkpoints", bson::doc! {"tree_size": 1}) {
            if let (Ok(t), Ok(n)) = (d.get_str("tenant_id"), d.get_i64("tree_size")) {
                signed.insert(t.to_owned(), n);
            }
        }
        let whole: BTreeMap<String, i64> = last.iter().map(|(t, (_, s))| (t.clone(), *s)).collect();
        if signed == whole {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "signed {signed:?}, rows {whole:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    citus.assert_no_crash();
}

/// One event for every tenant, log ids of slot `slot`; each lands at its
/// chain's next seq.
fn record_one_each(coord: &mut Client, slot: u32) {
    let before = counts(coord);
    for (t, tenant) in TENANTS.iter().enumerate() {
        let seq = record(
            coord,
            &log_id(slot, t as u32),
            tenant,
            "login_success",
            "alice",
        )
        .expect("record after a move");
        assert_eq!(seq, before[*tenant].1 + 1, "{tenant} continues its chain");
    }
}

/// The lockout engine's state is in the tenant's shard and `check_login`
/// reads it there: an account locked by failures is refused.
fn lockout_is_enforced(_citus: &Citus, coord: &mut Client) {
    let tenant = TENANTS[0];
    let mut locked = false;
    for k in 1..=20 {
        record(coord, &log_id(200, k), tenant, "login_failed", "mallory").expect("a failure");
        let n: i64 = coord
            .query_one(
                "SELECT count(*) FROM authaudit.auth_log \
                  WHERE tenant_id = $1 AND user_id = 'mallory' AND event_type = 'account_locked'",
                &[&tenant],
            )
            .expect("count locks")
            .get(0);
        if n > 0 {
            locked = true;
            break;
        }
    }
    assert!(locked, "the lockout engine locked the account");
    let r = coord
        .query_one(
            "SELECT allowed, reason FROM authaudit.check_login($1, 'mallory')",
            &[&tenant],
        )
        .expect("check_login");
    assert!(!r.get::<_, bool>(0), "a locked account is refused");
    assert_eq!(
        r.get::<_, Option<String>>(1).as_deref(),
        Some("account_locked")
    );
    // The investigation reads it back through the coordinator.
    let period = "now() - interval '1 hour', now() + interval '1 minute'";
    let targeted: Vec<(String, i64)> = coord
        .query(
            &format!("SELECT user_id, locks FROM authaudit.targeted_accounts($1, {period})"),
            &[&tenant],
        )
        .expect("targeted_accounts")
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        targeted
            .iter()
            .any(|(u, locks)| u == "mallory" && *locks >= 1),
        "{targeted:?}"
    );
    let timeline: i64 = coord
        .query_one(
            &format!(
                "SELECT count(*) FROM authaudit.lockout_timeline($1, {period}) \
                  WHERE user_id = 'mallory' AND event_type = 'account_locked' AND enforced"
            ),
            &[&tenant],
        )
        .expect("lockout_timeline")
        .get(0);
    assert!(timeline >= 1);
    for f in [
        "attack_sources",
        "compliance_summary",
        "successes_after_failures",
    ] {
        let n: i64 = coord
            .query_one(
                &format!("SELECT count(*) FROM authaudit.{f}($1, {period})"),
                &[&tenant],
            )
            .unwrap_or_else(|e| panic!("{f}: {e:?}"))
            .get(0);
        assert!(n >= 1 || f == "successes_after_failures", "{f}: {n}");
    }
    let lines: i64 = coord
        .query_one(
            &format!("SELECT count(*) FROM authaudit.export_cef($1, {period})"),
            &[&tenant],
        )
        .expect("export_cef")
        .get(0);
    assert_eq!(lines, counts(coord)[tenant].0, "a CEF line per row");
    let (genuine, forged): (Option<bool>, Option<bool>) = {
        let r = coord
            .query_one(
                &format!(
                    "SELECT authaudit.verify_cef(c), authaudit.verify_cef(replace(c, 'duser=', 'duser=x')) \
                       FROM authaudit.export_cef($1, {period}) c LIMIT 1"
                ),
                &[&tenant],
            )
            .expect("verify_cef");
        (r.get(0), r.get(1))
    };
    assert_eq!(
        (genuine, forged),
        (Some(true), Some(false)),
        "the SIEM's lines check"
    );

    // Token issuance is routed too: refused for the locked account, and a
    // token id is recorded once per tenant.
    let token = |sub: &str, jti: &str| {
        use base64::Engine;
        let b = |j: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(j);
        format!(
            "{}.{}.c2ln",
            b(r#"{"alg":"HS256","typ":"JWT"}"#),
            b(&format!(r#"{{"sub":"{sub}","jti":"{jti}"}}"#))
        )
    };
    let issue = "SELECT seq FROM authaudit.record_token_issued($1::text::uuid, $2, NULL, $3, $4, '192.0.2.7', 'App/1', 'web')";
    let e = coord
        .query_one(
            issue,
            &[
                &log_id(201, 1),
                &tenant,
                &"mallory",
                &token("mallory", "j-1"),
            ],
        )
        .expect_err("no token for a locked account");
    assert_eq!(
        state(&e),
        Some(&SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE),
        "{e:?}"
    );
    let before = counts(coord)[TENANTS[4]].1;
    let seq: i64 = coord
        .query_one(
            issue,
            &[
                &log_id(201, 2),
                &TENANTS[4],
                &"alice",
                &token("alice", "j-2"),
            ],
        )
        .expect("a token issued")
        .get(0);
    assert_eq!(seq, before + 1);
    let e = coord
        .query_one(
            issue,
            &[
                &log_id(201, 3),
                &TENANTS[4],
                &"alice",
                &token("alice", "j-2"),
            ],
        )
        .expect_err("a replayed token id");
    assert_eq!(state(&e), Some(&SqlState::UNIQUE_VIOLATION), "{e:?}");

    let other = coord
        .query_one(
            "SELECT allowed FROM authaudit.check_login($1, 'mallory')",
            &[&TENANTS[1]],
        )
        .expect("check_login of another tenant");
    assert!(other.get::<_, bool>(0), "the lock is the tenant's own");
}

/// A writer records only for its tenant; a reader sees only its tenant's
/// rows through the coordinator, and verifies only its chain.
fn rls_scopes_writers_and_readers(citus: &Citus, coord: &mut Client) {
    coord
        .batch_execute(
            "CREATE ROLE scale_writer LOGIN IN ROLE authaudit_writer;
             CREATE ROLE scale_reader LOGIN IN ROLE authaudit_reader;
             INSERT INTO authaudit.tenant_scope (role_name, tenant_id, org_id, can_read, can_write)
             VALUES ('scale_writer', 'agency-2', NULL, false, true),
                    ('scale_reader', 'agency-2', NULL, true, false);",
        )
        .expect("roles and bindings");
    let mut writer = citus.coordinator.connect_as("scale_writer");
    let before = counts(coord);
    record(
        &mut writer,
        &log_id(300, 1),
        "agency-2",
        "login_success",
        "bob",
    )
    .expect("the bound writer records");
    let e = record(
        &mut writer,
        &log_id(300, 2),
        "agency-3",
        "login_success",
        "bob",
    )
    .expect_err("another tenant's write is refused");
    assert_eq!(state(&e), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{e:?}");
    let after = counts(coord);
    assert_eq!(after["agency-3"], before["agency-3"], "nothing written");

    let mut reader = citus.coordinator.connect_as("scale_reader");
    let seen: Vec<String> = reader
        .query("SELECT DISTINCT tenant_id FROM authaudit.auth_log", &[])
        .expect("the reader reads the log")
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seen, vec!["agency-2".to_owned()]);
    let rows: i64 = reader
        .query_one("SELECT count(*) FROM authaudit.auth_log", &[])
        .expect("count")
        .get(0);
    assert_eq!(rows, after["agency-2"].0, "every row of its tenant");
    let accounts: i64 = reader
        .query_one(
            "SELECT count(*) FROM authaudit.compliance_summary('agency-2', now() - interval '1 hour', now() + interval '1 minute')",
            &[],
        )
        .expect("the reader's investigation")
        .get(0);
    assert!(accounts >= 1);
    let hidden: i64 = reader
        .query_one(
            "SELECT count(*) FROM authaudit.export_cef('agency-3', now() - interval '1 hour', now() + interval '1 minute')",
            &[],
        )
        .expect("another tenant's export")
        .get(0);
    assert_eq!(hidden, 0, "row-level security hides another tenant's rows");
    let ok: bool = reader
        .query_one("SELECT ok FROM authaudit.verify_chain('agency-2')", &[])
        .expect("the reader verifies its chain")
        .get(0);
    assert!(ok);
    let e = reader
        .query_one("SELECT ok FROM authaudit.verify_chain('agency-3')", &[])
        .expect_err("another tenant's chain is refused");
    assert_eq!(state(&e), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{e:?}");
}

/// What Citus cannot route to the tenant's worker is refused with a clear
/// error, and nothing is written anywhere.
fn refusals_write_nothing(citus: &Citus, coord: &mut Client) {
    let tenant = TENANTS[3];
    // A worker routes a delegable call too, to the tenant's worker.
    let other = 1 - citus.worker_of(tenant);
    let mut w = citus.workers[other].connect();
    let last = counts(coord)[tenant].1;
    let seq = record(&mut w, &log_id(400, 1), tenant, "login_success", "carol")
        .expect("a worker routes the call");
    assert_eq!(seq, last + 1);
    let before = counts(coord);
    // An argument Citus cannot route by (a volatile expression): the call
    // runs where it was made, which holds no shard of the tenant.
    let undelegated = "SELECT seq FROM authaudit.record_event(gen_random_uuid(), $1, 'login_success', 'carol', 'web')";
    for (node, c) in [("the coordinator", &mut *coord), ("another worker", &mut w)] {
        let e = c
            .query_one(undelegated, &[&tenant])
            .expect_err("an undelegated call refuses");
        assert_eq!(
            state(&e),
            Some(&SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE),
            "{node}: {e:?}"
        );
        let message = e.as_db_error().map(|d| d.message().to_owned());
        assert!(
            message
                .as_deref()
                .is_some_and(|m| m.contains("not on this node")),
            "{node}: {e:?}"
        );
    }
    // A batch for one tenant holding another's event.
    let events = format!(
        r#"[{{"log_id":"{}","tenant_id":"{}","event_type":"login_success","user_id":"carol","channel":"web"}}]"#,
        log_id(400, 2),
        TENANTS[4]
    );
    let e = coord
        .query(
            "SELECT seq FROM authaudit.record_events($1, $2::text::jsonb)",
            &[&tenant, &events],
        )
        .expect_err("another tenant's event in a tenant's batch");
    assert_eq!(state(&e), Some(&SqlState::INVALID_PARAMETER_VALUE), "{e:?}");
    // The one-argument batch has no tenant to route by.
    let e = coord
        .query(
            "SELECT seq FROM authaudit.record_events($1::text::jsonb)",
            &[&events],
        )
        .expect_err("record_events(jsonb) on the coordinator");
    assert_eq!(
        state(&e),
        Some(&SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE),
        "{e:?}"
    );
    assert_eq!(counts(coord), before, "nothing was written");
    // The tenant's own batch is delegated and recorded.
    let events = format!(
        r#"[{{"log_id":"{}","event_type":"login_success","user_id":"carol","channel":"web"}},
            {{"log_id":"{}","tenant_id":"{tenant}","event_type":"login_success","user_id":"carol","channel":"web"}}]"#,
        log_id(400, 3),
        log_id(400, 4)
    );
    let seqs: Vec<i64> = coord
        .query(
            "SELECT seq FROM authaudit.record_events($1, $2::text::jsonb)",
            &[&tenant, &events],
        )
        .expect("a tenant's batch")
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    let last = before[tenant].1;
    assert_eq!(seqs, vec![last + 1, last + 2]);
    // The refusals left no trace: the chain verifies over every row.
    let now = counts(coord);
    verify_all(coord, &now);
}

/// A transaction records on one worker; one that reaches two is refused at
/// commit and leaves every chain as it was.
fn one_transaction_per_worker(citus: &Citus, coord: &mut Client) {
    let a = TENANTS
        .iter()
        .find(|t| citus.worker_of(t) == 0)
        .expect("a tenant on worker 1");
    let b = TENANTS
        .iter()
        .find(|t| citus.worker_of(t) == 1)
        .expect("a tenant on worker 2");
    let same = TENANTS.iter().find(|t| *t != a && citus.worker_of(t) == 0);
    let before = counts(coord);

    let mut tx = coord.transaction().expect("begin");
    record(&mut tx, &log_id(500, 1), a, "login_success", "dave").expect("first worker");
    record(&mut tx, &log_id(500, 2), b, "login_success", "dave").expect("second worker");
    let e = tx.commit().expect_err("two workers in one transaction");
    assert_eq!(state(&e), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{e:?}");
    assert_eq!(counts(coord), before, "neither worker kept a row");

    let mut tx = coord.transaction().expect("begin");
    let s1 = record(&mut tx, &log_id(500, 3), a, "login_success", "dave").expect("a");
    let s2 = record(&mut tx, &log_id(500, 4), a, "login_success", "dave").expect("a again");
    if let Some(same) = same {
        record(&mut tx, &log_id(500, 5), same, "login_success", "dave")
            .expect("another tenant of the same worker");
    }
    tx.commit().expect("one worker's transaction commits");
    assert_eq!((s1, s2), (before[*a].1 + 1, before[*a].1 + 2), "no gap");
    let after = counts(coord);
    verify_all(coord, &after);
}

/// History, rebuilds and retention are not supported on Citus
/// (docs/scale-out.md, "Not supported on Citus"): each refuses and changes
/// nothing.
fn unsupported_calls_refuse(coord: &mut Client) {
    let tenant = TENANTS[5];
    let before = counts(coord);
    let history = format!(
        r#"[{{"log_id":"{}","tenant_id":"{tenant}","event_type":"login_failed","user_id":"old","channel":"web","occurred_at":"2026-01-01T00:00:00Z"}}]"#,
        log_id(600, 1)
    );
    let e = coord
        .query(
            "SELECT seq FROM authaudit.import_events($1::text::jsonb)",
            &[&history],
        )
        .expect_err("import_events");
    assert_eq!(
        state(&e),
        Some(&SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE),
        "{e:?}"
    );
    let e = coord
        .query("SELECT * FROM authaudit.rebuild_lockout($1)", &[&tenant])
        .expect_err("rebuild_lockout");
    assert_eq!(
        state(&e),
        Some(&SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE),
        "{e:?}"
    );
    coord
        .query("SELECT seq FROM authaudit.checkpoint($1)", &[&tenant])
        .expect("checkpoint");
    coord
        .batch_execute("SET authaudit.min_retention = 0")
        .expect("no minimum");
    let e = coord
        .query(
            "SELECT * FROM authaudit.apply_retention($1, now())",
            &[&tenant],
        )
        .expect_err("apply_retention");
    let message = e.as_db_error().map(|d| d.message().to_owned());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("append-only")),
        "{e:?}"
    );
    coord
        .batch_execute("RESET authaudit.min_retention")
        .expect("reset");
    assert_eq!(counts(coord), before, "nothing was written or removed");
}

/// On one server: `record_events(tenant_id, events)` records a tenant's
/// batch, fills in a missing tenant, and refuses another tenant's event,
/// a NULL tenant and an unbound writer, writing nothing.
#[test]
fn the_tenant_batch_records_one_tenant_on_one_server() {
    let db = authaudit_tests::Cluster::shared().fresh_db("tenant_batch");
    let mut c = db.connect();
    let batch = |ids: &[u32], other: Option<&str>| {
        let events: Vec<serde_json::Value> = ids
            .iter()
            .map(|n| {
                let mut e = serde_json::json!({
                    "log_id": log_id(700, *n), "event_type": "login_failed",
                    "user_id": "erin", "channel": "web", "ip": "192.0.2.9"});
                if let Some(t) = other {
                    e["tenant_id"] = t.into();
                }
                e
            })
            .collect();
        serde_json::Value::from(events).to_string()
    };
    let call = "SELECT tenant_id, seq FROM authaudit.record_events($1, $2::text::jsonb)";
    let rows = c
        .query(call, &[&"agency-1", &batch(&[1, 2], None)])
        .expect("a tenant's batch");
    let got: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, vec![("agency-1".into(), 1), ("agency-1".into(), 2)]);
    let rows = c
        .query(call, &[&"agency-1", &batch(&[3], Some("agency-1"))])
        .expect("the same tenant named");
    assert_eq!(rows[0].get::<_, i64>(1), 3);
    let count = |c: &mut Client| -> i64 {
        c.query_one("SELECT count(*) FROM authaudit.auth_log", &[])
            .unwrap()
            .get(0)
    };
    let before = count(&mut c);
    let e = c
        .query(call, &[&"agency-1", &batch(&[4], Some("agency-2"))])
        .expect_err("another tenant's event");
    assert_eq!(state(&e), Some(&SqlState::INVALID_PARAMETER_VALUE), "{e:?}");
    let message = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert!(
        message.contains("event 1") && message.contains("tenant_id"),
        "{message}"
    );
    let e = c
        .query(call, &[&None::<String>, &batch(&[5], None)])
        .expect_err("a NULL tenant");
    assert_eq!(state(&e), Some(&SqlState::NULL_VALUE_NOT_ALLOWED), "{e:?}");
    let p = db.name().to_string();
    c.batch_execute(&format!(
        "CREATE ROLE {p}_w LOGIN IN ROLE authaudit_writer;
         INSERT INTO authaudit.tenant_scope (role_name, tenant_id, can_read, can_write)
         VALUES ('{p}_w', 'agency-2', false, true);"
    ))
    .unwrap();
    let mut w = db.connect_as(&format!("{p}_w"));
    let e = w
        .query(call, &[&"agency-1", &batch(&[6], None)])
        .expect_err("a writer bound to another tenant");
    assert_eq!(state(&e), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{e:?}");
    w.query(call, &[&"agency-2", &batch(&[7], None)])
        .expect("its own tenant");
    assert_eq!(
        count(&mut c),
        before + 1,
        "only the writer's own batch was written"
    );
    drop(w);
    c.batch_execute(&format!(
        "DELETE FROM authaudit.tenant_scope WHERE role_name = '{p}_w'; DROP ROLE {p}_w;"
    ))
    .unwrap();
}

/// `authaudit.distribute()` without Citus refuses, and nobody but a
/// superuser may call it.
#[test]
fn distribute_needs_citus_and_a_superuser() {
    let db = authaudit_tests::Cluster::shared().fresh_db("distribute_refusals");
    let mut c = db.connect();
    let e = c
        .query("SELECT * FROM authaudit.distribute()", &[])
        .expect_err("no Citus here");
    assert_eq!(
        state(&e),
        Some(&SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE),
        "{e:?}"
    );
    let p = db.name().to_string();
    c.batch_execute(&format!(
        "CREATE ROLE {p}_admin LOGIN IN ROLE authaudit_admin, authaudit_writer"
    ))
    .unwrap();
    let mut admin = db.connect_as(&format!("{p}_admin"));
    let e = admin
        .query("SELECT * FROM authaudit.distribute(4)", &[])
        .expect_err("not a superuser");
    assert_eq!(state(&e), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{e:?}");
    drop(admin);
    c.batch_execute(&format!("DROP ROLE {p}_admin")).unwrap();
}
