//! One compiled rule: what it matches, what it does, what a refused client is sent.

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
}
