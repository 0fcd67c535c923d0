//! The `sekisho` command: `run`, `check`, `demo-origin`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use sekisho::engine::SlotRegistry;

#[derive(Parser)]
#[command(
    name = "sekisho",
    version,
    about = "A rate-limiting, deny-listing reverse proxy on Pingora"
)]
struct Cli {
    /// The config file (same as `run --config`).
    #[arg(short = 'c', long = "config", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default when no command is given).
    Run,
    /// Validate a config and its list files; print every error as FILE:LINE:COL: field: message.
    Check,
    /// Run a tiny demo origin (answers "ok", echoes bodies, /status/NNN) for trying sekisho out.
    DemoOrigin {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SEKISHO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config_path = || {
        cli.config
            .clone()
            .unwrap_or_else(|| PathBuf::from("conf/sekisho.yaml"))
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => {
            let path = config_path();
            match sekisho::config::load(&path, &SlotRegistry::default()) {
                Ok(c) => {
                    let geo = c.geo.database.as_ref().map_or(String::new(), |db| {
                        format!(
                            ", country database {:?} built at Unix time {}",
                            db.database_type(),
                            db.build_epoch()
                        )
                    });
                    println!(
                        "{}: ok ({} rules, {} allow and {} deny entries, {} upstreams{geo})",
                        path.display(),
                        c.policy.rules.len(),
                        c.policy.allow.entries(),
                        c.policy.deny.entries(),
                        c.upstreams.len()
                    );
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    eprintln!("{}: {} error(s)", path.display(), errors.0.len());
                    ExitCode::from(1)
                }
            }
        }
        Command::Run => {
            let path = config_path();
            let slots = SlotRegistry::default();
            let mut cache = sekisho::config::ListCache::default();
            let config = match sekisho::config::load_cached(&path, &slots, &mut cache) {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!("{errors}");
                    eprintln!(
                        "{}: not started, {} error(s)",
                        path.display(),
                        errors.0.len()
                    );
                    return ExitCode::from(1);
                }
            };
            tracing::info!(
                config = %path.display(),
                listen = ?config.listen,
                upstreams = ?config.upstreams.iter().map(|u| &u.name).collect::<Vec<_>>(),
                rules = config.policy.rules.len(),
                deny_entries = config.policy.deny.entries(),
                "sekisho starting"
            );
            // Until the reload task listens, SIGHUP's default action would kill the proxy
            // (`systemctl reload` right after start): catch it from now on.
            let early_hup = Arc::new(std::sync::atomic::AtomicBool::new(false));
            if let Err(e) =
                signal_hook::flag::register(signal_hook::consts::SIGHUP, early_hup.clone())
            {
                tracing::warn!("cannot catch SIGHUP early: {e}");
            }
            let (server, state) = match sekisho::server::build(config, slots, cache) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{}: not started: {e}", path.display());
                    return ExitCode::from(1);
                }
            };
            *state.early_hup.lock() = Some(early_hup);
            server.run_forever()
        }
        Command::DemoOrigin { listen } => {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::bind(&listen).await {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("cannot listen on {listen}: {e}");
                        return ExitCode::from(1);
                    }
                };
                tracing::info!(%listen, "demo origin listening");
                sekisho::origin::serve(listener, Arc::new(AtomicU64::new(0))).await;
                ExitCode::SUCCESS
            })
        }
    }
}

/// mimalloc: Pingora allocates per request and the reload path builds large sets on a
/// blocking thread; glibc's per-thread arenas kept that memory (RSS crept from 60 to 135 MiB
/// over repeated 1M-line reloads) and malloc/free cost ~9% of a proxying core.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
