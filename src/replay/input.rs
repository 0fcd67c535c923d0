//! Reading logs: a file (plain, or gzip with any number of members, as nginx and logrotate
//! write them) or `-` for stdin, line by line with line numbers, and how far through it is.
//!
//! A line is handed over without its end of line (`\n` or `\r\n`). A line that is not UTF-8
//! is decoded lossily (its bad bytes become U+FFFD), so that its other fields still count.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flate2::bufread::MultiGzDecoder;

/// The gzip magic number.
const GZIP: [u8; 2] = [0x1f, 0x8b];

/// A log being read.
pub struct Log {
    /// As named on the command line.
    pub name: String,
    /// Its size on disk, when it is a file (compressed bytes, for gzip).
    pub size: Option<u64>,
    /// Bytes of the file read so far (compressed bytes, for gzip): the progress.
    pub read: Arc<AtomicU64>,
    /// Whether it is gzip.
    pub gzip: bool,
    lines: Box<dyn BufRead + Send>,
    buf: Vec<u8>,
    /// The number of the line last read, from 1.
    pub line: u64,
    /// Lines read by [`Log::peek`] and not yet handed out.
    ahead: std::collections::VecDeque<String>,
    /// The line handed out last when it came from `ahead`.
    held: String,
    /// Bytes of the reader's buffer the line handed out last took, consumed on the next read.
    consumed: usize,
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl Log {
    /// Opens `path` (`-`: stdin). Gzip is recognised by its magic number, not the name.
    pub fn open(path: &Path) -> io::Result<Self> {
        let name = path.display().to_string();
        let read = Arc::new(AtomicU64::new(0));
        let (raw, size): (Box<dyn Read + Send>, _) = if path == Path::new("-") {
            (Box::new(io::stdin()), None)
        } else {
            let f = File::open(path)?;
            let size = f.metadata().ok().map(|m| m.len());
            (Box::new(f), size)
        };
        let counting = Counting {
            inner: raw,
            read: read.clone(),
        };
        let mut outer = BufReader::with_capacity(256 * 1024, counting);
        let gzip = outer.fill_buf()?.starts_with(&GZIP);
        let lines: Box<dyn BufRead + Send> = if gzip {
            Box::new(BufReader::with_capacity(
                256 * 1024,
                MultiGzDecoder::new(outer),
            ))
        } else {
            Box::new(outer)
        };
        Ok(Self {
            name,
            size,
            read,
            gzip,
            lines,
            buf: Vec::with_capacity(1024),
            line: 0,
            ahead: Default::default(),
            held: String::new(),
            consumed: 0,
        })
    }

    /// The next line, without its end of line; `None` at the end.
    pub fn next_line(&mut self) -> io::Result<Option<Cow<'_, str>>> {
        if let Some(l) = self.ahead.pop_front() {
            self.line += 1;
            self.held = l;
            return Ok(Some(Cow::Borrowed(&self.held)));
        }
        // the line handed out last is let go of only now
        self.lines.consume(std::mem::take(&mut self.consumed));
        let whole = {
            let chunk = self.lines.fill_buf()?;
            if chunk.is_empty() {
                return Ok(None);
            }
            memchr::memchr(b'\n', chunk)
        };
        self.line += 1;
        let bytes = match whole {
            // the whole line is in the buffer: handed out from there, not copied
            Some(end) => {
                self.consumed = end + 1;
                trimmed(&self.lines.fill_buf()?[..end + 1])
            }
            None => {
                self.buf.clear();
                self.lines.read_until(b'\n', &mut self.buf)?;
                trimmed(&self.buf)
            }
        };
        Ok(Some(match std::str::from_utf8(bytes) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => String::from_utf8_lossy(bytes),
        }))
    }

    /// The first `n` lines (for detecting the format); [`Log::next_line`] still returns them
    /// after, so this works on stdin too.
    pub fn peek(&mut self, n: usize) -> io::Result<Vec<String>> {
        self.lines.consume(std::mem::take(&mut self.consumed));
        while self.ahead.len() < n {
            self.buf.clear();
            if self.lines.read_until(b'\n', &mut self.buf)? == 0 {
                break;
            }
            let line = trimmed(&self.buf);
            self.ahead.push_back(match std::str::from_utf8(line) {
                Ok(s) => s.to_owned(),
                Err(_) => String::from_utf8_lossy(line).into_owned(),
            });
        }
        Ok(self.ahead.iter().take(n).cloned().collect())
    }
}

/// `line` without its end of line.
fn trimmed(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn lines(log: &mut Log) -> Vec<String> {
        let mut v = Vec::new();
        while let Some(l) = log.next_line().expect("read") {
            v.push(l.into_owned());
        }
        v
    }

    #[test]
    fn reads_plain_crlf_and_a_last_line_without_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a.log");
        std::fs::write(&p, b"one\r\ntwo\n\nthree").expect("write");
        let mut log = Log::open(&p).expect("open");
        assert!(!log.gzip);
        assert_eq!(log.peek(2).expect("peek"), ["one", "two"]);
        assert_eq!(lines(&mut log), ["one", "two", "", "three"]);
        assert_eq!(log.line, 4);
        assert_eq!(log.read.load(Ordering::Relaxed), 15);
    }

    #[test]
    fn reads_every_member_of_a_gzip_file_whatever_its_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("access.log.1");
        let mut bytes = Vec::new();
        for part in ["a\nb\n", "c\n", "d\n"] {
            let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(part.as_bytes()).expect("gzip");
            bytes.extend(e.finish().expect("gzip"));
        }
        std::fs::write(&p, &bytes).expect("write");
        let mut log = Log::open(&p).expect("open");
        assert!(log.gzip);
        assert_eq!(lines(&mut log), ["a", "b", "c", "d"]);
        assert_eq!(log.read.load(Ordering::Relaxed), bytes.len() as u64);
    }

    #[test]
    fn a_line_that_is_not_utf8_keeps_its_other_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a.log");
        std::fs::write(&p, b"ok \xff end\n").expect("write");
        let mut log = Log::open(&p).expect("open");
        assert_eq!(lines(&mut log), ["ok \u{fffd} end"]);
    }
}
