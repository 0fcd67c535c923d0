//! Bytes per tracked key: RSS after N distinct keys minus RSS before, divided by N.
//!
//! `cargo run --release --example limiter_memory [N]` (default 1,000,000). Linux only (reads
//! /proc/self/statm). Keys are IPv4 client addresses under one per-IP rule, as in production.

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;

use sekisho::engine::ip_key;

mod common;
use common::rss_bytes;

// The allocator the binary uses, so the figure is the one production sees.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use sekisho::limiter::{BucketKey, Limiter, Quota};

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let quota = Quota::new(
        NonZeroU32::new(20).expect("nonzero"),
        1,
        NonZeroU32::new(100).expect("nonzero"),
    )
    .expect("quota");
    let limiter = Limiter::new(n as usize * 2);
    let before = rss_bytes();
    for i in 0..n {
        // spread over the address space like real clients
        let ip = IpAddr::V4(Ipv4Addr::from(i.wrapping_mul(2_654_435_761)));
        let _ = limiter.acquire(BucketKey::new(0, ip_key(ip, 64)), &quota, 0);
    }
    let after = rss_bytes();
    let tracked = limiter.len();
    println!(
        "keys tracked: {tracked}\nrss before: {:.1} MiB\nrss after: {:.1} MiB\nbytes per key: {:.1}",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        (after - before) as f64 / tracked as f64
    );
}
