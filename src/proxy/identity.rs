//! Who the client is: the socket peer, or, when the peer is a trusted proxy, the right-most
//! address in the forwarding header that is not itself a trusted proxy.
//!
//! A header from an untrusted peer is never read: anyone can write `X-Forwarded-For`.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName};

use crate::config::{ClientIp, GeoSettings};
use crate::engine::Country;

/// The client of a request as sekisho resolved it, with where its entry sits in the
/// forwarding header, so that the chain sent upstream is built from the same walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The client address: the socket peer, or the right-most untrusted address its header
    /// names when the peer is a trusted proxy.
    pub ip: IpAddr,
    /// The socket peer (an IPv4-mapped address made plain).
    pub peer: IpAddr,
    /// Whether the peer is a trusted proxy, whose headers are believed.
    pub peer_trusted: bool,
    /// The client's own entry in the forwarding header: its line, counted from the last, and
    /// the byte it starts at. `None` when the client is the peer itself.
    entry: Option<(usize, usize)>,
}

/// The client of a request that arrived from `peer` with `headers`.
///
/// Walks the header from right to left (several header lines count as one list, in order);
/// each address that is a trusted proxy moves the walk one hop left. An unparseable entry stops
/// the walk at the last address seen, since nothing left of it can be vouched for. When every
/// address is trusted, the left-most is the client.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, policy: &ClientIp) -> Client {
    let peer = peer.to_canonical();
    let peer_trusted = !policy.trusted_proxies.is_empty() && policy.trusted_proxies.contains(peer);
    let mut client = Client {
        ip: peer,
        peer,
        peer_trusted,
        entry: None,
    };
    if !peer_trusted {
        return client;
    }
    for (line, value) in headers.get_all(&policy.header).iter().rev().enumerate() {
        // Entry by entry: a client can put any bytes in the part of the line it wrote, and
        // that must not spoil the entries our own proxies appended after it.
        let bytes = value.as_bytes();
        let mut end = bytes.len();
        loop {
            let start = bytes[..end]
                .iter()
                .rposition(|&b| b == b',')
                .map_or(0, |comma| comma + 1);
            let part = bytes[start..end].trim_ascii();
            if !part.is_empty() {
                let Some(ip) = std::str::from_utf8(part).ok().and_then(parse_forwarded) else {
                    return client;
                };
                client.ip = ip;
                client.entry = Some((line, start));
                if !policy.trusted_proxies.contains(ip) {
                    return client;
                }
            }
            if start == 0 {
                break;
            }
            end = start - 1;
        }
    }
    client
}

/// The client address of a request that arrived from `peer` with `headers`: [`resolve`]'s.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, policy: &ClientIp) -> IpAddr {
    resolve(peer, headers, policy).ip
}

impl Client {
    /// Calls `hop` with each address of the forwarding header from the client's entry
    /// rightwards, in order: the client, then every proxy that reported it (all trusted, since
    /// the walk crossed them), ports dropped. Nothing when the client is the peer itself.
    /// `headers` and `header` (`client_ip.header`) must be the ones it was resolved from.
    pub fn each_reported_hop(
        &self,
        headers: &HeaderMap,
        header: &HeaderName,
        mut hop: impl FnMut(IpAddr),
    ) {
        let Some((line, start)) = self.entry else {
            return;
        };
        let lines = headers.get_all(header);
        let skip = lines.iter().count().saturating_sub(line + 1);
        for (i, value) in lines.iter().skip(skip).enumerate() {
            let from = if i == 0 { start } else { 0 };
            let rest = value.as_bytes().get(from..).unwrap_or_default();
            for part in rest.split(|&b| b == b',') {
                // every entry here parsed in the walk; an empty one is skipped as there
                if let Some(ip) = std::str::from_utf8(part.trim_ascii())
                    .ok()
                    .and_then(parse_forwarded)
                {
                    hop(ip);
                }
            }
        }
    }
}

/// The client's country: the `geo.header` value when the socket peer is a trusted proxy (a CDN
/// sets it), else the database's answer for the client address, else unknown. `XX` (the
/// header value some CDNs use for "no country") counts as unknown.
pub fn country_of(
    geo: &GeoSettings,
    client_ip: &ClientIp,
    peer: IpAddr,
    client: IpAddr,
    headers: &HeaderMap,
) -> Country {
    if let Some(name) = &geo.header {
        if client_ip.trusted_proxies.contains(peer.to_canonical()) {
            if let Some(c) = headers
                .get(name)
                .and_then(|v| Country::parse(v.as_bytes().trim_ascii()))
            {
                return if c.0 == *b"XX" { Country::UNKNOWN } else { c };
            }
        }
    }
    geo.database
        .as_ref()
        .map_or(Country::UNKNOWN, |db| db.country(client))
}

/// `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]:4711`.
fn parse_forwarded(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<IpAddr>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iplist::{parse_net, IpSet};
    use http::HeaderValue;

    fn policy(trusted: &[&str]) -> ClientIp {
        let trusted: Vec<_> = trusted.iter().map(|s| parse_net(s).unwrap()).collect();
        ClientIp {
            trusted_proxies: IpSet::new(trusted.iter().copied()),
            header: HeaderName::from_static("x-forwarded-for"),
            ipv6_prefix: 64,
            trusted,
        }
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn country_header_only_from_trusted_peers() {
        let p = policy(&["10.0.0.0/8"]);
        let geo = GeoSettings {
            database: None,
            database_path: None,
            header: Some(HeaderName::from_static("cf-ipcountry")),
        };
        let mut h = HeaderMap::new();
        h.insert("cf-ipcountry", HeaderValue::from_static("jp"));
        let c = |peer, h: &HeaderMap| country_of(&geo, &p, ip(peer), ip("203.0.113.1"), h);
        assert_eq!(c("10.0.0.1", &h), Country(*b"JP"));
        assert_eq!(c("198.51.100.1", &h), Country::UNKNOWN);
        h.insert("cf-ipcountry", HeaderValue::from_static("XX"));
        assert_eq!(c("10.0.0.1", &h), Country::UNKNOWN);
        h.insert("cf-ipcountry", HeaderValue::from_static("Japan"));
        assert_eq!(c("10.0.0.1", &h), Country::UNKNOWN);
    }

    #[test]
    fn untrusted_peer_header_is_ignored() {
        let p = policy(&["10.0.0.0/8"]);
        let h = headers(&["203.0.113.9"]);
        assert_eq!(client_ip(ip("198.51.100.1"), &h, &p), ip("198.51.100.1"));
        assert_eq!(
            client_ip(ip("198.51.100.1"), &h, &policy(&[])),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn rightmost_untrusted_wins() {
        let p = policy(&["10.0.0.0/8"]);
        // a client that forged the left-most entry
        let h = headers(&["1.1.1.1, 203.0.113.9, 10.0.0.2"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &p), ip("203.0.113.9"));
        // two header lines are one list
        let h = headers(&["1.1.1.1", "203.0.113.9:5555, 10.1.1.1"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &p), ip("203.0.113.9"));
    }

    /// The hops [`Client::each_reported_hop`] reports for a request from `peer`.
    fn hops(peer: &str, lines: &[&str], p: &ClientIp) -> Vec<IpAddr> {
        let h = headers(lines);
        let c = resolve(ip(peer), &h, p);
        let mut out = Vec::new();
        c.each_reported_hop(&h, &p.header, |hop| out.push(hop));
        out
    }

    #[test]
    fn reported_hops_run_from_the_client_rightwards() {
        let p = policy(&["10.0.0.0/8"]);
        let v = |list: &[&str]| list.iter().map(|s| ip(s)).collect::<Vec<_>>();
        // the forged left-most entry is not part of the chain
        assert_eq!(
            hops("10.0.0.1", &["1.1.1.1, 203.0.113.9, 10.0.0.2"], &p),
            v(&["203.0.113.9", "10.0.0.2"])
        );
        // across lines, ports dropped, blanks skipped
        assert_eq!(
            hops(
                "10.0.0.1",
                &["1.1.1.1", "203.0.113.9:5555, ,10.1.1.1", "10.2.2.2"],
                &p
            ),
            v(&["203.0.113.9", "10.1.1.1", "10.2.2.2"])
        );
        // the client opens its line
        assert_eq!(
            hops(
                "10.0.0.1",
                &["6.6.6.6, 7.7.7.7", "203.0.113.9", "10.0.0.3"],
                &p
            ),
            v(&["203.0.113.9", "10.0.0.3"])
        );
        // garbage stops the walk: the chain starts right of it
        assert_eq!(
            hops("10.0.0.1", &["1.1.1.1, nonsense, 10.0.0.5"], &p),
            v(&["10.0.0.5"])
        );
        // all trusted: the whole chain
        assert_eq!(
            hops("10.0.0.1", &["10.9.9.9, [::ffff:10.0.0.5]:80"], &p),
            v(&["10.9.9.9", "10.0.0.5"])
        );
        // no header, or an untrusted peer: no reported hops
        assert!(hops("10.0.0.1", &[], &p).is_empty());
        assert!(hops("198.51.100.1", &["203.0.113.9"], &p).is_empty());
        let c = resolve(ip("::ffff:198.51.100.1"), &headers(&["203.0.113.9"]), &p);
        assert_eq!(
            (c.ip, c.peer, c.peer_trusted),
            (ip("198.51.100.1"), ip("198.51.100.1"), false)
        );
    }

    #[test]
    fn edge_cases() {
        let p = policy(&["10.0.0.0/8", "::1/128"]);
        // no header: the proxy itself
        assert_eq!(
            client_ip(ip("10.0.0.1"), &HeaderMap::new(), &p),
            ip("10.0.0.1")
        );
        // all trusted: the left-most
        assert_eq!(
            client_ip(ip("10.0.0.1"), &headers(&["10.9.9.9, 10.0.0.5"]), &p),
            ip("10.9.9.9")
        );
        // garbage stops the walk at the last trusted hop
        assert_eq!(
            client_ip(
                ip("10.0.0.1"),
                &headers(&["1.1.1.1, nonsense, 10.0.0.5"]),
                &p
            ),
            ip("10.0.0.5")
        );
        // IPv6, bracketed with port, and IPv4-mapped peers
        assert_eq!(
            client_ip(ip("::1"), &headers(&["[2001:db8::7]:443"]), &p),
            ip("2001:db8::7")
        );
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), &headers(&["192.0.2.5"]), &p),
            ip("192.0.2.5")
        );
    }
}
