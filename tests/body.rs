//! Request bodies over real sockets: a body trickled below `connections.body_min_rate` (after
//! `body_rate_grace`) or stalled past `body_timeout` is cut (408, or closed) and counted in
//! `sekisho_connections_closed_total{reason="body_timeout"}`; a malformed chunk gets 400 and a
//! closed connection, is counted in `sekisho_malformed_requests_total{reason="bad_chunk"}`, and
//! the upstream connection that got part of that body is closed, never reused. Ordinary bodies,
//! sized or chunked, still pass. No assert on elapsed time: each test waits (with a generous
//! guard) for the proxy to answer or close, and checks what it had been sent by then.

mod support;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{get_from, metric_value, Conn, Proxy};

/// A guard against a hang, not a timing claim.
const GUARD: Duration = Duration::from_secs(30);

/// An origin that reads sized and chunked bodies and echoes them, counting the connections it
/// accepted, the requests it answered, and the connections that ended in the middle of a
/// request (head read, body not whole).
struct EchoOrigin {
    addr: SocketAddr,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    accepted: AtomicU64,
    answered: AtomicU64,
    cut_mid_request: AtomicU64,
}

impl EchoOrigin {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                c.accepted.fetch_add(1, Ordering::SeqCst);
                let c = c.clone();
                std::thread::spawn(move || {
                    if serve(stream, &c).is_err() {
                        c.cut_mid_request.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        Self { addr, counts }
    }

    fn upstreams(&self) -> String {
        format!("upstreams: [\"{}\"]\n", self.addr)
    }

    fn accepted(&self) -> u64 {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    fn answered(&self) -> u64 {
        self.counts.answered.load(Ordering::SeqCst)
    }

    fn cut_mid_request(&self) -> u64 {
        self.counts.cut_mid_request.load(Ordering::SeqCst)
    }
}

/// Serves requests on one connection until it closes: `Ok` at a close between requests, `Err`
/// at one in the middle of a request.
fn serve(stream: TcpStream, counts: &Counts) -> std::io::Result<()> {
    let mut r = BufReader::new(stream.try_clone()?);
    let mut w = stream;
    let eof = || std::io::Error::new(ErrorKind::UnexpectedEof, "closed mid-request");
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let (mut length, mut chunked) = (0usize, false);
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 {
                return Err(eof());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (name, value) = h.split_once(':').unwrap_or((h, ""));
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
            if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.trim().eq_ignore_ascii_case("chunked");
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                if r.read_line(&mut size)? == 0 {
                    return Err(eof());
                }
                let n = usize::from_str_radix(size.trim(), 16)
                    .map_err(|_| std::io::Error::new(ErrorKind::InvalidData, "chunk size"))?;
                let mut chunk = vec![0; n + 2];
                r.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else {
            body.resize(length, 0);
            r.read_exact(&mut body)?;
        }
        counts.answered.fetch_add(1, Ordering::SeqCst);
        write!(
            w,
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )?;
        w.write_all(&body)?;
    }
}

/// What a client connection shows within `wait`.
#[derive(Debug, PartialEq)]
enum Seen {
    Nothing,
    Closed,
    /// The first bytes of an answer.
    Answer(String),
}

fn look(s: &mut TcpStream, wait: Duration) -> Seen {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 1024];
    match s.read(&mut buf) {
        Ok(0) => Seen::Closed,
        Ok(n) => Seen::Answer(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Seen::Nothing,
        Err(_) => Seen::Closed, // reset
    }
}

/// After an answer: the connection is closed (EOF or reset) within the guard.
fn closes(s: &mut TcpStream) -> bool {
    let deadline = Instant::now() + GUARD;
    while Instant::now() < deadline {
        match look(s, Duration::from_millis(200)) {
            Seen::Closed => return true,
            Seen::Nothing | Seen::Answer(_) => {}
        }
    }
    false
}

/// The value of the series `name{reason}` scraped now; panics if it is not exported.
fn by_reason(proxy: &Proxy, name: &str, reason: &str) -> f64 {
    let text = get_from(None, proxy.admin_addr(), "/metrics").text();
    metric_value(&text, name, &[("reason", reason)])
        .unwrap_or_else(|| panic!("no series {name}{{reason={reason:?}}}:\n{text}"))
}

fn body_timeouts(proxy: &Proxy) -> f64 {
    by_reason(proxy, "sekisho_connections_closed_total", "body_timeout")
}

fn bad_chunks(proxy: &Proxy) -> f64 {
    by_reason(proxy, "sekisho_malformed_requests_total", "bad_chunk")
}

/// Polls `f` until it holds or the guard runs out.
fn eventually(f: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + GUARD;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// A cut body: an answer that is a 408 with `Connection: close`, then the close; or a close
/// without it (the client was still sending when the connection went).
fn assert_cut(seen: Seen, s: &mut TcpStream) {
    match seen {
        Seen::Answer(text) => {
            assert!(text.starts_with("HTTP/1.1 408 "), "{text:?}");
            assert!(
                text.to_ascii_lowercase().contains("connection: close"),
                "{text:?}"
            );
            assert!(closes(s), "open after the 408");
        }
        Seen::Closed => {}
        Seen::Nothing => panic!("neither answered nor closed"),
    }
}

#[test]
fn a_body_trickled_below_body_min_rate_is_cut_while_a_normal_post_passes() {
    let origin = EchoOrigin::start();
    // stalls of 100 ms are far inside body_timeout: only the average can cut this body
    let proxy = Proxy::start(&format!(
        "{}connections: {{ body_timeout: 10s, body_min_rate: 1KiB/s, body_rate_grace: 1s }}\n",
        origin.upstreams()
    ));
    assert_eq!(body_timeouts(&proxy), 0.0);
    let body = vec![b'x'; 64 * 1024];
    let mut c = Conn::open(None, proxy.addr()).unwrap();
    let r = c.request("POST", "/upload", &[], &body).unwrap();
    assert_eq!((r.status, r.body.len()), (200, body.len()));

    // 10 bytes every 100 ms: about 100 B/s, a tenth of the rate, for a 64 KiB body
    let mut slow = TcpStream::connect(proxy.addr()).unwrap();
    slow.set_nodelay(true).unwrap();
    write!(
        slow,
        "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let start = Instant::now();
    let mut sent = 0;
    let seen = loop {
        if slow.write_all(&body[sent..sent + 10]).is_err() {
            break Seen::Closed;
        }
        sent += 10;
        match look(&mut slow, Duration::from_millis(100)) {
            Seen::Nothing => {}
            seen => break seen,
        }
        assert!(start.elapsed() < GUARD, "still open after {GUARD:?}");
    };
    assert!(sent > 10, "cut before the trickle started ({sent} bytes)");
    assert!(sent < body.len(), "the whole body was taken");
    assert_cut(seen, &mut slow);
    assert_eq!(body_timeouts(&proxy), 1.0);
    assert_eq!(
        origin.answered(),
        1,
        "the cut request was answered by the origin"
    );
    assert!(
        eventually(|| origin.cut_mid_request() == 1),
        "the upstream connection of the cut body was not closed"
    );
    // and the proxy still serves
    let mut c = Conn::open(None, proxy.addr()).unwrap();
    let r = c.request("POST", "/upload", &[], &body).unwrap();
    assert_eq!((r.status, r.body.len()), (200, body.len()));
}

#[test]
fn a_body_that_stalls_past_body_timeout_is_cut_but_steady_small_reads_pass() {
    let origin = EchoOrigin::start();
    let proxy = Proxy::start(&format!(
        "{}connections: {{ body_timeout: 1s, body_min_rate: off }}\n",
        origin.upstreams()
    ));
    // half the body, then nothing
    let mut s = TcpStream::connect(proxy.addr()).unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello")
        .unwrap();
    let seen = look(&mut s, GUARD);
    assert!(
        matches!(&seen, Seen::Answer(t) if t.starts_with("HTTP/1.1 408 ")),
        "{seen:?}"
    );
    assert_cut(seen, &mut s);
    assert_eq!(body_timeouts(&proxy), 1.0);
    assert!(
        eventually(|| origin.cut_mid_request() == 1),
        "the upstream connection of the cut body was not closed"
    );
    assert_eq!(origin.answered(), 0);

    // the limit is on each wait, not the whole body: a byte every 100 ms for longer than
    // body_timeout in all is served
    let body = b"0123456789abcdefghij";
    let mut c = Conn::open(None, proxy.addr()).unwrap();
    c.send_raw(
        format!(
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    for b in body {
        c.send_raw(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = c.response().unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &body[..]));
    assert_eq!(body_timeouts(&proxy), 1.0);
}

#[test]
fn a_malformed_chunk_gets_400_a_closed_connection_and_its_upstream_connection_is_not_reused() {
    let origin = EchoOrigin::start();
    let proxy = Proxy::start(&origin.upstreams());
    assert_eq!(bad_chunks(&proxy), 0.0);
    let good: &[u8] = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    // an ordinary chunked POST works, and leaves its upstream connection in the pool
    let mut c = Conn::open(None, proxy.addr()).unwrap();
    c.send_raw(good).unwrap();
    let r = c.response().unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &b"hello world"[..]));
    assert_eq!(origin.accepted(), 1);
    drop(c);

    // a good first chunk (it reaches the origin), then a malformed one
    let cases: [&[u8]; 3] = [
        // a chunk-size line that is not hex
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nxx\r\n0\r\n\r\n",
        // chunk data not followed by CRLF
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nabcXY0\r\n\r\n",
        // a last chunk whose end (or trailer section) is not CRLF
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\rX\r\n\r\n",
    ];
    for (i, request) in cases.iter().enumerate() {
        let text = String::from_utf8_lossy(request);
        let mut c = Conn::open(None, proxy.addr()).unwrap();
        c.send_raw(request).unwrap();
        let r = c.response().unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(r.status, 400, "{text:?}");
        assert_eq!(r.header("connection"), Some("close"), "{text:?}");
        assert!(c.response().is_err(), "{text:?}: a next request was served");
        let n = i as u64 + 1;
        assert_eq!(bad_chunks(&proxy), n as f64, "{text:?}");
        // the origin saw that request end in its middle: its connection was closed
        assert!(
            eventually(|| origin.cut_mid_request() == n),
            "{text:?}: the upstream connection was kept"
        );
    }
    assert_eq!(
        origin.answered(),
        1,
        "a malformed request was answered upstream"
    );
    // the next request goes upstream on a new connection: none of the cut ones was pooled
    let accepted = origin.accepted();
    let mut c = Conn::open(None, proxy.addr()).unwrap();
    c.send_raw(good).unwrap();
    let r = c.response().unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &b"hello world"[..]));
    assert_eq!(origin.accepted(), accepted + 1);
    assert_eq!(origin.answered(), 2);
    // and its connection is reused for the next one
    let r = c.request("POST", "/", &[], b"sized").unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &b"sized"[..]));
    assert_eq!(origin.accepted(), accepted + 1);
}

#[test]
fn a_chunked_body_split_inside_its_framing_reaches_the_origin_whole() {
    let origin = EchoOrigin::start();
    let proxy = Proxy::start(&origin.upstreams());
    let mut c = Conn::open(None, proxy.addr()).unwrap();
    // each piece its own read (most likely): one ends inside a chunk-size line, one inside the
    // last chunk. Pingora hands such a read over as an empty chunk, which must not become the
    // terminating chunk of the body upstream (the rest would be a request of its own there)
    let pieces: [&[u8]; 5] = [
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"5",
        b"\r\nhello\r\n6\r\n world\r\n0\r\n",
        b"\r",
        b"\n",
    ];
    for p in pieces {
        c.send_raw(p).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = c.response().unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &b"hello world"[..]));
    assert_eq!(origin.answered(), 1);
    // the connection, and its upstream one, serve the next request
    let r = c.request("POST", "/", &[], b"next").unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &b"next"[..]));
    assert_eq!((origin.answered(), origin.accepted()), (2, 1));
    assert_eq!(origin.cut_mid_request(), 0);
}
