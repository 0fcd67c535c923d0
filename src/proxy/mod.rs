//! Pingora glue: read a request with Pingora's HTTP/1 server, turn it into [`Facts`], ask the
//! engine, then write the refusal or forward it upstream (`forward`). No rules live here.
//!
//! The snapshot (config, compiled policy, upstream pool) sits behind one `ArcSwap` and is loaded
//! once per request; the limiter lives beside it so that a reload keeps the buckets.

pub mod accept;
mod forward;
mod forwarded;
pub mod framing;
mod identity;
mod local;
mod request_id;
pub mod tls;
mod upstream;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use tokio::sync::Notify;

use crate::config::{Config, ListCache};
use crate::defense::attack::Example;
use crate::defense::store::Clocks;
use crate::defense::Defense;
use crate::engine::{normalize_path, Country, Decision, Facts, Live, RuleRef, SlotRegistry};
use crate::iplist::ip_key;
use crate::limiter::{Clock, Limiter, MonotonicClock, Nanos};
use crate::metrics::access_log::{AccessLog, Record};
use crate::metrics::decision_log::{now_rfc3339, DecisionLog, Entry};
use crate::metrics::top::{ip_bytes, TopTalkers};
use crate::metrics::{Metrics, PolicySeries};
pub use forward::{upstream_request, IdleConns};
pub use forwarded::Forwarding;
pub use identity::{client_ip, country_of, resolve, Client};
use parking_lot::Mutex;
use prometheus::IntCounter;
pub use upstream::UpstreamPool;

/// One loaded config, ready for requests. Immutable except for upstream health.
#[derive(Debug)]
pub struct Snapshot {
    /// The validated config with its compiled policy.
    pub config: Config,
    /// The upstream peers and their passive health.
    pub upstreams: UpstreamPool,
    /// 1 for the config loaded at start, +1 for each successful reload.
    pub generation: u64,
    /// The metric series this snapshot's decisions increment.
    pub series: PolicySeries,
    /// The refusal header of each rule (by index), then of the deny list and bans: built once
    /// here, cloned per refusal.
    refusals: Vec<Option<ResponseHeader>>,
    /// What the origin is told about the client.
    pub forwarding: Forwarding,
}

impl Snapshot {
    /// Wraps a validated config, resolving its metric series in `metrics`.
    pub fn new(config: Config, generation: u64, metrics: &Metrics) -> Self {
        let upstreams = UpstreamPool::new(&config.upstreams, config.upstream_options.down_for);
        let series = metrics.series_for(&config.policy, &config.metric_countries);
        metrics.generation.set(generation as i64);
        metrics.init_autoban_series(&config.defense.autoban);
        metrics
            .list_entries
            .with_label_values(&["allow"])
            .set(config.policy.allow.entries() as i64);
        metrics
            .list_entries
            .with_label_values(&["deny"])
            .set(config.policy.deny.entries() as i64);
        metrics.geo_build.set(
            config
                .geo
                .database
                .as_ref()
                .map_or(0, |db| db.build_epoch() as i64),
        );
        metrics.capacity_keys.set(config.max_tracked_keys as i64);
        // a certificate no longer served loses its series
        metrics.tls_certificate_expiry.reset();
        for (addr, tls) in config.listen.iter().zip(&config.tls) {
            for c in tls.iter().flat_map(|t| &t.certificates) {
                let name = c.names.first().map_or("-", String::as_str);
                metrics
                    .tls_certificate_expiry
                    .with_label_values(&[&addr.to_string(), name])
                    .set(c.not_after_unix);
            }
        }
        let policy = &config.policy;
        let refusals = policy
            .rules
            .iter()
            .map(|r| &r.response)
            .chain([&policy.deny_response])
            .map(|r| local::local_header(r.status, r.body.len()).ok().map(|h| *h))
            .collect();
        Self {
            forwarding: Forwarding::new(&config),
            config,
            upstreams,
            generation,
            series,
            refusals,
        }
    }

    /// The series of what decided.
    pub fn series_of(&self, r: RuleRef) -> Option<&IntCounter> {
        match r {
            RuleRef::Rule(i) => self.series.rules.get(usize::from(i)),
            RuleRef::DenyList => Some(&self.series.deny_list),
            RuleRef::AllowList => Some(&self.series.allow_listed),
            RuleRef::Ban => Some(&self.series.ban),
        }
    }
}

/// Everything the proxy shares across requests and reloads.
#[derive(Debug)]
pub struct State {
    /// The current snapshot.
    pub snapshot: ArcSwap<Snapshot>,
    /// Token buckets, outliving snapshots.
    pub limiter: Limiter,
    /// Idle keep-alive connections to upstream peers, outliving snapshots.
    pub conns: IdleConns,
    /// Limiter slots by rule identity, outliving snapshots.
    pub slots: SlotRegistry,
    /// The clock decisions are made with.
    pub clock: MonotonicClock,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// The decision log, when configured.
    pub decision_log: Option<DecisionLog>,
    /// The access log, when configured.
    pub access_log: Option<AccessLog>,
    /// Allowed requests seen, for sampling them into the decision log.
    allowed_seen: AtomicU64,
    /// Heavy hitters of the last minutes, for `GET /admin/top`.
    pub top: TopTalkers,
    /// Parsed list files kept for the next reload.
    pub list_cache: Mutex<ListCache>,
    /// Reload outcomes.
    pub reloads: ReloadStats,
    /// Set by a SIGHUP that arrived before the reload task listened.
    pub early_hup: Mutex<Option<Arc<std::sync::atomic::AtomicBool>>>,
    /// Bans, autoban counts and the under-attack switch.
    pub defense: Defense,
    /// When this process started, in seconds since the Unix epoch.
    pub started_unix: u64,
    /// Open client connections, in all and per client (`connections.max_open`).
    pub connections: Arc<crate::conn::Table>,
    /// Requests being served: a graceful stop waits for none to be left.
    pub in_flight: InFlight,
    /// Limits, bans and the switch shared with the fleet (`cluster:`), when configured.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// How many requests are between their head being read (on a new connection: its accept) and
/// their answer being finished. One shared counter, touched twice a request; a graceful stop
/// polls it.
#[derive(Debug, Default)]
pub struct InFlight(std::sync::atomic::AtomicUsize);

impl InFlight {
    /// Counts a request in until the guard is dropped.
    pub fn enter(&self) -> InFlightGuard<'_> {
        self.0.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self)
    }

    /// The requests in flight now.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// One request in flight (see [`InFlight::enter`]).
#[derive(Debug)]
pub struct InFlightGuard<'a>(&'a InFlight);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the reload counters (`sekisho_reloads_total`, the last-success gauge) do not hold.
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// Milliseconds the last successful reload took (parse + build + swap).
    pub last_duration_ms: AtomicU64,
    /// The errors of the last reload, if it failed.
    pub last_error: Mutex<Option<String>>,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl State {
    /// State for a first config; its slots must come from `slots` and its lists from `cache`.
    pub fn new(config: Config, slots: SlotRegistry, mut cache: ListCache) -> Self {
        // every load through this cache from now on is a reload
        cache.set_running();
        let limiter = Limiter::new(config.max_tracked_keys);
        let conns = IdleConns::new(config.upstream_options.pool_size, config.threads);
        slots.commit(&config.policy);
        let metrics = Metrics::new();
        let started_unix = unix_now();
        metrics.last_reload_success.set(started_unix as i64);
        metrics.start_time.set(started_unix as i64);
        let clock = MonotonicClock::new();
        let defense = Defense::start(
            &config.defense,
            config.client_ip.ipv6_prefix,
            Clocks {
                mono: clock.now(),
                unix: unix_now(),
            },
        );
        metrics.under_attack.set(i64::from(defense.attack.is_on()));
        let cluster = config.cluster.clone().map(|c| {
            let cluster = crate::cluster::Cluster::new(c);
            cluster.set_policy(&config.policy);
            Arc::new(cluster)
        });
        Self {
            cluster,
            defense,
            snapshot: ArcSwap::from_pointee(Snapshot::new(config, 1, &metrics)),
            limiter,
            conns,
            slots,
            clock,
            metrics,
            decision_log: None,
            access_log: None,
            allowed_seen: AtomicU64::new(0),
            top: TopTalkers::new(),
            list_cache: Mutex::new(cache),
            reloads: ReloadStats::default(),
            early_hup: Mutex::new(None),
            started_unix,
            connections: Arc::new(crate::conn::Table::new()),
            in_flight: InFlight::default(),
        }
    }
}

/// The proxy: a Pingora HTTP application that judges each request and forwards what passes.
pub struct Sekisho {
    state: Arc<State>,
    /// Pingora's per-connection options: `connections.max_requests_per_connection`.
    options: HttpServerOptions,
    /// Set when the service stops listening; idle keep-alive clients are then let go.
    stopping: AtomicBool,
    stop: Notify,
}

impl Sekisho {
    /// A proxy over shared state.
    pub fn new(state: Arc<State>) -> Self {
        let mut options = HttpServerOptions::default();
        // Pingora counts reuses: the first request is not one
        options.keepalive_request_limit = Some(
            state
                .snapshot
                .load()
                .config
                .connections
                .max_requests_per_connection
                .saturating_sub(1),
        );
        // an HTTP/2 connection with no stream open is closed like an idle HTTP/1 one (Pingora
        // keeps it forever otherwise)
        options.h2_idle_timeout = Some(state.snapshot.load().config.connections.idle_timeout);
        Self {
            state,
            options,
            stopping: AtomicBool::new(false),
            stop: Notify::new(),
        }
    }
}

/// Per-request context.
pub struct Ctx {
    snapshot: Arc<Snapshot>,
    /// When the request was judged, on the decision clock.
    now: Nanos,
    /// Whether the request went upstream (its upstream time counts from `now`).
    went_upstream: bool,
    /// Whether the upstream exchange failed.
    upstream_failed: bool,
    /// Who the client is, resolved once from the peer and its forwarding header.
    client: Client,
    /// The client's country, when a rule, a metric or the country header needs it.
    country: Country,
    /// What was decided, about whom (for the decision log).
    decided: Option<(Decision, IpAddr, Country)>,
    /// The request id, sent upstream in `X-Request-Id`.
    request_id: http::HeaderValue,
    /// How long the upstream exchange took (measured only with an access log).
    upstream_nanos: Option<Nanos>,
}

#[async_trait]
impl HttpServerApp for Sekisho {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        _shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        // RFC 9112 §9.3.2: requests pipelined on a connection are each read, judged and
        // answered in order (Pingora keeps the bytes read past this request for the next)
        session.set_pipelining_enabled(true);
        let (limits, v6) = {
            let snap = self.state.snapshot.load();
            (
                snap.config.connections.clone(),
                snap.config.client_ip.ipv6_prefix,
            )
        };
        // The connection's place in the open count, carried from the previous request on it
        // (this one then follows a kept-alive wait), held by its TLS front (a TLS connection,
        // every HTTP/2 stream on it included), or claimed from the accept gate's reservation;
        // dropped with the connection, whichever way it ends.
        let (place, kept_alive) = match session
            .take_connection_user_context()
            .and_then(|c| c.downcast::<Place>().ok())
        {
            Some(place) => (*place, true),
            None => match session
                .digest()
                .and_then(|d| d.ssl_digest.clone())
                .filter(|d| d.extension.get::<tls::TlsConn>().is_some())
            {
                Some(digest) => (Place::Tls(digest), false),
                None => {
                    let peer = session.client_addr().and_then(|a| a.as_inet()).copied();
                    let key = ip_key(peer_of(&session), v6);
                    (Place::Own(self.state.connections.claim(peer, key)), false)
                }
            },
        };
        if session.get_keepalive().is_some() {
            // Pingora's own wait for the next request, and the per-read limit while reading it
            session.set_keepalive(Some(limits.idle_timeout.as_secs().max(1)));
        }
        // The whole head, not each read: a head trickled a byte at a time is cut at the limit.
        let head_within = if kept_alive {
            limits.idle_timeout + limits.header_timeout
        } else {
            limits.header_timeout
        };
        let started = std::time::Instant::now();
        // a kept-alive connection waiting for its next request is idle: when the process is
        // at connections.max_open, the longest idle one closes to make room for a new one
        let idle = place
            .open()
            .filter(|_| kept_alive)
            .map(crate::conn::Open::idle);
        let shed = async {
            match &idle {
                Some(idle) => idle.shed().await,
                None => std::future::pending().await,
            }
        };
        // the stop lets go of kept-alive connections waiting for a next request; a new
        // connection was accepted for a request, which is read (within header_timeout) and
        // answered with `Connection: close`, or its client would see it closed unanswered
        // a new connection is in flight from its accept: a graceful stop waits for its request
        let accepted = (!kept_alive).then(|| self.state.in_flight.enter());
        let stop = async {
            if kept_alive {
                self.stop.notified().await
            } else {
                std::future::pending().await
            }
        };
        let read = tokio::select! {
            biased; // a request already buffered is served before the stop is noticed
            // Pingora's fast timer (a shared wheel, 10 ms ticks): cheaper than a tokio timer
            read = pingora::prelude::timeout(head_within, session.read_request()) => match read {
                Ok(read) => read,
                Err(_) => {
                    self.state.metrics.closed_header_timeout.inc();
                    let snap = self.state.snapshot.load();
                    accept::report_cut(&self.state, &snap, peer_of(&session).to_canonical(), "connections.header_timeout");
                    return None;
                }
            },
            _ = stop => return None,
            _ = shed => return None,
        };
        drop(idle);
        if matches!(read, Ok(false)) && kept_alive && started.elapsed() >= limits.idle_timeout {
            // Pingora let the kept-alive connection go after idle_timeout without a byte
            self.state.metrics.closed_idle.inc();
        }
        match read {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                if e.etype == ErrorType::InvalidHTTPHeader {
                    self.state
                        .metrics
                        .malformed_requests
                        .with_label_values(&[crate::metrics::UNPARSABLE])
                        .inc();
                    session.set_keepalive(None);
                    let _ = local::answer(&mut session, 400).await;
                }
                session.shutdown().await;
                return None;
            }
        }
        // until the answer is finished (or the connection dropped): a graceful stop waits
        let _in_flight = accepted.unwrap_or_else(|| self.state.in_flight.enter());
        if self.stopping.load(Ordering::Acquire) {
            session.set_keepalive(None);
        }
        // only when Transfer-Encoding is there (rare) is the raw head looked at
        let stripped_length = session
            .req_header()
            .headers
            .contains_key(http::header::TRANSFER_ENCODING)
            && session
                .as_http1()
                .is_some_and(|h1| framing::names_content_length(&h1.get_headers_raw_bytes()));
        let head = session.req_header();
        if let Some(why) = framing::check(head.version, &head.headers, stripped_length) {
            // before any rule and before the origin: a length two parsers could read
            // differently is how requests are smuggled past a proxy
            self.state
                .metrics
                .malformed_requests
                .with_label_values(&[why.as_str()])
                .inc();
            session.set_keepalive(None);
            let _ = local::answer(&mut session, 400).await;
            session.shutdown().await;
            return None;
        }
        let snapshot = self.state.snapshot.load_full();
        let client = resolve(
            peer_of(&session),
            &session.req_header().headers,
            &snapshot.config.client_ip,
        );
        let mut ctx = Ctx {
            snapshot,
            client,
            country: Country::UNKNOWN,
            now: 0,
            went_upstream: false,
            upstream_failed: false,
            decided: None,
            request_id: http::HeaderValue::from_static("-"),
            upstream_nanos: None,
        };
        let done = match self.judge(&session, &mut ctx).await {
            Some((rule, retry_after)) => self.refuse(&mut session, &ctx, rule, retry_after).await,
            None if session.req_header().method == http::Method::CONNECT => {
                // sekisho fronts an origin; it is not a forward proxy
                session.set_keepalive(None);
                local::answer(&mut session, 405).await
            }
            None => self.forward(&mut session, &mut ctx).await,
        };
        self.logging(&session, &ctx);
        done.ok()?;
        let mut settings = HttpPersistentSettings::for_session(&session);
        settings.set_user_context(Box::new(place));
        match session.finish().await {
            Ok(Some(stream)) => Some(ReusedHttpStream::from_reusable_stream(stream, settings)),
            _ => None,
        }
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.options)
    }

    /// Pingora's bounded defaults (64 KiB header lists), with the configured stream cap.
    fn h2_options(&self) -> Option<pingora::protocols::http::v2::server::H2Options> {
        let mut o = pingora::protocols::http::v2::server::default_h2_options();
        let streams = self
            .state
            .snapshot
            .load()
            .config
            .connections
            .http2_max_concurrent_streams;
        o.max_concurrent_streams(streams);
        Some(o)
    }

    async fn http_cleanup(&self) {
        self.stopping.store(true, Ordering::Release);
        // wake the keep-alive connections that wait for a next request
        self.stop.notify_waiters();
    }
}

/// Where a connection's place in the open count is held.
enum Place {
    /// Here: a plaintext connection, carried from request to request.
    Own(crate::conn::Open),
    /// In the TLS digest its front made ([`tls::TlsConn`]).
    Tls(Arc<pingora::protocols::tls::SslDigest>),
}

impl Place {
    fn open(&self) -> Option<&crate::conn::Open> {
        match self {
            Place::Own(open) => Some(open),
            Place::Tls(d) => d.extension.get::<tls::TlsConn>().map(|t| &t.open),
        }
    }
}

impl Sekisho {
    /// The final verdict of a request some exact cluster rule admitted here: the store is asked
    /// (one round trip within `cluster.timeout`). Without an answer in time the request is
    /// admitted on this instance's view, as an approximate rule's would be, and its tokens are
    /// counted in the next sync.
    async fn exact(
        &self,
        cluster: &crate::cluster::Cluster,
        pending: crate::engine::Pending,
        now: crate::limiter::Nanos,
    ) -> crate::engine::Verdict {
        let limiter = &self.state.limiter;
        let metrics = &self.state.metrics;
        let answers = match cluster.check_exact(&pending.checks, limiter, now).await {
            Some(a) => {
                for r in &a {
                    let result = if r.is_ok() { "admitted" } else { "refused" };
                    metrics.cluster_exact.with_label_values(&[result]).inc();
                }
                a
            }
            None => {
                metrics.cluster_errors.with_label_values(&["exact"]).inc();
                for c in &pending.checks {
                    metrics.cluster_exact.with_label_values(&["fallback"]).inc();
                    crate::engine::Shared::taken(cluster, c.key);
                }
                vec![Ok(()); pending.checks.len()]
            }
        };
        pending.resolve(&answers, limiter, Some(cluster))
    }

    /// Builds the request's facts, asks the policy, and counts what it decided. The refusal to
    /// write, if any: the rule and the `Retry-After` seconds of a limit.
    async fn judge(
        &self,
        session: &ServerSession,
        ctx: &mut Ctx,
    ) -> Option<(RuleRef, Option<u32>)> {
        let snap = &ctx.snapshot;
        let policy = &snap.config.policy;
        let req = session.req_header();
        let (peer, ip) = (ctx.client.peer, ctx.client.ip);
        ctx.request_id = request_id::request_id(
            peer.to_canonical(),
            &req.headers,
            &snap.config.client_ip.trusted_proxies,
        );
        let path = normalize_path(req.uri.path());
        let country = if policy.uses_country
            || !snap.config.metric_countries.is_empty()
            || snap.forwarding.sends_country()
        {
            let c = &snap.config;
            country_of(&c.geo, &c.client_ip, peer, ip, &req.headers)
        } else {
            Country::UNKNOWN
        };
        ctx.country = country;
        let ja4 = tls_conn(session)
            .and_then(|t| t.ja4.as_deref())
            .unwrap_or("");
        let facts = facts_of(req, &path, ip, country, policy.uses_host, ja4);
        let user_agent = facts.user_agent;
        let now = self.state.clock.now();
        ctx.now = now;
        let defense = &self.state.defense;
        let cluster = self.state.cluster.as_deref();
        let live = Live {
            limiter: &self.state.limiter,
            bans: Some(&defense.bans),
            under_attack: defense.attack.is_on(),
            shared: cluster.map(|c| c as &dyn crate::engine::Shared),
        };
        let mut verdict = policy.judge(&facts, &live, now);
        if let (Some(pending), Some(c)) = (verdict.pending.take(), cluster) {
            verdict = self.exact(c, *pending, now).await;
        }
        let decision = verdict.decision;
        ctx.decided = Some((decision, ip, country));
        if let Some(RuleRef::Rule(i)) = verdict.preview {
            let i = usize::from(i);
            if let Some(c) = snap.series.would_refuse.get(i - policy.profile_from.min(i)) {
                c.inc();
            }
            defense.preview.example(|| Example {
                at_unix: unix_now(),
                ip,
                path: facts.path.to_string(),
                rule: policy
                    .rules
                    .get(i)
                    .map(|r| r.name.clone())
                    .unwrap_or_default(),
            });
        }
        snap.series.count_country(country, !decision.passes());
        let (ip_key, ip_len) = ip_bytes(ip, policy.ipv6_prefix);
        self.state.top.record(
            now / 60_000_000_000,
            [
                &ip_key[..ip_len],
                &country.0,
                user_agent,
                req.uri.path().as_bytes(),
                facts.ja4.as_bytes(),
            ],
            !decision.passes(),
        );
        let refusal = match decision {
            Decision::Allow => {
                snap.series.allowed.inc();
                return None;
            }
            Decision::AllowListed => {
                snap.series.allow_listed.inc();
                return None;
            }
            Decision::Count { rule } => {
                let series = match rule {
                    RuleRef::Ban => Some(&snap.series.ban_count),
                    r => snap.series_of(r),
                };
                if let Some(s) = series {
                    s.inc();
                }
                tracing::debug!(%ip, rule = policy.name_of(rule), path = facts.path, "count: would have refused");
                return None;
            }
            Decision::Deny { rule } => (rule, None),
            Decision::Limit { rule, retry_after } => (rule, Some(retry_after)),
        };
        let rule = refusal.0;
        if let Some(s) = snap.series_of(rule) {
            s.inc();
        }
        let local = match rule {
            RuleRef::Rule(i) => snap.series.local.get(usize::from(i)),
            RuleRef::Ban => Some(&snap.series.ban_local),
            _ => Some(&snap.series.deny_list_local),
        };
        if let Some(l) = local {
            l.inc();
        }
        Some(refusal)
    }

    /// Answers a refused request with the rule's response; upstream never sees it.
    async fn refuse(
        &self,
        session: &mut ServerSession,
        ctx: &Ctx,
        rule: RuleRef,
        retry_after: Option<u32>,
    ) -> Result<()> {
        let response = ctx.snapshot.config.policy.response_of(rule);
        let req = session.req_header();
        let is_head = req.method == http::Method::HEAD;
        // A refused request's body is not worth reading: keep the connection only when there
        // is none to drain.
        let has_body = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
            || req.headers.contains_key(http::header::TRANSFER_ENCODING);
        let prebuilt = match rule {
            RuleRef::Rule(i) => ctx.snapshot.refusals.get(usize::from(i)),
            _ => ctx.snapshot.refusals.last(),
        };
        let mut header = match prebuilt.and_then(Option::as_ref) {
            Some(h) => Box::new(h.clone()),
            None => local::local_header(response.status, response.body.len())?,
        };
        if let (true, Some(secs)) = (response.retry_after, retry_after) {
            header.insert_header(http::header::RETRY_AFTER, secs)?;
        }
        if has_body {
            session.set_keepalive(None);
        }
        let body_follows = !is_head && !response.body.is_empty();
        session.write_response_header(header).await?;
        if body_follows {
            session
                .write_response_body(response.body.clone(), true)
                .await?;
        }
        Ok(())
    }

    /// After the response: the access and decision logs, autoban, upstream metrics.
    fn logging(&self, session: &ServerSession, ctx: &Ctx) {
        self.log_access(session, ctx);
        self.log_decision(session, ctx);
        self.observe(session, ctx);
        if !ctx.went_upstream {
            return; // answered by sekisho itself, counted when it was written
        }
        let m = &self.state.metrics;
        let took = self.state.clock.now().saturating_sub(ctx.now);
        m.upstream_duration.observe(took as f64 / 1e9);
        if ctx.upstream_failed {
            m.upstream_errors.inc();
        }
    }
}

impl Sekisho {
    /// Feeds the autoban policies what this request got: its status (`kind: status`), or its
    /// rate-limit refusal (`kind: limited`; a limit's own 403 or 429 is not also a status
    /// event). Allow-listed clients, clients under a ban (either mode), and requests refused by
    /// the deny list are not counted.
    fn observe(&self, session: &ServerSession, ctx: &Ctx) {
        let policies = &ctx.snapshot.config.defense.autoban;
        let Some((decision, ip, _)) = ctx.decided else {
            return;
        };
        if policies.is_empty() || !crate::defense::feeds_autoban(decision) {
            return;
        }
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        for p in policies {
            if !p.counts_request(decision, status) {
                continue;
            }
            let v6 = ctx.snapshot.config.client_ip.ipv6_prefix;
            let path = session.req_header().uri.path().as_bytes();
            let now = self.state.clock.now();
            for ban in self.state.defense.observe(p, ip, v6, path, now, unix_now()) {
                if let Some(c) = &self.state.cluster {
                    let clocks = crate::defense::store::Clocks {
                        mono: now,
                        unix: unix_now(),
                    };
                    c.publish(crate::cluster::Event::Ban(
                        crate::defense::store::BanRecord::of(&ban, &clocks),
                    ));
                }
                let mode = ban.mode.as_str();
                self.state
                    .metrics
                    .bans
                    .with_label_values(&[p.name.as_str(), mode])
                    .inc();
            }
        }
    }

    /// Writes the decision log line of a finished request, if it is one to log.
    fn log_decision(&self, session: &ServerSession, ctx: &Ctx) {
        let (Some(log), Some((decision, ip, country))) = (&self.state.decision_log, ctx.decided)
        else {
            return;
        };
        let policy = &ctx.snapshot.config.policy;
        let (rule, mode) = match decision {
            Decision::Allow | Decision::AllowListed => {
                if log.sample_allowed <= 0.0 {
                    return;
                }
                // one in round(1 / sample_allowed), deterministic
                let every = (1.0 / log.sample_allowed).round().max(1.0) as u64;
                let n = self.state.allowed_seen.fetch_add(1, Ordering::Relaxed);
                if n % every != 0 {
                    return;
                }
                let rule = if decision == Decision::AllowListed {
                    "allow-list"
                } else {
                    ""
                };
                (rule, "enforce")
            }
            Decision::Count { rule } => (policy.name_of(rule), "count"),
            Decision::Deny { rule } | Decision::Limit { rule, .. } => {
                (policy.name_of(rule), "enforce")
            }
        };
        if !log.admit() {
            return;
        }
        let req = session.req_header();
        let sent = session.response_written().map_or(0, |r| r.status.as_u16());
        let host = request_host(req);
        let ua = req
            .headers
            .get(http::header::USER_AGENT)
            .map(|h| String::from_utf8_lossy(h.as_bytes()))
            .unwrap_or_default();
        let tls = tls_conn(session);
        log.log(&Entry {
            timestamp: now_rfc3339(),
            client_ip: ip,
            country: country.as_str(),
            method: req.method.as_str(),
            host,
            path: req.uri.path(),
            user_agent: &ua,
            rule,
            action: decision.action(),
            mode,
            status: sent,
            upstream_status: Some(sent).filter(|s| ctx.went_upstream && *s != 0),
            request_id: ctx.request_id.to_str().unwrap_or("-"),
            protocol: protocol_of(req.version),
            tls: tls.is_some(),
            ja4: tls.and_then(|t| t.ja4.as_deref()).unwrap_or(""),
        });
    }

    /// Writes the access log line of a finished request.
    fn log_access(&self, session: &ServerSession, ctx: &Ctx) {
        let Some(log) = &self.state.access_log else {
            return;
        };
        let Some((decision, ip, _)) = ctx.decided else {
            return;
        };
        let policy = &ctx.snapshot.config.policy;
        let rule = match decision {
            Decision::Allow => "",
            Decision::AllowListed => "allow-list",
            Decision::Count { rule } | Decision::Deny { rule } | Decision::Limit { rule, .. } => {
                policy.name_of(rule)
            }
        };
        let req = session.req_header();
        let header = |name| {
            req.headers
                .get(name)
                .map_or(&b""[..], |h: &http::HeaderValue| h.as_bytes())
        };
        log.log(&Record {
            client: ip,
            method: req.method.as_str(),
            target: req.raw_path(),
            proto: proto(req.version),
            status: session.response_written().map_or(0, |r| r.status.as_u16()),
            bytes: session.body_bytes_sent() as u64,
            upstream_nanos: ctx.upstream_nanos,
            total_nanos: self.state.clock.now().saturating_sub(ctx.now),
            decision: decision.action(),
            rule,
            host: request_host(req),
            referer: header(http::header::REFERER),
            user_agent: header(http::header::USER_AGENT),
            request_id: ctx.request_id.to_str().unwrap_or("-"),
        });
    }
}

/// The protocol as the request line names it.
fn proto(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/?",
    }
}

/// The socket peer's address (unspecified for a peer that is not an IP socket).
fn peer_of(session: &ServerSession) -> IpAddr {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip())
}

/// The host a request names, without port or final dot: the absolute-form target's authority
/// if there is one (it wins over `Host`, RFC 9112 3.2.2, and is what upstream will see), else
/// `Host`; empty if neither is there or valid UTF-8.
/// The facts the policy judges request `req` by: `path` is its normalised path
/// ([`normalize_path`]), `ip` and `country` the client's; the host only when a rule asks for it.
/// The proxy and every other consumer of the engine (the request fuzz target) build them here.
pub fn facts_of<'r>(
    req: &'r pingora::http::RequestHeader,
    path: &'r str,
    ip: IpAddr,
    country: Country,
    uses_host: bool,
    ja4: &'r str,
) -> Facts<'r> {
    Facts {
        country,
        ip,
        method: req.method.as_str(),
        host: if uses_host { request_host(req) } else { "" },
        path,
        user_agent: req
            .headers
            .get(http::header::USER_AGENT)
            .map_or(&b""[..], |h| h.as_bytes()),
        headers: Some(&req.headers),
        ja4,
    }
}

/// What the TLS front recorded for the connection `session` is on; `None` over plaintext.
pub fn tls_conn(session: &ServerSession) -> Option<&tls::TlsConn> {
    session
        .digest()?
        .ssl_digest
        .as_ref()?
        .extension
        .get::<tls::TlsConn>()
}

/// The decision log's `protocol`.
fn protocol_of(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_09 => "HTTP/0.9",
        _ => "HTTP/1.1",
    }
}

fn request_host(req: &pingora::http::RequestHeader) -> &str {
    // HTTP/2: `:authority` (RFC 9113 §8.3.1), which the URI carries
    let h2 = (req.version == http::Version::HTTP_2)
        .then(|| req.uri.authority().map(|a| a.as_str().as_bytes()))
        .flatten();
    h2.or_else(|| pingora::http::authority::raw_target_authority(req.raw_path()).authority())
        .or_else(|| req.headers.get(http::header::HOST).map(|h| h.as_bytes()))
        .and_then(|h| std::str::from_utf8(h).ok())
        .map(host_only)
        .unwrap_or("")
}

/// `example.com:8080` → `example.com`; `example.com.` → `example.com`; `[::1]:8080` → `[::1]`.
fn host_only(host: &str) -> &str {
    let host = host.trim();
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    host.strip_suffix('.').unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::host_only;

    #[test]
    fn host_without_port_or_final_dot() {
        assert_eq!(host_only("example.com:8080"), "example.com");
        assert_eq!(host_only("example.com"), "example.com");
        assert_eq!(host_only("admin.example.com."), "admin.example.com");
        assert_eq!(host_only("admin.example.com.:80"), "admin.example.com");
        assert_eq!(host_only("[::1]:8080"), "[::1]");
        assert_eq!(host_only("[::1]"), "[::1]");
    }
}
