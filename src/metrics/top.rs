//! Heavy hitters over the recent window, for `GET /admin/top`: the client addresses, countries,
//! user agents and paths that sent the most requests, with allowed and refused counts.
//!
//! Memory is bounded: per dimension, one sketch per minute for the last 15 minutes, each of at
//! most [`CAPACITY`] keys. A sketch is a sampled space-saving summary: a new key, when the sketch
//! is full, replaces the smallest of 8 randomly sampled entries and inherits its count as error,
//! so counts are upper bounds and the heaviest keys are kept. The request path never waits:
//! when a sketch is busy, the update is skipped and counted. The answer says it is approximate.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// Keys kept per sketch.
pub const CAPACITY: usize = 512;
/// Minutes kept.
pub const MINUTES: usize = 15;
const SAMPLE: usize = 8;

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// Client address.
    Ip = 0,
    /// Client country.
    Country = 1,
    /// `User-Agent`.
    UserAgent = 2,
    /// Request path.
    Path = 3,
    /// The client's JA4 TLS fingerprint (TLS requests only).
    Ja4 = 4,
}

/// How many dimensions there are.
const DIMENSIONS: usize = 5;

impl Dimension {
    /// `ip`, `country`, `user_agent`, `path`, `ja4`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ip" => Self::Ip,
            "country" => Self::Country,
            "user_agent" => Self::UserAgent,
            "path" => Self::Path,
            "ja4" => Self::Ja4,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
struct Entry {
    key: Box<[u8]>,
    allowed: u64,
    refused: u64,
    /// Connections refused at accept or cut by a deadline (the `ip` dimension only).
    connections: u64,
    error: u64,
}

impl Entry {
    fn total(&self) -> u64 {
        self.allowed + self.refused + self.connections
    }
}

/// What one event counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Allowed,
    Refused,
    Connection,
}

#[derive(Debug, Default)]
struct Sketch {
    minute: u64,
    entries: Vec<Entry>,
    index: HashMap<Box<[u8]>, usize, foldhash::fast::FixedState>,
    rng: u64,
}

impl Sketch {
    fn add(&mut self, key: &[u8], event: Event) {
        let slot = match self.index.get(key) {
            Some(&i) => i,
            None if self.entries.len() < CAPACITY => {
                self.entries.push(Entry {
                    key: key.into(),
                    allowed: 0,
                    refused: 0,
                    connections: 0,
                    error: 0,
                });
                self.index.insert(key.into(), self.entries.len() - 1);
                self.entries.len() - 1
            }
            None => {
                // replace the smallest of a few sampled entries
                let mut victim = 0;
                let mut smallest = u64::MAX;
                for _ in 0..SAMPLE {
                    self.rng ^= self.rng << 13;
                    self.rng ^= self.rng >> 7;
                    self.rng ^= self.rng << 17;
                    let i = (self.rng % CAPACITY as u64) as usize;
                    if self.entries[i].total() < smallest {
                        smallest = self.entries[i].total();
                        victim = i;
                    }
                }
                let old = std::mem::replace(
                    &mut self.entries[victim],
                    Entry {
                        key: key.into(),
                        allowed: 0,
                        refused: 0,
                        connections: 0,
                        error: smallest,
                    },
                );
                self.index.remove(&old.key);
                self.index.insert(key.into(), victim);
                // the inherited count goes to "allowed": it is error, reported as such
                self.entries[victim].allowed = smallest;
                victim
            }
        };
        let e = &mut self.entries[slot];
        match event {
            Event::Allowed => e.allowed += 1,
            Event::Refused => e.refused += 1,
            Event::Connection => e.connections += 1,
        }
    }
}

/// The sketches of all dimensions.
#[derive(Debug)]
pub struct TopTalkers {
    sketches: Vec<Mutex<Sketch>>,
    /// Updates skipped because a sketch was busy.
    pub skipped: AtomicU64,
}

/// One line of an answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Heavy {
    /// The key (address, country, agent or path).
    pub key: String,
    /// Requests passed (an upper bound, see `error`).
    pub allowed: u64,
    /// Requests refused.
    pub refused: u64,
    /// Connections refused at accept or cut by a `connections:` deadline (`ip` only).
    pub connections_refused: u64,
    /// How much of the count may belong to keys this one replaced.
    pub error: u64,
}

impl Default for TopTalkers {
    fn default() -> Self {
        Self::new()
    }
}

impl TopTalkers {
    /// Empty sketches.
    pub fn new() -> Self {
        Self {
            sketches: (0..DIMENSIONS * MINUTES)
                .map(|i| {
                    Mutex::new(Sketch {
                        rng: 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1),
                        ..Sketch::default()
                    })
                })
                .collect(),
            skipped: AtomicU64::new(0),
        }
    }

    /// Counts one request at `minute` (minutes since any fixed origin), by each dimension's
    /// key (an empty JA4, a plaintext request, is not counted by JA4).
    pub fn record(&self, minute: u64, keys: [&[u8]; DIMENSIONS], refused: bool) {
        let event = if refused {
            Event::Refused
        } else {
            Event::Allowed
        };
        for (d, key) in keys.iter().enumerate() {
            if d == Dimension::Ja4 as usize && key.is_empty() {
                continue;
            }
            self.add(d, minute, key, event);
        }
    }

    /// Counts one connection of client `ip` (from [`ip_bytes`]) refused at accept or cut by a
    /// deadline at `minute`.
    pub fn record_connection(&self, minute: u64, ip: &[u8]) {
        self.add(Dimension::Ip as usize, minute, ip, Event::Connection);
    }

    fn add(&self, dim: usize, minute: u64, key: &[u8], event: Event) {
        let slot = (minute % MINUTES as u64) as usize;
        let Some(mut s) = self.sketches[dim * MINUTES + slot].try_lock() else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if s.minute != minute {
            s.minute = minute;
            s.entries.clear();
            s.index.clear();
        }
        s.add(key, event);
    }

    /// The `n` heaviest keys of `dim` over the last `window` minutes (1 to 15) at `minute`
    /// (IPv6 clients are shown as their /`v6_prefix` network).
    pub fn top(
        &self,
        dim: Dimension,
        window: u64,
        minute: u64,
        n: usize,
        v6_prefix: u8,
    ) -> Vec<Heavy> {
        let window = window.clamp(1, MINUTES as u64);
        let mut sum: HashMap<Box<[u8]>, (u64, u64, u64, u64)> = HashMap::new();
        for m in minute + 1 - window.min(minute + 1)..=minute {
            let s = self.sketches[dim as usize * MINUTES + (m % MINUTES as u64) as usize].lock();
            if s.minute != m {
                continue;
            }
            for e in &s.entries {
                let t = sum.entry(e.key.clone()).or_default();
                t.0 += e.allowed;
                t.1 += e.refused;
                t.2 += e.error;
                t.3 += e.connections;
            }
        }
        let mut out: Vec<Heavy> = sum
            .into_iter()
            .map(
                |(k, (allowed, refused, error, connections_refused))| Heavy {
                    key: match dim {
                        Dimension::Ip => ip_text(&k, v6_prefix),
                        _ => String::from_utf8_lossy(&k).into_owned(),
                    },
                    allowed,
                    refused,
                    connections_refused,
                    error,
                },
            )
            .collect();
        out.sort_by(|a, b| {
            (b.allowed + b.refused + b.connections_refused)
                .cmp(&(a.allowed + a.refused + a.connections_refused))
                .then(a.key.cmp(&b.key))
        });
        out.truncate(n);
        out
    }
}

/// The bytes [`TopTalkers::record`] is given for a client: 4 for IPv4, 16 (the /`v6_prefix`
/// network) for IPv6. No allocation.
pub fn ip_bytes(ip: std::net::IpAddr, v6_prefix: u8) -> ([u8; 16], usize) {
    let mut b = [0u8; 16];
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => {
            b[..4].copy_from_slice(&v4.octets());
            (b, 4)
        }
        ip @ std::net::IpAddr::V6(_) => {
            b.copy_from_slice(&crate::iplist::ip_key(ip, v6_prefix).to_be_bytes());
            (b, 16)
        }
    }
}

fn ip_text(k: &[u8], v6_prefix: u8) -> String {
    match k.len() {
        4 => std::net::Ipv4Addr::new(k[0], k[1], k[2], k[3]).to_string(),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(k);
            format!("{}/{v6_prefix}", std::net::Ipv6Addr::from(a))
        }
        _ => String::from_utf8_lossy(k).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_below_capacity() {
        let t = TopTalkers::new();
        for i in 0..10u32 {
            for _ in 0..=i {
                t.record(
                    7,
                    [format!("ip{i}").as_bytes(), b"JP", b"ua", b"/", b""],
                    i % 2 == 0,
                );
            }
        }
        let top = t.top(Dimension::Ip, 5, 7, 3, 64);
        assert_eq!(
            top[0],
            Heavy {
                key: "ip9".into(),
                allowed: 10,
                refused: 0,
                connections_refused: 0,
                error: 0
            }
        );
        assert_eq!(
            top[1],
            Heavy {
                key: "ip8".into(),
                allowed: 0,
                refused: 9,
                connections_refused: 0,
                error: 0
            }
        );
        assert_eq!(top.len(), 3);
        // a client whose connections are refused ranks by them too
        for _ in 0..50 {
            t.record_connection(7, b"ip0");
        }
        let top = t.top(Dimension::Ip, 5, 7, 1, 64);
        assert_eq!(
            (top[0].key.as_str(), top[0].connections_refused),
            ("ip0", 50)
        );
        let c = t.top(Dimension::Country, 5, 7, 3, 64);
        assert_eq!((c[0].allowed, c[0].refused), (30, 25));
    }

    #[test]
    fn heavy_hitters_survive_a_flood_of_distinct_keys() {
        let t = TopTalkers::new();
        let mut x: u64 = 1;
        for i in 0..200_000u64 {
            let key = if i % 10 == 0 {
                "attacker".to_string()
            } else if i % 10 == 1 {
                "second".to_string()
            } else {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                format!("random-{x}")
            };
            t.record(3, [key.as_bytes(), b"??", b"-", b"/", b""], true);
        }
        let top = t.top(Dimension::Ip, 1, 3, 2, 64);
        assert_eq!(top[0].key, "attacker");
        assert_eq!(top[1].key, "second");
        // counts are upper bounds within the reported error
        assert!(top[0].refused <= 20_000 && top[0].refused + top[0].allowed >= 20_000);
        assert!(top[0].allowed <= top[0].error);
    }

    #[test]
    fn windows_and_expiry() {
        let t = TopTalkers::new();
        t.record(100, [b"a", b"JP", b"ua", b"/", b""], false);
        t.record(104, [b"b", b"JP", b"ua", b"/", b""], false);
        assert_eq!(t.top(Dimension::Ip, 1, 104, 10, 64).len(), 1);
        assert_eq!(t.top(Dimension::Ip, 5, 104, 10, 64).len(), 2);
        // 15 minutes later both are gone
        t.record(119, [b"c", b"JP", b"ua", b"/", b""], false);
        let keys: Vec<String> = t
            .top(Dimension::Ip, 15, 119, 10, 64)
            .into_iter()
            .map(|h| h.key)
            .collect();
        assert_eq!(keys, vec!["c"]);
    }
}
