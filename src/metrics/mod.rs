//! Prometheus metrics: one registry, metric handles resolved once (per snapshot for per-rule
//! series), so the request path only increments atomics.
//!
//! Labels come from small fixed sets only: decision, rule name (from the config), mode, status
//! class. Never a raw IP, path or user agent. Served as `GET /metrics` on the admin listener.

pub mod access_log;
pub mod decision_log;
pub mod line_writer;
pub mod top;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::conn::frames::Abuse;
use crate::conn::Refusal;
use crate::engine::Mode;
use crate::engine::{Country, Policy, RuleKind};

/// The `reason`s of `sekisho_malformed_requests_total` (the proxy's framing checks name them).
pub const MALFORMED_REASONS: [&str; 4] = [
    "content_length_and_transfer_encoding",
    "content_length",
    "transfer_encoding",
    "host",
];

/// The `reason` of `sekisho_malformed_requests_total` for a head Pingora's parser refused.
pub const UNPARSABLE: &str = "unparsable";

/// Accepts that failed (out of descriptors or memory), counted by the logging layer that sees
/// Pingora's accept loop; `sekisho_accept_errors_total` at scrape.
pub static ACCEPT_ERRORS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The `reason` of `sekisho_malformed_requests_total` for a chunked body Pingora's reader
/// refused (a bad chunk-size line, a missing CRLF, a malformed trailer section).
pub const BAD_CHUNK: &str = "bad_chunk";

/// Every metric sekisho exports.
pub struct Metrics {
    registry: Registry,
    /// The `sekisho_cluster_*` series, exported only when `cluster:` is configured.
    cluster: Registry,
    /// Whether to export [`Metrics::cluster`].
    pub cluster_enabled: std::sync::atomic::AtomicBool,
    /// `sekisho_requests_total{decision, rule, mode}`.
    pub requests: IntCounterVec,
    /// `sekisho_local_responses_total{status}`: requests answered by sekisho itself.
    pub local_responses: IntCounterVec,
    /// `sekisho_upstream_responses_total{class}`: responses from upstream by status class.
    pub upstream_responses: IntCounterVec,
    /// The five series of `upstream_responses`, 1xx to 5xx, resolved once.
    upstream_classes: [IntCounter; 5],
    /// `sekisho_upstream_errors_total`: requests that failed on the way to or from upstream.
    pub upstream_errors: IntCounter,
    /// `sekisho_upstream_duration_seconds`: from picking a peer to the end of the response.
    pub upstream_duration: Histogram,
    /// `sekisho_reloads_total{result}`.
    pub reloads: IntCounterVec,
    /// `sekisho_connections_closed_total{reason}`: client connections sekisho closed itself.
    pub connections_closed: IntCounterVec,
    /// `sekisho_connections_refused_total{reason}`: client connections refused at accept.
    pub connections_refused: IntCounterVec,
    /// `connections_refused` by [`Refusal`], resolved once (in the order of [`Refusal::ALL`]).
    refused_by: [IntCounter; 4],
    /// `connections_closed` for `max_open`: idle connections closed to make room.
    pub closed_max_open: IntCounter,
    /// `sekisho_tls_handshakes_total{result,version}`.
    pub tls_handshakes: IntCounterVec,
    /// `sekisho_tls_certificate_expiry_timestamp_seconds{listen,name}`: set at each load.
    pub tls_certificate_expiry: IntGaugeVec,
    /// `connections_closed` for `handshake_timeout`, resolved once.
    pub closed_handshake_timeout: IntCounter,
    /// `connections_closed` for each HTTP/2 abuse, by [`Abuse`] order.
    closed_h2: [IntCounter; 5],
    /// `sekisho_accept_errors_total` (brought up to date at scrape from [`ACCEPT_ERRORS`]).
    pub accept_errors: IntCounter,
    /// `sekisho_connections_open`: client connections open (set at scrape).
    pub connections_open: IntGauge,
    /// `sekisho_connections_idle`: of them, waiting for their next request (set at scrape).
    pub connections_idle: IntGauge,
    /// `sekisho_connections_clients`: clients with a connection open (set at scrape).
    pub connections_clients: IntGauge,
    /// `sekisho_malformed_requests_total{reason}`: requests refused for ambiguous framing.
    pub malformed_requests: IntCounterVec,
    /// `connections_closed` for `header_timeout` and `idle`, resolved once.
    pub closed_header_timeout: IntCounter,
    /// See [`Metrics::closed_header_timeout`].
    pub closed_idle: IntCounter,
    /// `connections_closed` for `body_timeout`, resolved once.
    pub closed_body_timeout: IntCounter,
    /// `malformed_requests` for [`BAD_CHUNK`], resolved once.
    pub malformed_bad_chunk: IntCounter,
    /// `sekisho_last_reload_success_timestamp_seconds`.
    pub last_reload_success: IntGauge,
    /// `sekisho_start_time_seconds`: when the process started.
    pub start_time: IntGauge,
    /// `sekisho_config_generation`.
    pub generation: IntGauge,
    /// `sekisho_limiter_tracked_keys` (set at scrape).
    pub tracked_keys: IntGauge,
    /// `sekisho_limiter_capacity_keys`.
    pub capacity_keys: IntGauge,
    /// `sekisho_limiter_evictions_total` (brought up to date at scrape).
    pub evictions: IntCounter,
    /// `sekisho_list_entries{list}`.
    pub list_entries: IntGaugeVec,
    /// `sekisho_geo_database_build_timestamp_seconds` (0 without a database).
    pub geo_build: IntGauge,
    /// `sekisho_decision_log_lines_total`: lines written to the decision log.
    pub log_lines: IntCounter,
    /// `sekisho_decision_log_dropped_total`: lines dropped because the writer fell behind.
    pub log_dropped: IntCounter,
    /// `sekisho_decision_log_suppressed_total`: lines over `max_lines_per_second`.
    pub log_suppressed: IntCounter,
    /// `sekisho_access_log_lines_total`: lines written to the access log.
    pub access_lines: IntCounter,
    /// `sekisho_access_log_dropped_total`: access log lines dropped because the writer fell behind.
    pub access_dropped: IntCounter,
    /// `sekisho_country_requests_total{country, result}`, for the countries the operator lists.
    pub country_requests: IntCounterVec,
    /// `sekisho_bans_total{policy, mode}`: bans added (`policy="manual"` by hand).
    pub bans: IntCounterVec,
    /// `sekisho_bans_active` (set at scrape).
    pub bans_active: IntGauge,
    /// `sekisho_autoban_tracked_offenders` (set at scrape).
    pub offenders_tracked: IntGauge,
    /// `sekisho_autoban_offender_evictions_total` (brought up to date at scrape).
    pub offender_evictions: IntCounter,
    /// `sekisho_ban_state_saves_total{result}`.
    pub state_saves: IntCounterVec,
    /// `sekisho_under_attack`: 1 while the profile is enforced.
    pub under_attack: IntGauge,
    /// `sekisho_under_attack_switches_total{to}`.
    pub under_attack_switches: IntCounterVec,
    /// `sekisho_under_attack_would_refuse_total{rule}`: profile refusals previewed while off.
    pub would_refuse: IntCounterVec,
    /// `sekisho_cluster_up`: 1 while the cluster store answers (absent without `cluster:`).
    pub cluster_up: IntGauge,
    /// `sekisho_cluster_instances`: live instances of this fleet, as last read from the store.
    pub cluster_instances: IntGauge,
    /// `sekisho_cluster_commands_total`: commands sent to the store.
    pub cluster_commands: IntCounter,
    /// `sekisho_cluster_errors_total{op}`: store round trips that failed or timed out.
    pub cluster_errors: IntCounterVec,
    /// `sekisho_cluster_exact_total{result}`: exact rules' checks (`admitted`, `refused`,
    /// `fallback`: the store did not answer within `cluster.timeout`).
    pub cluster_exact: IntCounterVec,
}

/// The series a snapshot increments, resolved once from its policy.
#[derive(Debug)]
pub struct PolicySeries {
    /// One per rule, in policy order: refusals of an enforced rule (`decision` deny or
    /// limit), or would-be refusals of a count-mode rule (`decision="count"`).
    pub rules: Vec<IntCounter>,
    /// The deny list's refusals (or would-be refusals in count mode).
    pub deny_list: IntCounter,
    /// Per rule, in policy order: `sekisho_local_responses_total` for the rule's status.
    pub local: Vec<IntCounter>,
    /// `sekisho_local_responses_total` for the deny list's status.
    pub deny_list_local: IntCounter,
    /// Allowed with no objection.
    pub allowed: IntCounter,
    /// Allowed because allow-listed.
    pub allow_listed: IntCounter,
    /// Listed countries with their (passed, refused) series; the rest go to `other`.
    pub countries: Vec<(Country, [IntCounter; 2])>,
    /// (passed, refused) for countries not listed; `None` when no country is listed.
    pub other_country: Option<[IntCounter; 2]>,
    /// Refused by a ban.
    pub ban: IntCounter,
    /// Passed, but a count-mode ban covers the client.
    pub ban_count: IntCounter,
    /// `sekisho_local_responses_total` for a ban's 403.
    pub ban_local: IntCounter,
    /// Per profile rule (`rules[profile_from..]`): `sekisho_under_attack_would_refuse_total`.
    pub would_refuse: Vec<IntCounter>,
}

impl PolicySeries {
    /// Counts one request of `country`.
    pub fn count_country(&self, country: Country, refused: bool) {
        let Some(other) = &self.other_country else {
            return;
        };
        let series = self
            .countries
            .iter()
            .find(|(c, _)| *c == country)
            .map_or(other, |(_, s)| s);
        series[usize::from(refused)].inc();
    }
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let v = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    r.register(Box::new(v.clone())).expect("unique metric name");
    v
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("static metric definition");
    r.register(Box::new(c.clone())).expect("unique metric name");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("static metric definition");
    r.register(Box::new(g.clone())).expect("unique metric name");
    g
}

impl Metrics {
    /// A registry with every metric registered (names and labels are constants: the
    /// `expect`s cannot fire on outside input).
    pub fn new() -> Self {
        let r = Registry::new();
        let requests = counter_vec(
            &r,
            "sekisho_requests_total",
            "Requests judged, by decision (allow, allow_listed, deny, limit, count), the rule that decided and its mode.",
            &["decision", "rule", "mode"],
        );
        let local_responses = counter_vec(
            &r,
            "sekisho_local_responses_total",
            "Requests answered by sekisho itself (refusals), by status code.",
            &["status"],
        );
        let upstream_responses = counter_vec(
            &r,
            "sekisho_upstream_responses_total",
            "Responses from upstream, by status class (1xx..5xx).",
            &["class"],
        );
        let upstream_errors = counter(
            &r,
            "sekisho_upstream_errors_total",
            "Requests that failed connecting to, writing to or reading from upstream.",
        );
        let upstream_duration = Histogram::with_opts(
            HistogramOpts::new(
                "sekisho_upstream_duration_seconds",
                "Time from choosing an upstream peer to the end of its response.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
        )
        .expect("static metric definition");
        r.register(Box::new(upstream_duration.clone()))
            .expect("unique metric name");
        let reloads = counter_vec(
            &r,
            "sekisho_reloads_total",
            "Config reloads, by result (ok, error).",
            &["result"],
        );
        let list_entries = IntGaugeVec::new(
            Opts::new(
                "sekisho_list_entries",
                "Entries in the allow and deny lists.",
            ),
            &["list"],
        )
        .expect("static metric definition");
        r.register(Box::new(list_entries.clone()))
            .expect("unique metric name");
        let evictions = counter(
            &r,
            "sekisho_limiter_evictions_total",
            "Token buckets dropped while still holding a debt, to stay within max_tracked_keys.",
        );
        let log_lines = counter(
            &r,
            "sekisho_decision_log_lines_total",
            "Lines written to the decision log.",
        );
        let log_dropped = counter(
            &r,
            "sekisho_decision_log_dropped_total",
            "Decision log lines dropped because the writer fell behind (the request path never waits).",
        );
        let log_suppressed = counter(
            &r,
            "sekisho_decision_log_suppressed_total",
            "Decision log lines not written because they were over max_lines_per_second.",
        );
        let access_lines = counter(
            &r,
            "sekisho_access_log_lines_total",
            "Lines written to the access log.",
        );
        let access_dropped = counter(
            &r,
            "sekisho_access_log_dropped_total",
            "Access log lines dropped because the writer fell behind (the request path never waits).",
        );
        let country_requests = counter_vec(
            &r,
            "sekisho_country_requests_total",
            "Requests by client country (only the countries listed in metrics.countries, the rest as \"other\"; \"??\" = unknown), passed or refused.",
            &["country", "result"],
        );
        let upstream_classes =
            ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|c| upstream_responses.with_label_values(&[c]));
        let bans = counter_vec(
            &r,
            "sekisho_bans_total",
            "Bans added, by autoban policy (\"manual\" for bans by hand) and mode.",
            &["policy", "mode"],
        );
        let state_saves = counter_vec(
            &r,
            "sekisho_ban_state_saves_total",
            "Writes of the ban state file, by result (ok, error).",
            &["result"],
        );
        let under_attack_switches = counter_vec(
            &r,
            "sekisho_under_attack_switches_total",
            "Times the under-attack profile was switched, by new state (on, off).",
            &["to"],
        );
        let would_refuse = counter_vec(
            &r,
            "sekisho_under_attack_would_refuse_total",
            "Requests the under-attack profile would have refused while it was off, by profile rule.",
            &["rule"],
        );
        let connections_closed = counter_vec(
            &r,
            "sekisho_connections_closed_total",
            "Client connections sekisho closed itself, by reason (header_timeout: the request head did not arrive in connections.header_timeout; idle: a kept-alive connection waited connections.idle_timeout; max_open: an idle kept-alive connection closed to make room for a new one at connections.max_open; handshake_timeout: a TLS handshake not done within tls.handshake_timeout; h2_rapid_reset, h2_ping_flood, h2_settings_flood, h2_empty_data_flood, h2_continuation_flood: an HTTP/2 client over its per-connection frame budget; body_timeout: a request body stalled past connections.body_timeout or came slower than connections.body_min_rate).",
            &["reason"],
        );
        let tls_handshakes = counter_vec(
            &r,
            "sekisho_tls_handshakes_total",
            "TLS handshakes with clients, by result (ok; failed: refused by either side, e.g. no shared version or cipher, a client that closed; timeout: not done within the listener's tls.handshake_timeout) and by negotiated version (TLSv1.2, TLSv1.3; \"-\" when none was).",
            &["result", "version"],
        );
        for (result, version) in [
            ("ok", "TLSv1.2"),
            ("ok", "TLSv1.3"),
            ("failed", "-"),
            ("timeout", "-"),
        ] {
            tls_handshakes.with_label_values(&[result, version]);
        }
        let tls_certificate_expiry = IntGaugeVec::new(
            Opts::new(
                "sekisho_tls_certificate_expiry_timestamp_seconds",
                "When each certificate a TLS listener serves expires (Unix seconds), by listen address and the certificate's first name; set at start and at each reload.",
            ),
            &["listen", "name"],
        )
        .expect("static metric definition");
        r.register(Box::new(tls_certificate_expiry.clone()))
            .expect("unique metric name");
        let malformed_requests = counter_vec(
            &r,
            "sekisho_malformed_requests_total",
            "Requests answered 400 and their connection closed for ambiguous framing, by reason (content_length_and_transfer_encoding, content_length, transfer_encoding, host; unparsable: a head the HTTP parser refused; bad_chunk: a malformed chunk in a chunked body).",
            &["reason"],
        );
        for why in MALFORMED_REASONS.iter().chain(&[UNPARSABLE, BAD_CHUNK]) {
            malformed_requests.with_label_values(&[why]);
        }
        let connections_refused = counter_vec(
            &r,
            "sekisho_connections_refused_total",
            "Client connections refused at accept (closed before a byte was read), by reason (max_open: the process holds connections.max_open and none is idle; client_max_open: the client holds connections.per_client.max_open; client_rate: over connections.per_client.rate; banned: the client is banned by an autoban policy of kind connections); in connections.mode count, counted but let in.",
            &["reason"],
        );
        let refused_by = Refusal::ALL.map(|r| connections_refused.with_label_values(&[r.as_str()]));
        let closed_max_open = connections_closed.with_label_values(&["max_open"]);
        let closed_header_timeout = connections_closed.with_label_values(&["header_timeout"]);
        let closed_idle = connections_closed.with_label_values(&["idle"]);
        let closed_body_timeout = connections_closed.with_label_values(&["body_timeout"]);
        let closed_handshake_timeout = connections_closed.with_label_values(&["handshake_timeout"]);
        let closed_h2 = Abuse::ALL.map(|a| connections_closed.with_label_values(&[a.as_str()]));
        let malformed_bad_chunk = malformed_requests.with_label_values(&[BAD_CHUNK]);
        // Every series with labels from a fixed set starts at 0, so that `increase()` in an
        // alert sees the first event after a start (a series born at 1 has no sample before it).
        for result in ["ok", "error"] {
            reloads.with_label_values(&[result]);
            state_saves.with_label_values(&[result]);
        }
        for to in ["on", "off"] {
            under_attack_switches.with_label_values(&[to]);
        }
        for mode in ["enforce", "count"] {
            bans.with_label_values(&["manual", mode]);
        }
        let build_info = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "sekisho_build_info",
                "Always 1; its label is the running sekisho version.",
            ),
            &["version"],
        )
        .expect("valid metric");
        r.register(Box::new(build_info.clone()))
            .expect("unique metric name");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let cluster = Registry::new();
        let cluster_errors = counter_vec(
            &cluster,
            "sekisho_cluster_errors_total",
            "Round trips to the cluster store that failed or passed cluster.timeout, by operation (sync, exact, connect).",
            &["op"],
        );
        let cluster_exact = counter_vec(
            &cluster,
            "sekisho_cluster_exact_total",
            "Checks of consistency: exact rules against the store, by result (admitted, refused, fallback: no answer within cluster.timeout, judged on the local share).",
            &["result"],
        );
        Self {
            cluster_up: gauge(
                &cluster,
                "sekisho_cluster_up",
                "1 while the cluster store answers; 0 while approximate and exact rules fall back to a local share of their limits.",
            ),
            cluster_instances: gauge(
                &cluster,
                "sekisho_cluster_instances",
                "Live instances of this fleet (cluster.name), as last read from the store.",
            ),
            cluster_commands: counter(
                &cluster,
                "sekisho_cluster_commands_total",
                "Commands sent to the cluster store (a pipelined batch counts each of its commands).",
            ),
            cluster_errors,
            cluster_exact,
            cluster,
            requests,
            local_responses,
            upstream_classes,
            upstream_responses,
            upstream_errors,
            upstream_duration,
            reloads,
            connections_closed,
            connections_refused,
            refused_by,
            closed_max_open,
            accept_errors: counter(
                &r,
                "sekisho_accept_errors_total",
                "Accepts of a client or admin connection that failed (out of descriptors or memory); the process keeps serving what it has and retries.",
            ),
            connections_open: gauge(
                &r,
                "sekisho_connections_open",
                "Client connections open now (counted from accept; see connections.max_open).",
            ),
            connections_idle: gauge(
                &r,
                "sekisho_connections_idle",
                "Client connections open and waiting for their next request (kept alive).",
            ),
            connections_clients: gauge(
                &r,
                "sekisho_connections_clients",
                "Clients (socket peers, IPv6 by client_ip.ipv6_prefix) with a connection open now.",
            ),
            malformed_requests,
            closed_header_timeout,
            closed_idle,
            closed_handshake_timeout,
            closed_h2,
            tls_handshakes,
            tls_certificate_expiry,
            closed_body_timeout,
            malformed_bad_chunk,
            last_reload_success: gauge(
                &r,
                "sekisho_last_reload_success_timestamp_seconds",
                "Unix time of the last successful config load or reload.",
            ),
            start_time: gauge(
                &r,
                "sekisho_start_time_seconds",
                "Unix time the process started.",
            ),
            generation: gauge(
                &r,
                "sekisho_config_generation",
                "Config generation serving: 1 at start, +1 per successful reload.",
            ),
            tracked_keys: gauge(
                &r,
                "sekisho_limiter_tracked_keys",
                "Token buckets tracked now.",
            ),
            capacity_keys: gauge(
                &r,
                "sekisho_limiter_capacity_keys",
                "The most token buckets tracked (max_tracked_keys).",
            ),
            evictions,
            list_entries,
            geo_build: gauge(
                &r,
                "sekisho_geo_database_build_timestamp_seconds",
                "Build time of the loaded country database (Unix time; 0 without one).",
            ),
            log_lines,
            log_dropped,
            log_suppressed,
            access_lines,
            access_dropped,
            country_requests,
            bans_active: gauge(
                &r,
                "sekisho_bans_active",
                "Bans in force (autoban and by hand, both modes).",
            ),
            offenders_tracked: gauge(
                &r,
                "sekisho_autoban_tracked_offenders",
                "Clients with events counted by an autoban policy now.",
            ),
            offender_evictions: counter(
                &r,
                "sekisho_autoban_offender_evictions_total",
                "Autoban counts dropped with their window still open, to stay within bans.max_tracked_offenders.",
            ),
            under_attack: gauge(
                &r,
                "sekisho_under_attack",
                "1 while the under-attack profile is enforced, else 0.",
            ),
            bans,
            state_saves,
            under_attack_switches,
            would_refuse,
            registry: r,
            cluster_enabled: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Makes each autoban policy's `sekisho_bans_total` series exist (at 0 until its first
    /// ban), so an alert on its increase sees the first one.
    pub fn init_autoban_series(&self, policies: &[crate::defense::AutobanPolicy]) {
        for p in policies {
            self.bans
                .with_label_values(&[p.name.as_str(), p.mode.as_str()]);
        }
    }

    /// Resolves the series `policy` increments, breaking out `countries`.
    pub fn series_for(&self, policy: &Policy, countries: &[Country]) -> PolicySeries {
        let pair = |c: &str| {
            ["passed", "refused"].map(|r| self.country_requests.with_label_values(&[c, r]))
        };
        let series = |decision: &str, name: &str, mode: Mode| {
            let (decision, mode) = match mode {
                Mode::Enforce => (decision, "enforce"),
                Mode::Count => ("count", "count"),
            };
            self.requests.with_label_values(&[decision, name, mode])
        };
        PolicySeries {
            rules: policy
                .rules
                .iter()
                .map(|r| {
                    let decision = match r.kind {
                        RuleKind::Deny => "deny",
                        RuleKind::Limit(_) => "limit",
                    };
                    series(decision, &r.name, r.mode)
                })
                .collect(),
            deny_list: series("deny", "deny-list", policy.deny_mode),
            local: policy
                .rules
                .iter()
                .map(|r| self.local_response(r.response.status))
                .collect(),
            deny_list_local: self.local_response(policy.deny_response.status),
            allowed: self.requests.with_label_values(&["allow", "", ""]),
            allow_listed: self.requests.with_label_values(&[
                "allow_listed",
                "allow-list",
                "enforce",
            ]),
            countries: countries.iter().map(|c| (*c, pair(c.as_str()))).collect(),
            other_country: (!countries.is_empty()).then(|| pair("other")),
            ban: series("deny", "ban", Mode::Enforce),
            ban_count: series("deny", "ban", Mode::Count),
            ban_local: self.local_response(403),
            would_refuse: policy.rules[policy.profile_from.min(policy.rules.len())..]
                .iter()
                .map(|r| self.would_refuse.with_label_values(&[r.name.as_str()]))
                .collect(),
        }
    }

    /// Counts one upstream response with `status`.
    pub fn upstream_response(&self, status: u16) {
        let i = usize::from((status / 100).clamp(1, 5) - 1);
        self.upstream_classes[i].inc();
    }

    /// Requests judged so far, and those refused (enforced `deny` or `limit`) by anything but
    /// the rules named in `except` (the under-attack profile, for its own detector).
    pub fn request_totals(&self, except: &std::collections::HashSet<&str>) -> (u64, u64) {
        let (mut requests, mut refused) = (0, 0);
        for family in prometheus::core::Collector::collect(&self.requests) {
            for m in family.get_metric() {
                let label = |name: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value())
                        .unwrap_or("")
                };
                let n = m.get_counter().get_value() as u64;
                requests += n;
                if matches!(label("decision"), "deny" | "limit")
                    && label("mode") == "enforce"
                    && !except.contains(label("rule"))
                {
                    refused += n;
                }
            }
        }
        (requests, refused)
    }

    /// Upstream responses of status class `class` (1 to 5) so far.
    pub fn upstream_class(&self, class: usize) -> u64 {
        self.upstream_classes[class.clamp(1, 5) - 1].get()
    }

    fn local_response(&self, status: u16) -> IntCounter {
        self.local_responses
            .with_label_values(&[status.to_string().as_str()])
    }

    /// `sekisho_connections_refused_total` for `why`.
    pub fn refused(&self, why: Refusal) -> &IntCounter {
        &self.refused_by[why as usize]
    }

    /// `connections_closed` for HTTP/2 abuse `a`.
    pub fn closed_h2(&self, a: Abuse) -> &IntCounter {
        &self.closed_h2[a as usize]
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut families = self.registry.gather();
        if self
            .cluster_enabled
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            families.extend(self.cluster.gather());
            families.sort_by(|a, b| a.name().cmp(b.name()));
        }
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!("cannot encode metrics: {e}");
        }
        out
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
