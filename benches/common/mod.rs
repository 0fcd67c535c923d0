//! Shared bench fixtures: deterministic pseudo-random CIDRs and addresses.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// A small deterministic generator (xorshift64*), so every run measures the same inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// `n` IPv4 CIDRs, /16 to /32 as deny lists mix them, none in 127.0.0.0/8.
pub fn v4_cidrs(n: usize, rng: &mut Rng) -> Vec<IpNet> {
    (0..n)
        .map(|_| loop {
            let a = rng.next_u64() as u32;
            if a >> 24 == 127 {
                continue;
            }
            let prefix = [16, 20, 24, 24, 24, 28, 32, 32][(rng.next_u64() % 8) as usize];
            break IpNet::new(IpAddr::V4(Ipv4Addr::from(a)), prefix)
                .unwrap()
                .trunc();
        })
        .collect()
}

/// `n` IPv6 CIDRs, /32 to /128.
pub fn v6_cidrs(n: usize, rng: &mut Rng) -> Vec<IpNet> {
    (0..n)
        .map(|_| {
            let a = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
            let prefix = [32, 48, 56, 64, 64, 128][(rng.next_u64() % 6) as usize];
            IpNet::new(IpAddr::V6(Ipv6Addr::from(a)), prefix)
                .unwrap()
                .trunc()
        })
        .collect()
}

/// Random IPv4 addresses.
pub fn v4_addrs(n: usize, rng: &mut Rng) -> Vec<IpAddr> {
    (0..n)
        .map(|_| IpAddr::V4(Ipv4Addr::from(rng.next_u64() as u32)))
        .collect()
}

/// Random IPv6 addresses.
pub fn v6_addrs(n: usize, rng: &mut Rng) -> Vec<IpAddr> {
    (0..n)
        .map(|_| {
            IpAddr::V6(Ipv6Addr::from(
                (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64()),
            ))
        })
        .collect()
}
