//! The decision log: one JSON line per refused or counted request (and, optionally, a sample
//! of allowed ones), for a SIEM (OpenSearch/Elasticsearch, Loki) to ingest as is.
//!
//! The request path formats a line and hands it to a bounded queue without waiting; a writer
//! thread ([`LineWriter`], shared with the access log) drains the queue to the file (or
//! stdout). When the writer falls behind, lines are dropped and counted
//! (`sekisho_decision_log_dropped_total`), never waited for. Under a flood, lines beyond
//! `max_lines_per_second` are not even formatted: they are counted in
//! `sekisho_decision_log_suppressed_total` (the metrics still count every request). Rotation
//! follows the logrotate convention: on `SIGUSR1` the file is reopened by name (use
//! `postrotate kill -USR1 $(pidof sekisho)` or `copytruncate`).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use prometheus::IntCounter;
use serde::Serialize;

use super::line_writer::LineWriter;
pub use super::line_writer::Target;

/// One line of the log.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// RFC 3339, UTC, milliseconds.
    pub timestamp: String,
    /// The client address (after trusted-proxy resolution).
    pub client_ip: IpAddr,
    /// ISO country code, `??` when unknown or not looked up.
    pub country: &'a str,
    /// Request method.
    pub method: &'a str,
    /// Host, without port.
    pub host: &'a str,
    /// Path as requested (not normalised), without the query string.
    pub path: &'a str,
    /// `User-Agent`, lossily decoded.
    pub user_agent: &'a str,
    /// The rule that decided (`deny-list`, `allow-list`, a rule name, or empty).
    pub rule: &'a str,
    /// `allow`, `deny`, `limit` or `count`.
    pub action: &'a str,
    /// `enforce` or `count`.
    pub mode: &'a str,
    /// The status sent to the client (0 if none was sent).
    pub status: u16,
    /// The status upstream answered, when the request went upstream.
    pub upstream_status: Option<u16>,
    /// The request id, as sent upstream in `X-Request-Id` and written in the access log.
    pub request_id: &'a str,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`; empty for a connection cut before a request.
    pub protocol: &'a str,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The client's JA4 TLS fingerprint; absent over plaintext or when not read.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub ja4: &'a str,
}

/// The sending side, held by the proxy.
#[derive(Debug)]
pub struct DecisionLog {
    out: LineWriter,
    suppressed: IntCounter,
    /// Share of allowed requests logged (0 to 1).
    pub sample_allowed: f64,
    /// Lines per second at most (0: no cap).
    max_per_second: u64,
    /// The Unix second the count below is for.
    window: AtomicU64,
    /// Lines admitted in `window`.
    used: AtomicU64,
}

/// How much the log may take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Lines queued before dropping.
    pub queue: usize,
    /// Share of allowed requests logged (0 to 1).
    pub sample_allowed: f64,
    /// Lines per second at most (0: no cap).
    pub max_per_second: u64,
}

impl DecisionLog {
    /// Starts the writer thread. `queue`: lines held before dropping.
    pub fn start(
        target: Target,
        limits: Limits,
        dropped: IntCounter,
        suppressed: IntCounter,
        written: IntCounter,
    ) -> std::io::Result<Self> {
        let Limits {
            queue,
            sample_allowed,
            max_per_second,
        } = limits;
        let out = LineWriter::start("decision log", target, queue, dropped, written)?;
        Ok(Self {
            out,
            suppressed,
            sample_allowed,
            max_per_second,
            window: AtomicU64::new(0),
            used: AtomicU64::new(0),
        })
    }

    /// Whether one more line fits in this second's budget; call before building the line,
    /// so that a flood of refusals costs one clock read and two atomics per request, not a
    /// formatted line. A line over budget is counted in `sekisho_decision_log_suppressed_total`.
    pub fn admit(&self) -> bool {
        if self.max_per_second == 0 {
            return true;
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.window.load(Ordering::Relaxed) != now {
            // a new second (racy between threads by a line or two: fine for a log budget)
            self.window.store(now, Ordering::Relaxed);
            self.used.store(0, Ordering::Relaxed);
        }
        if self.used.fetch_add(1, Ordering::Relaxed) < self.max_per_second {
            true
        } else {
            self.suppressed.inc();
            false
        }
    }

    /// Queues one entry; drops it (and counts the drop) if the writer is behind.
    pub fn log(&self, entry: &Entry<'_>) {
        let mut line = match serde_json::to_vec(entry) {
            Ok(l) => l,
            Err(_) => return,
        };
        line.push(b'\n');
        self.out.send(line);
    }

    /// Waits (up to `limit`) until the lines queued so far are written; false if not in time.
    pub fn flush(&self, limit: std::time::Duration) -> bool {
        self.out.flush(limit)
    }
}

/// Now, as RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_capped_per_second_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let counter = |n: &str| IntCounter::new(n, "test").unwrap();
        let (dropped, suppressed, written) = (counter("d"), counter("s"), counter("w"));
        let limits = Limits {
            queue: 16,
            sample_allowed: 0.0,
            max_per_second: 3,
        };
        let log = DecisionLog::start(
            Target::File(dir.path().join("d.log")),
            limits,
            dropped.clone(),
            suppressed.clone(),
            written,
        )
        .unwrap();
        let admitted = (0..10).filter(|_| log.admit()).count();
        // a second boundary may fall inside the loop: then up to 6 get through
        assert!((3..=6).contains(&admitted), "{admitted}");
        assert_eq!(suppressed.get() as usize, 10 - admitted);
        assert_eq!(dropped.get(), 0);
    }
}
