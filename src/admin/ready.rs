//! `GET /readyz`: what must hold before the proxy counts as ready, and what is missing when it
//! does not. It reads flags that others set (the server marks listeners serving, the proxy
//! marks upstreams down); it sets none and touches no socket.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::limiter::Clock;
use crate::proxy::State;

/// The configured listeners (each `listen` entry, then the admin listener) and whether each is
/// serving: set once Pingora has been handed its socket and runs the service, cleared when
/// the service starts to shut down.
#[derive(Debug, Default)]
pub struct Listeners {
    entries: Vec<Listener>,
}

/// One listener.
#[derive(Debug)]
pub struct Listener {
    /// The config field that names it: `listen[0]`, `admin.listen`.
    pub field: String,
    /// Its address.
    pub addr: SocketAddr,
    serving: AtomicBool,
}

impl Listeners {
    /// The listeners, none serving yet; their index is their place in `entries`.
    pub fn new(entries: impl IntoIterator<Item = (String, SocketAddr)>) -> Self {
        let entries = entries
            .into_iter()
            .map(|(field, addr)| Listener {
                field,
                addr,
                serving: AtomicBool::new(false),
            })
            .collect();
        Self { entries }
    }

    /// Marks listener `i` serving or not (an unknown index is ignored).
    pub fn set_serving(&self, i: usize, serving: bool) {
        if let Some(l) = self.entries.get(i) {
            l.serving.store(serving, Ordering::Release);
        }
    }

    /// Every listener, with whether it serves now.
    pub fn all(&self) -> impl Iterator<Item = (&Listener, bool)> {
        self.entries
            .iter()
            .map(|l| (l, l.serving.load(Ordering::Acquire)))
    }

    /// The listeners not serving now.
    pub fn not_serving(&self) -> impl Iterator<Item = &Listener> {
        self.entries
            .iter()
            .filter(|l| !l.serving.load(Ordering::Acquire))
    }
}

/// Why the proxy is not ready, one reason a line; empty when it is ready: every configured
/// listener serves, and a config is loaded with an upstream not marked down.
pub fn not_ready(state: &State, listeners: &Listeners) -> Vec<String> {
    let mut reasons: Vec<String> = listeners
        .not_serving()
        .map(|l| format!("{} {}: not serving", l.field, l.addr))
        .collect();
    if !state.snapshot.load().upstreams.any_up(state.clock.now()) {
        reasons.push("every upstream refused its last connection".to_string());
    }
    reasons
}

/// The `/readyz` body for `reasons`.
pub fn body(reasons: &[String]) -> String {
    if reasons.is_empty() {
        return "ready\n".to_string();
    }
    reasons
        .iter()
        .map(|r| format!("not ready: {r}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two() -> Listeners {
        Listeners::new([
            ("listen[0]".to_string(), "127.0.0.1:8080".parse().unwrap()),
            (
                "admin.listen".to_string(),
                "127.0.0.1:9248".parse().unwrap(),
            ),
        ])
    }

    fn fields(l: &Listeners) -> Vec<&str> {
        l.not_serving().map(|l| l.field.as_str()).collect()
    }

    #[test]
    fn a_listener_counts_only_while_marked_serving() {
        let l = two();
        assert_eq!(fields(&l), ["listen[0]", "admin.listen"]);
        l.set_serving(1, true);
        assert_eq!(fields(&l), ["listen[0]"]);
        l.set_serving(0, true);
        assert!(fields(&l).is_empty());
        l.set_serving(0, false);
        assert_eq!(fields(&l), ["listen[0]"]);
        l.set_serving(7, true); // not a listener: no effect
        assert_eq!(fields(&l), ["listen[0]"]);
    }

    #[test]
    fn the_body_says_ready_or_each_reason() {
        assert_eq!(body(&[]), "ready\n");
        let reasons = [
            "listen[0] 127.0.0.1:8080: not serving".to_string(),
            "every upstream refused its last connection".to_string(),
        ];
        assert_eq!(
            body(&reasons),
            "not ready: listen[0] 127.0.0.1:8080: not serving\nnot ready: every upstream refused its last connection\n"
        );
    }
}
