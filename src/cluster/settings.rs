//! `cluster:` as validated: where the store is, the fleet's name and this instance's, the
//! sync's timing. Built by the config loader; the sync reads it.

use std::time::Duration;

/// `cluster:`, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// `redis:` with the password from `password_env` put in: `redis://`, `rediss://` (TLS)
    /// or `redis+unix://`. Never printed as is: see [`ClusterSettings::redacted_url`].
    pub url: String,
    /// `name:`: instances with the same name share state; every store key starts with
    /// `sekisho:{name}:`.
    pub name: String,
    /// `instance:`: this instance's name in the membership (default `HOSTNAME:PID`).
    pub instance: String,
    /// `sync_interval:` (default 100 ms): how often approximate counts are exchanged with the
    /// store, bans and the switch read back.
    pub sync_interval: Duration,
    /// `timeout:` (default 5 ms): the longest a request waits on the store (exact rules only);
    /// also the deadline of every background command after its connection is up.
    pub timeout: Duration,
    /// `connect_timeout:` (default 1 s): a connection attempt to the store.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for ClusterSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSettings")
            .field("url", &self.redacted_url())
            .field("name", &self.name)
            .field("instance", &self.instance)
            .field("sync_interval", &self.sync_interval)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ClusterSettings {
    /// The URL with any password replaced by `***`, for logs and `sekisho config`.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    /// The prefix of every key this fleet keeps in the store.
    pub fn prefix(&self) -> String {
        format!("sekisho:{}:", self.name)
    }
}

/// `scheme://user:password@host` → `scheme://user:***@host`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((auth, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://***@{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_never_printed() {
        assert_eq!(
            redact("redis://:s3cret@10.0.0.1:6379/0"),
            "redis://:***@10.0.0.1:6379/0"
        );
        assert_eq!(
            redact("rediss://edge:s3cret@cache:6380"),
            "rediss://edge:***@cache:6380"
        );
        assert_eq!(
            redact("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
    }
}
