//! The upstream half over real sockets: what upstream receives (framing, hop-by-hop fields),
//! `Expect: 100-continue`, chunked bodies both ways, pooled connections that upstream closed,
//! a WebSocket tunnel, an upstream that does not answer, CONNECT, and a graceful stop.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use support::{Conn, Origin, Proxy};

/// An origin that runs `serve` on every connection it accepts, each in its own thread.
fn scripted_origin(serve: fn(TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
            std::thread::spawn(move || serve(stream));
        }
    });
    addr
}

/// Reads a request head (through the blank line), lower-cased, or None at end of stream.
fn read_head(r: &mut BufReader<TcpStream>) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line.to_ascii_lowercase());
        if line == "\r\n" {
            return Some(head);
        }
    }
}

/// Reads a chunked body, returning its decoded bytes.
fn read_chunked(r: &mut BufReader<TcpStream>) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        r.read_line(&mut size).expect("chunk size");
        let n = usize::from_str_radix(size.trim(), 16).expect("hex size");
        let mut chunk = vec![0; n + 2];
        r.read_exact(&mut chunk).expect("chunk");
        if n == 0 {
            return body;
        }
        body.extend_from_slice(&chunk[..n]);
    }
}

/// A raw connection to `addr` that has sent `bytes`, ready to read the answer.
fn send_raw(addr: SocketAddr, bytes: &[u8]) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(bytes).expect("send");
    BufReader::new(s)
}

fn proxy_for(origin: SocketAddr, extra: &str) -> Proxy {
    Proxy::start(&format!("upstreams: [\"{origin}\"]\n{extra}"))
}

#[test]
fn chunked_bodies_pass_both_ways_and_hop_by_hop_fields_stop_at_the_proxy() {
    // The origin answers with the request head it saw and the decoded body, chunked.
    let origin = scripted_origin(|stream| {
        let mut r = BufReader::new(stream);
        while let Some(head) = read_head(&mut r) {
            let body = if head.contains("transfer-encoding: chunked") {
                read_chunked(&mut r)
            } else {
                Vec::new()
            };
            let text = format!("{head}--\n{}", String::from_utf8_lossy(&body));
            let (a, b) = text.as_bytes().split_at(text.len() / 2);
            let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for part in [a, b] {
                out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                out.extend_from_slice(part);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            if r.get_mut().write_all(&out).is_err() {
                return;
            }
        }
    });
    let proxy = proxy_for(origin, "");
    let mut r = send_raw(
        proxy.addr(),
        b"POST /upload HTTP/1.1\r\nHost: app.example\r\nConnection: keep-alive, X-Hop\r\n\
          X-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic eA==\r\n\
          TE: trailers\r\nX-Kept: yes\r\nTransfer-Encoding: chunked\r\n\r\n\
          4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n",
    );
    let head = read_head(&mut r).expect("response head");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let seen = String::from_utf8(read_chunked(&mut r)).expect("utf-8");
    let (seen_head, seen_body) = seen.split_once("--\n").expect("marker");
    assert_eq!(seen_body, "abcdefg", "the body arrives whole");
    assert!(
        seen_head.starts_with("post /upload http/1.1\r\n"),
        "{seen_head}"
    );
    assert!(seen_head.contains("host: app.example\r\n"), "{seen_head}");
    assert!(seen_head.contains("x-kept: yes\r\n"), "{seen_head}");
    assert!(
        seen_head.contains("transfer-encoding: chunked\r\n"),
        "{seen_head}"
    );
    for gone in [
        "x-hop",
        "keep-alive",
        "proxy-authorization",
        "te:",
        "connection",
    ] {
        assert!(
            !seen_head.contains(gone),
            "{gone} reached upstream: {seen_head}"
        );
    }
    // the client connection is still good for another request
    r.get_mut()
        .write_all(b"GET /again HTTP/1.1\r\nHost: app.example\r\n\r\n")
        .expect("send");
    let head = read_head(&mut r).expect("second response");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let seen = String::from_utf8(read_chunked(&mut r)).expect("utf-8");
    assert!(seen.starts_with("get /again http/1.1\r\n"), "{seen}");
}

#[test]
fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let origin = Origin::start();
    let proxy = Proxy::start(&origin.upstreams());
    let mut r = send_raw(
        proxy.addr(),
        b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    );
    let interim = read_head(&mut r).expect("interim");
    assert!(interim.starts_with("http/1.1 100"), "{interim}");
    r.get_mut().write_all(b"hello").expect("send body");
    let head = read_head(&mut r).expect("final");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let mut body = [0u8; 5];
    r.read_exact(&mut body).expect("body");
    assert_eq!(&body, b"hello");
    assert_eq!(origin.hits(), 1);
}

#[test]
fn requests_survive_an_upstream_that_closes_kept_connections() {
    // A keep-alive origin (no `Connection: close`) that hangs up after every response: each
    // pooled connection is dead by the time the next request would use it.
    let origin = scripted_origin(|stream| {
        let mut r = BufReader::new(stream);
        let Some(head) = read_head(&mut r) else {
            return;
        };
        let mut body = Vec::new();
        if let Some(len) = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            body.resize(len, 0);
            r.read_exact(&mut body).expect("body");
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{}",
            body.len() + 3,
            String::from_utf8_lossy(&body)
        );
        let _ = r.get_mut().write_all(reply.as_bytes());
        let _ = r.get_mut().write_all(b"ok\n");
        drop(r); // closed without notice
        CLOSED.fetch_add(1, Ordering::SeqCst);
    });
    static CLOSED: AtomicUsize = AtomicUsize::new(0);
    let proxy = proxy_for(origin, "");
    let mut c = Conn::open(None, proxy.addr()).expect("connect");
    for i in 0..30 {
        let r = c.get(&format!("/{i}")).expect("get");
        assert_eq!(r.status, 200, "GET {i}");
    }
    // A body is never sent twice; the dead connection is found before it is used. Each POST
    // waits until the origin has hung up on every connection it answered, so the connection in
    // the pool is dead for sure.
    for i in 0..5 {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while CLOSED.load(Ordering::SeqCst) < 30 + i {
            assert!(
                std::time::Instant::now() < deadline,
                "the origin did not close"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let r = c.request("POST", "/form", &[], b"a=1").expect("post");
        assert_eq!(r.status, 200, "POST {i}");
        assert_eq!(r.text(), "a=1ok\n");
    }
}

#[test]
fn websocket_upgrade_is_tunnelled_both_ways() {
    let origin = scripted_origin(|stream| {
        let mut r = BufReader::new(stream);
        let Some(head) = read_head(&mut r) else {
            return;
        };
        assert!(head.contains("upgrade: websocket\r\n"), "{head}");
        assert!(head.contains("connection: upgrade\r\n"), "{head}");
        let s = r.get_mut();
        s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        )
        .expect("101");
        // echo what comes, upper-cased, until the client closes
        let mut buf = [0u8; 64];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let up = buf[..n].to_ascii_uppercase();
                    if r.get_mut().write_all(&up).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let proxy = proxy_for(origin, "");
    let mut r = send_raw(
        proxy.addr(),
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    let head = read_head(&mut r).expect("101");
    assert!(head.starts_with("http/1.1 101"), "{head}");
    for word in ["ping", "second frame"] {
        r.get_mut().write_all(word.as_bytes()).expect("send");
        let mut back = vec![0u8; word.len()];
        r.read_exact(&mut back).expect("echo");
        assert_eq!(back, word.to_ascii_uppercase().as_bytes());
    }
}

#[test]
fn an_upstream_that_does_not_answer_gets_504_and_the_client_is_told_at_once() {
    let (tx, rx) = mpsc::channel::<()>();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        // accept and read, never answer
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
            let _ = tx.send(());
        }
    });
    let proxy = proxy_for(addr, "upstream_options: { read_timeout: 300ms }\n");
    let r = support::get_from(None, proxy.addr(), "/slow");
    assert_eq!(r.status, 504);
    assert_eq!(
        r.text(),
        "504 Gateway Timeout: the origin did not answer in time\n"
    );
    assert!(r.header("server").is_none(), "{:?}", r.headers);
    assert!(
        rx.recv_timeout(Duration::from_secs(5)).is_ok(),
        "the request reached upstream"
    );
}

#[test]
fn connect_is_refused_with_405() {
    let origin = Origin::start();
    let proxy = Proxy::start(&origin.upstreams());
    let mut r = send_raw(
        proxy.addr(),
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    );
    let head = read_head(&mut r).expect("response");
    assert!(head.starts_with("http/1.1 405"), "{head}");
    assert_eq!(origin.hits(), 0);
}

#[test]
fn a_request_dropped_on_a_kept_connection_is_resent_only_when_that_is_harmless() {
    // Each connection answers its first request, then reads the second and hangs up.
    let origin = scripted_origin(|stream| {
        let mut r = BufReader::new(stream);
        if read_head(&mut r).is_none() {
            return;
        }
        let _ = r
            .get_mut()
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
        let _ = read_head(&mut r);
    });
    let proxy = proxy_for(origin, "");
    let mut c = Conn::open(None, proxy.addr()).expect("connect");
    assert_eq!(c.get("/first").expect("first").status, 200);
    // the pooled connection takes the GET and drops it: sent again on a new connection
    assert_eq!(c.get("/second").expect("second").status, 200);
    // a POST may have been acted on: not sent again
    let mut c = Conn::open(None, proxy.addr()).expect("connect");
    assert_eq!(
        c.request("POST", "/order", &[], b"").expect("post").status,
        502
    );
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_closes_idle_clients_and_exits_cleanly() {
    static ARRIVED: AtomicUsize = AtomicUsize::new(0);
    static RELEASED: AtomicUsize = AtomicUsize::new(0);
    // Answers `/first` at once and any other request once the test releases it.
    let origin = scripted_origin(|stream| {
        let mut r = BufReader::new(stream);
        while let Some(head) = read_head(&mut r) {
            if !head.starts_with("get /first") {
                ARRIVED.fetch_add(1, Ordering::SeqCst);
                for _ in 0..2000 {
                    if RELEASED.load(Ordering::SeqCst) > 0 {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            let _ = r
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow");
        }
    });
    // In-flight requests are served for grace_period after SIGTERM; then Pingora shuts the
    // runtimes down and tokio drops whatever still runs.
    let mut proxy = proxy_for(origin, "grace_period: 3s\n");
    // an idle keep-alive client: one answered request, then nothing
    let mut idle = send_raw(proxy.addr(), b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n");
    let head = read_head(&mut idle).expect("first response");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let mut body = [0u8; 4];
    idle.read_exact(&mut body).expect("first body");
    // a request in flight when the signal comes
    let addr = proxy.addr();
    let in_flight = std::thread::spawn(move || {
        let mut r = send_raw(addr, b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
        let head = read_head(&mut r).unwrap_or_default();
        let mut body = [0u8; 4];
        let got = r
            .read_exact(&mut body)
            .map(|_| body.to_vec())
            .unwrap_or_default();
        (head, got)
    });
    while ARRIVED.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &proxy.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    // The idle client is let go at once, while the other request still waits on upstream (it
    // is not released before): were it closed only when the process exits, the request in
    // flight would have been dropped by then and the checks below would fail.
    let mut rest = Vec::new();
    let n = idle
        .read_to_end(&mut rest)
        .expect("idle connection closed, not reset");
    assert_eq!(n, 0, "nothing more on the idle connection");
    assert!(
        TcpStream::connect(proxy.addr()).is_err(),
        "no new connections after SIGTERM"
    );
    RELEASED.store(1, Ordering::SeqCst);
    let (head, got) = in_flight.join().expect("in-flight client");
    assert!(
        head.starts_with("http/1.1 200"),
        "in-flight request: {head:?}"
    );
    assert_eq!(got, b"slow");
    let exit = proxy
        .wait_exit(Duration::from_secs(30))
        .expect("sekisho exited after SIGTERM");
    assert!(exit.success(), "exit status {exit:?}");
}
