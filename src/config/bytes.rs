//! Byte rates in the config (`1KiB/s`): parsed once at load into bytes per second, and written
//! back in the largest binary unit that writes them whole.

use std::num::NonZeroU64;

/// Units of a byte rate, largest first.
const UNITS: [(&str, u64); 3] = [("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1)];

/// The highest rate accepted: 1 GiB/s.
const MAX: u64 = 1 << 30;

/// Parses `512B/s`, `1KiB/s`, `2MiB/s` into bytes per second (1 B/s to 1 GiB/s).
pub fn parse_byte_rate(s: &str) -> Result<NonZeroU64, String> {
    let s = s.trim();
    let usage = || format!("{s:?} is not a byte rate (e.g. 512B/s, 1KiB/s, 2MiB/s, or off)");
    let Some(amount) = s.strip_suffix("/s") else {
        return Err(usage());
    };
    let split = amount
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(amount.len());
    let (n, unit) = amount.split_at(split);
    let n: u64 = n.parse().map_err(|_| usage())?;
    let Some(&(_, size)) = UNITS.iter().find(|(u, _)| *u == unit.trim()) else {
        return Err(usage());
    };
    match NonZeroU64::new(n.saturating_mul(size)) {
        Some(rate) if rate.get() <= MAX => Ok(rate),
        _ => Err(format!("{s:?} is out of range (1B/s to 1024MiB/s)")),
    }
}

/// `rate` as [`parse_byte_rate`] reads it: `1KiB/s`, `1500B/s`.
pub fn format_byte_rate(rate: NonZeroU64) -> String {
    let r = rate.get();
    let (unit, size) = UNITS
        .iter()
        .find(|(_, size)| r % size == 0)
        .copied()
        .unwrap_or(("B", 1));
    format!("{}{unit}/s", r / size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print_back() {
        for (text, bytes, back) in [
            ("1KiB/s", 1024, "1KiB/s"),
            ("512B/s", 512, "512B/s"),
            ("2048B/s", 2048, "2KiB/s"),
            (" 3 MiB/s ", 3 << 20, "3MiB/s"),
            ("1500B/s", 1500, "1500B/s"),
        ] {
            let r = parse_byte_rate(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(r.get(), bytes, "{text}");
            assert_eq!(format_byte_rate(r), back, "{text}");
        }
    }

    #[test]
    fn bad_rates_say_what_is_accepted() {
        for bad in [
            "1KiB", "1kb/s", "KiB/s", "1KiB/min", "-1B/s", "1.5KiB/s", "",
        ] {
            let e = parse_byte_rate(bad).expect_err(bad);
            assert!(e.contains("is not a byte rate (e.g."), "{bad}: {e}");
        }
        for bad in ["0B/s", "2000MiB/s", "99999999999999999MiB/s"] {
            let e = parse_byte_rate(bad).expect_err(bad);
            assert!(e.contains("out of range"), "{bad}: {e}");
        }
    }
}
