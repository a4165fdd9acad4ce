//! The `registry` command: `registry serve` runs the server.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use registry::config::{Config, LogFormat, ServeArgs};
use tracing_subscriber::EnvFilter;

/// An OCI distribution registry for build clusters.
#[derive(Parser)]
#[command(name = "registry", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry server.
    ///
    /// Settings come from a TOML file (--config or REGISTRY_CONFIG), then REGISTRY_* environment
    /// variables, then these flags; later sources win.
    Serve(ServeArgs),
}

fn init_logging(cfg: &Config) {
    let filter = EnvFilter::try_new(&cfg.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("shutdown requested; finishing requests in flight");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let cfg = match Config::load(&args, &|k| std::env::var(k).ok()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("registry: configuration error: {e:#}");
                    return ExitCode::from(2);
                }
            };
            init_logging(&cfg);
            let rt = tokio::runtime::Runtime::new().expect("start tokio runtime");
            let res = rt.block_on(async {
                let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
                tracing::info!(
                    listen = %listener.local_addr()?,
                    storage = %cfg.storage,
                    version = env!("CARGO_PKG_VERSION"),
                    "registry serving"
                );
                registry::server::run(listener, cfg, shutdown_signal()).await
            });
            match res {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "registry failed");
                    eprintln!("registry: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
