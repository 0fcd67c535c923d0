//! The dynamic deny set: bans the proxy adds itself (autoban) or an operator adds by hand.
//!
//! A ban names a client key (an IPv4 address, or an IPv6 client's `ipv6_prefix` network, the
//! same key the limiter uses) or, when added by hand, any CIDR. Key bans sit in a sharded hash
//! map, so the engine's check is one hash lookup under a shard's read lock, and none at all while
//! no ban exists; hand-made CIDR bans of other sizes are few and sit in a small sorted set.
//!
//! A ban that ended is kept as history until `forget_at`, so that a repeat offender's next ban
//! is longer (see [`crate::defense::autoban`]). Times are the engine's monotonic [`Nanos`];
//! [`crate::defense::store`] converts them to Unix time to persist them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use ipnet::IpNet;
use parking_lot::{Mutex, RwLock};

use crate::config::Mode;
use crate::engine::ip_key;
use crate::iplist::IpSet;
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

/// Hand-made bans of networks that are not a client key (e.g. a /24).
#[derive(Debug, Default)]
struct CidrBans {
    set: IpSet,
    bans: Vec<Ban>,
}

/// The ban set the engine consults before any rule.
#[derive(Debug)]
pub struct BanSet {
    shards: Box<[RwLock<HashMap<u128, Ban>>]>,
    cidrs: ArcSwap<CidrBans>,
    /// Serialises changes to `cidrs` (load, copy, store).
    cidr_writer: Mutex<()>,
    /// Entries held (live and history), across shards and CIDRs: 0 lets the check skip.
    held: AtomicUsize,
    /// The most entries held (live bans and remembered ones).
    max: usize,
    /// Changed since the last save.
    dirty: AtomicBool,
    hasher: foldhash::fast::RandomState,
}

impl BanSet {
    /// An empty set holding at most `max` bans.
    pub fn new(max: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            cidrs: ArcSwap::from_pointee(CidrBans::default()),
            cidr_writer: Mutex::new(()),
            held: AtomicUsize::new(0),
            max: max.max(1),
            dirty: AtomicBool::new(false),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn shard(&self, key: u128) -> &RwLock<HashMap<u128, Ban>> {
        use std::hash::BuildHasher;
        let h = self.hasher.hash_one(key);
        &self.shards[(h >> 40) as usize % SHARDS]
    }

    /// The mode of the live ban covering `ip` (whose client key is `key`), if any.
    ///
    /// The request path: no allocation, one shard read lock, and nothing while the set is empty.
    #[inline]
    pub fn check(&self, ip: IpAddr, key: u128, now: Nanos) -> Option<Mode> {
        if self.held.load(Ordering::Relaxed) == 0 {
            return None;
        }
        if let Some(b) = self.shard(key).read().get(&key) {
            if b.live(now) {
                return Some(b.mode);
            }
        }
        let cidrs = self.cidrs.load();
        if cidrs.set.is_empty() || !cidrs.set.contains(ip) {
            return None;
        }
        cidrs
            .bans
            .iter()
            .find(|b| b.live(now) && b.net.contains(&ip.to_canonical()))
            .map(|b| b.mode)
    }

    /// The ban (live or history) of client key `key`.
    pub fn get(&self, key: u128) -> Option<Ban> {
        self.shard(key).read().get(&key).cloned()
    }

    /// Adds `ban` under client key `key` (`None` for a network that is not a client key).
    ///
    /// A live ban is only ever lengthened or made stricter (`count` → `enforce`) by this, never
    /// shortened: to lift one, [`remove`](Self::remove) it.
    pub fn add(&self, key: Option<u128>, ban: Ban, now: Nanos) -> Added {
        let added = match key {
            Some(key) => {
                let mut shard = self.shard(key).write();
                match shard.get_mut(&key) {
                    Some(old) if old.live(now) => {
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
                    Some(old) => {
                        *old = ban; // history becomes live again
                        Added::Banned
                    }
                    None => {
                        if self.held.load(Ordering::Relaxed) >= self.max {
                            return Added::Full;
                        }
                        shard.insert(key, ban);
                        self.held.fetch_add(1, Ordering::Relaxed);
                        Added::Banned
                    }
                }
            }
            None => {
                let _writer = self.cidr_writer.lock();
                let old = self.cidrs.load();
                let net = ban.net.trunc();
                let mut bans: Vec<Ban> =
                    old.bans.iter().filter(|b| b.net != net).cloned().collect();
                let replaced = bans.len() != old.bans.len();
                if !replaced && self.held.load(Ordering::Relaxed) >= self.max {
                    return Added::Full;
                }
                bans.push(Ban { net, ..ban });
                self.set_cidrs(bans);
                if !replaced {
                    self.held.fetch_add(1, Ordering::Relaxed);
                }
                Added::Banned
            }
        };
        self.dirty.store(true, Ordering::Release);
        added
    }

    fn set_cidrs(&self, bans: Vec<Ban>) {
        let set = IpSet::new(bans.iter().map(|b| b.net));
        self.cidrs.store(Arc::new(CidrBans { set, bans }));
    }

    /// Lifts the ban of `net` and forgets its history; `true` if there was one.
    pub fn remove(&self, net: IpNet, key: Option<u128>) -> bool {
        let removed = match key {
            Some(key) => self.shard(key).write().remove(&key).is_some(),
            None => {
                let _writer = self.cidr_writer.lock();
                let net = net.trunc();
                let old = self.cidrs.load();
                let bans: Vec<Ban> = old.bans.iter().filter(|b| b.net != net).cloned().collect();
                let removed = bans.len() != old.bans.len();
                if removed {
                    self.set_cidrs(bans);
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

    /// Drops history past its `forget_at`, and CIDR bans that ended; returns how many entries
    /// it dropped. Background task only.
    pub fn sweep(&self, now: Nanos) -> usize {
        let mut dropped = 0;
        for shard in self.shards.iter() {
            let mut m = shard.write();
            let before = m.len();
            m.retain(|_, b| b.live(now) || b.forget_at > now);
            dropped += before - m.len();
        }
        let _writer = self.cidr_writer.lock();
        let old = self.cidrs.load();
        if old.bans.iter().any(|b| !b.live(now)) {
            let bans: Vec<Ban> = old.bans.iter().filter(|b| b.live(now)).cloned().collect();
            dropped += old.bans.len() - bans.len();
            self.set_cidrs(bans);
        }
        if dropped > 0 {
            self.held.fetch_sub(dropped, Ordering::Relaxed);
            self.dirty.store(true, Ordering::Release);
        }
        dropped
    }

    /// Every entry, live and history, sorted by network (admin, export, persistence).
    pub fn all(&self) -> Vec<Ban> {
        let mut v: Vec<Ban> = self
            .shards
            .iter()
            .flat_map(|s| s.read().values().cloned().collect::<Vec<_>>())
            .collect();
        v.extend(self.cidrs.load().bans.iter().cloned());
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
                .load()
                .bans
                .iter()
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

    /// The most live bans.
    pub fn max(&self) -> usize {
        self.max
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
