//! Fleet mode: limits, bans and the under-attack switch shared by every instance with the same
//! `cluster.name` through one Redis or Valkey store, without a round trip on the request path.
//!
//! - Approximate limits (`scope: cluster`): each instance admits against its own view of the
//!   fleet's bucket (the local limiter's bucket for the key), and counts what it admits. Every
//!   `sync_interval` one pipelined batch ([`sync`]) adds those counts to the store's bucket of each
//!   key (a GCRA arrival time, in Unix microseconds), takes back the store's time and raises the
//!   local bucket to it, and reads the keys that went over their limit on any instance, which
//!   every instance then refuses locally until they recover. The bound this gives is derived in
//!   the README (*Fleet mode*).
//! - Exact limits (`consistency: exact`): a request that passes here is checked against the
//!   store's bucket in one round trip bounded by `timeout` ([`Cluster::check_exact`]).
//! - The store down or slow: shared rules fall back to a local share of their limit
//!   (`ceil(rate / live instances)`, as last seen) and `sekisho_cluster_up` is 0; when it is
//!   back, each instance sends its buckets' times (merged with max: nothing counted twice, no
//!   fresh burst) rather than the counts of the outage.
//! - Bans and the hand-set switch: published as events on a stream and kept in the store
//!   ([`events`]); every instance follows the stream each interval.
//!
//! The engine sees only [`crate::engine::Shared`]; this module never runs on the request path
//! beyond an atomic load and one sharded map update per shared rule a request passes.

pub mod events;
pub mod settings;
pub mod store;
pub mod sync;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::engine::{ExactCheck, LimitSpec, Policy, RuleKind, Scope, Shared};
use crate::limiter::{BucketKey, Nanos, Quota};
pub use events::Event;
pub use settings::ClusterSettings;

const SHARDS: usize = 16;

/// A shared rule as the sync knows it.
#[derive(Debug, Clone)]
struct RuleInfo {
    /// The rule's name: its buckets in the store are `{prefix}l:{name}:{key}`.
    name: Arc<str>,
    quota: Quota,
}

/// The shared rules of the policy now serving, by limiter slot and by name.
#[derive(Debug, Default)]
struct Rules {
    by_slot: HashMap<u32, RuleInfo>,
    by_name: HashMap<Arc<str>, u32>,
    /// The local share of each rule's quota while the store is down.
    shares: HashMap<u32, Quota>,
}

/// One live instance, as read from the store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    /// `cluster.instance`.
    pub instance: String,
    /// Milliseconds since its last heartbeat, when read.
    pub last_seen_ms: u64,
}

/// The fleet state of this instance.
pub struct Cluster {
    settings: ClusterSettings,
    prefix: String,
    /// Whether the last round trip to the store worked.
    up: AtomicBool,
    /// Live instances as last read (at least 1: this one).
    instances: AtomicU32,
    members: Mutex<Vec<Member>>,
    rules: ArcSwap<Rules>,
    /// Tokens taken from shared buckets since the last sync, by bucket.
    pending: Box<[Mutex<HashMap<BucketKey, u32>>]>,
    /// Whether the counts in `pending` may be sent: false once a sync failed, until one worked
    /// (the outage's admissions are then carried by the buckets' times, not counted again).
    counts_valid: AtomicBool,
    /// Events of this instance waiting to be published.
    outbox: Mutex<Vec<Event>>,
    /// When the store was last seen down (Unix seconds; 0: never), for `/admin/status`.
    down_since: AtomicU64,
    /// The last store error, for `/admin/status` and the one log line.
    last_error: Mutex<Option<String>>,
    /// Set when the sync task first reached the store.
    synced_once: AtomicBool,
    /// The connection, once the sync task has made it.
    conn: std::sync::OnceLock<store::Conn>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("settings", &self.settings)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// The fleet state for `settings`; nothing connects until [`sync::run`] starts.
    pub fn new(settings: ClusterSettings) -> Self {
        Self {
            prefix: settings.prefix(),
            settings,
            up: AtomicBool::new(false),
            instances: AtomicU32::new(1),
            members: Mutex::new(Vec::new()),
            rules: ArcSwap::from_pointee(Rules::default()),
            pending: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            counts_valid: AtomicBool::new(true),
            outbox: Mutex::new(Vec::new()),
            down_since: AtomicU64::new(0),
            last_error: Mutex::new(None),
            synced_once: AtomicBool::new(false),
            conn: std::sync::OnceLock::new(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    /// Whether the store answered the last round trip.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Live instances, as last read from the store (at least 1).
    pub fn instances(&self) -> u32 {
        self.instances.load(Ordering::Relaxed).max(1)
    }

    /// Takes the shared rules of a new policy (at start and after every reload).
    pub fn set_policy(&self, policy: &Policy) {
        let mut rules = Rules::default();
        for r in &policy.rules {
            if let RuleKind::Limit(spec) = &r.kind {
                if spec.scope != Scope::Local {
                    let name: Arc<str> = r.name.as_str().into();
                    rules.by_name.insert(name.clone(), r.slot);
                    rules.by_slot.insert(
                        r.slot,
                        RuleInfo {
                            name,
                            quota: spec.quota,
                        },
                    );
                }
            }
        }
        rules.shares = shares(&rules.by_slot, self.instances());
        self.rules.store(Arc::new(rules));
    }

    /// Records the live instances read from the store; the local shares follow their number.
    fn set_members(&self, members: Vec<Member>) {
        let n = u32::try_from(members.len()).unwrap_or(u32::MAX).max(1);
        if self.instances.swap(n, Ordering::AcqRel) != n {
            let old = self.rules.load();
            self.rules.store(Arc::new(Rules {
                by_slot: old.by_slot.clone(),
                by_name: old.by_name.clone(),
                shares: shares(&old.by_slot, n),
            }));
        }
        *self.members.lock() = members;
    }

    /// The live instances, as last read.
    pub fn members(&self) -> Vec<Member> {
        self.members.lock().clone()
    }

    /// Queues an event (a ban, an unban, the switch set by hand) for the next sync.
    pub fn publish(&self, event: Event) {
        self.outbox.lock().push(event);
    }

    /// The status for `/admin/status`.
    pub fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "store": self.settings.redacted_url(),
            "name": self.settings.name,
            "instance": self.settings.instance,
            "up": self.is_up(),
            "down_since": match self.down_since.load(Ordering::Relaxed) { 0 => None, t => Some(t) },
            "last_error": *self.last_error.lock(),
            "instances": self.instances(),
            "members": self.members(),
            "sync_interval_ms": self.settings.sync_interval.as_millis() as u64,
            "timeout_ms": self.settings.timeout.as_millis() as u64,
        })
    }

    fn shard(&self, key: &BucketKey) -> &Mutex<HashMap<BucketKey, u32>> {
        // keys are addresses or countries: mix the bits before picking a shard
        let k = key.key();
        let h = (k as u64 ^ (k >> 64) as u64 ^ u64::from(key.slot()))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        &self.pending[(h >> 60) as usize % SHARDS]
    }

    /// Takes every pending count, emptying the table.
    fn drain(&self) -> Vec<(BucketKey, u32)> {
        let mut out = Vec::new();
        for shard in self.pending.iter() {
            let taken = std::mem::take(&mut *shard.lock());
            out.extend(taken);
        }
        out
    }

    /// Puts keys back with no count, so that their buckets' times are sent at the next sync
    /// (after a round trip whose outcome is unknown: its counts may have been applied).
    fn touch(&self, keys: impl IntoIterator<Item = BucketKey>) {
        for key in keys {
            self.shard(&key).lock().entry(key).or_insert(0);
        }
    }

    /// The exact rules' round trip: one pipelined batch for every check of a request, bounded
    /// by `cluster.timeout`. `None` when the store did not answer in time: the caller judges
    /// the request on the local share (it passed that already).
    pub async fn check_exact(
        &self,
        checks: &[ExactCheck],
        limiter: &crate::limiter::Limiter,
        now: Nanos,
    ) -> Option<Vec<Result<(), Nanos>>> {
        store::exact(self, self.conn.get()?, checks, limiter, now).await
    }
}

impl Shared for Cluster {
    fn quota(&self, slot: u32, spec: &LimitSpec) -> Quota {
        if self.up.load(Ordering::Relaxed) {
            return spec.quota;
        }
        self.rules
            .load()
            .shares
            .get(&slot)
            .copied()
            .unwrap_or(spec.quota)
    }

    fn exact_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn taken(&self, key: BucketKey) {
        *self.shard(&key).lock().entry(key).or_insert(0) += 1;
    }

    fn refunded(&self, key: BucketKey) {
        if let Some(n) = self.shard(&key).lock().get_mut(&key) {
            *n = n.saturating_sub(1);
        }
    }
}

/// The local share of each quota among `n` instances: `rate / n` and `ceil(burst / n)`.
fn shares(rules: &HashMap<u32, RuleInfo>, n: u32) -> HashMap<u32, Quota> {
    rules
        .iter()
        .filter_map(|(slot, r)| Some((*slot, share(&r.quota, n)?)))
        .collect()
}

/// `quota` divided among `n` instances: each gets `count / n` per period (the period is
/// stretched `n` times, so that no rounding hands out more) and `ceil(burst / n)`.
pub fn share(quota: &Quota, n: u32) -> Option<Quota> {
    let n = n.max(1);
    let burst = std::num::NonZeroU32::new(quota.burst().get().div_ceil(n))?;
    Quota::new(quota.count(), quota.period_secs().checked_mul(n)?, burst)
}

/// The engine's monotonic nanoseconds and Unix microseconds at one moment, to convert bucket
/// times between the two (the store keeps Unix time: the instances' clocks must agree, as
/// NTP keeps them to a few milliseconds).
#[derive(Debug, Clone, Copy)]
pub struct Epoch {
    mono: Nanos,
    unix_us: u64,
}

impl Epoch {
    /// Now.
    pub fn now(mono: Nanos) -> Self {
        let unix_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Self { mono, unix_us }
    }

    /// Unix microseconds of monotonic `t` (rounded up: a debt never shrinks on the way).
    pub fn to_unix_us(&self, t: Nanos) -> u64 {
        if t >= self.mono {
            self.unix_us + (t - self.mono).div_ceil(1000)
        } else {
            self.unix_us.saturating_sub((self.mono - t) / 1000)
        }
    }

    /// Monotonic nanoseconds of Unix microseconds `t`.
    pub fn to_mono(&self, t: u64) -> Nanos {
        if t >= self.unix_us {
            self.mono
                .saturating_add((t - self.unix_us).saturating_mul(1000))
        } else {
            self.mono
                .saturating_sub((self.unix_us - t).saturating_mul(1000))
        }
    }

    /// Unix microseconds now.
    pub fn unix_us(&self) -> u64 {
        self.unix_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn q(count: u32, period: u32, burst: u32) -> Quota {
        Quota::new(
            NonZeroU32::new(count).unwrap(),
            period,
            NonZeroU32::new(burst).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn a_share_never_hands_out_more_than_the_whole() {
        let s = share(&q(10, 60, 10), 8).unwrap();
        assert_eq!(s.burst().get(), 2);
        // 10 per 8 minutes: one token every 48 s
        assert_eq!(s.emission(), 48_000_000_000);
        assert_eq!(share(&q(10, 60, 10), 1).unwrap(), q(10, 60, 10));
        let s = share(&q(100, 1, 50), 3).unwrap();
        assert_eq!(s.burst().get(), 17);
        assert!(s.emission() * 3 >= q(100, 1, 50).emission() * 3);
    }

    #[test]
    fn epochs_convert_both_ways() {
        let e = Epoch {
            mono: 5_000_000_000,
            unix_us: 1_700_000_000_000_000,
        };
        assert_eq!(e.to_unix_us(6_000_000_000), 1_700_000_001_000_000);
        assert_eq!(e.to_mono(1_700_000_001_000_000), 6_000_000_000);
        assert_eq!(e.to_unix_us(4_000_000_000), 1_699_999_999_000_000);
        assert_eq!(e.to_mono(1_699_999_999_000_000), 4_000_000_000);
        // rounded up: 1 ns ahead is 1 µs ahead
        assert_eq!(e.to_unix_us(5_000_000_001), 1_700_000_000_000_001);
    }

    #[test]
    fn refunds_take_back_what_was_counted() {
        let c = Cluster::new(ClusterSettings {
            url: "redis://127.0.0.1:1".into(),
            name: "t".into(),
            instance: "a".into(),
            sync_interval: std::time::Duration::from_millis(100),
            timeout: std::time::Duration::from_millis(5),
            connect_timeout: std::time::Duration::from_secs(1),
        });
        let k = BucketKey::new(3, 42);
        c.taken(k);
        c.taken(k);
        c.refunded(k);
        c.refunded(BucketKey::new(3, 43));
        assert_eq!(c.drain(), vec![(k, 1)]);
        assert!(c.drain().is_empty());
    }
}
