//! Who the client is: the socket peer, or, when the peer is a trusted proxy, the right-most
//! address in the forwarding header that is not itself a trusted proxy.
//!
//! A header from an untrusted peer is never read: anyone can write `X-Forwarded-For`.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

use crate::config::{ClientIp, GeoSettings};
use crate::engine::Country;

/// The client address of a request that arrived from `peer` with `headers`.
///
/// Walks the header from right to left (several header lines count as one list, in order);
/// each address that is a trusted proxy moves the walk one hop left. An unparseable entry stops
/// the walk at the last address seen, since nothing left of it can be vouched for. When every
/// address is trusted, the left-most is the client.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, policy: &ClientIp) -> IpAddr {
    let peer = peer.to_canonical();
    if policy.trusted_proxies.is_empty() || !policy.trusted_proxies.contains(peer) {
        return peer;
    }
    let mut client = peer;
    for value in headers.get_all(&policy.header).iter().rev() {
        // Entry by entry: a client can put any bytes in the part of the line it wrote, and
        // that must not spoil the entries our own proxies appended after it.
        for part in value.as_bytes().rsplit(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() {
                continue;
            }
            let Some(ip) = std::str::from_utf8(part).ok().and_then(parse_forwarded) else {
                return client;
            };
            client = ip;
            if !policy.trusted_proxies.contains(ip) {
                return ip;
            }
        }
    }
    client
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
    use http::{HeaderName, HeaderValue};

    fn policy(trusted: &[&str]) -> ClientIp {
        ClientIp {
            trusted_proxies: IpSet::new(trusted.iter().map(|s| parse_net(s).unwrap())),
            header: HeaderName::from_static("x-forwarded-for"),
            ipv6_prefix: 64,
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
