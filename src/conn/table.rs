//! Client connections as a resource: how many are open, in all and per client, and which of
//! them wait idle between requests. A flood of connections that never finish a request is
//! refused at accept (`connections.max_open`, `connections.per_client.max_open`), and when the
//! whole process is full, idle keep-alive connections make room for new ones first.
//!
//! A connection is counted from the moment the accept gate lets it in ([`Table::admit`]) to the
//! drop of its [`Open`] guard, which the proxy claims on the connection's first request
//! ([`Table::claim`]) and carries across keep-alive reuses, so that every way a connection ends
//! (a response with `Connection: close`, a timeout, a reset, a panic) gives its place back. A
//! reservation never claimed (a connection dropped before its first request was read, as a
//! failed TLS handshake will be) is released by the sweep after [`UNCLAIMED`].
//!
//! Memory: one map entry per client with a connection open (16 + 4 bytes and the map's
//! overhead), so at most one per open connection; nothing is kept for a client once its last
//! connection closes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// How long a reservation may wait for its first request to be read before the sweep gives
/// its place back (Pingora allows a TLS handshake 60 s).
pub const UNCLAIMED: Duration = Duration::from_secs(90);

/// How often the accept path looks for unclaimed reservations.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

const SHARDS: usize = 32;

/// At `max_open`, a new connection takes an idle one's place only if its client holds fewer
/// than this many (a browser keeps about 6): a flood source holding many half-open
/// connections cannot push out the idle keep-alive connections of the clients it crowds.
pub const MAKE_ROOM_BELOW: u32 = 8;

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The process holds `connections.max_open` connections and none of them is idle.
    MaxOpen,
    /// The client holds `connections.per_client.max_open` connections.
    ClientMaxOpen,
    /// The client opened connections faster than `connections.per_client.rate`.
    ClientRate,
    /// The client is banned by an autoban policy of `kind: connections`.
    Banned,
}

impl Refusal {
    /// Every reason, as the metric labels them.
    pub const ALL: [Refusal; 4] = [
        Self::MaxOpen,
        Self::ClientMaxOpen,
        Self::ClientRate,
        Self::Banned,
    ];

    /// The `reason` label of `sekisho_connections_refused_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxOpen => "max_open",
            Self::ClientMaxOpen => "client_max_open",
            Self::ClientRate => "client_rate",
            Self::Banned => "banned",
        }
    }

    /// The config field that refused.
    pub fn field(self) -> &'static str {
        match self {
            Self::MaxOpen => "connections.max_open",
            Self::ClientMaxOpen => "connections.per_client.max_open",
            Self::ClientRate => "connections.per_client.rate",
            Self::Banned => "autoban",
        }
    }
}

/// The caps one admission is judged against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// All client connections of the process.
    pub max_open: usize,
    /// Connections of this client; `None`: not capped (a trusted proxy, or `max_open: off`).
    pub client_max_open: Option<u32>,
}

/// What [`Table::admit`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// The cap the connection is over, if any.
    pub refusal: Option<Refusal>,
    /// Whether it was let in (and is counted open until its guard drops): always, unless it
    /// is over a cap and the caps are enforced.
    pub admitted: bool,
    /// Whether an idle connection was asked to close to make room for it.
    pub shed_idle: bool,
}

type Clients = HashMap<u128, u32, foldhash::fast::FixedState>;

/// A reservation made at accept, waiting for the connection's first request.
#[derive(Debug, Clone, Copy)]
struct Pending {
    key: u128,
    since: Instant,
    /// Reservations under this peer address (two listeners may see the same peer port).
    count: u32,
}

/// Open client connections, in all and per client.
#[derive(Debug)]
pub struct Table {
    open: AtomicUsize,
    idle: AtomicUsize,
    shed: Notify,
    clients: Box<[Mutex<Clients>]>,
    pending: Mutex<HashMap<SocketAddr, Pending, foldhash::fast::FixedState>>,
    born: Instant,
    /// Seconds after `born` of the last sweep of unclaimed reservations.
    swept_at: AtomicU64,
    /// Reservations released by the sweep.
    unclaimed: AtomicU64,
    /// Client connections the process's descriptor limit leaves room for.
    descriptor_cap: AtomicUsize,
}

impl Default for Table {
    fn default() -> Self {
        Self::new()
    }
}

impl Table {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            open: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            shed: Notify::new(),
            clients: (0..SHARDS)
                .map(|_| Mutex::new(Clients::default()))
                .collect(),
            pending: Mutex::new(HashMap::default()),
            born: Instant::now(),
            swept_at: AtomicU64::new(0),
            unclaimed: AtomicU64::new(0),
            descriptor_cap: AtomicUsize::new(usize::MAX),
        }
    }

    /// Holds client connections under `cap` whatever `connections.max_open` says (set at start
    /// from the descriptor limit).
    pub fn set_descriptor_cap(&self, cap: usize) {
        self.descriptor_cap.store(cap.max(1), Ordering::Relaxed);
    }

    /// `connections.max_open` as the descriptor limit lets it be.
    pub fn max_open(&self, configured: usize) -> usize {
        configured.min(self.descriptor_cap.load(Ordering::Relaxed))
    }

    /// Client connections open now (reserved at accept and not yet closed).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections waiting idle for their next request now.
    pub fn idle(&self) -> usize {
        self.idle.load(Ordering::Relaxed)
    }

    /// Clients with at least one connection open.
    pub fn clients(&self) -> usize {
        self.clients.iter().map(|s| s.lock().len()).sum()
    }

    /// Connections of client `key` open now.
    pub fn open_of(&self, key: u128) -> u32 {
        self.shard(key).lock().get(&key).copied().unwrap_or(0)
    }

    /// Reservations the sweep released because no request was ever read on them.
    pub fn unclaimed(&self) -> u64 {
        self.unclaimed.load(Ordering::Relaxed)
    }

    fn shard(&self, key: u128) -> &Mutex<Clients> {
        // the low bits of an IPv4-mapped key vary most; fold the halves
        let h = (key as u64) ^ ((key >> 64) as u64);
        &self.clients[(h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 59) as usize % SHARDS]
    }

    /// Judges a new connection from `peer` (client `key`) against `caps` and, if it is let
    /// in, counts it open under a reservation that its first request claims. With `enforce`
    /// false (`mode: count`) every connection is let in and the refusal it would have had is
    /// only reported.
    pub fn admit(&self, peer: SocketAddr, key: u128, caps: Caps, enforce: bool) -> Admission {
        self.sweep_if_due();
        let mut refusal = None;
        let mut shed_idle = false;
        {
            let mut clients = self.shard(key).lock();
            let held = clients.get(&key).copied().unwrap_or(0);
            if self.open.load(Ordering::Relaxed) >= caps.max_open {
                let few = held < MAKE_ROOM_BELOW || caps.client_max_open.is_none();
                if few && self.idle.load(Ordering::Relaxed) > 0 {
                    // the longest-waiting idle connection closes to make room (Notify is FIFO)
                    self.shed.notify_one();
                    shed_idle = true;
                } else {
                    refusal = Some(Refusal::MaxOpen);
                    if enforce {
                        return Admission {
                            refusal,
                            admitted: false,
                            shed_idle,
                        };
                    }
                }
            }
            if caps.client_max_open.is_some_and(|cap| held >= cap) {
                refusal = refusal.or(Some(Refusal::ClientMaxOpen));
                if enforce {
                    return Admission {
                        refusal,
                        admitted: false,
                        shed_idle,
                    };
                }
            }
            *clients.entry(key).or_insert(0) += 1;
        }
        self.open.fetch_add(1, Ordering::Relaxed);
        self.pending
            .lock()
            .entry(peer)
            .and_modify(|p| p.count += 1)
            .or_insert(Pending {
                key,
                since: Instant::now(),
                count: 1,
            });
        Admission {
            refusal,
            admitted: true,
            shed_idle,
        }
    }

    /// The guard of the connection from `peer`, claimed on its first request: the
    /// reservation its accept made, or, if there is none (a Unix socket, a reservation the
    /// sweep released), a place counted now under `key` without a cap.
    pub fn claim(self: &Arc<Self>, peer: Option<SocketAddr>, key: u128) -> Open {
        if let Some(peer) = peer {
            let mut pending = self.pending.lock();
            if let Some(p) = pending.get_mut(&peer) {
                let key = p.key;
                p.count -= 1;
                if p.count == 0 {
                    pending.remove(&peer);
                }
                return Open {
                    table: self.clone(),
                    key,
                };
            }
        }
        *self.shard(key).lock().entry(key).or_insert(0) += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        Open {
            table: self.clone(),
            key,
        }
    }

    /// Gives one place of `key` back.
    fn release(&self, key: u128) {
        {
            let mut clients = self.shard(key).lock();
            if let Some(n) = clients.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    clients.remove(&key);
                }
            }
        }
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    fn sweep_if_due(&self) {
        let now = self.born.elapsed().as_secs();
        let last = self.swept_at.load(Ordering::Relaxed);
        if now < last + SWEEP_EVERY.as_secs()
            || self
                .swept_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.sweep(Instant::now());
    }

    /// Releases the reservations older than [`UNCLAIMED`] at `now`; how many.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut stale = Vec::new();
        self.pending.lock().retain(|_, p| {
            let keep = now.saturating_duration_since(p.since) < UNCLAIMED;
            if !keep {
                stale.push(*p);
            }
            keep
        });
        let mut released = 0;
        for p in stale {
            for _ in 0..p.count {
                self.release(p.key);
                released += 1;
            }
        }
        self.unclaimed.fetch_add(released as u64, Ordering::Relaxed);
        released
    }
}

/// One open client connection; dropping it gives its place back.
#[derive(Debug)]
pub struct Open {
    table: Arc<Table>,
    key: u128,
}

impl Open {
    /// Marks the connection idle (waiting for its next request) while the guard lives.
    pub fn idle(&self) -> Idle<'_> {
        self.table.idle.fetch_add(1, Ordering::Relaxed);
        Idle { open: self }
    }

    /// The client key it is counted under.
    pub fn key(&self) -> u128 {
        self.key
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.table.release(self.key);
    }
}

/// An idle connection's mark; see [`Open::idle`].
#[derive(Debug)]
pub struct Idle<'a> {
    open: &'a Open,
}

impl Idle<'_> {
    /// Resolves when the process is full and this connection is the one to close.
    pub async fn shed(&self) {
        self.open.table.shed.notified().await;
    }
}

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        self.open.table.idle.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    const CAPS: Caps = Caps {
        max_open: 10,
        client_max_open: Some(3),
    };

    #[test]
    fn a_client_holds_at_most_its_cap_and_gets_places_back_on_close() {
        let t = Arc::new(Table::new());
        let admitted: Vec<bool> = (0..5)
            .map(|i| t.admit(peer(1000 + i), 7, CAPS, true).admitted)
            .collect();
        assert_eq!(admitted, vec![true, true, true, false, false]);
        assert_eq!(
            t.admit(peer(2000), 7, CAPS, true).refusal,
            Some(Refusal::ClientMaxOpen)
        );
        // another client is not affected
        assert!(t.admit(peer(3000), 8, CAPS, true).admitted);
        assert_eq!((t.open(), t.open_of(7), t.clients()), (4, 3, 2));
        let first = t.claim(Some(peer(1000)), 7);
        drop(first);
        assert_eq!(t.open_of(7), 2);
        assert!(t.admit(peer(1003), 7, CAPS, true).admitted);
        assert_eq!(t.open_of(7), 3);
    }

    #[test]
    fn the_process_cap_refuses_unless_an_idle_connection_can_make_room() {
        let t = Arc::new(Table::new());
        let caps = Caps {
            max_open: 2,
            client_max_open: None,
        };
        assert!(t.admit(peer(1), 1, caps, true).admitted);
        assert!(t.admit(peer(2), 2, caps, true).admitted);
        let refused = t.admit(peer(3), 3, caps, true);
        assert_eq!(refused.refusal, Some(Refusal::MaxOpen));
        assert!(!refused.admitted);
        assert_eq!(t.open(), 2);
        let a = t.claim(Some(peer(1)), 1);
        let idle = a.idle();
        let made_room = t.admit(peer(4), 4, caps, true);
        assert!(made_room.admitted && made_room.shed_idle);
        assert_eq!(made_room.refusal, None);
        drop(idle);
        assert_eq!(t.idle(), 0);
    }

    #[test]
    fn a_client_holding_many_cannot_push_idle_connections_out() {
        let t = Arc::new(Table::new());
        let caps = Caps {
            max_open: 10,
            client_max_open: Some(100),
        };
        // a legit client's connection, idle
        assert!(t.admit(peer(1), 1, caps, true).admitted);
        let legit = t.claim(Some(peer(1)), 1);
        let _idle = legit.idle();
        // a flood source fills the rest
        for i in 0..9 {
            assert!(t.admit(peer(100 + i), 2, caps, true).admitted);
        }
        let more = t.admit(peer(200), 2, caps, true);
        assert_eq!(
            (more.admitted, more.refusal),
            (false, Some(Refusal::MaxOpen))
        );
        assert!(!more.shed_idle, "the flood pushed the idle connection out");
        // a client with few connections may take the idle one's place
        let newcomer = t.admit(peer(300), 3, caps, true);
        assert!(newcomer.admitted && newcomer.shed_idle);
    }

    #[test]
    fn count_mode_lets_everything_in_and_reports_the_refusal() {
        let t = Table::new();
        for i in 0..3 {
            assert_eq!(t.admit(peer(i), 7, CAPS, false).refusal, None);
        }
        let over = t.admit(peer(9), 7, CAPS, false);
        assert!(over.admitted);
        assert_eq!(over.refusal, Some(Refusal::ClientMaxOpen));
        assert_eq!(t.open_of(7), 4);
    }

    #[test]
    fn unclaimed_reservations_are_released_by_the_sweep() {
        let t = Arc::new(Table::new());
        assert!(t.admit(peer(1), 7, CAPS, true).admitted);
        assert!(t.admit(peer(2), 7, CAPS, true).admitted);
        let _claimed = t.claim(Some(peer(2)), 7);
        assert_eq!(t.sweep(Instant::now()), 0, "a fresh reservation stays");
        assert_eq!(t.sweep(Instant::now() + UNCLAIMED), 1);
        assert_eq!((t.open(), t.open_of(7), t.unclaimed()), (1, 1, 1));
    }

    #[test]
    fn a_connection_never_reserved_is_counted_when_claimed() {
        let t = Arc::new(Table::new());
        let o = t.claim(None, 5);
        assert_eq!((t.open(), t.open_of(5)), (1, 1));
        drop(o);
        assert_eq!((t.open(), t.clients()), (0, 0));
    }

    #[tokio::test]
    async fn shedding_wakes_the_idle_connection() {
        let t = Arc::new(Table::new());
        let caps = Caps {
            max_open: 1,
            client_max_open: None,
        };
        assert!(t.admit(peer(1), 1, caps, true).admitted);
        let open = t.claim(Some(peer(1)), 1);
        let idle = open.idle();
        let woken = idle.shed();
        tokio::pin!(woken);
        // registered before the new connection arrives
        assert!(futures_poll_once(woken.as_mut()).await.is_none());
        assert!(t.admit(peer(2), 2, caps, true).shed_idle);
        woken.await;
    }

    /// Polls a future once.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        let mut f = f;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
