//! `sekisho suggest`: limits proposed from a log's traffic.
//!
//! For each `limit` rule of the config, the requests it matches are grouped by the rule's own
//! key (the address, address and path, country or JA4; a header key, which logs do not record,
//! falls back to the address as the engine does without the header). Requests no rule matches
//! are grouped by their first path segment (`/api/`, `/static/`, `/`), keyed by address, over a
//! minute. A key is *well-behaved* when none of its requests was answered 4xx.
//!
//! For each group: the distribution over keys of each key's peak requests in one period of the
//! rule's rate (fixed windows), and a `rate` and `burst` chosen so that at most the chosen
//! share of well-behaved keys would have been refused even once:
//! - `rate`: the `(1 - share)` quantile of the well-behaved keys' peaks per period;
//! - `burst`: at that rate, the `(1 - share)` quantile of the smallest bucket each
//!   well-behaved key's requests fit in. A token bucket of rate `r` and size `b` admits a
//!   sequence exactly when every run of `n` requests over `Δt` has `n ≤ b + r·Δt`, so the
//!   smallest `b` is `1 + max(xᵢ - min_{j≤i} xⱼ)` with `xᵢ = i - r·tᵢ`: one pass a key.
//!
//! Since conformance at a given rate depends on the burst alone, the suggestion refuses at most
//! the chosen share of well-behaved keys of this log (rounding up only lowers it); the printed
//! figures say how many it would have refused, well-behaved and not.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::BuildHasher;
use std::path::Path;
use std::process::ExitCode;

use super::run::{self, Options, ReadStats, Request, Stream};
use crate::config::{self, Config};
use crate::engine::{ip_key, KeyKind, RuleKind, SlotRegistry};

const SEC: i64 = 1_000_000_000;

/// `sekisho suggest` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct SuggestArgs {
    /// Log files (plain or gzip); `-` for stdin.
    #[arg(required = true)]
    pub logs: Vec<std::path::PathBuf>,
    /// The log format, or `auto` to detect it from the first lines.
    #[arg(long, default_value = "auto", value_parser = ["auto", "nginx", "apache", "alb", "cloudfront", "aws-waf", "caddy", "sekisho"])]
    pub format: String,
    /// The share of well-behaved keys (never answered a 4xx) a suggested limit may refuse.
    #[arg(long, default_value = "0.1%")]
    pub max_refused: String,
}

/// The requests of one group, by key: their times and whether one got a 4xx.
#[derive(Default)]
struct Group {
    keys: HashMap<u128, (Vec<i64>, bool), foldhash::fast::RandomState>,
}

/// What `suggest` found for one group.
#[derive(Debug, Clone, PartialEq)]
pub struct Suggestion {
    /// The rule's name, or the path prefix of an uncovered group.
    pub name: String,
    /// For an uncovered group: the path prefix.
    pub prefix: Option<String>,
    /// The rule's key as written in the config (`ip` for groups).
    pub key: String,
    /// The rule's rate and burst now, if it is a rule.
    pub current: Option<(String, u32)>,
    /// The rule's `match:`, as YAML, if it is a rule.
    pub matcher: Option<String>,
    /// The period's length, seconds.
    pub period: u32,
    /// Keys, and of them well-behaved.
    pub keys: usize,
    /// See `keys`.
    pub good: usize,
    /// Requests.
    pub requests: u64,
    /// Per-key peak requests in one period: p50, p99, p99.9, max (all keys).
    pub peaks: [u64; 4],
    /// The suggested tokens per period and burst.
    pub rate: u64,
    /// See `rate`.
    pub burst: u64,
    /// Keys the suggestion would have refused at least once: well-behaved, others.
    pub refused_good: usize,
    /// See `refused_good`.
    pub refused_other: usize,
}

/// The `q` quantile (0 to 1) of sorted `v`, nearest rank.
fn quantile(v: &[u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// The most requests of `times` (sorted) in one fixed window of `period` nanoseconds.
fn peak(times: &[i64], period: i64) -> u64 {
    let mut best = 0;
    let mut i = 0;
    while i < times.len() {
        let w = times[i].div_euclid(period);
        let j = times[i..].partition_point(|t| t.div_euclid(period) == w) + i;
        best = best.max((j - i) as u64);
        i = j;
    }
    best
}

/// The smallest bucket a token bucket of `per_period` tokens a `period` needs to admit every
/// request of `times` (sorted).
fn min_burst(times: &[i64], per_period: u64, period: i64) -> u64 {
    let rate = per_period as f64 / period as f64; // tokens a nanosecond
    let (mut low, mut worst) = (f64::INFINITY, 0.0f64);
    for (i, t) in times.iter().enumerate() {
        let x = i as f64 - rate * (*t - times[0]) as f64;
        low = low.min(x);
        worst = worst.max(x - low);
    }
    (1.0 + worst - 1e-9).ceil().max(1.0) as u64
}

/// A share as `0.1%` or `0.001`.
fn parse_share(s: &str) -> Result<f64, String> {
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => s.trim().parse::<f64>(),
    }
    .map_err(|_| format!("--max-refused {s:?}: expected a share like 0.1% or 0.001"))?;
    if !(0.0..1.0).contains(&v) {
        return Err(format!(
            "--max-refused {s:?}: must be from 0 up to (not including) 100%"
        ));
    }
    Ok(v)
}

/// A group's suggestion.
fn suggest_one(name: String, g: &Group, period: u32, share: f64) -> Suggestion {
    let p = i64::from(period) * SEC;
    let mut all: Vec<u64> = Vec::with_capacity(g.keys.len());
    let mut good: Vec<u64> = Vec::new();
    let mut requests = 0;
    for (times, bad) in g.keys.values() {
        let k = peak(times, p);
        requests += times.len() as u64;
        all.push(k);
        if !bad {
            good.push(k);
        }
    }
    all.sort_unstable();
    good.sort_unstable();
    let basis = if good.is_empty() { &all } else { &good };
    let rate = quantile(basis, 1.0 - share).max(1);
    let mut bursts: Vec<u64> = g
        .keys
        .values()
        .filter(|(_, bad)| !bad || good.is_empty())
        .map(|(t, _)| min_burst(t, rate, p))
        .collect();
    bursts.sort_unstable();
    let burst = quantile(&bursts, 1.0 - share).max(1);
    let (mut refused_good, mut refused_other) = (0, 0);
    for (t, bad) in g.keys.values() {
        if min_burst(t, rate, p) > burst {
            if *bad {
                refused_other += 1;
            } else {
                refused_good += 1;
            }
        }
    }
    Suggestion {
        name,
        prefix: None,
        key: "ip".into(),
        current: None,
        matcher: None,
        period,
        keys: all.len(),
        good: good.len(),
        requests,
        peaks: [
            quantile(&all, 0.5),
            quantile(&all, 0.99),
            quantile(&all, 0.999),
            all.last().copied().unwrap_or(0),
        ],
        rate,
        burst,
        refused_good,
        refused_other,
    }
}

/// The unit of a period, as a rate is written.
fn unit(period: u32) -> String {
    match period {
        1 => "s".into(),
        60 => "min".into(),
        3600 => "h".into(),
        86_400 => "d".into(),
        p => format!("{p}s"),
    }
}

/// The groups' suggestions for the requests of `logs` under `cfg`.
pub fn suggest(
    cfg: &Config,
    logs: &[std::path::PathBuf],
    format: &str,
    share: f64,
) -> Result<(Vec<Suggestion>, ReadStats), String> {
    let policy = &cfg.policy;
    let wants = run::wants_headers(cfg);
    let limits: Vec<usize> = policy
        .rules
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r.kind, RuleKind::Limit(_)))
        .map(|(i, _)| i)
        .collect();
    let mut groups: Vec<Group> = limits.iter().map(|_| Group::default()).collect();
    let mut uncovered: HashMap<String, Group> = HashMap::new();
    let hasher = foldhash::fast::FixedState::with_seed(7);
    let opts = Options::default();
    let mut stats = ReadStats::default();
    for (i, path) in logs.iter().enumerate() {
        let mut log = super::input::Log::open(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let f = run::format_of(&mut log, format)?;
        let mut stream = Stream::new(log, f, i as u32);
        while let Some(r) = stream
            .next(&opts, &mut stats)
            .map_err(|e| format!("{}: {e}", path.display()))?
        {
            let bad = (400..500).contains(&r.status);
            let mut covered = false;
            run::with_facts(cfg, wants, &r, None, |facts, _| {
                for (g, &ri) in limits.iter().enumerate() {
                    let rule = &policy.rules[ri];
                    if !rule.matcher.matches(facts) {
                        continue;
                    }
                    let RuleKind::Limit(spec) = &rule.kind else {
                        continue;
                    };
                    covered = true;
                    let ip = ip_key(facts.ip, policy.ipv6_prefix);
                    let key = match &spec.key {
                        KeyKind::IpPath => u128::from(hasher.hash_one((ip, facts.path))),
                        KeyKind::Country => u128::from(u16::from_be_bytes(facts.country.0)),
                        KeyKind::Ja4 if !facts.ja4.is_empty() => {
                            u128::from(hasher.hash_one(facts.ja4)) | (1 << 127)
                        }
                        _ => ip,
                    };
                    add(&mut groups[g], key, &r, bad);
                }
                if !covered {
                    let seg = first_segment(facts.path);
                    let g = match uncovered.get_mut(seg) {
                        Some(g) => g,
                        None => uncovered.entry(seg.to_owned()).or_default(),
                    };
                    add(g, ip_key(facts.ip, policy.ipv6_prefix), &r, bad);
                }
            });
        }
    }
    let mut out = Vec::new();
    for (g, &ri) in limits.iter().enumerate() {
        let rule = &policy.rules[ri];
        let RuleKind::Limit(spec) = &rule.kind else {
            continue;
        };
        let q = &spec.quota;
        let mut s = suggest_one(rule.name.clone(), &groups[g], q.period_secs(), share);
        s.key = key_name(&spec.key);
        s.current = Some((q.rate(), q.burst().get()));
        s.matcher = Some(config::match_line(rule));
        out.push(s);
    }
    let mut prefixes: Vec<_> = uncovered.into_iter().collect();
    prefixes.sort_by(|a, b| a.0.cmp(&b.0));
    for (prefix, g) in prefixes {
        let word = prefix
            .replace(|c: char| !c.is_ascii_alphanumeric(), "-")
            .trim_matches('-')
            .to_owned();
        let name = if word.is_empty() {
            "limit-root-files".to_owned()
        } else {
            format!("limit-{word}")
        };
        let mut s = suggest_one(name, &g, 60, share);
        s.prefix = Some(prefix);
        out.push(s);
    }
    Ok((out, stats))
}

/// A key as the config writes it.
fn key_name(k: &KeyKind) -> String {
    match k {
        KeyKind::Ip => "ip".into(),
        KeyKind::IpPath => "ip_path".into(),
        KeyKind::Header(h) => format!("header:{h}"),
        KeyKind::Country => "country".into(),
        KeyKind::Ja4 => "ja4".into(),
    }
}

fn add(g: &mut Group, key: u128, r: &Request, bad: bool) {
    let e = g.keys.entry(key).or_default();
    // requests come in time order (within the reorder window): keep the times sorted
    match e.0.last() {
        Some(&last) if last > r.time => {
            let at = e.0.partition_point(|t| *t <= r.time);
            e.0.insert(at, r.time);
        }
        _ => e.0.push(r.time),
    }
    e.1 |= bad;
}

/// `/api/v1/x` → `/api/`; `/` and `/x` (a file at the root) → `/`.
fn first_segment(path: &str) -> &str {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let lead = path.len() - rest.len();
    match rest.find('/') {
        Some(i) => &path[..lead + i + 1],
        None => "/",
    }
}

/// The suggestions as YAML to paste, each with its figures in comments.
pub fn render(s: &[Suggestion], share: f64) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# sekisho suggest: limits that would have refused at most {}% of the well-behaved keys (no 4xx answer)",
        share * 100.0
    );
    let _ = writeln!(o, "rules:");
    for x in s {
        let u = unit(x.period);
        let _ = writeln!(
            o,
            "  # {}: {} requests from {} keys ({} well-behaved); per-key peak requests a {u}: p50 {}, p99 {}, p99.9 {}, max {}",
            x.name, x.requests, x.keys, x.good, x.peaks[0], x.peaks[1], x.peaks[2], x.peaks[3]
        );
        if let Some((rate, burst)) = &x.current {
            let _ = writeln!(o, "  # now: rate {rate}, burst {burst}");
        }
        let _ = writeln!(
            o,
            "  # this would have refused {} of {} well-behaved keys and {} of {} others at least once",
            x.refused_good,
            x.good,
            x.refused_other,
            x.keys - x.good
        );
        let _ = writeln!(o, "  - name: {}", x.name);
        match x.prefix.as_deref() {
            // the files at the root: `path_prefix: /` would be every request
            Some("/") => {
                let _ = writeln!(o, "    match: {{ path_regex: \"^/[^/]*$\" }}");
            }
            Some(p) => {
                let _ = writeln!(o, "    match: {{ path_prefix: {p} }}");
            }
            None => {
                if let Some(m) = x.matcher.as_deref().filter(|m| *m != "{}") {
                    let _ = writeln!(o, "    match: {m}");
                }
            }
        }
        let _ = writeln!(
            o,
            "    limit: {{ rate: {}/{u}, burst: {}, key: {} }}",
            x.rate, x.burst, x.key
        );
    }
    o
}

/// Runs `sekisho suggest` on the config at `config`.
pub fn main(config: &Path, args: &SuggestArgs) -> ExitCode {
    let share = match parse_share(&args.max_refused) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sekisho suggest: {e}");
            return ExitCode::from(2);
        }
    };
    let cfg = match config::load(config, &SlotRegistry::default()) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(2);
        }
    };
    match suggest(&cfg, &args.logs, &args.format, share) {
        Ok((s, stats)) => {
            print!("{}", render(&s, share));
            if stats.unparsed > 0 {
                eprintln!(
                    "sekisho suggest: {} of {} lines could not be read (first: {})",
                    stats.unparsed,
                    stats.lines,
                    stats
                        .unparsed_examples
                        .first()
                        .map(|u| format!("{}:{}: {}", u.file, u.line, u.reason))
                        .unwrap_or_default()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sekisho suggest: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_bucket_is_what_a_token_bucket_needs() {
        let s = |v: &[f64]| {
            v.iter()
                .map(|x| (x * SEC as f64) as i64)
                .collect::<Vec<_>>()
        };
        // 5 at once: a bucket of 5 at any rate
        assert_eq!(min_burst(&s(&[0.0; 5]), 1, 60 * SEC), 5);
        // one a second at 1/s: a bucket of 1
        assert_eq!(min_burst(&s(&[0.0, 1.0, 2.0, 3.0]), 1, SEC), 1);
        // 3 at once, a pause of 2 s (2 tokens back at 1/s), 3 at once: 3 + 3 - 2 = 4
        assert_eq!(min_burst(&s(&[0.0, 0.0, 0.0, 2.0, 2.0, 2.0]), 1, SEC), 4);
        // checked against the engine's own limiter for random sequences
        let limiter = crate::limiter::Limiter::new(1000);
        let mut x = 12345u64;
        for case in 0..200u32 {
            let mut t = 0i64;
            let mut times = Vec::new();
            for _ in 0..30 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                t += (x % 3_000) as i64 * 1_000_000;
                times.push(t + SEC);
            }
            let per = 1 + (x % 5);
            let b = min_burst(&times, per, SEC);
            for (burst, fits) in [(b, true), (b - 1, false)] {
                let Some(burst) = std::num::NonZeroU32::new(burst as u32) else {
                    continue;
                };
                let q = crate::limiter::Quota::new(
                    std::num::NonZeroU32::new(per as u32).expect("per"),
                    1,
                    burst,
                )
                .expect("quota");
                let key =
                    crate::limiter::BucketKey::new(case * 2 + u32::from(fits), u128::from(case));
                let all = times
                    .iter()
                    .all(|t| limiter.acquire(key, &q, *t as u64).is_ok());
                assert_eq!(
                    all, fits,
                    "case {case}: rate {per}/s burst {burst} (smallest {b})"
                );
            }
        }
    }

    #[test]
    fn quantiles_peaks_segments_and_shares() {
        assert_eq!(quantile(&[1, 2, 3, 4], 0.5), 2);
        assert_eq!(quantile(&[1, 2, 3, 4], 0.999), 4);
        assert_eq!(peak(&[0, 1, 2, 60 * SEC, 61 * SEC], 60 * SEC), 3);
        assert_eq!(first_segment("/api/v1/x"), "/api/");
        assert_eq!(first_segment("/index.html"), "/");
        assert_eq!(parse_share("0.1%"), Ok(0.001));
        assert_eq!(parse_share("0.05"), Ok(0.05));
        assert!(parse_share("100%").is_err() && parse_share("x").is_err());
    }
}
