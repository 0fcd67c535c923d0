//! Country lookup in the bundled database (random IPv4 and IPv6), and the cost of a decision
//! with country rules on (lookup + match) vs off.

mod common;

use std::hint::black_box;
use std::path::Path;

use common::{v4_addrs, v6_addrs, Rng};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sekisho::engine::{Country, Facts, SlotRegistry};
use sekisho::geo::GeoDb;
use sekisho::limiter::{Clock, FakeClock, Limiter};

const BASE: &str = r#"
  - { name: wp, match: { path_regex: "^/(wp-admin|wp-login\\.php)" }, action: deny }
  - { name: login, match: { path_prefix: /login, methods: [POST] }, limit: { rate: 5/min, burst: 10 } }
  - { name: per-ip, limit: { rate: 1000000/s, burst: 100000 } }
"#;
const GEO: &str = r#"
  - { name: blocked, match: { country: [KP, IR] }, action: deny }
  - { name: foreign, match: { country_not: [JP, "??"] }, limit: { rate: 1000000/s, burst: 100000 } }
"#;

fn geo(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let db = GeoDb::open(&root.join("conf/geo/dbip-country.mmdb")).expect("bundled database");
    let mut rng = Rng::new(11);
    let v4 = v4_addrs(4096, &mut rng);
    let v6: Vec<_> = v6_addrs(4096, &mut rng)
        .into_iter()
        // inside 2000::/3, where allocations are
        .map(|ip| match ip {
            std::net::IpAddr::V6(a) => {
                std::net::IpAddr::V6(((u128::from(a) >> 3) | (1u128 << 125)).into())
            }
            other => other,
        })
        .collect();
    let mut g = c.benchmark_group("geo_lookup");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("v4", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            black_box(db.country(black_box(v4[i])))
        })
    });
    g.bench_function("v6", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            black_box(db.country(black_box(v6[i])))
        })
    });
    g.finish();

    let parse = |rules: &str| {
        let text = format!(
            "upstreams: [\"127.0.0.1:8000\"]\ngeo: {{ database: geo/dbip-country.mmdb }}\nrules:\n{rules}"
        );
        sekisho::config::parse(
            &text,
            &root.join("conf/bench.yaml"),
            &SlotRegistry::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let off = parse(BASE);
    let on = parse(&format!("{GEO}{BASE}"));
    assert!(on.policy.uses_country && !off.policy.uses_country);
    let clock = FakeClock::new(1);
    let limiter = Limiter::new(100_000);
    let facts = |ip, country| Facts {
        ip,
        method: "GET",
        host: "www.example.com",
        path: "/products/1",
        user_agent: b"Mozilla/5.0",
        headers: None,
        country,
        ja4: "",
    };
    let mut g = c.benchmark_group("decision_geo");
    g.throughput(Throughput::Elements(1));
    g.bench_function("off", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            clock.advance(1_000);
            black_box(
                off.policy
                    .decide(&facts(v4[i], Country::UNKNOWN), &limiter, clock.now()),
            )
        })
    });
    g.bench_function("on_with_lookup", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            clock.advance(1_000);
            let country = on
                .geo
                .database
                .as_ref()
                .map_or(Country::UNKNOWN, |d| d.country(v4[i]));
            black_box(
                on.policy
                    .decide(&facts(v4[i], country), &limiter, clock.now()),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, geo);
criterion_main!(benches);
