//! `authaudit-sidecar`: mirrors pg_authaudit's log into MongoDB from logical
//! replication (`run`, the default), reconciles the two (`verify`), checks
//! PostgreSQL against the witness (`witness-check`), moves a mirror of the
//! first format to the current key (`migrate`), and the operator's commands
//! (`alarms`, `alerts`, `restore`). Every option:
//! `authaudit-sidecar --help`; operations and exit codes: docs/sidecar.md.

use sidecar::config::{AlarmAction, AlertAction, Cli, Command, Config, WitnessConfig};
use sidecar::error::{Exit, ToolError};
use sidecar::metrics::Metrics;
use sidecar::{mirror, operator, verify, witness};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

// Decoding allocates many short-lived strings; mimalloc keeps that cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_t` (checked by a
/// test below against its documented default).
const MI_OPTION_PURGE_DELAY: i32 = 15;

fn main() -> ExitCode {
    let cli = match Cli::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("authaudit-sidecar: {e}");
            return Exit::Usage.into();
        }
    };
    // Keep freed memory for the next batch instead of returning it to the
    // kernel, which hands it back zeroed (8% of the sidecar's profile in
    // a backlog drain); resident memory stays at its peak, which batches bound.
    // SAFETY: sets a process-wide allocator option before any thread starts.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    // One TLS implementation for every connection (PostgreSQL and MongoDB).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.config.general.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours for a terminal only: a log file or journal gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if cli.config.general.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("authaudit-sidecar: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let exit = rt.block_on(command(cli));
    // The command's outcome is printed: a driver task torn down below may
    // panic because its peer went first (the MongoDB driver's connection
    // requester does), and has nothing to report then.
    std::panic::set_hook(Box::new(|_| {}));
    // A task still waiting on a destination that is gone must not hold the
    // exit (SIGTERM's deadline).
    rt.shutdown_background();
    exit
}

async fn command(cli: Cli) -> ExitCode {
    let config = cli.config;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(config).await.into(),
        Command::Verify {
            rewrite_earlier_numbers,
        } => verify(&config, rewrite_earlier_numbers).await,
        Command::Migrate => match operator::migrate(&config.mongo).await {
            Ok(moved) => {
                println!("migrate: {moved} log documents moved to the tenant_id/log_id key");
                ExitCode::SUCCESS
            }
            Err(e) => failed("migrate", &e),
        },
        Command::WitnessKeygen { out, name } => match witness::keygen(&out, &name) {
            Ok(signer) => {
                println!("{}", signer.verifier().text());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("authaudit-sidecar witness-keygen: {e}");
                ExitCode::FAILURE
            }
        },
        Command::WitnessKey => match key_of(&config.witness) {
            Ok(v) => {
                println!("{}", v.text());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("authaudit-sidecar witness-key: {e}");
                Exit::Usage.into()
            }
        },
        Command::WitnessRotate { new_key_file } => {
            let Some(old) = config.witness.key_file.as_ref() else {
                eprintln!("authaudit-sidecar witness-rotate: no --witness-key-file (AUTHAUDIT_WITNESS_KEY_FILE): the old key signs too");
                return Exit::Usage.into();
            };
            match witness::rotation(old, &new_key_file) {
                Ok(statement) => {
                    print!("{statement}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("authaudit-sidecar witness-rotate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::WitnessCheck { public_key } => witness_check(&config, public_key).await,
        Command::Alarms { action } => {
            let done = match action {
                AlarmAction::List { all } => operator::alarms_list(&config.mongo, all).await,
                AlarmAction::Resolve { id, note } => {
                    operator::alarm_resolve(&config.mongo, &id, &note).await
                }
            };
            printed("alarms", done)
        }
        Command::Alerts {
            action:
                AlertAction::List {
                    tenant,
                    rule,
                    limit,
                },
        } => printed(
            "alerts",
            operator::alerts_list(&config.mongo, tenant.as_deref(), rule.as_deref(), limit).await,
        ),
        Command::Restore {
            tenant,
            seq,
            execute,
            note,
        } => printed(
            "restore",
            operator::restore(
                &config.postgres,
                &config.mongo,
                &tenant,
                seq,
                execute,
                note.as_deref(),
            )
            .await,
        ),
    }
}

/// `verify`: the report on stdout; exit 1 on a difference.
async fn verify(config: &Config, rewrite_earlier_numbers: bool) -> ExitCode {
    let report = match verify::reconcile(
        &config.postgres,
        &config.mongo,
        config.general.progress_interval_ms,
        rewrite_earlier_numbers,
    )
    .await
    {
        Ok(report) => report,
        Err(e) => return failed("verify", &e),
    };
    for n in &report.notes {
        println!("note: {n}");
    }
    for d in &report.differences {
        println!("DIFFERENCE: {d}");
    }
    println!(
        "verify: {} tenants, {} rows in PostgreSQL: {}",
        report.tenants,
        report.rows,
        if report.ok() {
            "identical"
        } else {
            "DIFFERENT"
        }
    );
    if report.ok() {
        Exit::Ok
    } else {
        Exit::Findings
    }
    .into()
}

/// `witness-check`: with `public_key`, or the key of --witness-key-file;
/// exit 1 on a finding.
async fn witness_check(config: &Config, public_key: Option<String>) -> ExitCode {
    let verifier = match public_key {
        Some(k) => sidecar::note::Verifier25519::parse(&k).map_err(|e| e.to_string()),
        None => key_of(&config.witness),
    };
    let verifier = match verifier {
        Ok(v) => v,
        Err(e) => {
            eprintln!("authaudit-sidecar witness-check: {e}");
            return Exit::Usage.into();
        }
    };
    let report =
        match witness::check(&config.postgres, &config.mongo, &config.witness, &verifier).await {
            Ok(report) => report,
            Err(e) => return failed("witness-check", &e),
        };
    for o in &report.ok {
        println!("ok: {o}");
    }
    for f in &report.findings {
        println!("WITNESS: {f}");
    }
    println!(
        "witness-check: {} tenants agree with their signed checkpoints, {} findings",
        report.ok.len(),
        report.findings.len()
    );
    if report.findings.is_empty() {
        Exit::Ok
    } else {
        Exit::Findings
    }
    .into()
}

/// A command's error on stderr, and its exit code.
fn failed(what: &str, e: &ToolError) -> ExitCode {
    eprintln!("authaudit-sidecar {what}: {e}");
    e.exit().into()
}

/// An operator command's output on stdout, or its error.
fn printed(what: &str, done: Result<String, ToolError>) -> ExitCode {
    match done {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => failed(what, &e),
    }
}

/// The verifier key of `--witness-key-file`.
fn key_of(witness: &WitnessConfig) -> Result<sidecar::note::Verifier25519, String> {
    let path = witness
        .key_file
        .as_ref()
        .ok_or("no --witness-key-file (AUTHAUDIT_WITNESS_KEY_FILE)")?;
    Ok(witness::signer(path).map_err(|e| e.to_string())?.verifier())
}

async fn run(config: Config) -> Exit {
    // Files the options name that cannot be read stop the start, not each
    // session.
    if let Err(e) = witness::Witness::from_config(&config.witness) {
        eprintln!("authaudit-sidecar: {e}");
        return Exit::Usage;
    }
    if let Err(e) = sidecar::detect::Detections::from_config(&config.detections) {
        eprintln!("authaudit-sidecar: {e}");
        return Exit::Usage;
    }
    if let Err(e) = sidecar::siem::Siem::from_config(&config.siem) {
        eprintln!("authaudit-sidecar: {e}");
        return Exit::Usage;
    }
    let metrics = Arc::new(Metrics::from_config(&config.metrics));
    let listen = &config.metrics.listen;
    if !listen.is_empty() {
        match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => {
                tracing::info!(address = %listen, "metrics on /metrics, health on /health");
                tokio::spawn(sidecar::http::serve(
                    l,
                    metrics.clone(),
                    sidecar::http::Limits::of(&config.metrics),
                ));
            }
            Err(e) => {
                eprintln!("authaudit-sidecar: cannot listen on {listen}: {e}");
                return Exit::Usage;
            }
        }
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("authaudit-sidecar: cannot install signal handlers");
        return Exit::Unreadable;
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stopping: draining the current batch");
        let _ = stop_tx.send(true);
    });
    // SIGTERM waits for the deliveries in flight at most this long: a
    // destination that is gone cannot hold the process.
    let mut stopping = stop_rx.clone();
    let shutdown_timeout_ms = config.batch.shutdown_timeout_ms;
    let deadline = Duration::from_millis(shutdown_timeout_ms);
    let shutdown_deadline = async move {
        let _ = stopping.wait_for(|s| *s).await;
        tokio::time::sleep(deadline).await;
    };
    tokio::select! {
        r = mirror::run(&config, metrics, stop_rx) => match r {
            Ok(()) => Exit::Ok,
            Err(e) => {
                eprintln!("authaudit-sidecar: {e}");
                if e.is_configuration() { Exit::Misconfigured } else { Exit::Unreadable }
            }
        },
        () = shutdown_deadline => {
            tracing::warn!(
                timeout_ms = shutdown_timeout_ms,
                "stopped at the shutdown deadline with deliveries in flight: what they carried stays unacknowledged and is replayed at the next start"
            );
            eprintln!(
                "authaudit-sidecar: stopped after --shutdown-timeout-ms ({shutdown_timeout_ms} ms) with deliveries in flight; they stay unacknowledged"
            );
            Exit::ShutdownDeadline
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // SAFETY: reads an allocator option.
            let v = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
            assert_eq!(v, 1000, "mimalloc v3's default purge delay (ms)");
        }
    }
}
