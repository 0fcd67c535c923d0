//! Autoban: watch what each client gets back and ban the ones that behave like probers.
//!
//! A policy counts, per client key, events within a window: responses whose status is in a set
//! (`kind: status`, by default 400, 401, 403, 404 and 405, from upstream or from sekisho's own
//! deny rules), refusals by rate limits (`kind: limited`), or connections refused at accept or
//! cut by a `connections:` deadline (`kind: connections`: a slowloris, a connection flood). When a client has more than `more_than`
//! events in the window (and, for `status`, across at least `distinct_paths` paths), it is banned
//! for `ban`; each ban within `max_ban` of the previous one doubles, up to `max_ban`.
//!
//! Windows are fixed and start at a client's first event: a client whose events straddle two
//! windows can stay under the threshold with up to twice as many. Distinct paths are estimated
//! from a 128-bit set of path hashes (linear counting): exact enough for thresholds up to 64,
//! 16 bytes a client, and a client repeating one path (a missing favicon) counts as one.
//!
//! Only the request path's `logging` hook calls [`Offenders::observe`], and only for events a
//! policy counts: a 200 response costs one bitset test per policy.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::engine::{Decision, Mode, RuleRef};
use crate::limiter::Nanos;

/// What a policy counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Responses whose status is in the set (a bit per status 0..=599).
    Status(StatusSet),
    /// Refusals by enforced rate limits.
    Limited,
    /// Connections refused at accept or cut by a deadline (`connections:`).
    Connections,
}

/// A set of HTTP statuses, as a bitmap.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusSet([u64; 10]);

impl StatusSet {
    /// The default: 400, 401, 403, 404, 405.
    pub fn probing() -> Self {
        Self::from_iter([400, 401, 403, 404, 405])
    }

    /// Whether `status` is in the set.
    #[inline]
    pub fn contains(&self, status: u16) -> bool {
        let s = usize::from(status);
        s < 640 && self.0[s / 64] & (1 << (s % 64)) != 0
    }

    /// The statuses, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0u16..640).filter(|s| self.contains(*s))
    }
}

impl FromIterator<u16> for StatusSet {
    fn from_iter<I: IntoIterator<Item = u16>>(iter: I) -> Self {
        let mut s = Self::default();
        for status in iter {
            let i = usize::from(status);
            if i < 640 {
                s.0[i / 64] |= 1 << (i % 64);
            }
        }
        s
    }
}

/// An `autoban:` policy, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// `name:`, unique among policies.
    pub name: String,
    /// `kind:` and `statuses:`.
    pub trigger: Trigger,
    /// Banned when the events in a window are more than this.
    pub more_than: u32,
    /// `kind: status` only: and they touched at least this many distinct paths (1: any).
    pub distinct_paths: u32,
    /// `window:`.
    pub window: Duration,
    /// `ban:`: the first ban's length.
    pub ban: Duration,
    /// `max_ban:`: repeat bans double up to this; a ban within this long after the previous
    /// one ended counts as a repeat.
    pub max_ban: Duration,
    /// `mode:`: `count` records the ban without refusing anyone.
    pub mode: Mode,
}

impl Policy {
    /// The length of ban number `strikes` (1 for the first): `ban` doubled per repeat, at most
    /// `max_ban`.
    pub fn ban_for(&self, strikes: u32) -> Duration {
        let doublings = strikes.saturating_sub(1).min(32);
        self.ban
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.max_ban)
            .min(self.max_ban)
    }

    /// Whether the policy counts a response with `status`.
    #[inline]
    pub fn counts_status(&self, status: u16) -> bool {
        matches!(&self.trigger, Trigger::Status(s) if s.contains(status))
    }

    /// Whether the policy counts a request that got `decision` and was answered `status`: a
    /// rate-limit refusal (`kind: limited`), or a watched status (`kind: status`; a limit's own
    /// refusal is not also a status event). `kind: connections` is fed by the accept gate and
    /// the connection deadlines, never by a request. See [`feeds_autoban`] first.
    pub fn counts_request(&self, decision: Decision, status: u16) -> bool {
        let limited = matches!(decision, Decision::Limit { .. });
        match self.trigger {
            Trigger::Limited => limited,
            Trigger::Status(_) => !limited && self.counts_status(status),
            Trigger::Connections => false,
        }
    }
}

/// Whether a request so decided feeds the autoban policies at all: allow-listed clients,
/// clients under a ban (either mode) and requests refused by the deny list do not.
pub fn feeds_autoban(decision: Decision) -> bool {
    !matches!(
        decision,
        Decision::AllowListed
            | Decision::Deny {
                rule: RuleRef::DenyList | RuleRef::Ban
            }
            | Decision::Count { rule: RuleRef::Ban }
    )
}

/// One client's events under one policy, in the current window.
#[derive(Debug, Clone, Copy)]
struct Offender {
    /// When the window that started at the client's first event ends.
    expires: Nanos,
    count: u32,
    /// Bit `h % 128` set for each path hash `h` seen (two words: no 16-byte alignment).
    paths: [u64; 2],
}

impl Offender {
    fn distinct_paths(&self) -> u32 {
        let set = self.paths[0].count_ones() + self.paths[1].count_ones();
        if set >= 128 {
            return 128 * 5; // saturated: more than the estimator can tell
        }
        // linear counting: n = -m ln(zeros / m)
        let m = 128.0_f64;
        let n = -m * ((m - f64::from(set)) / m).ln();
        n.round() as u32
    }
}

/// What an observation found: the client tripped the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trip {
    /// Events in the window, this one included.
    pub events: u32,
    /// Distinct paths, estimated.
    pub distinct_paths: u32,
}

const SHARDS: usize = 16;

/// (policy id, client key as two words) → counts.
type OffenderMap = HashMap<(u32, [u64; 2]), Offender>;

/// Per-client event counts for every policy, bounded.
#[derive(Debug)]
pub struct Offenders {
    shards: Box<[Mutex<OffenderMap>]>,
    shard_cap: usize,
    hasher: foldhash::fast::RandomState,
    /// Entries dropped to make room while their window was still open.
    evictions: AtomicU64,
}

impl Offenders {
    /// A tracker holding at most about `max` (policy, client) pairs.
    pub fn new(max: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            shard_cap: max.max(SHARDS).div_ceil(SHARDS),
            hasher: foldhash::fast::RandomState::default(),
            evictions: AtomicU64::new(0),
        }
    }

    /// The id a policy's entries are filed under (stable across reloads for the same name).
    pub fn policy_id(name: &str) -> u32 {
        // FNV-1a: a fixed function, not seeded, so ids survive reloads.
        let mut h: u32 = 0x811c_9dc5;
        for b in name.bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        h
    }

    /// Hashes a path for [`observe`](Self::observe).
    pub fn path_hash(&self, path: &[u8]) -> u64 {
        self.hasher.hash_one(path)
    }

    /// Records one event of client `key` under `policy` at `now`; `Some` when it trips the
    /// policy (its count is then reset: the caller bans).
    pub fn observe(
        &self,
        policy_id: u32,
        policy: &Policy,
        key: u128,
        path_hash: u64,
        now: Nanos,
    ) -> Option<Trip> {
        let k = (policy_id, [(key >> 64) as u64, key as u64]);
        let shard = &self.shards[(self.hasher.hash_one(k) >> 40) as usize % SHARDS];
        let mut map = shard.lock();
        let window = policy.window.as_nanos() as u64;
        let bit = path_hash % 128;
        let fresh = Offender {
            expires: now.saturating_add(window),
            count: 0,
            paths: [0, 0],
        };
        if !map.contains_key(&k) && map.len() >= self.shard_cap {
            let evicted = evict(&mut map, now);
            self.evictions.fetch_add(evicted as u64, Ordering::Relaxed);
        }
        let o = map.entry(k).or_insert(fresh);
        if now > o.expires {
            *o = fresh;
        }
        o.count = o.count.saturating_add(1);
        o.paths[(bit / 64) as usize] |= 1 << (bit % 64);
        let distinct = o.distinct_paths();
        let trips = o.count > policy.more_than
            && (policy.distinct_paths <= 1 || distinct >= policy.distinct_paths);
        if !trips {
            return None;
        }
        let trip = Trip {
            events: o.count,
            distinct_paths: distinct,
        };
        map.remove(&k);
        Some(trip)
    }

    /// Drops entries whose window ended. Background task only.
    pub fn sweep(&self, now: Nanos) -> usize {
        let mut dropped = 0;
        for shard in self.shards.iter() {
            let mut m = shard.lock();
            let before = m.len();
            m.retain(|_, o| o.expires >= now);
            dropped += before - m.len();
        }
        dropped
    }

    /// (policy, client) pairs tracked now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries dropped with an open window to stay within the bound.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
}

/// Makes room in a full shard: drops entries whose window ended, else the oldest eighth.
fn evict(map: &mut OffenderMap, now: Nanos) -> usize {
    let before = map.len();
    map.retain(|_, o| o.expires >= now);
    if map.len() < before {
        return 0; // expired windows only: nothing a decision would have used
    }
    // Every window is open: drop the eighth that ends soonest (the oldest windows, whose
    // counts are the least likely to trip before they end).
    let mut ends: Vec<Nanos> = map.values().map(|o| o.expires).collect();
    let cut = ends.len() / 8;
    let (_, nth, _) = ends.select_nth_unstable(cut);
    let threshold = *nth;
    let mut dropped = 0;
    map.retain(|_, o| {
        if o.expires <= threshold && dropped <= cut {
            dropped += 1;
            false
        } else {
            true
        }
    });
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Nanos = 1_000_000_000;

    fn probers() -> Policy {
        Policy {
            name: "probers".into(),
            trigger: Trigger::Status(StatusSet::probing()),
            more_than: 20,
            distinct_paths: 10,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(600),
            max_ban: Duration::from_secs(3600),
            mode: Mode::Enforce,
        }
    }

    #[test]
    fn status_set_holds_what_it_was_given() {
        let s = StatusSet::probing();
        assert!(s.contains(404) && s.contains(400) && s.contains(405));
        assert!(!s.contains(200) && !s.contains(402) && !s.contains(500) && !s.contains(9999));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![400, 401, 403, 404, 405]);
    }

    #[test]
    fn many_distinct_paths_trip_one_path_does_not() {
        let o = Offenders::new(1000);
        let p = probers();
        let id = Offenders::policy_id(&p.name);
        let mut tripped = None;
        for i in 0..30u32 {
            let h = o.path_hash(format!("/nope/{i}").as_bytes());
            if let Some(t) = o.observe(id, &p, 7, h, u64::from(i) * SEC) {
                tripped = Some((i, t));
                break;
            }
        }
        let (at, trip) = tripped.expect("30 distinct 404s within a minute trip the policy");
        assert_eq!(at, 20, "the 21st event is the first above more_than: 20");
        assert_eq!(trip.events, 21);
        // linear counting over 128 bits: for 21 paths the estimate has a standard deviation of ~1.3
        assert!((15..=27).contains(&trip.distinct_paths), "{trip:?}");

        let h = o.path_hash(b"/favicon.ico");
        for i in 0..100u64 {
            assert_eq!(o.observe(id, &p, 8, h, i * SEC / 10), None);
        }
    }

    #[test]
    fn window_resets_count() {
        let o = Offenders::new(1000);
        let p = probers();
        let id = Offenders::policy_id(&p.name);
        // 15 events, a pause longer than the window, 15 more: never more than 20 in a window.
        for round in 0..2u64 {
            for i in 0..15u64 {
                let h = o.path_hash(format!("/{round}/{i}").as_bytes());
                let now = round * 61 * SEC + i * SEC;
                assert_eq!(o.observe(id, &p, 9, h, now), None);
            }
        }
        assert_eq!(o.len(), 1);
        assert_eq!(o.sweep(10_000 * SEC), 1);
        assert!(o.is_empty());
    }

    #[test]
    fn limited_policy_needs_no_distinct_paths() {
        let o = Offenders::new(1000);
        let p = Policy {
            trigger: Trigger::Limited,
            more_than: 3,
            distinct_paths: 1,
            ..probers()
        };
        let id = Offenders::policy_id("limited");
        let h = o.path_hash(b"/login");
        let hits: Vec<bool> = (0..5)
            .map(|i| o.observe(id, &p, 1, h, i).is_some())
            .collect();
        assert_eq!(hits, vec![false, false, false, true, false]);
    }

    #[test]
    fn repeat_bans_double_up_to_the_cap() {
        let p = probers();
        let mins: Vec<u64> = (1..=5).map(|s| p.ban_for(s).as_secs() / 60).collect();
        assert_eq!(mins, vec![10, 20, 40, 60, 60]);
        assert_eq!(p.ban_for(1000), p.max_ban);
    }

    #[test]
    fn bounded_with_evictions_counted() {
        let o = Offenders::new(160); // 10 per shard
        let p = probers();
        let id = Offenders::policy_id(&p.name);
        for k in 0..10_000u128 {
            o.observe(id, &p, k, 1, 5 * SEC);
        }
        assert!(o.len() <= 160, "{}", o.len());
        assert!(o.evictions() > 0);
    }
}
