//! A bounded, non-blocking line writer on its own thread: what the decision log and the access
//! log share.
//!
//! The request path hands a finished line to a bounded queue with `try_send` and never waits:
//! when the writer thread falls behind, the line is dropped and counted. The thread drains the
//! queue to a file (appended) or stdout, flushing once per burst. Rotation follows the
//! logrotate convention: on `SIGUSR1` every file writer reopens its file by name. This module
//! does no formatting and knows neither log's fields.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;

/// Where a log goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Standard output.
    Stdout,
    /// A file, appended to and reopened on `SIGUSR1`.
    File(PathBuf),
}

/// What the writer thread is handed, in order.
enum Msg {
    /// One finished line.
    Line(Vec<u8>),
    /// Flush what came before, then answer.
    Flush(SyncSender<()>),
}

/// The sending side of one log.
#[derive(Debug)]
pub struct LineWriter {
    tx: SyncSender<Msg>,
    dropped: IntCounter,
}

impl LineWriter {
    /// Opens `target` and starts the writer thread `name` (also used in its messages, e.g.
    /// "decision log"). `queue`: lines held before dropping; `dropped` and `written` count them.
    pub fn start(
        name: &'static str,
        target: Target,
        queue: usize,
        dropped: IntCounter,
        written: IntCounter,
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<Msg>(queue.max(1));
        let reopen = Arc::new(AtomicBool::new(false));
        if matches!(target, Target::File(_)) {
            signal_hook::flag::register(signal_hook::consts::SIGUSR1, reopen.clone())?;
        }
        let out = open(&target)?;
        std::thread::Builder::new()
            .name(name.replace(' ', "-"))
            .spawn(move || writer(name, rx, target, out, reopen, written))?;
        Ok(Self { tx, dropped })
    }

    /// Queues one line (with its `\n`); drops it, and counts the drop, if the writer is behind.
    pub fn send(&self, line: Vec<u8>) {
        match self.tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }

    /// Waits (up to `limit`) until every line queued before this call is written and flushed;
    /// false if the writer did not get there in time. Blocking: for the end of a stop.
    pub fn flush(&self, limit: Duration) -> bool {
        let (done, flushed) = sync_channel(1);
        // waits for room if the queue is full: the writer is draining it
        if self.tx.send(Msg::Flush(done)).is_err() {
            return false;
        }
        flushed.recv_timeout(limit).is_ok()
    }
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
    name: &'static str,
    rx: Receiver<Msg>,
    target: Target,
    mut out: Box<dyn Write + Send>,
    reopen: Arc<AtomicBool>,
    written: IntCounter,
) {
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(first) => {
                // write what else is queued, then flush once
                let mut waiting = Vec::new();
                let mut next = Some(first);
                while let Some(msg) = next {
                    match msg {
                        Msg::Line(line) => {
                            if out.write_all(&line).is_ok() {
                                written.inc();
                            }
                        }
                        Msg::Flush(done) => waiting.push(done),
                    }
                    next = rx.try_recv().ok();
                }
                let _ = out.flush();
                for done in waiting {
                    let _ = done.try_send(());
                }
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
                    tracing::info!("{name} reopened (SIGUSR1)");
                }
                Err(e) => {
                    tracing::error!("cannot reopen the {name}, still writing the old file: {e}")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let counter = |n: &str| IntCounter::new(n, "test").unwrap();
        let (dropped, written) = (counter("d"), counter("w"));
        let w = LineWriter::start(
            "test log",
            Target::File(dir.path().join("t.log")),
            1,
            dropped.clone(),
            written.clone(),
        )
        .unwrap();
        for _ in 0..1000 {
            w.send(b"x\n".to_vec());
        }
        // every line is either written (eventually) or counted as dropped, never waited for
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while written.get() + dropped.get() < 1000 {
            assert!(std::time::Instant::now() < deadline, "lines lost");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(written.get() + dropped.get(), 1000);
    }

    #[test]
    fn flush_returns_once_every_line_queued_before_it_is_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        let counter = |n: &str| IntCounter::new(n, "test").unwrap();
        let w = LineWriter::start(
            "test log",
            Target::File(path.clone()),
            1000,
            counter("d"),
            counter("w"),
        )
        .unwrap();
        for i in 0..100 {
            w.send(format!("{i}\n").into_bytes());
        }
        assert!(w.flush(Duration::from_secs(20)), "flushed");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 100);
        assert_eq!(text.lines().last(), Some("99"));
    }
}
