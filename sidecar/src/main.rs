//! `authaudit-sidecar`: mirrors pg_authaudit's log into MongoDB from logical
//! replication (`run`, the default), or reconciles the two (`verify`).
//! Every option: `authaudit-sidecar --help`; operations: docs/sidecar.md.

use sidecar::config::{Cli, Command};
use sidecar::metrics::Metrics;
use sidecar::{mirror, verify, witness};
use std::process::ExitCode;

// Decoding allocates many short-lived strings; mimalloc keeps that cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_t` (checked by a
/// test below against its documented default).
const MI_OPTION_PURGE_DELAY: i32 = 15;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};

fn main() -> ExitCode {
    let cli = match Cli::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("authaudit-sidecar: {e}");
            return ExitCode::from(2);
        }
    };
    // Keep freed memory for the next batch instead of returning it to the
    // kernel, which hands it back zeroed (8% of the sidecar's profile in
    // a backlog drain); resident memory stays at its peak, which batches bound.
    // SAFETY: sets a process-wide allocator option before any thread starts.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    // One TLS implementation for every connection (PostgreSQL and MongoDB).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.options.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours for a terminal only: a log file or journal gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if cli.options.log_json {
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
    rt.block_on(async move {
        match cli.command.unwrap_or(Command::Run) {
            Command::Verify {
                rewrite_earlier_numbers,
            } => match verify::reconcile(&cli.options, rewrite_earlier_numbers).await {
                Ok(report) => {
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
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("authaudit-sidecar verify: {e}");
                    ExitCode::from(3)
                }
            },
            Command::Run => run(cli.options).await,
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
            Command::WitnessKey => match key_of(&cli.options) {
                Ok(v) => {
                    println!("{}", v.text());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("authaudit-sidecar witness-key: {e}");
                    ExitCode::from(2)
                }
            },
            Command::WitnessRotate { new_key_file } => {
                let Some(old) = cli.options.witness_key_file.as_ref() else {
                    eprintln!("authaudit-sidecar witness-rotate: no --witness-key-file (AUTHAUDIT_WITNESS_KEY_FILE): the old key signs too");
                    return ExitCode::from(2);
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
            Command::WitnessCheck { public_key } => {
                let verifier = match public_key {
                    Some(k) => sidecar::note::Verifier25519::parse(&k).map_err(|e| e.to_string()),
                    None => key_of(&cli.options),
                };
                let verifier = match verifier {
                    Ok(v) => v,
                    Err(e) => {
                        eprintln!("authaudit-sidecar witness-check: {e}");
                        return ExitCode::from(2);
                    }
                };
                match witness::check(&cli.options, &verifier).await {
                    Ok(report) => {
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
                            ExitCode::SUCCESS
                        } else {
                            ExitCode::from(1)
                        }
                    }
                    Err(e) => {
                        eprintln!("authaudit-sidecar witness-check: {e}");
                        ExitCode::from(3)
                    }
                }
            }
        }
    })
}

/// The verifier key of `--witness-key-file`.
fn key_of(options: &sidecar::config::Options) -> Result<sidecar::note::Verifier25519, String> {
    let path = options
        .witness_key_file
        .as_ref()
        .ok_or("no --witness-key-file (AUTHAUDIT_WITNESS_KEY_FILE)")?;
    Ok(witness::signer(path).map_err(|e| e.to_string())?.verifier())
}

async fn run(options: sidecar::config::Options) -> ExitCode {
    // A witness key that cannot be read stops the start, not each session.
    if let Err(e) = witness::Witness::from_options(&options) {
        eprintln!("authaudit-sidecar: {e}");
        return ExitCode::FAILURE;
    }
    let metrics = Arc::new(Metrics::new(options.tenant_metrics));
    if !options.metrics_listen.is_empty() {
        match tokio::net::TcpListener::bind(&options.metrics_listen).await {
            Ok(l) => {
                tracing::info!(address = %options.metrics_listen, "metrics on /metrics, health on /health");
                tokio::spawn(sidecar::http::serve(
                    l,
                    metrics.clone(),
                    options.http_limits(),
                ));
            }
            Err(e) => {
                eprintln!(
                    "authaudit-sidecar: cannot listen on {}: {e}",
                    options.metrics_listen
                );
                return ExitCode::FAILURE;
            }
        }
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("authaudit-sidecar: cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stopping: draining the current batch");
        let _ = stop_tx.send(true);
    });
    match mirror::run(&options, metrics, stop_rx).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("authaudit-sidecar: {e}");
            ExitCode::FAILURE
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
