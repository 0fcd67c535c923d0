//! Timestamps as logs write them, to Unix nanoseconds: the common log format's
//! `10/Oct/2000:13:55:36 -0700`, RFC 3339 with any fraction and offset, and a date and time
//! in separate fields (CloudFront). Hand-written: no calendar crate for three shapes.

const SEC: i64 = 1_000_000_000;

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u32, |n, d| {
        n.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    })
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Seconds since the epoch of a UTC date and time, checked.
fn utc(y: u32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<i64> {
    let y = i64::from(y);
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 60
    {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + i64::from(h * 3600 + mi * 60 + s))
}

/// `+0900`, `-07:00`, `Z`: seconds east of UTC.
fn offset(s: &[u8]) -> Option<i64> {
    match s {
        b"Z" | b"z" => Some(0),
        [sign @ (b'+' | b'-'), h1, h2, rest @ ..] => {
            let rest = rest.strip_prefix(b":").unwrap_or(rest);
            let h = digits(&[*h1, *h2])?;
            let m = digits(rest)?;
            if rest.len() != 2 || h > 23 || m > 59 {
                return None;
            }
            let secs = i64::from(h * 3600 + m * 60);
            Some(if *sign == b'-' { -secs } else { secs })
        }
        _ => None,
    }
}

/// `10/Oct/2000:13:55:36 -0700` (nginx `$time_local`, Apache `%t`).
pub fn clf(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 26 || b[2] != b'/' || b[6] != b'/' || b[11] != b':' || b[20] != b' ' {
        return None;
    }
    let month = match &b[3..6] {
        b"Jan" => 1,
        b"Feb" => 2,
        b"Mar" => 3,
        b"Apr" => 4,
        b"May" => 5,
        b"Jun" => 6,
        b"Jul" => 7,
        b"Aug" => 8,
        b"Sep" => 9,
        b"Oct" => 10,
        b"Nov" => 11,
        b"Dec" => 12,
        _ => return None,
    };
    if b[14] != b':' || b[17] != b':' {
        return None;
    }
    let t = utc(
        digits(&b[7..11])?,
        month,
        digits(&b[0..2])?,
        digits(&b[12..14])?,
        digits(&b[15..17])?,
        digits(&b[18..20])?,
    )?;
    Some((t - offset(&b[21..])?) * SEC)
}

/// The last [`clf`] timestamp read and its instant: the lines of one second share their
/// timestamp, so most lines are answered by comparing 26 bytes.
#[derive(Debug, Clone, Default)]
pub struct ClfMemo {
    text: [u8; 26],
    at: Option<i64>,
}

impl ClfMemo {
    /// [`clf`] of `s`, remembered while the next lines write the same bytes.
    pub fn clf(&mut self, s: &str) -> Option<i64> {
        if let Some(at) = self.at {
            if s.as_bytes() == self.text {
                return Some(at);
            }
        }
        let at = clf(s)?;
        // `clf` reads only 26 bytes
        self.text.copy_from_slice(s.as_bytes());
        self.at = Some(at);
        Some(at)
    }
}

/// RFC 3339 (`2018-07-02T22:23:00.186641Z`, `2026-12-01T09:00:00+09:00`): the instant and
/// the resolution its fraction gives.
pub fn rfc3339(s: &str) -> Option<(i64, i64)> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let t = utc(
        digits(&b[0..4])?,
        digits(&b[5..7])?,
        digits(&b[8..10])?,
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    )?;
    let mut rest = &b[19..];
    let (mut frac, mut precision) = (0i64, SEC);
    if let Some(f) = rest.strip_prefix(b".") {
        let n = f.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        for (i, d) in f[..n].iter().enumerate() {
            if i < 9 {
                frac = frac * 10 + i64::from(d - b'0');
                precision /= 10;
            }
        }
        frac *= precision;
        rest = &f[n..];
    }
    Some(((t - offset(rest)?) * SEC + frac, precision))
}

/// CloudFront's `2019-12-04` and `21:02:31`, UTC.
pub fn date_time(date: &str, time: &str) -> Option<i64> {
    let (d, t) = (date.as_bytes(), time.as_bytes());
    if d.len() != 10 || d[4] != b'-' || d[7] != b'-' || t.len() != 8 || t[2] != b':' || t[5] != b':'
    {
        return None;
    }
    Some(
        utc(
            digits(&d[0..4])?,
            digits(&d[5..7])?,
            digits(&d[8..10])?,
            digits(&t[0..2])?,
            digits(&t[3..5])?,
            digits(&t[6..8])?,
        )? * SEC,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_log_format_times_with_offsets() {
        // Apache's documented example: 10/Oct/2000:13:55:36 -0700 is 20:55:36 UTC
        assert_eq!(clf("10/Oct/2000:13:55:36 -0700"), Some(971_211_336 * SEC));
        assert_eq!(clf("10/Oct/2000:20:55:36 +0000"), Some(971_211_336 * SEC));
        assert_eq!(clf("11/Oct/2000:02:25:36 +0530"), Some(971_211_336 * SEC));
        assert_eq!(clf("29/Feb/2024:00:00:00 +0000"), Some(1_709_164_800 * SEC));
        for bad in [
            "29/Feb/2023:00:00:00 +0000",
            "10/Foo/2000:13:55:36 -0700",
            "10/Oct/2000:13:55:36",
            "10/Oct/2000:25:55:36 -0700",
            "1/Oct/2000:13:55:36 -0700x",
        ] {
            assert_eq!(clf(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_memo_answers_as_clf_does() {
        let mut memo = ClfMemo::default();
        for s in [
            "10/Oct/2000:13:55:36 -0700",
            "10/Oct/2000:13:55:36 -0700",
            "10/Oct/2000:13:55:36 -0600",
            "10/Oct/2000:25:55:36 -0700",
            "10/Oct/2000:13:55:36 -0600",
            "10/Oct/2000:13:55:36",
            "29/Feb/2024:00:00:00 +0000",
        ] {
            assert_eq!(memo.clf(s), clf(s), "{s}");
        }
    }

    #[test]
    fn rfc3339_with_fractions_and_offsets() {
        assert_eq!(
            rfc3339("2018-07-02T22:23:00.186641Z"),
            Some((1_530_570_180 * SEC + 186_641_000, 1_000))
        );
        assert_eq!(
            rfc3339("2026-12-01T09:00:00+09:00"),
            Some((1_796_083_200 * SEC, SEC))
        );
        assert_eq!(
            rfc3339("2026-12-01T00:00:00.5-01:00"),
            Some((1_796_086_800 * SEC + 500_000_000, 100_000_000))
        );
        assert_eq!(rfc3339("2026-13-01T00:00:00Z"), None);
        assert_eq!(rfc3339("2026-12-01T00:00:00"), None);
        assert_eq!(
            date_time("2019-12-04", "21:02:31"),
            Some(1_575_493_351 * SEC)
        );
        assert_eq!(date_time("2019-12-4", "21:02:31"), None);
    }

    #[test]
    fn civil_days_round_the_leap_rules() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }
}
