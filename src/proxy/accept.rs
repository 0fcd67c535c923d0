//! The accept gate: each new client connection, before a byte of it is read, against
//! `connections.per_client` (new connections per second of one client, a token bucket). A
//! refused connection is closed at once by Pingora (no parsing, nothing allocated for it) and
//! counted in `sekisho_connections_refused_total{reason="client_rate"}`; in `mode: count` it is
//! counted and let in. Trusted proxies are exempt: their clients are judged by the rules.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::listeners::ConnectionFilter;

use crate::engine::Mode;
use crate::iplist::ip_key;
use crate::limiter::{BucketKey, Clock, Limiter};
use crate::proxy::State;

/// How many clients' connection buckets are tracked; the least recently seen go first.
const TRACKED_CLIENTS: usize = 262_144;

/// The connection filter Pingora asks for every accepted connection.
pub struct AcceptGate {
    state: Arc<State>,
    buckets: Limiter,
}

impl std::fmt::Debug for AcceptGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcceptGate")
            .field("tracked", &self.buckets.len())
            .finish()
    }
}

impl AcceptGate {
    /// A gate over the live config of `state`.
    pub fn new(state: Arc<State>) -> Self {
        Self {
            state,
            buckets: Limiter::new(TRACKED_CLIENTS),
        }
    }

    /// Whether a connection from `peer` is let in now; counts a refusal.
    pub fn admit(&self, peer: SocketAddr) -> bool {
        let snap = self.state.snapshot.load();
        let c = &snap.config.connections;
        let Some(quota) = &c.per_client_rate else {
            return true;
        };
        let ip = peer.ip().to_canonical();
        let client_ip = &snap.config.client_ip;
        if client_ip.trusted_proxies.contains(ip) {
            return true;
        }
        let key = BucketKey::new(0, ip_key(ip, client_ip.ipv6_prefix));
        if self
            .buckets
            .acquire(key, quota, self.state.clock.now())
            .is_ok()
        {
            return true;
        }
        self.state.metrics.refused_client_rate.inc();
        c.mode == Mode::Count
    }
}

#[async_trait]
impl ConnectionFilter for AcceptGate {
    async fn should_accept(&self, addr: Option<&SocketAddr>) -> bool {
        // a peer without an address (a Unix socket) is not a network client
        addr.is_none_or(|a| self.admit(*a))
    }
}
