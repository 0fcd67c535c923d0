//! What the origin learns about the client (`X-Forwarded-For`, `X-Real-IP`,
//! `X-Forwarded-Proto`, `Forwarded`, the country header) from trusted and untrusted peers, and
//! the answers sekisho writes itself (a malformed request, an origin that is down, a refusal,
//! `CONNECT`): each with its own short body and no `Server: Pingora`.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use support::{get_with, Conn, Proxy, Response};

/// An origin that answers every request with its request head, as received, for a body.
fn echo_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
                let mut r = BufReader::new(stream);
                loop {
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        match r.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        head.push_str(&line);
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{head}",
                        head.len()
                    );
                    if r.get_mut().write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// The request head the echo origin saw: every field as (name as sent, value), in order.
fn seen(r: &Response) -> Vec<(String, String)> {
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_string(), v.trim().to_string()))
        .collect()
}

/// The values of `name` (any case) in `fields`.
fn values(fields: &[(String, String)], name: &str) -> Vec<String> {
    fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .collect()
}

/// A proxy in front of the echo origin that trusts 127.0.0.2 and 10.0.0.0/8, with `extra`.
fn proxy(extra: &str) -> Proxy {
    Proxy::start(&format!(
        "upstreams: [\"{}\"]\nclient_ip: {{ trusted_proxies: [\"127.0.0.2/32\", \"10.0.0.0/8\"] }}\n{extra}",
        echo_origin()
    ))
}

const SPOOFED: [(&str, &str); 4] = [
    ("X-Forwarded-For", "6.6.6.6"),
    ("X-Real-IP", "6.6.6.6"),
    ("X-Forwarded-Proto", "https"),
    ("Forwarded", "for=6.6.6.6"),
];

#[test]
fn an_untrusted_peer_cannot_name_another_client() {
    let proxy = proxy("");
    let got = seen(&get_with(Some("127.0.0.1"), proxy.addr(), "/", &SPOOFED));
    assert_eq!(values(&got, "x-forwarded-for"), ["127.0.0.1"], "{got:?}");
    assert_eq!(values(&got, "x-real-ip"), ["127.0.0.1"]);
    assert_eq!(values(&got, "x-forwarded-proto"), ["http"]);
    assert!(values(&got, "forwarded").is_empty(), "{got:?}");
    // the names go out as they are usually written
    assert!(got.iter().any(|(n, _)| n == "X-Forwarded-For"), "{got:?}");
    // over IPv6 too
    let r = Conn::open(None, proxy.addr_v6())
        .and_then(|mut c| c.request("GET", "/", &SPOOFED, b""))
        .expect("GET over [::1]");
    let got = seen(&r);
    assert_eq!(values(&got, "x-forwarded-for"), ["::1"]);
    assert_eq!(values(&got, "x-real-ip"), ["::1"]);
}

#[test]
fn a_trusted_peer_has_its_chain_extended_from_the_client_it_reported() {
    let proxy = proxy("upstream_options: { forwarded: true }\n");
    let sent = [
        ("X-Forwarded-For", "6.6.6.6, 203.0.113.9"),
        ("X-Forwarded-For", "10.0.0.1:4711"),
        ("X-Forwarded-Proto", "https"),
        ("Forwarded", "for=6.6.6.6"),
    ];
    let got = seen(&get_with(Some("127.0.0.2"), proxy.addr(), "/", &sent));
    // 6.6.6.6 was written by the client itself: left of the client, no trusted hop vouches
    assert_eq!(
        values(&got, "x-forwarded-for"),
        ["203.0.113.9, 10.0.0.1, 127.0.0.2"],
        "{got:?}"
    );
    assert_eq!(values(&got, "x-real-ip"), ["203.0.113.9"]);
    assert_eq!(values(&got, "x-forwarded-proto"), ["https"]);
    assert_eq!(
        values(&got, "forwarded"),
        ["for=203.0.113.9;proto=https, for=10.0.0.1, for=127.0.0.2"]
    );
    // the same request from an untrusted peer
    let got = seen(&get_with(Some("127.0.0.3"), proxy.addr(), "/", &sent));
    assert_eq!(values(&got, "x-forwarded-for"), ["127.0.0.3"], "{got:?}");
    assert_eq!(values(&got, "x-forwarded-proto"), ["http"]);
    assert_eq!(values(&got, "forwarded"), ["for=127.0.0.3;proto=http"]);
    // a trusted peer without a header is the client
    let got = seen(&get_with(Some("127.0.0.2"), proxy.addr(), "/", &[]));
    assert_eq!(values(&got, "x-forwarded-for"), ["127.0.0.2"]);
    assert_eq!(values(&got, "x-forwarded-proto"), ["http"]);
    let r = Conn::open(None, proxy.addr_v6())
        .and_then(|mut c| c.get("/"))
        .expect("GET over [::1]");
    assert_eq!(values(&seen(&r), "forwarded"), ["for=\"[::1]\";proto=http"]);
}

#[test]
fn the_resolved_country_is_sent_in_the_configured_header() {
    let proxy = proxy(
        "geo: { header: CF-IPCountry }\nupstream_options: { country_header: X-Country-Code }\n",
    );
    let got = seen(&get_with(
        Some("127.0.0.2"),
        proxy.addr(),
        "/",
        &[("CF-IPCountry", "jp"), ("X-Country-Code", "US")],
    ));
    assert_eq!(values(&got, "x-country-code"), ["JP"], "{got:?}");
    assert!(got.iter().any(|(n, _)| n == "X-Country-Code"), "{got:?}");
    assert_eq!(
        values(&got, "cf-ipcountry"),
        ["jp"],
        "a trusted peer's header is kept"
    );
    // an untrusted peer's country header is neither believed nor passed on
    let got = seen(&get_with(
        Some("127.0.0.3"),
        proxy.addr(),
        "/",
        &[("CF-IPCountry", "JP"), ("X-Country-Code", "JP")],
    ));
    assert_eq!(values(&got, "x-country-code"), ["XX"], "{got:?}");
    assert!(values(&got, "cf-ipcountry").is_empty(), "{got:?}");
}

#[test]
fn forwarded_headers_off_passes_them_as_they_came() {
    let proxy = proxy("upstream_options: { forwarded_headers: false }\n");
    let got = seen(&get_with(Some("127.0.0.1"), proxy.addr(), "/", &SPOOFED));
    for (name, value) in SPOOFED {
        assert_eq!(values(&got, name), [value], "{got:?}");
    }
    let got = seen(&get_with(Some("127.0.0.1"), proxy.addr(), "/", &[]));
    for (name, _) in SPOOFED {
        assert!(values(&got, name).is_empty(), "{got:?}");
    }
}

/// Sends `bytes` on a new connection and reads everything until sekisho closes it.
fn exchange_raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(bytes).expect("send");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read until close");
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks that `r` is one of sekisho's own answers with `status` and `body`.
fn assert_own_answer(r: &Response, status: u16, body: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.text(), body);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert!(r.header("server").is_none(), "{:?}", r.headers);
}

#[test]
fn a_malformed_request_gets_sekishos_400_and_the_connection_is_closed() {
    let proxy = proxy("");
    for bad in [
        &b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
        b"\x01\x02 nonsense\r\n\r\n",
    ] {
        let text = exchange_raw(proxy.addr(), bad);
        assert!(text.starts_with("HTTP/1.1 400 "), "{text:?}");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        let head = head.to_ascii_lowercase();
        assert_eq!(body, "400 Bad Request\n", "{text:?}");
        assert!(head.contains("\r\ncontent-type: text/plain"), "{head}");
        assert!(head.contains("\r\nconnection: close"), "{head}");
        assert!(!head.contains("\r\nserver:"), "{head}");
    }
}

#[test]
fn an_origin_that_is_down_gets_sekishos_502_and_the_client_keeps_its_connection() {
    // A port bound but not listening: connecting is refused, and no other test's process can
    // take it meanwhile (a port merely found free could become the proxy's own or an origin's).
    let hold =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    hold.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    let port = hold
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map(|a| a.port())
        .expect("a port");
    let proxy = Proxy::start(&format!("upstreams: [\"127.0.0.1:{port}\"]\n"));
    let mut c = Conn::open(None, proxy.addr()).expect("connect");
    for _ in 0..2 {
        let r = c.get("/").expect("an answer on the same connection");
        assert_own_answer(
            &r,
            502,
            "502 Bad Gateway: no valid response from the origin\n",
        );
        assert_eq!(r.header("connection"), Some("keep-alive"));
    }
    let r = c.request("HEAD", "/", &[], b"").expect("HEAD");
    assert_eq!(r.status, 502);
    assert!(r.header("server").is_none());
}

#[test]
fn refusals_and_connect_carry_no_server_header() {
    let proxy = proxy(
        "rules:\n  - name: blocked\n    match: { path_prefix: /blocked }\n    action: deny\n  - name: slow\n    match: { path_prefix: /slow }\n    limit: { rate: 1/h, burst: 1 }\n    response: { status: 429, retry_after: true }\n",
    );
    let r = get_with(None, proxy.addr(), "/blocked", &[]);
    assert_eq!(r.status, 403);
    assert!(r.header("server").is_none(), "{:?}", r.headers);
    assert!(!r.body.is_empty());
    assert_eq!(get_with(None, proxy.addr(), "/slow", &[]).status, 200);
    let r = get_with(None, proxy.addr(), "/slow", &[]);
    assert_eq!(r.status, 429);
    assert!(r.header("server").is_none(), "{:?}", r.headers);
    let text = exchange_raw(
        proxy.addr(),
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    );
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 405 "), "{text:?}");
    assert!(!head.to_ascii_lowercase().contains("\r\nserver:"), "{head}");
    assert_eq!(
        body,
        "405 Method Not Allowed: sekisho does not forward CONNECT\n"
    );
}
