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

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use parking_lot::Mutex;

pub use attack::{AttackSwitch, AutoSettings, Preview, Setting};
pub use autoban::{feeds_autoban, Offenders, Policy as AutobanPolicy, StatusSet, Trigger};
pub use bans::{key_of_net, net_of, Added, Ban, BanSet, Source};

use crate::engine::Mode;
use crate::iplist::ip_key;
use crate::limiter::Nanos;
use store::{BanRecord, Clocks, Loaded, StoreError};

/// Default `bans.max_bans`.
pub const DEFAULT_MAX_BANS: usize = 100_000;
/// Default `bans.max_tracked_offenders`.
pub const DEFAULT_MAX_OFFENDERS: usize = 200_000;
/// Default `bans.ipv6_escalate_after`.
pub const DEFAULT_IPV6_ESCALATE_AFTER: u32 = 8;

/// `bans:`, `autoban:` and `under_attack:` settings, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct DefenseSettings {
    /// `bans.state_file`, resolved; `None` keeps bans in memory only.
    pub state_file: Option<PathBuf>,
    /// `bans.max_bans` (restart to change).
    pub max_bans: usize,
    /// `bans.max_tracked_offenders` (restart to change).
    pub max_tracked_offenders: usize,
    /// `bans.ipv6_escalate_after`: this many IPv6 clients of one /48 banned by autoban at once
    /// ban the whole /48 (0: never).
    pub ipv6_escalate_after: u32,
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
            ipv6_escalate_after: DEFAULT_IPV6_ESCALATE_AFTER,
            autoban: Vec::new(),
            auto: None,
        }
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
    pub state_error: Mutex<Option<StateError>>,
    /// Serialises saves, from taking the snapshot to the rename: a later snapshot is never
    /// overwritten by an earlier one. Holds whether the file was handed to a new process (an
    /// upgrade), which owns it from then on: this one writes it no more.
    save_lock: Mutex<bool>,
    /// `bans.ipv6_escalate_after`.
    escalate_after: u32,
    /// Live IPv6 autobans by /48: (client key, until), for escalation.
    v6_blocks: Mutex<HashMap<u64, Vec<(u128, Nanos)>>>,
}

/// A problem with the state file, kept for `/admin/status` until it is resolved.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StateError {
    /// The file found at start could not be used: the proxy started with no bans.
    #[error("{error} ({}); started with no bans", aside(.moved_to))]
    Unusable {
        /// What is wrong with it.
        error: StoreError,
        /// Where it was moved (`None`: it could not be).
        moved_to: Option<PathBuf>,
    },
    /// The last save failed; it is retried every second, and cleared by one that works.
    #[error(transparent)]
    Save(StoreError),
}

/// Where an unusable state file went, in words.
fn aside(moved_to: &Option<PathBuf>) -> String {
    moved_to.as_ref().map_or_else(
        || "it could not be moved aside".to_string(),
        |p| format!("moved to {}", p.display()),
    )
}

/// Why [`export_records`] could not render an export.
#[derive(Debug, thiserror::Error)]
pub enum ExportBansError {
    /// The format is not one of those known.
    #[error("format {format:?}: use plain, nginx, nginx-geo, aws-waf-ipset or json")]
    Format {
        /// The format asked for.
        format: String,
    },
    /// The records could not be written as JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The networks could not be rendered in the format (too many for the limit).
    #[error(transparent)]
    Render(#[from] export::ExportError),
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
        let bans = BanSet::new(settings.max_bans, v6_prefix);
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
                                match bans.add(b, clocks.mono) {
                                    Added::Full => dropped += 1,
                                    _ => restored += 1,
                                }
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
                    let unusable = StateError::Unusable { error: e, moved_to };
                    tracing::error!("ban state file unusable: {unusable}");
                    error = Some(unusable);
                }
            }
        }
        let default = if settings.auto.is_some() {
            Setting::Auto
        } else {
            Setting::Off
        };
        match setting {
            // a restart that comes back with the switch on must say so
            Some(s) => tracing::warn!(
                setting = s.as_str(),
                "under-attack switch restored from the state file as set by hand (`sekisho attack off` or `auto` to change)"
            ),
            None => tracing::info!(setting = default.as_str(), "under-attack switch"),
        }
        Self {
            bans,
            offenders: Offenders::new(settings.max_tracked_offenders),
            attack: AttackSwitch::new(setting.unwrap_or(default), setting.is_some(), clocks.unix),
            preview: Preview::default(),
            state_file: settings.state_file.clone(),
            state_error: Mutex::new(error),
            save_lock: Mutex::new(false),
            escalate_after: settings.ipv6_escalate_after,
            v6_blocks: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one event of `ip` under `policy`; bans it when that trips the policy. Returns the
    /// bans added: the client's, and its /48's when that made `bans.ipv6_escalate_after` IPv6
    /// clients of one /48 banned at once (an attacker rotating through the /64s of its /48).
    pub fn observe(
        &self,
        policy: &AutobanPolicy,
        ip: IpAddr,
        v6_prefix: u8,
        path: &[u8],
        now: Nanos,
        now_unix: u64,
    ) -> Vec<Ban> {
        let Some(ban) = self.observe_one(policy, ip, v6_prefix, path, now, now_unix) else {
            return Vec::new();
        };
        let wide = match ip.to_canonical() {
            IpAddr::V6(v6) if v6_prefix > 48 && self.escalate_after > 0 => {
                self.escalate(policy, v6, v6_prefix, &ban, now)
            }
            _ => None,
        };
        std::iter::once(ban).chain(wide).collect()
    }

    /// Records a new IPv6 autoban; bans its /48 when enough of its clients are banned.
    fn escalate(
        &self,
        policy: &AutobanPolicy,
        ip: Ipv6Addr,
        v6_prefix: u8,
        ban: &Ban,
        now: Nanos,
    ) -> Option<Ban> {
        let bits = u128::from(ip);
        let key = ip_key(IpAddr::V6(ip), v6_prefix);
        let banned = {
            let mut blocks = self.v6_blocks.lock();
            let live = blocks.entry((bits >> 80) as u64).or_default();
            live.retain(|(k, until)| *until > now && *k != key);
            live.push((key, ban.until));
            let n = live.len();
            if n < self.escalate_after as usize {
                return None;
            }
            live.clear();
            n
        };
        let net = IpNet::new(IpAddr::V6(Ipv6Addr::from(bits)), 48)
            .ok()?
            .trunc();
        let wide = Ban {
            net,
            reason: format!(
                "{banned} clients (/{v6_prefix}) of this /48 banned by autoban at once (bans.ipv6_escalate_after); {}",
                ban.reason
            ),
            ..ban.clone()
        };
        match self.bans.add(wide.clone(), now) {
            Added::Banned => {
                tracing::warn!(target: "sekisho::audit", client = %wide.net, policy = %policy.name, "autoban: {}", wide.reason);
                Some(wide)
            }
            _ => None,
        }
    }

    /// Drops the escalation records of bans that ended. Background task only.
    pub fn sweep(&self, now: Nanos) {
        self.v6_blocks.lock().retain(|_, live| {
            live.retain(|(_, until)| *until > now);
            !live.is_empty()
        });
    }

    fn observe_one(
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
            .of_client(ip)
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
            Trigger::Connections => format!(
                "{} connections refused or cut (connections:) within {}",
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
        match self.bans.add(ban.clone(), now) {
            Added::Banned => {
                tracing::warn!(
                    target: "sekisho::audit",
                    client = %ban.net,
                    policy = %policy.name,
                    mode = policy.mode.as_str(),
                    seconds = length.as_secs(),
                    strikes,
                    "autoban: {}",
                    ban.reason
                );
                Some(ban)
            }
            Added::AlreadyBanned => None,
            Added::Full => {
                if self.bans.full_warning_due(now) {
                    tracing::warn!(client = %ban.net, policy = %policy.name, max = self.bans.max(), "autoban: the ban set is full of live bans (bans.max_bans); new offenders are not banned (reported at most every 10 s)");
                }
                None
            }
        }
    }

    /// Adds a ban by hand (audited in the log by the caller, who knows who asked).
    pub fn ban_by_hand(&self, b: &ManualBan, now: Nanos, now_unix: u64) -> (Added, Ban) {
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
        let added = self.bans.add(ban.clone(), now);
        (added, ban)
    }

    /// Writes the state file if bans changed since the last save (or `force`). Never panics;
    /// a failure is logged, kept for `/admin/status`, and retried at the next call.
    /// Once the file is handed over ([`Defense::hand_over`]) it is not written.
    pub fn save(&self, clocks: Clocks, force: bool) -> Result<bool, StoreError> {
        let handed_over = self.save_lock.lock();
        if *handed_over {
            return Ok(false);
        }
        self.save_locked(clocks, force)
    }

    /// For an upgrade: saves the state file now (changed or not), for the new process to read,
    /// and from then on leaves it to that process ([`Defense::take_back`] undoes this when the
    /// hand-over failed). An error is the save's; the file is handed over all the same.
    pub fn hand_over(&self, clocks: Clocks) -> Result<bool, StoreError> {
        let mut handed_over = self.save_lock.lock();
        let saved = if *handed_over {
            Ok(false)
        } else {
            self.save_locked(clocks, true)
        };
        *handed_over = true;
        saved
    }

    /// Writes the state file again after a hand-over that did not happen.
    pub fn take_back(&self) {
        *self.save_lock.lock() = false;
        self.bans.mark_dirty();
    }

    /// [`Defense::save`] with the save lock held.
    fn save_locked(&self, clocks: Clocks, force: bool) -> Result<bool, StoreError> {
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
                if matches!(*e, Some(StateError::Save(_))) {
                    *e = None;
                }
                Ok(true)
            }
            Err(e) => {
                self.bans.mark_dirty();
                let message = e.to_string();
                let mut last = self.state_error.lock();
                // retried every second: log a new problem, not each retry
                if !matches!(&*last, Some(StateError::Save(l)) if l.to_string() == message) {
                    tracing::error!(
                        "{message} (retrying every second; bans still apply in memory)"
                    );
                }
                *last = Some(StateError::Save(e.clone()));
                Err(e)
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

/// An export, ready to send.
#[derive(Debug, Clone)]
pub struct Exported {
    /// Its media type.
    pub content_type: &'static str,
    /// The text.
    pub text: String,
    /// Bans left out because they overlap the allow list.
    pub allow_listed: usize,
}

/// Renders the enforced bans among `records` live at `now_unix` in `format` (`json`, or one
/// of [`export::Format`]'s), for `sekisho bans export` and `GET /admin/bans/export`.
///
/// Left out: count-mode bans (exporting them would enforce elsewhere what is only watched
/// here), and bans that overlap `allow` (the allow list wins here, but would not in the
/// firewall the export is fed to).
pub fn export_records(
    records: &[BanRecord],
    now_unix: u64,
    format: &str,
    options: &export::ExportOptions,
    allow: Option<&crate::iplist::IpSet>,
) -> Result<Exported, ExportBansError> {
    let f = match format {
        "json" => None,
        f => Some(
            export::Format::parse(f).ok_or_else(|| ExportBansError::Format {
                format: format.to_string(),
            })?,
        ),
    };
    let mut allow_listed = 0;
    let live: Vec<(&BanRecord, IpNet)> = records
        .iter()
        .filter(|r| r.until > now_unix && r.mode == "enforce")
        .filter_map(|r| Some((r, crate::iplist::parse_net(&r.net).ok()?)))
        .filter(|(_, net)| {
            let overlaps = allow.is_some_and(|a| a.overlaps(*net));
            allow_listed += usize::from(overlaps);
            !overlaps
        })
        .collect();
    let Some(f) = f else {
        let records: Vec<&BanRecord> = live.iter().map(|(r, _)| *r).collect();
        let mut text = serde_json::to_string_pretty(&records)?;
        text.push('\n');
        return Ok(Exported {
            content_type: "application/json",
            text,
            allow_listed,
        });
    };
    let nets: Vec<IpNet> = live.iter().map(|(_, n)| *n).collect();
    let rendered = export::render(&nets, f, options)?;
    Ok(Exported {
        content_type: f.content_type(),
        text: rendered.text,
        allow_listed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probers() -> AutobanPolicy {
        AutobanPolicy {
            name: "probers".into(),
            trigger: Trigger::Status(StatusSet::probing()),
            more_than: 2,
            distinct_paths: 1,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(600),
            max_ban: Duration::from_secs(3600),
            mode: Mode::Enforce,
        }
    }

    /// Trips `policy` for `ip`; returns the networks banned.
    fn trip(d: &Defense, policy: &AutobanPolicy, ip: &str, now: Nanos) -> Vec<String> {
        let ip: IpAddr = ip.parse().expect("ip");
        let mut out = Vec::new();
        for _ in 0..3 {
            out = d.observe(policy, ip, 64, b"/x", now, 0);
        }
        out.iter().map(|b| b.net.to_string()).collect()
    }

    #[test]
    fn enough_banned_64s_in_one_48_ban_the_48() {
        let settings = DefenseSettings {
            ipv6_escalate_after: 3,
            ..DefenseSettings::default()
        };
        let d = Defense::start(&settings, 64, Clocks { mono: 0, unix: 0 });
        let p = probers();
        assert_eq!(
            trip(&d, &p, "2001:db8:7:1::1", 0),
            vec!["2001:db8:7:1::/64"]
        );
        // a repeat ban of the same /64 (a longer one) does not count twice
        assert_eq!(
            trip(&d, &p, "2001:db8:7:1::2", 0),
            vec!["2001:db8:7:1::/64"]
        );
        // one in another /48 does not count at all
        assert_eq!(
            trip(&d, &p, "2001:db8:8:1::1", 0),
            vec!["2001:db8:8:1::/64"]
        );
        assert_eq!(
            trip(&d, &p, "2001:db8:7:2::1", 0),
            vec!["2001:db8:7:2::/64"]
        );
        // the third client of 2001:db8:7::/48
        assert_eq!(
            trip(&d, &p, "2001:db8:7:3::1", 0),
            vec!["2001:db8:7:3::/64", "2001:db8:7::/48"]
        );
        let fresh: IpAddr = "2001:db8:7:ffff::1".parse().expect("ip");
        assert_eq!(d.bans.check(fresh, 0), Some(Mode::Enforce));
        assert_eq!(
            d.bans.check("2001:db8:8:2::1".parse().expect("ip"), 0),
            None
        );
        // IPv4 clients never escalate
        for i in 1..=5 {
            assert_eq!(trip(&d, &p, &format!("192.0.2.{i}"), 0).len(), 1);
        }
        // records of ended bans are swept
        d.sweep(601 * 1_000_000_000);
        assert!(d.v6_blocks.lock().is_empty());
    }

    #[test]
    fn escalation_can_be_turned_off() {
        let settings = DefenseSettings {
            ipv6_escalate_after: 0,
            ..DefenseSettings::default()
        };
        let d = Defense::start(&settings, 64, Clocks { mono: 0, unix: 0 });
        for i in 1..=20 {
            assert_eq!(
                trip(&d, &probers(), &format!("2001:db8:7:{i:x}::1"), 0).len(),
                1
            );
        }
    }

    #[test]
    fn errors_read_as_they_always_did() {
        let bad = || StoreError::Version {
            path: "/var/lib/sekisho/bans.json".into(),
            found: 2,
        };
        let moved = StateError::Unusable {
            error: bad(),
            moved_to: Some("/var/lib/sekisho/bans.json.corrupt-42".into()),
        };
        assert_eq!(
            moved.to_string(),
            "/var/lib/sekisho/bans.json: version 2 is not one this sekisho reads (1) \
             (moved to /var/lib/sekisho/bans.json.corrupt-42); started with no bans"
        );
        let stuck = StateError::Unusable {
            error: bad(),
            moved_to: None,
        };
        assert_eq!(
            stuck.to_string(),
            "/var/lib/sekisho/bans.json: version 2 is not one this sekisho reads (1) \
             (it could not be moved aside); started with no bans"
        );
        let write = StoreError::Write {
            path: "bans.json".into(),
            source: std::sync::Arc::new(std::io::Error::other("disk full")),
        };
        assert_eq!(
            StateError::Save(write).to_string(),
            "cannot save bans.json: disk full"
        );

        let format = export_records(&[], 0, "iptables", &Default::default(), None);
        assert_eq!(
            format.expect_err("unknown format").to_string(),
            "format \"iptables\": use plain, nginx, nginx-geo, aws-waf-ipset or json"
        );
    }

    #[test]
    fn concurrent_saves_never_tear_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = DefenseSettings {
            state_file: Some(dir.path().join("bans.json")),
            ..DefenseSettings::default()
        };
        let clocks = Clocks {
            mono: 0,
            unix: 1_700_000_000,
        };
        let d = Defense::start(&settings, 64, clocks);
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let (d, dir) = (&d, &dir);
                s.spawn(move || {
                    for i in 0..50u8 {
                        let b = ManualBan {
                            net: format!("10.{t}.{i}.1/32").parse().expect("net"),
                            ttl: Duration::from_secs(3600),
                            reason: "test".into(),
                        };
                        d.ban_by_hand(&b, 0, clocks.unix);
                        d.save(clocks, true).expect("save");
                        let path = dir.path().join("bans.json");
                        assert!(matches!(store::read(&path), Ok(Loaded::State(_))));
                    }
                });
            }
        });
        let Ok(Loaded::State(s)) = store::read(&dir.path().join("bans.json")) else {
            panic!("the file parses");
        };
        assert_eq!(s.bans.len(), 200, "the last save holds every ban");
        let leftovers = std::fs::read_dir(dir.path()).expect("read_dir").count();
        assert_eq!(leftovers, 1, "no temp file left behind");
    }
}
