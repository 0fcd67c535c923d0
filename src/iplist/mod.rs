//! CIDR sets for allow and deny lists (IPv4 and IPv6), and the list-file format.
//!
//! A set is built once, at load, into sorted, merged, disjoint address ranges, one array of
//! starts and one of ends per family; a lookup is one binary search over the starts and never
//! allocates. Overlapping and adjacent entries are merged, so 100k CIDRs cost at most 100k
//! ranges (usually fewer) and ~17 comparisons a lookup.
//!
//! List files hold one IP or CIDR a line, `#` comments and blank lines; a bad line is an error
//! that names its line and column. This module knows nothing of HTTP or of the config layout.

use std::net::IpAddr;

use ipnet::IpNet;

/// The limiter key of a client address: IPv4 whole (as its IPv4-mapped IPv6 form), IPv6
/// truncated to `v6_prefix` bits so that one host cannot escape its limit by rotating through
/// the addresses of its /64.
pub fn ip_key(ip: IpAddr, v6_prefix: u8) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            match v6_prefix {
                0 => 0,
                p if p >= 128 => bits,
                p => bits & (u128::MAX << (128 - u32::from(p))),
            }
        }
    }
}

/// An immutable set of IPv4 and IPv6 ranges.
#[derive(Debug, Clone, Default)]
pub struct IpSet {
    v4: Ranges<u32>,
    v6: Ranges<u128>,
    entries: usize,
}

#[derive(Debug, Clone, Default)]
struct Ranges<T> {
    starts: Vec<T>,
    ends: Vec<T>,
}

impl<T: Copy + Ord + num::Step> Ranges<T> {
    fn build(mut ranges: Vec<(T, T)>) -> Self {
        ranges.sort_unstable();
        let mut starts = Vec::with_capacity(ranges.len());
        let mut ends: Vec<T> = Vec::with_capacity(ranges.len());
        for (s, e) in ranges {
            if let Some(last) = ends.last_mut() {
                // Overlapping or adjacent to the last range: extend it.
                if *last >= s || T::succ(*last) == Some(s) {
                    if e > *last {
                        *last = e;
                    }
                    continue;
                }
            }
            starts.push(s);
            ends.push(e);
        }
        starts.shrink_to_fit();
        ends.shrink_to_fit();
        Self { starts, ends }
    }

    #[inline]
    fn contains(&self, x: T) -> bool {
        let i = self.starts.partition_point(|&s| s <= x);
        i > 0 && self.ends[i - 1] >= x
    }

    /// Whether any range shares an address with `lo..=hi`.
    fn overlaps(&self, lo: T, hi: T) -> bool {
        // the first range that ends at or after lo
        let i = self.ends.partition_point(|&e| e < lo);
        i < self.starts.len() && self.starts[i] <= hi
    }
}

mod num {
    /// The next integer, if any (to merge adjacent ranges).
    pub trait Step: Sized {
        fn succ(self) -> Option<Self>;
    }
    impl Step for u32 {
        fn succ(self) -> Option<Self> {
            self.checked_add(1)
        }
    }
    impl Step for u128 {
        fn succ(self) -> Option<Self> {
            self.checked_add(1)
        }
    }
}

impl IpSet {
    /// Builds a set from networks (host bits are ignored: `10.0.0.1/8` is `10.0.0.0/8`).
    pub fn new<I: IntoIterator<Item = IpNet>>(nets: I) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut entries = 0;
        for net in nets {
            entries += 1;
            match net.trunc() {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        Self {
            v4: Ranges::build(v4),
            v6: Ranges::build(v6),
            entries,
        }
    }

    /// Whether `ip` is in the set. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is looked up
    /// as the IPv4 address it carries.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(v4) => self.v4.contains(u32::from(v4)),
            IpAddr::V6(v6) => self.v6.contains(u128::from(v6)),
        }
    }

    /// Whether the set and `net` share any address (either may contain the other).
    pub fn overlaps(&self, net: IpNet) -> bool {
        match net.trunc() {
            IpNet::V4(n) => self
                .v4
                .overlaps(u32::from(n.network()), u32::from(n.broadcast())),
            IpNet::V6(n) => self
                .v6
                .overlaps(u128::from(n.network()), u128::from(n.broadcast())),
        }
    }

    /// How many entries the set was built from (before merging).
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// How many disjoint ranges remain after merging.
    pub fn ranges(&self) -> usize {
        self.v4.starts.len() + self.v6.starts.len()
    }

    /// Whether the set holds nothing.
    pub fn is_empty(&self) -> bool {
        self.ranges() == 0
    }
}

/// Parses one IP or CIDR (`192.0.2.1`, `192.0.2.0/24`, `2001:db8::/32`).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Some(net) = parse_v4_fast(s.as_bytes()) {
        return Ok(net);
    }
    if s.contains('/') {
        s.parse::<IpNet>().map(|n| n.trunc()).map_err(|_| {
            format!("{s:?} is not a CIDR (expected e.g. 192.0.2.0/24 or 2001:db8::/32)")
        })
    } else {
        s.parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| format!("{s:?} is not an IP address or CIDR"))
    }
}

/// `a.b.c.d` or `a.b.c.d/p` in canonical decimal (no leading zeros), the bulk of every deny
/// list, without the general parser's overhead. Anything else returns `None` and goes to the
/// general parser, which also produces the error messages.
fn parse_v4_fast(b: &[u8]) -> Option<IpNet> {
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (n, octet) in octets.iter_mut().enumerate() {
        let start = i;
        let mut v: u32 = 0;
        while i < b.len() && b[i].is_ascii_digit() && i - start < 3 {
            v = v * 10 + u32::from(b[i] - b'0');
            i += 1;
        }
        let len = i - start;
        if len == 0 || v > 255 || (len > 1 && b[start] == b'0') {
            return None;
        }
        *octet = v as u8;
        if n < 3 {
            if b.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
    }
    let addr = std::net::Ipv4Addr::from(octets);
    let prefix = match b.get(i) {
        None => 32,
        Some(b'/') => {
            let p = &b[i + 1..];
            if p.is_empty()
                || p.len() > 2
                || !p.iter().all(u8::is_ascii_digit)
                || (p.len() == 2 && p[0] == b'0')
            {
                return None;
            }
            let v = p.iter().fold(0u8, |a, d| a * 10 + (d - b'0'));
            if v > 32 {
                return None;
            }
            v
        }
        Some(_) => return None,
    };
    ipnet::Ipv4Net::new(addr, prefix)
        .ok()
        .map(|n| IpNet::V4(n.trunc()))
}

/// A bad line in a list file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column of the bad entry.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// The entries of a list file's text: (1-based line, 1-based column, entry), comments and blank
/// lines left out.
pub fn entries(text: &str) -> impl Iterator<Item = (usize, usize, &str)> {
    text.lines().enumerate().filter_map(|(i, raw)| {
        let content = match raw.as_bytes().iter().position(|&b| b == b'#') {
            Some(hash) => &raw[..hash],
            None => raw,
        };
        let entry = content.trim();
        let column = content.len() - content.trim_start().len() + 1;
        (!entry.is_empty()).then_some((i + 1, column, entry))
    })
}

/// Parses a list file's text: one IP or CIDR a line, `#` starts a comment, blank lines skipped.
///
/// Returns every bad line, not just the first, so one `sekisho check` shows them all.
pub fn parse_list(text: &str) -> Result<Vec<IpNet>, Vec<LineError>> {
    let mut nets = Vec::new();
    let mut errors = Vec::new();
    for (line, column, entry) in entries(text) {
        match parse_net(entry) {
            Ok(n) => nets.push(n),
            Err(message) => errors.push(LineError {
                line,
                column,
                message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(nets)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(items: &[&str]) -> IpSet {
        IpSet::new(items.iter().map(|s| parse_net(s).unwrap()))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v4_and_v6_membership() {
        let s = set(&["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]);
        assert!(s.contains(ip("10.1.2.3")));
        assert!(!s.contains(ip("11.0.0.0")));
        assert!(s.contains(ip("192.0.2.7")));
        assert!(!s.contains(ip("192.0.2.8")));
        assert!(s.contains(ip("2001:db8:1::1")));
        assert!(!s.contains(ip("2001:db9::1")));
        // IPv4-mapped IPv6 is looked up as IPv4
        assert!(s.contains(ip("::ffff:10.9.9.9")));
        assert_eq!(s.entries(), 3);
    }

    #[test]
    fn overlaps_either_way() {
        let s = set(&["10.0.0.0/16", "192.0.2.7", "2001:db8::/32"]);
        let net = |t: &str| parse_net(t).unwrap();
        assert!(s.overlaps(net("10.0.5.0/24")), "inside");
        assert!(s.overlaps(net("10.0.0.0/8")), "around");
        assert!(s.overlaps(net("192.0.2.0/24")), "around a single address");
        assert!(s.overlaps(net("192.0.2.7")));
        assert!(!s.overlaps(net("192.0.2.8/29")));
        assert!(!s.overlaps(net("10.1.0.0/16")));
        assert!(!s.overlaps(net("0.0.0.0/5")));
        assert!(s.overlaps(net("2001:db8:1::/48")));
        assert!(!s.overlaps(net("2001:db9::/32")));
        assert!(!IpSet::default().overlaps(net("0.0.0.0/0")));
    }

    #[test]
    fn merges_overlaps_and_neighbours() {
        let s = set(&["10.0.0.0/24", "10.0.1.0/24", "10.0.0.128/25", "0.0.0.0/0"]);
        assert_eq!(s.ranges(), 1);
        assert!(s.contains(ip("255.255.255.255")));
        let all6 = set(&["::/0", "::1"]);
        assert!(all6.contains(ip("ffff::1")));
        assert!(IpSet::default().is_empty());
        assert!(!IpSet::default().contains(ip("127.0.0.1")));
    }

    #[test]
    fn list_file_format() {
        let text = "# deny list\n\n192.0.2.1\n  198.51.100.0/24  # scanners\n2001:db8::/48\n";
        let nets = parse_list(text).unwrap();
        assert_eq!(nets.len(), 3);
        let errs = parse_list("10.0.0.0/8\n  10.0.0.300\n10.0.0.0/33\n").unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!((errs[0].line, errs[0].column), (2, 3));
        assert_eq!(errs[1].line, 3);
    }

    #[test]
    fn fast_v4_parser_agrees_with_the_general_one() {
        for s in [
            "1.2.3.4",
            "0.0.0.0/0",
            "255.255.255.255/32",
            "10.1.2.3/8",
            "192.0.2.0/24",
        ] {
            assert_eq!(
                parse_v4_fast(s.as_bytes()),
                Some(
                    s.parse::<IpNet>()
                        .map(|n| n.trunc())
                        .unwrap_or_else(|_| IpNet::from(s.parse::<IpAddr>().unwrap()))
                ),
                "{s}"
            );
        }
        for s in [
            "1.2.3",
            "1.2.3.4.5",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3.4/33",
            "1.2.3.4/",
            "1.2.3.4/08",
            "1.2.3.4 ",
            "::1",
            "1.2.3.4/1a",
            "",
        ] {
            assert_eq!(parse_v4_fast(s.as_bytes()), None, "{s}");
        }
    }

    proptest! {
        #[test]
        fn fast_v4_parser_matches_ipnet(a in any::<u32>(), p in 0u8..=32) {
            let ip = std::net::Ipv4Addr::from(a);
            let text = format!("{ip}/{p}");
            let want = IpNet::new(IpAddr::V4(ip), p).unwrap().trunc();
            prop_assert_eq!(parse_v4_fast(text.as_bytes()), Some(want));
            prop_assert_eq!(parse_net(&text), Ok(want));
            let bare = ip.to_string();
            prop_assert_eq!(parse_v4_fast(bare.as_bytes()), Some(IpNet::from(IpAddr::V4(ip))));
        }

        // IPv6 too: merged ranges agree with a linear scan.
        #[test]
        fn v6_agrees_with_linear_scan(
            nets in proptest::collection::vec((any::<u128>(), 16u8..=128), 0..64),
            probes in proptest::collection::vec(any::<u128>(), 64),
        ) {
            let nets: Vec<IpNet> = nets
                .into_iter()
                .map(|(a, p)| IpNet::new(std::net::Ipv6Addr::from(a).into(), p).unwrap().trunc())
                .collect();
            let s = IpSet::new(nets.iter().copied());
            for p in probes {
                let a = IpAddr::from(std::net::Ipv6Addr::from(p));
                prop_assert_eq!(s.contains(a), nets.iter().any(|n| n.contains(&a)));
            }
            for n in &nets {
                for a in [n.network(), n.broadcast()] {
                    prop_assert!(s.contains(a));
                }
            }
        }

        // The merged ranges agree with a linear scan over the original networks.
        #[test]
        fn agrees_with_linear_scan(
            nets in proptest::collection::vec((any::<u32>(), 8u8..=32), 0..64),
            probes in proptest::collection::vec(any::<u32>(), 64),
        ) {
            let nets: Vec<IpNet> = nets
                .into_iter()
                .map(|(a, p)| IpNet::new(std::net::Ipv4Addr::from(a).into(), p).unwrap().trunc())
                .collect();
            let s = IpSet::new(nets.iter().copied());
            for p in probes {
                // also probe the network edges
                let a = IpAddr::from(std::net::Ipv4Addr::from(p));
                prop_assert_eq!(s.contains(a), nets.iter().any(|n| n.contains(&a)));
            }
            for n in &nets {
                for a in [n.network(), n.broadcast()] {
                    prop_assert!(s.contains(a));
                }
            }
        }
    }
}
