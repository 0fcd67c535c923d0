//! Time as the limiter sees it: nanoseconds since a fixed origin, passed in by the caller.
//!
//! The engine never reads a clock itself. The proxy hands it [`MonotonicClock::now`]; tests and
//! benches hand it a [`FakeClock`] they advance by hand, so no test sleeps to refill a bucket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Nanoseconds since the clock's origin.
pub type Nanos = u64;

/// `d` in [`Nanos`], saturating (u64 nanoseconds last 584 years).
pub fn nanos(d: std::time::Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A source of [`Nanos`].
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Nanos;
}

/// The real, monotonic clock (never goes back, unaffected by wall-clock steps).
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// A clock whose zero is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Nanos {
        // u64 nanoseconds last 584 years.
        self.origin.elapsed().as_nanos() as u64
    }
}

/// A clock that only moves when told to (tests, benches).
#[derive(Debug, Default)]
pub struct FakeClock {
    now: AtomicU64,
}

impl FakeClock {
    /// A fake clock at `start`.
    pub fn new(start: Nanos) -> Self {
        Self {
            now: AtomicU64::new(start),
        }
    }

    /// Move the clock forward by `by` nanoseconds.
    pub fn advance(&self, by: Nanos) {
        self.now.fetch_add(by, Ordering::Relaxed);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Nanos {
        self.now.load(Ordering::Relaxed)
    }
}
