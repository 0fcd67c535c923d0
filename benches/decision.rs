//! One decision on a realistic policy: 20 rules, a 10k-CIDR deny list, 100k tracked keys.
//! Beside it, a naive baseline: the same matchers, but a linear deny-list scan and a
//! `Mutex<HashMap>` of float token buckets (what a first implementation would write).

mod common;

use std::collections::HashMap;
use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Mutex;

use common::{v4_addrs, v4_cidrs, Rng};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ipnet::IpNet;
use sekisho::defense::{Ban, BanSet, Source};
use sekisho::engine::Mode;
use sekisho::engine::{Country, Facts, Live, Policy, RuleKind, SlotRegistry};
use sekisho::limiter::{Clock, FakeClock, Limiter};

const RULES: &str = r#"
rules:
  - { name: wp-probes, match: { path_regex: "^/(wp-admin|wp-login\\.php|xmlrpc\\.php)" }, action: deny }
  - { name: dotfiles, match: { path_regex: "/\\.(env|git|svn|htaccess)" }, action: deny }
  - { name: php-admin, match: { path_prefix: /phpmyadmin }, action: deny }
  - { name: cgi, match: { path_prefix: /cgi-bin/ }, action: deny }
  - { name: bad-ua, match: { user_agent: "(?i)sqlmap|nikto|masscan|zgrab" }, action: deny }
  - { name: crawlers, match: { user_agent: "(?i)msnbot|bingbot|googlebot|yandex" }, limit: { rate: 5/s, burst: 20 } }
  - { name: login, match: { path_prefix: /login, methods: [POST] }, limit: { rate: 5/min, burst: 10 }, response: { status: 429, retry_after: true } }
  - { name: signup, match: { path_prefix: /signup, methods: [POST] }, limit: { rate: 10/h, burst: 5 } }
  - { name: reset, match: { path: /password/reset, methods: [POST] }, limit: { rate: 3/h, burst: 3 } }
  - { name: search, match: { path_prefix: /search }, limit: { rate: 100/s, burst: 200 } }
  - { name: api, match: { path_prefix: /api/, host: api.example.com }, limit: { rate: 1000/s, burst: 2000, key: "header:X-Api-Key" } }
  - { name: checkout, match: { path_prefix: /checkout, methods: [POST, PUT] }, limit: { rate: 10/min, burst: 10 } }
  - { name: admin-host, match: { host: admin.example.com }, action: deny }
  - { name: static, match: { path_prefix: /static/, host: "*.example.com" }, limit: { rate: 10000/s, burst: 10000 } }
  - { name: per-path, match: { path_prefix: /items/ }, limit: { rate: 1000/s, burst: 1000, key: ip_path } }
  - { name: shadow-search, match: { path_prefix: /search, user_agent: "(?i)python|curl|wget" }, limit: { rate: 1/s, burst: 5 }, mode: count }
  - { name: shadow-sql, match: { path_regex: "(?i)union.*select|sleep\\(" }, action: deny, mode: count }
  - { name: shadow-ip, limit: { rate: 50/s, burst: 200 }, mode: count }
  - { name: trace, match: { methods: [TRACE, TRACK] }, action: deny }
  - { name: per-ip, limit: { rate: 1000000/s, burst: 100000 } }
"#;

struct Fixture {
    policy: Policy,
    deny_nets: Vec<IpNet>,
    clients: Vec<IpAddr>,
}

fn fixture() -> Fixture {
    let mut rng = Rng::new(7);
    let deny_nets = v4_cidrs(10_000, &mut rng);
    let dir = tempfile::tempdir().expect("tempdir");
    let list: String = deny_nets.iter().map(|n| format!("{n}\n")).collect();
    std::fs::write(dir.path().join("deny.txt"), list).expect("write deny list");
    let text = format!(
        "upstreams: [\"127.0.0.1:8000\"]\nlists:\n  deny: {{ files: [deny.txt] }}\n{RULES}"
    );
    let config = sekisho::config::parse(
        &text,
        &dir.path().join("bench.yaml"),
        &SlotRegistry::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.policy.rules.len(), 20);
    assert_eq!(config.policy.deny.entries(), 10_000);
    // 100k clients, none deny-listed (a request that passes every check is the costly one)
    let clients = v4_addrs(120_000, &mut rng)
        .into_iter()
        .filter(|ip| !config.policy.deny.contains(*ip))
        .take(100_000)
        .collect();
    Fixture {
        policy: config.policy,
        deny_nets,
        clients,
    }
}

const PATHS: [(&str, &str); 8] = [
    ("GET", "/"),
    ("GET", "/search"),
    ("GET", "/items/42"),
    ("GET", "/static/app.js"),
    ("POST", "/login"),
    ("GET", "/api/v1/orders"),
    ("GET", "/products/shoes"),
    ("GET", "/about"),
];

fn facts<'a>(ip: IpAddr, i: usize) -> Facts<'a> {
    let (method, path) = PATHS[i % PATHS.len()];
    Facts {
        ip,
        method,
        host: "www.example.com",
        path,
        user_agent: b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        headers: None,
        country: Country::UNKNOWN,
        ja4: "",
    }
}

/// The naive baseline's state: one lock, float buckets keyed by (rule, address).
struct Naive {
    buckets: Mutex<HashMap<(usize, IpAddr), (f64, u64)>>,
}

impl Naive {
    fn decide(&self, f: &Fixture, facts: &Facts<'_>, now: u64) -> bool {
        if f.deny_nets.iter().any(|n| n.contains(&facts.ip)) {
            return false;
        }
        let mut buckets = self.buckets.lock().expect("lock");
        for (i, rule) in f.policy.rules.iter().enumerate() {
            if !rule.matcher.matches(facts) {
                continue;
            }
            match &rule.kind {
                RuleKind::Deny => return false,
                RuleKind::Limit(spec) => {
                    let burst = f64::from(spec.quota.burst().get());
                    let per_ns = 1.0 / spec.quota.emission() as f64;
                    let b = buckets.entry((i, facts.ip)).or_insert((burst, now));
                    b.0 = (b.0 + (now - b.1) as f64 * per_ns).min(burst);
                    b.1 = now;
                    if b.0 < 1.0 {
                        return false;
                    }
                    b.0 -= 1.0;
                }
            }
        }
        true
    }
}

fn decision(c: &mut Criterion) {
    let f = fixture();
    let clock = FakeClock::new(1_000_000_000);
    let limiter = Limiter::new(2_000_000);
    for (i, ip) in f.clients.iter().enumerate() {
        black_box(f.policy.decide(&facts(*ip, i), &limiter, clock.now()));
    }
    let naive = Naive {
        buckets: Mutex::new(HashMap::new()),
    };
    for (i, ip) in f.clients.iter().enumerate() {
        black_box(naive.decide(&f, &facts(*ip, i), clock.now()));
    }
    eprintln!("tracked keys: {}", limiter.len());

    let mut g = c.benchmark_group("decision");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("sekisho_20rules_10k_deny_100k_keys", |b| {
        b.iter(|| {
            i = (i + 7919) % f.clients.len();
            clock.advance(1_000);
            black_box(
                f.policy
                    .decide(&facts(f.clients[i], i), &limiter, clock.now()),
            )
        })
    });
    g.bench_function("naive_baseline", |b| {
        b.iter(|| {
            i = (i + 7919) % f.clients.len();
            clock.advance(1_000);
            black_box(naive.decide(&f, &facts(f.clients[i], i), clock.now()))
        })
    });
    g.finish();

    // The same decision with 10k live bans consulted first (the client is not banned: the
    // costly case, a hash lookup that misses), and a banned client refused before any rule.
    let bans = BanSet::new(100_000, 64);
    let mut rng = Rng::new(11);
    for ip in v4_addrs(10_000, &mut rng) {
        let net = IpNet::from(ip);
        let ban = Ban {
            net,
            since_unix: 0,
            until: u64::MAX,
            forget_at: u64::MAX,
            strikes: 1,
            mode: Mode::Enforce,
            source: Source::Manual,
            reason: String::new(),
        };
        bans.add(ban, 0);
    }
    let banned: Vec<IpAddr> = bans.all().iter().map(|b| b.net.addr()).collect();
    let mut g = c.benchmark_group("decision_with_bans");
    g.throughput(Throughput::Elements(1));
    let no_bans = BanSet::new(100_000, 64);
    g.bench_function("not_banned_empty_ban_set", |b| {
        b.iter(|| {
            i = (i + 7919) % f.clients.len();
            clock.advance(1_000);
            let live = Live {
                limiter: &limiter,
                bans: Some(&no_bans),
                under_attack: false,
                shared: None,
            };
            black_box(f.policy.judge(&facts(f.clients[i], i), &live, clock.now()))
        })
    });
    g.bench_function("ban_check_only_miss_10k_bans", |b| {
        b.iter(|| {
            i = (i + 7919) % f.clients.len();
            let ip = f.clients[i];
            black_box(bans.check(ip, clock.now()))
        })
    });
    g.bench_function("not_banned_10k_bans", |b| {
        b.iter(|| {
            i = (i + 7919) % f.clients.len();
            clock.advance(1_000);
            let live = Live {
                limiter: &limiter,
                bans: Some(&bans),
                under_attack: false,
                shared: None,
            };
            black_box(f.policy.judge(&facts(f.clients[i], i), &live, clock.now()))
        })
    });
    g.bench_function("banned_10k_bans", |b| {
        b.iter(|| {
            i = (i + 7919) % banned.len();
            let live = Live {
                limiter: &limiter,
                bans: Some(&bans),
                under_attack: false,
                shared: None,
            };
            black_box(f.policy.judge(&facts(banned[i], i), &live, clock.now()))
        })
    });
    g.finish();
}

criterion_group!(benches, decision);
criterion_main!(benches);
