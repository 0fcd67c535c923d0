//! YAML → serde structs ([`raw`]) → a validated [`Config`] the engine and proxy use.
//!
//! Every string with meaning (addresses, CIDRs, rates, durations, regexes) is turned into its
//! type here, once; the request path never parses config. Errors are collected, not stopped at
//! the first, and each names file, line, column and field ([`ConfigError`]). `sekisho check` and
//! the reload path both go through [`load`]. This module opens files but no sockets.
//!
//! YAML is read with `serde-saphyr`: pure Rust (no `unsafe-libyaml`, which RUSTSEC-2024-0449
//! marks unmaintained), maintained, and its errors and [`serde_saphyr::Spanned`] values carry
//! line and column.

mod cache;
mod error;
pub mod raw;

use std::hash::{Hash, Hasher};
use std::net::{SocketAddr, ToSocketAddrs};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderName;
use ipnet::IpNet;
use regex::{Regex, RegexBuilder};

use crate::defense::{AutoSettings, AutobanPolicy, DefenseSettings, StatusSet, Trigger};
use crate::engine::Country;
use crate::engine::{
    HostMatch, KeyKind, LimitSpec, Matcher, Policy, Response, Rule, RuleKind, SlotRegistry,
};
use crate::geo::GeoDb;
use crate::iplist::{self, IpSet};
use crate::limiter::Quota;
use cache::Cached;
pub use cache::{content_hash, FileStamp, ListCache};
pub use error::{field_path_at, ConfigError, ConfigErrors};
use raw::{RawConfig, RawList, RawMode, RawRule, S};

/// Default `max_tracked_keys`: measured with `examples/limiter_memory.rs`, a key costs ~80 bytes
/// once the allocator has returned the tables outgrown while filling, ~107 bytes right after;
/// 1.5M keys keep the limiter at 120-160 MB, under the 200 MB budget.
pub const DEFAULT_MAX_TRACKED_KEYS: usize = 1_500_000;

/// A validated config.
#[derive(Debug)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// `listen:` (restart to change).
    pub listen: Vec<SocketAddr>,
    /// `threads:` (restart to change).
    pub threads: usize,
    /// `work_stealing:` (restart to change): one shared scheduler over the threads instead of
    /// each connection staying on the thread that accepted it (default false).
    pub work_stealing: bool,
    /// `grace_period:`: how long a graceful stop keeps serving in-flight requests.
    pub grace_period: Duration,
    /// `graceful_shutdown_timeout:`: the hard limit after the grace period.
    pub graceful_shutdown_timeout: Duration,
    /// `upstreams:`, resolved.
    pub upstreams: Vec<Upstream>,
    /// `upstream_options:`.
    pub upstream_options: UpstreamOptions,
    /// `client_ip:`.
    pub client_ip: ClientIp,
    /// `max_tracked_keys:`.
    pub max_tracked_keys: usize,
    /// The rules and lists, compiled.
    pub policy: Policy,
    /// Every list file read (for watching and for messages).
    pub list_files: Vec<PathBuf>,
    /// The content hash of the config file and of each list file, as this config was built
    /// from them: the file watch starts from these, so that a change made while the proxy
    /// was starting is not taken for the loaded version.
    pub loaded_hashes: Vec<(PathBuf, u64)>,
    /// `admin.listen`: the admin HTTP listener (restart to change); `None` when set to `off`.
    pub admin_listen: Option<SocketAddr>,
    /// `reload:`.
    pub reload: ReloadSettings,
    /// `geo:`.
    pub geo: GeoSettings,
    /// `decision_log:` (restart to change).
    pub decision_log: Option<DecisionLogSettings>,
    /// `metrics.countries`: countries broken out in `sekisho_country_requests_total`.
    pub metric_countries: Vec<Country>,
    /// `bans:`, `autoban:` and `under_attack.auto`.
    pub defense: DefenseSettings,
}

/// `decision_log:`.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionLogSettings {
    /// Where: a file (appended; reopened on SIGUSR1), or stdout for `-`.
    pub target: crate::metrics::decision_log::Target,
    /// Share of allowed requests logged, 0 to 1 (default 0: refusals and counts only).
    pub sample_allowed: f64,
    /// Lines queued before dropping (default 65536).
    pub queue: usize,
    /// Lines per second at most (default 5000; 0: no cap).
    pub max_lines_per_second: u64,
}

/// `geo:`: where a client's country comes from.
#[derive(Debug, Clone, Default)]
pub struct GeoSettings {
    /// `geo.database`, loaded.
    pub database: Option<Arc<GeoDb>>,
    /// `geo.header`: a country header believed from trusted proxies only.
    pub header: Option<HeaderName>,
}

/// `reload:`: how file changes are noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadSettings {
    /// Watch the config and list files' folders for changes (default true).
    pub watch: bool,
    /// Quiet time after a change before reading, so a multi-step save is read once (100 ms).
    pub debounce: Duration,
    /// How often file stamps are checked even without a notification (default 2 s); every
    /// 15th check hashes the content, to catch a change that kept size and mtime.
    pub poll_interval: Duration,
}

/// One upstream peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// As written (`origin.internal:8000`).
    pub name: String,
    /// Resolved at load.
    pub addr: SocketAddr,
}

/// `upstream_options:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamOptions {
    /// TCP connect timeout (default 2 s).
    pub connect_timeout: Duration,
    /// Timeout for each read from upstream (default 30 s).
    pub read_timeout: Duration,
    /// Timeout for each write to upstream (default 30 s).
    pub write_timeout: Duration,
    /// How long an idle pooled upstream connection is kept (default 60 s).
    pub idle_timeout: Duration,
    /// How long a peer that refused a connection is skipped (default 10 s).
    pub down_for: Duration,
    /// Idle keep-alive connections kept to upstream (default 1024; restart to change).
    pub pool_size: usize,
}

/// `client_ip:`.
#[derive(Debug, Clone)]
pub struct ClientIp {
    /// Peers whose forwarding header is believed.
    pub trusted_proxies: IpSet,
    /// The forwarding header (default `X-Forwarded-For`).
    pub header: HeaderName,
    /// IPv6 clients are keyed by this prefix (default 64).
    pub ipv6_prefix: u8,
}

/// Reads and validates the config at `path`, and every list file it names.
pub fn load(path: &Path, slots: &SlotRegistry) -> Result<Config, ConfigErrors> {
    load_cached(path, slots, &mut ListCache::default())
}

/// [`load`], reusing list files and sets from `cache` that did not change. `sekisho check`
/// and every reload go through here.
pub fn load_cached(
    path: &Path,
    slots: &SlotRegistry,
    cache: &mut ListCache,
) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::whole_file(path, format!("cannot read the config: {e}")))?;
    parse_cached(&text, path, slots, cache)
}

/// Validates config `text` as if read from `path` (list files are resolved against its folder).
pub fn parse(text: &str, path: &Path, slots: &SlotRegistry) -> Result<Config, ConfigErrors> {
    parse_cached(text, path, slots, &mut ListCache::default())
}

fn parse_cached(
    text: &str,
    path: &Path,
    slots: &SlotRegistry,
    cache: &mut ListCache,
) -> Result<Config, ConfigErrors> {
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! { max_depth: 32, max_nodes: 200_000 },
    };
    let raw: RawConfig = match serde_saphyr::from_str_with_options(text, options) {
        Ok(r) => r,
        Err(e) => {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            let mut message = e.without_snippet().to_string();
            if let Some(cut) = message.rfind(" at line ") {
                message.truncate(cut);
            }
            return Err(ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line,
                column,
                field: field_path_at(text, line, column),
                message,
            }]));
        }
    };
    let mut v = Validator {
        file: path.to_path_buf(),
        dir: path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
        errors: Vec::new(),
        list_files: Vec::new(),
        loaded_hashes: vec![(path.to_path_buf(), content_hash(text.as_bytes()))],
        cache,
    };
    let config = v.config(raw, slots);
    if v.errors.is_empty() {
        Ok(config)
    } else {
        v.errors.sort_by_key(|e| (e.file.clone(), e.line, e.column));
        Err(ConfigErrors(v.errors))
    }
}

struct Validator<'c> {
    file: PathBuf,
    dir: PathBuf,
    errors: Vec<ConfigError>,
    list_files: Vec<PathBuf>,
    loaded_hashes: Vec<(PathBuf, u64)>,
    cache: &'c mut ListCache,
}

impl Validator<'_> {
    fn err<T>(&mut self, at: &S<T>, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line: at.referenced.line(),
            column: at.referenced.column(),
            field: field.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, v: Option<&S<String>>, field: &str, default: Duration) -> Duration {
        self.duration_in(
            v,
            field,
            default,
            Duration::ZERO,
            Duration::from_secs(86_400),
        )
    }

    /// A duration from `min` to `max`, both included.
    fn duration_in(
        &mut self,
        v: Option<&S<String>>,
        field: &str,
        default: Duration,
        min: Duration,
        max: Duration,
    ) -> Duration {
        let Some(s) = v else { return default };
        match parse_duration(&s.value) {
            Ok(d) if d < min || d > max => {
                self.err(
                    s,
                    field,
                    format!("{:?} is out of range ({min:?} to {max:?})", s.value),
                );
                default
            }
            Ok(d) => d,
            Err(m) => {
                self.err(s, field, m);
                default
            }
        }
    }

    /// An upstream timeout: from 1 ms to 1 h.
    fn timeout(&mut self, v: Option<&S<String>>, field: &str, default: Duration) -> Duration {
        self.duration_in(
            v,
            field,
            default,
            Duration::from_millis(1),
            Duration::from_secs(3600),
        )
    }

    /// A shutdown timeout: whole seconds (Pingora counts in seconds), at most 1 h.
    fn whole_seconds(&mut self, v: Option<&S<String>>, field: &str, default: Duration) -> Duration {
        let d = self.duration_in(v, field, default, Duration::ZERO, Duration::from_secs(3600));
        if d.subsec_nanos() != 0 {
            if let Some(s) = v {
                self.err(
                    s,
                    field,
                    format!("{:?}: use whole seconds (e.g. 2s)", s.value),
                );
            }
        }
        d
    }

    fn config(&mut self, raw: RawConfig, slots: &SlotRegistry) -> Config {
        let mut listen = Vec::new();
        for (i, l) in raw.listen.iter().enumerate() {
            match l.value.parse::<SocketAddr>() {
                Ok(a) => listen.push(a),
                Err(_) => self.err(
                    l,
                    format!("listen[{i}]"),
                    format!(
                        "{:?} is not an address:port (e.g. \"0.0.0.0:8080\" or \"[::]:8080\")",
                        l.value
                    ),
                ),
            }
        }
        if raw.listen.is_empty() {
            listen.push(SocketAddr::from(([127, 0, 0, 1], 8080)));
        }
        let threads = match &raw.threads {
            Some(t) if t.value == 0 => {
                self.err(
                    t,
                    "threads",
                    "must be at least 1 (leave it out to use one per CPU)",
                );
                1
            }
            Some(t) => t.value,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let grace_period = self.whole_seconds(
            raw.grace_period.as_ref(),
            "grace_period",
            Duration::from_secs(5),
        );
        let graceful_shutdown_timeout = self.whole_seconds(
            raw.graceful_shutdown_timeout.as_ref(),
            "graceful_shutdown_timeout",
            Duration::from_secs(10),
        );

        let mut upstreams = Vec::new();
        for (i, u) in raw.upstreams.iter().enumerate() {
            match u.value.to_socket_addrs().map(|mut a| a.next()) {
                Ok(Some(addr)) => upstreams.push(Upstream {
                    name: u.value.clone(),
                    addr,
                }),
                Ok(None) => self.err(
                    u,
                    format!("upstreams[{i}]"),
                    format!("{:?} resolves to no address", u.value),
                ),
                Err(e) => self.err(
                    u,
                    format!("upstreams[{i}]"),
                    format!("{:?} is not a reachable host:port ({e})", u.value),
                ),
            }
        }
        if raw.upstreams.is_empty() {
            self.errors.push(ConfigError {
                file: self.file.clone(),
                line: 1,
                column: 1,
                field: "upstreams".into(),
                message: "at least one upstream host:port is required, e.g. upstreams: [\"127.0.0.1:8000\"]".into(),
            });
        }
        let uo = raw.upstream_options.as_ref();
        let upstream_options = UpstreamOptions {
            connect_timeout: self.timeout(
                uo.and_then(|o| o.connect_timeout.as_ref()),
                "upstream_options.connect_timeout",
                Duration::from_secs(2),
            ),
            read_timeout: self.timeout(
                uo.and_then(|o| o.read_timeout.as_ref()),
                "upstream_options.read_timeout",
                Duration::from_secs(30),
            ),
            write_timeout: self.timeout(
                uo.and_then(|o| o.write_timeout.as_ref()),
                "upstream_options.write_timeout",
                Duration::from_secs(30),
            ),
            idle_timeout: self.timeout(
                uo.and_then(|o| o.idle_timeout.as_ref()),
                "upstream_options.idle_timeout",
                Duration::from_secs(60),
            ),
            down_for: self.duration(
                uo.and_then(|o| o.down_for.as_ref()),
                "upstream_options.down_for",
                Duration::from_secs(10),
            ),
            pool_size: match uo.and_then(|o| o.pool_size.as_ref()) {
                Some(p) if p.value == 0 => {
                    self.err(p, "upstream_options.pool_size", "must be at least 1");
                    1024
                }
                Some(p) => p.value,
                None => 1024,
            },
        };

        let client_ip = self.client_ip(raw.client_ip.as_ref());
        let max_tracked_keys = match &raw.max_tracked_keys {
            Some(m) if m.value == 0 => {
                self.err(m, "max_tracked_keys", "must be at least 1");
                DEFAULT_MAX_TRACKED_KEYS
            }
            Some(m) => m.value,
            None => DEFAULT_MAX_TRACKED_KEYS,
        };

        let lists = raw.lists.as_ref();
        let allow = self.list(lists.and_then(|l| l.allow.as_ref()), "lists.allow");
        if let Some(m) = lists
            .and_then(|l| l.allow.as_ref())
            .and_then(|a| a.mode.as_ref())
        {
            if m.value == RawMode::Count {
                self.err(
                    m,
                    "lists.allow.mode",
                    "the allow list has no count mode (only lists.deny has)",
                );
            }
        }
        let deny_raw = lists.and_then(|l| l.deny.as_ref());
        let deny = self.list(deny_raw, "lists.deny");
        let deny_mode = deny_raw
            .and_then(|d| d.mode.as_ref())
            .map(|m| m.value.into())
            .unwrap_or_default();

        let admin_listen = match raw.admin.as_ref().and_then(|a| a.listen.as_ref()) {
            None => Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
            Some(l) if l.value.trim() == "off" => None,
            Some(l) => match l.value.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    self.err(
                        l,
                        "admin.listen",
                        format!(
                            "{:?} is not an address:port (e.g. \"127.0.0.1:9090\"), or off",
                            l.value
                        ),
                    );
                    None
                }
            },
        };
        let rr = raw.reload.as_ref();
        let reload = ReloadSettings {
            watch: rr.and_then(|r| r.watch).unwrap_or(true),
            debounce: self.duration(
                rr.and_then(|r| r.debounce.as_ref()),
                "reload.debounce",
                Duration::from_millis(100),
            ),
            poll_interval: self.duration(
                rr.and_then(|r| r.poll_interval.as_ref()),
                "reload.poll_interval",
                Duration::from_secs(2),
            ),
        };
        if reload.poll_interval.is_zero() {
            if let Some(p) = rr.and_then(|r| r.poll_interval.as_ref()) {
                self.err(p, "reload.poll_interval", "must be above 0 (e.g. 2s)");
            }
        }
        let geo = self.geo(raw.geo.as_ref());
        let decision_log = raw.decision_log.as_ref().map(|d| {
            use crate::metrics::decision_log::Target;
            let target = match d.path.value.trim() {
                "-" => Target::Stdout,
                p => Target::File(self.dir.join(p)),
            };
            let sample_allowed = match &d.sample_allowed {
                Some(s) if !(0.0..=1.0).contains(&s.value) => {
                    self.err(
                        s,
                        "decision_log.sample_allowed",
                        "must be from 0 to 1 (e.g. 0.01 logs one allowed request in 100)",
                    );
                    0.0
                }
                Some(s) => s.value,
                None => 0.0,
            };
            let queue = match &d.queue {
                Some(q) if q.value == 0 => {
                    self.err(q, "decision_log.queue", "must be at least 1");
                    65_536
                }
                Some(q) => q.value,
                None => 65_536,
            };
            let max_lines_per_second = d.max_lines_per_second.as_ref().map_or(5_000, |m| m.value);
            DecisionLogSettings {
                target,
                sample_allowed,
                queue,
                max_lines_per_second,
            }
        });
        let mut metric_countries = Vec::new();
        for (i, c) in raw
            .metrics
            .iter()
            .flat_map(|m| m.countries.iter())
            .enumerate()
        {
            match Country::parse(c.value.trim().as_bytes()) {
                Some(code) => metric_countries.push(code),
                None => self.err(
                    c,
                    format!("metrics.countries[{i}]"),
                    format!("{:?} is not a two-letter country code", c.value),
                ),
            }
        }
        let mut names = std::collections::HashMap::new();
        let mut rules = self.rules(&raw.rules, slots, "rules", &mut names);
        let profile_from = rules.len();
        let under_attack = raw.under_attack.as_ref();
        rules.extend(self.rules(
            under_attack.map_or(&[][..], |u| &u.rules[..]),
            slots,
            "under_attack.rules",
            &mut names,
        ));
        let defense = self.defense(&raw);
        let uses_country = rules.iter().any(|r| {
            r.matcher.uses_country()
                || matches!(&r.kind, RuleKind::Limit(l) if l.key == KeyKind::Country)
        });
        let uses_host = rules.iter().any(|r| r.matcher.uses_host());
        // (a geo source given but broken has its own error already)
        let geo_given = raw
            .geo
            .as_ref()
            .is_some_and(|g| g.database.is_some() || g.header.is_some());
        if uses_country && !geo_given {
            if let Some((i, key, at)) = raw.rules.iter().enumerate().find_map(|(i, r)| {
                let m = r.matcher.as_ref()?;
                m.country
                    .first()
                    .map(|c| (i, "country", c))
                    .or_else(|| m.country_not.first().map(|c| (i, "country_not", c)))
            }) {
                self.err(
                    at,
                    format!("rules[{i}].match.{key}"),
                    "country rules need geo.database or geo.header",
                );
            } else {
                self.errors.push(ConfigError {
                    file: self.file.clone(),
                    line: 0,
                    column: 0,
                    field: "geo".into(),
                    message: "a limit keyed by country needs geo.database or geo.header".into(),
                });
            }
        }
        Config {
            metric_countries,
            geo,
            decision_log,
            admin_listen,
            reload,
            path: self.file.clone(),
            listen,
            threads,
            work_stealing: raw.work_stealing.as_ref().is_some_and(|w| w.value),
            grace_period,
            graceful_shutdown_timeout,
            upstreams,
            upstream_options,
            max_tracked_keys,
            policy: Policy {
                allow,
                deny,
                deny_mode,
                deny_response: Response::plain(403),
                rules,
                ipv6_prefix: client_ip.ipv6_prefix,
                uses_country,
                uses_host,
                profile_from,
            },
            defense,
            client_ip,
            list_files: std::mem::take(&mut self.list_files),
            loaded_hashes: std::mem::take(&mut self.loaded_hashes),
        }
    }

    /// `bans:`, `autoban:` and `under_attack.auto`.
    fn defense(&mut self, raw: &RawConfig) -> DefenseSettings {
        let mut out = DefenseSettings::default();
        let b = raw.bans.as_ref();
        out.state_file = match b.and_then(|b| b.state_file.as_ref()) {
            Some(f) if f.value.trim() == "off" => None,
            Some(f) if f.value.trim().is_empty() => {
                self.err(f, "bans.state_file", "give a file name, or off");
                None
            }
            Some(f) => Some(self.dir.join(f.value.trim())),
            // systemd's StateDirectory= sets $STATE_DIRECTORY; otherwise beside the config.
            None => Some(
                std::env::var_os("STATE_DIRECTORY")
                    .and_then(|d| std::env::split_paths(&d).next())
                    .unwrap_or_else(|| self.dir.clone())
                    .join("sekisho-bans.json"),
            ),
        };
        for (field, v, default) in [
            (
                "bans.max_bans",
                b.and_then(|b| b.max_bans.as_ref()),
                crate::defense::DEFAULT_MAX_BANS,
            ),
            (
                "bans.max_tracked_offenders",
                b.and_then(|b| b.max_tracked_offenders.as_ref()),
                crate::defense::DEFAULT_MAX_OFFENDERS,
            ),
        ] {
            let n = match v {
                Some(m) if m.value == 0 => {
                    self.err(m, field, "must be at least 1");
                    default
                }
                Some(m) => m.value,
                None => default,
            };
            if field == "bans.max_bans" {
                out.max_bans = n;
            } else {
                out.max_tracked_offenders = n;
            }
        }
        out.ipv6_escalate_after = match b.and_then(|b| b.ipv6_escalate_after.as_ref()) {
            Some(n) if n.value > 65_536 => {
                self.err(
                    n,
                    "bans.ipv6_escalate_after",
                    "at most 65536 (the /64s in a /48); 0 turns escalation off",
                );
                crate::defense::DEFAULT_IPV6_ESCALATE_AFTER
            }
            Some(n) => n.value,
            None => crate::defense::DEFAULT_IPV6_ESCALATE_AFTER,
        };
        let mut names: std::collections::HashMap<&str, usize> = Default::default();
        for (i, p) in raw.autoban.iter().enumerate() {
            let at = format!("autoban[{i}]");
            let name = p.name.value.trim();
            if name.is_empty() {
                self.err(&p.name, format!("{at}.name"), "a policy needs a name");
            } else if let Some(prev) = names.insert(name, i) {
                self.err(
                    &p.name,
                    format!("{at}.name"),
                    format!("duplicate autoban name {name:?} (also autoban[{prev}])"),
                );
            }
            let limited = match p.kind.as_ref().map(|k| k.value.trim()) {
                None | Some("status") => false,
                Some("limited") => true,
                Some(other) => {
                    if let Some(k) = &p.kind {
                        self.err(
                            k,
                            format!("{at}.kind"),
                            format!("{other:?}: use status (responses with a status in `statuses`) or limited (rate-limit refusals)"),
                        );
                    }
                    false
                }
            };
            let trigger = if limited {
                for (key, given) in [
                    (
                        "statuses",
                        p.statuses
                            .first()
                            .map(|s| (s.referenced.line(), s.referenced.column())),
                    ),
                    (
                        "distinct_paths",
                        p.distinct_paths
                            .as_ref()
                            .map(|s| (s.referenced.line(), s.referenced.column())),
                    ),
                ] {
                    if let Some((line, column)) = given {
                        self.errors.push(ConfigError {
                            file: self.file.clone(),
                            line,
                            column,
                            field: format!("{at}.{key}"),
                            message: "only for kind: status".into(),
                        });
                    }
                }
                Trigger::Limited
            } else if p.statuses.is_empty() {
                Trigger::Status(StatusSet::probing())
            } else {
                for (j, st) in p.statuses.iter().enumerate() {
                    if !(100..=599).contains(&st.value) {
                        self.err(
                            st,
                            format!("{at}.statuses[{j}]"),
                            format!("{} is not an HTTP status (100 to 599)", st.value),
                        );
                    }
                }
                Trigger::Status(p.statuses.iter().map(|s| s.value).collect())
            };
            let more_than = p
                .more_than
                .as_ref()
                .map_or(if limited { 10 } else { 20 }, |m| m.value);
            let distinct_paths = match &p.distinct_paths {
                Some(d) if d.value > 64 => {
                    self.err(
                        d,
                        format!("{at}.distinct_paths"),
                        "at most 64 (distinct paths are estimated from a 128-bit sketch)",
                    );
                    64
                }
                Some(d) => d.value.max(1),
                None if limited => 1,
                None => 10.min(more_than.saturating_add(1)).max(1),
            };
            let day = Duration::from_secs(86_400);
            let window = self.duration_in(
                p.window.as_ref(),
                &format!("{at}.window"),
                Duration::from_secs(60),
                Duration::from_secs(1),
                day,
            );
            let ban = self.duration_in(
                p.ban.as_ref(),
                &format!("{at}.ban"),
                Duration::from_secs(600),
                Duration::from_secs(1),
                365 * day,
            );
            let max_ban = self.duration_in(
                p.max_ban.as_ref(),
                &format!("{at}.max_ban"),
                day.max(ban),
                Duration::from_secs(1),
                365 * day,
            );
            if max_ban < ban {
                if let Some(m) = &p.max_ban {
                    self.err(
                        m,
                        format!("{at}.max_ban"),
                        format!(
                            "{:?} is shorter than ban ({})",
                            m.value,
                            humantime::format_duration(ban)
                        ),
                    );
                }
            }
            out.autoban.push(AutobanPolicy {
                name: name.to_string(),
                trigger,
                more_than,
                distinct_paths,
                window,
                ban,
                max_ban: max_ban.max(ban),
                mode: p.mode.unwrap_or_default().into(),
            });
        }
        if let Some(a) = raw.under_attack.as_ref().and_then(|u| u.auto.as_ref()) {
            let v = &a.value;
            if v.requests_per_second.is_none()
                && v.refused_per_second.is_none()
                && v.upstream_5xx_per_second.is_none()
            {
                self.err(
                    a,
                    "under_attack.auto",
                    "give at least one of requests_per_second, refused_per_second, upstream_5xx_per_second",
                );
            }
            for (key, t) in [
                ("requests_per_second", &v.requests_per_second),
                ("refused_per_second", &v.refused_per_second),
                ("upstream_5xx_per_second", &v.upstream_5xx_per_second),
            ] {
                if let Some(t) = t.as_ref().filter(|t| t.value == 0) {
                    self.err(t, format!("under_attack.auto.{key}"), "must be at least 1");
                }
            }
            out.auto = Some(AutoSettings {
                requests_per_second: v.requests_per_second.as_ref().map(|t| t.value),
                refused_per_second: v.refused_per_second.as_ref().map(|t| t.value),
                upstream_5xx_per_second: v.upstream_5xx_per_second.as_ref().map(|t| t.value),
                trip_after: self.duration_in(
                    v.trip_after.as_ref(),
                    "under_attack.auto.for",
                    Duration::from_secs(30),
                    Duration::from_secs(1),
                    Duration::from_secs(3600),
                ),
                quiet: self.duration_in(
                    v.quiet.as_ref(),
                    "under_attack.auto.quiet",
                    Duration::from_secs(300),
                    Duration::from_secs(1),
                    Duration::from_secs(86_400),
                ),
            });
        }
        out
    }

    fn geo(&mut self, raw: Option<&raw::RawGeo>) -> GeoSettings {
        let mut out = GeoSettings::default();
        let Some(raw) = raw else { return out };
        if let Some(d) = &raw.database {
            let path = self.dir.join(&d.value);
            match self.cache.geo(&path) {
                Ok(db) => out.database = Some(db),
                Err(m) => self.err(d, "geo.database", m),
            }
            self.list_files.push(path);
        }
        if let Some(h) = &raw.header {
            match HeaderName::from_bytes(h.value.trim().as_bytes()) {
                Ok(n) => out.header = Some(n),
                Err(_) => self.err(
                    h,
                    "geo.header",
                    format!("{:?} is not a header name", h.value),
                ),
            }
        }
        out
    }

    fn client_ip(&mut self, raw: Option<&raw::RawClientIp>) -> ClientIp {
        let mut trusted = Vec::new();
        let mut header = HeaderName::from_static("x-forwarded-for");
        let mut ipv6_prefix = 64;
        if let Some(c) = raw {
            for (i, t) in c.trusted_proxies.iter().enumerate() {
                match iplist::parse_net(&t.value) {
                    Ok(n) => trusted.push(n),
                    Err(m) => self.err(t, format!("client_ip.trusted_proxies[{i}]"), m),
                }
            }
            if let Some(h) = &c.header {
                match HeaderName::from_bytes(h.value.trim().as_bytes()) {
                    Ok(n) => header = n,
                    Err(_) => self.err(
                        h,
                        "client_ip.header",
                        format!("{:?} is not a header name", h.value),
                    ),
                }
            }
            if let Some(p) = &c.ipv6_prefix {
                if p.value > 128 {
                    self.err(
                        p,
                        "client_ip.ipv6_prefix",
                        "must be from 0 to 128 (64 groups a typical customer's network)",
                    );
                } else {
                    ipv6_prefix = p.value;
                }
            }
        }
        ClientIp {
            trusted_proxies: IpSet::new(trusted),
            header,
            ipv6_prefix,
        }
    }

    fn list(&mut self, raw: Option<&RawList>, field: &str) -> Arc<IpSet> {
        let Some(raw) = raw else {
            return Arc::new(IpSet::default());
        };
        let errors_before = self.errors.len();
        // The set's inputs: inline entries and each file's content hash.
        let mut signature = std::hash::DefaultHasher::new();
        let mut nets: Vec<IpNet> = Vec::new();
        for (i, c) in raw.cidrs.iter().enumerate() {
            c.value.hash(&mut signature);
            match iplist::parse_net(&c.value) {
                Ok(n) => nets.push(n),
                Err(m) => self.err(c, format!("{field}.cidrs[{i}]"), m),
            }
        }
        let mut file_nets: Vec<Arc<Vec<IpNet>>> = Vec::new();
        for (i, f) in raw.files.iter().enumerate() {
            let path = self.dir.join(&f.value);
            let fname = format!("{field}.files[{i}]");
            self.list_files.push(path.clone());
            match self.cache.file(&path) {
                Ok(Cached::Hit(n, hash)) => {
                    (path.as_path(), hash).hash(&mut signature);
                    self.loaded_hashes.push((path.clone(), hash));
                    file_nets.push(n);
                }
                Ok(Cached::Miss(text, hash, stamp)) => {
                    (path.as_path(), hash).hash(&mut signature);
                    self.loaded_hashes.push((path.clone(), hash));
                    match iplist::parse_list(&text) {
                        Ok(n) => {
                            let n = Arc::new(n);
                            self.cache.store(&path, stamp, hash, n.clone());
                            file_nets.push(n);
                        }
                        Err(errs) => {
                            for e in errs {
                                self.errors.push(ConfigError {
                                    file: path.clone(),
                                    line: e.line as u64,
                                    column: e.column as u64,
                                    field: fname.clone(),
                                    message: e.message,
                                });
                            }
                        }
                    }
                }
                Err(e) => self.err(
                    f,
                    fname,
                    format!("cannot read list file {}: {e}", path.display()),
                ),
            }
        }
        if self.errors.len() > errors_before {
            return Arc::new(IpSet::default());
        }
        let signature = signature.finish();
        if let Some(set) = self.cache.set(field, signature) {
            return set;
        }
        let total = nets.len() + file_nets.iter().map(|n| n.len()).sum::<usize>();
        let set = Arc::new(IpSet::new(
            nets.into_iter()
                .chain(file_nets.iter().flat_map(|n| n.iter().copied())),
        ));
        debug_assert_eq!(set.entries(), total);
        self.cache.store_set(field, signature, set.clone());
        set
    }

    /// Rules under `field` (`rules` or `under_attack.rules`); names are unique across both
    /// lists (`seen`: name → where it was first given).
    fn rules(
        &mut self,
        raw: &[RawRule],
        slots: &SlotRegistry,
        field: &str,
        seen: &mut std::collections::HashMap<String, String>,
    ) -> Vec<Rule> {
        let mut rules = Vec::with_capacity(raw.len());
        if raw.len() + seen.len() > usize::from(u16::MAX) {
            self.errors.push(ConfigError {
                file: self.file.clone(),
                line: 0,
                column: 0,
                field: field.into(),
                message: format!("at most {} rules in all", u16::MAX),
            });
            return rules;
        }
        for (i, r) in raw.iter().enumerate() {
            let at = format!("{field}[{i}]");
            let name = r.name.value.trim();
            if name.is_empty() {
                self.err(&r.name, format!("{at}.name"), "a rule needs a name");
            } else if let Some(prev) = seen.insert(name.to_string(), at.clone()) {
                self.err(
                    &r.name,
                    format!("{at}.name"),
                    format!("duplicate rule name {name:?} (also {prev})"),
                );
            }
            let matcher = self.matcher(r.matcher.as_ref(), &at);
            let kind = match (&r.action, &r.limit) {
                (Some(_), None) => RuleKind::Deny,
                (None, Some(l)) => match self.limit(l, &at) {
                    Some(spec) => RuleKind::Limit(spec),
                    None => RuleKind::Deny,
                },
                (Some(a), Some(_)) => {
                    self.err(
                        a,
                        format!("{at}.action"),
                        "give either `action: deny` or `limit:`, not both",
                    );
                    RuleKind::Deny
                }
                (None, None) => {
                    self.err(&r.name, &at, "a rule needs `action: deny` or a `limit:`");
                    RuleKind::Deny
                }
            };
            let response = self.response(r, &at, matches!(kind, RuleKind::Limit(_)));
            let (slot, predecessor) = match &kind {
                RuleKind::Limit(spec) => slots.assign(name, spec),
                RuleKind::Deny => (0, None),
            };
            rules.push(Rule {
                name: name.to_string(),
                matcher,
                kind,
                response,
                mode: r.mode.unwrap_or_default().into(),
                slot,
                predecessor,
            });
        }
        rules
    }

    fn matcher(&mut self, raw: Option<&raw::RawMatch>, at: &str) -> Matcher {
        let Some(m) = raw else {
            return Matcher::default();
        };
        let mut out = Matcher::default();
        for (key, v) in [("path", &m.path), ("path_prefix", &m.path_prefix)] {
            if let Some(p) = v {
                if !p.value.starts_with('/') {
                    self.err(
                        p,
                        format!("{at}.match.{key}"),
                        format!("{:?} must start with '/'", p.value),
                    );
                } else if p.value.contains(['?', '#']) {
                    self.err(
                        p,
                        format!("{at}.match.{key}"),
                        format!("{:?}: paths are matched without the query string; use path_regex for anything else", p.value),
                    );
                } else if crate::engine::normalize_path(&p.value) != p.value.as_str() {
                    self.err(
                        p,
                        format!("{at}.match.{key}"),
                        format!(
                            "{:?} can never match: requests are matched on their normalised path ({:?})",
                            p.value,
                            crate::engine::normalize_path(&p.value)
                        ),
                    );
                }
            }
        }
        out.path = m.path.as_ref().map(|p| p.value.clone());
        out.path_prefix = m.path_prefix.as_ref().map(|p| p.value.clone());
        out.path_regex = m
            .path_regex
            .as_ref()
            .and_then(|r| self.regex(r, &format!("{at}.match.path_regex")));
        out.user_agent = m.user_agent.as_ref().and_then(|r| {
            let field = format!("{at}.match.user_agent");
            match regex::bytes::RegexBuilder::new(&r.value)
                .size_limit(1 << 20)
                .build()
            {
                Ok(re) => Some(re),
                Err(e) => {
                    self.err(r, field, regex_message(&e.to_string()));
                    None
                }
            }
        });
        for (i, meth) in m.methods.iter().enumerate() {
            let up = meth.value.trim().to_ascii_uppercase();
            if up.is_empty() || !up.bytes().all(|b| b.is_ascii_uppercase()) {
                self.err(
                    meth,
                    format!("{at}.match.methods[{i}]"),
                    format!("{:?} is not an HTTP method (GET, POST, ...)", meth.value),
                );
            } else {
                out.methods.push(up);
            }
        }
        for (key, list, out_list) in [
            ("country", &m.country, &mut out.country),
            ("country_not", &m.country_not, &mut out.country_not),
        ] {
            for (i, c) in list.iter().enumerate() {
                match Country::parse(c.value.trim().as_bytes()) {
                    Some(code) => out_list.push(code),
                    None => self.errors.push(ConfigError {
                        file: self.file.clone(),
                        line: c.referenced.line(),
                        column: c.referenced.column(),
                        field: format!("{at}.match.{key}[{i}]"),
                        message: format!("{:?} is not a two-letter country code (e.g. JP, US) or \"??\" for unknown", c.value),
                    }),
                }
            }
        }
        if let Some(h) = &m.host {
            let v = h.value.trim();
            let bad_star = v.strip_prefix("*.").unwrap_or(v).contains('*');
            if v.is_empty() || bad_star || h.value.contains(['/', ' ', ':']) {
                self.err(
                    h,
                    format!("{at}.match.host"),
                    format!(
                        "{:?} is not a host name (example.com or *.example.com, no port)",
                        h.value
                    ),
                );
            } else {
                out.host = Some(HostMatch::parse(&h.value));
            }
        }
        out
    }

    fn regex(&mut self, r: &S<String>, field: &str) -> Option<Regex> {
        match RegexBuilder::new(&r.value).size_limit(1 << 20).build() {
            Ok(re) => Some(re),
            Err(e) => {
                let msg = e
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                self.err(r, field, format!("bad regex: {msg}"));
                None
            }
        }
    }

    fn limit(&mut self, l: &S<raw::RawLimit>, at: &str) -> Option<LimitSpec> {
        let rate = &l.value.rate;
        let (count, period) = match Quota::parse_rate(&rate.value) {
            Ok(r) => r,
            Err(e) => {
                self.err(rate, format!("{at}.limit.rate"), e.to_string());
                return None;
            }
        };
        let burst = match &l.value.burst {
            Some(b) => match NonZeroU32::new(b.value) {
                Some(n) => n,
                None => {
                    self.err(b, format!("{at}.limit.burst"), "must be at least 1");
                    return None;
                }
            },
            None => count,
        };
        let Some(quota) = Quota::new(count, period, burst) else {
            self.err(
                rate,
                format!("{at}.limit"),
                "rate times burst is out of range",
            );
            return None;
        };
        let key = match &l.value.key {
            None => KeyKind::Ip,
            Some(k) => match k.value.trim() {
                "ip" => KeyKind::Ip,
                "ip_path" => KeyKind::IpPath,
                "country" => KeyKind::Country,
                other => match other.strip_prefix("header:") {
                    Some(h) => match HeaderName::from_bytes(h.trim().as_bytes()) {
                        Ok(n) => KeyKind::Header(n),
                        Err(_) => {
                            self.err(
                                k,
                                format!("{at}.limit.key"),
                                format!("{h:?} is not a header name"),
                            );
                            return None;
                        }
                    },
                    None => {
                        self.err(
                            k,
                            format!("{at}.limit.key"),
                            format!("{other:?}: use ip, ip_path, country or header:NAME"),
                        );
                        return None;
                    }
                },
            },
        };
        Some(LimitSpec { quota, key })
    }

    fn response(&mut self, r: &RawRule, at: &str, is_limit: bool) -> Response {
        let Some(resp) = &r.response else {
            return Response::plain(403);
        };
        let status = match &resp.status {
            Some(s) if !(200..=599).contains(&s.value) || matches!(s.value, 204 | 205 | 304) => {
                self.err(s, format!("{at}.response.status"), format!("{} cannot be a refusal: use a status from 200 to 599 that carries a body (403 is the default; 429 for limits is common)", s.value));
                403
            }
            Some(s) => s.value,
            None => 403,
        };
        let mut out = Response::plain(status);
        if let Some(b) = &resp.body {
            out.body = Bytes::from(b.value.clone());
        }
        if let Some(ra) = resp.retry_after.as_ref().filter(|ra| ra.value) {
            if is_limit {
                out.retry_after = true;
            } else {
                self.err(
                    ra,
                    format!("{at}.response.retry_after"),
                    "retry_after applies to limit rules only",
                );
            }
        }
        out
    }
}

/// A regex error on one line.
fn regex_message(e: &str) -> String {
    format!(
        "bad regex: {}",
        e.split_whitespace().collect::<Vec<_>>().join(" ")
    )
}

/// Parses `250ms`, `5s`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 250ms, 5s, 2m, 1h)"))?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" | "min" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "" => return Err(format!("{s:?} needs a unit (ms, s, m, h)")),
        u => return Err(format!("unknown unit {u:?} in {s:?}; use ms, s, m or h")),
    };
    Ok(d)
}

#[cfg(test)]
mod tests;
