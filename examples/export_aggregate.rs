//! How many innocent addresses [`aggregate`] blocks when it squeezes a ban list into an
//! entry limit (AWS WAF's 10,000 per IP set, or 1,000), against the fewest possible, and how
//! long it takes.
//!
//! `cargo run --release --example export_aggregate`
//!
//! For each case and each address family that needs widening: the networks after lossless
//! merging, the limit, the entries written, the addresses `aggregate` covers beyond the
//! banned ones ("excess"; IPv6 counted in `/64`s), the least excess any export of at most
//! that many entries can have ("optimum": a tree knapsack over the binary trie of the merged
//! bans, written here independently of the library, honouring the same `/8` (IPv4) and
//! `/32` (IPv6) floor), their ratio, the excess per banned address, the share of IPv4 the
//! excess is, how many entries are a `/16` (IPv6 `/48`) or wider and the widest, and the
//! time of the `aggregate` call (both families together) and of the optimum. The inputs are
//! fixed (splitmix64), so every run prints the same figures but the times.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use ipnet::{IpNet, Ipv6Net};
use sekisho::defense::export::{aggregate, merge, AWS_WAF_IPSET_LIMIT};

/// splitmix64: a fixed, dependency-free stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn u32(&mut self) -> u32 {
        (self.next() >> 32) as u32
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn v4(a: u32) -> IpNet {
    IpNet::from(IpAddr::from(Ipv4Addr::from(a)))
}

fn v6_64(prefix: u64) -> IpNet {
    IpNet::V6(Ipv6Net::new_assert(
        Ipv6Addr::from(u128::from(prefix) << 64),
        64,
    ))
}

/// `n` uniform random IPv4 hosts, drawn as the tests' `random_u32s` draws them.
fn uniform(seed: u64, n: usize) -> Vec<IpNet> {
    let mut rng = Rng(seed);
    (0..n).map(|_| v4(rng.u32())).collect()
}

/// `n` IPv4 hosts, `share` (of 10) of them inside `groups` random `/len` networks (hosting
/// providers, a botnet on rented machines), the rest anywhere. Groups are picked with a
/// skew (group `i` about as often as `1 / (i + 1)`), as a few providers host most of it.
fn clustered(seed: u64, n: usize, groups: usize, len: u8, share: u64) -> Vec<IpNet> {
    let mut rng = Rng(seed);
    let bases: Vec<u32> = (0..groups)
        .map(|_| rng.u32() & !(u32::MAX >> len))
        .collect();
    // Harmonic weights as a cumulative table.
    let cumulative: Vec<f64> = (0..groups)
        .scan(0.0, |acc, i| {
            *acc += 1.0 / (i as f64 + 1.0);
            Some(*acc)
        })
        .collect();
    let total = cumulative[groups - 1];
    (0..n)
        .map(|_| {
            if rng.below(10) < share {
                let x = (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * total;
                let g = cumulative.partition_point(|&c| c < x).min(groups - 1);
                v4(bases[g] | (rng.u32() & (u32::MAX >> len)))
            } else {
                v4(rng.u32())
            }
        })
        .collect()
}

/// `n` IPv6 `/64` client keys (sekisho bans IPv6 clients by `/64`): 60% inside 300 random
/// `/48`s of hosting providers in 2a00::/12, 40% inside 500 random ISP `/32`s in 2000::/3
/// (a random `/64` of each, as residential customers get a `/56` or `/48` each).
fn v6_keys(seed: u64, n: usize) -> Vec<IpNet> {
    let mut rng = Rng(seed);
    let hosting: Vec<u64> = (0..300)
        .map(|_| 0x2a00u64 << 48 | (rng.next() >> 16 & 0x000f_ffff_0000))
        .collect();
    let isps: Vec<u64> = (0..500)
        .map(|_| 0x2000u64 << 48 | (rng.next() >> 3 & 0x1fff_ffff_0000_0000))
        .collect();
    (0..n)
        .map(|_| {
            if rng.below(10) < 6 {
                let g = rng.below(hosting.len() as u64) as usize;
                v6_64(hosting[g] | rng.below(1 << 16))
            } else {
                let g = rng.below(isps.len() as u64) as usize;
                v6_64(isps[g] | rng.below(1 << 32))
            }
        })
        .collect()
}

/// One family's networks as (first address, prefix length), with its width and floor.
struct Fam {
    name: &'static str,
    width: u8,
    floor: u8,
    blocks: Vec<(u128, u8)>,
}

fn families(nets: &[IpNet]) -> [Fam; 2] {
    let mut v4 = Fam {
        name: "IPv4",
        width: 32,
        floor: 8,
        blocks: Vec::new(),
    };
    let mut v6 = Fam {
        name: "IPv6",
        width: 128,
        floor: 32,
        blocks: Vec::new(),
    };
    for n in nets {
        match n {
            IpNet::V4(n) => v4
                .blocks
                .push((u128::from(u32::from(n.network())), n.prefix_len())),
            IpNet::V6(n) => v6.blocks.push((u128::from(n.network()), n.prefix_len())),
        }
    }
    [v4, v6]
}

fn size(len: u8, width: u8) -> u128 {
    // Only a /0 of IPv6 overflows; the floor keeps it out.
    1u128 << (width - len)
}

fn addresses(f: &Fam) -> u128 {
    f.blocks.iter().map(|&(_, l)| size(l, f.width)).sum()
}

const INFEASIBLE: u128 = u128::MAX;

/// The fewest addresses any cover of `blocks` (merged, sorted, disjoint) by `i + 1` entries
/// can hold, for each `i < max`: each entry either one block or the common parent of a run
/// of them, none shorter than `floor`. Any cover can be brought to that shape without more
/// entries or addresses. `O(blocks × max)` (the usual bound for a tree knapsack).
fn optimum(blocks: &[(u128, u8)], width: u8, floor: u8, max: usize) -> Vec<u128> {
    if let [(_, len)] = blocks {
        return vec![size(*len, width)];
    }
    let (first, last) = (blocks[0].0, blocks[blocks.len() - 1].0);
    let d = ((first ^ last).leading_zeros() - (128 - u32::from(width))) as u8;
    let bit = width - 1 - d;
    let mid = blocks.partition_point(|&(s, _)| s >> bit & 1 == 0);
    let l = optimum(&blocks[..mid], width, floor, max);
    let r = optimum(&blocks[mid..], width, floor, max);
    let mut out = vec![INFEASIBLE; (l.len() + r.len()).min(max)];
    // Shorter than the floor only where it merges two whole halves losslessly.
    if d >= floor || l[0].saturating_add(r[0]) == size(d, width) {
        out[0] = size(d, width);
    }
    for (i, &a) in l.iter().enumerate() {
        if a == INFEASIBLE {
            continue;
        }
        for (j, &b) in r.iter().enumerate().take(max.saturating_sub(i + 1)) {
            if b != INFEASIBLE && a + b < out[i + j + 1] {
                out[i + j + 1] = a + b;
            }
        }
    }
    out
}

/// Addresses in `count`, readably: 1234567 as "1.23M".
fn human(count: u128) -> String {
    let x = count as f64;
    match count {
        0..=9_999 => count.to_string(),
        10_000..=9_999_999 => format!("{:.1}k", x / 1e3),
        10_000_000..=9_999_999_999 => format!("{:.2}M", x / 1e6),
        _ => format!("{:.3e}", x),
    }
}

fn run(case: &str, input: &[IpNet], max: usize) {
    let merged = families(&merge(input));
    let t = Instant::now();
    let out = aggregate(input, max);
    let took = t.elapsed();
    let out = families(&out);
    for (m, o) in merged.iter().zip(&out) {
        if m.blocks.len() <= max {
            continue;
        }
        // IPv6 counted in /64s, the unit sekisho bans IPv6 clients by.
        let unit = if m.width == 32 { 1 } else { 1u128 << 64 };
        let banned = addresses(m);
        let excess = addresses(o) - banned;
        let t = Instant::now();
        let best = optimum(&m.blocks, m.width, m.floor, max)
            .into_iter()
            .min()
            .unwrap_or(INFEASIBLE);
        let dp = t.elapsed();
        let share_of = |blocked: u128| {
            if m.width == 32 {
                format!("{:.1}%", blocked as f64 / 2f64.powi(32) * 100.0)
            } else {
                "-".to_string()
            }
        };
        let (best, ratio, share) = if best == INFEASIBLE {
            ("n/a".to_string(), "n/a".to_string(), share_of(excess))
        } else {
            let least = best - banned;
            let ratio = if least == 0 {
                "-".to_string()
            } else {
                format!("{:.4}", excess as f64 / least as f64)
            };
            let share = format!("{} ({})", share_of(excess), share_of(least));
            (human(least / unit), ratio, share)
        };
        let widest = o.blocks.iter().map(|&(_, l)| l).min().unwrap_or(0);
        // A /16 of IPv4, a /48 of IPv6: 65,536 hosts or /64 client keys.
        let wide_len = if m.width == 32 { 16 } else { 48 };
        let wide = o.blocks.iter().filter(|&&(_, l)| l <= wide_len).count();
        println!(
            "| {case} | {} | {} | {max} | {} | {} | {} | {best} | {ratio} | {:.2} | {share} | {wide} | /{widest} | {:.0} ms | {:.0} ms |",
            m.name,
            m.blocks.len(),
            o.blocks.len(),
            human(banned / unit),
            human(excess / unit),
            excess as f64 / banned as f64,
            took.as_secs_f64() * 1e3,
            dp.as_secs_f64() * 1e3,
        );
    }
}

fn main() {
    println!(
        "| case | family | merged | max | out | banned (IPv6: /64s) | excess | optimum | excess/optimum \
         | excess/banned | share of IPv4 blocked (optimum) | entries /16 (v6 /48) or wider | widest | time | time optimum |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    // (d) the test's random worst case: 25,000 random hosts into 10,000.
    run(
        "tests' 25k random",
        &uniform(0x5e_c1_54_00, 25_000),
        AWS_WAF_IPSET_LIMIT,
    );
    for n in [20_000, 100_000] {
        for max in [AWS_WAF_IPSET_LIMIT, 1_000] {
            let k = n / 1000;
            // (a) uniform random hosts.
            run(&format!("uniform {k}k"), &uniform(1, n), max);
            // (b) 90% in 500 /24s, 90% in 200 /16s.
            run(&format!("500 /24s {k}k"), &clustered(2, n, 500, 24, 9), max);
            run(&format!("200 /16s {k}k"), &clustered(3, n, 200, 16, 9), max);
            // (c) the /16 mix at 70%, plus 30% IPv6 /64 keys.
            let mut mixed = clustered(4, n * 7 / 10, 200, 16, 9);
            mixed.extend(v6_keys(5, n * 3 / 10));
            run(&format!("mixed v4+v6 {k}k"), &mixed, max);
        }
    }
}
