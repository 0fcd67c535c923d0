//! `cluster:`: the Redis or Valkey store a fleet of instances shares limits, bans and the
//! under-attack switch through (the fleet sync's module). Without this section nothing
//! connects anywhere and every limit counts locally.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{format_duration, RawConfig, Validator, S};
use crate::cluster::settings::redact;
pub use crate::cluster::ClusterSettings;

/// `cluster:` as `sekisho config` prints it.
#[derive(Serialize)]
pub(super) struct EffectiveCluster {
    redis: String,
    name: String,
    instance: String,
    sync_interval: String,
    timeout: String,
    connect_timeout: String,
}

/// `cluster:` as `sekisho config` prints it.
pub(super) fn effective(c: &ClusterSettings) -> EffectiveCluster {
    EffectiveCluster {
        redis: c.redacted_url(),
        name: c.name.clone(),
        instance: c.instance.clone(),
        sync_interval: format_duration(c.sync_interval),
        timeout: format_duration(c.timeout),
        connect_timeout: format_duration(c.connect_timeout),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub redis: S<String>,
    pub password_env: Option<S<String>>,
    pub name: Option<S<String>>,
    pub instance: Option<S<String>>,
    pub sync_interval: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub connect_timeout: Option<S<String>>,
}

/// A name usable in a store key and a log line.
fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// This host's name, or `localhost`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

impl Validator<'_> {
    /// `cluster:`.
    pub(super) fn cluster(&mut self, raw: &RawConfig) -> Option<ClusterSettings> {
        let c = raw.cluster.as_ref()?;
        let url = self.cluster_url(c);
        let mut name_of = |v: Option<&S<String>>, field: &str, default: String| match v {
            None => Some(default),
            Some(n) if plain_name(n.value.trim()) => Some(n.value.trim().to_string()),
            Some(n) => {
                self.err(
                    n,
                    field,
                    format!(
                        "{:?}: use 1 to 64 letters, digits, '-', '_' or '.'",
                        n.value
                    ),
                );
                None
            }
        };
        let name = name_of(c.name.as_ref(), "cluster.name", "sekisho".to_string());
        let instance = name_of(
            c.instance.as_ref(),
            "cluster.instance",
            format!("{}:{}", hostname(), std::process::id()),
        );
        let sync_interval = self.duration_in(
            c.sync_interval.as_ref(),
            "cluster.sync_interval",
            Duration::from_millis(100),
            Duration::from_millis(10),
            Duration::from_secs(10),
        );
        let timeout = self.duration_in(
            c.timeout.as_ref(),
            "cluster.timeout",
            Duration::from_millis(5),
            Duration::from_millis(1),
            Duration::from_secs(1),
        );
        let connect_timeout = self.duration_in(
            c.connect_timeout.as_ref(),
            "cluster.connect_timeout",
            Duration::from_secs(1),
            Duration::from_millis(10),
            Duration::from_secs(30),
        );
        Some(ClusterSettings {
            url: url?,
            name: name?,
            instance: instance?,
            sync_interval,
            timeout,
            connect_timeout,
        })
    }

    /// `cluster.redis` with the password of `cluster.password_env` put in.
    fn cluster_url(&mut self, c: &RawCluster) -> Option<String> {
        let mut url = c.redis.value.trim().to_string();
        let scheme = url.split_once("://").map(|(s, _)| s);
        if !matches!(scheme, Some("redis" | "rediss" | "redis+unix" | "unix")) {
            self.err(
                &c.redis,
                "cluster.redis",
                format!("{url:?}: use redis://HOST:PORT/DB, rediss://HOST:PORT/DB (TLS) or redis+unix:///PATH"),
            );
            return None;
        }
        if let Some(env) = &c.password_env {
            let var = env.value.trim();
            match std::env::var(var) {
                Ok(p) if !p.is_empty() => match url.split_once("://") {
                    Some((scheme, rest)) if !rest.contains('@') => {
                        let p = percent_encode(&p);
                        url = format!("{scheme}://:{p}@{rest}");
                    }
                    _ => {
                        self.err(
                            env,
                            "cluster.password_env",
                            "the redis URL has a password already: give it in one place",
                        );
                        return None;
                    }
                },
                _ => {
                    self.err(
                        env,
                        "cluster.password_env",
                        format!("the environment variable {var:?} is not set (or empty)"),
                    );
                    return None;
                }
            }
        }
        if let Err(e) = redis::Client::open(url.as_str()) {
            self.err(
                &c.redis,
                "cluster.redis",
                format!("{:?}: {e}", redact(&url)),
            );
            return None;
        }
        Some(url)
    }
}

/// A password as it may stand in a URL's user-info part.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_percent_encoded_for_the_url() {
        assert_eq!(percent_encode("a b@c:d/é"), "a%20b%40c%3Ad%2F%C3%A9");
    }
}
