//! The dynamic deny set: bans the proxy adds itself (autoban) or an operator adds by hand.
//!
//! A ban names a client key (an IPv4 address, or an IPv6 client's `ipv6_prefix` network, the
//! same key the limiter uses) or, when added by hand, any CIDR. Key bans sit in a sharded hash
//! map, so the engine's check is one hash lookup under a shard's read lock, and none at all while
//! no ban exists. Bans of other networks sit in a map by (family, prefix length, network): a
//! check tries each prefix length in use, so it costs one lookup per distinct length, not per
//! ban.
//!
//! A ban that ended is kept as history until `forget_at`, so that a repeat offender's next ban
//! is longer (see [`crate::defense::autoban`]). Times are the engine's monotonic [`Nanos`];
//! [`crate::defense::store`] converts them to Unix time to persist them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use ipnet::IpNet;
use parking_lot::RwLock;

use crate::engine::{Bans, Mode};
use crate::iplist::ip_key;
use crate::limiter::Nanos;

const SHARDS: usize = 16;

/// Where a ban came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An `autoban` policy, by name.
    Policy(Arc<str>),
    /// `POST /admin/bans` (or a state file entry written by one).
    Manual,
}

impl Source {
    /// `manual`, or the policy's name.
    pub fn name(&self) -> &str {
        match self {
            Source::Policy(p) => p,
            Source::Manual => "manual",
        }
    }
}

/// One ban, live or remembered.
#[derive(Debug, Clone, PartialEq)]
pub struct Ban {
    /// The banned network (a single address is a /32 or /128; an IPv6 client key its prefix).
    pub net: IpNet,
    /// When it was added (Unix seconds, for people).
    pub since_unix: u64,
    /// When it ends.
    pub until: Nanos,
    /// Until when a new ban of the same key counts as a repeat (history is dropped after).
    pub forget_at: Nanos,
    /// Bans of this key in a row, this one included.
    pub strikes: u32,
    /// `count`: the ban is recorded and requests are counted, not refused.
    pub mode: Mode,
    /// Who added it.
    pub source: Source,
    /// Why, in words (which policy tripped on what, or the operator's note).
    pub reason: String,
}

impl Ban {
    /// Whether the ban is in force at `now`.
    pub fn live(&self, now: Nanos) -> bool {
        self.until > now
    }
}

/// What adding a ban did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// A new ban, or a longer or stricter one over a live ban.
    Banned,
    /// The key was banned already for at least as long: nothing changed.
    AlreadyBanned,
    /// The set is full (`bans.max_bans`): not added.
    Full,
}

/// Bans of networks that are not a client key (e.g. a /24 by hand), by (IPv6?, prefix length,
/// network); a lookup tries each prefix length in use, longest first.
#[derive(Debug, Default)]
struct CidrBans {
    map: HashMap<(bool, u8, u128), Ban>,
    /// Prefix lengths in use (IPv4, IPv6), longest first, with how many bans use each.
    lens: [Vec<(u8, usize)>; 2],
}

impl CidrBans {
    fn slot(net: IpNet) -> (bool, u8, u128) {
        match net.trunc() {
            IpNet::V4(n) => (false, n.prefix_len(), u128::from(u32::from(n.network()))),
            IpNet::V6(n) => (true, n.prefix_len(), u128::from(n.network())),
        }
    }

    fn insert(&mut self, ban: Ban) -> Option<Ban> {
        let slot = Self::slot(ban.net);
        let old = self.map.insert(slot, ban);
        if old.is_none() {
            let lens = &mut self.lens[usize::from(slot.0)];
            match lens.iter_mut().find(|(l, _)| *l == slot.1) {
                Some((_, n)) => *n += 1,
                None => {
                    lens.push((slot.1, 1));
                    lens.sort_by_key(|l| std::cmp::Reverse(l.0));
                }
            }
        }
        old
    }

    fn remove(&mut self, net: IpNet) -> Option<Ban> {
        let slot = Self::slot(net);
        let old = self.map.remove(&slot)?;
        let lens = &mut self.lens[usize::from(slot.0)];
        if let Some(i) = lens.iter().position(|(l, _)| *l == slot.1) {
            lens[i].1 -= 1;
            if lens[i].1 == 0 {
                lens.remove(i);
            }
        }
        Some(old)
    }

    /// The strictest live ban covering `ip`.
    fn check(&self, ip: IpAddr, now: Nanos) -> Option<Mode> {
        let (v6, bits, width) = match ip.to_canonical() {
            IpAddr::V4(v4) => (false, u128::from(u32::from(v4)), 32u32),
            IpAddr::V6(v6) => (true, u128::from(v6), 128u32),
        };
        let mut found = None;
        for &(len, _) in &self.lens[usize::from(v6)] {
            let mask = match u32::from(len) {
                0 => 0,
                l => (u128::MAX >> (128 - width)) & !((1u128 << (width - l)) - 1),
            };
            if let Some(b) = self.map.get(&(v6, len, bits & mask)) {
                if b.live(now) {
                    if b.mode == Mode::Enforce {
                        return Some(Mode::Enforce);
                    }
                    found = Some(b.mode);
                }
            }
        }
        found
    }
}

/// The ban set the engine consults before any rule.
#[derive(Debug)]
pub struct BanSet {
    /// Bans of one client key (the limiter's key: an IPv4 address, an IPv6 prefix).
    shards: Box<[RwLock<HashMap<u128, Ban>>]>,
    /// Bans of other networks.
    cidrs: RwLock<CidrBans>,
    /// Entries held (live and history), across shards and CIDRs: 0 lets the check skip.
    held: AtomicUsize,
    /// Entries in `cidrs`: 0 skips their lookups.
    cidr_held: AtomicUsize,
    /// The IPv6 prefix client keys are made with (`client_ip.ipv6_prefix`).
    v6_prefix: AtomicU8,
    /// The most entries held (live bans and remembered ones).
    max: usize,
    /// Changed since the last save.
    dirty: AtomicBool,
    /// When the set last dropped history to make room (monotonic ns + 1; 0: never).
    last_room: AtomicU64,
    /// When a full set was last reported.
    last_full_warning: AtomicU64,
    hasher: foldhash::fast::RandomState,
}

impl BanSet {
    /// An empty set holding at most `max` entries; IPv6 clients are keyed by `v6_prefix`.
    pub fn new(max: usize, v6_prefix: u8) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            cidrs: RwLock::new(CidrBans::default()),
            held: AtomicUsize::new(0),
            cidr_held: AtomicUsize::new(0),
            v6_prefix: AtomicU8::new(v6_prefix.min(128)),
            max: max.max(1),
            dirty: AtomicBool::new(false),
            last_room: AtomicU64::new(0),
            last_full_warning: AtomicU64::new(0),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn shard(&self, key: u128) -> &RwLock<HashMap<u128, Ban>> {
        use std::hash::BuildHasher;
        let h = self.hasher.hash_one(key);
        &self.shards[(h >> 40) as usize % SHARDS]
    }

    /// The client key of `net`, if it is exactly one client's key.
    fn key_of(&self, net: IpNet) -> Option<u128> {
        key_of_net(net, self.v6_prefix.load(Ordering::Relaxed))
    }

    /// The client key of `ip`.
    fn key(&self, ip: IpAddr) -> u128 {
        ip_key(ip, self.v6_prefix.load(Ordering::Relaxed))
    }

    /// The mode of the strictest live ban covering `ip`, if any.
    ///
    /// The request path: no allocation, a shard read lock (and the CIDR set's, when it holds
    /// anything), and nothing at all while the set is empty.
    #[inline]
    pub fn check(&self, ip: IpAddr, now: Nanos) -> Option<Mode> {
        if self.held.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let key = self.key(ip);
        let by_key = self
            .shard(key)
            .read()
            .get(&key)
            .filter(|b| b.live(now))
            .map(|b| b.mode);
        if by_key == Some(Mode::Enforce) || self.cidr_held.load(Ordering::Relaxed) == 0 {
            return by_key;
        }
        match self.cidrs.read().check(ip, now) {
            Some(Mode::Enforce) => Some(Mode::Enforce),
            other => by_key.or(other),
        }
    }

    /// The ban (live or remembered) of the client `ip`.
    pub fn of_client(&self, ip: IpAddr) -> Option<Ban> {
        let key = self.key(ip);
        self.shard(key).read().get(&key).cloned()
    }

    /// Adds `ban`.
    ///
    /// A live ban is only ever lengthened or made stricter (`count` → `enforce`) by this, never
    /// shortened: to lift one, [`remove`](Self::remove) it. When the set is full, remembered
    /// bans are dropped to make room (at most once a second); only live bans fill it for good.
    pub fn add(&self, ban: Ban, now: Nanos) -> Added {
        let ban = Ban {
            net: canonical_net(ban.net),
            ..ban
        };
        if self.held.load(Ordering::Relaxed) >= self.max {
            self.make_room(now);
        }
        let full = || self.held.load(Ordering::Relaxed) >= self.max;
        let added = match self.key_of(ban.net) {
            Some(key) => {
                let mut shard = self.shard(key).write();
                match shard.get_mut(&key) {
                    Some(old) => merge(old, ban, now),
                    None if full() => return Added::Full,
                    None => {
                        shard.insert(key, ban);
                        self.held.fetch_add(1, Ordering::Relaxed);
                        Added::Banned
                    }
                }
            }
            None => {
                let mut cidrs = self.cidrs.write();
                match cidrs.map.get_mut(&CidrBans::slot(ban.net)) {
                    Some(old) => merge(old, ban, now),
                    None if full() => return Added::Full,
                    None => {
                        cidrs.insert(ban);
                        self.held.fetch_add(1, Ordering::Relaxed);
                        self.cidr_held.fetch_add(1, Ordering::Relaxed);
                        Added::Banned
                    }
                }
            }
        };
        if added == Added::Banned {
            self.dirty.store(true, Ordering::Release);
        }
        added
    }

    /// Drops remembered (not live) bans, if that was not tried in the last second.
    fn make_room(&self, now: Nanos) {
        let last = self.last_room.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last - 1) < 1_000_000_000 {
            return;
        }
        if self
            .last_room
            .compare_exchange(last, now + 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return; // another thread is at it
        }
        let dropped = self.retain(|b| b.live(now));
        if dropped > 0 {
            tracing::info!(dropped, "ban set full: forgot bans that had ended (repeat offenders among them start again at strike 1)");
        }
    }

    /// Keeps the entries `keep` says yes to; returns how many were dropped.
    fn retain(&self, keep: impl Fn(&Ban) -> bool) -> usize {
        let mut dropped = 0;
        for shard in self.shards.iter() {
            let mut m = shard.write();
            let before = m.len();
            m.retain(|_, b| keep(b));
            dropped += before - m.len();
        }
        let mut cidrs = self.cidrs.write();
        let gone: Vec<IpNet> = cidrs
            .map
            .values()
            .filter(|b| !keep(b))
            .map(|b| b.net)
            .collect();
        for net in &gone {
            cidrs.remove(*net);
        }
        drop(cidrs);
        self.cidr_held.fetch_sub(gone.len(), Ordering::Relaxed);
        dropped += gone.len();
        if dropped > 0 {
            self.held.fetch_sub(dropped, Ordering::Relaxed);
            self.dirty.store(true, Ordering::Release);
        }
        dropped
    }

    /// Whether a full set should be reported now (at most once every 10 s).
    pub fn full_warning_due(&self, now: Nanos) -> bool {
        let last = self.last_full_warning.load(Ordering::Relaxed);
        (last == 0 || now.saturating_sub(last) >= 10_000_000_000)
            && self
                .last_full_warning
                .compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// Lifts the ban of `net` and forgets its history; `true` if there was one.
    pub fn remove(&self, net: IpNet) -> bool {
        let net = canonical_net(net);
        let removed = match self.key_of(net) {
            Some(key) => self.shard(key).write().remove(&key).is_some(),
            None => {
                let removed = self.cidrs.write().remove(net).is_some();
                if removed {
                    self.cidr_held.fetch_sub(1, Ordering::Relaxed);
                }
                removed
            }
        };
        if removed {
            self.held.fetch_sub(1, Ordering::Relaxed);
            self.dirty.store(true, Ordering::Release);
        }
        removed
    }

    /// Files every entry again under a new IPv6 client prefix (after `client_ip.ipv6_prefix`
    /// changed): a ban keeps covering the same network, as a client key or as a CIDR ban.
    pub fn rekey(&self, v6_prefix: u8, now: Nanos) {
        let v6_prefix = v6_prefix.min(128);
        if self.v6_prefix.swap(v6_prefix, Ordering::AcqRel) == v6_prefix {
            return;
        }
        let all = self.all();
        self.retain(|_| false);
        for b in all {
            self.add(b, now);
        }
        self.dirty.store(true, Ordering::Release);
    }

    /// Drops remembered bans past their `forget_at`; returns how many. Background task only.
    pub fn sweep(&self, now: Nanos) -> usize {
        self.retain(|b| b.live(now) || b.forget_at > now)
    }

    /// Every entry, live and history, sorted by network (admin, export, persistence).
    pub fn all(&self) -> Vec<Ban> {
        let mut v: Vec<Ban> = self
            .shards
            .iter()
            .flat_map(|s| s.read().values().cloned().collect::<Vec<_>>())
            .collect();
        v.extend(self.cidrs.read().map.values().cloned());
        v.sort_by_key(|b| b.net);
        v
    }

    /// Bans in force at `now`, sorted by network.
    pub fn live_bans(&self, now: Nanos) -> Vec<Ban> {
        let mut v = self.all();
        v.retain(|b| b.live(now));
        v
    }

    /// How many bans are in force at `now` (takes every shard's read lock: not per request).
    pub fn live(&self, now: Nanos) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().values().filter(|b| b.live(now)).count())
            .sum::<usize>()
            + self
                .cidrs
                .read()
                .map
                .values()
                .filter(|b| b.live(now))
                .count()
    }

    /// Whether anything changed since the last [`take_dirty`](Self::take_dirty).
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::AcqRel)
    }

    /// Marks the set changed (a save failed and must be retried).
    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    /// The most entries held.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// Puts `ban` over the entry `old` of the same network: a live ban is only lengthened or made
/// stricter; an ended one (history) is replaced.
fn merge(old: &mut Ban, ban: Ban, now: Nanos) -> Added {
    if !old.live(now) {
        *old = ban;
        return Added::Banned;
    }
    let stricter = old.mode == Mode::Count && ban.mode == Mode::Enforce;
    if ban.until <= old.until && !stricter {
        return Added::AlreadyBanned;
    }
    *old = Ban {
        until: ban.until.max(old.until),
        forget_at: ban.forget_at.max(old.forget_at),
        ..ban
    };
    Added::Banned
}

/// `net` without host bits, and an IPv4-mapped IPv6 network (`::ffff:192.0.2.0/120`) as the
/// IPv4 network it stands for (clients are judged by their IPv4 address).
pub fn canonical_net(net: IpNet) -> IpNet {
    match net.trunc() {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, n.prefix_len() - 96)
                .map(|n| IpNet::V4(n.trunc()))
                .unwrap_or(net),
            None => IpNet::V6(n),
        },
        other => other,
    }
}

/// The client key of a network, if it is exactly one client's key under `v6_prefix` (an IPv4
/// /32, or an IPv6 network of `v6_prefix` bits), else `None`.
pub fn key_of_net(net: IpNet, v6_prefix: u8) -> Option<u128> {
    let net = net.trunc();
    let whole = match net {
        IpNet::V4(n) => n.prefix_len() == 32,
        IpNet::V6(n) => n.prefix_len() == v6_prefix.min(128),
    };
    whole.then(|| ip_key(net.addr(), v6_prefix))
}

/// The network a client key stands for: the address for IPv4, its `v6_prefix` network for IPv6.
pub fn net_of(ip: IpAddr, v6_prefix: u8) -> IpNet {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpNet::from(IpAddr::V4(v4)),
        IpAddr::V6(v6) => IpNet::new(IpAddr::V6(v6), v6_prefix.min(128))
            .map(|n| n.trunc())
            .unwrap_or_else(|_| IpNet::from(IpAddr::V6(v6))),
    }
}

impl Bans for BanSet {
    #[inline]
    fn check(&self, ip: IpAddr, now: Nanos) -> Option<Mode> {
        BanSet::check(self, ip, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Nanos = 1_000_000_000;

    fn ban(net: &str, until: Nanos, mode: Mode) -> Ban {
        Ban {
            net: net.parse().expect("test net"),
            since_unix: 0,
            until,
            forget_at: until + 100 * SEC,
            strikes: 1,
            mode,
            source: Source::Manual,
            reason: String::new(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test ip")
    }

    #[test]
    fn cidr_bans_of_any_length_are_found_and_the_strictest_wins() {
        let b = BanSet::new(100, 64);
        for (net, mode) in [
            ("203.0.113.7/32", Mode::Count),
            ("203.0.113.0/24", Mode::Enforce),
            ("198.51.0.0/16", Mode::Count),
            ("2001:db8::/32", Mode::Enforce),
            ("2001:db9::1/128", Mode::Enforce),
        ] {
            assert_eq!(b.add(ban(net, 10 * SEC, mode), 0), Added::Banned, "{net}");
        }
        // a count-mode key ban does not hide the enforced /24 around it
        assert_eq!(b.check(ip("203.0.113.7"), 0), Some(Mode::Enforce));
        assert_eq!(b.check(ip("198.51.3.4"), 0), Some(Mode::Count));
        assert_eq!(b.check(ip("2001:db8:5::1"), 0), Some(Mode::Enforce));
        assert_eq!(b.check(ip("2001:db9::1"), 0), Some(Mode::Enforce));
        assert_eq!(b.check(ip("2001:db9::2"), 0), None);
        assert_eq!(b.check(ip("192.0.2.1"), 0), None);
        // an IPv4-mapped address is the IPv4 client, when checked and when banned
        assert_eq!(b.check(ip("::ffff:203.0.113.9"), 0), Some(Mode::Enforce));
        assert_eq!(
            b.add(ban("::ffff:192.0.2.0/120", 10 * SEC, Mode::Enforce), 0),
            Added::Banned
        );
        assert_eq!(b.check(ip("192.0.2.1"), 0), Some(Mode::Enforce));
        assert!(b.remove("192.0.2.0/24".parse().expect("net")));
        assert_eq!(b.check(ip("192.0.2.1"), 0), None);
        // all end at their time
        assert_eq!(b.check(ip("203.0.113.7"), 10 * SEC), None);
    }

    #[test]
    fn a_live_ban_is_only_lengthened_or_made_stricter() {
        let b = BanSet::new(100, 64);
        b.add(ban("192.0.2.1/32", 100 * SEC, Mode::Count), 0);
        assert_eq!(
            b.add(ban("192.0.2.1/32", 50 * SEC, Mode::Count), 0),
            Added::AlreadyBanned
        );
        assert_eq!(
            b.add(ban("192.0.2.1/32", 50 * SEC, Mode::Enforce), 0),
            Added::Banned
        );
        let now = b.of_client(ip("192.0.2.1")).expect("banned");
        assert_eq!((now.mode, now.until), (Mode::Enforce, 100 * SEC));
    }

    #[test]
    fn a_full_set_forgets_ended_bans_before_refusing_new_ones() {
        let b = BanSet::new(4, 64);
        for i in 1..=4 {
            b.add(ban(&format!("192.0.2.{i}/32"), 10 * SEC, Mode::Enforce), 0);
        }
        assert_eq!(
            b.add(ban("192.0.2.5/32", 10 * SEC, Mode::Enforce), SEC),
            Added::Full,
            "four live bans fill it"
        );
        // at 20 s the four are history (remembered until 110 s): they make room
        assert_eq!(
            b.add(ban("192.0.2.5/32", 30 * SEC, Mode::Enforce), 20 * SEC),
            Added::Banned
        );
        assert_eq!(b.all().len(), 1);
        assert_eq!(b.live(20 * SEC), 1);
        assert!(b.full_warning_due(20 * SEC));
        assert!(!b.full_warning_due(25 * SEC), "at most every 10 s");
    }

    #[test]
    fn a_new_ipv6_prefix_keeps_every_ban_covering_the_same_network() {
        let b = BanSet::new(100, 64);
        b.add(ban("2001:db8:1:2::/64", 10 * SEC, Mode::Enforce), 0);
        b.add(ban("198.51.100.7/32", 10 * SEC, Mode::Enforce), 0);
        b.rekey(56, 0);
        // the /64 is no longer a client key but still covers its addresses, and only them
        assert_eq!(b.check(ip("2001:db8:1:2::9"), 0), Some(Mode::Enforce));
        assert_eq!(b.check(ip("2001:db8:1:3::9"), 0), None);
        assert_eq!(b.check(ip("198.51.100.7"), 0), Some(Mode::Enforce));
        assert_eq!(b.live(0), 2);
        // and it can still be lifted by its network
        assert!(b.remove("2001:db8:1:2::/64".parse().expect("net")));
        assert_eq!(b.check(ip("2001:db8:1:2::9"), 0), None);
    }

    #[test]
    fn sweep_drops_history_after_forget_at() {
        let b = BanSet::new(100, 64);
        b.add(ban("192.0.2.1/32", 10 * SEC, Mode::Enforce), 0);
        b.add(ban("192.0.2.0/30", 10 * SEC, Mode::Enforce), 0);
        assert_eq!(b.sweep(50 * SEC), 0, "remembered until 110 s");
        assert!(b.of_client(ip("192.0.2.1")).is_some());
        assert_eq!(b.sweep(111 * SEC), 2);
        assert!(b.all().is_empty());
        assert_eq!(b.check(ip("192.0.2.1"), 0), None);
    }
}
