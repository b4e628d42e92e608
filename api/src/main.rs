//! `authaudit-api --config FILE`: serves the platform API (docs/api.md).

use authaudit_api::config::Config;
use authaudit_api::identity::Verifier;
use authaudit_api::routes::{router, AppState};
use authaudit_api::server::ConnectionLimits;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Exit status of a configuration error (as the sidecar's).
const EXIT_CONFIG: u8 = 4;

#[derive(Parser)]
#[command(name = "authaudit-api", version, about = "pg_authaudit's platform API")]
struct Args {
    /// The configuration file (docs/api.md, "Configuration").
    #[arg(long, env = "AUTHAUDIT_API_CONFIG")]
    config: PathBuf,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AUTHAUDIT_API_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("authaudit-api: configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("authaudit-api: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> ExitCode {
    let verifier = Verifier::new(config.identity.clone());
    match verifier.load().await {
        Ok(n) => tracing::info!(keys = n, "identity provider's keys loaded"),
        Err(e) => {
            eprintln!("authaudit-api: identity's keys: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    let pool = match authaudit_api::db::pool(
        &config.database.url,
        config.database.pool_size,
        config.database.sslrootcert.as_deref(),
    ) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("authaudit-api: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let state = Arc::new(AppState {
        pool,
        verifier,
        limiter: authaudit_api::limits::RateLimiter::new(
            config.limits.requests_per_second,
            config.limits.burst,
        ),
        metrics: Arc::new(authaudit_api::metrics::Metrics::default()),
        statement_timeout: config.statement_timeout(),
        max_wait: config.limits.max_wait_seconds as u32,
        max_body: config.limits.max_body_bytes,
        stopping,
    });
    let listener = match tokio::net::TcpListener::bind(&config.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("authaudit-api: listen {}: {e}", config.listen);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    tracing::info!(listen = %config.listen, "serving");
    let shutdown = async {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    };
    // Open tails end when the server stops, so the drain does not wait
    // for them.
    let shutdown = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    let limits = ConnectionLimits {
        max_connections: config.limits.max_connections,
        max_header_bytes: config.limits.max_header_bytes,
        header_timeout: std::time::Duration::from_millis(config.limits.header_timeout_ms),
        drain: std::time::Duration::from_secs(config.limits.shutdown_drain_seconds),
    };
    let api = router(state.clone());
    let app = match &config.admin {
        None => api,
        Some(admin) => {
            let secret = match &admin.client_secret_file {
                None => None,
                Some(path) => match std::fs::read_to_string(path) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        eprintln!(
                            "authaudit-api: admin.client_secret_file {}: {e}",
                            path.display()
                        );
                        return ExitCode::from(EXIT_CONFIG);
                    }
                },
            };
            let ui = Arc::new(authaudit_api::admin::Admin::new(
                admin.clone(),
                secret,
                state,
                api.clone(),
            ));
            tracing::info!("admin interface at /admin/");
            api.merge(authaudit_api::admin::router(ui))
        }
    };
    authaudit_api::server::serve(listener, app, limits, shutdown).await;
    ExitCode::SUCCESS
}
