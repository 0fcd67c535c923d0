//! Token buckets keyed by (rule slot, key), in a bounded, sharded store.
//!
//! Each bucket is one `AtomicU64` holding a GCRA theoretical arrival time (TAT), updated by a
//! compare-and-swap loop, as in governor's in-memory state: admitting a request never takes a
//! write lock, and a refused request changes nothing. The map of buckets is split into shards,
//! each behind a `parking_lot::RwLock`; the read lock is held only while the atomic is updated,
//! and the write lock only to insert a new key.
//!
//! Memory is bounded by `max_tracked_keys`. When a shard is full, buckets that have refilled
//! completely (`TAT <= now`: forgetting them changes no decision) are dropped first; if that frees
//! nothing, the eighth of the shard whose buckets are closest to full is dropped. An evicted key
//! comes back with a full bucket, so under a flood of distinct keys larger than the bound a key
//! can get more than its burst: the `evictions` counter says when that happens.
//!
//! This module knows nothing of HTTP: keys are 128-bit numbers the engine derives.

mod clock;
mod quota;

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};

use hashbrown::HashTable;
use parking_lot::RwLock;

pub use clock::{nanos, Clock, FakeClock, MonotonicClock, Nanos};
pub use quota::{Quota, RateError};

/// Identifies one bucket: the limiter slot of a rule and a key within it.
///
/// Stored as two `u64`s rather than a `u128` so that an entry is 32 bytes, not 48.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BucketKey {
    slot: u32,
    hi: u64,
    lo: u64,
}

impl BucketKey {
    /// The limiter slot.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The key within the slot.
    pub fn key(&self) -> u128 {
        (u128::from(self.hi) << 64) | u128::from(self.lo)
    }

    /// The bucket of `key` under limiter slot `slot`.
    pub fn new(slot: u32, key: u128) -> Self {
        Self {
            slot,
            hi: (key >> 64) as u64,
            lo: key as u64,
        }
    }
}

type Shard = HashTable<(BucketKey, AtomicU64)>;

/// The slot and quota a rule had before a reload changed its rate or burst.
///
/// A key missing from the new slot starts with the tokens it had in the old one (scaled to
/// the new bucket, capped at the new burst), not with a full bucket: changing a limit hands
/// nobody a burst they did not earn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Predecessor {
    /// The old slot.
    pub slot: u32,
    /// The old quota.
    pub quota: Quota,
}

/// What a bucket holds at one instant ([`Limiter::peek`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    /// Whole tokens: how many requests it would admit now, one after another.
    pub tokens: u32,
    /// Nanoseconds until it holds one more token (0 when it is full). With no token, what a
    /// refused [`Limiter::acquire`] answers.
    pub next_token_in: Nanos,
    /// Whether the store holds the bucket (an untracked key starts full).
    pub tracked: bool,
}

/// The bounded, sharded store of all buckets.
pub struct Limiter {
    shards: Box<[RwLock<Shard>]>,
    shard_mask: u64,
    shard_cap: usize,
    hasher: foldhash::fast::RandomState,
    evictions: AtomicU64,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("shards", &self.shards.len())
            .field("shard_cap", &self.shard_cap)
            .field("evictions", &self.evictions())
            .finish()
    }
}

impl Limiter {
    /// A store that tracks at most about `max_keys` buckets (rounded up to a whole number per shard).
    pub fn new(max_keys: usize) -> Self {
        let max_keys = max_keys.max(1);
        // One shard per ~4k keys, between 1 and 64, a power of two.
        let shards = (max_keys / 4096).clamp(1, 64).next_power_of_two().min(64);
        let shard_cap = max_keys.div_ceil(shards);
        Self {
            shards: (0..shards).map(|_| RwLock::new(HashTable::new())).collect(),
            shard_mask: shards as u64 - 1,
            shard_cap,
            hasher: foldhash::fast::RandomState::default(),
            evictions: AtomicU64::new(0),
        }
    }

    fn locate(&self, key: &BucketKey) -> (u64, &RwLock<Shard>) {
        let hash = self.hasher.hash_one(key);
        // hashbrown uses the top 7 bits for its control bytes and the low bits for the slot;
        // take the shard from bits in between.
        let shard = (hash >> 32) & self.shard_mask;
        (hash, &self.shards[shard as usize])
    }

    /// Takes one token from the bucket of `key` at `now`, or says how long until one is there.
    ///
    /// `Ok(())`: admitted, the token is taken. `Err(wait)`: refused, nothing changed; a token
    /// will be there in `wait` nanoseconds.
    pub fn acquire(&self, key: BucketKey, quota: &Quota, now: Nanos) -> Result<(), Nanos> {
        self.acquire_after(key, quota, now, None)
    }

    /// [`acquire`](Self::acquire) for a rule whose quota changed at a reload: a key new to
    /// this slot starts from its state under `pred`.
    pub fn acquire_after(
        &self,
        key: BucketKey,
        quota: &Quota,
        now: Nanos,
        pred: Option<&Predecessor>,
    ) -> Result<(), Nanos> {
        let (hash, shard) = self.locate(&key);
        {
            let table = shard.read();
            if let Some((_, tat)) = table.find(hash, |(k, _)| *k == key) {
                return gcra_update(tat, quota, now);
            }
        }
        // Read the predecessor before taking our write lock: never hold two shard locks.
        let start = pred.and_then(|p| {
            let old = BucketKey {
                slot: p.slot,
                ..key
            };
            let old_tat = self.tat_of(old)?;
            Some(carry_over(old_tat, &p.quota, quota, now))
        });
        let mut table = shard.write();
        if let Some((_, tat)) = table.find(hash, |(k, _)| *k == key) {
            // Inserted by another thread between our two locks.
            return gcra_update(tat, quota, now);
        }
        if table.len() >= self.shard_cap {
            let evicted = evict(&mut table, now, self.shard_cap);
            self.evictions.fetch_add(evicted as u64, Ordering::Relaxed);
        }
        let (tat, verdict) = match start {
            // A new key has a full bucket, and burst >= 1: the first request is admitted.
            None => (now.saturating_add(quota.emission()), Ok(())),
            Some(start) => {
                let cell = AtomicU64::new(start);
                let verdict = gcra_update(&cell, quota, now);
                (cell.into_inner(), verdict)
            }
        };
        table.insert_unique(hash, (key, AtomicU64::new(tat)), |(k, _)| {
            self.hasher.hash_one(k)
        });
        verdict
    }

    /// What the bucket of `key` holds at `now`, without taking a token or changing anything:
    /// for `sekisho explain`, not the request path. An untracked key has a full bucket.
    pub fn peek(&self, key: BucketKey, quota: &Quota, now: Nanos) -> Level {
        self.peek_after(key, quota, now, None)
    }

    /// [`peek`](Self::peek) for a rule whose quota changed at a reload: a key new to this slot
    /// is seen with the state [`acquire_after`](Self::acquire_after) would start it from.
    pub fn peek_after(
        &self,
        key: BucketKey,
        quota: &Quota,
        now: Nanos,
        pred: Option<&Predecessor>,
    ) -> Level {
        let tat = self.tat_of(key).or_else(|| {
            let p = pred?;
            let old = self.tat_of(BucketKey {
                slot: p.slot,
                ..key
            })?;
            Some(carry_over(old, &p.quota, quota, now))
        });
        let Some(tat) = tat else {
            return Level {
                tokens: quota.burst().get(),
                next_token_in: 0,
                tracked: false,
            };
        };
        // GCRA admits at `now` while `debt + emission <= tolerance`: the tokens are the whole
        // emissions that fit in what the debt leaves of the tolerance.
        let debt = tat.saturating_sub(now).min(quota.tolerance());
        let room = quota.tolerance() - debt;
        let tokens = room / quota.emission();
        let full = tokens >= u64::from(quota.burst().get());
        Level {
            tokens: u32::try_from(tokens).unwrap_or(u32::MAX),
            next_token_in: if full {
                0
            } else {
                (tokens + 1) * quota.emission() - room
            },
            tracked: true,
        }
    }

    /// Raises the TAT of `key` to at least `tat`: another instance's admissions, from the
    /// cluster store. A bucket never gains tokens from this; an untracked key is inserted only
    /// when `tat` is in the future (a full bucket is the same as none). Background task only.
    pub fn raise(&self, key: BucketKey, tat: Nanos, now: Nanos) {
        let (hash, shard) = self.locate(&key);
        {
            let table = shard.read();
            if let Some((_, t)) = table.find(hash, |(k, _)| *k == key) {
                t.fetch_max(tat, Ordering::AcqRel);
                return;
            }
        }
        if tat <= now {
            return;
        }
        let mut table = shard.write();
        if let Some((_, t)) = table.find(hash, |(k, _)| *k == key) {
            t.fetch_max(tat, Ordering::AcqRel);
            return;
        }
        if table.len() >= self.shard_cap {
            let evicted = evict(&mut table, now, self.shard_cap);
            self.evictions.fetch_add(evicted as u64, Ordering::Relaxed);
        }
        table.insert_unique(hash, (key, AtomicU64::new(tat)), |(k, _)| {
            self.hasher.hash_one(k)
        });
    }

    /// The TAT of `key`, if tracked (the cluster sync sends it to the store).
    pub fn tat(&self, key: BucketKey) -> Option<Nanos> {
        self.tat_of(key)
    }

    /// The TAT of a bucket, if tracked.
    fn tat_of(&self, key: BucketKey) -> Option<Nanos> {
        let (hash, shard) = self.locate(&key);
        let table = shard.read();
        table
            .find(hash, |(k, _)| *k == key)
            .map(|(_, tat)| tat.load(Ordering::Acquire))
    }

    /// Gives back a token taken by [`acquire`](Self::acquire) for a request that was then
    /// refused by a later rule, so that a refused request costs no tokens.
    ///
    /// This holds per request, not across concurrent ones: between the take and the refund,
    /// another request of the same key sees one token less (and may be refused), and a bucket
    /// evicted and recreated in between gets the token back as a bonus. Both windows are a few
    /// hundred nanoseconds wide.
    pub fn refund(&self, key: BucketKey, quota: &Quota) {
        let (hash, shard) = self.locate(&key);
        let table = shard.read();
        if let Some((_, tat)) = table.find(hash, |(k, _)| *k == key) {
            let _ = tat.fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_sub(quota.emission()))
            });
        }
    }

    /// Drops every bucket that has refilled completely by `now`; returns how many.
    ///
    /// Forgetting a full bucket changes no decision (an unknown key starts full), so this is not
    /// counted as an eviction. Call it from a background task, not the request path.
    pub fn sweep(&self, now: Nanos) -> usize {
        let mut dropped = 0;
        for shard in self.shards.iter() {
            let mut table = shard.write();
            let before = table.len();
            table.retain(|(_, tat)| *tat.get_mut() > now);
            dropped += before - table.len();
        }
        dropped
    }

    /// A key for arbitrary bytes (a header value, an address and a path), hashed with this
    /// process's random seed so that clients cannot aim collisions at each other.
    pub fn hash_key(&self, salt: u128, bytes: &[u8]) -> u128 {
        let h = self.hasher.hash_one((salt, bytes));
        // Tag the high bits so a hashed key never equals an address key of the same slot.
        (0xffff_0000_0000_0001_u128 << 64) | u128::from(h)
    }

    /// Buckets tracked now (takes each shard's read lock in turn: for metrics, not the hot path).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Whether no bucket is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Buckets dropped, since start, while they still held a debt, to make room for new keys.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// The most buckets this store holds.
    pub fn capacity(&self) -> usize {
        self.shard_cap * self.shards.len()
    }
}

/// The GCRA step on one bucket: admit and advance the TAT, or refuse and leave it alone.
fn gcra_update(tat: &AtomicU64, quota: &Quota, now: Nanos) -> Result<(), Nanos> {
    let mut current = tat.load(Ordering::Acquire);
    loop {
        let next = current.max(now).saturating_add(quota.emission());
        let ahead = next - now;
        if ahead > quota.tolerance() {
            return Err(ahead - quota.tolerance());
        }
        match tat.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Ok(()),
            Err(seen) => current = seen,
        }
    }
}

/// The TAT under `new` of a bucket whose TAT under `old` is `old_tat`. A bucket that was full
/// stays full (as for a client never seen); otherwise the client keeps the tokens it had, in
/// time-equivalent, capped at the new burst: a drained bucket stays drained.
fn carry_over(old_tat: Nanos, old: &Quota, new: &Quota, now: Nanos) -> Nanos {
    if old_tat <= now {
        // full under the old quota: full under the new one, like a client never seen
        return now;
    }
    let debt = old_tat.saturating_sub(now).min(old.tolerance());
    let available_old = u128::from(old.tolerance() - debt);
    // tokens available under the old quota, in units of the new emission interval
    let available_new = (available_old * u128::from(new.emission()) / u128::from(old.emission()))
        .min(u128::from(new.tolerance())) as u64;
    now.saturating_add(new.tolerance() - available_new)
}

/// Makes room in a full shard, down to 7/8 of `cap` so that the next insertions do not scan
/// again; returns how many buckets that still held a debt were dropped.
///
/// Buckets that have refilled by `now` go first (forgetting them changes no decision). If that
/// is not enough, buckets closest to full go next: the threshold is taken from a sample of 256
/// buckets (no allocation), and exactly as many as needed are dropped.
fn evict(table: &mut Shard, now: Nanos, cap: usize) -> usize {
    table.retain(|(_, tat)| *tat.get_mut() > now);
    let low = cap - cap / 8;
    if table.len() <= low {
        return 0;
    }
    let excess = table.len() - low;
    let mut sample = [0u64; 256];
    let mut n = 0;
    for (_, tat) in table.iter() {
        if n == sample.len() {
            break;
        }
        sample[n] = tat.load(Ordering::Relaxed);
        n += 1;
    }
    let sample = &mut sample[..n];
    sample.sort_unstable();
    // the share of the shard to drop, as a rank in the sample (at least the smallest)
    let rank = (excess * n).div_ceil(table.len()).clamp(1, n) - 1;
    let threshold = sample[rank];
    let mut dropped = 0;
    table.retain(|(_, tat)| {
        if dropped < excess && *tat.get_mut() <= threshold {
            dropped += 1;
            false
        } else {
            true
        }
    });
    if dropped < excess {
        // the sample underestimated: drop the rest in table order
        table.retain(|_| {
            if dropped < excess {
                dropped += 1;
                false
            } else {
                true
            }
        });
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    const SEC: u64 = 1_000_000_000;

    fn quota(count: u32, period: u32, burst: u32) -> Quota {
        Quota::new(
            NonZeroU32::new(count).unwrap(),
            period,
            NonZeroU32::new(burst).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn burst_then_refuse_then_refill() {
        let l = Limiter::new(1000);
        let q = quota(1, 1, 3);
        let k = BucketKey::new(0, 42);
        let t = 10 * SEC;
        for _ in 0..3 {
            assert_eq!(l.acquire(k, &q, t), Ok(()));
        }
        assert_eq!(l.acquire(k, &q, t), Err(SEC));
        // a refusal changed nothing: still one second to wait
        assert_eq!(l.acquire(k, &q, t), Err(SEC));
        assert_eq!(l.acquire(k, &q, t + SEC / 2), Err(SEC / 2));
        assert_eq!(l.acquire(k, &q, t + SEC), Ok(()));
        assert_eq!(l.acquire(k, &q, t + SEC), Err(SEC));
    }

    #[test]
    fn keys_and_slots_are_separate() {
        let l = Limiter::new(1000);
        let q = quota(1, 1, 1);
        assert!(l.acquire(BucketKey::new(0, 1), &q, 0).is_ok());
        assert!(l.acquire(BucketKey::new(0, 1), &q, 0).is_err());
        assert!(l.acquire(BucketKey::new(0, 2), &q, 0).is_ok());
        assert!(l.acquire(BucketKey::new(1, 1), &q, 0).is_ok());
    }

    #[test]
    fn refund_gives_the_token_back() {
        let l = Limiter::new(1000);
        let q = quota(1, 60, 1);
        let k = BucketKey::new(3, 7);
        assert!(l.acquire(k, &q, 0).is_ok());
        assert!(l.acquire(k, &q, 0).is_err());
        l.refund(k, &q);
        assert!(l.acquire(k, &q, 0).is_ok());
    }

    #[test]
    fn bounded_and_evicts_full_buckets_first() {
        let l = Limiter::new(64);
        let q = quota(1, 1, 1);
        // 64 keys, all drained at t=0
        for i in 0..64 {
            assert!(l.acquire(BucketKey::new(0, i), &q, 0).is_ok());
        }
        assert_eq!(l.len(), 64);
        // 2 s later every bucket is full again: room is made without counting evictions
        for i in 100..164 {
            assert!(l.acquire(BucketKey::new(0, i), &q, 2 * SEC).is_ok());
        }
        assert!(l.len() <= l.capacity());
        assert_eq!(l.evictions(), 0);
    }

    #[test]
    fn evicts_an_eighth_closest_to_full_and_keeps_the_rest() {
        let l = Limiter::new(64);
        let q = quota(1, 3600, 1);
        // 64 drained buckets, the older ones closer to full
        for i in 0..64u64 {
            assert!(l
                .acquire(BucketKey::new(0, u128::from(i)), &q, i * SEC)
                .is_ok());
        }
        // one more key: the shard goes down to 56 (the 8 oldest), then takes the new one
        assert!(l.acquire(BucketKey::new(0, 1000), &q, 64 * SEC).is_ok());
        assert_eq!(l.evictions(), 8);
        assert_eq!(l.len(), 57);
        // the survivors are still drained; an evicted one came back full
        for i in 8..64u64 {
            assert!(
                l.acquire(BucketKey::new(0, u128::from(i)), &q, 64 * SEC)
                    .is_err(),
                "key {i}"
            );
        }
        assert!(l.acquire(BucketKey::new(0, 0), &q, 64 * SEC).is_ok());
        // ties: all at one instant, still only what is needed goes
        let l = Limiter::new(64);
        for i in 0..64 {
            assert!(l.acquire(BucketKey::new(0, i), &q, 0).is_ok());
        }
        assert!(l.acquire(BucketKey::new(0, 1000), &q, 0).is_ok());
        assert_eq!(l.len(), 57);
        assert_eq!(l.evictions(), 8);
    }

    #[test]
    fn a_changed_quota_carries_the_state_over() {
        let l = Limiter::new(1000);
        let old = quota(1, 3600, 3);
        let k = |slot| BucketKey::new(slot, 9);
        for _ in 0..3 {
            assert!(l.acquire(k(0), &old, 0).is_ok());
        }
        assert!(l.acquire(k(0), &old, 0).is_err());
        // burst raised to 10 at the same rate: still drained, no bonus
        let pred = Predecessor {
            slot: 0,
            quota: old,
        };
        let bigger = quota(1, 3600, 10);
        assert!(l.acquire_after(k(1), &bigger, 0, Some(&pred)).is_err());
        assert!(l.acquire_after(k(1), &bigger, 0, Some(&pred)).is_err());
        // a client seen under the old quota, refilled since, is full under the new one
        let seen = |slot| BucketKey::new(slot, 10);
        assert!(l.acquire(seen(0), &old, 0).is_ok());
        let later = 3 * 3600 * SEC;
        for _ in 0..10 {
            assert!(l
                .acquire_after(seen(1), &bigger, later, Some(&pred))
                .is_ok());
        }
        assert!(l
            .acquire_after(seen(1), &bigger, later, Some(&pred))
            .is_err());
        // half a bucket left under burst 4 → two tokens under burst 4 at another rate
        let mid = quota(1, 60, 4);
        for _ in 0..2 {
            assert!(l.acquire(k(2), &mid, 0).is_ok());
        }
        let pred = Predecessor {
            slot: 2,
            quota: mid,
        };
        let faster = quota(1, 1, 4);
        assert!(l.acquire_after(k(3), &faster, 0, Some(&pred)).is_ok());
        assert!(l.acquire_after(k(3), &faster, 0, Some(&pred)).is_ok());
        assert!(l.acquire_after(k(3), &faster, 0, Some(&pred)).is_err());
    }

    #[test]
    fn peek_tells_what_acquire_will_do_and_takes_nothing() {
        let l = Limiter::new(1000);
        let q = quota(1, 60, 3);
        let k = BucketKey::new(0, 5);
        let full = Level {
            tokens: 3,
            next_token_in: 0,
            tracked: false,
        };
        assert_eq!(l.peek(k, &q, 0), full);
        assert!(l.is_empty(), "a peek tracks nothing");
        for left in [2, 1, 0] {
            assert!(l.acquire(k, &q, 0).is_ok());
            let level = l.peek(k, &q, 0);
            assert_eq!(level.tokens, left);
            assert_eq!(l.peek(k, &q, 0), level, "a peek changes nothing");
        }
        let wait = l.acquire(k, &q, 0).unwrap_err();
        assert_eq!(l.peek(k, &q, 0).next_token_in, wait);
        assert_eq!(l.peek(k, &q, 90 * SEC).tokens, 1);
        assert_eq!(l.peek(k, &q, 90 * SEC).next_token_in, 30 * SEC);
        assert_eq!(l.peek(k, &q, 180 * SEC).tokens, 3);
        // a changed quota: seen as acquire_after would start it
        let pred = Predecessor { slot: 0, quota: q };
        let k1 = BucketKey::new(1, 5);
        let bigger = quota(1, 60, 10);
        assert_eq!(l.peek_after(k1, &bigger, 0, Some(&pred)).tokens, 0);
        assert!(l.acquire_after(k1, &bigger, 0, Some(&pred)).is_err());
    }

    proptest::proptest! {
        /// After any history of takes, refunds and waits, a peek's tokens are exactly the
        /// takes that succeed at that instant, and its wait is the refusal's.
        #[test]
        fn peek_agrees_with_acquire(
            (count, period, burst) in (1u32..5, proptest::sample::select(vec![1u32, 60, 3600]), 1u32..6),
            steps in proptest::collection::vec((0u64..3 * SEC, 0u8..4), 0..40),
        ) {
            let l = Limiter::new(100);
            let q = quota(count, period, burst);
            let k = BucketKey::new(0, 1);
            let mut now = 0;
            for (gap, op) in steps {
                now += gap * u64::from(period);
                match op {
                    0 => l.refund(k, &q),
                    _ => { let _ = l.acquire(k, &q, now); }
                }
            }
            let level = l.peek(k, &q, now);
            proptest::prop_assert!(level.tokens <= burst);
            for _ in 0..level.tokens {
                proptest::prop_assert!(l.acquire(k, &q, now).is_ok());
            }
            let after = l.peek(k, &q, now);
            proptest::prop_assert_eq!(after.tokens, 0);
            proptest::prop_assert_eq!(l.acquire(k, &q, now), Err(after.next_token_in));
        }
    }

    #[test]
    fn sweep_drops_only_full_buckets() {
        let l = Limiter::new(1000);
        let fast = quota(1, 1, 1);
        let slow = quota(1, 3600, 1);
        assert!(l.acquire(BucketKey::new(0, 1), &fast, 0).is_ok());
        assert!(l.acquire(BucketKey::new(1, 1), &slow, 0).is_ok());
        assert_eq!(l.sweep(2 * SEC), 1);
        assert_eq!(l.len(), 1);
        assert!(l.acquire(BucketKey::new(1, 1), &slow, 2 * SEC).is_err());
    }
}
