//! CIDR lookup: sekisho's merged sorted ranges vs a naive linear scan, at 10k and 100k entries.

mod common;

use std::hint::black_box;

use common::{v4_addrs, v4_cidrs, v6_addrs, v6_cidrs, Rng};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ipnet::IpNet;
use sekisho::iplist::IpSet;

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("cidr_lookup");
    g.throughput(Throughput::Elements(1));
    for n in [10_000usize, 100_000] {
        let mut rng = Rng::new(42);
        let mut nets = v4_cidrs(n * 9 / 10, &mut rng);
        nets.extend(v6_cidrs(n / 10, &mut rng));
        let set = IpSet::new(nets.iter().copied());
        let v4 = v4_addrs(4096, &mut rng);
        let v6 = v6_addrs(4096, &mut rng);
        let mut i = 0usize;
        g.bench_function(BenchmarkId::new("ipset_v4", n), |b| {
            b.iter(|| {
                i = (i + 1) & 4095;
                black_box(set.contains(black_box(v4[i])))
            })
        });
        g.bench_function(BenchmarkId::new("ipset_v6", n), |b| {
            b.iter(|| {
                i = (i + 1) & 4095;
                black_box(set.contains(black_box(v6[i])))
            })
        });
        g.bench_function(BenchmarkId::new("naive_linear_v4", n), |b| {
            b.iter(|| {
                i = (i + 1) & 4095;
                let a = black_box(v4[i]);
                black_box(nets.iter().any(|net: &IpNet| net.contains(&a)))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
