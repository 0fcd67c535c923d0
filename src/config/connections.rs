//! `connections:`: limits on client connections themselves, for attacks that never finish a
//! request for the rules to judge (a slowloris trickling its head, idle keep-alive hoarding).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{format_duration, RawConfig, Validator, S};

/// `connections:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// The whole request head must arrive within this (default 10 s): counted from accept on a
    /// new connection; on a kept-alive one, from the end of the previous response plus
    /// `idle_timeout` (the client may wait that long before it starts). Not reset by each read.
    pub header_timeout: Duration,
    /// A kept-alive connection with no request in progress is closed after this (default 60 s).
    pub idle_timeout: Duration,
    /// Requests served on one connection before it is closed (default 10 000; nginx's
    /// `keepalive_requests` is 1000).
    pub max_requests_per_connection: u32,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_requests_per_connection: 10_000,
        }
    }
}

/// `connections:` as `sekisho config` prints it.
#[derive(Serialize)]
pub(super) struct EffectiveConnections {
    header_timeout: String,
    idle_timeout: String,
    max_requests_per_connection: u32,
}

impl ConnectionSettings {
    pub(super) fn effective(&self) -> EffectiveConnections {
        EffectiveConnections {
            header_timeout: format_duration(self.header_timeout),
            idle_timeout: format_duration(self.idle_timeout),
            max_requests_per_connection: self.max_requests_per_connection,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConnections {
    pub header_timeout: Option<S<String>>,
    pub idle_timeout: Option<S<String>>,
    pub max_requests_per_connection: Option<S<u32>>,
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
        ConnectionSettings {
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
            max_requests_per_connection,
        }
    }
}
