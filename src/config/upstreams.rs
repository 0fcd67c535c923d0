//! `upstreams:` and `upstream_options:`: where allowed requests go and how sekisho talks to them.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use http::HeaderName;
use serde::{Deserialize, Serialize};
use serde_saphyr::Commented;

use super::effective::{maybe, Maybe};
use super::{format_duration, Config, ConfigError, RawConfig, Validator, S};

/// One upstream peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// As written (`origin.internal:8000`).
    pub name: String,
    /// Resolved at load.
    pub addr: SocketAddr,
}

/// `upstream_options:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamOptions {
    /// TCP connect timeout (default 2 s).
    pub connect_timeout: Duration,
    /// Timeout for each read from upstream (default 30 s).
    pub read_timeout: Duration,
    /// Timeout for each write to upstream (default 30 s).
    pub write_timeout: Duration,
    /// How long an idle pooled upstream connection is kept (default 60 s).
    pub idle_timeout: Duration,
    /// How long a peer that refused a connection is skipped (default 10 s).
    pub down_for: Duration,
    /// Idle keep-alive connections kept to upstream (default 1024; restart to change).
    pub pool_size: usize,
    /// `forwarded_headers` (default true): sekisho writes `X-Forwarded-For`, `X-Real-IP` and
    /// `X-Forwarded-Proto` from the client it resolved, and removes what an untrusted peer sent
    /// under those names (and `Forwarded`, `client_ip.header`, `geo.header`).
    pub forwarded_headers: bool,
    /// `forwarded` (default false): also RFC 7239 `Forwarded`; needs `forwarded_headers`.
    pub forwarded: bool,
    /// `country_header` (default none): the header the resolved country is sent in, as
    /// written (its case is kept on the wire) and as a name.
    pub country_header: Option<(String, HeaderName)>,
    /// `tls` (default off): HTTPS to the upstreams.
    pub tls: Option<UpstreamTls>,
}

/// `upstream_options.tls`, validated, its connector built.
#[derive(Clone)]
pub struct UpstreamTls {
    /// The name sent as SNI and checked against the origin's certificate.
    pub sni: Option<String>,
    /// Whether the origin's certificate is verified (default true).
    pub verify: bool,
    /// The CA file the certificate is verified against instead of the system's roots.
    pub ca: Option<std::path::PathBuf>,
    pub connector: std::sync::Arc<pingora::tls::ssl::SslConnector>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("sni", &self.sni)
            .field("verify", &self.verify)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

impl PartialEq for UpstreamTls {
    fn eq(&self, o: &Self) -> bool {
        (&self.sni, self.verify, &self.ca) == (&o.sni, o.verify, &o.ca)
    }
}

impl Eq for UpstreamTls {}

/// `upstream_options.tls` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    pub enabled: Option<S<bool>>,
    pub sni: Option<S<String>>,
    pub verify: Option<S<bool>>,
    pub ca: Option<S<String>>,
}

/// Names `country_header` may not take: sekisho writes or frames them itself.
const NOT_A_COUNTRY_HEADER: [&str; 8] = [
    "x-forwarded-for",
    "x-real-ip",
    "x-forwarded-proto",
    "forwarded",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamOptions {
    pub connect_timeout: Option<S<String>>,
    pub read_timeout: Option<S<String>>,
    pub write_timeout: Option<S<String>>,
    pub idle_timeout: Option<S<String>>,
    pub down_for: Option<S<String>>,
    pub pool_size: Option<S<usize>>,
    pub forwarded_headers: Option<S<bool>>,
    pub forwarded: Option<S<bool>>,
    pub country_header: Option<S<String>>,
    pub tls: Option<S<RawUpstreamTls>>,
}

/// `upstream_options:` as `sekisho config` prints it.
#[derive(Serialize)]
pub(super) struct EffectiveUpstreamOptions {
    connect_timeout: String,
    read_timeout: String,
    write_timeout: String,
    idle_timeout: String,
    down_for: String,
    pool_size: usize,
    forwarded_headers: bool,
    forwarded: bool,
    country_header: Maybe<String>,
    tls: EffectiveUpstreamTls,
}

#[derive(Serialize)]
struct EffectiveUpstreamTls {
    enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    sni: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verify: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca: Option<String>,
}

/// `upstreams:` as written, each with the address it resolved to as a comment, and
/// `upstream_options:`.
pub(super) fn effective(c: &Config) -> (Vec<Commented<String>>, EffectiveUpstreamOptions) {
    let upstreams = (c.upstreams.iter())
        .map(|u| Commented(u.name.clone(), format!("resolved to {} at load", u.addr)))
        .collect();
    let o = &c.upstream_options;
    let options = EffectiveUpstreamOptions {
        connect_timeout: format_duration(o.connect_timeout),
        read_timeout: format_duration(o.read_timeout),
        write_timeout: format_duration(o.write_timeout),
        idle_timeout: format_duration(o.idle_timeout),
        down_for: format_duration(o.down_for),
        pool_size: o.pool_size,
        forwarded_headers: o.forwarded_headers,
        forwarded: o.forwarded,
        country_header: maybe(o.country_header.as_ref().map(|(w, _)| w.clone()), "none"),
        tls: EffectiveUpstreamTls {
            enabled: o.tls.is_some(),
            sni: o.tls.as_ref().and_then(|t| t.sni.clone()),
            verify: o.tls.as_ref().map(|t| t.verify),
            ca: (o.tls.as_ref())
                .and_then(|t| t.ca.as_ref())
                .map(|p| p.display().to_string()),
        },
    };
    (upstreams, options)
}

impl Validator<'_> {
    /// `upstreams:` (at least one, each resolved now) and `upstream_options:`.
    pub(super) fn upstreams(&mut self, raw: &RawConfig) -> (Vec<Upstream>, UpstreamOptions) {
        let mut upstreams = Vec::new();
        for (i, u) in raw.upstreams.iter().enumerate() {
            if let Some(message) = not_host_port(&u.value) {
                self.err(u, format!("upstreams[{i}]"), message);
                continue;
            }
            match u.value.to_socket_addrs().map(|mut a| a.next()) {
                Ok(Some(addr)) => upstreams.push(Upstream {
                    name: u.value.clone(),
                    addr,
                }),
                Ok(None) => self.err(
                    u,
                    format!("upstreams[{i}]"),
                    format!("{:?} resolves to no address", u.value),
                ),
                Err(e) => self.err(
                    u,
                    format!("upstreams[{i}]"),
                    format!("{:?} is not a reachable host:port ({e})", u.value),
                ),
            }
        }
        if raw.upstreams.is_empty() {
            self.errors.push(ConfigError {
                file: self.file.clone(),
                line: 1,
                column: 1,
                field: "upstreams".into(),
                message: "at least one upstream host:port is required, e.g. upstreams: [\"127.0.0.1:8000\"]".into(),
            });
        }
        let uo = raw.upstream_options.as_ref();
        let mut upstream_options = UpstreamOptions {
            connect_timeout: self.timeout(
                uo.and_then(|o| o.connect_timeout.as_ref()),
                "upstream_options.connect_timeout",
                Duration::from_secs(2),
            ),
            read_timeout: self.timeout(
                uo.and_then(|o| o.read_timeout.as_ref()),
                "upstream_options.read_timeout",
                Duration::from_secs(30),
            ),
            write_timeout: self.timeout(
                uo.and_then(|o| o.write_timeout.as_ref()),
                "upstream_options.write_timeout",
                Duration::from_secs(30),
            ),
            idle_timeout: self.timeout(
                uo.and_then(|o| o.idle_timeout.as_ref()),
                "upstream_options.idle_timeout",
                Duration::from_secs(60),
            ),
            down_for: self.duration(
                uo.and_then(|o| o.down_for.as_ref()),
                "upstream_options.down_for",
                Duration::from_secs(10),
            ),
            pool_size: match uo.and_then(|o| o.pool_size.as_ref()) {
                Some(p) if p.value == 0 => {
                    self.err(p, "upstream_options.pool_size", "must be at least 1");
                    1024
                }
                Some(p) => p.value,
                None => 1024,
            },
            forwarded_headers: uo
                .and_then(|o| o.forwarded_headers.as_ref())
                .is_none_or(|f| f.value),
            forwarded: false,
            country_header: None,
            tls: None,
        };
        if let Some(t) = uo.and_then(|o| o.tls.as_ref()) {
            upstream_options.tls = self.upstream_tls(t);
        }
        if let Some(f) = uo.and_then(|o| o.forwarded.as_ref()) {
            if f.value && !upstream_options.forwarded_headers {
                self.err(
                    f,
                    "upstream_options.forwarded",
                    "Forwarded is written beside X-Forwarded-For from the same client: it needs \
                     forwarded_headers: true",
                );
            }
            upstream_options.forwarded = f.value && upstream_options.forwarded_headers;
        }
        if let Some(h) = uo.and_then(|o| o.country_header.as_ref()) {
            upstream_options.country_header = self.country_header(h, raw);
        }
        (upstreams, upstream_options)
    }

    /// `upstream_options.tls`: `None` unless `enabled`; verification needs the name to check.
    fn upstream_tls(&mut self, t: &S<RawUpstreamTls>) -> Option<UpstreamTls> {
        const FIELD: &str = "upstream_options.tls";
        let raw = &t.value;
        if !raw.enabled.as_ref().is_some_and(|e| e.value) {
            return None;
        }
        let verify = raw.verify.as_ref().is_none_or(|v| v.value);
        let sni = raw
            .sni
            .as_ref()
            .map(|s| s.value.trim().to_ascii_lowercase());
        if let (Some(s), Some(at)) = (&sni, &raw.sni) {
            if http::uri::Authority::try_from(s.as_str()).is_err()
                || s.is_empty()
                || s.contains(':')
            {
                self.err(
                    at,
                    format!("{FIELD}.sni"),
                    format!("{:?} is not a host name", at.value),
                );
            }
        }
        if verify && sni.is_none() {
            self.err(
                t,
                format!("{FIELD}.sni"),
                "give the name the origin's certificate is for (it is sent as SNI and checked), or verify: false",
            );
        }
        let ca = raw.ca.as_ref().map(|c| (c, self.dir.join(c.value.trim())));
        if let Some((_, path)) = &ca {
            if let Ok(bytes) = std::fs::read(path) {
                self.loaded_hashes
                    .push((path.clone(), super::cache::content_hash(&bytes)));
            }
            self.list_files.push(path.clone());
        }
        match crate::tls::upstream::connector(ca.as_ref().map(|(_, p)| p.as_path()), verify) {
            Ok(c) => Some(UpstreamTls {
                sni,
                verify,
                ca: ca.map(|(_, p)| p),
                connector: std::sync::Arc::new(c),
            }),
            Err(e) => {
                match &ca {
                    Some((at, _)) => self.err(*at, format!("{FIELD}.ca"), e),
                    None => self.err(t, FIELD, e),
                }
                None
            }
        }
    }

    /// `upstream_options.country_header`: a header name sekisho does not write otherwise, with a
    /// country source to fill it.
    fn country_header(&mut self, h: &S<String>, raw: &RawConfig) -> Option<(String, HeaderName)> {
        const FIELD: &str = "upstream_options.country_header";
        let written = h.value.trim();
        let Ok(name) = HeaderName::from_bytes(written.as_bytes()) else {
            self.err(
                h,
                FIELD,
                format!("{:?} is not a header name (e.g. X-Country-Code)", h.value),
            );
            return None;
        };
        if NOT_A_COUNTRY_HEADER.contains(&name.as_str()) {
            self.err(
                h,
                FIELD,
                format!("{written:?} is a header sekisho writes or frames itself; pick another name (e.g. X-Country-Code)"),
            );
            return None;
        }
        // (a geo source given but broken has its own error already)
        let geo_given = raw
            .geo
            .as_ref()
            .is_some_and(|g| g.database.is_some() || g.header.is_some());
        if !geo_given {
            self.err(
                h,
                FIELD,
                "needs geo.database or geo.header (without one every client would be sent as XX)",
            );
            return None;
        }
        Some((written.to_string(), name))
    }
}

/// What is wrong with an upstream written as a URL or without a port, in words that show the
/// fix; `None` when it has the shape host:port (resolving it may still fail).
fn not_host_port(given: &str) -> Option<String> {
    let v = given.trim();
    if let Some((scheme, rest)) = v.split_once("://") {
        let host_port = rest.split(['/', '?', '#']).next().unwrap_or("");
        if scheme.eq_ignore_ascii_case("https") {
            return Some(format!(
                "{given:?}: write host:port without a scheme (sekisho talks plain HTTP to upstreams)"
            ));
        }
        let example = if has_port(host_port) {
            host_port.to_string()
        } else {
            with_port(host_port, 80)
        };
        return Some(format!(
            "{given:?}: write host:port without a scheme, e.g. {example:?}"
        ));
    }
    if v.is_empty() || v.contains(char::is_whitespace) || has_port(v) {
        return None;
    }
    Some(format!(
        "{given:?} has no port: write host:port, e.g. {:?}",
        with_port(v, 8000)
    ))
}

/// `host:port`, `[v6]:port`; a bare IPv6 address has colons but no port.
fn has_port(v: &str) -> bool {
    if v.parse::<IpAddr>().is_ok() {
        return false;
    }
    match v.strip_prefix('[') {
        Some(rest) => rest
            .split_once(']')
            .is_some_and(|(_, p)| p.starts_with(':')),
        None => v.contains(':'),
    }
}

fn with_port(host: &str, port: u16) -> String {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("[{bare}]:{port}"),
        _ => format!("{host}:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_are_host_port() {
        assert_eq!(
            not_host_port("127.0.0.1").as_deref(),
            Some("\"127.0.0.1\" has no port: write host:port, e.g. \"127.0.0.1:8000\"")
        );
        assert_eq!(
            not_host_port("http://a:80").as_deref(),
            Some("\"http://a:80\": write host:port without a scheme, e.g. \"a:80\"")
        );
        assert!(not_host_port("http://origin/app")
            .unwrap()
            .ends_with("e.g. \"origin:80\""));
        assert!(not_host_port("https://a:443")
            .unwrap()
            .contains("plain HTTP"));
        assert!(not_host_port("::1")
            .unwrap()
            .ends_with("e.g. \"[::1]:8000\""));
        assert!(not_host_port("[::1]")
            .unwrap()
            .ends_with("e.g. \"[::1]:8000\""));
        assert!(not_host_port("origin.internal")
            .unwrap()
            .contains("has no port"));
        for ok in [
            "127.0.0.1:8000",
            "[::1]:8000",
            "origin.internal:8000",
            "a b",
            "",
        ] {
            assert_eq!(not_host_port(ok), None, "{ok}");
        }
    }
}
