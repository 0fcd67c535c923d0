//! Adaptive defense: bans the proxy adds itself, bans by hand, the under-attack switch, and
//! the state file that carries bans across restarts.
//!
//! - [`bans`]: the dynamic deny set the engine checks before any rule (one hash lookup).
//! - [`autoban`]: per-client event counts from upstream responses and refusals; a client over
//!   a policy's threshold is banned, longer each time it comes back.
//! - [`attack`]: the under-attack switch (`off`, `on`, `auto`) and the preview of its profile.
//! - [`store`]: the state file, written atomically, read at start.
//! - [`export`]: banned networks for other firewalls (plain, nginx, AWS WAF IP sets).
//!
//! Nothing here runs on the request path beyond O(1): the engine reads [`BanSet::check`] and
//! [`AttackSwitch::is_on`]; the proxy's `logging` hook feeds [`Defense::observe`] only the
//! events a policy counts. Saving, sweeping and the detector run in the housekeeping task.

pub mod attack;
pub mod autoban;
pub mod bans;
pub mod export;
pub mod store;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use parking_lot::Mutex;

pub use attack::{AttackSwitch, AutoSettings, Preview, Setting};
pub use autoban::{Offenders, Policy as AutobanPolicy, StatusSet, Trigger};
pub use bans::{key_of_net, net_of, Added, Ban, BanSet, Source};

use crate::config::Mode;
use crate::engine::ip_key;
use crate::limiter::Nanos;
use store::{BanRecord, Clocks, Loaded};

/// Default `bans.max_bans`.
pub const DEFAULT_MAX_BANS: usize = 100_000;
/// Default `bans.max_tracked_offenders`.
pub const DEFAULT_MAX_OFFENDERS: usize = 200_000;

/// `bans:`, `autoban:` and `under_attack:` settings, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct DefenseSettings {
    /// `bans.state_file`, resolved; `None` keeps bans in memory only.
    pub state_file: Option<PathBuf>,
    /// `bans.max_bans` (restart to change).
    pub max_bans: usize,
    /// `bans.max_tracked_offenders` (restart to change).
    pub max_tracked_offenders: usize,
    /// `autoban:` policies, in file order.
    pub autoban: Vec<AutobanPolicy>,
    /// `under_attack.auto`.
    pub auto: Option<AutoSettings>,
}

impl Default for DefenseSettings {
    fn default() -> Self {
        Self {
            state_file: None,
            max_bans: DEFAULT_MAX_BANS,
            max_tracked_offenders: DEFAULT_MAX_OFFENDERS,
            autoban: Vec::new(),
            auto: None,
        }
    }
}

impl DefenseSettings {
    /// The longest window of any policy (how long offender entries are worth keeping).
    pub fn longest_window(&self) -> Duration {
        self.autoban
            .iter()
            .map(|p| p.window)
            .max()
            .unwrap_or(Duration::ZERO)
    }
}

/// The adaptive state, outliving snapshots.
#[derive(Debug)]
pub struct Defense {
    /// The ban set.
    pub bans: BanSet,
    /// Per-client event counts.
    pub offenders: Offenders,
    /// The under-attack switch.
    pub attack: AttackSwitch,
    /// What the profile would have refused.
    pub preview: Preview,
    /// Where bans are kept across restarts.
    pub state_file: Option<PathBuf>,
    /// The last problem with the state file (load or save), for `/admin/status`.
    pub state_error: Mutex<Option<String>>,
}

/// A ban to add by hand.
#[derive(Debug, Clone)]
pub struct ManualBan {
    /// The network (a single address is a /32 or /128).
    pub net: IpNet,
    /// How long.
    pub ttl: Duration,
    /// The operator's note.
    pub reason: String,
}

impl Defense {
    /// The defense state for `settings`, with bans and a hand-set switch restored from the
    /// state file. A missing file is a first start; an unreadable one is reported in
    /// `state_error` (and the log) and moved aside, and the proxy starts without it.
    pub fn start(settings: &DefenseSettings, v6_prefix: u8, clocks: Clocks) -> Self {
        let bans = BanSet::new(settings.max_bans);
        let mut error = None;
        let mut setting = None;
        if let Some(path) = &settings.state_file {
            match store::load(path, clocks.unix) {
                Loaded::Missing => {
                    tracing::info!(file = %path.display(), "no ban state file yet: starting with no bans");
                }
                Loaded::State(s) => {
                    setting = s.under_attack.as_deref().and_then(Setting::parse);
                    let (mut restored, mut dropped) = (0, 0);
                    for r in &s.bans {
                        match r.to_ban(&clocks) {
                            Ok(b) if b.live(clocks.mono) || b.forget_at > clocks.mono => {
                                bans.add(key_of_net(b.net, v6_prefix), b, clocks.mono);
                                restored += 1;
                            }
                            Ok(_) => dropped += 1,
                            Err(e) => {
                                tracing::warn!(file = %path.display(), "skipping a ban: {e}");
                                dropped += 1;
                            }
                        }
                    }
                    bans.take_dirty();
                    tracing::info!(
                        file = %path.display(),
                        restored,
                        expired_or_bad = dropped,
                        live = bans.live(clocks.mono),
                        "ban state restored"
                    );
                }
                Loaded::Corrupt { error: e, moved_to } => {
                    let moved = moved_to.map_or_else(
                        || "it could not be moved aside".to_string(),
                        |p| format!("moved to {}", p.display()),
                    );
                    let message = format!("{e} ({moved}); started with no bans");
                    tracing::error!("ban state file unusable: {message}");
                    error = Some(message);
                }
            }
        }
        let default = if settings.auto.is_some() {
            Setting::Auto
        } else {
            Setting::Off
        };
        Self {
            bans,
            offenders: Offenders::new(settings.max_tracked_offenders),
            attack: AttackSwitch::new(setting.unwrap_or(default), setting.is_some(), clocks.unix),
            preview: Preview::default(),
            state_file: settings.state_file.clone(),
            state_error: Mutex::new(error),
        }
    }

    /// Counts one event of `ip` under `policy`; bans it when that trips the policy. Returns the
    /// ban added.
    pub fn observe(
        &self,
        policy: &AutobanPolicy,
        ip: IpAddr,
        v6_prefix: u8,
        path: &[u8],
        now: Nanos,
        now_unix: u64,
    ) -> Option<Ban> {
        let key = ip_key(ip, v6_prefix);
        let trip = self.offenders.observe(
            Offenders::policy_id(&policy.name),
            policy,
            key,
            self.offenders.path_hash(path),
            now,
        )?;
        let strikes = self
            .bans
            .get(key)
            .filter(|b| b.forget_at > now)
            .map_or(1, |b| b.strikes.saturating_add(1));
        let length = policy.ban_for(strikes);
        let until = now.saturating_add(length.as_nanos() as u64);
        let what = match &policy.trigger {
            Trigger::Status(_) => format!(
                "{} responses with a watched status across ~{} paths within {}",
                trip.events,
                trip.distinct_paths,
                humantime::format_duration(policy.window)
            ),
            Trigger::Limited => format!(
                "{} rate-limit refusals within {}",
                trip.events,
                humantime::format_duration(policy.window)
            ),
        };
        let ban = Ban {
            net: net_of(ip, v6_prefix),
            since_unix: now_unix,
            until,
            forget_at: until.saturating_add(policy.max_ban.as_nanos() as u64),
            strikes,
            mode: policy.mode,
            source: Source::Policy(policy.name.as_str().into()),
            reason: format!(
                "{what}; ban {strikes} for {}",
                humantime::format_duration(length)
            ),
        };
        match self.bans.add(Some(key), ban.clone(), now) {
            Added::Banned => {
                tracing::warn!(
                    target: "sekisho::audit",
                    client = %ban.net,
                    policy = %policy.name,
                    mode = if policy.mode == Mode::Count { "count" } else { "enforce" },
                    seconds = length.as_secs(),
                    strikes,
                    "autoban: {}",
                    ban.reason
                );
                Some(ban)
            }
            Added::AlreadyBanned => None,
            Added::Full => {
                tracing::warn!(client = %ban.net, policy = %policy.name, max = self.bans.max(), "autoban: the ban set is full (bans.max_bans); not banned");
                None
            }
        }
    }

    /// Adds a ban by hand (audited in the log by the caller, who knows who asked).
    pub fn ban_by_hand(
        &self,
        b: &ManualBan,
        v6_prefix: u8,
        now: Nanos,
        now_unix: u64,
    ) -> (Added, Ban) {
        let until = now.saturating_add(b.ttl.as_nanos() as u64);
        let ban = Ban {
            net: b.net.trunc(),
            since_unix: now_unix,
            until,
            forget_at: until,
            strikes: 1,
            mode: Mode::Enforce,
            source: Source::Manual,
            reason: b.reason.clone(),
        };
        let added = self
            .bans
            .add(key_of_net(b.net, v6_prefix), ban.clone(), now);
        (added, ban)
    }

    /// Writes the state file if bans changed since the last save (or `force`). Never panics;
    /// a failure is logged, kept for `/admin/status`, and retried at the next call.
    pub fn save(&self, clocks: Clocks, force: bool) -> Result<bool, String> {
        let Some(path) = &self.state_file else {
            return Ok(false);
        };
        if !self.bans.take_dirty() && !force {
            return Ok(false);
        }
        let (setting, by_hand) = self.attack.setting();
        let state = store::snapshot(&self.bans.all(), by_hand.then_some(setting), &clocks);
        match store::save(path, &state) {
            Ok(()) => {
                let mut e = self.state_error.lock();
                if e.as_deref().is_some_and(|e| e.starts_with("cannot save")) {
                    *e = None;
                }
                Ok(true)
            }
            Err(e) => {
                self.bans.mark_dirty();
                let message = format!("cannot save {}: {e}", path.display());
                tracing::error!("{message}");
                *self.state_error.lock() = Some(message.clone());
                Err(message)
            }
        }
    }

    /// The live bans as records.
    pub fn records(&self, clocks: &Clocks) -> Vec<BanRecord> {
        self.bans
            .live_bans(clocks.mono)
            .iter()
            .map(|b| BanRecord::of(b, clocks))
            .collect()
    }
}

/// Renders the enforced bans among `records` live at `now_unix` in `format` (`json`, or one
/// of [`export::Format`]'s), for `sekisho bans export` and `GET /admin/bans/export`.
/// Count-mode bans are left out: exporting them would enforce elsewhere what is only watched
/// here. Returns (content type, text).
pub fn export_records(
    records: &[BanRecord],
    now_unix: u64,
    format: &str,
    options: &export::ExportOptions,
) -> Result<(&'static str, String), String> {
    let live: Vec<&BanRecord> = records
        .iter()
        .filter(|r| r.until > now_unix && r.mode == "enforce")
        .collect();
    if format == "json" {
        let mut text = serde_json::to_string_pretty(&live).map_err(|e| e.to_string())?;
        text.push('\n');
        return Ok(("application/json", text));
    }
    let f = export::Format::parse(format).ok_or_else(|| {
        format!("format {format:?}: use plain, nginx, nginx-geo, aws-waf-ipset or json")
    })?;
    let nets: Vec<IpNet> = live
        .iter()
        .filter_map(|r| crate::iplist::parse_net(&r.net).ok())
        .collect();
    let rendered = export::render(&nets, f, options).map_err(|e| e.to_string())?;
    Ok((f.content_type(), rendered.text))
}
