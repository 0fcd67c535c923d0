//! `bans:`, `autoban:` and `under_attack:` (its `auto` switch; its rules are read with the
//! others in `rules.rs`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::effective::{self, maybe, Maybe};
use super::rules::{self, EffectiveRule, RawRule};
use super::{format_duration, paths, Config, ConfigError, RawConfig, RawMode, Validator, S};
use crate::defense::{AutoSettings, AutobanPolicy, DefenseSettings, StatusSet, Trigger};

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

/// `bans:` as `sekisho config` prints it.
#[derive(Serialize)]
pub(super) struct EffectiveBans {
    state_file: String,
    max_bans: usize,
    max_tracked_offenders: usize,
    ipv6_escalate_after: u32,
}

/// An `autoban:` policy as `sekisho config` prints it.
#[derive(Serialize)]
pub(super) struct EffectiveAutoban {
    name: String,
    kind: &'static str,
    /// `kind: status` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    statuses: Option<Vec<u16>>,
    more_than: u32,
    /// `kind: status` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    distinct_paths: Option<u32>,
    window: String,
    ban: String,
    max_ban: String,
    mode: &'static str,
}

/// `under_attack:` as `sekisho config` prints it.
#[derive(Serialize)]
pub(super) struct EffectiveUnderAttack {
    auto: Maybe<EffectiveAuto>,
    rules: Vec<EffectiveRule>,
}

#[derive(Serialize)]
struct EffectiveAuto {
    requests_per_second: Maybe<u64>,
    refused_per_second: Maybe<u64>,
    upstream_5xx_per_second: Maybe<u64>,
    #[serde(rename = "for")]
    trip_after: String,
    quiet: String,
}

/// `bans:`, `autoban:` and `under_attack:` (its `auto` and the profile's rules) of `c`.
pub(super) fn effective(
    c: &Config,
) -> (EffectiveBans, Vec<EffectiveAutoban>, EffectiveUnderAttack) {
    let d = &c.defense;
    let bans = EffectiveBans {
        state_file: d
            .state_file
            .as_deref()
            .map_or_else(|| "off".into(), effective::path),
        max_bans: d.max_bans,
        max_tracked_offenders: d.max_tracked_offenders,
        ipv6_escalate_after: d.ipv6_escalate_after,
    };
    let autoban = (d.autoban.iter())
        .map(|p| {
            let (kind, statuses) = match &p.trigger {
                Trigger::Status(s) => ("status", Some(s.iter().collect())),
                Trigger::Limited => ("limited", None),
                Trigger::Connections => ("connections", None),
            };
            EffectiveAutoban {
                name: p.name.clone(),
                kind,
                distinct_paths: statuses.is_some().then_some(p.distinct_paths),
                statuses,
                more_than: p.more_than,
                window: format_duration(p.window),
                ban: format_duration(p.ban),
                max_ban: format_duration(p.max_ban),
                mode: p.mode.as_str(),
            }
        })
        .collect();
    let not_a_trigger = "not a trigger";
    let auto = d.auto.as_ref().map(|a| EffectiveAuto {
        requests_per_second: maybe(a.requests_per_second, not_a_trigger),
        refused_per_second: maybe(a.refused_per_second, not_a_trigger),
        upstream_5xx_per_second: maybe(a.upstream_5xx_per_second, not_a_trigger),
        trip_after: format_duration(a.trip_after),
        quiet: format_duration(a.quiet),
    });
    let under_attack = EffectiveUnderAttack {
        auto: maybe(auto, "off: the profile is switched by hand only"),
        rules: rules::effective(c.policy.rules.get(c.policy.profile_from..).unwrap_or(&[])),
    };
    (bans, autoban, under_attack)
}

impl Validator<'_> {
    /// `bans:`, `autoban:` and `under_attack.auto`.
    pub(super) fn defense(&mut self, raw: &RawConfig) -> DefenseSettings {
        let mut out = DefenseSettings::default();
        let b = raw.bans.as_ref();
        out.state_file = match b.and_then(|b| b.state_file.as_ref()) {
            Some(f) if f.value.trim() == "off" => None,
            Some(f) if f.value.trim().is_empty() => {
                self.err(f, "bans.state_file", "give a file name, or off");
                None
            }
            Some(f) => {
                // written by a rename in its folder: that folder must exist and be writable
                let path = self.dir.join(f.value.trim());
                if let Some(why) = paths::cannot_write(&path, false) {
                    self.err(
                        f,
                        "bans.state_file",
                        format!("cannot save bans to {}: {why}", path.display()),
                    );
                }
                Some(path)
            }
            // systemd's StateDirectory= sets $STATE_DIRECTORY; otherwise beside the config.
            None => {
                let from_env = std::env::var_os("STATE_DIRECTORY")
                    .and_then(|d| std::env::split_paths(&d).next());
                let path = from_env
                    .clone()
                    .unwrap_or_else(|| self.dir.clone())
                    .join("sekisho-bans.json");
                // Not written, so not held to being writable (a read-only config folder is
                // common and only costs saving bans); a folder that is not there is an error.
                if let Some(why) = paths::missing_folder(&path) {
                    let whence = if from_env.is_some() {
                        "$STATE_DIRECTORY"
                    } else {
                        "the config's folder"
                    };
                    self.errors.push(ConfigError {
                        file: self.file.clone(),
                        line: 0,
                        column: 0,
                        field: "bans.state_file".into(),
                        message: format!(
                            "the default state file {} ({whence}) cannot be saved: {why}; give bans.state_file, or off",
                            path.display()
                        ),
                    });
                }
                Some(path)
            }
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
            let other_kind = match p.kind.as_ref().map(|k| k.value.trim()) {
                None | Some("status") => None,
                Some("limited") => Some(Trigger::Limited),
                Some("connections") => Some(Trigger::Connections),
                Some(other) => {
                    if let Some(k) = &p.kind {
                        self.err(
                            k,
                            format!("{at}.kind"),
                            format!("{other:?}: use status (responses with a status in `statuses`), limited (rate-limit refusals) or connections (connections refused or cut by `connections:`)"),
                        );
                    }
                    None
                }
            };
            let limited = other_kind.is_some();
            let trigger = if let Some(kind) = other_kind {
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
                kind
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
                            super::format_duration(ban)
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
}
