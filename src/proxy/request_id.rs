//! The request id: sent upstream in `X-Request-Id`, written in the access and decision logs.
//!
//! A trusted proxy's id (the peer is in `client_ip.trusted_proxies`) is kept when it is sane:
//! 1 to 128 visible ASCII characters. Any other is replaced by one of ours: 32 hex digits, a
//! per-process random 64-bit prefix, then the worker thread's number (16 bits) and a per-thread
//! counter (48 bits). Making one costs no syscall, lock or shared atomic per request; ids are
//! unique within a process (until a thread wraps its 2^48 counter) and, by the random prefix,
//! across restarts and instances with overwhelming probability.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::{HeaderMap, HeaderValue};

use crate::iplist::IpSet;

/// The request field carrying the id.
pub const HEADER: &str = "X-Request-Id";

/// The id of a request from `peer` (canonical) with `headers`.
pub fn request_id(peer: IpAddr, headers: &HeaderMap, trusted: &IpSet) -> HeaderValue {
    if let Some(v) = headers.get(HEADER) {
        if sane(v.as_bytes()) && trusted.contains(peer) {
            return v.clone();
        }
    }
    generate()
}

/// 1 to 128 visible ASCII characters.
fn sane(v: &[u8]) -> bool {
    (1..=128).contains(&v.len()) && v.iter().all(|b| (0x21..0x7f).contains(b))
}

/// The random prefix of this process's ids.
fn prefix() -> u64 {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    // std's RandomState is seeded from the OS's random source once per thread
    *PREFIX.get_or_init(|| {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    })
}

thread_local! {
    /// (this thread's number << 48) + its next counter value.
    static NEXT: Cell<u64> = {
        static THREADS: AtomicU64 = AtomicU64::new(0);
        Cell::new((THREADS.fetch_add(1, Ordering::Relaxed) & 0xffff) << 48)
    };
}

/// A fresh id: 32 lowercase hex digits.
pub fn generate() -> HeaderValue {
    let low = NEXT.with(|n| {
        let v = n.get();
        // the counter wraps within the thread's 48 bits
        n.set((v & !0xffff_ffff_ffff) | (v.wrapping_add(1) & 0xffff_ffff_ffff));
        v
    });
    let mut buf = [0u8; 32];
    hex(prefix(), &mut buf[..16]);
    hex(low, &mut buf[16..]);
    // hex digits are a valid header value
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

fn hex(mut v: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = DIGITS[(v & 15) as usize];
        v >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_distinct_hex_and_share_the_process_prefix() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_eq!(a.as_bytes()[..16], b.as_bytes()[..16]);
        let other = std::thread::spawn(generate).join().unwrap();
        assert_ne!(
            other.as_bytes()[16..20],
            a.as_bytes()[16..20],
            "thread number"
        );
    }

    #[test]
    fn a_trusted_peers_sane_id_is_kept_any_other_replaced() {
        let trusted = IpSet::new(["10.0.0.0/8".parse::<ipnet::IpNet>().unwrap()]);
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_static("lb-42"));
        let lb: IpAddr = "10.1.2.3".parse().unwrap();
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(request_id(lb, &h, &trusted), "lb-42");
        assert_ne!(request_id(stranger, &h, &trusted), "lb-42");
        for bad in ["has space", &"x".repeat(129)] {
            h.insert(HEADER, HeaderValue::from_str(bad).unwrap());
            assert_eq!(request_id(lb, &h, &trusted).len(), 32, "{bad:?}");
        }
    }
}
