//! How one request is judged, step by step: what `sekisho explain` prints and
//! `GET /admin/explain` answers.
//!
//! The request's facts are built by the proxy's own code ([`resolve`], [`country_of`],
//! [`facts_of`], [`normalize_path`]), then the lists, the bans and the rules are walked in the
//! order [`Policy::judge`] walks them, each matched or not and why not
//! ([`crate::engine::Matcher::explain`]), each limit with its key and what its bucket holds.
//! The decision the walk implies is checked against the engine's own `judge`, run on a fresh
//! [`Limiter`] (full buckets) so that nothing live is touched.
//!
//! Explaining never takes a token nor changes any state: buckets are read with
//! [`Limiter::peek_after`], bans with [`BanSet::check`]. Offline (no proxy) the buckets are
//! full, bans are not known and the under-attack switch is off. This module decides nothing
//! for the proxy; the answer is JSON, which the command lays out as text.

use std::net::{IpAddr, Ipv4Addr};

use http::{HeaderName, HeaderValue};
use ipnet::IpNet;
use pingora::http::RequestHeader;
use serde_json::{json, Value};

use crate::config::Config;
use crate::defense::bans::BanSet;
use crate::engine::{
    normalize_path, retry_after_secs, Bans, Country, Decision, Facts, KeyKind, LimitSpec, Live,
    Mode, Policy, RuleKind, RuleRef,
};
use crate::limiter::{Limiter, Nanos};
use crate::proxy::{country_of, facts_of, resolve};

/// The client address when none is given: TEST-NET-1 (RFC 5737), on no list one would write.
pub const DEFAULT_PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

/// One request to explain, as given on the command line or in the query.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method, e.g. `GET`.
    pub method: String,
    /// A path (`/login?x=1`) or an absolute URL (`https://shop.example/login`).
    pub url: String,
    /// The socket peer ([`DEFAULT_PEER`] unless given).
    pub peer: IpAddr,
    /// Headers, each `Name: value`, in order.
    pub headers: Vec<String>,
    /// The client's country, instead of the config's lookup.
    pub country: Option<String>,
    /// The client's TLS fingerprint (JA4); none: plaintext.
    pub ja4: Option<String>,
}

/// The running proxy's state, read (never changed) by [`explain`].
#[derive(Clone, Copy)]
pub struct LiveState<'a> {
    /// Its buckets.
    pub limiter: &'a Limiter,
    /// Its bans.
    pub bans: &'a BanSet,
    /// Whether the under-attack profile is enforced.
    pub under_attack: bool,
    /// Its decision clock.
    pub now: Nanos,
}

/// The explanation of `req` under `config` (with `live`: the proxy's, and the state of its
/// buckets and bans). `Err`: what is wrong with the request as given.
pub fn explain(
    config: &Config,
    req: &Request,
    live: Option<&LiveState<'_>>,
) -> Result<Value, String> {
    let head = build(req)?;
    let path = normalize_path(head.uri.path());
    let client = resolve(req.peer, &head.headers, &config.client_ip);
    let (country, country_source) = match &req.country {
        Some(c) => (
            Country::parse(c.trim().as_bytes()).ok_or_else(|| {
                format!("country {c:?}: give an ISO 3166 code like JP, or ?? for unknown")
            })?,
            "--country".to_string(),
        ),
        None => {
            let c = country_of(
                &config.geo,
                &config.client_ip,
                client.peer,
                client.ip,
                &head.headers,
            );
            let header = config
                .geo
                .header
                .as_ref()
                .filter(|_| config.client_ip.trusted_proxies.contains(client.peer))
                .filter(|n| {
                    head.headers
                        .get(*n)
                        .and_then(|v| Country::parse(v.as_bytes().trim_ascii()))
                        .is_some()
                });
            let source = match (header, &config.geo.database) {
                (Some(name), _) => format!("header {name} from a trusted proxy"),
                (None, Some(_)) => "geo.database".to_string(),
                (None, None) => "not known: no geo.database, no trusted geo.header".to_string(),
            };
            (c, source)
        }
    };
    let ja4 = req.ja4.as_deref().unwrap_or("").trim();
    // The host always (a rule that matches on it makes the proxy work it out too).
    let facts = facts_of(&head, &path, client.ip, country, true, ja4);
    let policy = &config.policy;
    let under_attack = live.is_some_and(|l| l.under_attack);
    let now = live.map_or(0, |l| l.now);

    let fresh = Limiter::new(1024);
    let shown = walk(
        policy,
        &facts,
        live.map_or(&fresh, |l| l.limiter),
        live,
        now,
    );
    let engine = {
        let limiter = Limiter::new(1024);
        let bans = live.map(|l| l.bans as &dyn Bans);
        let engine = policy.judge(
            &facts,
            &Live {
                limiter: &limiter,
                bans,
                under_attack,
                shared: None,
            },
            now,
        );
        // the walk on full buckets, to compare with the engine's
        let full = walk(policy, &facts, &Limiter::new(1024), live, now);
        let agrees = full.decision == engine.decision && full.preview == engine.preview;
        (engine, agrees)
    };

    let via = if !client.peer_trusted {
        "the socket peer".to_string()
    } else if client.ip != client.peer {
        format!(
            "from {}: the peer {} is a trusted proxy",
            config.client_ip.header, client.peer
        )
    } else {
        format!(
            "the peer, a trusted proxy whose {} names no other client",
            config.client_ip.header
        )
    };
    let mut v = json!({
        "request": {
            "method": facts.method,
            "url": req.url,
            "host": facts.host,
            "path": facts.path,
            "user_agent": String::from_utf8_lossy(facts.user_agent),
            "headers": req.headers,
            "ja4": facts.ja4,
        },
        "client": {
            "peer": client.peer.to_string(),
            "ip": client.ip.to_string(),
            "via": via,
            "country": country.as_str(),
            "country_source": country_source,
        },
        "under_attack": under_attack,
        "steps": shown.steps,
        "decision": decision_json(policy, shown.decision),
        "preview": shown.preview.map(|r| policy.name_of(r)),
        "engine_decision": decision_json(policy, engine.0.decision),
        "agrees": engine.1,
        "live": live.is_some(),
    });
    if live.is_some() {
        v["note"] = json!("the decision is the one a request would get now, from the buckets' tokens; engine_decision is the engine's with full buckets");
    }
    Ok(v)
}

/// The request head `req` describes, or what is wrong with it.
fn build(req: &Request) -> Result<RequestHeader, String> {
    let method = http::Method::from_bytes(req.method.as_bytes())
        .map_err(|_| format!("method {:?} is not an HTTP method", req.method))?;
    let url = req.url.trim();
    let absolute = url.starts_with("http://") || url.starts_with("https://");
    if !absolute && !url.starts_with('/') {
        return Err(format!(
            "URL {url:?}: give a path (/login?x=1) or an absolute http(s) URL (https://shop.example/login)"
        ));
    }
    let uri: http::Uri = url.parse().map_err(|e| format!("URL {url:?}: {e}"))?;
    if absolute && uri.authority().is_none() {
        return Err(format!("URL {url:?}: no host after the scheme"));
    }
    let mut head = RequestHeader::build(method, url.as_bytes(), None)
        .map_err(|e| format!("URL {url:?}: {e}"))?;
    for line in &req.headers {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("header {line:?}: write it as 'Name: value'"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("header {line:?}: {:?} is not a header name", name.trim()))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("header {line:?}: the value has bytes a header cannot carry"))?;
        head.append_header(name, value)
            .map_err(|e| format!("header {line:?}: {e}"))?;
    }
    Ok(head)
}

/// What a walk found.
struct Walk {
    steps: Vec<Value>,
    decision: Decision,
    preview: Option<RuleRef>,
}

/// The lists, the bans and the rules, in [`Policy::judge`]'s order, each as one JSON step; the
/// decision is the one the steps imply with `limiter`'s buckets as they are (read, not taken).
fn walk(
    policy: &Policy,
    facts: &Facts<'_>,
    limiter: &Limiter,
    live: Option<&LiveState<'_>>,
    now: Nanos,
) -> Walk {
    let mut steps = Vec::new();
    let mut decided = None;
    let mut counted = None;
    let mut preview = None;

    let allow = policy.allow.contains(facts.ip);
    steps.push(json!({
        "check": "allow-list",
        "label": "allow-list",
        "matched": allow,
        "reached": true,
        "text": if allow { "✓ on it: passes without limits" } else { "✗ not on it" },
    }));
    if allow {
        decided = Some(Decision::AllowListed);
    }

    let reached = decided.is_none();
    match live {
        None => steps.push(json!({
            "check": "bans",
            "label": "bans",
            "known": false,
            "reached": reached,
            "text": "? known only to the running proxy (--admin)",
        })),
        Some(l) => {
            let mode = l.bans.check(facts.ip, l.now);
            let mut step = json!({
                "check": "bans",
                "label": "bans",
                "known": true,
                "matched": mode.is_some(),
                "reached": reached,
                "text": "✗ not banned",
            });
            if let Some(mode) = mode {
                // the ban the check found: the strictest covering the client, the longest first
                let ban = l
                    .bans
                    .live_bans(l.now)
                    .into_iter()
                    .filter(|b| b.net.contains(&facts.ip))
                    .max_by_key(|b| (b.mode == Mode::Enforce, b.until));
                let remaining = ban.as_ref().map_or(0, |b| b.until.saturating_sub(l.now));
                let secs = remaining.div_ceil(1_000_000_000);
                step["mode"] = json!(mode.as_str());
                step["remaining_s"] = json!(secs);
                if let Some(b) = &ban {
                    step["net"] = json!(b.net.to_string());
                    step["source"] = json!(b.source.name());
                    step["reason"] = json!(b.reason);
                    step["strikes"] = json!(b.strikes);
                }
                let net = ban
                    .as_ref()
                    .map_or(String::new(), |b| format!(" {}", b.net));
                step["text"] = json!(format!(
                    "✓ banned{net} ({}), {} more{}",
                    mode.as_str(),
                    duration(secs),
                    ban.as_ref()
                        .map_or(String::new(), |b| format!(": {}", b.reason)),
                ));
                if reached {
                    match mode {
                        Mode::Enforce => decided = Some(Decision::Deny { rule: RuleRef::Ban }),
                        Mode::Count => counted = Some(RuleRef::Ban),
                    }
                }
            }
            steps.push(step);
        }
    }

    let reached = decided.is_none();
    let deny = policy.deny.contains(facts.ip);
    steps.push(json!({
        "check": "deny-list",
        "label": format!("deny-list ({})", policy.deny_mode.as_str()),
        "matched": deny,
        "mode": policy.deny_mode.as_str(),
        "reached": reached,
        "text": match (deny, policy.deny_mode) {
            (false, _) => "✗ not on it",
            (true, Mode::Enforce) => "✓ on it: refused",
            (true, Mode::Count) => "✓ on it: counted, not refused (mode count)",
        },
    }));
    if deny && reached {
        match policy.deny_mode {
            Mode::Enforce => {
                decided = Some(Decision::Deny {
                    rule: RuleRef::DenyList,
                })
            }
            Mode::Count => {
                counted.get_or_insert(RuleRef::DenyList);
            }
        }
    }

    let under_attack = live.is_some_and(|l| l.under_attack);
    for (i, rule) in policy.rules.iter().enumerate() {
        let profile = i >= policy.profile_from;
        let shadow = profile && !under_attack;
        // judge stops at an enforced refusal, and at the profile once one would refuse
        let reached = decided.is_none() && !(shadow && preview.is_some());
        let why = rule.matcher.explain(facts);
        let this = RuleRef::Rule(u16::try_from(i).unwrap_or(u16::MAX));
        let mut step = json!({
            "check": "rule",
            "label": format!("{} {}", if profile { "profile" } else { "rule" }, rule.name),
            "name": rule.name,
            "index": i,
            "profile": profile,
            "enforced": !shadow && rule.mode == Mode::Enforce,
            "mode": rule.mode.as_str(),
            "action": match rule.kind { RuleKind::Deny => "deny", RuleKind::Limit(_) => "limit" },
            "matched": why.is_ok(),
            "reached": reached,
        });
        let mut text = match &why {
            Ok(()) => "✓ matched".to_string(),
            Err(w) => {
                step["condition"] = json!(w.field());
                step["why"] = json!(w.to_string());
                format!("✗ {w}")
            }
        };
        if why.is_ok() {
            let refusal = match policy.bucket_of(rule, facts, limiter) {
                None => {
                    text.push_str(": deny");
                    Some(Decision::Deny { rule: this })
                }
                Some((bucket, spec)) => {
                    let level =
                        limiter.peek_after(bucket, &spec.quota, now, rule.predecessor.as_ref());
                    let key = key_text(spec, facts, policy.ipv6_prefix);
                    step["limit"] = json!({
                        "rate": spec.quota.rate(),
                        "burst": spec.quota.burst().get(),
                        "key": key,
                        "tokens_left": level.tokens,
                        "next_token_in_ms": level.next_token_in / 1_000_000,
                        "tracked": level.tracked,
                    });
                    let next = if level.next_token_in == 0 {
                        String::new()
                    } else {
                        format!(
                            ", the next in {}",
                            duration(level.next_token_in.div_ceil(1_000_000_000))
                        )
                    };
                    text.push_str(&format!(
                        ": limit {}, key {key}; {} of {} tokens left{next}",
                        spec.quota,
                        level.tokens,
                        spec.quota.burst()
                    ));
                    (level.tokens == 0).then(|| Decision::Limit {
                        rule: this,
                        retry_after: retry_after_secs(level.next_token_in),
                    })
                }
            };
            let outcome = match (&refusal, rule.mode) {
                (None, _) => "passes",
                (Some(_), _) if shadow => "would refuse (profile, the switch is off)",
                (Some(_), Mode::Enforce) => "refuses",
                (Some(_), Mode::Count) => "would refuse (mode count)",
            };
            step["outcome"] = json!(outcome);
            text.push_str(&format!(" → {outcome}"));
            if let (Some(refusal), true) = (refusal, reached) {
                match rule.mode {
                    _ if shadow => preview = Some(this),
                    Mode::Enforce => decided = Some(refusal),
                    Mode::Count => {
                        counted.get_or_insert(this);
                    }
                }
            }
        }
        if profile {
            text.push_str(if shadow {
                "  [profile: shadow, the switch is off]"
            } else {
                "  [profile: enforced, the switch is on]"
            });
        } else if rule.mode == Mode::Count {
            text.push_str("  [mode count]");
        }
        if !reached {
            text.push_str("  (not reached)");
        }
        step["text"] = json!(text);
        steps.push(step);
    }
    let decision = decided.unwrap_or(match counted {
        Some(rule) => Decision::Count { rule },
        None => Decision::Allow,
    });
    Walk {
        steps,
        decision,
        // judge previews only a request it passes
        preview: preview.filter(|_| decided.is_none()),
    }
}

/// The bucket key of a limit, for people: `ip 192.0.2.1`, `header:x-api-key=K`, `country:JP`.
fn key_text(spec: &LimitSpec, facts: &Facts<'_>, v6_prefix: u8) -> String {
    let ip = match facts.ip {
        IpAddr::V6(_) if v6_prefix < 128 => IpNet::new(facts.ip, v6_prefix)
            .map_or_else(|_| facts.ip.to_string(), |n| n.trunc().to_string()),
        ip => ip.to_string(),
    };
    match &spec.key {
        KeyKind::Ip => format!("ip {ip}"),
        KeyKind::IpPath => format!("ip+path {ip} {}", facts.path),
        KeyKind::Header(name) => match facts.headers.and_then(|h| h.get(name)) {
            Some(v) => format!("header:{name}={}", String::from_utf8_lossy(v.as_bytes())),
            None => format!("header:{name} (absent, so ip {ip})"),
        },
        KeyKind::Country => format!("country:{}", facts.country.as_str()),
        KeyKind::Ja4 if facts.ja4.is_empty() => format!("ja4 (none: plaintext, so ip {ip})"),
        KeyKind::Ja4 => format!("ja4:{}", facts.ja4),
    }
}

/// A decision as JSON, with its line for people.
fn decision_json(policy: &Policy, d: Decision) -> Value {
    let (rule, retry_after) = match d {
        Decision::Allow | Decision::AllowListed => (None, None),
        Decision::Count { rule } | Decision::Deny { rule } => (Some(rule), None),
        Decision::Limit { rule, retry_after } => (Some(rule), Some(retry_after)),
    };
    let name = rule.map(|r| policy.name_of(r));
    let text = match d {
        Decision::Allow => "allow".to_string(),
        Decision::AllowListed => "allow (allow-listed: no limits)".to_string(),
        Decision::Count { rule } => {
            format!(
                "allow, counted: {} would have refused it",
                policy.name_of(rule)
            )
        }
        Decision::Deny { rule } => format!(
            "deny by {} ({})",
            policy.name_of(rule),
            policy.response_of(rule).status
        ),
        Decision::Limit { rule, retry_after } => format!(
            "limit by {} (retry after {retry_after} s)",
            policy.name_of(rule)
        ),
    };
    json!({
        "action": d.action(),
        "passes": d.passes(),
        "rule": name,
        "status": (!d.passes()).then(|| rule.map(|r| policy.response_of(r).status)).flatten(),
        "retry_after_s": retry_after,
        "text": text,
    })
}

/// `75` → `1 min 15 s`; `3600` → `1 h`.
fn duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let parts: Vec<String> = [(h, "h"), (m, "min"), (s, "s")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n} {u}"))
        .collect();
    if parts.is_empty() {
        "0 s".to_string()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::SlotRegistry;
    use proptest::prelude::*;

    const CONFIG: &str = r#"
upstreams: ["127.0.0.1:8000"]
client_ip: { trusted_proxies: ["10.0.0.0/8"] }
geo: { header: CF-IPCountry }
lists:
  allow: { cidrs: ["192.0.2.10/32"] }
  deny: { cidrs: ["198.51.100.0/24"] }
rules:
  - name: login
    match: { path_prefix: /login, methods: [POST] }
    limit: { rate: 1/min, burst: 2, key: ip }
    response: { status: 429, retry_after: true }
  - name: foreign
    match: { country: [CN, RU] }
    action: deny
  - name: api
    match: { path_prefix: /api }
    limit: { rate: 1/min, burst: 2, key: "header:x-api-key" }
  - name: per-path
    match: { path_regex: "x$" }
    limit: { rate: 1/min, burst: 3, key: ip_path }
    mode: count
  - name: bots
    match: { user_agent: "(?i)bot" }
    limit: { rate: 1/h, burst: 1, key: country }
under_attack:
  rules:
    - name: attack-all
      limit: { rate: 1/min, burst: 2, key: ip }
    - name: attack-search
      match: { path_prefix: /search }
      action: deny
"#;

    fn config() -> Config {
        crate::config::parse(
            CONFIG,
            std::path::Path::new("t.yaml"),
            &SlotRegistry::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    const PATHS: [&str; 5] = ["/", "/login", "/api/x", "/search", "/a/x"];
    const PEERS: [&str; 4] = ["192.0.2.1", "192.0.2.10", "198.51.100.7", "10.0.0.1"];

    fn request(method: &str, path: &str, peer: &str, extra: &[String]) -> Request {
        Request {
            method: method.to_string(),
            url: path.to_string(),
            peer: peer.parse().unwrap_or(DEFAULT_PEER),
            headers: extra.to_vec(),
            country: None,
            ja4: None,
        }
    }

    /// The decision a real request gets from the engine on the live state.
    fn judge_for_real(c: &Config, req: &Request, live: &LiveState<'_>) -> Decision {
        let head = build(req).expect("a good request");
        let path = normalize_path(head.uri.path());
        let client = resolve(req.peer, &head.headers, &c.client_ip);
        let country = country_of(&c.geo, &c.client_ip, client.peer, client.ip, &head.headers);
        let facts = facts_of(&head, &path, client.ip, country, c.policy.uses_host, "");
        let l = Live {
            limiter: live.limiter,
            bans: Some(live.bans),
            under_attack: live.under_attack,
            shared: None,
        };
        c.policy.judge(&facts, &l, live.now).decision
    }

    fn engine_decision(c: &Config, d: Decision) -> Value {
        decision_json(&c.policy, d)
    }

    proptest! {
        /// Over any sequence of real requests, the explanation of the next one names the
        /// decision it then gets, agrees with the engine on full buckets, and changes nothing.
        #[test]
        fn explain_tells_what_judge_then_does(
            under_attack in any::<bool>(),
            reqs in proptest::collection::vec(
                (0..2usize, 0..PATHS.len(), 0..PEERS.len(), 0..4usize, 0..3usize, 0u64..40),
                1..25,
            ),
        ) {
            let c = config();
            let limiter = Limiter::new(1000);
            let bans = BanSet::new(100, 64);
            let mut now = 1_000_000_000;
            for (method, path, peer, hdr, ua, gap) in reqs {
                now += gap * 1_000_000_000;
                let mut extra = Vec::new();
                match hdr {
                    1 => extra.push("X-Api-Key: k1".to_string()),
                    2 => extra.push("X-Forwarded-For: 203.0.113.9".to_string()),
                    3 => extra.push("CF-IPCountry: cn".to_string()),
                    _ => {}
                }
                if ua > 0 {
                    extra.push(format!("User-Agent: {}", ["", "curl/8", "Bingbot"][ua]));
                }
                let req = request(["GET", "POST"][method], PATHS[path], PEERS[peer], &extra);
                let live = LiveState { limiter: &limiter, bans: &bans, under_attack, now };
                let v = explain(&c, &req, Some(&live)).expect("explained");
                prop_assert_eq!(&v["agrees"], &Value::Bool(true), "{:#}", v);
                let again = explain(&c, &req, Some(&live)).expect("explained");
                prop_assert_eq!(&v, &again, "explaining changed the state");
                let real = judge_for_real(&c, &req, &live);
                prop_assert_eq!(&v["decision"], &engine_decision(&c, real), "{:#}", v);
            }
        }
    }

    #[test]
    fn offline_names_the_failing_condition_and_the_decision() {
        let c = config();
        let mut req = request("GET", "https://shop.example/api/x?y=1", "192.0.2.1", &[]);
        req.country = Some("jp".into());
        req.headers = vec!["X-Api-Key: k1".into()];
        let v = explain(&c, &req, None).expect("explained");
        assert_eq!(v["request"]["host"], "shop.example");
        assert_eq!(v["request"]["path"], "/api/x");
        let steps = v["steps"].as_array().expect("steps");
        let rule = |name: &str| {
            steps
                .iter()
                .find(|s| s["name"] == name)
                .unwrap_or_else(|| panic!("no step {name}"))
        };
        assert_eq!(rule("login")["why"], "methods [POST] does not include GET");
        assert_eq!(
            rule("foreign")["why"],
            "country not in [CN, RU] (client is JP)"
        );
        assert_eq!(rule("api")["limit"]["key"], "header:x-api-key=k1");
        assert_eq!(rule("api")["limit"]["tokens_left"], 2);
        assert_eq!(rule("attack-all")["enforced"], false);
        assert_eq!(steps[1]["known"], false);
        assert_eq!(v["decision"]["text"], "allow");
        assert_eq!(
            v["preview"],
            Value::Null,
            "full buckets: the profile passes it"
        );
        assert_eq!(v["agrees"], true);
    }

    #[test]
    fn live_tokens_bans_and_keys() {
        let c = config();
        let limiter = Limiter::new(1000);
        let bans = BanSet::new(100, 64);
        let now = 5_000_000_000;
        let live = LiveState {
            limiter: &limiter,
            bans: &bans,
            under_attack: false,
            now,
        };
        let login = request(
            "POST",
            "/login",
            "10.0.0.1",
            &["X-Forwarded-For: 203.0.113.9".into()],
        );
        for left in [1, 0] {
            assert!(judge_for_real(&c, &login, &live).passes());
            let v = explain(&c, &login, Some(&live)).expect("explained");
            assert_eq!(v["client"]["ip"], "203.0.113.9");
            assert_eq!(v["steps"][3]["limit"]["key"], "ip 203.0.113.9");
            assert_eq!(v["steps"][3]["limit"]["tokens_left"], left);
        }
        let v = explain(&c, &login, Some(&live)).expect("explained");
        assert_eq!(v["decision"]["text"], "limit by login (retry after 60 s)");
        assert_eq!(v["engine_decision"]["text"], "allow");
        assert_eq!(
            judge_for_real(&c, &login, &live),
            Decision::Limit {
                rule: RuleRef::Rule(0),
                retry_after: 60
            }
        );
        // a ban by hand, shown with what is left of it
        let ban = crate::defense::bans::Ban {
            net: "203.0.113.0/24".parse().expect("net"),
            since_unix: 0,
            until: now + 3600 * 1_000_000_000,
            forget_at: now + 7200 * 1_000_000_000,
            strikes: 1,
            mode: Mode::Enforce,
            source: crate::defense::bans::Source::Manual,
            reason: "by hand".into(),
        };
        bans.add(ban, now);
        let v = explain(&c, &login, Some(&live)).expect("explained");
        assert_eq!(v["steps"][1]["matched"], true);
        assert_eq!(v["steps"][1]["remaining_s"], 3600);
        assert_eq!(
            v["steps"][1]["text"],
            "✓ banned 203.0.113.0/24 (enforce), 1 h more: by hand"
        );
        assert_eq!(v["decision"]["text"], "deny by ban (403)");
        assert_eq!(v["agrees"], true);
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let c = config();
        let err = |r: Request| explain(&c, &r, None).expect_err("refused");
        assert!(err(request("GET", "login", "192.0.2.1", &[]))
            .starts_with("URL \"login\": give a path"));
        assert!(err(request("GE T", "/", "192.0.2.1", &[])).contains("is not an HTTP method"));
        assert_eq!(
            err(request(
                "GET",
                "/",
                "192.0.2.1",
                &["Host example.com".into()]
            )),
            "header \"Host example.com\": write it as 'Name: value'"
        );
        let mut r = request("GET", "/", "192.0.2.1", &[]);
        r.country = Some("Japan".into());
        assert!(err(r).starts_with("country \"Japan\""));
        assert_eq!(duration(75), "1 min 15 s");
        assert_eq!(duration(0), "0 s");
    }
}
