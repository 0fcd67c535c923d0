//! `rules:` and `under_attack.rules` (matchers, limits, responses), and `max_tracked_keys`, the
//! bound on the limiter state those rules keep.

use std::collections::HashMap;

use bytes::Bytes;
use http::HeaderName;
use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use super::{codes, ConfigError, RawConfig, RawMode, Validator, S};
use crate::engine::{
    HostMatch, KeyKind, LimitSpec, Matcher, Mode, Response, Rule, RuleKind, Scope, SlotRegistry,
};

/// Default `max_tracked_keys`: measured with `examples/limiter_memory.rs`, a key costs ~80 bytes
/// once the allocator has returned the tables outgrown while filling, ~107 bytes right after;
/// 1.5M keys keep the limiter at 120-160 MB, under the 200 MB budget.
pub const DEFAULT_MAX_TRACKED_KEYS: usize = 1_500_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: S<String>,
    #[serde(rename = "match")]
    pub matcher: Option<RawMatch>,
    pub action: Option<S<Action>>,
    pub limit: Option<S<RawLimit>>,
    pub response: Option<RawResponse>,
    pub mode: Option<RawMode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub path: Option<S<String>>,
    pub path_prefix: Option<S<String>>,
    pub path_regex: Option<S<String>>,
    #[serde(default)]
    pub methods: Vec<S<String>>,
    pub host: Option<S<String>>,
    pub user_agent: Option<S<String>>,
    #[serde(default)]
    pub country: Vec<S<String>>,
    #[serde(default)]
    pub country_not: Vec<S<String>>,
    #[serde(default)]
    pub ja4: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    pub rate: S<String>,
    pub burst: Option<S<u32>>,
    pub key: Option<S<String>>,
    pub scope: Option<S<String>>,
    pub consistency: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResponse {
    pub status: Option<S<u16>>,
    pub body: Option<S<String>>,
    pub retry_after: Option<S<bool>>,
}

/// `action:` of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Refuse every matching request.
    Deny,
}

/// The rules of both lists, compiled, and what they need from the request.
pub(super) struct RuleSet {
    pub rules: Vec<Rule>,
    /// `rules[profile_from..]` are the `under_attack` profile.
    pub profile_from: usize,
    pub uses_country: bool,
    pub uses_host: bool,
}

impl Validator<'_> {
    /// `max_tracked_keys:`.
    pub(super) fn max_tracked_keys(&mut self, raw: &RawConfig) -> usize {
        match &raw.max_tracked_keys {
            Some(m) if m.value == 0 => {
                self.err(m, "max_tracked_keys", "must be at least 1");
                DEFAULT_MAX_TRACKED_KEYS
            }
            Some(m) => m.value,
            None => DEFAULT_MAX_TRACKED_KEYS,
        }
    }

    /// `rules:` then `under_attack.rules`; a country rule without a country source is an error.
    pub(super) fn rule_set(&mut self, raw: &RawConfig, slots: &SlotRegistry) -> RuleSet {
        let mut names = std::collections::HashMap::new();
        let mut rules = self.rules(&raw.rules, slots, "rules", &mut names);
        let profile_from = rules.len();
        let under_attack = raw.under_attack.as_ref();
        rules.extend(self.rules(
            under_attack.map_or(&[][..], |u| &u.rules[..]),
            slots,
            "under_attack.rules",
            &mut names,
        ));
        let uses_country = rules.iter().any(|r| {
            r.matcher.uses_country()
                || matches!(&r.kind, RuleKind::Limit(l) if l.key == KeyKind::Country)
        });
        let uses_host = rules.iter().any(|r| r.matcher.uses_host());
        if let Some(u) = under_attack.filter(|u| u.auto.is_some()) {
            self.auto_denies_countries(&u.rules, &rules[profile_from..]);
        }
        // (a geo source given but broken has its own error already)
        let geo_given = raw
            .geo
            .as_ref()
            .is_some_and(|g| g.database.is_some() || g.header.is_some());
        if uses_country && !geo_given {
            // the first country matcher, else the first limit keyed by country, of both lists
            let all = || {
                let profile = under_attack.map_or(&[][..], |u| &u.rules[..]);
                (raw.rules
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (format!("rules[{i}]"), r)))
                .chain(
                    (profile.iter().enumerate())
                        .map(|(i, r)| (format!("under_attack.rules[{i}]"), r)),
                )
            };
            let matcher = all().find_map(|(at, r)| {
                let m = r.matcher.as_ref()?;
                m.country
                    .first()
                    .map(|c| (format!("{at}.match.country"), c))
                    .or_else(|| {
                        (m.country_not.first()).map(|c| (format!("{at}.match.country_not"), c))
                    })
            });
            let limit = || {
                all().find_map(|(at, r)| {
                    let k = r.limit.as_ref()?.value.key.as_ref()?;
                    (k.value.trim() == "country").then(|| (format!("{at}.limit.key"), k))
                })
            };
            match (matcher, limit()) {
                (Some((field, c)), _) => {
                    self.err(c, field, "country rules need geo.database or geo.header")
                }
                (None, Some((field, k))) => self.err(
                    k,
                    field,
                    "a limit keyed by country needs geo.database or geo.header",
                ),
                (None, None) => {}
            }
        }
        RuleSet {
            rules,
            profile_from,
            uses_country,
            uses_host,
        }
    }

    /// Rules under `field` (`rules` or `under_attack.rules`); names are unique across both
    /// lists (`seen`: name → where it was first given).
    fn rules(
        &mut self,
        raw: &[RawRule],
        slots: &SlotRegistry,
        field: &str,
        seen: &mut HashMap<String, String>,
    ) -> Vec<Rule> {
        let mut rules = Vec::with_capacity(raw.len());
        if raw.len() + seen.len() > usize::from(u16::MAX) {
            self.errors.push(ConfigError {
                file: self.file.clone(),
                line: 0,
                column: 0,
                field: field.into(),
                message: format!("at most {} rules in all", u16::MAX),
            });
            return rules;
        }
        for (i, r) in raw.iter().enumerate() {
            let at = format!("{field}[{i}]");
            let name = r.name.value.trim();
            if name.is_empty() {
                self.err(&r.name, format!("{at}.name"), "a rule needs a name");
            } else if let Some(prev) = seen.insert(name.to_string(), at.clone()) {
                self.err(
                    &r.name,
                    format!("{at}.name"),
                    format!("duplicate rule name {name:?} (also {prev})"),
                );
            }
            let matcher = self.matcher(r.matcher.as_ref(), &at);
            let kind = match (&r.action, &r.limit) {
                (Some(_), None) => RuleKind::Deny,
                (None, Some(l)) => match self.limit(l, &at) {
                    Some(spec) => RuleKind::Limit(spec),
                    None => RuleKind::Deny,
                },
                (Some(a), Some(_)) => {
                    self.err(
                        a,
                        format!("{at}.action"),
                        "give either `action: deny` or `limit:`, not both",
                    );
                    RuleKind::Deny
                }
                (None, None) => {
                    self.err(&r.name, &at, "a rule needs `action: deny` or a `limit:`");
                    RuleKind::Deny
                }
            };
            let response = self.response(r, &at, matches!(kind, RuleKind::Limit(_)));
            let mode: Mode = r.mode.unwrap_or_default().into();
            if mode == Mode::Enforce {
                self.refuses_everyone(r, &at, &matcher, &kind, field != "rules");
            }
            let (slot, predecessor) = match &kind {
                RuleKind::Limit(spec) => slots.assign(name, spec),
                RuleKind::Deny => (0, None),
            };
            rules.push(Rule {
                name: name.to_string(),
                matcher,
                kind,
                response,
                mode,
                slot,
                predecessor,
            });
        }
        rules
    }

    /// Warns of an enforced rule that would refuse everyone: a deny rule that matches every
    /// request, or a limit that matches every request and either puts a whole country in one
    /// bucket (`key: country`) or refuses a page load (burst under [`PAGE_LOAD`]). A per-IP
    /// limit on every request is normal and not warned of. `profile`: the rule is in
    /// `under_attack.rules`.
    fn refuses_everyone(
        &mut self,
        r: &RawRule,
        at: &str,
        m: &Matcher,
        kind: &RuleKind,
        profile: bool,
    ) {
        if !matches_everything(m) {
            return;
        }
        let when = if profile {
            "while the under-attack profile is on, "
        } else {
            ""
        };
        match (kind, &r.action, &r.limit) {
            (RuleKind::Deny, Some(a), None) => self.warn(
                a,
                format!("{at}.action"),
                format!("matches every request: {when}every request will be refused"),
            ),
            (RuleKind::Limit(spec), None, Some(l)) => {
                if spec.key == KeyKind::Country {
                    let at_key = l.value.key.as_ref();
                    let per = &spec.quota;
                    let message = format!("matches every request and keys by country: {when}all clients of one country share one bucket ({per}), so one busy country or one attacker refuses everyone there");
                    match at_key {
                        Some(k) => self.warn(k, format!("{at}.limit.key"), message),
                        None => self.warn(l, format!("{at}.limit"), message),
                    }
                } else if spec.quota.burst().get() < PAGE_LOAD {
                    let burst = spec.quota.burst();
                    let message = |default: &str| {
                        format!("matches every request with a burst of {burst}{default}: {when}a browser loading one page (often {PAGE_LOAD} or more requests at once) will be refused; give a burst of at least {PAGE_LOAD}, or match the paths it is for")
                    };
                    match &l.value.burst {
                        Some(b) => self.warn(b, format!("{at}.limit.burst"), message("")),
                        None => self.warn(
                            &l.value.rate,
                            format!("{at}.limit.rate"),
                            message(" (without `burst:`, the rate's count)"),
                        ),
                    }
                }
            }
            _ => {}
        }
    }

    /// With `under_attack.auto` set, an enforced deny rule of the profile that matches on
    /// country refuses whole countries when the switch trips, with nobody deciding it.
    fn auto_denies_countries(&mut self, raw: &[RawRule], rules: &[Rule]) {
        for (i, (r, rule)) in raw.iter().zip(rules).enumerate() {
            if !matches!(rule.kind, RuleKind::Deny) || rule.mode != Mode::Enforce {
                continue;
            }
            let Some(m) = r.matcher.as_ref() else {
                continue;
            };
            let found = m
                .country
                .first()
                .map(|c| ("country", c))
                .or_else(|| m.country_not.first().map(|c| ("country_not", c)));
            if let Some((key, c)) = found {
                self.warn(
                    c,
                    format!("under_attack.rules[{i}].match.{key}"),
                    format!(
                        "under_attack.auto can switch on a profile that refuses whole countries (rule {:?}): it will deny them without a person deciding; switch the profile by hand (sekisho attack on) or make this rule a limit",
                        rule.name
                    ),
                );
            }
        }
    }

    fn matcher(&mut self, raw: Option<&RawMatch>, at: &str) -> Matcher {
        let Some(m) = raw else {
            return Matcher::default();
        };
        let mut out = Matcher::default();
        for (key, v) in [("path", &m.path), ("path_prefix", &m.path_prefix)] {
            if let Some(p) = v {
                if !p.value.starts_with('/') {
                    self.err(
                        p,
                        format!("{at}.match.{key}"),
                        format!("{:?} must start with '/'", p.value),
                    );
                } else if p.value.contains(['?', '#']) {
                    self.err(
                        p,
                        format!("{at}.match.{key}"),
                        format!("{:?}: paths are matched without the query string; use path_regex for anything else", p.value),
                    );
                } else if crate::engine::normalize_path(&p.value) != p.value.as_str() {
                    self.err(
                        p,
                        format!("{at}.match.{key}"),
                        format!(
                            "{:?} can never match: requests are matched on their normalised path ({:?})",
                            p.value,
                            crate::engine::normalize_path(&p.value)
                        ),
                    );
                }
            }
        }
        for (j, f) in m.ja4.iter().enumerate() {
            let v = f.value.trim();
            if crate::tls::ja4::is_fingerprint(v) {
                out.ja4.push(v.to_string());
            } else {
                self.err(
                    f,
                    format!("{at}.match.ja4[{j}]"),
                    format!("{:?} is not a JA4 fingerprint (like \"t13d1516h2_8daaf6152771_02713d6af862\": `sekisho top --by ja4` lists your TLS clients' fingerprints)", f.value),
                );
            }
        }
        out.path = m.path.as_ref().map(|p| p.value.clone());
        out.path_prefix = m.path_prefix.as_ref().map(|p| p.value.clone());
        out.path_regex = m
            .path_regex
            .as_ref()
            .and_then(|r| self.regex(r, &format!("{at}.match.path_regex")));
        out.user_agent = m.user_agent.as_ref().and_then(|r| {
            let field = format!("{at}.match.user_agent");
            match regex::bytes::RegexBuilder::new(&r.value)
                .size_limit(1 << 20)
                .build()
            {
                Ok(re) => {
                    if re.is_match(b"") {
                        let every = if BROWSER_UAS.iter().all(|ua| re.is_match(ua.as_bytes())) {
                            ", and it matches every user agent (an empty alternative like \"a|\", or \"x*\"?)"
                        } else {
                            ""
                        };
                        self.warn(
                            r,
                            field,
                            format!(
                                "{:?} matches the empty string: it also matches requests without a User-Agent header{every}",
                                r.value
                            ),
                        );
                    }
                    Some(re)
                }
                Err(e) => {
                    self.err(r, field, regex_message(&e.to_string()));
                    None
                }
            }
        });
        for (i, meth) in m.methods.iter().enumerate() {
            match codes::method(&meth.value) {
                Ok(up) => out.methods.push(up),
                Err(message) => self.err(meth, format!("{at}.match.methods[{i}]"), message),
            }
        }
        for (key, list, out_list) in [
            ("country", &m.country, &mut out.country),
            ("country_not", &m.country_not, &mut out.country_not),
        ] {
            for (i, c) in list.iter().enumerate() {
                match codes::country(&c.value) {
                    Ok(code) => out_list.push(code),
                    Err(message) => self.err(c, format!("{at}.match.{key}[{i}]"), message),
                }
            }
        }
        if let Some(h) = &m.host {
            let v = h.value.trim();
            let bad_star = v.strip_prefix("*.").unwrap_or(v).contains('*');
            if v.is_empty() || bad_star || h.value.contains(['/', ' ', ':']) {
                self.err(
                    h,
                    format!("{at}.match.host"),
                    format!(
                        "{:?} is not a host name (example.com or *.example.com, no port)",
                        h.value
                    ),
                );
            } else {
                out.host = Some(HostMatch::parse(&h.value));
            }
        }
        out
    }

    fn regex(&mut self, r: &S<String>, field: &str) -> Option<Regex> {
        match RegexBuilder::new(&r.value).size_limit(1 << 20).build() {
            Ok(re) => Some(re),
            Err(e) => {
                let msg = e
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                self.err(r, field, format!("bad regex: {msg}"));
                None
            }
        }
    }

    fn limit(&mut self, l: &S<RawLimit>, at: &str) -> Option<LimitSpec> {
        let quota = self.quota(
            &l.value.rate,
            l.value.burst.as_ref(),
            |count| count,
            &format!("{at}.limit"),
        )?;
        let key = match &l.value.key {
            None => KeyKind::Ip,
            Some(k) => match k.value.trim() {
                "ip" => KeyKind::Ip,
                "ip_path" => KeyKind::IpPath,
                "country" => KeyKind::Country,
                "ja4" => KeyKind::Ja4,
                other => match other.strip_prefix("header:") {
                    Some(h) => match HeaderName::from_bytes(h.trim().as_bytes()) {
                        Ok(n) => KeyKind::Header(n),
                        Err(_) => {
                            self.err(
                                k,
                                format!("{at}.limit.key"),
                                format!("{h:?} is not a header name"),
                            );
                            return None;
                        }
                    },
                    None => {
                        self.err(
                            k,
                            format!("{at}.limit.key"),
                            format!("{other:?}: use ip, ip_path, country, ja4 or header:NAME"),
                        );
                        return None;
                    }
                },
            },
        };
        let scope = self.scope(&l.value, &key, at)?;
        Some(LimitSpec { quota, key, scope })
    }

    /// `limit.scope` and `limit.consistency` (every error of both reported).
    fn scope(&mut self, l: &RawLimit, key: &KeyKind, at: &str) -> Option<Scope> {
        let field = format!("{at}.limit.scope");
        let scope = match &l.scope {
            None => Some(Scope::Local),
            Some(s) => match s.value.trim() {
                "local" => Some(Scope::Local),
                "cluster" if !self.has_cluster => {
                    self.err(s, field, "scope: cluster needs a top-level cluster: section (the Redis or Valkey store the instances share)");
                    None
                }
                "cluster" if !matches!(key, KeyKind::Ip | KeyKind::Country) => {
                    self.err(s, field, "scope: cluster is for key: ip or key: country (other keys are hashed with a seed of each process, so instances would not agree on them)");
                    None
                }
                "cluster" => Some(Scope::Cluster),
                other => {
                    self.err(
                        s,
                        field,
                        format!("{other:?}: use local (the default) or cluster"),
                    );
                    None
                }
            },
        };
        let Some(c) = &l.consistency else {
            return scope;
        };
        let field = format!("{at}.limit.consistency");
        match c.value.trim() {
            "approximate" => scope,
            "exact" => match scope? {
                Scope::Local => {
                    self.err(
                        c,
                        field,
                        "consistency: exact applies to scope: cluster only",
                    );
                    None
                }
                _ => Some(Scope::Exact),
            },
            other => {
                self.err(
                    c,
                    field,
                    format!("{other:?}: use approximate (the default) or exact"),
                );
                None
            }
        }
    }

    fn response(&mut self, r: &RawRule, at: &str, is_limit: bool) -> Response {
        let Some(resp) = &r.response else {
            return Response::plain(403);
        };
        let status = match &resp.status {
            Some(s) if !(200..=599).contains(&s.value) || matches!(s.value, 204 | 205 | 304) => {
                self.err(s, format!("{at}.response.status"), format!("{} cannot be a refusal: use a status from 200 to 599 that carries a body (403 is the default; 429 for limits is common)", s.value));
                403
            }
            Some(s) => s.value,
            None => 403,
        };
        let mut out = Response::plain(status);
        if let Some(b) = &resp.body {
            out.body = Bytes::from(b.value.clone());
        }
        if let Some(ra) = resp.retry_after.as_ref().filter(|ra| ra.value) {
            if is_limit {
                out.retry_after = true;
            } else {
                self.err(
                    ra,
                    format!("{at}.response.retry_after"),
                    "retry_after applies to limit rules only",
                );
            }
        }
        out
    }
}

/// A rule as `sekisho config` prints it: every field, defaults included.
#[derive(Serialize)]
pub(super) struct EffectiveRule {
    name: String,
    mode: &'static str,
    /// The conditions given; none (`{}`) matches every request.
    #[serde(rename = "match")]
    matcher: EffectiveMatch,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<EffectiveLimit>,
    response: EffectiveResponse,
}

#[derive(Serialize)]
struct EffectiveMatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_prefix: Option<String>,
    /// The source of the compiled regex.
    #[serde(skip_serializing_if = "Option::is_none")]
    path_regex: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    methods: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    country: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    country_not: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ja4: Vec<String>,
}

#[derive(Serialize)]
struct EffectiveLimit {
    rate: String,
    burst: u32,
    key: String,
    scope: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    consistency: Option<&'static str>,
}

#[derive(Serialize)]
struct EffectiveResponse {
    status: u16,
    body: String,
    /// Limits only (a deny rule has no time to wait for).
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<bool>,
}

/// A rule's `match:` as one line of YAML (flow style), for the tools that print a rule for
/// pasting (`sekisho suggest`).
pub fn match_line(r: &Rule) -> String {
    serde_json::to_string(&effective_rule(r).matcher).unwrap_or_else(|_| "{}".into())
}

/// `rules` (or `under_attack.rules`), in order.
pub(super) fn effective(rules: &[Rule]) -> Vec<EffectiveRule> {
    rules.iter().map(effective_rule).collect()
}

fn effective_rule(r: &Rule) -> EffectiveRule {
    let m = &r.matcher;
    let countries =
        |list: &[crate::engine::Country]| list.iter().map(|c| c.as_str().into()).collect();
    let limit = match &r.kind {
        RuleKind::Deny => None,
        RuleKind::Limit(l) => Some(EffectiveLimit {
            rate: l.quota.rate(),
            burst: l.quota.burst().get(),
            key: match &l.key {
                KeyKind::Ip => "ip".into(),
                KeyKind::IpPath => "ip_path".into(),
                KeyKind::Country => "country".into(),
                KeyKind::Ja4 => "ja4".into(),
                KeyKind::Header(h) => format!("header:{h}"),
            },
            scope: match l.scope {
                Scope::Local => "local",
                Scope::Cluster | Scope::Exact => "cluster",
            },
            consistency: match l.scope {
                Scope::Local => None,
                Scope::Cluster => Some("approximate"),
                Scope::Exact => Some("exact"),
            },
        }),
    };
    EffectiveRule {
        name: r.name.clone(),
        mode: r.mode.as_str(),
        matcher: EffectiveMatch {
            path: m.path.clone(),
            path_prefix: m.path_prefix.clone(),
            path_regex: m.path_regex.as_ref().map(|re| re.as_str().into()),
            methods: m.methods.clone(),
            host: m.host.as_ref().map(|h| match h {
                HostMatch::Exact(h) => h.clone(),
                HostMatch::Suffix(s) => format!("*{s}"),
            }),
            user_agent: m.user_agent.as_ref().map(|re| re.as_str().into()),
            country: countries(&m.country),
            country_not: countries(&m.country_not),
            ja4: m.ja4.clone(),
        },
        action: limit.is_none().then_some("deny"),
        response: EffectiveResponse {
            status: r.response.status,
            body: String::from_utf8_lossy(&r.response.body).into_owned(),
            retry_after: limit.is_some().then_some(r.response.retry_after),
        },
        limit,
    }
}

/// A limit matching every request with a burst under this refuses a browser's page load.
const PAGE_LOAD: u32 = 10;

/// User agents a user-agent regex that matches the empty string is tried on: matching all of
/// them is taken for matching every user agent.
const BROWSER_UAS: [&str; 3] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "curl/8.5.0",
    "z",
];

/// No condition narrows `m`: it matches every request (`path_prefix: /` alone included).
fn matches_everything(m: &Matcher) -> bool {
    m.path.is_none()
        && m.path_prefix.as_deref().is_none_or(|p| p == "/")
        && m.path_regex.is_none()
        && m.methods.is_empty()
        && m.host.is_none()
        && m.user_agent.is_none()
        && m.country.is_empty()
        && m.country_not.is_empty()
        && m.ja4.is_empty()
}

/// A regex error on one line.
fn regex_message(e: &str) -> String {
    format!(
        "bad regex: {}",
        e.split_whitespace().collect::<Vec<_>>().join(" ")
    )
}
