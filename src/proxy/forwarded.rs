//! What the origin learns about the client: `X-Forwarded-For`, `X-Real-IP`,
//! `X-Forwarded-Proto`, RFC 7239 `Forwarded` and the country header, written from the client
//! and country sekisho resolved (`identity.rs`) onto the upstream request head.
//!
//! It owns the rule that a header an untrusted peer sent under one of these names never
//! reaches the origin. It must not resolve anyone itself (the judge has done that, once) nor
//! touch anything else in the head (`forward::upstream_request` does).

use std::fmt::Write as _;
use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use smallvec::SmallVec;

use super::identity::Client;
use crate::config::Config;
use crate::engine::Country;

/// The wire spelling of the names sekisho writes; matched case-insensitively on the way in.
const XFF: &str = "X-Forwarded-For";
const REAL_IP: &str = "X-Real-IP";
const PROTO: &str = "X-Forwarded-Proto";
const FORWARDED: &str = "Forwarded";

/// How one snapshot forwards the client: `upstream_options.forwarded_headers`, `forwarded` and
/// `country_header`, with the names to drop from untrusted peers, resolved once at load.
#[derive(Debug)]
pub struct Forwarding {
    headers: bool,
    forwarded: bool,
    /// As written in the config (for the wire), and as a name.
    country: Option<(String, HeaderName)>,
    /// Believed from trusted peers only, so dropped from the others: `client_ip.header` and
    /// `geo.header` when they are not one of the four written here.
    untrusted_extra: SmallVec<[HeaderName; 2]>,
    /// `client_ip.header`: where the chain the trusted peers reported is read.
    chain_header: HeaderName,
}

impl Forwarding {
    /// The plan of `config`.
    pub fn new(config: &Config) -> Self {
        let o = &config.upstream_options;
        let written = [XFF, REAL_IP, PROTO, FORWARDED];
        let mut untrusted_extra = SmallVec::new();
        for name in [Some(&config.client_ip.header), config.geo.header.as_ref()]
            .into_iter()
            .flatten()
        {
            let ours = written
                .iter()
                .any(|w| name.as_str().eq_ignore_ascii_case(w));
            if !ours && !untrusted_extra.contains(name) {
                untrusted_extra.push(name.clone());
            }
        }
        Self {
            headers: o.forwarded_headers,
            forwarded: o.forwarded,
            country: o.country_header.clone(),
            untrusted_extra,
            chain_header: config.client_ip.header.clone(),
        }
    }

    /// Whether the country is sent, so the judge must look it up even if no rule needs it.
    pub fn sends_country(&self) -> bool {
        self.country.is_some()
    }

    /// Writes the client's forwarding headers onto `req`, the upstream head built from a
    /// request with headers `down` (read, never written), whose client is `client`.
    ///
    /// With `forwarded_headers` (the default):
    /// - From an untrusted peer, whatever it sent as `X-Forwarded-For`, `X-Real-IP`,
    ///   `X-Forwarded-Proto`, `Forwarded`, `client_ip.header` or `geo.header` is removed. Then
    ///   `X-Forwarded-For: <peer>`, `X-Real-IP: <peer>`, `X-Forwarded-Proto: http` (`https` over TLS).
    /// - From a trusted peer, `X-Forwarded-For` is the chain as the trusted proxies reported it
    ///   from the resolved client rightwards (entries left of the client, which no trusted hop
    ///   vouches for, are dropped; ports are dropped), then the peer: `client, proxy..., peer`.
    ///   `X-Real-IP` is the client. `X-Forwarded-Proto` is kept as the peer sent it, else
    ///   `http`. `Forwarded` is kept as sent unless sekisho writes its own.
    /// - With `forwarded`, `Forwarded` lists the same hops as `X-Forwarded-For`, one `for=`
    ///   element each (IPv6 quoted and bracketed), the client's element carrying
    ///   `proto=`: the left-most `X-Forwarded-Proto` entry from a trusted peer when it is a
    ///   URI scheme, else `http`.
    ///
    /// With `country_header`, that header is set to `country` (`XX` when unknown), whoever the
    /// peer is, replacing what came.
    pub fn apply(
        &self,
        req: &mut RequestHeader,
        down: &HeaderMap,
        client: &Client,
        country: Country,
        tls: bool,
    ) -> Result<()> {
        if self.headers {
            self.write_forwarded(req, down, client, if tls { "https" } else { "http" })?;
        }
        if let Some((written, _)) = &self.country {
            let code = if country == Country::UNKNOWN {
                HeaderValue::from_static("XX")
            } else {
                HeaderValue::from_bytes(&country.0)
                    .or_err(ErrorType::InternalError, "country code as a header value")?
            };
            req.insert_header(written.clone(), code)?;
        }
        Ok(())
    }

    fn write_forwarded(
        &self,
        req: &mut RequestHeader,
        down: &HeaderMap,
        client: &Client,
        own_proto: &'static str,
    ) -> Result<()> {
        let bad_value = |_| Error::explain(ErrorType::InternalError, "forwarding header value");
        let real_ip = ip_value(client.ip)?;
        if !client.peer_trusted {
            if !self.forwarded {
                req.remove_header(FORWARDED);
            }
            for name in &self.untrusted_extra {
                req.remove_header(name);
            }
            // the peer is the client: one value for both
            req.insert_header(XFF, real_ip.clone())?;
            req.insert_header(REAL_IP, real_ip)?;
            req.insert_header(PROTO, HeaderValue::from_static(own_proto))?;
            if self.forwarded {
                let mut f = String::with_capacity(48);
                for_element(&mut f, client.ip);
                f.push_str(";proto=");
                f.push_str(own_proto);
                req.insert_header(FORWARDED, HeaderValue::try_from(f).map_err(bad_value)?)?;
            }
            return Ok(());
        }
        let mut chain = String::with_capacity(64);
        client.each_reported_hop(down, &self.chain_header, |ip| {
            let _ = write!(chain, "{ip}, ");
        });
        let _ = write!(chain, "{}", client.peer);
        if self.forwarded {
            let proto = down
                .get(PROTO)
                .and_then(|v| v.as_bytes().split(|&b| b == b',').next())
                .map(<[u8]>::trim_ascii)
                .filter(|p| is_scheme(p))
                .and_then(|p| std::str::from_utf8(p).ok())
                .unwrap_or(own_proto);
            let mut f = String::with_capacity(chain.len() * 2 + 16);
            let mut first = true;
            let mut element = |ip: IpAddr| {
                if !first {
                    f.push_str(", ");
                }
                for_element(&mut f, ip);
                if first {
                    f.push_str(";proto=");
                    f.push_str(proto);
                }
                first = false;
            };
            client.each_reported_hop(down, &self.chain_header, &mut element);
            element(client.peer);
            req.insert_header(FORWARDED, HeaderValue::try_from(f).map_err(bad_value)?)?;
        }
        req.insert_header(XFF, HeaderValue::try_from(chain).map_err(bad_value)?)?;
        req.insert_header(REAL_IP, real_ip)?;
        if !down.contains_key(PROTO) {
            req.insert_header(PROTO, HeaderValue::from_static(own_proto))?;
        }
        Ok(())
    }
}

/// `ip` as a header value, formatted on the stack and copied once.
fn ip_value(ip: IpAddr) -> Result<HeaderValue> {
    let mut buf = [0u8; 48];
    let mut rest = &mut buf[..];
    std::io::Write::write_fmt(&mut rest, format_args!("{ip}"))
        .or_err(ErrorType::InternalError, "formatting an address")?;
    let len = 48 - rest.len();
    HeaderValue::from_bytes(&buf[..len])
        .or_err(ErrorType::InternalError, "an address as a header value")
}

/// An RFC 7239 `for=` element: `for=192.0.2.1`, `for="[2001:db8::1]"` (section 6: an IPv6
/// address is bracketed, and then quoted since `[`, `:` and `]` are not token characters).
fn for_element(out: &mut String, ip: IpAddr) {
    let _ = match ip {
        IpAddr::V4(v4) => write!(out, "for={v4}"),
        IpAddr::V6(v6) => write!(out, "for=\"[{v6}]\""),
    };
}

/// A URI scheme (RFC 3986 3.1): `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`, which is also an
/// RFC 7239 token.
fn is_scheme(s: &[u8]) -> bool {
    s.first().is_some_and(u8::is_ascii_alphabetic)
        && s.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iplist::{parse_net, IpSet};
    use crate::proxy::identity::resolve;

    fn plan(forwarded: bool, country: Option<&str>) -> Forwarding {
        Forwarding {
            headers: true,
            forwarded,
            country: country.map(|c| {
                (
                    c.to_string(),
                    HeaderName::from_bytes(c.as_bytes()).expect("name"),
                )
            }),
            untrusted_extra: [HeaderName::from_static("cf-ipcountry")]
                .into_iter()
                .collect(),
            chain_header: HeaderName::from_static("x-forwarded-for"),
        }
    }

    fn policy() -> crate::config::ClientIp {
        crate::config::ClientIp {
            trusted_proxies: IpSet::new([parse_net("10.0.0.0/8").expect("net")]),
            header: HeaderName::from_static("x-forwarded-for"),
            ipv6_prefix: 64,
            trusted: vec![parse_net("10.0.0.0/8").expect("net")],
        }
    }

    /// The upstream head `plan` makes of a request from `peer` with `lines`, as
    /// (lower-case name, value) pairs of the forwarding fields, in name order.
    fn sent(
        plan: &Forwarding,
        peer: &str,
        lines: &[(&str, &str)],
        country: Country,
    ) -> Vec<(String, String)> {
        let mut down = RequestHeader::build("GET", b"/", None).expect("request");
        for (k, v) in lines {
            down.append_header(k.to_string(), *v).expect("header");
        }
        let client = resolve(peer.parse().expect("ip"), &down.headers, &policy());
        let mut up = Box::new(down.clone());
        plan.apply(&mut up, &down.headers, &client, country, false)
            .expect("apply");
        let mut out: Vec<_> = up
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .filter(|(k, _)| k != "accept")
            .collect();
        out.sort();
        out
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<_> = p
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn an_untrusted_peer_gets_only_what_sekisho_knows() {
        let spoofed = [
            ("X-Forwarded-For", "6.6.6.6"),
            ("x-forwarded-for", "7.7.7.7"),
            ("X-Real-IP", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
            ("Forwarded", "for=6.6.6.6"),
            ("CF-IPCountry", "JP"),
            ("X-Country-Code", "JP"),
            ("Accept", "*/*"),
        ];
        let got = sent(
            &plan(false, Some("X-Country-Code")),
            "198.51.100.7",
            &spoofed,
            Country::UNKNOWN,
        );
        assert_eq!(
            got,
            pairs(&[
                ("x-forwarded-for", "198.51.100.7"),
                ("x-real-ip", "198.51.100.7"),
                ("x-forwarded-proto", "http"),
                ("x-country-code", "XX"),
            ])
        );
        let got = sent(&plan(true, None), "2001:db8::7", &spoofed, Country(*b"JP"));
        assert_eq!(
            got,
            pairs(&[
                ("x-forwarded-for", "2001:db8::7"),
                ("x-real-ip", "2001:db8::7"),
                ("x-forwarded-proto", "http"),
                ("forwarded", "for=\"[2001:db8::7]\";proto=http"),
                // not configured: a header like any other
                ("x-country-code", "JP"),
            ])
        );
    }

    #[test]
    fn a_trusted_peer_has_its_chain_extended_from_the_client() {
        let lines = [
            ("X-Forwarded-For", "6.6.6.6, 203.0.113.9"),
            ("X-Forwarded-For", "10.0.0.2:8080"),
            ("X-Forwarded-Proto", "HTTPS, http"),
            ("CF-IPCountry", "JP"),
        ];
        let got = sent(
            &plan(true, Some("X-Country-Code")),
            "10.0.0.1",
            &lines,
            Country(*b"JP"),
        );
        assert_eq!(
            got,
            pairs(&[
                ("x-forwarded-for", "203.0.113.9, 10.0.0.2, 10.0.0.1"),
                ("x-real-ip", "203.0.113.9"),
                ("x-forwarded-proto", "HTTPS, http"),
                ("cf-ipcountry", "JP"),
                ("x-country-code", "JP"),
                (
                    "forwarded",
                    "for=203.0.113.9;proto=HTTPS, for=10.0.0.2, for=10.0.0.1"
                ),
            ])
        );
        // no header: the peer is the client; a proto that is no scheme is not repeated
        let got = sent(
            &plan(true, None),
            "10.0.0.1",
            &[("X-Forwarded-Proto", "h t\"tp")],
            Country::UNKNOWN,
        );
        assert_eq!(
            got,
            pairs(&[
                ("x-forwarded-for", "10.0.0.1"),
                ("x-real-ip", "10.0.0.1"),
                ("x-forwarded-proto", "h t\"tp"),
                ("forwarded", "for=10.0.0.1;proto=http"),
            ])
        );
        // without `forwarded`, a trusted peer's Forwarded is passed as it came
        let got = sent(
            &plan(false, None),
            "10.0.0.1",
            &[("Forwarded", "for=192.0.2.1")],
            Country::UNKNOWN,
        );
        assert!(
            got.contains(&("forwarded".into(), "for=192.0.2.1".into())),
            "{got:?}"
        );
    }

    #[test]
    fn addresses_and_schemes() {
        let mut s = String::new();
        for_element(&mut s, "192.0.2.1".parse().expect("ip"));
        assert_eq!(s, "for=192.0.2.1");
        let v = ip_value(
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
                .parse()
                .expect("ip"),
        )
        .expect("value");
        assert_eq!(v.as_bytes(), b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
        assert!(is_scheme(b"https") && is_scheme(b"coap+tcp"));
        assert!(!is_scheme(b"") && !is_scheme(b"1http") && !is_scheme(b"ht tp"));
    }
}
