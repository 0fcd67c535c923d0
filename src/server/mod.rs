//! Building the Pingora server from a validated config: listeners (bound first, or taken over
//! from the running process in an upgrade, see [`listeners`]), the proxy service, the admin
//! service and the housekeeping service, and running it until a stop ([`stop`]). Logic lives
//! elsewhere; this only wires.

pub mod accept_errors;
mod fds;
pub mod listeners;
pub mod stop;

use std::sync::Arc;

use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{Fds, RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::ready::Listeners;
use crate::admin::Admin;
use crate::config::{Config, ListCache};
use crate::engine::SlotRegistry;
use crate::metrics::access_log::AccessLog;
use crate::metrics::decision_log::{DecisionLog, Limits};
use crate::proxy::accept::AcceptGate;
use crate::proxy::tls::TlsFront;
use crate::proxy::{Sekisho, State};
use crate::reload::Housekeeping;
use listeners::{Bound, Prebound};
use stop::{Signals, Stop};

/// The server, ready to [`run`], and the state it shares.
pub struct Built {
    server: Server,
    pub state: Arc<State>,
    signals: Signals,
}

/// The server for `config`; an error when something the config asks for cannot be set up: a
/// listen or admin address that cannot be bound (checked first, before anything starts), the
/// decision or access log file. `upgrade`: first take the listening sockets over from the
/// running sekisho (which sends them on `SIGQUIT`, having saved its ban state file), and only
/// then read that state file.
pub fn build(
    config: Config,
    slots: SlotRegistry,
    cache: ListCache,
    upgrade: bool,
) -> Result<Built, String> {
    let early = stop::Early::catch();
    let mut inherited = if upgrade {
        let fds = listeners::take_over(&config.upgrade_socket)?;
        tracing::info!(socket = %config.upgrade_socket.display(), "took the listening sockets over");
        fds
    } else {
        Fds::new()
    };
    let Sockets {
        proxy: sockets,
        admin: admin_socket,
        listeners,
    } = bind_all(&config, &mut inherited).map_err(|e| e.to_string())?;
    log_upstreams(&config);
    log_geo(&config);
    let conf = ServerConf {
        threads: config.threads,
        work_stealing: config.work_stealing,
        upstream_keepalive_pool_size: config.upstream_options.pool_size,
        // the grace period is waited out by `stop`, only as long as requests are in flight
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(config.graceful_shutdown_timeout.as_secs()),
        ..ServerConf::default()
    };
    let grace_period = config.grace_period;
    let relaunch = std::env::current_exe()
        .ok()
        .map(|exe| (exe, config.path.clone()));
    let upgrade_socket = config.upgrade_socket.clone();
    let log_settings = config.decision_log.clone();
    let access_settings = config.access_log.clone();
    let mut state = State::new(config, slots, cache);
    if let Some(d) = log_settings {
        let limits = Limits {
            queue: d.queue,
            sample_allowed: d.sample_allowed,
            max_per_second: d.max_lines_per_second,
        };
        let log = DecisionLog::start(
            d.target.clone(),
            limits,
            state.metrics.log_dropped.clone(),
            state.metrics.log_suppressed.clone(),
            state.metrics.log_lines.clone(),
        )
        .map_err(|e| match &d.target {
            crate::metrics::decision_log::Target::File(p) => {
                format!("cannot open the decision log {}: {e}", p.display())
            }
            crate::metrics::decision_log::Target::Stdout => {
                format!("cannot start the decision log on stdout: {e}")
            }
        })?;
        state.decision_log = Some(log);
    }
    if let Some(a) = access_settings {
        let log = AccessLog::start(
            a.target.clone(),
            a.format,
            a.queue,
            state.metrics.access_dropped.clone(),
            state.metrics.access_lines.clone(),
        )
        .map_err(|e| format!("cannot open the access log {:?}: {e}", a.target))?;
        state.access_log = Some(log);
    }
    fds::cap(
        &state.connections,
        state.snapshot.load().config.connections.max_open,
    );
    let state = Arc::new(state);
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(16);
    // `upgrade` stays off for Pingora: the sockets were taken over above
    let mut server = Server::new_with_opt_and_conf(Some(Opt::default()), conf);
    server.bootstrap();
    let stop = Stop::new();
    let gate = Arc::new(AcceptGate::new(state.clone()));
    let tls_of = |addr| state.snapshot.load().config.tls_of(addr);
    let (plain, secure): (Vec<Bound>, Vec<Bound>) =
        sockets.into_iter().partition(|b| tls_of(b.addr).is_none());
    if !plain.is_empty() {
        let mut proxy = Service::new("sekisho".to_string(), Sekisho::new(state.clone()));
        proxy.set_connection_filter(gate.clone());
        server.add_service(Prebound::new(proxy, plain, listeners.clone(), stop.clone()));
    }
    // one service per TLS listener: each has its own acceptor (versions, ALPN)
    for socket in secure {
        let Some(tls) = tls_of(socket.addr) else {
            continue;
        };
        let front = TlsFront::new(state.clone(), socket.addr, tls)
            .map_err(|e| format!("{} ({}): {e}", socket.field, socket.addr))?;
        let mut service = Service::new(format!("sekisho-tls {}", socket.addr), front);
        service.set_connection_filter(gate.clone());
        server.add_service(Prebound::new(
            service,
            vec![socket],
            listeners.clone(),
            stop.clone(),
        ));
    }
    if let Some(socket) = admin_socket {
        let app = Admin::new(state.clone(), reload_tx, listeners.clone());
        let mut admin = Service::new("admin".to_string(), app);
        admin.threads = Some(1);
        server.add_service(Prebound::new(admin, vec![socket], listeners, stop.clone()));
    }
    server.add_service(background_service(
        "housekeeping",
        Housekeeping::new(state.clone(), reload_rx),
    ));
    if let Some(cluster) = state.cluster.clone() {
        server.add_service(background_service(
            "cluster",
            crate::cluster::sync::Service::new(state.clone(), cluster),
        ));
    }
    let signals = Signals {
        early,
        stop,
        state: state.clone(),
        grace_period,
        upgrade_socket,
        relaunch,
    };
    if upgrade {
        stop::notify_main_pid();
    }
    Ok(Built {
        server,
        state,
        signals,
    })
}

/// Runs the server until a stop (`SIGTERM`, `SIGQUIT`, `SIGINT`: see [`stop`]) has finished,
/// then saves the bans and flushes the logs.
pub fn run(built: Built) {
    let Built {
        server,
        state,
        signals,
    } = built;
    server.run(RunArgs {
        shutdown_signal: Box::new(signals),
    });
    stop::finish(&state);
    tracing::info!("stopped");
}

/// The listening sockets of the proxy and of the admin listener, and the readiness flags of all.
struct Sockets {
    proxy: Vec<Bound>,
    admin: Option<Bound>,
    listeners: Arc<Listeners>,
}

/// Binds every `listen` address, then the admin address, logging a line for each; the first
/// that fails is the error, and whatever was bound before it is closed again. An address in
/// `inherited` (taken over from the old process) is not bound but used as it is; what it holds
/// that the config no longer lists is closed.
fn bind_all(config: &Config, inherited: &mut Fds) -> Result<Sockets, listeners::BindError> {
    let mut named: Vec<(String, std::net::SocketAddr)> = config
        .listen
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("listen[{i}]"), *a))
        .collect();
    let mut keep = std::collections::HashSet::new();
    keep.extend(named.iter().map(|(_, a)| a.to_string()));
    keep.extend(config.admin_listen.map(|a| a.to_string()));
    for closed in inherited.close_unclaimed(&keep) {
        tracing::info!(addr = %closed, "closed a listening socket taken over that the config no longer lists");
    }
    let bind_or_take = |field: &str, addr: std::net::SocketAddr, index: usize| match inherited
        .get(&addr.to_string())
    {
        Some(&fd) => Ok(listeners::inherited(field, addr, index, fd)),
        None => listeners::bind(field, addr, index),
    };
    let mut sockets = Vec::with_capacity(named.len());
    for (i, (field, addr)) in named.iter().enumerate() {
        sockets.push(bind_or_take(field, *addr, i)?);
        tracing::info!(%addr, field = %field, "listening");
    }
    let admin = match config.admin_listen {
        Some(addr) => {
            let socket = bind_or_take("admin.listen", addr, named.len())?;
            tracing::info!(%addr, "admin listening");
            if !addr.ip().is_loopback() {
                tracing::warn!(%addr, "the admin listener is not on loopback: anyone who reaches it can reload the config");
            }
            named.push(("admin.listen".to_string(), addr));
            Some(socket)
        }
        None => None,
    };
    Ok(Sockets {
        proxy: sockets,
        admin,
        listeners: Arc::new(Listeners::new(named)),
    })
}

/// One line naming the country database: its path, type and build date.
fn log_geo(config: &Config) {
    let geo = &config.geo;
    match (&geo.database, &geo.database_path) {
        (Some(db), Some(path)) => tracing::info!(
            file = %path.display(),
            r#type = db.database_type(),
            built = %db.build_date(),
            "country database"
        ),
        _ if geo.header.is_some() => {}
        _ => {
            tracing::info!("no country database or header: every client's country is unknown (??)")
        }
    }
    if let Some(h) = &geo.header {
        tracing::info!(header = %h, "country from a header of trusted peers");
    }
}

/// One line naming the upstreams, each as written and, where that differs, the address it
/// resolved to at load.
fn log_upstreams(config: &Config) {
    let upstreams = config
        .upstreams
        .iter()
        .map(|u| {
            let addr = u.addr.to_string();
            if u.name == addr {
                addr
            } else {
                format!("{} ({addr})", u.name)
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    tracing::info!("upstreams: {upstreams}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_log_that_cannot_be_opened_is_named_by_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        let cfg = dir.path().join("s.yaml");
        let slots = SlotRegistry::default();
        let config = crate::config::parse(
            // port 0: the listeners are bound before the log is opened, on any free port
            "listen: [\"127.0.0.1:0\"]\nadmin: { listen: \"127.0.0.1:0\" }\nupstreams: [\"127.0.0.1:1\"]\ndecision_log: { path: logs/d.log }\n",
            &cfg,
            &slots,
        )
        .unwrap();
        // the folder goes away between the check and the start
        std::fs::remove_dir(&logs).unwrap();
        let Err(e) = build(config, slots, ListCache::default(), false) else {
            panic!("started without its decision log");
        };
        assert_eq!(
            e,
            format!(
                "cannot open the decision log {}: No such file or directory (os error 2)",
                logs.join("d.log").display()
            )
        );
    }
}
