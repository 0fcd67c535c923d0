//! `listen:` and the process settings beside it: `threads`, `work_stealing`, `grace_period`,
//! `graceful_shutdown_timeout`, `upgrade_socket` (all read at start; a reload keeps the running
//! values).

use std::net::SocketAddr;
use std::path::PathBuf;
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
    pub upgrade_socket: PathBuf,
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
    upgrade_socket: String,
}

/// `listen:` and the process settings of `c`.
pub(super) fn effective(c: &Config) -> EffectiveProcess {
    EffectiveProcess {
        listen: c.listen.iter().map(ToString::to_string).collect(),
        threads: c.threads,
        work_stealing: c.work_stealing,
        grace_period: format_duration(c.grace_period),
        graceful_shutdown_timeout: format_duration(c.graceful_shutdown_timeout),
        upgrade_socket: c.upgrade_socket.display().to_string(),
    }
}

impl Validator<'_> {
    /// `listen:`, `threads:`, `work_stealing:`, `grace_period:`, `graceful_shutdown_timeout:`,
    /// `upgrade_socket:`.
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
        let upgrade_socket = self.upgrade_socket(raw);
        Process {
            listen,
            threads,
            work_stealing: raw.work_stealing.as_ref().is_some_and(|w| w.value),
            grace_period,
            graceful_shutdown_timeout,
            upgrade_socket,
        }
    }

    /// `upgrade_socket:`: the Unix socket a new process (`sekisho run --upgrade`) takes the
    /// listening sockets over from; relative to the config's folder. Default:
    /// `sekisho-upgrade.sock` in systemd's `$RUNTIME_DIRECTORY`, else beside the config. Only
    /// used at an upgrade, so it is not checked for being writable here.
    fn upgrade_socket(&mut self, raw: &RawConfig) -> PathBuf {
        match &raw.upgrade_socket {
            Some(s) if s.value.trim().is_empty() => {
                self.err(s, "upgrade_socket", "give a file name");
                self.dir.join(UPGRADE_SOCKET)
            }
            Some(s) => {
                let path = self.dir.join(s.value.trim());
                // sun_path holds 107 bytes and a NUL
                if path.as_os_str().len() > 107 {
                    self.err(
                        s,
                        "upgrade_socket",
                        format!(
                            "{} is longer than a Unix socket path may be (107 bytes)",
                            path.display()
                        ),
                    );
                }
                path
            }
            None => std::env::var_os("RUNTIME_DIRECTORY")
                .and_then(|d| std::env::split_paths(&d).next())
                .unwrap_or_else(|| self.dir.clone())
                .join(UPGRADE_SOCKET),
        }
    }
}

/// The upgrade socket's file name when `upgrade_socket` is not given.
const UPGRADE_SOCKET: &str = "sekisho-upgrade.sock";
