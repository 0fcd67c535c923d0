//! `connections:` over real sockets: a trickled request head is cut at `header_timeout` (the
//! whole head, not each read), an idle kept-alive connection is closed at `idle_timeout`, and
//! a connection is closed after `max_requests_per_connection` requests; requests pipelined on
//! one connection are each judged and answered in order. Other clients are
//! served meanwhile. No assert on elapsed time: each test waits (with a generous guard) for the
//! proxy to close the connection, and checks how much it had been sent when it did.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use support::{get_from, metric_value, Conn, Origin, Proxy};

/// A guard against a hang, not a timing claim.
const GUARD: Duration = Duration::from_secs(30);

/// Whether the peer has closed `s` (EOF or reset), polling for up to `wait`.
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 512];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!(
            "unexpected answer: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(_) => true, // reset
    }
}

/// The value of the series `name{reason}` scraped now; panics if it is not exported.
fn by_reason(proxy: &Proxy, name: &str, reason: &str) -> f64 {
    let text = get_from(None, proxy.admin_addr(), "/metrics").text();
    metric_value(&text, name, &[("reason", reason)])
        .unwrap_or_else(|| panic!("no series {name}{{reason={reason:?}}}:\n{text}"))
}

fn closed(proxy: &Proxy, reason: &str) -> f64 {
    by_reason(proxy, "sekisho_connections_closed_total", reason)
}

#[test]
fn a_trickled_head_is_cut_at_header_timeout_while_others_are_served() {
    let origin = Origin::start();
    let proxy = Proxy::start(&format!(
        "{}connections: {{ header_timeout: 1s }}\n",
        origin.upstreams()
    ));
    assert_eq!(closed(&proxy, "header_timeout"), 0.0);
    let head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut slow = TcpStream::connect(proxy.addr()).unwrap();
    // one byte every 100 ms: each read is quick, so a per-read timeout never fires; the whole
    // head would take several seconds
    let start = Instant::now();
    let (mut sent, mut others) = (0, 0);
    let cut = loop {
        if sent == head.len() {
            break false;
        }
        if slow.write_all(&head[sent..=sent]).is_err() {
            break true;
        }
        sent += 1;
        if closed_within(&mut slow, Duration::from_millis(100)) {
            break true;
        }
        assert!(start.elapsed() < GUARD, "still open after {GUARD:?}");
        // another client is served while the slow one trickles
        if sent % 5 == 0 {
            assert_eq!(get_from(None, proxy.addr(), "/").status, 200);
            others += 1;
        }
    };
    assert!(cut, "the whole head ({} bytes) was accepted", head.len());
    assert!(
        sent < head.len(),
        "cut after {sent} of {} bytes",
        head.len()
    );
    assert!(sent > 1, "cut before the trickle started ({sent} bytes)");
    assert_eq!(closed(&proxy, "header_timeout"), 1.0);
    assert!(others > 0, "no other client was tried");
    assert_eq!(origin.hits(), others, "the slow request reached the origin");
}

#[test]
fn an_idle_kept_alive_connection_is_closed_at_idle_timeout() {
    let origin = Origin::start();
    let proxy = Proxy::start(&format!(
        "{}connections: {{ idle_timeout: 1s }}\n",
        origin.upstreams()
    ));
    let mut c = Conn::open(None, proxy.addr()).unwrap();
    assert_eq!(c.request("GET", "/", &[], b"").unwrap().status, 200);
    let mut s = c.into_stream();
    assert!(
        closed_within(&mut s, GUARD),
        "the idle connection was kept past {GUARD:?}"
    );
    assert_eq!(closed(&proxy, "idle"), 1.0);
    // a connection that keeps asking is not idle
    let mut busy = Conn::open(None, proxy.addr()).unwrap();
    for _ in 0..5 {
        assert_eq!(busy.request("GET", "/", &[], b"").unwrap().status, 200);
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_connection_is_closed_after_max_requests_per_connection() {
    let origin = Origin::start();
    let proxy = Proxy::start(&format!(
        "{}connections: {{ max_requests_per_connection: 3 }}\n",
        origin.upstreams()
    ));
    let mut c = Conn::open(None, proxy.addr()).unwrap();
    for i in 1..=3 {
        let r = c.request("GET", "/", &[], b"").unwrap();
        assert_eq!(r.status, 200);
        let close = r
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close"));
        assert_eq!(close, i == 3, "request {i}: {:?}", r.headers);
    }
    let mut s = c.into_stream();
    let _ = s.shutdown(Shutdown::Write);
    assert!(closed_within(&mut s, GUARD), "still open after 3 requests");
}

#[test]
fn pipelined_requests_are_each_judged_and_answered_in_order() {
    let origin = Origin::start();
    let proxy = Proxy::start(&format!(
        "{}rules:\n  - name: no-x\n    match: {{ path_prefix: /x }}\n    action: deny\n",
        origin.upstreams()
    ));
    let mut c = Conn::open(None, proxy.addr()).unwrap();
    // three requests in one write: allowed, refused, allowed (a body on the first)
    c.send_raw(
        b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\
          GET /x HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /b HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .unwrap();
    let statuses: Vec<(u16, String)> = (0..3)
        .map(|i| {
            let r = c.response().unwrap_or_else(|e| panic!("response {i}: {e}"));
            (r.status, String::from_utf8_lossy(&r.body).into_owned())
        })
        .collect();
    assert_eq!(
        statuses,
        [
            (200, "hello".to_string()),
            (403, "Forbidden\n".to_string()),
            (200, "ok\n".to_string())
        ]
    );
    assert_eq!(origin.hits(), 2, "the origin sees exactly the allowed two");
    // and the connection is still usable
    assert_eq!(c.get("/c").unwrap().status, 200);
    assert_eq!(origin.hits(), 3);

    // a refused request with a body: its body is never parsed as a request; the connection
    // closes after the refusal and what followed is not served
    let mut c = Conn::open(None, proxy.addr()).unwrap();
    c.send_raw(
        b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /b HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .unwrap();
    let r = c.response().unwrap();
    assert_eq!(r.status, 403);
    assert!(
        c.response().is_err(),
        "served a request after a refused body"
    );
    assert_eq!(
        origin.hits(),
        3,
        "the origin saw the smuggled or following request"
    );
}

#[test]
fn ambiguous_framing_gets_400_and_a_closed_connection_and_never_reaches_the_origin() {
    let origin = Origin::start();
    let proxy = Proxy::start(&origin.upstreams());
    let cases: [&[u8]; 9] = [
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ];
    for request in cases {
        let text = String::from_utf8_lossy(request);
        let mut c = Conn::open(None, proxy.addr()).unwrap();
        c.send_raw(request).unwrap();
        // what follows on the connection must not be served either
        let _ = c.send_raw(b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = c.response().unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(r.status, 400, "{text:?}");
        assert!(
            r.headers
                .iter()
                .any(|(k, v)| k.eq_ignore_ascii_case("connection") && v == "close"),
            "{text:?}: {:?}",
            r.headers
        );
        assert!(c.response().is_err(), "{text:?}: a next request was served");
        assert_eq!(origin.hits(), 0, "{text:?} reached the origin");
    }
    let metrics = get_from(None, proxy.admin_addr(), "/metrics").text();
    let count = |reason: &str| {
        metric_value(
            &metrics,
            "sekisho_malformed_requests_total",
            &[("reason", reason)],
        )
        .unwrap_or_else(|| panic!("no series for {reason}"))
    };
    assert_eq!(count("content_length_and_transfer_encoding"), 1.0);
    assert_eq!(count("content_length"), 2.0);
    // Pingora's parser refuses some heads itself (`unparsable`); either way each request is
    // counted once
    assert_eq!(
        count("transfer_encoding") + count("host") + count("unparsable"),
        6.0,
        "{metrics}"
    );
    // a plain chunked body still goes through
    let mut c = Conn::open(None, proxy.addr()).unwrap();
    c.send_raw(
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(c.response().unwrap().status, 200);
    assert_eq!(origin.hits(), 1);
}

fn refused(proxy: &Proxy, reason: &str) -> f64 {
    by_reason(proxy, "sekisho_connections_refused_total", reason)
}

/// Whether a new connection from `from` gets an answer to one request.
fn served(proxy: &Proxy, from: &str) -> bool {
    Conn::open(Some(from), proxy.addr())
        .and_then(|mut c| c.get("/"))
        .is_ok_and(|r| r.status == 200)
}

#[test]
fn new_connections_per_client_hold_exactly_and_trusted_proxies_are_exempt() {
    let origin = Origin::start();
    let proxy = Proxy::start(&format!(
        "{}client_ip: {{ trusted_proxies: [127.0.0.9/32] }}\nconnections: {{ per_client: {{ rate: 1/h, burst: 3 }} }}\n",
        origin.upstreams()
    ));
    assert_eq!(refused(&proxy, "client_rate"), 0.0);
    for i in 0..3 {
        assert!(
            served(&proxy, "127.0.0.7"),
            "connection {i} within the burst"
        );
    }
    assert!(!served(&proxy, "127.0.0.7"), "a fourth connection got in");
    assert!(!served(&proxy, "127.0.0.7"), "a fifth connection got in");
    assert_eq!(refused(&proxy, "client_rate"), 2.0);
    assert_eq!(origin.hits(), 3, "a refused connection reached the origin");
    // another client has its own bucket; a trusted proxy has none
    assert!(served(&proxy, "127.0.0.8"));
    for i in 0..6 {
        assert!(served(&proxy, "127.0.0.9"), "trusted proxy connection {i}");
    }
    assert_eq!(refused(&proxy, "client_rate"), 2.0);
}

#[test]
fn count_mode_refuses_no_connection_but_counts_it() {
    let origin = Origin::start();
    let proxy = Proxy::start(&format!(
        "{}connections: {{ per_client: {{ rate: 1/h, burst: 2 }}, mode: count }}\n",
        origin.upstreams()
    ));
    for i in 0..5 {
        assert!(served(&proxy, "127.0.0.7"), "connection {i}");
    }
    assert_eq!(refused(&proxy, "client_rate"), 3.0);
}

/// The gauge `name` scraped now.
fn gauge(proxy: &Proxy, name: &str) -> f64 {
    let text = get_from(None, proxy.admin_addr(), "/metrics").text();
    metric_value(&text, name, &[]).unwrap_or_else(|| panic!("no gauge {name}:\n{text}"))
}

/// Polls (up to [`GUARD`]) until `ok` holds; false if it never did.
fn eventually(mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + GUARD;
    while Instant::now() < deadline {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn open_connections_per_client_hold_exactly_and_come_back_when_closed() {
    let origin = Origin::start();
    let proxy = Proxy::start(&format!(
        "{}client_ip: {{ trusted_proxies: [127.0.0.9/32] }}\nconnections: {{ per_client: {{ max_open: 3, rate: off }} }}\n",
        origin.upstreams()
    ));
    // three kept-alive connections, each served once and then held open
    let mut held: Vec<Conn> = (0..3)
        .map(|i| {
            let mut c = Conn::open(Some("127.0.0.7"), proxy.addr()).unwrap();
            assert_eq!(c.get("/").unwrap().status, 200, "connection {i}");
            c
        })
        .collect();
    assert!(!served(&proxy, "127.0.0.7"), "a fourth connection got in");
    assert_eq!(refused(&proxy, "client_max_open"), 1.0);
    assert_eq!(gauge(&proxy, "sekisho_connections_open"), 3.0);
    // another client has its own count; a trusted proxy has no cap
    assert!(served(&proxy, "127.0.0.8"));
    let trusted: Vec<Conn> = (0..6)
        .map(|i| {
            let mut c = Conn::open(Some("127.0.0.9"), proxy.addr()).unwrap();
            assert_eq!(c.get("/").unwrap().status, 200, "trusted connection {i}");
            c
        })
        .collect();
    // the held ones still work
    assert_eq!(held[0].get("/").unwrap().status, 200);
    // closing one gives its place back
    drop(held.pop());
    assert!(
        eventually(|| served(&proxy, "127.0.0.7")),
        "the place of the closed connection never came back"
    );
    drop(held);
    drop(trusted);
    assert!(
        eventually(|| gauge(&proxy, "sekisho_connections_open") == 0.0),
        "connections still counted open after all closed"
    );
    assert_eq!(refused(&proxy, "client_max_open"), 1.0);
    assert_eq!(gauge(&proxy, "sekisho_connections_clients"), 0.0);
}

#[test]
fn at_max_open_the_idle_connection_makes_room_then_new_ones_are_refused() {
    let origin = Origin::start();
    let proxy = Proxy::start(&format!(
        "{}connections: {{ max_open: 3, per_client: {{ max_open: off, rate: off }} }}\n",
        origin.upstreams()
    ));
    let mut idle = Conn::open(None, proxy.addr()).unwrap();
    assert_eq!(idle.get("/").unwrap().status, 200);
    let mut idle = idle.into_stream();
    assert!(eventually(
        || gauge(&proxy, "sekisho_connections_idle") == 1.0
    ));
    // two connections that have sent nothing yet are not idle: they wait for a head
    let waiting: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(proxy.addr()).unwrap())
        .collect();
    assert!(eventually(
        || gauge(&proxy, "sekisho_connections_open") == 3.0
    ));
    // the fourth takes the idle one's place
    let mut fourth = TcpStream::connect(proxy.addr()).unwrap();
    assert!(
        closed_within(&mut idle, GUARD),
        "the idle connection was not closed to make room"
    );
    assert_eq!(closed(&proxy, "max_open"), 1.0);
    fourth
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    fourth.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // now three wait for a head and none is idle: a new one is refused at accept
    let third = TcpStream::connect(proxy.addr()).unwrap();
    assert!(eventually(
        || gauge(&proxy, "sekisho_connections_open") == 3.0
    ));
    assert!(
        !served(&proxy, "127.0.0.1"),
        "a connection over max_open got in"
    );
    assert_eq!(refused(&proxy, "max_open"), 1.0);
    drop((waiting, third));
    assert!(eventually(|| served(&proxy, "127.0.0.1")));
}

#[test]
fn a_slowloris_over_the_descriptor_limit_is_held_to_its_share_and_cut_while_others_are_served() {
    let origin = Origin::start();
    // 256 descriptors: room for (256 - 64) / 2 = 96 client connections
    let proxy = Proxy::start_limited(
        &format!(
            "{}connections: {{ header_timeout: 2s, per_client: {{ max_open: 40, rate: off }} }}\n",
            origin.upstreams()
        ),
        256,
    );
    assert_eq!(proxy.status()["connections"]["max_open"], 96);
    // more half-open connections from one address than the process has descriptors
    let mut attack: Vec<TcpStream> = Vec::new();
    for _ in 0..300 {
        let Ok(mut c) = Conn::open(Some("127.0.0.7"), proxy.addr()).map(Conn::into_stream) else {
            continue;
        };
        if c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").is_ok() {
            attack.push(c);
        }
    }
    assert!(eventually(|| refused(&proxy, "client_max_open") >= 260.0));
    assert!(gauge(&proxy, "sekisho_connections_open") <= 40.0);
    // others are answered throughout, from their own addresses
    for i in 0..20 {
        assert!(served(&proxy, &format!("127.0.1.{}", i + 1)), "client {i}");
    }
    // the attacker trickles: its heads are cut at header_timeout
    let start = Instant::now();
    let mut open = attack.len();
    while open > 0 {
        assert!(start.elapsed() < GUARD, "{open} trickled heads still open");
        open = 0;
        for c in &mut attack {
            if c.write_all(b"X").is_ok() && !closed_within(c, Duration::from_millis(1)) {
                open += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(closed(&proxy, "header_timeout") >= 40.0);
    assert!(
        served(&proxy, "127.0.0.7"),
        "the attacker's address is refused for good"
    );
    assert_eq!(origin.hits(), 21, "a trickled request reached the origin");
}

#[test]
fn refused_connections_feed_top_the_decision_log_and_a_connections_autoban() {
    let origin = Origin::start();
    let proxy = Proxy::start(&format!(
        "{}decision_log: {{ path: decisions.log }}\nconnections: {{ per_client: {{ rate: 1/h, burst: 1 }} }}\nautoban:\n  - {{ name: floods, kind: connections, more_than: 2, window: 1m, ban: 10m }}\n",
        origin.upstreams()
    ));
    assert!(served(&proxy, "127.0.0.7"));
    for i in 0..3 {
        assert!(!served(&proxy, "127.0.0.7"), "connection {i} got in");
    }
    // the third refusal is more than 2: the client is banned (its requests too, once its
    // bucket lets a connection in again)
    let bans = get_from(None, proxy.admin_addr(), "/admin/bans").text();
    let bans: serde_json::Value = serde_json::from_str(&bans).unwrap();
    let ban = bans["bans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["net"] == "127.0.0.7/32")
        .unwrap_or_else(|| panic!("127.0.0.7 not banned: {bans}"));
    assert!(
        ban["reason"]
            .as_str()
            .unwrap()
            .contains("connections refused"),
        "{ban}"
    );
    // banned for it, its connections are refused at accept, and not counted again
    assert_eq!(refused(&proxy, "banned"), 0.0);
    assert!(!served(&proxy, "127.0.0.7"));
    assert_eq!(refused(&proxy, "banned"), 1.0);
    assert_eq!(refused(&proxy, "client_rate"), 3.0);
    let top = get_from(None, proxy.admin_addr(), "/admin/top?by=ip").text();
    let top: serde_json::Value = serde_json::from_str(&top).unwrap();
    let me = top["top"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["key"] == "127.0.0.7")
        .unwrap_or_else(|| panic!("127.0.0.7 not in {top}"));
    assert_eq!(
        (me["allowed"].as_u64(), me["connections_refused"].as_u64()),
        (Some(1), Some(4))
    );
    let log = proxy.dir.path().join("decisions.log");
    assert!(eventually(
        || std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() >= 3)
    ));
    let text = std::fs::read_to_string(&log).unwrap();
    for line in text.lines().take(3) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            (
                v["client_ip"].as_str(),
                v["rule"].as_str(),
                v["action"].as_str(),
                v["status"].as_u64()
            ),
            (
                Some("127.0.0.7"),
                Some("connections.per_client.rate"),
                Some("close"),
                Some(0)
            ),
            "{line}"
        );
    }
}
