//! The serde layer: structs that mirror the YAML exactly, with unknown keys refused and every
//! value that is validated later wrapped in [`Spanned`] so its error can name line and column.

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::engine::Mode;

/// `S<T>`: a value with the position it was written at.
pub type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub listen: Vec<S<String>>,
    pub threads: Option<S<usize>>,
    pub work_stealing: Option<S<bool>>,
    pub grace_period: Option<S<String>>,
    pub graceful_shutdown_timeout: Option<S<String>>,
    #[serde(default)]
    pub upstreams: Vec<S<String>>,
    pub upstream_options: Option<RawUpstreamOptions>,
    pub client_ip: Option<RawClientIp>,
    pub lists: Option<RawLists>,
    pub max_tracked_keys: Option<S<usize>>,
    pub admin: Option<RawAdmin>,
    pub geo: Option<RawGeo>,
    pub decision_log: Option<RawDecisionLog>,
    pub metrics: Option<RawMetrics>,
    pub reload: Option<RawReload>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
    pub bans: Option<RawBans>,
    #[serde(default)]
    pub autoban: Vec<RawAutoban>,
    pub under_attack: Option<RawUnderAttack>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBans {
    pub state_file: Option<S<String>>,
    pub max_bans: Option<S<usize>>,
    pub max_tracked_offenders: Option<S<usize>>,
    pub ipv6_escalate_after: Option<S<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAutoban {
    pub name: S<String>,
    pub kind: Option<S<String>>,
    #[serde(default)]
    pub statuses: Vec<S<u16>>,
    pub more_than: Option<S<u32>>,
    pub distinct_paths: Option<S<u32>>,
    pub window: Option<S<String>>,
    pub ban: Option<S<String>>,
    pub max_ban: Option<S<String>>,
    pub mode: Option<RawMode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUnderAttack {
    pub auto: Option<S<RawAuto>>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuto {
    pub requests_per_second: Option<S<u64>>,
    pub refused_per_second: Option<S<u64>>,
    pub upstream_5xx_per_second: Option<S<u64>>,
    #[serde(rename = "for")]
    pub trip_after: Option<S<String>>,
    pub quiet: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    #[serde(default)]
    pub countries: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDecisionLog {
    pub path: S<String>,
    pub sample_allowed: Option<S<f64>>,
    pub queue: Option<S<usize>>,
    pub max_lines_per_second: Option<S<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGeo {
    pub database: Option<S<String>>,
    pub header: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReload {
    pub watch: Option<bool>,
    pub debounce: Option<S<String>>,
    pub poll_interval: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamOptions {
    pub connect_timeout: Option<S<String>>,
    pub read_timeout: Option<S<String>>,
    pub write_timeout: Option<S<String>>,
    pub idle_timeout: Option<S<String>>,
    pub down_for: Option<S<String>>,
    pub pool_size: Option<S<usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientIp {
    #[serde(default)]
    pub trusted_proxies: Vec<S<String>>,
    pub header: Option<S<String>>,
    pub ipv6_prefix: Option<S<u8>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLists {
    pub allow: Option<RawList>,
    pub deny: Option<RawList>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawList {
    #[serde(default)]
    pub cidrs: Vec<S<String>>,
    #[serde(default)]
    pub files: Vec<S<String>>,
    pub mode: Option<S<RawMode>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: S<String>,
    #[serde(rename = "match")]
    pub matcher: Option<RawMatch>,
    pub action: Option<S<Action>>,
    pub limit: Option<S<RawLimit>>,
    pub response: Option<RawResponse>,
    pub mode: Option<RawMode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub path: Option<S<String>>,
    pub path_prefix: Option<S<String>>,
    pub path_regex: Option<S<String>>,
    #[serde(default)]
    pub methods: Vec<S<String>>,
    pub host: Option<S<String>>,
    pub user_agent: Option<S<String>>,
    #[serde(default)]
    pub country: Vec<S<String>>,
    #[serde(default)]
    pub country_not: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    pub rate: S<String>,
    pub burst: Option<S<u32>>,
    pub key: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResponse {
    pub status: Option<S<u16>>,
    pub body: Option<S<String>>,
    pub retry_after: Option<S<bool>>,
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

/// `action:` of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Refuse every matching request.
    Deny,
}

impl From<RawMode> for Mode {
    fn from(m: RawMode) -> Self {
        match m {
            RawMode::Enforce => Mode::Enforce,
            RawMode::Count => Mode::Count,
        }
    }
}
