//! Building the Pingora server from a validated config: listeners, the proxy service and the
//! housekeeping service. Logic lives elsewhere; this only wires.

use std::sync::Arc;

use pingora::listeners::TcpSocketOptions;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::Admin;
use crate::config::{Config, ListCache};
use crate::engine::SlotRegistry;
use crate::metrics::access_log::AccessLog;
use crate::metrics::decision_log::{DecisionLog, Limits};
use crate::proxy::{Sekisho, State};
use crate::reload::Housekeeping;

/// The server for `config`, ready to `run_forever`, and the state it shares; an error when
/// something the config asks for cannot be set up (the decision or access log file).
pub fn build(
    config: Config,
    slots: SlotRegistry,
    cache: ListCache,
) -> Result<(Server, Arc<State>), String> {
    let conf = ServerConf {
        threads: config.threads,
        work_stealing: config.work_stealing,
        upstream_keepalive_pool_size: config.upstream_options.pool_size,
        grace_period_seconds: Some(config.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.graceful_shutdown_timeout.as_secs()),
        ..ServerConf::default()
    };
    let listen = config.listen.clone();
    let admin_listen = config.admin_listen;
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
    let state = Arc::new(state);
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(16);
    let mut server = Server::new_with_opt_and_conf(Some(Opt::default()), conf);
    server.bootstrap();
    let mut proxy = Service::new("sekisho".to_string(), Sekisho::new(state.clone()));
    for addr in listen {
        if addr.is_ipv6() {
            // v6-only, so that "0.0.0.0:P" and "[::]:P" can both be listed.
            let mut opts = TcpSocketOptions::default();
            opts.ipv6_only = Some(true);
            proxy.add_tcp_with_settings(&addr.to_string(), opts);
        } else {
            proxy.add_tcp(&addr.to_string());
        }
    }
    server.add_service(proxy);
    if let Some(addr) = admin_listen {
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "the admin listener is not on loopback: anyone who reaches it can reload the config");
        }
        let mut admin = Service::new("admin".to_string(), Admin::new(state.clone(), reload_tx));
        admin.threads = Some(1);
        admin.add_tcp(&addr.to_string());
        server.add_service(admin);
    }
    server.add_service(background_service(
        "housekeeping",
        Housekeeping::new(state.clone(), reload_rx),
    ));
    Ok((server, state))
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
            "upstreams: [\"127.0.0.1:1\"]\ndecision_log: { path: logs/d.log }\n",
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
