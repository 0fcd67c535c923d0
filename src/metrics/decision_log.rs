//! The decision log: one JSON line per refused or counted request (and, optionally, a sample
//! of allowed ones), for a SIEM (OpenSearch/Elasticsearch, Loki) to ingest as is.
//!
//! The request path formats a line and hands it to a bounded queue without waiting; a writer
//! thread drains the queue to the file (or stdout). When the writer falls behind, lines are
//! dropped and counted (`sekisho_decision_log_dropped_total`), never waited for. Under a flood,
//! lines beyond `max_lines_per_second` are not even formatted: they are counted in
//! `sekisho_decision_log_suppressed_total` (the metrics still count every request). Rotation
//! follows the logrotate convention: on `SIGUSR1` the file is reopened by name (use
//! `postrotate kill -USR1 $(pidof sekisho)` or `copytruncate`).

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus::IntCounter;
use serde::Serialize;

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
}

/// The sending side, held by the proxy.
#[derive(Debug)]
pub struct DecisionLog {
    tx: SyncSender<Vec<u8>>,
    dropped: IntCounter,
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

/// Where the log goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Standard output.
    Stdout,
    /// A file, appended to and reopened on `SIGUSR1`.
    File(PathBuf),
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
        let (tx, rx) = sync_channel::<Vec<u8>>(queue.max(1));
        let reopen = Arc::new(AtomicBool::new(false));
        if matches!(target, Target::File(_)) {
            signal_hook::flag::register(signal_hook::consts::SIGUSR1, reopen.clone())?;
        }
        let out = open(&target)?;
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || writer(rx, target, out, reopen, written))?;
        Ok(Self {
            tx,
            dropped,
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
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }
}

/// Now, as RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn open(target: &Target) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(match target {
        Target::Stdout => Box::new(BufWriter::new(std::io::stdout())),
        Target::File(p) => Box::new(BufWriter::new(
            OpenOptions::new().create(true).append(true).open(p)?,
        )),
    })
}

fn writer(
    rx: Receiver<Vec<u8>>,
    target: Target,
    mut out: Box<dyn Write + Send>,
    reopen: Arc<AtomicBool>,
    written: IntCounter,
) {
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                if out.write_all(&line).is_ok() {
                    written.inc();
                }
                // write what else is queued, then flush once
                while let Ok(line) = rx.try_recv() {
                    if out.write_all(&line).is_ok() {
                        written.inc();
                    }
                }
                let _ = out.flush();
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let _ = out.flush();
                return;
            }
        }
        if reopen.swap(false, Ordering::Relaxed) {
            let _ = out.flush();
            match open(&target) {
                Ok(o) => {
                    out = o;
                    tracing::info!("decision log reopened (SIGUSR1)");
                }
                Err(e) => tracing::error!(
                    "cannot reopen the decision log, still writing the old file: {e}"
                ),
            }
        }
    }
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
