//! `reload:`: how changes to the config and list files are noticed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{format_duration, RawConfig, Validator, S};

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

/// `reload:` as `sekisho config` prints it.
#[derive(Serialize)]
pub(super) struct EffectiveReload {
    watch: bool,
    debounce: String,
    poll_interval: String,
}

impl ReloadSettings {
    pub(super) fn effective(&self) -> EffectiveReload {
        EffectiveReload {
            watch: self.watch,
            debounce: format_duration(self.debounce),
            poll_interval: format_duration(self.poll_interval),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReload {
    pub watch: Option<bool>,
    pub debounce: Option<S<String>>,
    pub poll_interval: Option<S<String>>,
}

impl Validator<'_> {
    /// `reload:`.
    pub(super) fn reload(&mut self, raw: &RawConfig) -> ReloadSettings {
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
        reload
    }
}
