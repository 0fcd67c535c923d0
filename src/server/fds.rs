//! The descriptor limit: raised to what the system allows, and the share of it that client
//! connections may hold, so that a connection flood meets `connections.max_open` before the
//! process runs out of descriptors (and cannot accept, log or connect upstream).

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors kept for everything but client connections, besides one upstream connection
/// per client connection: listeners, logs, list files, the admin listener, the state file.
const RESERVED: u64 = 64;

/// Raises the soft descriptor limit to the hard one (systemd's advice: the soft limit stays
/// low by default only for programs that use `select()`), and returns the limit in force.
pub fn raise_limit() -> u64 {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return u64::MAX;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// The client connections a process with `limit` descriptors can hold: half of what is left
/// after [`RESERVED`], since each may need an upstream connection beside it.
pub fn client_share(limit: u64) -> usize {
    usize::try_from(limit.saturating_sub(RESERVED) / 2)
        .unwrap_or(usize::MAX)
        .max(1)
}

/// Raises the limit; holds `max_open` within it, logging when it does.
pub fn cap(table: &crate::conn::Table, max_open: usize) {
    let limit = raise_limit();
    let share = client_share(limit);
    table.set_descriptor_cap(share);
    if share < max_open {
        tracing::warn!(
            "connections.max_open {max_open} is more than {limit} descriptors can hold: client connections are held at {share} (half of the limit less {RESERVED}, the rest for upstream connections); raise LimitNOFILE (systemd) or ulimit -n"
        );
    } else {
        tracing::info!("descriptor limit {limit}: room for connections.max_open {max_open}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_of_what_is_left_goes_to_clients() {
        assert_eq!(client_share(1024), 480);
        assert_eq!(client_share(1_048_576), 524_256);
        assert_eq!(client_share(10), 1);
    }
}
