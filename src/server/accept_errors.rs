//! Failed accepts (out of descriptors, out of memory): Pingora's accept loop logs a line for
//! each and, for `EMFILE`, waits a second before it tries again, per listener. This layer
//! counts every such line (`sekisho_accept_errors_total`) and lets at most one line a second
//! through, its own, saying how many failed since the last one and what to do; the process
//! keeps serving the connections it has and accepts again by itself once descriptors free up.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::metrics::ACCEPT_ERRORS;

/// Where Pingora logs its failed accepts.
const TARGET: &str = "pingora_core::services::listening";
/// How its line starts.
const PREFIX: &str = "Accept() failed";

/// The layer; see the module docs.
#[derive(Debug, Default)]
pub struct AcceptErrors {
    /// The Unix second of the last line let through.
    last_line: AtomicU64,
    /// Failures counted when the last line was let through.
    last_count: AtomicU64,
}

/// Picks out the event's message when it is an accept failure.
#[derive(Default)]
struct Message(Option<String>);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() != "message" {
            return;
        }
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        if text.starts_with(PREFIX) {
            self.0 = Some(text);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" && value.starts_with(PREFIX) {
            self.0 = Some(value.to_string());
        }
    }
}

impl AcceptErrors {
    /// Counts one failure at Unix second `now`; the number of failures to report if a line is
    /// due (none was let through this second).
    fn count(&self, now: u64) -> Option<u64> {
        let total = ACCEPT_ERRORS.fetch_add(1, Ordering::Relaxed) + 1;
        let last = self.last_line.load(Ordering::Relaxed);
        if last == now
            || self
                .last_line
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return None;
        }
        let before = self.last_count.swap(total, Ordering::Relaxed);
        Some(total - before)
    }
}

impl<S: Subscriber> Layer<S> for AcceptErrors {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        // Pingora logs through the `log` crate: the target is in the normalized metadata
        use tracing_log::NormalizeEvent;
        let target = match event.normalized_metadata() {
            Some(m) => m.target() == TARGET,
            None => event.metadata().target() == TARGET,
        };
        if !target {
            return true;
        }
        let mut message = Message::default();
        event.record(&mut message);
        let Some(text) = message.0 else {
            return true;
        };
        let now = crate::proxy::unix_now();
        if let Some(n) = self.count(now) {
            let why = text.trim_start_matches(PREFIX).trim();
            tracing::error!(
                target: "sekisho::accept",
                "cannot accept new connections: {why} ({n} failed accepts since the last such line; at most one line a second, all counted in sekisho_accept_errors_total). The connections open are still served and accepting resumes by itself once descriptors free up; if this is a descriptor limit, raise LimitNOFILE or lower connections.max_open"
            );
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_with_what_it_stood_for() {
        let l = AcceptErrors::default();
        let start = ACCEPT_ERRORS.load(Ordering::Relaxed);
        assert_eq!(l.count(100), Some(start + 1));
        assert_eq!(l.count(100), None);
        assert_eq!(l.count(100), None);
        assert_eq!(l.count(101), Some(3));
        assert_eq!(l.count(105), Some(1));
        assert!(ACCEPT_ERRORS.load(Ordering::Relaxed) >= start + 5);
    }
}
