//! `admin:`, `metrics:` and `decision_log:`: how sekisho is watched.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{codes, effective, paths, Config, RawConfig, Validator, S};
use crate::engine::Country;

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<S<String>>,
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

/// The admin listener's default port, on 127.0.0.1. 9090 is Prometheus's own port, so on a host
/// that runs Prometheus the admin listener never started. 9248 is in the Prometheus project's
/// default port allocations (9100-9999, the range exporters take their ports from), held by a
/// "coming soon" entry that never shipped: no well-known exporter listens there.
pub const DEFAULT_ADMIN_PORT: u16 = 9248;

/// `admin:` as `sekisho config` prints it.
#[derive(Serialize)]
pub(super) struct EffectiveAdmin {
    listen: String,
}

/// `metrics:` as `sekisho config` prints it.
#[derive(Serialize)]
pub(super) struct EffectiveMetrics {
    countries: Vec<String>,
}

/// `decision_log:` as `sekisho config` prints it.
#[derive(Serialize)]
pub(super) struct EffectiveDecisionLog {
    path: String,
    sample_allowed: f64,
    queue: usize,
    max_lines_per_second: u64,
}

/// `admin:` and `metrics:` of `c`.
pub(super) fn effective(c: &Config) -> (EffectiveAdmin, EffectiveMetrics) {
    let listen = c
        .admin_listen
        .map_or_else(|| "off".into(), |a| a.to_string());
    let countries = c.metric_countries.iter().map(|c| c.as_str().into());
    (
        EffectiveAdmin { listen },
        EffectiveMetrics {
            countries: countries.collect(),
        },
    )
}

impl DecisionLogSettings {
    pub(super) fn effective(&self) -> EffectiveDecisionLog {
        EffectiveDecisionLog {
            path: effective::target(&self.target),
            sample_allowed: self.sample_allowed,
            queue: self.queue,
            max_lines_per_second: self.max_lines_per_second,
        }
    }
}

impl Validator<'_> {
    /// `admin.listen`: the admin HTTP listener; `None` when set to `off`.
    pub(super) fn admin_listen(&mut self, raw: &RawConfig) -> Option<SocketAddr> {
        match raw.admin.as_ref().and_then(|a| a.listen.as_ref()) {
            None => Some(SocketAddr::from(([127, 0, 0, 1], DEFAULT_ADMIN_PORT))),
            Some(l) if l.value.trim() == "off" => None,
            Some(l) => match l.value.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    self.err(
                        l,
                        "admin.listen",
                        format!(
                            "{:?} is not an address:port (e.g. \"127.0.0.1:9248\"), or off",
                            l.value
                        ),
                    );
                    None
                }
            },
        }
    }

    /// `decision_log:`.
    pub(super) fn decision_log(&mut self, raw: &RawConfig) -> Option<DecisionLogSettings> {
        raw.decision_log.as_ref().map(|d| {
            use crate::metrics::decision_log::Target;
            let target = match d.path.value.trim() {
                "-" => Target::Stdout,
                p => {
                    // appended to at start: `run` would refuse to start without it
                    let path = self.log_file(p);
                    if let Some(why) = paths::cannot_write(&path, true) {
                        self.start_only_file(
                            &d.path,
                            "decision_log.path",
                            format!("cannot open {}: {why}", path.display()),
                        );
                    }
                    Target::File(path)
                }
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
        })
    }

    /// `metrics.countries`: countries broken out in `sekisho_country_requests_total`.
    pub(super) fn metric_countries(&mut self, raw: &RawConfig) -> Vec<Country> {
        let mut metric_countries = Vec::new();
        for (i, c) in raw
            .metrics
            .iter()
            .flat_map(|m| m.countries.iter())
            .enumerate()
        {
            match codes::country(&c.value) {
                Ok(code) => metric_countries.push(code),
                Err(message) => self.err(c, format!("metrics.countries[{i}]"), message),
            }
        }
        metric_countries
    }
}
