//! Request-body deadlines (`connections.body_timeout`, `body_min_rate`, `body_rate_grace`): a
//! body that stalls longer than `stall` between two reads is cut, and so is one whose average
//! rate since its first read falls below `min_rate` once `grace` has passed. Pure: the limits,
//! the bytes received and the time elapsed in, how long the next read may wait out.
//!
//! One deadline per read covers both: a body of `received` bytes keeps an average of `min_rate`
//! until `received / min_rate` after its start, so the next read may wait until then (but not
//! before `grace`), and never longer than `stall`. A body that came fast at first has banked
//! time: its average stays above `min_rate` for a while even if it then trickles, as long as no
//! single stall is longer than `stall`.

use std::num::NonZeroU64;
use std::time::Duration;

/// The limits on one request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// `body_timeout`: the longest wait for the next bytes of a body.
    pub stall: Duration,
    /// `body_min_rate` in bytes per second; `None` for `off`.
    pub min_rate: Option<NonZeroU64>,
    /// `body_rate_grace`: how long from the body's start `min_rate` is not judged.
    pub grace: Duration,
}

/// Which limit the next read's wait ends at (both are counted as `body_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// No bytes for `stall`.
    Stalled,
    /// The average fell below `min_rate`.
    TooSlow,
}

impl Default for BodyLimits {
    /// 30 s between reads; 1 KiB/s on average after the first 10 s.
    fn default() -> Self {
        Self {
            stall: Duration::from_secs(30),
            min_rate: NonZeroU64::new(1024),
            grace: Duration::from_secs(10),
        }
    }
}

impl BodyLimits {
    /// How long the next read of a body that has brought `received` bytes in the `elapsed`
    /// since it started may wait, and which limit that wait ends at. A zero wait: cut it now.
    pub fn next_wait(&self, received: u64, elapsed: Duration) -> (Duration, Cut) {
        let stall = (self.stall, Cut::Stalled);
        let Some(rate) = self.min_rate else {
            return stall;
        };
        // the moment the average would fall below min_rate with no more bytes
        let nanos = u128::from(received) * 1_000_000_000 / u128::from(rate.get());
        let kept_until = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        let until = kept_until.max(self.grace).saturating_sub(elapsed);
        if until < self.stall {
            (until, Cut::TooSlow)
        } else {
            stall
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn limits(stall: u64, rate: u64, grace: u64) -> BodyLimits {
        BodyLimits {
            stall: secs(stall),
            min_rate: NonZeroU64::new(rate),
            grace: secs(grace),
        }
    }

    #[test]
    fn without_a_rate_only_the_stall_counts() {
        let l = limits(30, 0, 10);
        assert_eq!(l.next_wait(0, Duration::ZERO), (secs(30), Cut::Stalled));
        assert_eq!(l.next_wait(0, secs(1000)), (secs(30), Cut::Stalled));
    }

    #[test]
    fn the_rate_is_not_judged_during_the_grace() {
        let l = limits(30, 1024, 10);
        assert_eq!(l.next_wait(0, Duration::ZERO), (secs(10), Cut::TooSlow));
        assert_eq!(l.next_wait(0, secs(4)), (secs(6), Cut::TooSlow));
        // 1 KiB/s is kept for as long as the bytes received pay for
        assert_eq!(l.next_wait(20 * 1024, secs(4)), (secs(16), Cut::TooSlow));
    }

    #[test]
    fn a_body_below_the_average_after_the_grace_is_cut_now() {
        let l = limits(30, 1000, 10);
        assert_eq!(l.next_wait(0, secs(10)), (Duration::ZERO, Cut::TooSlow));
        assert_eq!(
            l.next_wait(10_999, secs(11)),
            (Duration::ZERO, Cut::TooSlow)
        );
        assert_eq!(
            l.next_wait(11_000, secs(11)),
            (Duration::ZERO, Cut::TooSlow),
            "exactly at the rate, with no more bytes it falls below"
        );
        assert_eq!(
            l.next_wait(11_500, secs(11)),
            (Duration::from_millis(500), Cut::TooSlow)
        );
    }

    #[test]
    fn a_fast_start_banks_time_but_never_more_than_one_stall() {
        let l = limits(30, 1000, 10);
        // 1 MB in the first second: the average holds for 1000 s, each wait is still 30 s
        assert_eq!(l.next_wait(1_000_000, secs(1)), (secs(30), Cut::Stalled));
        assert_eq!(l.next_wait(1_000_000, secs(980)), (secs(20), Cut::TooSlow));
    }

    #[test]
    fn huge_counts_do_not_overflow() {
        let l = limits(30, 1, 10);
        assert_eq!(l.next_wait(u64::MAX, secs(1)), (secs(30), Cut::Stalled));
    }
}
