//! A rate and a burst, turned once at load into the two numbers GCRA needs.

use std::fmt;
use std::num::NonZeroU32;

use super::Nanos;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// `rate` requests per period with a bucket of `burst`, as GCRA parameters.
///
/// A bucket holds at most `burst` tokens and gains one every `emission` nanoseconds.
/// In GCRA terms the state is a theoretical arrival time (TAT); a request at `t` is admitted when
/// `max(TAT, t) + emission - t <= tolerance`, where `tolerance = emission * burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    emission: Nanos,
    tolerance: Nanos,
    count: NonZeroU32,
    period_secs: u32,
    burst: NonZeroU32,
}

/// Why a rate string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    /// Not `N/unit`.
    #[error("expected a rate like \"10/s\", \"300/min\" or \"5000/h\", got {0:?}")]
    Syntax(String),
    /// `N` is zero or not a number.
    #[error("the count before '/' must be a whole number from 1 to 4294967295, got {0:?}")]
    Count(String),
    /// Unknown unit.
    #[error("unknown unit {0:?}; use s, min, h or d")]
    Unit(String),
    /// So fast that whole nanoseconds between tokens cannot express it.
    #[error("rate {0:?} is too high to keep exactly (at most ~1,000,000 per second per key)")]
    TooFast(String),
}

impl Quota {
    /// A quota of `count` per `period_secs` seconds and a bucket of `burst`.
    pub fn new(count: NonZeroU32, period_secs: u32, burst: NonZeroU32) -> Option<Self> {
        let period = u64::from(period_secs).checked_mul(NANOS_PER_SEC)?;
        let emission = period / u64::from(count.get());
        // Whole nanoseconds between tokens: refuse a rate the rounding would change by more
        // than 0.1% (only absurdly high rates, above ~1M/s per key, get there).
        if emission == 0 || (period % u64::from(count.get())) * 1000 > period {
            return None;
        }
        Some(Self {
            emission,
            tolerance: emission.checked_mul(u64::from(burst.get()))?,
            count,
            period_secs,
            burst,
        })
    }

    /// Parses `"10/s"`, `"300/min"`, `"5000/h"`, `"100000/d"`; the burst is given apart.
    pub fn parse_rate(s: &str) -> Result<(NonZeroU32, u32), RateError> {
        let (n, unit) = s
            .split_once('/')
            .ok_or_else(|| RateError::Syntax(s.to_string()))?;
        let count: NonZeroU32 = n
            .trim()
            .parse()
            .map_err(|_| RateError::Count(n.trim().to_string()))?;
        let period = match unit.trim() {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hr" | "hour" => 3600,
            "d" | "day" => 86_400,
            other => return Err(RateError::Unit(other.to_string())),
        };
        if Quota::new(count, period, count).is_none() {
            return Err(RateError::TooFast(s.to_string()));
        }
        Ok((count, period))
    }

    /// Nanoseconds between two tokens.
    pub fn emission(&self) -> Nanos {
        self.emission
    }

    /// `emission * burst`: how far the TAT may run ahead of now.
    pub fn tolerance(&self) -> Nanos {
        self.tolerance
    }

    /// Tokens a period (the `N` of `N/unit`).
    pub fn count(&self) -> NonZeroU32 {
        self.count
    }

    /// The period's length in seconds (the `unit` of `N/unit`).
    pub fn period_secs(&self) -> u32 {
        self.period_secs
    }

    /// The bucket size.
    pub fn burst(&self) -> NonZeroU32 {
        self.burst
    }

    /// The rate as [`Quota::parse_rate`] reads it: `10/s`, `300/min`, `5000/h`, `7/d`.
    pub fn rate(&self) -> String {
        let unit = match self.period_secs {
            1 => "s".to_string(),
            60 => "min".to_string(),
            3600 => "h".to_string(),
            86_400 => "d".to_string(),
            p => format!("{p}s"),
        };
        format!("{}/{unit}", self.count)
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} burst {}", self.rate(), self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn parses_units() {
        assert_eq!(Quota::parse_rate("10/s"), Ok((nz(10), 1)));
        assert_eq!(Quota::parse_rate("300/min"), Ok((nz(300), 60)));
        assert_eq!(Quota::parse_rate("5000/h"), Ok((nz(5000), 3600)));
        assert_eq!(Quota::parse_rate(" 7 / d"), Ok((nz(7), 86_400)));
    }

    #[test]
    fn rejects_bad_rates() {
        assert!(matches!(Quota::parse_rate("10"), Err(RateError::Syntax(_))));
        assert!(matches!(Quota::parse_rate("0/s"), Err(RateError::Count(_))));
        assert!(matches!(Quota::parse_rate("x/s"), Err(RateError::Count(_))));
        assert!(matches!(Quota::parse_rate("10/x"), Err(RateError::Unit(_))));
        assert!(matches!(
            Quota::parse_rate("4000000000/s"),
            Err(RateError::TooFast(_))
        ));
        assert!(matches!(
            Quota::parse_rate("700000000/s"),
            Err(RateError::TooFast(_))
        ));
        assert!(Quota::parse_rate("1000000/s").is_ok());
        assert!(Quota::parse_rate("3/s").is_ok());
    }

    #[test]
    fn gcra_numbers() {
        let q = Quota::new(nz(5), 60, nz(10)).unwrap();
        assert_eq!(q.emission(), 12 * NANOS_PER_SEC);
        assert_eq!(q.tolerance(), 120 * NANOS_PER_SEC);
        assert_eq!(q.to_string(), "5/min burst 10");
    }
}
