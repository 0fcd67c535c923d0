//! Building the Pingora server from a validated config: listeners, the proxy service and the
//! housekeeping service. Logic lives elsewhere; this only wires.

use std::sync::Arc;

use pingora::listeners::TcpSocketOptions;
use pingora::proxy::http_proxy_service;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;

use crate::config::Config;
use crate::engine::SlotRegistry;
use crate::proxy::{Sekisho, State};
use crate::reload::Housekeeping;

/// The server for `config`, ready to `run_forever`, and the state it shares.
pub fn build(config: Config, slots: SlotRegistry) -> (Server, Arc<State>) {
    let conf = ServerConf {
        threads: config.threads,
        upstream_keepalive_pool_size: config.upstream_options.pool_size,
        grace_period_seconds: Some(config.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.graceful_shutdown_timeout.as_secs()),
        ..ServerConf::default()
    };
    let listen = config.listen.clone();
    let state = Arc::new(State::new(config, slots));
    let mut server = Server::new_with_opt_and_conf(Some(Opt::default()), conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Sekisho::new(state.clone()));
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
    server.add_service(background_service(
        "housekeeping",
        Housekeeping::new(state.clone()),
    ));
    (server, state)
}
