//! One compiled rule: what it matches, what it does, what a refused client is sent.
//!
//! [`Matcher::matches`] is the request path; [`Matcher::explain`] answers the same question
//! for people (`sekisho explain`), naming the first condition that fails, and is tested to
//! agree with it.

use bytes::Bytes;
use http::HeaderName;
use regex::Regex;

use super::{Country, Facts, Mode};
use crate::limiter::{Predecessor, Quota};

/// A rule from `rules:`, compiled.
#[derive(Debug)]
pub struct Rule {
    /// `name:`, unique in the file.
    pub name: String,
    /// `match:`; an empty matcher matches every request.
    pub matcher: Matcher,
    /// `action: deny` or `limit:`.
    pub kind: RuleKind,
    /// `response:`.
    pub response: Response,
    /// `mode:`.
    pub mode: Mode,
    /// The limiter slot (see [`super::SlotRegistry`]); 0 for deny rules.
    pub slot: u32,
    /// The slot this rule had before a reload changed its quota, to carry bucket state over.
    pub predecessor: Option<Predecessor>,
}

/// What a matching rule does.
#[derive(Debug)]
pub enum RuleKind {
    /// Refuse.
    Deny,
    /// Take a token from the request's bucket; refuse when there is none.
    Limit(LimitSpec),
}

/// `limit:`.
#[derive(Debug, Clone)]
pub struct LimitSpec {
    /// `rate:` and `burst:`.
    pub quota: Quota,
    /// `key:`.
    pub key: KeyKind,
    /// `scope:` and `consistency:`.
    pub scope: Scope,
}

/// Whose requests a limit's bucket counts (`limit.scope`, `limit.consistency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scope {
    /// This instance's only (the default).
    #[default]
    Local,
    /// The fleet's, approximately: admitted here against this instance's view of the fleet's
    /// bucket, which the cluster sync refreshes every `cluster.sync_interval`.
    Cluster,
    /// The fleet's, exactly: each request that passes here is checked against the store's
    /// bucket in one bounded round trip (`cluster.timeout`).
    Exact,
}

impl Scope {
    /// `local`, `cluster` or `exact`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Local => "local",
            Scope::Cluster => "cluster",
            Scope::Exact => "exact",
        }
    }
}

/// What a bucket is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// The client address (IPv6 by its prefix).
    Ip,
    /// The client address and the exact path.
    IpPath,
    /// The value of a request header (e.g. an API key); the address when the header is absent.
    Header(HeaderName),
    /// The client's country: one bucket per country.
    Country,
    /// The client's TLS fingerprint (JA4): one bucket per TLS stack across addresses; the
    /// address when there is none (plaintext).
    Ja4,
}

/// What a refused request is sent.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code (403 unless configured).
    pub status: u16,
    /// Body, sent with `Content-Length`.
    pub body: Bytes,
    /// Whether to add `Retry-After` (limits only).
    pub retry_after: bool,
}

impl Response {
    /// A response with the status's standard text as body.
    pub fn plain(status: u16) -> Self {
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Refused");
        Self {
            status,
            body: Bytes::from(format!("{reason}\n")),
            retry_after: false,
        }
    }
}

/// `match:`: every condition given must hold.
#[derive(Debug, Default)]
pub struct Matcher {
    /// `path:` exact.
    pub path: Option<String>,
    /// `path_prefix:`.
    pub path_prefix: Option<String>,
    /// `path_regex:` (searched in the path, without the query string).
    pub path_regex: Option<Regex>,
    /// `methods:`; empty means any.
    pub methods: Vec<String>,
    /// `host:`.
    pub host: Option<HostMatch>,
    /// `user_agent:` regex, searched in the header's bytes (a missing header is empty).
    pub user_agent: Option<regex::bytes::Regex>,
    /// `country:`: the client's country is one of these (`??` = unknown).
    pub country: Vec<Country>,
    /// `country_not:`: the client's country is none of these.
    pub country_not: Vec<Country>,
    /// `ja4:`: the client's TLS fingerprint is one of these (plaintext matches none).
    pub ja4: Vec<String>,
}

/// `host:`: `example.com` or `*.example.com` (any subdomain, not the apex), case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// The host exactly.
    Exact(String),
    /// Ends in `.suffix` (stored with its leading dot).
    Suffix(String),
}

impl HostMatch {
    /// Parses `example.com` or `*.example.com`.
    pub fn parse(s: &str) -> Self {
        let s = s.trim().trim_end_matches('.').to_ascii_lowercase();
        match s.strip_prefix('*') {
            Some(rest) if rest.starts_with('.') => HostMatch::Suffix(rest.to_string()),
            _ => HostMatch::Exact(s),
        }
    }

    /// As written in the config: `example.com` or `*.example.com`.
    pub fn pattern(&self) -> String {
        match self {
            HostMatch::Exact(h) => h.clone(),
            HostMatch::Suffix(sfx) => format!("*{sfx}"),
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => host.eq_ignore_ascii_case(h),
            HostMatch::Suffix(sfx) => {
                host.len() > sfx.len()
                    && host.is_char_boundary(host.len() - sfx.len())
                    && host[host.len() - sfx.len()..].eq_ignore_ascii_case(sfx)
            }
        }
    }
}

impl Matcher {
    /// Whether this matcher looks at the country.
    pub fn uses_country(&self) -> bool {
        !self.country.is_empty() || !self.country_not.is_empty()
    }

    /// Whether this matcher looks at the host.
    pub fn uses_host(&self) -> bool {
        self.host.is_some()
    }

    /// Whether every condition holds for `f`. Cheap tests first, regexes last.
    #[inline]
    pub fn matches(&self, f: &Facts<'_>) -> bool {
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == f.method) {
            return false;
        }
        if let Some(p) = &self.path {
            if f.path != p {
                return false;
            }
        }
        if let Some(p) = &self.path_prefix {
            if !f.path.starts_with(p.as_str()) {
                return false;
            }
        }
        if let Some(h) = &self.host {
            if !h.matches(f.host) {
                return false;
            }
        }
        if !self.country.is_empty() && !self.country.contains(&f.country) {
            return false;
        }
        if self.country_not.contains(&f.country) {
            return false;
        }
        if !self.ja4.is_empty() && !self.ja4.iter().any(|j| j == f.ja4) {
            return false;
        }
        if let Some(re) = &self.path_regex {
            if !re.is_match(f.path) {
                return false;
            }
        }
        if let Some(re) = &self.user_agent {
            if !re.is_match(f.user_agent) {
                return false;
            }
        }
        true
    }

    /// Why `f` fails this matcher: the first condition that does not hold, tried in the order
    /// [`matches`](Self::matches) tries them. `Ok(())` exactly when `matches` is true. Not for
    /// the request path: it allocates its answer.
    pub fn explain(&self, f: &Facts<'_>) -> Result<(), Mismatch> {
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == f.method) {
            return Err(Mismatch::Methods {
                want: self.methods.clone(),
                got: f.method.to_string(),
            });
        }
        if let Some(p) = self.path.as_ref().filter(|p| f.path != p.as_str()) {
            return Err(Mismatch::Path {
                want: p.clone(),
                got: f.path.to_string(),
            });
        }
        if let Some(p) = self
            .path_prefix
            .as_ref()
            .filter(|p| !f.path.starts_with(p.as_str()))
        {
            return Err(Mismatch::PathPrefix {
                want: p.clone(),
                got: f.path.to_string(),
            });
        }
        if let Some(h) = self.host.as_ref().filter(|h| !h.matches(f.host)) {
            return Err(Mismatch::Host {
                want: h.pattern(),
                got: f.host.to_string(),
            });
        }
        if !self.country.is_empty() && !self.country.contains(&f.country) {
            return Err(Mismatch::Country {
                want: self.country.clone(),
                got: f.country,
            });
        }
        if self.country_not.contains(&f.country) {
            return Err(Mismatch::CountryNot {
                not: self.country_not.clone(),
                got: f.country,
            });
        }
        if !self.ja4.is_empty() && !self.ja4.iter().any(|j| j == f.ja4) {
            return Err(Mismatch::Ja4 {
                want: self.ja4.clone(),
                got: f.ja4.to_string(),
            });
        }
        if let Some(re) = self.path_regex.as_ref().filter(|re| !re.is_match(f.path)) {
            return Err(Mismatch::PathRegex {
                regex: re.as_str().to_string(),
                got: f.path.to_string(),
            });
        }
        if let Some(re) = self
            .user_agent
            .as_ref()
            .filter(|re| !re.is_match(f.user_agent))
        {
            return Err(Mismatch::UserAgent {
                regex: re.as_str().to_string(),
                got: String::from_utf8_lossy(f.user_agent).into_owned(),
            });
        }
        Ok(())
    }
}

/// The condition of a `match:` that a request fails, with what it wants and what the request
/// has ([`Matcher::explain`]); its `Display` is one line for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// `methods:` does not include the method.
    Methods { want: Vec<String>, got: String },
    /// `path:` is not the path.
    Path { want: String, got: String },
    /// `path_prefix:` does not start the path.
    PathPrefix { want: String, got: String },
    /// `host:` does not match the host (empty: the request names none).
    Host { want: String, got: String },
    /// `country:` does not include the client's country.
    Country { want: Vec<Country>, got: Country },
    /// `country_not:` includes the client's country.
    CountryNot { not: Vec<Country>, got: Country },
    /// `ja4:` does not include the client's fingerprint (empty: none, plaintext).
    Ja4 { want: Vec<String>, got: String },
    /// `path_regex:` finds nothing in the path.
    PathRegex { regex: String, got: String },
    /// `user_agent:` finds nothing in the user agent (empty: no header).
    UserAgent { regex: String, got: String },
}

impl Mismatch {
    /// The `match:` field that failed, as written in the config.
    pub fn field(&self) -> &'static str {
        match self {
            Mismatch::Methods { .. } => "methods",
            Mismatch::Path { .. } => "path",
            Mismatch::PathPrefix { .. } => "path_prefix",
            Mismatch::Host { .. } => "host",
            Mismatch::Country { .. } => "country",
            Mismatch::CountryNot { .. } => "country_not",
            Mismatch::Ja4 { .. } => "ja4",
            Mismatch::PathRegex { .. } => "path_regex",
            Mismatch::UserAgent { .. } => "user_agent",
        }
    }
}

fn countries(list: &[Country]) -> String {
    let names: Vec<&str> = list.iter().map(Country::as_str).collect();
    format!("[{}]", names.join(", "))
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mismatch::Methods { want, got } => {
                write!(f, "methods [{}] does not include {got}", want.join(", "))
            }
            Mismatch::Path { want, got } => write!(f, "path {want} is not {got}"),
            Mismatch::PathPrefix { want, got } => {
                write!(f, "path_prefix {want} does not match {got}")
            }
            Mismatch::Host { want, got } if got.is_empty() => {
                write!(f, "host {want}: the request names no host")
            }
            Mismatch::Host { want, got } => write!(f, "host {want} does not match {got}"),
            Mismatch::Country { want, got } => write!(
                f,
                "country not in {} (client is {})",
                countries(want),
                got.as_str()
            ),
            Mismatch::CountryNot { not, got } => write!(
                f,
                "country_not {} includes the client's {}",
                countries(not),
                got.as_str()
            ),
            Mismatch::Ja4 { want, got } if got.is_empty() => write!(
                f,
                "ja4 [{}]: the client has no TLS fingerprint (plaintext)",
                want.join(", ")
            ),
            Mismatch::Ja4 { want, got } => {
                write!(f, "ja4 [{}] does not include {got}", want.join(", "))
            }
            Mismatch::PathRegex { regex, got } => {
                write!(f, "path_regex {regex} does not match {got}")
            }
            Mismatch::UserAgent { regex, got } if got.is_empty() => {
                write!(f, "user_agent regex {regex} does not match (no User-Agent)")
            }
            Mismatch::UserAgent { regex, got } => {
                write!(f, "user_agent regex {regex} does not match {got:?}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const METHODS: [&str; 3] = ["GET", "POST", "PUT"];
    const PATHS: [&str; 4] = ["/", "/login", "/login/x", "/api/x"];
    const HOSTS: [&str; 4] = ["", "example.com", "a.example.com", "other.org"];
    const COUNTRIES: [Country; 3] = [Country(*b"JP"), Country(*b"CN"), Country::UNKNOWN];
    const JA4: [&str; 2] = ["", "t13d1516h2_8daaf6152771_b186095e22b6"];
    const UAS: [&[u8]; 3] = [b"", b"curl/8", b"Mozilla/5.0 bingbot"];

    fn pick<T: Clone>(all: &[T], mask: u8) -> Vec<T> {
        all.iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// A matcher with each condition present or not, drawn from the same small sets the facts
    /// are drawn from, so that both outcomes of every condition come up.
    fn matcher() -> impl Strategy<Value = Matcher> {
        (
            (any::<u8>(), proptest::option::of(0..PATHS.len())),
            (
                proptest::option::of(0..PATHS.len()),
                proptest::option::of(0..3usize),
            ),
            (proptest::option::of(1..HOSTS.len()), any::<bool>()),
            (any::<u8>(), any::<u8>(), any::<u8>()),
            proptest::option::of(0..2usize),
        )
            .prop_map(
                |((methods, path), (prefix, regex), (host, suffix), (c, cn, ja4), ua)| Matcher {
                    methods: pick(&METHODS, methods)
                        .iter()
                        .map(|m| m.to_string())
                        .collect(),
                    path: path.map(|i| PATHS[i].to_string()),
                    path_prefix: prefix.map(|i| PATHS[i].to_string()),
                    path_regex: regex
                        .map(|i| Regex::new(["^/login", "x$", "^/$"][i]).expect("a test regex")),
                    host: host.map(|i| {
                        let h = HOSTS[i];
                        HostMatch::parse(&if suffix {
                            format!("*.{h}")
                        } else {
                            h.to_string()
                        })
                    }),
                    user_agent: ua.map(|i| {
                        regex::bytes::Regex::new(["(?i)bot", "^curl/"][i]).expect("a test regex")
                    }),
                    country: pick(&COUNTRIES, c),
                    country_not: pick(&COUNTRIES, cn),
                    ja4: pick(&JA4[1..], ja4).iter().map(|j| j.to_string()).collect(),
                },
            )
    }

    proptest! {
        /// `explain` says `Ok` exactly when `matches` is true, and otherwise names a condition
        /// the matcher has.
        #[test]
        fn explain_agrees_with_matches(
            m in matcher(),
            (method, path, host) in (0..METHODS.len(), 0..PATHS.len(), 0..HOSTS.len()),
            (country, ja4, ua) in (0..COUNTRIES.len(), 0..JA4.len(), 0..UAS.len()),
        ) {
            let f = Facts {
                ip: std::net::IpAddr::from([192, 0, 2, 1]),
                method: METHODS[method],
                host: HOSTS[host],
                path: PATHS[path],
                user_agent: UAS[ua],
                headers: None,
                country: COUNTRIES[country],
                ja4: JA4[ja4],
            };
            let why = m.explain(&f);
            prop_assert_eq!(why.is_ok(), m.matches(&f), "{:?}", why);
            if let Err(why) = why {
                let present = match why.field() {
                    "methods" => !m.methods.is_empty(),
                    "path" => m.path.is_some(),
                    "path_prefix" => m.path_prefix.is_some(),
                    "host" => m.host.is_some(),
                    "country" => !m.country.is_empty(),
                    "country_not" => !m.country_not.is_empty(),
                    "ja4" => !m.ja4.is_empty(),
                    "path_regex" => m.path_regex.is_some(),
                    _ => m.user_agent.is_some(),
                };
                prop_assert!(present, "{why} names a condition the matcher lacks");
            }
        }
    }

    #[test]
    fn mismatches_read_as_the_config_is_written() {
        let f = Facts {
            ip: std::net::IpAddr::from([192, 0, 2, 1]),
            method: "GET",
            host: "shop.example",
            path: "/api/x",
            user_agent: b"curl/8",
            headers: None,
            country: Country(*b"JP"),
            ja4: "",
        };
        let why = |m: Matcher| m.explain(&f).map_err(|e| e.to_string());
        let login = Matcher {
            path_prefix: Some("/login".into()),
            ..Matcher::default()
        };
        assert_eq!(
            why(login),
            Err("path_prefix /login does not match /api/x".into())
        );
        let post = Matcher {
            methods: vec!["POST".into()],
            path_prefix: Some("/login".into()),
            ..Matcher::default()
        };
        // the first failing condition, in `matches`' order
        assert_eq!(why(post), Err("methods [POST] does not include GET".into()));
        let cn = Matcher {
            country: vec![Country(*b"CN"), Country(*b"RU")],
            ..Matcher::default()
        };
        assert_eq!(
            why(cn),
            Err("country not in [CN, RU] (client is JP)".into())
        );
        let host = Matcher {
            host: Some(HostMatch::parse("*.example.com")),
            ..Matcher::default()
        };
        assert_eq!(
            why(host),
            Err("host *.example.com does not match shop.example".into())
        );
        let bots = Matcher {
            user_agent: Some(regex::bytes::Regex::new("(?i)bot").expect("regex")),
            ..Matcher::default()
        };
        assert_eq!(
            why(bots),
            Err("user_agent regex (?i)bot does not match \"curl/8\"".into())
        );
        assert_eq!(why(Matcher::default()), Ok(()));
    }
}
