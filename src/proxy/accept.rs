//! The accept gate: each new client connection, before a byte of it is read, against
//! `connections:` (`per_client.rate`, a token bucket of new connections; `per_client.max_open`
//! and `max_open`, counted in [`crate::conn::Table`]). A refused connection is closed at once by
//! Pingora (no parsing, nothing allocated for it), counted in
//! `sekisho_connections_refused_total{reason}` and reported like a cut connection
//! ([`report_cut`]); in `mode: count` it is counted and let in. Trusted proxies are exempt from
//! the per-client limits: their clients are judged by the rules.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use pingora::listeners::ConnectionFilter;

use crate::conn::{Caps, Refusal};
use crate::defense::bans::Source;
use crate::defense::Trigger;
use crate::engine::Mode;
use crate::iplist::ip_key;
use crate::limiter::{BucketKey, Clock, Limiter};
use crate::metrics::decision_log::{now_rfc3339, Entry};
use crate::metrics::top::ip_bytes;
use crate::proxy::{unix_now, Snapshot, State};

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

    /// Whether a connection from `peer` is let in now; counts and reports a refusal. A
    /// connection let in is counted open until the guard its first request claims drops.
    pub fn admit(&self, peer: SocketAddr) -> bool {
        let snap = self.state.snapshot.load();
        let c = &snap.config.connections;
        let enforce = c.mode == Mode::Enforce;
        let ip = peer.ip().to_canonical();
        let client_ip = &snap.config.client_ip;
        let exempt = client_ip.trusted_proxies.contains(ip);
        let key = ip_key(ip, client_ip.ipv6_prefix);
        if !exempt && banned_for_connections(&self.state, &snap, ip) {
            self.state.metrics.refused(Refusal::Banned).inc();
            report(&self.state, &snap, ip, Refusal::Banned.field(), false);
            if enforce {
                return false;
            }
        }
        if let Some(quota) = c.per_client_rate.as_ref().filter(|_| !exempt) {
            let now = self.state.clock.now();
            if self
                .buckets
                .acquire(BucketKey::new(0, key), quota, now)
                .is_err()
            {
                report_refusal(&self.state, &snap, ip, Refusal::ClientRate);
                if enforce {
                    return false;
                }
            }
        }
        let caps = Caps {
            max_open: self.state.connections.max_open(c.max_open),
            client_max_open: c.per_client_max_open.filter(|_| !exempt),
        };
        let admission = self.state.connections.admit(peer, key, caps, enforce);
        if let Some(why) = admission.refusal {
            report_refusal(&self.state, &snap, ip, why);
        }
        if admission.shed_idle {
            self.state.metrics.closed_max_open.inc();
        }
        admission.admitted
    }
}

/// Whether `ip` is under an enforced ban from an autoban policy of `kind: connections`: its
/// connections are then refused at accept (a slowloris source banned for it is not let in to
/// hold a connection until `header_timeout`; other bans answer its requests with 403).
fn banned_for_connections(state: &State, snap: &Snapshot, ip: IpAddr) -> bool {
    let policies = &snap.config.defense.autoban;
    if !policies.iter().any(|p| p.trigger == Trigger::Connections) {
        return false;
    }
    let Some(ban) = state.defense.bans.of_client(ip) else {
        return false;
    };
    ban.until > state.clock.now()
        && ban.mode == Mode::Enforce
        && matches!(&ban.source, Source::Policy(name)
            if policies.iter().any(|p| p.trigger == Trigger::Connections && *p.name == **name))
}

/// Counts a connection refused at accept, then reports it as [`report_cut`] does.
fn report_refusal(state: &State, snap: &Snapshot, ip: IpAddr, why: Refusal) {
    state.metrics.refused(why).inc();
    report_cut(state, snap, ip, why.field());
}

/// Reports a client connection refused or cut by the `connections:` limit `field` (the caller
/// counts it in its metric): in `/admin/top?by=ip`, in the decision log (within its per-second
/// budget), and to the `kind: connections` autoban policies. An allow-listed client or a
/// trusted proxy is not fed to autoban.
pub(crate) fn report_cut(state: &State, snap: &Snapshot, ip: IpAddr, field: &str) {
    report(state, snap, ip, field, true);
}

/// [`report_cut`]; `autoban` false for a client already banned (not counted again).
fn report(state: &State, snap: &Snapshot, ip: IpAddr, field: &str, autoban: bool) {
    let config = &snap.config;
    let v6 = config.client_ip.ipv6_prefix;
    let now = state.clock.now();
    let (key, len) = ip_bytes(ip, v6);
    state
        .top
        .record_connection(now / 60_000_000_000, &key[..len]);
    let mode = config.connections.mode.as_str();
    if let Some(log) = state.decision_log.as_ref().filter(|l| l.admit()) {
        log.log(&Entry {
            timestamp: now_rfc3339(),
            client_ip: ip,
            country: "??",
            method: "",
            host: "",
            path: "",
            user_agent: "",
            rule: field,
            action: "close",
            mode,
            status: 0,
            upstream_status: None,
            request_id: "-",
            protocol: "",
            tls: false,
            ja4: "",
        });
    }
    let policies = &config.defense.autoban;
    if !autoban
        || !policies.iter().any(|p| p.trigger == Trigger::Connections)
        || config.policy.allow.contains(ip)
        || config.client_ip.trusted_proxies.contains(ip)
    {
        return;
    }
    for p in policies
        .iter()
        .filter(|p| p.trigger == Trigger::Connections)
    {
        for ban in state.defense.observe(p, ip, v6, b"", now, unix_now()) {
            state
                .metrics
                .bans
                .with_label_values(&[p.name.as_str(), ban.mode.as_str()])
                .inc();
        }
    }
}

#[async_trait]
impl ConnectionFilter for AcceptGate {
    async fn should_accept(&self, addr: Option<&SocketAddr>) -> bool {
        // a peer without an address (a Unix socket) is not a network client
        addr.is_none_or(|a| self.admit(*a))
    }
}
