//! YAML → serde structs ([`RawConfig`] and one per section) → a validated [`Config`] the
//! engine and proxy use.
//!
//! Every string with meaning (addresses, CIDRs, rates, durations, regexes) is turned into its
//! type here, once; the request path never parses config. Errors are collected, not stopped at
//! the first, and each names file, line, column and field ([`ConfigError`]). `sekisho check` and
//! the reload path both go through [`load`]. A config that is valid but says something almost
//! never meant (a deny rule matching every request, a list entry covering every address) loads
//! with [`Config::warnings`] ([`ConfigWarning`], same positions); the caller prints or logs
//! them. This module opens files but no sockets.
//!
//! Reading is two steps. `structure.rs` reads the text into [`RawConfig`] and reports every
//! structural error at once (unknown keys, wrong types, duplicate keys: serde alone stops at
//! the first), finding each error's node in the YAML event stream (`tree.rs`); only a sound
//! structure goes on to the [`Validator`], which checks the values, section by section.
//!
//! YAML is read with `serde-saphyr`: pure Rust (no `unsafe-libyaml`, which RUSTSEC-2024-0449
//! marks unmaintained), maintained, and its errors and [`serde_saphyr::Spanned`] values carry
//! line and column.
//!
//! One file per section, each with its serde type, its validation and its defaults side by
//! side: `listen.rs`, `upstreams.rs`, `client_ip.rs`, `lists.rs`, `rules.rs`, `geo.rs`,
//! `defense.rs`, `admin.rs` (with `metrics:` and `decision_log:`), `access_log.rs` and `reload.rs`. This file
//! keeps loading, the [`Config`] type, the shared value parsers and the glue that calls each
//! section; a new section is one new file and one line here.
//!
//! The way back: [`Config::effective`] (`sekisho config`, in `effective.rs`) writes the
//! validated model as YAML, each section by a `fn effective` in its own file, beside its
//! parsing and defaults.

mod access_log;
mod admin;
mod bytes;
mod cache;
mod client_ip;
mod cluster;
mod codes;
mod connections;
mod defense;
mod effective;
mod error;
mod geo;
mod listen;
pub use listen::{TlsListener, TlsVersion};
mod lists;
pub(crate) mod paths;
mod reload;
mod rules;
mod structure;
mod suggest;
mod tree;
mod upstreams;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::defense::DefenseSettings;
use crate::engine::{Country, Mode, Policy, Response, SlotRegistry};
use crate::limiter::Quota;
pub use access_log::AccessLogSettings;
pub use admin::{DecisionLogSettings, DEFAULT_ADMIN_PORT};
pub use cache::{content_hash, FileStamp, ListCache};
pub use client_ip::ClientIp;
pub use cluster::ClusterSettings;
pub use connections::ConnectionSettings;
pub use error::{field_path_at, ConfigError, ConfigErrors, ConfigWarning};
pub use geo::GeoSettings;
pub use lists::{ListFile, ListSource, ListSources};
pub use reload::ReloadSettings;
pub use rules::match_line;
pub use rules::DEFAULT_MAX_TRACKED_KEYS;
pub use upstreams::{Upstream, UpstreamOptions, UpstreamTls};

/// A validated config.
#[derive(Debug)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// `listen:` (restart to change).
    pub listen: Vec<SocketAddr>,
    /// `listen[i].tls`, one entry per `listen` address: `None` for plaintext. Certificates are
    /// read again on every reload; the other TLS settings at start.
    pub tls: Vec<Option<std::sync::Arc<listen::TlsListener>>>,
    /// `threads:` (restart to change).
    pub threads: usize,
    /// `work_stealing:` (restart to change): one shared scheduler over the threads instead of
    /// each connection staying on the thread that accepted it (default false).
    pub work_stealing: bool,
    /// `grace_period:`: how long a graceful stop keeps serving in-flight requests.
    pub grace_period: Duration,
    /// `graceful_shutdown_timeout:`: the hard limit after the grace period.
    pub graceful_shutdown_timeout: Duration,
    /// `upgrade_socket:`, resolved: where `sekisho run --upgrade` takes the listening sockets
    /// over from the running process (restart to change).
    pub upgrade_socket: PathBuf,
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
    /// `lists:`: the entries and files the allow and deny sets of [`Config::policy`] were
    /// built from.
    pub list_sources: ListSources,
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
    /// `connections:` (restart to change).
    pub connections: ConnectionSettings,
    /// `geo:`.
    pub geo: GeoSettings,
    /// `decision_log:` (restart to change).
    pub decision_log: Option<DecisionLogSettings>,
    /// `access_log:` (restart to change).
    pub access_log: Option<AccessLogSettings>,
    /// `metrics.countries`: countries broken out in `sekisho_country_requests_total`.
    pub metric_countries: Vec<Country>,
    /// `bans:`, `autoban:` and `under_attack.auto`.
    pub defense: DefenseSettings,
    /// `cluster:` (restart to change); `None`: this instance shares nothing.
    pub cluster: Option<ClusterSettings>,
    /// What is valid but almost never meant, in file order ([`ConfigWarning`]); the caller
    /// prints or logs them, once per load.
    pub warnings: Vec<ConfigWarning>,
}

impl Config {
    /// The TLS settings of the listener on `addr`; `None` for a plaintext one or an address
    /// this config does not list.
    pub fn tls_of(&self, addr: SocketAddr) -> Option<std::sync::Arc<TlsListener>> {
        let i = self.listen.iter().position(|a| *a == addr)?;
        self.tls.get(i).cloned().flatten()
    }
}

/// `S<T>`: a value with the position it was written at.
pub type S<T> = Spanned<T>;

/// The whole file as written: one field a section, each section's type in its own file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub listen: Vec<S<listen::RawListen>>,
    pub threads: Option<S<usize>>,
    pub work_stealing: Option<S<bool>>,
    pub grace_period: Option<S<String>>,
    pub graceful_shutdown_timeout: Option<S<String>>,
    pub upgrade_socket: Option<S<String>>,
    #[serde(default)]
    pub upstreams: Vec<S<String>>,
    pub upstream_options: Option<upstreams::RawUpstreamOptions>,
    pub client_ip: Option<client_ip::RawClientIp>,
    pub lists: Option<lists::RawLists>,
    pub max_tracked_keys: Option<S<usize>>,
    pub admin: Option<admin::RawAdmin>,
    pub geo: Option<geo::RawGeo>,
    pub decision_log: Option<admin::RawDecisionLog>,
    pub access_log: Option<access_log::RawAccessLog>,
    pub metrics: Option<admin::RawMetrics>,
    pub reload: Option<reload::RawReload>,
    pub connections: Option<connections::RawConnections>,
    pub cluster: Option<cluster::RawCluster>,
    #[serde(default)]
    pub rules: Vec<rules::RawRule>,
    pub bans: Option<defense::RawBans>,
    #[serde(default)]
    pub autoban: Vec<defense::RawAutoban>,
    pub under_attack: Option<defense::RawUnderAttack>,
}

/// `mode:` of a rule, list or autoban policy, as written; [`Mode`] once read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RawMode {
    /// Refusals are sent.
    #[default]
    Enforce,
    /// Refusals are only counted and logged (shadow mode).
    Count,
}

impl From<RawMode> for Mode {
    fn from(m: RawMode) -> Self {
        match m {
            RawMode::Enforce => Mode::Enforce,
            RawMode::Count => Mode::Count,
        }
    }
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
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::whole_file(
            path,
            format!("cannot read the config {}: {e}", path.display()),
        )
    })?;
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
    let raw: RawConfig = structure::read(text, path).map_err(|mut errors| {
        errors.sort_by_key(|e| (e.line, e.column));
        ConfigErrors(errors)
    })?;
    let mut v = Validator {
        file: path.to_path_buf(),
        dir: path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
        errors: Vec::new(),
        warnings: Vec::new(),
        list_files: Vec::new(),
        loaded_hashes: vec![(path.to_path_buf(), content_hash(text.as_bytes()))],
        cache,
        has_cluster: false,
    };
    let mut config = v.config(raw, slots);
    if v.errors.is_empty() {
        v.warnings
            .sort_by_key(|w| (w.0.file.clone(), w.0.line, w.0.column));
        config.warnings = v.warnings;
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
    /// Warnings; dropped when there are errors (those are fixed first).
    warnings: Vec<ConfigWarning>,
    list_files: Vec<PathBuf>,
    loaded_hashes: Vec<(PathBuf, u64)>,
    cache: &'c mut ListCache,
    /// Whether the file has a `cluster:` section (`scope: cluster` needs one).
    has_cluster: bool,
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

    /// A token bucket from `rate` (`10/s`) and `burst` (`default_burst` of the rate's count
    /// when absent), errors named under `base` (`base.rate`, `base.burst`, `base`).
    fn quota(
        &mut self,
        rate: &S<String>,
        burst: Option<&S<u32>>,
        default_burst: impl FnOnce(NonZeroU32) -> NonZeroU32,
        base: &str,
    ) -> Option<Quota> {
        let (count, period) = match Quota::parse_rate(&rate.value) {
            Ok(r) => r,
            Err(e) => {
                self.err(rate, format!("{base}.rate"), e.to_string());
                return None;
            }
        };
        let burst = match burst {
            Some(b) => match NonZeroU32::new(b.value) {
                Some(n) => n,
                None => {
                    self.err(b, format!("{base}.burst"), "must be at least 1");
                    return None;
                }
            },
            None => default_burst(count),
        };
        let quota = Quota::new(count, period, burst);
        if quota.is_none() {
            self.err(rate, base, "rate times burst is out of range");
        }
        quota
    }

    /// A file only a start opens (a log) cannot be opened: an error for `check` and a start;
    /// on a reload a warning, since the running proxy keeps the file it opened and a reload
    /// that failed for it would keep every other change out too.
    fn start_only_file<T>(&mut self, at: &S<T>, field: &str, message: String) {
        if self.cache.running() {
            self.warn(
                at,
                field,
                format!(
                    "{message} (the running proxy keeps the file it opened; a restart would fail)"
                ),
            );
        } else {
            self.err(at, field, message);
        }
    }

    fn warn<T>(&mut self, at: &S<T>, field: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(ConfigWarning(ConfigError {
            file: self.file.clone(),
            line: at.referenced.line(),
            column: at.referenced.column(),
            field: field.into(),
            message: message.into(),
        }));
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
                    format!(
                        "{:?} is out of range ({} to {})",
                        s.value,
                        format_duration(min),
                        format_duration(max)
                    ),
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
        let process = self.process(&raw);
        let (upstreams, upstream_options) = self.upstreams(&raw);
        let client_ip = self.client_ip(raw.client_ip.as_ref());
        let max_tracked_keys = self.max_tracked_keys(&raw);
        let lists = self.lists(raw.lists.as_ref());
        let admin_listen = self.admin_listen(&raw);
        let reload = self.reload(&raw);
        let connections = self.connections(&raw);
        let geo = self.geo(raw.geo.as_ref());
        let decision_log = self.decision_log(&raw);
        let access_log = self.access_log(&raw);
        let metric_countries = self.metric_countries(&raw);
        let cluster = self.cluster(&raw);
        // a section with errors is still there: its rules are not also told it is missing
        self.has_cluster = raw.cluster.is_some();
        let rule_set = self.rule_set(&raw, slots);
        let defense = self.defense(&raw);
        Config {
            metric_countries,
            geo,
            decision_log,
            access_log,
            admin_listen,
            reload,
            connections,
            cluster,
            path: self.file.clone(),
            listen: process.listen,
            tls: process.tls,
            threads: process.threads,
            work_stealing: process.work_stealing,
            grace_period: process.grace_period,
            graceful_shutdown_timeout: process.graceful_shutdown_timeout,
            upgrade_socket: process.upgrade_socket,
            upstreams,
            upstream_options,
            max_tracked_keys,
            policy: Policy {
                allow: lists.allow,
                deny: lists.deny,
                deny_mode: lists.deny_mode,
                deny_response: Response::plain(403),
                rules: rule_set.rules,
                ipv6_prefix: client_ip.ipv6_prefix,
                uses_country: rule_set.uses_country,
                uses_host: rule_set.uses_host,
                profile_from: rule_set.profile_from,
            },
            list_sources: lists.sources,
            defense,
            client_ip,
            list_files: std::mem::take(&mut self.list_files),
            loaded_hashes: std::mem::take(&mut self.loaded_hashes),
            warnings: Vec::new(),
        }
    }
}

/// Parses `250ms`, `5s`, `2m` (or `2min`), `1h`, `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 250ms, 5s, 2m, 1h, 7d)"))?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" | "min" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86_400)),
        "" => return Err(format!("{s:?} needs a unit (ms, s, m, h, d)")),
        u => return Err(format!("unknown unit {u:?} in {s:?}; use ms, s, m, h or d")),
    };
    Ok(d)
}

/// `d` as [`parse_duration`] reads it, in the largest unit that writes it whole: `1d`, `90m`,
/// `1500ms`, `0s`.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    if d.subsec_nanos() % 1_000_000 != 0 {
        return format!("{d:?}");
    }
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests;
