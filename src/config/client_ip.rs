//! `client_ip:`: whose forwarding header is believed, and how IPv6 clients are keyed.

use http::HeaderName;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{Validator, S};
use crate::iplist::{self, IpSet};

/// `client_ip:`.
#[derive(Debug, Clone)]
pub struct ClientIp {
    /// Peers whose forwarding header is believed.
    pub trusted_proxies: IpSet,
    /// The forwarding header (default `X-Forwarded-For`).
    pub header: HeaderName,
    /// IPv6 clients are keyed by this prefix (default 64).
    pub ipv6_prefix: u8,
    /// `trusted_proxies:` as read (the set keeps only merged ranges).
    pub trusted: Vec<IpNet>,
}

/// `client_ip:` as `sekisho config` prints it.
#[derive(Serialize)]
pub(super) struct EffectiveClientIp {
    trusted_proxies: Vec<String>,
    header: String,
    ipv6_prefix: u8,
}

impl ClientIp {
    pub(super) fn effective(&self) -> EffectiveClientIp {
        EffectiveClientIp {
            trusted_proxies: self.trusted.iter().map(IpNet::to_string).collect(),
            header: self.header.to_string(),
            ipv6_prefix: self.ipv6_prefix,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientIp {
    #[serde(default)]
    pub trusted_proxies: Vec<S<String>>,
    pub header: Option<S<String>>,
    pub ipv6_prefix: Option<S<u8>>,
}

impl Validator<'_> {
    pub(super) fn client_ip(&mut self, raw: Option<&RawClientIp>) -> ClientIp {
        let mut trusted = Vec::new();
        let mut header = HeaderName::from_static("x-forwarded-for");
        let mut ipv6_prefix = 64;
        if let Some(c) = raw {
            for (i, t) in c.trusted_proxies.iter().enumerate() {
                match iplist::parse_net(&t.value) {
                    Ok(n) => trusted.push(n),
                    Err(m) => self.err(t, format!("client_ip.trusted_proxies[{i}]"), m),
                }
            }
            if let Some(h) = &c.header {
                match HeaderName::from_bytes(h.value.trim().as_bytes()) {
                    Ok(n) => header = n,
                    Err(_) => self.err(
                        h,
                        "client_ip.header",
                        format!("{:?} is not a header name", h.value),
                    ),
                }
            }
            if let Some(p) = &c.ipv6_prefix {
                if p.value > 128 {
                    self.err(
                        p,
                        "client_ip.ipv6_prefix",
                        "must be from 0 to 128 (64 groups a typical customer's network)",
                    );
                } else {
                    ipv6_prefix = p.value;
                }
            }
        }
        ClientIp {
            trusted_proxies: IpSet::new(trusted.iter().copied()),
            header,
            ipv6_prefix,
            trusted,
        }
    }
}
