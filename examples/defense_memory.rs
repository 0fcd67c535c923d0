//! Bytes per tracked autoban offender and per ban: RSS after N entries minus RSS before,
//! divided by N.
//!
//! `cargo run --release --example defense_memory [N]` (default 200,000, the default
//! `bans.max_tracked_offenders`). Linux only (reads /proc/self/statm).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use sekisho::defense::{net_of, AutobanPolicy, Ban, BanSet, Offenders, Source, StatusSet, Trigger};
use sekisho::engine::ip_key;
use sekisho::engine::Mode;

mod common;
use common::rss_bytes;

// The allocator the binary uses, so the figure is the one production sees.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn client(i: u32) -> IpAddr {
    // spread over the address space like real clients
    IpAddr::V4(Ipv4Addr::from(i.wrapping_mul(2_654_435_761)))
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let policy = AutobanPolicy {
        name: "probers".into(),
        trigger: Trigger::Status(StatusSet::probing()),
        more_than: 1_000_000, // never trips: every client stays tracked
        distinct_paths: 10,
        window: Duration::from_secs(60),
        ban: Duration::from_secs(600),
        max_ban: Duration::from_secs(86_400),
        mode: Mode::Enforce,
    };
    let offenders = Offenders::new(n as usize);
    let id = Offenders::policy_id(&policy.name);
    let before = rss_bytes();
    for i in 0..n {
        let key = ip_key(client(i), 64);
        let path = offenders.path_hash(format!("/no-such-page-{i}").as_bytes());
        offenders.observe(id, &policy, key, path, 1);
    }
    let after = rss_bytes();
    let tracked = offenders.len();
    println!(
        "offenders tracked: {tracked}\nrss before: {:.1} MiB\nrss after: {:.1} MiB\nbytes per offender: {:.1}",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        (after - before) as f64 / tracked as f64
    );

    let bans = BanSet::new(n as usize, 64);
    let before = rss_bytes();
    for i in 0..n {
        let net = net_of(client(i), 64);
        let ban = Ban {
            net,
            since_unix: 0,
            until: u64::MAX,
            forget_at: u64::MAX,
            strikes: 1,
            mode: Mode::Enforce,
            source: Source::Policy("probers".into()),
            reason: "31 responses with a watched status across ~24 paths within 1m; ban 1 for 10m"
                .into(),
        };
        bans.add(ban, 0);
    }
    let after = rss_bytes();
    let live = bans.live(0);
    println!(
        "bans: {live}\nrss before: {:.1} MiB\nrss after: {:.1} MiB\nbytes per ban: {:.1}",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        (after - before) as f64 / live as f64
    );
}
