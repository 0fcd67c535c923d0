//! `access_log:`: one line per request, in the combined format or as JSON (restart to change).

use serde::{Deserialize, Serialize};

use super::{effective, RawConfig, Validator, S};
use crate::metrics::access_log::Format;
use crate::metrics::line_writer::Target;

/// `access_log:`.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogSettings {
    /// Where: a file (appended; reopened on SIGUSR1), or stdout for `-`.
    pub target: Target,
    /// `combined` (default) or `json`.
    pub format: Format,
    /// Lines queued before dropping (default 65536).
    pub queue: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    pub path: S<String>,
    pub format: Option<S<String>>,
    pub queue: Option<S<usize>>,
}

/// `access_log:` as `sekisho config` prints it.
#[derive(Serialize)]
pub(super) struct EffectiveAccessLog {
    path: String,
    format: &'static str,
    queue: usize,
}

impl AccessLogSettings {
    pub(super) fn effective(&self) -> EffectiveAccessLog {
        EffectiveAccessLog {
            path: effective::target(&self.target),
            format: match self.format {
                Format::Combined => "combined",
                Format::Json => "json",
            },
            queue: self.queue,
        }
    }
}

impl Validator<'_> {
    /// Where a log file named `p` in the config goes: a relative name is resolved against
    /// `$LOGS_DIRECTORY` when it is set (systemd's `LogsDirectory=`: `/var/log/sekisho`), else
    /// against the config's folder.
    pub(super) fn log_file(&self, p: &str) -> std::path::PathBuf {
        std::env::var_os("LOGS_DIRECTORY")
            .and_then(|d| std::env::split_paths(&d).next())
            .unwrap_or_else(|| self.dir.clone())
            .join(p)
    }

    /// `access_log:`. A relative `path` is resolved against `$LOGS_DIRECTORY` when it is set
    /// (systemd's `LogsDirectory=`: `/var/log/sekisho`), else against the config's folder.
    pub(super) fn access_log(&mut self, raw: &RawConfig) -> Option<AccessLogSettings> {
        let a = raw.access_log.as_ref()?;
        let target = match a.path.value.trim() {
            "" => {
                self.err(
                    &a.path,
                    "access_log.path",
                    "give a file name, or \"-\" for stdout",
                );
                Target::Stdout
            }
            "-" => Target::Stdout,
            p => {
                // appended to at start: `run` would refuse to start without it
                let path = self.log_file(p);
                if let Some(why) = super::paths::cannot_write(&path, true) {
                    self.start_only_file(
                        &a.path,
                        "access_log.path",
                        format!("cannot open {}: {why}", path.display()),
                    );
                }
                Target::File(path)
            }
        };
        let format = match a.format.as_ref() {
            None => Format::Combined,
            Some(f) => match f.value.trim() {
                "combined" => Format::Combined,
                "json" => Format::Json,
                other => {
                    self.err(
                        f,
                        "access_log.format",
                        format!("{other:?} is not a format; use combined or json"),
                    );
                    Format::Combined
                }
            },
        };
        let queue = match &a.queue {
            Some(q) if q.value == 0 => {
                self.err(q, "access_log.queue", "must be at least 1");
                65_536
            }
            Some(q) => q.value,
            None => 65_536,
        };
        Some(AccessLogSettings {
            target,
            format,
            queue,
        })
    }
}
