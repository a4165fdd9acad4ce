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
    /// Remove unreferenced blobs, stale layer links, abandoned uploads, and what retention rules
    /// in the config file select. Safe while the registry serves.
    Gc(GcArgs),
    /// Check every blob against its digest and every manifest, tag and link against what it
    /// points to. Exits 1 when anything is damaged.
    Fsck(FsckArgs),
    /// Create a private CA and a server certificate (or, with --ca, a certificate signed by an
    /// existing CA: a new server certificate, or a client one with --client) as PEM files.
    ///
    /// Writes ca.crt, ca.key, tls.crt, tls.key into --out; never overwrites without --force.
    /// --secret NAME prints a Kubernetes Secret (type kubernetes.io/tls, plus ca.crt).
    Cert(registry::cert::CertArgs),
    /// What the node DaemonSet asks the node's container runtime: where hosts.toml goes
    /// (`plan`), and whether the runtime really pulls the service name (`probe`).
    NodeSetup(registry::node_setup::NodeSetupArgs),
    /// Distribution's `registry garbage-collect CONFIG`: runs this registry's collector on that
    /// configuration (YAML or TOML). Safe while the registry serves (the grace period applies).
    #[command(name = "garbage-collect")]
    GarbageCollect(GarbageCollectArgs),
}

/// `registry garbage-collect`.
#[derive(clap::Args)]
struct GarbageCollectArgs {
    /// The configuration file.
    config: std::path::PathBuf,
    /// Only list what would be removed.
    #[arg(short = 'd', long)]
    dry_run: bool,
    /// Also remove manifests no tag reaches.
    #[arg(short = 'm', long)]
    delete_untagged: bool,
}

/// `registry gc`.
#[derive(clap::Args)]
struct GcArgs {
    /// Only list what would be removed, with sizes.
    #[arg(long)]
    dry_run: bool,
    /// Storage and GC settings, read as `serve` reads them.
    #[command(flatten)]
    settings: ServeArgs,
}

/// `registry fsck`.
#[derive(clap::Args)]
struct FsckArgs {
    /// Move damaged blobs to quarantine/ instead of only reporting them.
    #[arg(long)]
    quarantine: bool,
    /// Storage settings, read as `serve` reads them.
    #[command(flatten)]
    settings: ServeArgs,
}

fn load_or_exit(args: &ServeArgs) -> Result<Config, ExitCode> {
    Config::load(args, &|k| std::env::var(k).ok()).map_err(|e| {
        eprintln!("registry: configuration error: {e:#}");
        ExitCode::from(2)
    })
}

fn maintenance(cfg: &Config, job: impl FnOnce(storage::Store) -> Result<bool, String>) -> ExitCode {
    let reg = match registry::server::open_registry(cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("registry: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match job(reg) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("registry: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cfg: &Config) {
    let filter = EnvFilter::try_new(&cfg.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    registry::distribution::logging::init(
        filter,
        cfg.log_format == LogFormat::Json,
        &cfg.distribution.log_fields,
    );
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
        Command::Gc(args) => gc(&args),
        Command::Fsck(args) => fsck(&args),
        Command::Cert(args) => cert(&args),
        Command::NodeSetup(args) => registry::node_setup::run(args),
        Command::GarbageCollect(args) => garbage_collect(&args),
        Command::Serve(mut args) => {
            if args.is_bare(&|k| std::env::var(k).ok()) {
                args.file.config_file = registry::distribution::default_config();
            }
            serve(&args)
        }
    }
}

/// `registry gc`: collects garbage with the retention rules of the config.
fn gc(args: &GcArgs) -> ExitCode {
    let cfg = match load_or_exit(&args.settings) {
        Ok(c) => c,
        Err(code) => return code,
    };
    maintenance(&cfg, |reg| {
        let opts = cfg.gc_options(args.dry_run);
        registry::maintenance::collect_by_hand(&reg, &cfg, &opts)
    })
}

/// `registry fsck`: checks the storage and prints what is damaged.
fn fsck(args: &FsckArgs) -> ExitCode {
    let cfg = match load_or_exit(&args.settings) {
        Ok(c) => c,
        Err(code) => return code,
    };
    maintenance(&cfg, |reg| {
        let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
        let r = rt
            .block_on(reg.fsck(args.quarantine))
            .map_err(|e| registry::error::error_chain(&e))?;
        for p in &r.problems {
            println!("{p}");
        }
        for q in &r.quarantined {
            println!("quarantined blob {q}");
        }
        println!(
            "checked {} blobs and {} manifests: {} problems",
            r.blobs_checked,
            r.manifests_checked,
            r.problems.len()
        );
        Ok(r.problems.is_empty())
    })
}

/// `registry cert`: writes the PEM files and prints the manifest.
fn cert(args: &registry::cert::CertArgs) -> ExitCode {
    match registry::cert::run(args) {
        Ok(manifest) => {
            print!("{manifest}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("registry cert: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `registry garbage-collect CONFIG`: Distribution's command on this registry's collector.
fn garbage_collect(args: &GarbageCollectArgs) -> ExitCode {
    let settings = ServeArgs::with_config(args.config.clone());
    let cfg = match load_or_exit(&settings) {
        Ok(c) => c,
        Err(code) => return code,
    };
    maintenance(&cfg, |reg| {
        let mut opts = cfg.gc_options(args.dry_run);
        if args.delete_untagged {
            let everything = storage::gc::RetentionRule {
                repositories: storage::gc::Pattern::new("**"),
                keep_tags: None,
                protect_tags: None,
                untagged_after: Some(std::time::Duration::ZERO),
            };
            opts.retention.insert(0, everything);
        }
        registry::maintenance::collect_by_hand(&reg, &cfg, &opts)
    })
}

/// `registry serve`: serves until SIGTERM or Ctrl-C.
fn serve(args: &ServeArgs) -> ExitCode {
    let cfg = match load_or_exit(args) {
        Ok(c) => c,
        Err(code) => return code,
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
