//! `connections:`: limits on client connections themselves, for attacks that never finish a
//! request for the rules to judge (a slowloris trickling its head, idle keep-alive hoarding).

use std::num::NonZeroU32;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::bytes::{format_byte_rate, parse_byte_rate};
use super::{format_duration, RawConfig, RawMode, Validator, S};
use crate::conn::body::BodyLimits;
use crate::engine::Mode;
use crate::limiter::Quota;

/// `connections:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// The whole request head must arrive within this (default 10 s): counted from accept on a
    /// new connection; on a kept-alive one, from the end of the previous response plus
    /// `idle_timeout` (the client may wait that long before it starts). Not reset by each read.
    pub header_timeout: Duration,
    /// A kept-alive connection with no request in progress is closed after this (default 60 s).
    pub idle_timeout: Duration,
    /// `body_timeout`, `body_min_rate`, `body_rate_grace`: a request body that stalls longer
    /// than 30 s between reads, or comes slower than 1 KiB/s on average after its first 10 s,
    /// is cut (408 if nothing was answered yet) and its connection closed.
    pub body: BodyLimits,
    /// Requests served on one connection before it is closed (default 10 000; nginx's
    /// `keepalive_requests` is 1000).
    pub max_requests_per_connection: u32,
    /// All client connections of the process (default 50 000). Over it, idle keep-alive
    /// connections are closed first, then new ones are refused. At run time it is also held
    /// under half the process's descriptor limit (the other half is for upstream connections).
    pub max_open: usize,
    /// `per_client.max_open`: concurrent connections of one client (default 256); `None` for
    /// `max_open: off`.
    pub per_client_max_open: Option<u32>,
    /// `per_client.rate` and `burst`: new connections per second of one client (its socket
    /// peer: an IPv4 address, or its `client_ip.ipv6_prefix` network; trusted proxies are
    /// exempt), as a token bucket (default 50/s, burst 200); `None` for `rate: off`.
    pub per_client_rate: Option<Quota>,
    /// `mode`: `count` refuses no connection but counts what it would have refused.
    pub mode: Mode,
    /// Streams one HTTP/2 connection may have open at once (default 100, as nginx's
    /// `http2_max_concurrent_streams` and Pingora's default).
    pub http2_max_concurrent_streams: u32,
}

/// The default `per_client` bucket: 50 new connections a second, 200 at once.
fn default_client_rate() -> Option<Quota> {
    Quota::new(NonZeroU32::new(50)?, 1, NonZeroU32::new(200)?)
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body: BodyLimits::default(),
            max_requests_per_connection: 10_000,
            max_open: 50_000,
            per_client_max_open: Some(256),
            per_client_rate: default_client_rate(),
            mode: Mode::Enforce,
            http2_max_concurrent_streams: 100,
        }
    }
}

/// `connections:` as `sekisho config` prints it.
#[derive(Serialize)]
pub(super) struct EffectiveConnections {
    header_timeout: String,
    idle_timeout: String,
    body_timeout: String,
    body_min_rate: String,
    body_rate_grace: String,
    max_requests_per_connection: u32,
    max_open: usize,
    per_client: EffectivePerClient,
    mode: &'static str,
    http2_max_concurrent_streams: u32,
}

#[derive(Serialize)]
struct EffectivePerClient {
    max_open: String,
    rate: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    burst: Option<u32>,
}

impl ConnectionSettings {
    pub(super) fn effective(&self) -> EffectiveConnections {
        EffectiveConnections {
            header_timeout: format_duration(self.header_timeout),
            idle_timeout: format_duration(self.idle_timeout),
            body_timeout: format_duration(self.body.stall),
            body_min_rate: self
                .body
                .min_rate
                .map_or_else(|| "off".to_string(), format_byte_rate),
            body_rate_grace: format_duration(self.body.grace),
            max_requests_per_connection: self.max_requests_per_connection,
            max_open: self.max_open,
            per_client: EffectivePerClient {
                max_open: self
                    .per_client_max_open
                    .map_or_else(|| "off".to_string(), |n| n.to_string()),
                rate: self
                    .per_client_rate
                    .as_ref()
                    .map_or_else(|| "off".to_string(), |q| q.rate()),
                burst: self.per_client_rate.as_ref().map(|q| q.burst().get()),
            },
            mode: self.mode.as_str(),
            http2_max_concurrent_streams: self.http2_max_concurrent_streams,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConnections {
    pub header_timeout: Option<S<String>>,
    pub idle_timeout: Option<S<String>>,
    pub body_timeout: Option<S<String>>,
    pub body_min_rate: Option<S<String>>,
    pub body_rate_grace: Option<S<String>>,
    pub max_requests_per_connection: Option<S<u32>>,
    pub max_open: Option<S<u64>>,
    pub per_client: Option<RawPerClient>,
    pub mode: Option<RawMode>,
    pub http2_max_concurrent_streams: Option<S<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPerClient {
    pub max_open: Option<S<String>>,
    pub rate: Option<S<String>>,
    pub burst: Option<S<u32>>,
}

impl Validator<'_> {
    /// `connections:`.
    pub(super) fn connections(&mut self, raw: &RawConfig) -> ConnectionSettings {
        let c = raw.connections.as_ref();
        let default = ConnectionSettings::default();
        let max_requests_per_connection =
            match c.and_then(|c| c.max_requests_per_connection.as_ref()) {
                Some(m) if m.value == 0 => {
                    self.err(
                        m,
                        "connections.max_requests_per_connection",
                        "must be at least 1",
                    );
                    default.max_requests_per_connection
                }
                Some(m) => m.value,
                None => default.max_requests_per_connection,
            };
        let http2_max_concurrent_streams =
            match c.and_then(|c| c.http2_max_concurrent_streams.as_ref()) {
                Some(m) if !(1..=10_000).contains(&m.value) => {
                    self.err(
                        m,
                        "connections.http2_max_concurrent_streams",
                        format!("{} is out of range (1 to 10000)", m.value),
                    );
                    default.http2_max_concurrent_streams
                }
                Some(m) => m.value,
                None => default.http2_max_concurrent_streams,
            };
        ConnectionSettings {
            http2_max_concurrent_streams,
            header_timeout: self.duration_in(
                c.and_then(|c| c.header_timeout.as_ref()),
                "connections.header_timeout",
                default.header_timeout,
                Duration::from_secs(1),
                Duration::from_secs(3600),
            ),
            idle_timeout: self.duration_in(
                c.and_then(|c| c.idle_timeout.as_ref()),
                "connections.idle_timeout",
                default.idle_timeout,
                Duration::from_secs(1),
                Duration::from_secs(86_400),
            ),
            body: self.body_limits(c),
            max_requests_per_connection,
            max_open: match c.and_then(|c| c.max_open.as_ref()) {
                Some(m) if m.value == 0 || m.value > 10_000_000 => {
                    self.err(
                        m,
                        "connections.max_open",
                        "must be from 1 to 10000000 (connections of the whole process)",
                    );
                    default.max_open
                }
                Some(m) => m.value as usize,
                None => default.max_open,
            },
            per_client_max_open: self.client_max_open(c.and_then(|c| c.per_client.as_ref())),
            per_client_rate: self.client_rate(c.and_then(|c| c.per_client.as_ref())),
            mode: c.and_then(|c| c.mode).unwrap_or_default().into(),
        }
    }

    /// `connections.body_timeout`, `body_min_rate`, `body_rate_grace`.
    fn body_limits(&mut self, c: Option<&RawConnections>) -> BodyLimits {
        let default = BodyLimits::default();
        let min_rate = match c.and_then(|c| c.body_min_rate.as_ref()) {
            None => default.min_rate,
            Some(r) if r.value.trim() == "off" => None,
            Some(r) => match parse_byte_rate(&r.value) {
                Ok(rate) => Some(rate),
                Err(m) => {
                    self.err(r, "connections.body_min_rate", m);
                    default.min_rate
                }
            },
        };
        BodyLimits {
            stall: self.duration_in(
                c.and_then(|c| c.body_timeout.as_ref()),
                "connections.body_timeout",
                default.stall,
                Duration::from_secs(1),
                Duration::from_secs(3600),
            ),
            min_rate,
            grace: self.duration_in(
                c.and_then(|c| c.body_rate_grace.as_ref()),
                "connections.body_rate_grace",
                default.grace,
                Duration::from_secs(1),
                Duration::from_secs(3600),
            ),
        }
    }

    /// `connections.per_client`: the bucket, `None` for `rate: off`.
    fn client_rate(&mut self, raw: Option<&RawPerClient>) -> Option<Quota> {
        let default = default_client_rate();
        let Some(rate) = raw.and_then(|r| r.rate.as_ref()) else {
            if let Some(b) = raw.and_then(|r| r.burst.as_ref()) {
                self.err(b, "connections.per_client.burst", "needs a rate beside it");
            }
            return default;
        };
        let Some(raw) = raw else { return default };
        if rate.value.trim() == "off" {
            return None;
        }
        let default_burst =
            |count: NonZeroU32| NonZeroU32::new(200).map_or(count, |b| b.max(count));
        self.quota(
            rate,
            raw.burst.as_ref(),
            default_burst,
            "connections.per_client",
        )
        .or(default)
    }

    /// `connections.per_client.max_open`: a count, or `off`.
    fn client_max_open(&mut self, raw: Option<&RawPerClient>) -> Option<u32> {
        let default = ConnectionSettings::default().per_client_max_open;
        let Some(m) = raw.and_then(|r| r.max_open.as_ref()) else {
            return default;
        };
        let text = m.value.trim();
        if text == "off" {
            return None;
        }
        match text.parse::<u32>() {
            Ok(n) if (1..=1_000_000).contains(&n) => Some(n),
            _ => {
                self.err(
                    m,
                    "connections.per_client.max_open",
                    format!("{text:?}: a count of connections from 1 to 1000000, or off (a browser opens about 6 per host; a NAT'd office many times that)"),
                );
                default
            }
        }
    }
}
