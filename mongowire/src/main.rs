//! `authaudit-mongowire`: the MongoDB-wire development server, for the demo
//! and local runs of the mirror when no MongoDB is at hand. In memory only:
//! everything is gone when it stops.

use std::process::ExitCode;

// Many small documents come and go: glibc's allocator fragments badly here.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str =
    "authaudit-mongowire: a MongoDB-wire development server (in memory, not a database)

USAGE:
    authaudit-mongowire [--listen ADDR]

OPTIONS:
    --listen ADDR   address to listen on (default 127.0.0.1:27017; env AUTHAUDIT_MONGOWIRE_LISTEN)
    -h, --help      this help";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    // Freed memory stays with the process (mimalloc's purge delay, option 15
    // of v3, set to never): returned pages came back zeroed by the kernel,
    // a third of this server's time. SAFETY: a process-wide allocator option.
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let mut listen =
        std::env::var("AUTHAUDIT_MONGOWIRE_LISTEN").unwrap_or_else(|_| "127.0.0.1:27017".into());
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => match args.next() {
                Some(v) => listen = v,
                None => {
                    eprintln!("--listen needs an address\n\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument {other:?}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("authaudit-mongowire: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "authaudit-mongowire listening on {} (in memory: a development stand-in, not MongoDB)",
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or(listen)
    );
    authaudit_mongowire::serve(listener, Default::default(), Default::default()).await;
    ExitCode::SUCCESS
}
