//! The under-attack switch: the `under_attack.rules` profile is enforced while it is on.
//!
//! While the switch is off, the profile's rules are still evaluated after the normal rules, in
//! shadow: what they would have refused is counted (`sekisho_under_attack_would_refuse_total`)
//! and a few recent examples are kept, which is what `GET /admin/under-attack/preview` reports.
//! Their buckets are kept warm the same way, so switching on changes decisions at the next
//! request, with no reload and no cold start.
//!
//! The switch is set by hand (`off`, `on`) or left to the detector (`auto`): once a second the
//! housekeeping task feeds it the request, refusal and upstream-5xx totals; when one of the
//! configured rates stays above its threshold for `for`, it switches on, and after `quiet`
//! with all of them below, off again.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::limiter::Nanos;

/// How the switch is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// Off, by hand (or by default without an `auto:` section).
    Off,
    /// On, by hand.
    On,
    /// The detector decides.
    Auto,
}

impl Setting {
    /// `off`, `on`, `auto`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "off" => Some(Self::Off),
            "on" => Some(Self::On),
            "auto" => Some(Self::Auto),
            _ => None,
        }
    }

    /// As text.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::On => "on",
            Self::Auto => "auto",
        }
    }
}

/// `under_attack.auto`: the signals that switch the profile on by themselves.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoSettings {
    /// Requests judged per second.
    pub requests_per_second: Option<u64>,
    /// Requests refused per second by lists, bans and normal rules (not by the profile itself,
    /// which would keep it on forever).
    pub refused_per_second: Option<u64>,
    /// Upstream 5xx responses per second.
    pub upstream_5xx_per_second: Option<u64>,
    /// `for:`: how long a signal must stay above its threshold.
    pub trip_after: Duration,
    /// `quiet:`: how long every signal must stay below before switching off.
    pub quiet: Duration,
}

/// Counter totals at one moment, fed to the detector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Requests judged.
    pub requests: u64,
    /// Requests refused by anything but the profile.
    pub refused: u64,
    /// Upstream 5xx responses.
    pub upstream_5xx: u64,
}

#[derive(Debug, Default)]
struct Detector {
    last: Option<(Nanos, Totals)>,
    /// Since when some signal has been above its threshold.
    above_since: Option<Nanos>,
    /// Since when every signal has been below.
    below_since: Option<Nanos>,
    /// What the last sample measured, per second.
    rates: Totals,
}

/// A change the switch made, to log and count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switched {
    /// On or off now.
    pub on: bool,
    /// Why, in words.
    pub reason: String,
}

/// The switch. Read on every request ([`is_on`](Self::is_on): one relaxed atomic load).
#[derive(Debug)]
pub struct AttackSwitch {
    on: AtomicBool,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    setting: Setting,
    /// Whether the setting was chosen by hand (persisted) or came from the config's default.
    by_hand: bool,
    since_unix: u64,
    reason: String,
    detector: Detector,
}

impl AttackSwitch {
    /// A switch set to `setting` (off unless `on`, until the detector says otherwise).
    pub fn new(setting: Setting, by_hand: bool, now_unix: u64) -> Self {
        let on = setting == Setting::On;
        Self {
            on: AtomicBool::new(on),
            inner: Mutex::new(Inner {
                setting,
                by_hand,
                since_unix: now_unix,
                reason: if by_hand {
                    format!("{} (restored from the state file)", setting.as_str())
                } else {
                    format!("{} (config default)", setting.as_str())
                },
                detector: Detector::default(),
            }),
        }
    }

    /// Whether the profile is enforced now.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// The setting, and whether an operator chose it.
    pub fn setting(&self) -> (Setting, bool) {
        let i = self.inner.lock();
        (i.setting, i.by_hand)
    }

    /// Sets the switch by hand; `Some` when that turned the profile on or off.
    pub fn set(&self, setting: Setting, who: &str, now_unix: u64) -> Option<Switched> {
        let mut i = self.inner.lock();
        i.setting = setting;
        i.by_hand = true;
        let target = match setting {
            Setting::On => true,
            Setting::Off => false,
            Setting::Auto => self.on.load(Ordering::Relaxed), // the detector takes over from here
        };
        i.detector.above_since = None;
        i.detector.below_since = None;
        let was = self.on.swap(target, Ordering::AcqRel);
        if was == target {
            if setting == Setting::Auto {
                i.reason = format!("auto, set by {who}");
            }
            return None;
        }
        i.since_unix = now_unix;
        i.reason = format!("{}, set by {who}", setting.as_str());
        Some(Switched {
            on: target,
            reason: i.reason.clone(),
        })
    }

    /// After a reload: a switch not set by hand follows the config's default again (`auto`
    /// with an `under_attack.auto` section, else off). `Some` when that turned it off.
    pub fn reconfigure(&self, auto_configured: bool, now_unix: u64) -> Option<Switched> {
        let mut i = self.inner.lock();
        if i.by_hand {
            return None;
        }
        let setting = if auto_configured {
            Setting::Auto
        } else {
            Setting::Off
        };
        if i.setting == setting {
            return None;
        }
        i.setting = setting;
        i.detector.above_since = None;
        i.detector.below_since = None;
        if setting == Setting::Off && self.on.swap(false, Ordering::AcqRel) {
            i.since_unix = now_unix;
            i.reason = "off: under_attack.auto was removed from the config".into();
            return Some(Switched {
                on: false,
                reason: i.reason.clone(),
            });
        }
        i.reason = format!("{} (config default)", setting.as_str());
        None
    }

    /// Feeds the detector the totals at `now`; `Some` when it switched the profile.
    pub fn sample(
        &self,
        auto: Option<&AutoSettings>,
        totals: Totals,
        now: Nanos,
        now_unix: u64,
    ) -> Option<Switched> {
        let mut i = self.inner.lock();
        let d = &mut i.detector;
        let (then, before) = d.last.replace((now, totals))?;
        let secs = (now.saturating_sub(then)) as f64 / 1e9;
        if secs <= 0.0 {
            return None;
        }
        let rate = |a: u64, b: u64| (a.saturating_sub(b) as f64 / secs).round() as u64;
        d.rates = Totals {
            requests: rate(totals.requests, before.requests),
            refused: rate(totals.refused, before.refused),
            upstream_5xx: rate(totals.upstream_5xx, before.upstream_5xx),
        };
        let auto = auto?;
        let over = |limit: Option<u64>, v: u64| limit.is_some_and(|l| v > l);
        let above = over(auto.requests_per_second, d.rates.requests)
            || over(auto.refused_per_second, d.rates.refused)
            || over(auto.upstream_5xx_per_second, d.rates.upstream_5xx);
        if above {
            d.below_since = None;
            d.above_since.get_or_insert(then);
        } else {
            d.above_since = None;
            d.below_since.get_or_insert(then);
        }
        if i.setting != Setting::Auto {
            return None;
        }
        let on = self.on.load(Ordering::Relaxed);
        let d = &i.detector;
        let (switch, reason) = match (on, d.above_since, d.below_since) {
            (false, Some(since), _) if now - since >= auto.trip_after.as_nanos() as u64 => (
                true,
                format!(
                    "auto: above threshold for {}s ({} requests/s, {} refused/s, {} upstream 5xx/s)",
                    (now - since) / 1_000_000_000,
                    d.rates.requests,
                    d.rates.refused,
                    d.rates.upstream_5xx
                ),
            ),
            (true, _, Some(since)) if now - since >= auto.quiet.as_nanos() as u64 => (
                false,
                format!("auto: quiet for {}s", (now - since) / 1_000_000_000),
            ),
            _ => return None,
        };
        self.on.store(switch, Ordering::Release);
        i.since_unix = now_unix;
        i.reason = reason.clone();
        Some(Switched { on: switch, reason })
    }

    /// For status pages: (on, setting, by hand, since, reason, last measured rates).
    pub fn describe(&self) -> serde_json::Value {
        let i = self.inner.lock();
        serde_json::json!({
            "on": self.is_on(),
            "setting": i.setting.as_str(),
            "set_by_hand": i.by_hand,
            "since_unix": i.since_unix,
            "reason": i.reason,
            "rates_per_second": {
                "requests": i.detector.rates.requests,
                "refused": i.detector.rates.refused,
                "upstream_5xx": i.detector.rates.upstream_5xx,
            },
        })
    }
}

/// A request the profile would have refused.
#[derive(Debug, Clone)]
pub struct Example {
    /// When (Unix seconds).
    pub at_unix: u64,
    /// The client.
    pub ip: IpAddr,
    /// The path.
    pub path: String,
    /// The profile rule.
    pub rule: String,
}

/// Counter values at one moment, for windows over the recent past.
#[derive(Debug, Clone)]
struct Mark {
    at: Nanos,
    requests: u64,
    would_refuse: HashMap<String, u64>,
}

/// Over a window: (seconds covered, requests, would-refuse by rule).
pub type WindowCounts = (u64, u64, Vec<(String, u64)>);

/// What the profile would have refused recently, while the switch was off.
#[derive(Debug, Default)]
pub struct Preview {
    marks: Mutex<VecDeque<Mark>>,
    examples: Mutex<VecDeque<Example>>,
}

/// How many examples are kept.
const EXAMPLES: usize = 20;
/// How far back marks go.
const KEEP: Nanos = 16 * 60 * 1_000_000_000;

impl Preview {
    /// Records the totals at `now` (housekeeping, every few seconds).
    pub fn mark(&self, now: Nanos, requests: u64, would_refuse: HashMap<String, u64>) {
        let mut m = self.marks.lock();
        m.push_back(Mark {
            at: now,
            requests,
            would_refuse,
        });
        while m.front().is_some_and(|f| now.saturating_sub(f.at) > KEEP) {
            m.pop_front();
        }
    }

    /// Keeps `example` if the list is free right now (never waits: called on the request path).
    pub fn example(&self, example: impl FnOnce() -> Example) {
        if let Some(mut e) = self.examples.try_lock() {
            if e.len() >= EXAMPLES {
                e.pop_front();
            }
            e.push_back(example());
        }
    }

    /// Over the last `window` up to `now`: (seconds covered, requests, would-refuse by rule),
    /// against the current totals; `None` before the first mark.
    pub fn window(
        &self,
        window: Duration,
        now: Nanos,
        requests: u64,
        would_refuse: &HashMap<String, u64>,
    ) -> Option<WindowCounts> {
        let m = self.marks.lock();
        let from = now.saturating_sub(window.as_nanos() as u64);
        let base = m.iter().find(|mark| mark.at >= from).or(m.back())?;
        let mut by_rule: Vec<(String, u64)> = would_refuse
            .iter()
            .map(|(rule, n)| {
                let before = base.would_refuse.get(rule).copied().unwrap_or(0);
                (rule.clone(), n.saturating_sub(before))
            })
            .collect();
        by_rule.sort();
        Some((
            now.saturating_sub(base.at) / 1_000_000_000,
            requests.saturating_sub(base.requests),
            by_rule,
        ))
    }

    /// The recent examples, oldest first.
    pub fn examples(&self) -> Vec<Example> {
        self.examples.lock().iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Nanos = 1_000_000_000;

    fn auto() -> AutoSettings {
        AutoSettings {
            requests_per_second: None,
            refused_per_second: Some(100),
            upstream_5xx_per_second: None,
            trip_after: Duration::from_secs(5),
            quiet: Duration::from_secs(10),
        }
    }

    #[test]
    fn hand_setting_wins_and_reports_changes() {
        let s = AttackSwitch::new(Setting::Off, false, 0);
        assert!(!s.is_on());
        assert!(s.set(Setting::On, "test", 1).is_some_and(|c| c.on));
        assert!(s.is_on());
        assert_eq!(
            s.set(Setting::On, "test", 2),
            None,
            "no change, nothing to log"
        );
        // the detector does not touch a hand setting
        let a = auto();
        for t in 0..30 {
            assert_eq!(s.sample(Some(&a), Totals::default(), t * SEC, 0), None);
        }
        assert!(s.is_on());
        assert!(s.set(Setting::Off, "test", 3).is_some_and(|c| !c.on));
    }

    #[test]
    fn detector_trips_after_the_hold_and_releases_after_quiet() {
        let s = AttackSwitch::new(Setting::Auto, false, 0);
        let a = auto();
        let mut refused = 0;
        let mut switched_on = None;
        // 500 refusals a second: above 100/s.
        for t in 0..20u64 {
            refused += 500;
            let totals = Totals {
                refused,
                ..Totals::default()
            };
            if let Some(c) = s.sample(Some(&a), totals, t * SEC, t) {
                assert!(c.on);
                switched_on = Some(t);
                break;
            }
        }
        // first sample only sets the baseline; above from t=0 (the start of the interval)
        assert_eq!(switched_on, Some(5));
        assert!(s.is_on());
        // a short dip does not release it
        let mut t = 6;
        for _ in 0..5 {
            let totals = Totals {
                refused,
                ..Totals::default()
            };
            assert_eq!(s.sample(Some(&a), totals, t * SEC, t), None);
            t += 1;
        }
        refused += 1000;
        let totals = Totals {
            refused,
            ..Totals::default()
        };
        assert_eq!(s.sample(Some(&a), totals, t * SEC, t), None);
        // quiet for 10 s releases it
        let mut switched_off = None;
        for _ in 0..20 {
            t += 1;
            let totals = Totals {
                refused,
                ..Totals::default()
            };
            if let Some(c) = s.sample(Some(&a), totals, t * SEC, t) {
                assert!(!c.on);
                switched_off = Some(t);
                break;
            }
        }
        assert_eq!(switched_off, Some(21));
        assert!(!s.is_on());
    }

    #[test]
    fn a_reload_resets_a_switch_not_set_by_hand() {
        let s = AttackSwitch::new(Setting::Auto, false, 0);
        let a = auto();
        let mut refused = 0;
        for t in 0..10u64 {
            refused += 1000;
            let totals = Totals {
                refused,
                ..Totals::default()
            };
            s.sample(Some(&a), totals, t * SEC, t);
        }
        assert!(s.is_on(), "auto switched it on");
        // auto removed from the config: off, and said so
        assert!(s.reconfigure(false, 20).is_some_and(|c| !c.on));
        assert!(!s.is_on());
        assert_eq!(s.setting(), (Setting::Off, false));
        // auto added back: the detector is in charge again
        assert_eq!(s.reconfigure(true, 30), None);
        assert_eq!(s.setting(), (Setting::Auto, false));
        // a hand setting is not touched by reloads
        s.set(Setting::On, "test", 40);
        assert_eq!(s.reconfigure(false, 50), None);
        assert!(s.is_on());
    }

    #[test]
    fn preview_window_subtracts_the_oldest_mark_inside_it() {
        let p = Preview::default();
        let counts = |n| HashMap::from([("foreign".to_string(), n)]);
        p.mark(0, 0, counts(0));
        p.mark(60 * SEC, 1000, counts(10));
        p.mark(120 * SEC, 2000, counts(50));
        let (secs, req, by) = p
            .window(Duration::from_secs(60), 150 * SEC, 2500, &counts(70))
            .expect("marks exist");
        assert_eq!((secs, req), (30, 500));
        assert_eq!(by, vec![("foreign".to_string(), 20)]);
        let (secs, req, by) = p
            .window(Duration::from_secs(300), 150 * SEC, 2500, &counts(70))
            .expect("marks exist");
        assert_eq!((secs, req), (150, 2500));
        assert_eq!(by, vec![("foreign".to_string(), 70)]);
    }
}
