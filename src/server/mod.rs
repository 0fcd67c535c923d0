//! Building the Pingora server from a validated config: listeners (bound first, see
//! [`listeners`]), the proxy service, the admin service and the housekeeping service. Logic
//! lives elsewhere; this only wires.

pub mod accept_errors;
mod fds;
pub mod listeners;

use std::sync::Arc;

use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::ready::Listeners;
use crate::admin::Admin;
use crate::config::{Config, ListCache};
use crate::engine::SlotRegistry;
use crate::metrics::access_log::AccessLog;
use crate::metrics::decision_log::{DecisionLog, Limits};
use crate::proxy::accept::AcceptGate;
use crate::proxy::{Sekisho, State};
use crate::reload::Housekeeping;
use listeners::{Bound, Prebound};

/// The server for `config`, ready to `run_forever`, and the state it shares; an error when
/// something the config asks for cannot be set up: a listen or admin address that cannot be
/// bound (checked first, before anything starts), the decision or access log file.
pub fn build(
    config: Config,
    slots: SlotRegistry,
    cache: ListCache,
) -> Result<(Server, Arc<State>), String> {
    let Sockets {
        proxy: sockets,
        admin: admin_socket,
        listeners,
    } = bind_all(&config).map_err(|e| e.to_string())?;
    log_upstreams(&config);
    log_geo(&config);
    let conf = ServerConf {
        threads: config.threads,
        work_stealing: config.work_stealing,
        upstream_keepalive_pool_size: config.upstream_options.pool_size,
        grace_period_seconds: Some(config.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.graceful_shutdown_timeout.as_secs()),
        ..ServerConf::default()
    };
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
    let mut server = Server::new_with_opt_and_conf(Some(Opt::default()), conf);
    server.bootstrap();
    let mut proxy = Service::new("sekisho".to_string(), Sekisho::new(state.clone()));
    proxy.set_connection_filter(Arc::new(AcceptGate::new(state.clone())));
    server.add_service(Prebound::new(proxy, sockets, listeners.clone()));
    if let Some(socket) = admin_socket {
        let app = Admin::new(state.clone(), reload_tx, listeners.clone());
        let mut admin = Service::new("admin".to_string(), app);
        admin.threads = Some(1);
        server.add_service(Prebound::new(admin, vec![socket], listeners));
    }
    server.add_service(background_service(
        "housekeeping",
        Housekeeping::new(state.clone(), reload_rx),
    ));
    Ok((server, state))
}

/// The listening sockets of the proxy and of the admin listener, and the readiness flags of all.
struct Sockets {
    proxy: Vec<Bound>,
    admin: Option<Bound>,
    listeners: Arc<Listeners>,
}

/// Binds every `listen` address, then the admin address, logging a line for each; the first
/// that fails is the error, and whatever was bound before it is closed again.
fn bind_all(config: &Config) -> Result<Sockets, listeners::BindError> {
    let mut named: Vec<(String, std::net::SocketAddr)> = config
        .listen
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("listen[{i}]"), *a))
        .collect();
    let mut sockets = Vec::with_capacity(named.len());
    for (i, (field, addr)) in named.iter().enumerate() {
        sockets.push(listeners::bind(field, *addr, i)?);
        tracing::info!(%addr, field = %field, "listening");
    }
    let admin = match config.admin_listen {
        Some(addr) => {
            let socket = listeners::bind("admin.listen", addr, named.len())?;
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
        let Err(e) = build(config, slots, ListCache::default()) else {
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
