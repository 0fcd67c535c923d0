//! Engine tests: policies are parsed from YAML text, time is a number we choose.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::Path;

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;

use super::*;

const SEC: u64 = 1_000_000_000;

fn policy(rules_yaml: &str) -> (Policy, Limiter) {
    let text = format!("upstreams: [\"127.0.0.1:8000\"]\n{rules_yaml}");
    let c = crate::config::parse(&text, Path::new("test.yaml"), &SlotRegistry::default())
        .unwrap_or_else(|e| panic!("{e}"));
    (c.policy, Limiter::new(10_000))
}

fn req<'a>(ip: &str, method: &'a str, path: &'a str) -> Facts<'a> {
    Facts {
        ip: ip.parse::<IpAddr>().unwrap(),
        method,
        host: "example.com",
        path,
        user_agent: b"curl/8",
        headers: None,
        country: Country::UNKNOWN,
        ja4: "",
    }
}

#[test]
fn lists_come_first() {
    let (p, l) = policy(
        "lists:\n  allow: { cidrs: [10.0.0.1] }\n  deny: { cidrs: [10.0.0.0/8, \"2001:db8::/32\"] }\nrules:\n  - name: all\n    limit: { rate: 1/min, burst: 1 }\n",
    );
    // allow-listed: no limit, not denied
    for _ in 0..5 {
        assert_eq!(
            p.decide(&req("10.0.0.1", "GET", "/"), &l, 0),
            Decision::AllowListed
        );
    }
    let denied = Decision::Deny {
        rule: RuleRef::DenyList,
    };
    assert_eq!(p.decide(&req("10.0.0.2", "GET", "/"), &l, 0), denied);
    assert_eq!(p.decide(&req("2001:db8::9", "GET", "/"), &l, 0), denied);
    assert_eq!(
        p.decide(&req("192.0.2.1", "GET", "/"), &l, 0),
        Decision::Allow
    );
    assert!(p
        .decide(&req("192.0.2.1", "GET", "/"), &l, 0)
        .is_refused_by_limit());
}

impl Decision {
    fn is_refused_by_limit(&self) -> bool {
        matches!(self, Decision::Limit { .. })
    }
}

#[test]
fn deny_list_in_count_mode_only_counts() {
    let (p, l) = policy("lists:\n  deny: { cidrs: [10.0.0.0/8], mode: count }\n");
    assert_eq!(
        p.decide(&req("10.1.1.1", "GET", "/"), &l, 0),
        Decision::Count {
            rule: RuleRef::DenyList
        }
    );
}

#[test]
fn burst_then_limit_with_retry_after() {
    let (p, l) = policy("rules:\n  - name: per-ip\n    limit: { rate: 2/s, burst: 4 }\n");
    let r = req("192.0.2.1", "GET", "/");
    for _ in 0..4 {
        assert_eq!(p.decide(&r, &l, 0), Decision::Allow);
    }
    assert_eq!(
        p.decide(&r, &l, 0),
        Decision::Limit {
            rule: RuleRef::Rule(0),
            retry_after: 1
        }
    );
    // half a second refills one token
    assert_eq!(p.decide(&r, &l, SEC / 2), Decision::Allow);
    assert!(p.decide(&r, &l, SEC / 2).is_refused_by_limit());
    // another client is not affected
    assert_eq!(
        p.decide(&req("192.0.2.2", "GET", "/"), &l, 0),
        Decision::Allow
    );
}

#[test]
fn all_must_pass_and_refusal_costs_no_tokens() {
    let (p, l) = policy(
        "rules:\n  - name: all\n    limit: { rate: 10/min, burst: 10 }\n  - name: login\n    match: { path_prefix: /login }\n    limit: { rate: 1/min, burst: 1 }\n",
    );
    let login = req("192.0.2.1", "POST", "/login");
    assert_eq!(p.decide(&login, &l, 0), Decision::Allow);
    // refused by `login`; the token `all` took is given back
    assert_eq!(
        p.decide(&login, &l, 0),
        Decision::Limit {
            rule: RuleRef::Rule(1),
            retry_after: 60
        }
    );
    assert!(p.decide(&login, &l, 0).is_refused_by_limit());
    // so `all` still has 9 tokens
    let home = req("192.0.2.1", "GET", "/");
    for _ in 0..9 {
        assert_eq!(p.decide(&home, &l, 0), Decision::Allow);
    }
    assert_eq!(
        p.decide(&home, &l, 0),
        Decision::Limit {
            rule: RuleRef::Rule(0),
            retry_after: 6
        }
    );
}

#[test]
fn deny_rule_after_limit_refunds_it() {
    let (p, l) = policy(
        "rules:\n  - name: all\n    limit: { rate: 1/min, burst: 1 }\n  - name: probes\n    match: { path: /.env }\n    action: deny\n",
    );
    assert_eq!(
        p.decide(&req("192.0.2.1", "GET", "/.env"), &l, 0),
        Decision::Deny {
            rule: RuleRef::Rule(1)
        }
    );
    // the denied probe took no token
    assert_eq!(
        p.decide(&req("192.0.2.1", "GET", "/"), &l, 0),
        Decision::Allow
    );
}

#[test]
fn count_mode_never_refuses_but_reports() {
    let (p, l) = policy(
        "rules:\n  - name: shadow\n    limit: { rate: 1/min, burst: 1 }\n    mode: count\n  - name: shadow-deny\n    match: { user_agent: curl }\n    action: deny\n    mode: count\n",
    );
    let r = req("192.0.2.1", "GET", "/");
    // the first request passes the limit but the count-mode deny rule would refuse it
    assert_eq!(
        p.decide(&r, &l, 0),
        Decision::Count {
            rule: RuleRef::Rule(1)
        }
    );
    // the second: the shadow limit is the first that would refuse
    assert_eq!(
        p.decide(&r, &l, 0),
        Decision::Count {
            rule: RuleRef::Rule(0)
        }
    );
    assert!(p.decide(&r, &l, 0).passes());
}

#[test]
fn count_rule_does_not_shadow_a_later_enforced_refusal() {
    let (p, l) = policy(
        "rules:\n  - name: shadow\n    action: deny\n    mode: count\n  - name: real\n    match: { path_prefix: /admin }\n    action: deny\n",
    );
    assert_eq!(
        p.decide(&req("192.0.2.1", "GET", "/admin/x"), &l, 0),
        Decision::Deny {
            rule: RuleRef::Rule(1)
        }
    );
    assert_eq!(
        p.decide(&req("192.0.2.1", "GET", "/"), &l, 0),
        Decision::Count {
            rule: RuleRef::Rule(0)
        }
    );
}

#[test]
fn matchers_combine() {
    let (p, l) = policy(
        "rules:\n  - name: r\n    match: { path_prefix: /api, methods: [post, PUT], host: \"*.example.com\", user_agent: \"(?i)bot\" }\n    action: deny\n",
    );
    assert!(
        p.uses_host,
        "a host matcher makes the proxy work out the host"
    );
    assert!(
        !policy("rules:\n  - name: r\n    match: { path_prefix: /a }\n    action: deny\n")
            .0
            .uses_host
    );
    let mut f = req("192.0.2.1", "POST", "/api/v1");
    f.host = "API.Example.com";
    f.user_agent = b"SomeBot/1.0";
    assert!(!p.decide(&f, &l, 0).passes());
    for change in 0..4 {
        let mut g = f;
        match change {
            0 => g.method = "GET",
            1 => g.path = "/ap",
            2 => g.host = "example.com",
            _ => g.user_agent = b"Mozilla/5.0",
        }
        assert_eq!(p.decide(&g, &l, 0), Decision::Allow, "change {change}");
    }
}

#[test]
fn keys_ip_path_header_and_v6_prefix() {
    let (p, l) = policy(
        "client_ip: { ipv6_prefix: 48 }\nrules:\n  - name: pp\n    match: { path_prefix: /p }\n    limit: { rate: 1/min, burst: 1, key: ip_path }\n  - name: hk\n    match: { path_prefix: /h }\n    limit: { rate: 1/min, burst: 1, key: \"header:X-Api-Key\" }\n  - name: v6\n    match: { path_prefix: /v }\n    limit: { rate: 1/min, burst: 1 }\n",
    );
    // ip_path: each path its own bucket
    assert!(p.decide(&req("192.0.2.1", "GET", "/p/1"), &l, 0).passes());
    assert!(p.decide(&req("192.0.2.1", "GET", "/p/2"), &l, 0).passes());
    assert!(!p.decide(&req("192.0.2.1", "GET", "/p/1"), &l, 0).passes());
    // header key: two addresses with one API key share a bucket
    let mut h = HeaderMap::new();
    h.insert("x-api-key", HeaderValue::from_static("k1"));
    let mut a = req("192.0.2.1", "GET", "/h");
    a.headers = Some(&h);
    let mut b = req("192.0.2.2", "GET", "/h");
    b.headers = Some(&h);
    assert!(p.decide(&a, &l, 0).passes());
    assert!(!p.decide(&b, &l, 0).passes());
    // IPv6 in one /48 share a bucket; another /48 does not
    assert!(p
        .decide(&req("2001:db8:1:1::1", "GET", "/v"), &l, 0)
        .passes());
    assert!(!p
        .decide(&req("2001:db8:1:2::9", "GET", "/v"), &l, 0)
        .passes());
    assert!(p.decide(&req("2001:db8:2::1", "GET", "/v"), &l, 0).passes());
}

#[test]
fn country_rules_and_country_keys() {
    let (p, l) = policy(
        "geo: { header: CF-IPCountry }\nrules:\n  - name: deny-some\n    match: { country: [KP, \"??\"] }\n    action: deny\n  - name: foreign\n    match: { country_not: [jp], path_prefix: /search }\n    limit: { rate: 1/h, burst: 1 }\n  - name: per-country\n    match: { path_prefix: /api }\n    limit: { rate: 1/h, burst: 2, key: country }\n",
    );
    assert!(p.uses_country);
    let with = |ip: &'static str, path: &'static str, c: &[u8; 2]| {
        let mut f = req(ip, "GET", path);
        f.country = Country(*c);
        f
    };
    assert_eq!(
        p.decide(&with("192.0.2.1", "/", b"KP"), &l, 0),
        Decision::Deny {
            rule: RuleRef::Rule(0)
        }
    );
    assert_eq!(
        p.decide(&with("192.0.2.1", "/", b"??"), &l, 0),
        Decision::Deny {
            rule: RuleRef::Rule(0)
        }
    );
    // foreign clients get one search, Japanese ones are not limited by that rule
    assert!(p
        .decide(&with("192.0.2.2", "/search", b"US"), &l, 0)
        .passes());
    assert!(!p
        .decide(&with("192.0.2.2", "/search", b"US"), &l, 0)
        .passes());
    for _ in 0..5 {
        assert!(p
            .decide(&with("192.0.2.3", "/search", b"JP"), &l, 0)
            .passes());
    }
    // keyed by country: two US addresses share a bucket, a JP one has its own
    assert!(p.decide(&with("192.0.2.4", "/api", b"US"), &l, 0).passes());
    assert!(p.decide(&with("192.0.2.5", "/api", b"US"), &l, 0).passes());
    assert!(!p.decide(&with("192.0.2.6", "/api", b"US"), &l, 0).passes());
    assert!(p.decide(&with("192.0.2.6", "/api", b"JP"), &l, 0).passes());
}

#[test]
fn retry_after_rounds_up() {
    assert_eq!(retry_after_secs(1), 1);
    assert_eq!(retry_after_secs(SEC), 1);
    assert_eq!(retry_after_secs(SEC + 1), 2);
    assert_eq!(retry_after_secs(0), 1);
}

#[test]
fn slots_survive_identical_rules_and_changed_quotas_inherit() {
    let reg = SlotRegistry::default();
    let q = |n| Quota::new(NonZeroU32::new(n).unwrap(), 1, NonZeroU32::new(5).unwrap()).unwrap();
    let a = LimitSpec {
        quota: q(10),
        key: KeyKind::Ip,
        scope: Scope::Local,
    };
    let b = LimitSpec {
        quota: q(20),
        key: KeyKind::Ip,
        scope: Scope::Local,
    };
    let (s1, p1) = reg.assign("r", &a);
    assert_eq!(p1, None);
    assert_eq!(reg.assign("r", &a), (s1, None));
    // nothing committed yet: a changed quota has nothing to inherit from
    assert_eq!(reg.assign("r", &b).1, None);
    let (p, _) = policy("rules:\n  - name: r\n    limit: { rate: 10/s, burst: 5 }\n");
    // the policy above was built with its own registry; commit a rule with slot s1 by hand
    let mut live = p;
    live.rules[0].slot = s1;
    reg.commit(&live);
    let (s2, pred) = reg.assign("r", &b);
    assert_ne!(s2, s1);
    assert_eq!(
        pred,
        Some(Predecessor {
            slot: s1,
            quota: q(10)
        })
    );
    assert_eq!(reg.assign("r", &a), (s1, None));
    // another key kind or name: no inheritance
    let c = LimitSpec {
        quota: q(20),
        key: KeyKind::IpPath,
        scope: Scope::Local,
    };
    assert_eq!(reg.assign("r", &c).1, None);
    assert_eq!(reg.assign("other", &b).1, None);
}

/// A plain token bucket, the textbook way: a level that refills with time up to the burst.
struct ReferenceBucket {
    level: u64, // tokens × emission, in nanoseconds
    last: u64,
}

impl ReferenceBucket {
    fn admit(&mut self, now: u64, emission: u64, burst: u64) -> bool {
        let cap = emission * burst;
        self.level = (self.level + (now - self.last)).min(cap);
        self.last = now;
        if self.level >= emission {
            self.level -= emission;
            true
        } else {
            false
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The GCRA limiter agrees with the reference bucket on every decision, for random rates,
    /// bursts and arrival gaps (several keys interleaved).
    #[test]
    fn limiter_matches_reference_model(
        count in 1u32..50,
        period in prop::sample::select(vec![1u32, 60, 3600]),
        burst in 1u32..20,
        arrivals in prop::collection::vec((0u64..3 * SEC, 0u8..3), 1..300),
    ) {
        let quota = Quota::new(NonZeroU32::new(count).unwrap(), period, NonZeroU32::new(burst).unwrap()).unwrap();
        let limiter = Limiter::new(1000);
        let mut models: Vec<ReferenceBucket> = (0..3)
            .map(|_| ReferenceBucket { level: quota.emission() * u64::from(burst), last: 0 })
            .collect();
        let mut now = 0;
        for (gap, key) in arrivals {
            // gaps are often zero: bursts at one instant
            now += if gap < SEC { 0 } else { gap / (u64::from(count) + 1) };
            let got = limiter.acquire(BucketKey::new(0, u128::from(key)), &quota, now).is_ok();
            let want = models[usize::from(key)].admit(now, quota.emission(), u64::from(burst));
            prop_assert_eq!(got, want, "at {} for key {}", now, key);
        }
    }
}

fn ban(net: &str, until: u64, mode: Mode) -> crate::defense::Ban {
    crate::defense::Ban {
        net: net.parse().unwrap(),
        since_unix: 0,
        until,
        forget_at: until + 3600 * SEC,
        strikes: 1,
        mode,
        source: crate::defense::Source::Manual,
        reason: String::new(),
    }
}

#[test]
fn bans_come_after_the_allow_list_and_before_everything_else() {
    use crate::defense::BanSet;
    let (p, l) = policy(
        "lists:\n  allow: { cidrs: [10.0.0.1] }\nrules:\n  - name: all\n    limit: { rate: 1/min, burst: 100 }\n",
    );
    let bans = BanSet::new(100, 64);
    for (net, mode) in [
        ("10.0.0.1/32", Mode::Enforce),
        ("10.0.0.2/32", Mode::Enforce),
        ("10.0.0.3/32", Mode::Count),
        ("2001:db8:1:2::/64", Mode::Enforce),
        ("192.0.2.0/24", Mode::Enforce),
    ] {
        bans.add(ban(net, 60 * SEC, mode), 0);
    }
    let live = Live {
        limiter: &l,
        bans: Some(&bans),
        under_attack: false,
        shared: None,
    };
    let judge = |ip: &str, now: u64| p.judge(&req(ip, "GET", "/"), &live, now).decision;
    let banned = Decision::Deny { rule: RuleRef::Ban };
    assert_eq!(
        judge("10.0.0.1", 0),
        Decision::AllowListed,
        "the allow list wins"
    );
    assert_eq!(judge("10.0.0.2", 0), banned);
    assert!(l.is_empty(), "a banned request takes no token");
    assert_eq!(judge("10.0.0.3", 0), Decision::Count { rule: RuleRef::Ban });
    // an IPv6 client is banned by its /64
    assert_eq!(judge("2001:db8:1:2::99", 0), banned);
    assert_eq!(judge("2001:db8:1:3::1", 0), Decision::Allow);
    // a CIDR ban by hand
    assert_eq!(judge("192.0.2.77", 0), banned);
    assert_eq!(judge("192.0.3.1", 0), Decision::Allow);
    // bans end at their time, with no sweep needed
    assert_eq!(judge("10.0.0.2", 60 * SEC), Decision::Allow);
    assert_eq!(judge("192.0.2.77", 60 * SEC), Decision::Allow);
    assert_eq!(bans.live(60 * SEC), 0);
    // history stays until forgotten, then the sweep drops it
    assert_eq!(bans.sweep(60 * SEC), 0, "remembered for repeat offenders");
    assert_eq!(bans.sweep(3661 * SEC), 5);
}

#[test]
fn the_profile_is_previewed_while_off_and_enforced_while_on() {
    let (p, l) = policy(
        "rules:\n  - name: wp\n    match: { path_prefix: /wp-admin }\n    action: deny\nunder_attack:\n  rules:\n    - name: search-closed\n      match: { path_prefix: /search }\n      action: deny\n    - name: tight\n      limit: { rate: 1/h, burst: 2 }\n",
    );
    assert_eq!(p.profile_from, 1);
    let judge = |path: &str, on: bool| {
        let live = Live {
            limiter: &l,
            bans: None,
            under_attack: on,
            shared: None,
        };
        p.judge(&req("192.0.2.1", "GET", path), &live, 0)
    };
    let search = RuleRef::Rule(1);
    let tight = RuleRef::Rule(2);
    // off: passes, and the preview names the first profile rule that would refuse
    assert_eq!(
        judge("/search", false),
        Verdict {
            decision: Decision::Allow,
            preview: Some(search),
            pending: None,
        }
    );
    // the profile's buckets are kept warm while off: the tight limit admits its burst of 2,
    // then previews a refusal
    assert_eq!(judge("/", false).preview, None);
    assert_eq!(judge("/", false).preview, None);
    assert_eq!(judge("/", false).preview, Some(tight));
    // a normal rule's refusal is the answer, not a preview
    assert_eq!(
        judge("/wp-admin", false),
        Verdict {
            decision: Decision::Deny {
                rule: RuleRef::Rule(0)
            },
            preview: None,
            pending: None,
        }
    );
    // on: enforced, from the next request
    assert_eq!(
        judge("/search", true).decision,
        Decision::Deny { rule: search }
    );
    assert!(judge("/", true).decision.is_refused_by_limit());
    // decide() is judge() with the switch off and no bans
    assert_eq!(
        p.decide(&req("192.0.2.9", "GET", "/search"), &l, 0),
        Decision::Allow
    );
}
