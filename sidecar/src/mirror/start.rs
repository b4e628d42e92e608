//! A session's start-up: the store, PostgreSQL's checks, the publication,
//! the store's custody, the slot, the initial copy, the warm-ups and the
//! stream, gathered in a [`Started`] for the replication loop.

use super::copy::initial_copy;
use super::session::not_raised;
use super::MirrorError;
use crate::config::{Config, PostgresConfig, WitnessConfig};
use crate::custody::{Copy, Custody, Verdict};
use crate::destination::{Destination, SiemDestination, StoreDestination};
use crate::metrics::{unix_now_us, Metrics};
use crate::mongo_store::MongoStore;
use crate::pipeline::Limits;
use crate::preflight::SlotFacts;
use crate::siem::Siem;
use crate::write_back::WriteBack;
use authaudit_core::custody::{Acknowledged, Finding};
use bson::doc;
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Everything the replication loop needs, as start-up leaves it.
pub(crate) struct Started<R = ReplicationClient, S = MongoStore> {
    /// The stream, started at the slot's confirmed position.
    pub repl: R,
    /// The store, for what the loop reads back from it.
    pub store: S,
    /// The control connection, kept for the session.
    pub pg: Option<tokio_postgres::Client>,
    /// The store, then the SIEM when one is configured.
    pub destinations: Vec<Arc<dyn Destination>>,
    pub siem: Option<Arc<Siem>>,
    pub witness: Option<crate::witness::Witness>,
    pub detections: Option<crate::detect::Detections>,
    /// Alerts of the detections' warm-up the store does not hold yet.
    pub warm_alerts: Vec<authaudit_core::detection::Alert>,
    /// Each tenant's last log seq the initial copy sent to the SIEM: a row
    /// committed after the slot existed and before the copy's snapshot is
    /// in both, and the SIEM receives it once (the store's writes are
    /// idempotent). A tenant's links become visible in seq order (each
    /// waits for its predecessor's transaction to end before committing:
    /// heads.rs), so the copy holds every row of the tenant up to its last
    /// one.
    pub copied_heads: HashMap<String, i64>,
    /// Set when the store's identity changes under the session.
    pub store_changed: watch::Receiver<Option<String>>,
    /// The slot's lag and the store's health, watched apart from the
    /// stream; stopped with the session.
    pub monitor: Option<crate::monitor::Monitor>,
    pub limits: Limits,
}

/// Prepares a session; None when shutdown interrupted the initial copy.
pub(super) async fn start(
    config: &Config,
    metrics: &Arc<Metrics>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<Started>, MirrorError> {
    let postgres = &config.postgres;
    let store = open_store(config).await?;
    let siem = Siem::from_config(&config.siem)?;
    let (mut pg, slot) = check_postgres(postgres).await?;
    let mut witness = crate::witness::Witness::from_config(&config.witness)?;
    let custody = match &config.general.state_file {
        Some(p) => Some(Arc::new(Custody::open(p, &postgres.slot)?)),
        None => None,
    };
    let verifier = witness.as_ref().map(|w| w.verifier());
    let acknowledged =
        crate::custody::acknowledged(&config.witness, custody.as_deref(), verifier.as_ref(), &pg)
            .await?;
    let plan = plan(&store, postgres, metrics, &slot, &acknowledged).await?;
    if let (Some(c), Some(id), true) = (&custody, &plan.store_id, plan.open.is_empty()) {
        c.adopt(id)?;
    }
    if slot.is_none() {
        create_slot(&pg, &store, postgres).await?;
    }
    let monitor = crate::monitor::Monitor::spawn(
        postgres,
        &config.mongo,
        &config.metrics,
        store.clone(),
        metrics.clone(),
        plan.store_id.clone(),
    );
    let mut copied_heads: HashMap<String, i64> = HashMap::new();
    if let Some(copy) = plan.copy {
        tracing::info!("{}", copy.describe());
        let to = destinations(
            &store,
            siem.as_ref(),
            None,
            custody.as_ref(),
            &config.witness,
            metrics,
        );
        let heads = siem.is_some().then_some(&mut copied_heads);
        let progress = config.general.progress_interval();
        if !initial_copy(
            &mut pg,
            &to,
            heads,
            &config.batch,
            progress,
            metrics,
            shutdown,
        )
        .await?
        {
            return Ok(None);
        }
        store
            .set_state(&postgres.slot, doc! {"copied": true})
            .await?;
    }
    let mut detections = crate::detect::Detections::from_config(&config.detections)?;
    let warm_alerts = warm_up(&store, &pg, detections.as_mut(), witness.as_mut()).await?;
    let repl = connect_replication(config, metrics).await?;
    let write_back = (witness.is_some() && config.witness.write_back).then(|| {
        WriteBack::spawn(
            postgres.clone(),
            config.batch.max_backoff_ms,
            store.clone(),
            metrics.clone(),
        )
    });
    let to = destinations(
        &store,
        siem.as_ref(),
        write_back,
        custody.as_ref(),
        &config.witness,
        metrics,
    );
    Ok(Some(Started {
        repl,
        store,
        pg: Some(pg),
        destinations: to,
        siem,
        witness,
        detections,
        warm_alerts,
        copied_heads,
        store_changed: monitor.store_changed.clone(),
        monitor: Some(monitor),
        limits: limits(config),
    }))
}

/// The store, with its indexes; a warning when it still holds log
/// documents of the first format (`migrate` moves them).
async fn open_store(config: &Config) -> Result<MongoStore, MirrorError> {
    let store = MongoStore::from_config(&config.mongo).await?;
    store.ensure_indexes().await?;
    if store.first_format_left().await? {
        tracing::warn!("the store holds log documents of the first format (written before release 0.6.0, keyed by log_id alone): run `authaudit-sidecar migrate` once to move them to the tenant_id/log_id key; until then `verify` reports them as differing (docs/sidecar.md, \"Migrating a mirror of the first format\")");
    }
    Ok(store)
}

/// The control connection, once PostgreSQL passed the checks (nothing is
/// created where the mirror cannot run) and the publication is in place;
/// with the slot, if it exists.
async fn check_postgres(
    postgres: &PostgresConfig,
) -> Result<(tokio_postgres::Client, Option<SlotFacts>), MirrorError> {
    let pg = crate::pg::connect(postgres).await?;
    let facts = crate::preflight::Facts::read(&pg).await?;
    facts.check_mirror()?;
    ensure_publication(&pg, &postgres.publication, &facts.database).await?;
    let slot = pg
        .query_opt(
            "SELECT database::text, plugin::text, slot_type = 'logical' FROM pg_catalog.pg_replication_slots \
             WHERE slot_name = $1",
            &[&postgres.slot],
        )
        .await?
        .map(|r| SlotFacts {
            database: r.get(0),
            plugin: r.get(1),
            logical: r.get(2),
        });
    if let Some(s) = &slot {
        s.check(&postgres.slot, &facts.database)?;
    }
    Ok((pg, slot))
}

/// What the store's custody decided for this session.
struct Plan {
    /// Findings no operator has resolved: nothing is copied meanwhile.
    open: Vec<Finding>,
    /// The store's identity.
    store_id: Option<String>,
    /// Whether and why PostgreSQL's rows are copied into the store.
    copy: Option<Copy>,
}

/// The store's custody: does it hold what was acknowledged to it? Its
/// findings are reported, its identity given, and the copy decided.
async fn plan(
    store: &MongoStore,
    postgres: &PostgresConfig,
    metrics: &Metrics,
    slot: &Option<SlotFacts>,
    acknowledged: &Acknowledged,
) -> Result<Plan, MirrorError> {
    let state = store.state(&postgres.slot).await?;
    let copied = state
        .as_ref()
        .and_then(|d| d.get_bool("copied").ok())
        .unwrap_or(false);
    let held_id = match state.as_ref().map(|d| d.get_str("store_id").ok()) {
        Some(Some(id)) => Some(id.to_owned()),
        // The mirror state of a release before identities (its copy done):
        // the store holds the mirror, and no mark names another store. It
        // is given its identity now instead of being taken for an emptied
        // one.
        Some(None) if copied && acknowledged.store_id.is_none() => {
            let id = crate::custody::new_store_id();
            store
                .set_state(&postgres.slot, doc! {"store_id": &id})
                .await?;
            tracing::info!(store_id = %id, "the store's mirror state has no identity (an earlier release wrote it): given one");
            Some(id)
        }
        _ => None,
    };
    let verdict = crate::custody::check(
        store,
        &postgres.slot,
        acknowledged,
        slot.is_some(),
        held_id.clone(),
    )
    .await?;
    report_verdict(&verdict, postgres, metrics);
    metrics
        .tamper_unresolved
        .set(store.unresolved_tampers().await? as i64);
    // The store's identity: given before the slot exists, so that a slot
    // always has a store that says it was given one.
    let store_id = match (&held_id, verdict.open.is_empty()) {
        (Some(id), true) => Some(id.clone()),
        (None, true) => {
            let id = crate::custody::new_store_id();
            store
                .set_state(&postgres.slot, doc! {"store_id": &id})
                .await?;
            Some(id)
        }
        (_, false) => held_id.clone(),
    };
    let copy = copy_of(
        &verdict,
        slot.is_some(),
        copied,
        state.is_none() && acknowledged.is_empty(),
    );
    Ok(Plan {
        open: verdict.open,
        store_id,
        copy,
    })
}

/// The custody's findings in the log: the open ones as errors, those an
/// operator resolved as information.
fn report_verdict(verdict: &Verdict, postgres: &PostgresConfig, metrics: &Metrics) {
    for f in &verdict.open {
        metrics.store_findings.inc();
        tracing::error!(
            alarm = %f.id(&postgres.slot),
            kind = f.kind(),
            tenant = f.tenant(),
            seq = f.seq(),
            "STORE: {f}; nothing is copied from PostgreSQL until an operator resolves the alarm (docs/sidecar.md, \"The store's custody\")"
        );
    }
    for (f, note) in &verdict.accepted {
        tracing::info!(
            kind = f.kind(),
            "store finding resolved by an operator: {f} ({note})"
        );
    }
}

/// Whether and why PostgreSQL's rows are copied: `fresh` when there is
/// neither a mirror state nor anything acknowledged.
fn copy_of(verdict: &Verdict, slot: bool, copied: bool, fresh: bool) -> Option<Copy> {
    let accepted = || Copy::Accepted(verdict.accepted.iter().map(|(_, n)| n.clone()).collect());
    let copy = match (verdict.open.is_empty(), slot, copied) {
        (false, _, _) => None,
        (true, false, _) if fresh => Some(Copy::FirstStart),
        (true, _, _) if !verdict.accepted.is_empty() && (!slot || !copied) => Some(accepted()),
        (true, false, _) => Some(Copy::SlotLost),
        (true, true, false) => Some(Copy::Unfinished),
        (true, true, true) => None,
    };
    if let (false, true) = (verdict.open.is_empty(), !slot || !copied) {
        tracing::warn!("the copy of the rows committed before the slot waits for the store's alarms to be resolved");
    }
    copy
}

/// Creates the slot. A new slot (first start, or the old one was lost):
/// what committed before it is to be copied, whatever the state says.
async fn create_slot(
    pg: &tokio_postgres::Client,
    store: &MongoStore,
    postgres: &PostgresConfig,
) -> Result<(), MirrorError> {
    let created = pg
        .query_one(
            "SELECT lsn::text FROM pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&postgres.slot],
        )
        .await?;
    let lsn: String = created.get(0);
    tracing::info!(slot = %postgres.slot, consistent_point = %lsn, "created the replication slot");
    store
        .set_state(
            &postgres.slot,
            doc! {"copied": false, "slot_created_at_lsn": lsn},
        )
        .await?;
    Ok(())
}

/// The detections' windows from the rows of the last window (returns the
/// alerts they raise that the store does not hold: one it holds was
/// raised before the restart, and is neither raised nor counted again),
/// and the witness's trees, so that the stream never waits for them.
async fn warm_up(
    store: &MongoStore,
    pg: &tokio_postgres::Client,
    detections: Option<&mut crate::detect::Detections>,
    witness: Option<&mut crate::witness::Witness>,
) -> Result<Vec<authaudit_core::detection::Alert>, MirrorError> {
    let mut warm_alerts = Vec::new();
    if let Some(d) = detections {
        let started = Instant::now();
        warm_alerts = not_raised(store, d.warm_up(pg).await?).await?;
        tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            alerts = warm_alerts.len(),
            "detection windows read from PostgreSQL"
        );
    }
    if let Some(w) = witness {
        let started = Instant::now();
        let n = w.preload(store).await?;
        tracing::info!(
            tenants = n,
            ms = started.elapsed().as_millis() as u64,
            "witness trees grown from their last signed checkpoints"
        );
    }
    Ok(warm_alerts)
}

/// Connects the replication stream and starts it at the slot's position.
async fn connect_replication(
    config: &Config,
    metrics: &Metrics,
) -> Result<ReplicationClient, MirrorError> {
    let postgres = &config.postgres;
    let mut cfg = ReplicationConfig::new(
        postgres.host.clone(),
        postgres.user.clone(),
        postgres.expose_password().to_string(),
        postgres.database.clone(),
        postgres.slot.clone(),
        postgres.publication.clone(),
    );
    cfg.port = postgres.port;
    cfg.tls = crate::tls::replication_tls(postgres);
    cfg.start_lsn = Lsn::ZERO;
    // Synchronous mirroring: each acknowledged commit is reported at once
    // (a synchronous commit waits for it); otherwise status updates are
    // throttled to the interval.
    let status_interval = Duration::from_millis(config.batch.status_interval_ms.max(100));
    cfg.status_interval = if postgres.synchronous {
        Duration::from_millis(1)
    } else {
        status_interval
    };
    cfg.idle_wakeup_interval = status_interval;
    cfg.buffer_events = 1024;
    cfg.options = Some(crate::config::SESSION_OPTIONS.to_string());
    cfg.application_name = Some(postgres.application_name.clone());
    let mut repl = ReplicationClient::connect(cfg)
        .await
        .map_err(|e| replication_refused(e, postgres))?;
    // Connecting, logging in and START_REPLICATION run in the client's
    // worker: a refusal shows here.
    repl.wait_started()
        .await
        .map_err(|e| replication_refused(e, postgres))?;
    metrics.streaming.set(1);
    metrics
        .last_progress_unix
        .store(unix_now_us() / 1_000_000, Ordering::Relaxed);
    tracing::info!(slot = %postgres.slot, publication = %postgres.publication, "streaming");
    Ok(repl)
}

/// The batch limits.
fn limits(config: &Config) -> Limits {
    // Synchronous mirroring hands a commit to the destinations as soon as
    // it arrives (transactions arriving during a delivery share the next).
    let wait = if config.postgres.synchronous {
        Duration::ZERO
    } else {
        Duration::from_millis(config.batch.wait_ms.max(1))
    };
    // One batch is delivered while the next is decoded; two in flight
    // measured slower (0.46 against 0.52 of pg_recvlogical draining 500,000
    // events): batches left sooner, smaller, and repeated lockout upserts
    // that one larger batch folds into one.
    Limits {
        rows: config.batch.rows,
        bytes: config.batch.bytes,
        wait,
        outstanding: 1,
    }
}

/// A replication error as a configuration fault when it is one (a role or
/// pg_hba.conf that refuses replication connections).
fn replication_refused(
    e: pgwire_replication::PgWireError,
    postgres: &PostgresConfig,
) -> MirrorError {
    match &e {
        pgwire_replication::PgWireError::Server(text)
        | pgwire_replication::PgWireError::Auth(text) => {
            match crate::preflight::Misconfigured::of_replication(text, postgres) {
                Some(m) => m.into(),
                None => e.into(),
            }
        }
        _ => e.into(),
    }
}

/// Creates the publication if it is missing (before the slot: pgoutput reads
/// publications as of each change it decodes). Without the function (an
/// extension older than 0.2.0) or the right to run it, the publication must
/// exist already; if it does not, that is a configuration fault.
async fn ensure_publication(
    pg: &tokio_postgres::Client,
    publication: &str,
    database: &str,
) -> Result<(), MirrorError> {
    let why = match pg
        .query_one(
            "SELECT authaudit.ensure_mirror_publication($1)",
            &[&publication],
        )
        .await
    {
        Ok(_) => {
            tracing::debug!(%publication, "publication in place");
            return Ok(());
        }
        Err(e) => crate::pg::with_causes(&e),
    };
    let exists = pg
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await?
        .is_some();
    if exists {
        tracing::warn!(%publication, error = %why, "could not ensure the publication; using it as it is");
        Ok(())
    } else {
        Err(crate::preflight::Misconfigured::NoPublication {
            publication: publication.to_owned(),
            database: database.to_owned(),
            why,
        }
        .into())
    }
}

/// The store, then the SIEM when one is configured.
fn destinations(
    store: &MongoStore,
    siem: Option<&Arc<Siem>>,
    write_back: Option<WriteBack>,
    custody: Option<&Arc<Custody>>,
    witness: &WitnessConfig,
    metrics: &Arc<Metrics>,
) -> Vec<Arc<dyn Destination>> {
    let mut to: Vec<Arc<dyn Destination>> = vec![Arc::new(StoreDestination {
        mongo: store.clone(),
        witness_log: witness.log.clone(),
        write_back,
        custody: custody.cloned(),
        metrics: metrics.clone(),
    })];
    if let Some(s) = siem {
        metrics
            .destinations
            .configure(crate::metrics::DestinationKind::Siem);
        to.push(Arc::new(SiemDestination {
            siem: s.clone(),
            metrics: metrics.clone(),
        }));
    }
    to
}
