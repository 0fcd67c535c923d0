//! The `sekisho` command: `run`, `check`, `config`, `bans`, `attack`, `replay`, `explain`,
//! `suggest`, `demo-origin`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use sekisho::engine::SlotRegistry;
use sekisho::geo::attribution;

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
    Run {
        /// Take over from the running sekisho without dropping a connection: wait (about 5 s)
        /// on `upgrade_socket` for its listening sockets, which it sends on SIGQUIT, then read
        /// its saved ban state and serve; the old one finishes its requests and exits.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a config and its list files; print every error as FILE:LINE:COL: field: message,
    /// and every warning (valid, but almost never meant) as FILE:LINE:COL: field: warning: message.
    Check {
        /// Fail (exit 1) when there is any warning, too.
        #[arg(long)]
        strict: bool,
        /// Print the effective config instead of the one-line summary (as `sekisho config`).
        #[arg(long)]
        print: bool,
    },
    /// The running proxy: version, uptime, listeners, upstream peers, reloads, the
    /// under-attack switch, bans and each rule's counts (asks its admin listener).
    Status {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The heaviest clients (or countries, user agents, paths) of the last minutes, with how
    /// many of their requests were refused (asks the running proxy's admin listener).
    Top {
        /// What to rank: ip, country, user_agent, path or ja4 (TLS clients).
        #[arg(long, default_value = "ip", value_parser = ["ip", "country", "user_agent", "path", "ja4"])]
        by: String,
        /// Over the last N minutes (1 to 15).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=15))]
        window: u64,
        /// How many to show (1 to 1000).
        #[arg(short = 'n', default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
        n: u16,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Print the effective config as YAML: every key with the value `run` uses, defaults
    /// filled in, list files and upstreams resolved (as `nginx -T`). Errors as `check`.
    Config,
    /// Banned addresses: list, add or remove them, or export them for another firewall.
    Bans {
        #[command(subcommand)]
        action: BansAction,
    },
    /// The under-attack profile: switch it on, off or to auto, or show its state and preview
    /// (talks to the running proxy's admin listener).
    Attack {
        /// on, off, auto, status or preview.
        #[arg(value_parser = ["on", "off", "auto", "status", "preview"])]
        switch: String,
        /// The admin listener (default: admin.listen from the config).
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
    },
    /// Judge the requests of access logs with a candidate config (-c), as the proxy would
    /// have: what it would refuse or count, by rule, the bans autoban would issue, and the
    /// requests the origin answered 2xx/3xx that it would refuse.
    Replay(sekisho::replay::run::ReplayArgs),
    /// Show how one request is judged: each list and rule, matched or the condition that
    /// failed, the limit key and the decision (with --admin: the live state of its keys).
    Explain(sekisho::replay::explain::ExplainArgs),
    /// Suggest a rate and burst for each limit rule (and for paths no rule covers) from a log.
    Suggest(sekisho::replay::suggest::SuggestArgs),
    /// Write synthetic traffic (browsers, a prober, a flood, a scraper) as an access log, for
    /// trying `replay` and `suggest` out.
    SynthLog {
        /// nginx, nginx-main, apache, alb, cloudfront, aws-waf, caddy, sekisho (decision log) or
        /// sekisho-access.
        #[arg(long, default_value = "nginx")]
        format: String,
        /// Seconds of traffic.
        #[arg(long, default_value_t = 600)]
        seconds: u32,
        /// How many browsers.
        #[arg(long, default_value_t = 200)]
        browsers: u32,
        /// The flood's requests a second (it runs in the middle third).
        #[arg(long, default_value_t = 200)]
        flood_rate: u32,
        /// The random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Run a tiny demo origin (answers "ok", echoes bodies, /status/NNN) for trying sekisho out.
    DemoOrigin {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: String,
    },
}

#[derive(Subcommand)]
enum BansAction {
    /// Print the live bans as a table (--json: as JSON).
    List {
        #[command(flatten)]
        source: BanSource,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Ban an address or network now, in the running proxy (which saves it to its state file).
    Add {
        /// An address (203.0.113.7, 2001:db8::1) or a network (198.51.100.0/24).
        net: String,
        /// How long: 30m, 1h, 7d (1s to 365d; default 1h).
        #[arg(long)]
        ttl: Option<String>,
        /// Why; kept with the ban and logged.
        #[arg(long)]
        reason: Option<String>,
        /// Ban a network wider than a /8 (IPv4) or a /16 (IPv6) anyway.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Lift the ban on exactly this address or network, in the running proxy.
    Remove {
        /// The address or network as `bans list` shows it.
        net: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Print the live, enforced bans in a firewall's format.
    Export {
        /// plain, nginx, nginx-geo, aws-waf-ipset or json.
        #[arg(long, default_value = "plain")]
        format: String,
        /// At most this many entries per address family (aws-waf-ipset: 10000 unless given).
        #[arg(long)]
        max: Option<usize>,
        /// When over --max, widen prefixes until the list fits instead of failing.
        #[arg(long)]
        aggregate: bool,
        #[command(flatten)]
        source: BanSource,
    },
}

/// How to reach the running proxy, and how to print its answer.
#[derive(clap::Args)]
struct AdminArgs {
    /// The admin listener (default: admin.listen from the config).
    #[arg(long)]
    admin: Option<std::net::SocketAddr>,
    /// Print the admin listener's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct BanSource {
    /// Read this state file instead of bans.state_file from the config.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Ask the running proxy's admin listener (live view) instead of reading the state file.
    #[arg(long)]
    admin: Option<std::net::SocketAddr>,
}

/// The log filter from `SEKISHO_LOG` (unset or empty: `info`), or why it is not one.
///
/// tracing reads a bare word that is not a level as a target name at every level: `verbose`
/// would show only the logs of a target named `verbose` and silence all others, the audit lines
/// included. So a bare word must be a level; a target takes `target=level`.
///
/// Pingora's own lines (its start, signal and shutdown chatter, logged through the `log` crate
/// under `pingora_*` targets) are shown from `warn` up unless the setting names them, e.g.
/// `info,pingora=info` (a later directive for the same target wins).
fn log_filter(value: Option<&std::ffi::OsStr>) -> Result<tracing_subscriber::EnvFilter, String> {
    use tracing_subscriber::EnvFilter;
    let Some(value) = value else {
        return Ok(EnvFilter::new(QUIET_PINGORA_INFO));
    };
    let not_a_filter = |why: String| {
        format!(
            "SEKISHO_LOG={:?} is not a log filter (e.g. info, sekisho=debug,warn): {why}",
            value.to_string_lossy()
        )
    };
    let text = value
        .to_str()
        .ok_or_else(|| not_a_filter("it is not UTF-8".into()))?;
    if text.trim().is_empty() {
        return Ok(EnvFilter::new(QUIET_PINGORA_INFO));
    }
    const LEVELS: [&str; 12] = [
        "trace", "debug", "info", "warn", "error", "off", "0", "1", "2", "3", "4", "5",
    ];
    for directive in text.split(',').map(str::trim) {
        let bare = !directive.is_empty() && !directive.contains(['=', '[']);
        if bare && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive)) {
            return Err(not_a_filter(format!(
                "{directive:?} is not a level (trace, debug, info, warn, error, off); for a target write {directive}=LEVEL"
            )));
        }
    }
    EnvFilter::builder()
        .parse(format!("pingora=warn,{text}"))
        .map_err(|e| not_a_filter(e.to_string()))
}

/// The default log filter: `info`, with Pingora's own lines from `warn` up.
const QUIET_PINGORA_INFO: &str = "pingora=warn,info";

fn main() -> ExitCode {
    let cli = Cli::parse();
    // the offline commands judge in memory: the engine's own log lines (an autoban it would
    // issue, stamped with today's time) belong in their report, not on stderr
    let offline = matches!(
        cli.command,
        Some(Command::Replay(_) | Command::Suggest(_) | Command::SynthLog { .. })
    );
    let setting = std::env::var_os("SEKISHO_LOG")
        .or_else(|| offline.then(|| std::ffi::OsString::from("error")));
    let filter = match log_filter(setting.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("sekisho: {e}");
            return ExitCode::from(2);
        }
    };
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .finish()
            // Pingora's line per failed accept: counted, one line a second let through
            .with(sekisho::server::accept_errors::AcceptErrors::default())
            .init();
    }
    let config_path = || {
        cli.config
            .clone()
            .unwrap_or_else(|| PathBuf::from("conf/sekisho.yaml"))
    };
    match cli.command.unwrap_or(Command::Run { upgrade: false }) {
        Command::Check { strict, print } => check(&config_path(), strict, print),
        Command::Config => check(&config_path(), false, true),
        Command::Run { upgrade } => {
            let path = config_path();
            let slots = SlotRegistry::default();
            let mut cache = sekisho::config::ListCache::default();
            let config = match sekisho::config::load_cached(&path, &slots, &mut cache) {
                Ok(c) => c,
                Err(errors) if errors.is_whole_file() => {
                    eprintln!("sekisho: not started: {errors}");
                    return ExitCode::from(1);
                }
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
            for w in &config.warnings {
                tracing::warn!("config: {w}");
            }
            tracing::info!(
                config = %path.display(),
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
            let built = match sekisho::server::build(config, slots, cache, upgrade) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{}: not started: {e}", path.display());
                    return ExitCode::from(1);
                }
            };
            *built.state.early_hup.lock() = Some(early_hup);
            sekisho::server::run(built);
            ExitCode::SUCCESS
        }
        Command::Status { admin } => with_admin(&admin, &config_path(), |addr| {
            sekisho::cli::status(addr, admin.json)
        }),
        Command::Top {
            by,
            window,
            n,
            admin,
        } => {
            let req = sekisho::cli::TopRequest {
                by,
                window,
                n: usize::from(n),
            };
            with_admin(&admin, &config_path(), |addr| {
                sekisho::cli::top(addr, &req, admin.json)
            })
        }
        Command::Bans { action } => bans_command(action, &config_path()),
        Command::Attack { switch, admin } => {
            let addr = match admin.map_or_else(|| sekisho::cli::admin_addr(&config_path()), Ok) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(1);
                }
            };
            match sekisho::cli::attack(addr, &switch) {
                Ok(body) => {
                    print!("{body}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Replay(args) => sekisho::replay::run::main(&config_path(), &args),
        Command::Explain(args) => sekisho::replay::explain::main(&config_path(), &args),
        Command::Suggest(args) => sekisho::replay::suggest::main(&config_path(), &args),
        Command::SynthLog {
            format,
            seconds,
            browsers,
            flood_rate,
            seed,
        } => synth_log(&format, seconds, browsers, flood_rate, seed),
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

/// `sekisho synth-log`: the traffic on stdout.
fn synth_log(format: &str, seconds: u32, browsers: u32, flood_rate: u32, seed: u64) -> ExitCode {
    use sekisho::replay::synth::{generate_each, Plan, Writer};
    use std::io::Write;
    let plan = Plan {
        seconds,
        browsers,
        flood_rate,
        seed,
        ..Plan::default()
    };
    let mut writer = match Writer::new(format) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("sekisho synth-log: {e}");
            return ExitCode::from(2);
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut result = writer.header(&mut out);
    generate_each(&plan, |r| {
        if result.is_ok() {
            result = writer.line(r, &mut out);
        }
    });
    match result.and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // a closed pipe (`| head`) is the reader's choice
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sekisho synth-log: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::log_filter;
    use std::ffi::OsStr;

    fn check(v: &str) -> Result<(), String> {
        log_filter(Some(OsStr::new(v))).map(|_| ())
    }

    #[test]
    fn log_filters() {
        assert!(log_filter(None).is_ok());
        for ok in [
            "",
            " ",
            "info",
            "DEBUG",
            "warn,sekisho=debug",
            "sekisho=debug,warn",
            "pingora=off,info",
            "sekisho::proxy=trace",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            check("verbose").unwrap_err(),
            "SEKISHO_LOG=\"verbose\" is not a log filter (e.g. info, sekisho=debug,warn): \"verbose\" is not a level (trace, debug, info, warn, error, off); for a target write verbose=LEVEL"
        );
        assert!(check("info,sekisho").is_err());
        let loud = check("sekisho=loud").unwrap_err();
        assert!(
            loud.starts_with("SEKISHO_LOG=\"sekisho=loud\" is not a log filter (e.g. info, sekisho=debug,warn): "),
            "{loud}"
        );
    }
}

/// `sekisho bans ...`.
fn bans_command(action: BansAction, config_path: &std::path::Path) -> ExitCode {
    let (source, export, json) = match action {
        BansAction::Add {
            net,
            ttl,
            reason,
            force,
            admin,
        } => {
            let req = sekisho::cli::BanRequest {
                net,
                ttl,
                reason,
                force,
            };
            return with_admin(&admin, config_path, |addr| {
                sekisho::cli::ban_add(addr, &req, admin.json)
            });
        }
        BansAction::Remove { net, admin } => {
            return with_admin(&admin, config_path, |addr| {
                sekisho::cli::ban_remove(addr, &net, admin.json)
            });
        }
        BansAction::List { source, json } => (source, None, json),
        BansAction::Export {
            format,
            max,
            aggregate,
            source,
        } => (
            source,
            Some(sekisho::cli::ExportRequest {
                format,
                max,
                aggregate,
            }),
            false,
        ),
    };
    let source = sekisho::cli::BanSource {
        state: source.state,
        admin: source.admin,
    };
    print_or_fail(sekisho::cli::bans(
        config_path,
        &source,
        export.as_ref(),
        json,
    ))
}

/// Runs `f` against the admin listener named by `--admin` or by the config at `config_path`.
fn with_admin(
    admin: &AdminArgs,
    config_path: &std::path::Path,
    f: impl FnOnce(std::net::SocketAddr) -> Result<String, String>,
) -> ExitCode {
    match admin
        .admin
        .map_or_else(|| sekisho::cli::admin_addr(config_path), Ok)
    {
        Ok(addr) => print_or_fail(f(addr)),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

/// Prints `result`'s text (exit 0) or its error on stderr (exit 1).
fn print_or_fail(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

/// `sekisho check`: load the config as `run` would, print its warnings, and either one line
/// saying it is ok or (`print`, `sekisho config`) the effective config on stdout.
fn check(path: &std::path::Path, strict: bool, print: bool) -> ExitCode {
    match sekisho::config::load(path, &SlotRegistry::default()) {
        Ok(c) => {
            for w in &c.warnings {
                eprintln!("{w}");
            }
            if strict && !c.warnings.is_empty() {
                eprintln!(
                    "{}: {} warning(s), failing because of --strict",
                    path.display(),
                    c.warnings.len()
                );
                return ExitCode::from(1);
            }
            if print {
                use std::io::Write;
                let written = c.effective().map_err(|e| e.to_string()).and_then(|yaml| {
                    match std::io::stdout().lock().write_all(yaml.as_bytes()) {
                        // `sekisho config | head`: the reader has what it wanted
                        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.to_string()),
                        _ => Ok(()),
                    }
                });
                return match written {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("sekisho: cannot write the effective config: {e}");
                        ExitCode::from(1)
                    }
                };
            }
            let geo = c.geo.database.as_ref().map_or(String::new(), |db| {
                format!(
                    ", country database {:?} built {}",
                    db.database_type(),
                    db.build_date()
                )
            });
            let profile = c.policy.rules.len() - c.policy.profile_from;
            let extra = match (profile, c.defense.autoban.len()) {
                (0, 0) => String::new(),
                (p, a) => format!(", {p} under-attack rules, {a} autoban policies"),
            };
            let warned = match c.warnings.len() {
                0 => String::new(),
                n => format!(", {n} warning(s)"),
            };
            println!(
                "{}: ok ({} rules{extra}, {} allow and {} deny entries, {} upstreams{geo}){warned}",
                path.display(),
                c.policy.profile_from,
                c.policy.allow.entries(),
                c.policy.deny.entries(),
                c.upstreams.len()
            );
            if let Some(a) = c.geo.database_path.as_deref().and_then(attribution) {
                println!("country database: {a}");
            }
            ExitCode::SUCCESS
        }
        Err(errors) if errors.is_whole_file() => {
            eprintln!("sekisho: {errors}");
            ExitCode::from(1)
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            ExitCode::from(1)
        }
    }
}

/// mimalloc: Pingora allocates per request and the reload path builds large sets on a
/// blocking thread; glibc's per-thread arenas kept that memory (RSS crept from 60 to 135 MiB
/// over repeated 1M-line reloads) and malloc/free cost ~9% of a proxying core.
/// Its v2 line (Cargo feature `v2`), not v3: v3 hands the 4 KiB buffers Pingora allocates and
/// frees per request back to its arena and takes a fresh page for the next one (~900
/// instructions an allocation); v2 proxies 1.11x and refuses 1.16x the requests per CPU
/// second (scripts/ab.sh, 2026-12-01). v2 keeps more after big reloads: RSS ~200 MiB after
/// twenty rewrites of a 1M-line list against ~90 MiB (scripts/reload-bench.sh), and it stays there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
