//! `listen:` and the process settings beside it: `threads`, `work_stealing`, `grace_period`,
//! `graceful_shutdown_timeout` (all read at start; a reload keeps the running values).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use super::{format_duration, Config, RawConfig, Validator};

/// `listen:` and the process settings, validated.
pub(super) struct Process {
    pub listen: Vec<SocketAddr>,
    pub threads: usize,
    pub work_stealing: bool,
    pub grace_period: Duration,
    pub graceful_shutdown_timeout: Duration,
}

/// The top-level process keys as `sekisho config` prints them.
#[derive(Serialize)]
pub(super) struct EffectiveProcess {
    listen: Vec<String>,
    /// Given, or one per CPU of this machine.
    threads: usize,
    work_stealing: bool,
    grace_period: String,
    graceful_shutdown_timeout: String,
}

/// `listen:` and the process settings of `c`.
pub(super) fn effective(c: &Config) -> EffectiveProcess {
    EffectiveProcess {
        listen: c.listen.iter().map(ToString::to_string).collect(),
        threads: c.threads,
        work_stealing: c.work_stealing,
        grace_period: format_duration(c.grace_period),
        graceful_shutdown_timeout: format_duration(c.graceful_shutdown_timeout),
    }
}

impl Validator<'_> {
    /// `listen:`, `threads:`, `work_stealing:`, `grace_period:`, `graceful_shutdown_timeout:`.
    pub(super) fn process(&mut self, raw: &RawConfig) -> Process {
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

        Process {
            listen,
            threads,
            work_stealing: raw.work_stealing.as_ref().is_some_and(|w| w.value),
            grace_period,
            graceful_shutdown_timeout,
        }
    }
}
