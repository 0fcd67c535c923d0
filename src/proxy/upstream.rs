//! The upstream peers: round robin, with a peer that refused a connection skipped for a while.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::config::Upstream;
use crate::limiter::{nanos, Nanos};

/// Round-robin over peers with passive health: a failed connect marks a peer down for
/// `down_for`; a down peer is skipped unless every peer is down (then all are tried in turn).
#[derive(Debug)]
pub struct UpstreamPool {
    peers: Vec<(SocketAddr, AtomicU64)>,
    next: AtomicUsize,
    down_for: Nanos,
}

impl UpstreamPool {
    /// A pool of `upstreams`, all up.
    pub fn new(upstreams: &[Upstream], down_for: Duration) -> Self {
        Self {
            peers: upstreams
                .iter()
                .map(|u| (u.addr, AtomicU64::new(0)))
                .collect(),
            next: AtomicUsize::new(0),
            down_for: nanos(down_for),
        }
    }

    /// Where a new request starts its walk over the peers (round robin).
    pub fn start(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// The peer for attempt `try_no` (0 first) of a request that started at `start`: the first
    /// healthy peer from `start + try_no` on; when all are down, `start + try_no` itself, so
    /// that retries still walk over every peer.
    pub fn pick(&self, start: usize, try_no: usize, now: Nanos) -> Option<usize> {
        let n = self.peers.len();
        if n == 0 {
            return None;
        }
        let from = start.wrapping_add(try_no);
        let healthy = (0..n)
            .map(|i| from.wrapping_add(i) % n)
            .find(|&i| self.peers[i].1.load(Ordering::Relaxed) <= now);
        Some(healthy.unwrap_or(from % n))
    }

    /// Whether some peer is not marked down at `now`.
    pub fn any_up(&self, now: Nanos) -> bool {
        self.peers
            .iter()
            .any(|(_, until)| until.load(Ordering::Relaxed) <= now)
    }

    /// Records a failed connect to peer `idx`. Returns whether the peer was up until now: only
    /// that change is logged, so an origin that stays down writes a line every `down_for`, not one per
    /// request.
    pub fn mark_down(&self, idx: usize, now: Nanos, why: &dyn std::fmt::Display) -> bool {
        let Some((addr, until)) = self.peers.get(idx) else {
            return false;
        };
        let was_up = until.swap(now.saturating_add(self.down_for), Ordering::Relaxed) <= now;
        if was_up {
            tracing::warn!(
                upstream = %addr,
                skipped_for_s = self.down_for / 1_000_000_000,
                error = %why,
                "connect failed; peer skipped for a while"
            );
        }
        was_up
    }

    /// How long peer `idx` stays skipped from `now` on: `None` while it is up (or there is no
    /// such peer).
    pub fn down_for(&self, idx: usize, now: Nanos) -> Option<Duration> {
        let until = self.peers.get(idx)?.1.load(Ordering::Relaxed);
        (until > now).then(|| Duration::from_nanos(until - now))
    }

    /// The address of peer `idx`.
    pub fn addr(&self, idx: usize) -> SocketAddr {
        self.peers[idx].0
    }

    /// How many peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether there is no peer.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> UpstreamPool {
        let ups: Vec<Upstream> = (0..n)
            .map(|i| Upstream {
                name: format!("p{i}"),
                addr: SocketAddr::from(([127, 0, 0, 1], 8000 + i as u16)),
            })
            .collect();
        UpstreamPool::new(&ups, Duration::from_secs(10))
    }

    #[test]
    fn round_robin_skips_down_peers() {
        let p = pool(3);
        let picks: Vec<usize> = (0..3).map(|_| p.pick(p.start(), 0, 0).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2]);
        assert!(
            p.mark_down(1, 0, &"refused"),
            "the first failure is a change"
        );
        assert!(
            !p.mark_down(1, 1, &"refused"),
            "a failure while down is not"
        );
        let picks: Vec<usize> = (0..4).map(|_| p.pick(p.start(), 0, 1).unwrap()).collect();
        assert!(!picks.contains(&1));
        // after down_for the peer is back
        let later = 11_000_000_000;
        assert!((0..3).any(|_| p.pick(p.start(), 0, later) == Some(1)));
    }

    #[test]
    fn all_down_still_tries() {
        let p = pool(2);
        p.mark_down(0, 0, &"refused");
        p.mark_down(1, 0, &"refused");
        // retries walk over both peers, never the same one twice in a row
        assert_eq!(p.pick(7, 0, 1), Some(1));
        assert_eq!(p.pick(7, 1, 1), Some(0));
        assert_eq!(pool(0).pick(0, 0, 0), None);
    }
}
