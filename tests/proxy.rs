//! The real binary over real sockets on loopback: pass-through, lists, limits, identity, IPv6,
//! upstream failure.

mod support;

use support::{free_port, get_from, get_with, Conn, Origin, Proxy};

#[test]
fn passes_status_headers_and_bodies_through() {
    let origin = Origin::start();
    let proxy = Proxy::start(&origin.upstreams());
    let mut c = Conn::open(None, proxy.addr()).unwrap();

    let r = c
        .request(
            "GET",
            "/hello?x=1",
            &[("Host", "shop.example"), ("X-Custom", "1")],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok\n");
    assert_eq!(r.header("x-origin"), Some("sekisho-demo"));
    // the Host header reaches the origin unchanged
    assert_eq!(r.header("x-origin-host"), Some("shop.example"));

    let r = c
        .request("POST", "/echo", &[], b"name=sekisho&x=42")
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "name=sekisho&x=42");

    let r = c.get("/status/404").unwrap();
    assert_eq!(r.status, 404);
    let r = c.request("HEAD", "/", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(origin.hits(), 4);
}

#[test]
fn deny_listed_source_gets_403_and_origin_sees_nothing() {
    let origin = Origin::start();
    let body = format!(
        "{}lists:\n  deny: {{ files: [deny.txt], cidrs: [\"127.0.0.4/32\"] }}\n",
        origin.upstreams()
    );
    let proxy = Proxy::start_with(&body, |dir| {
        std::fs::write(dir.join("deny.txt"), "# test\n127.0.0.2\n").unwrap();
    });
    for src in ["127.0.0.2", "127.0.0.4"] {
        let mut c = Conn::open(Some(src), proxy.addr()).unwrap();
        for _ in 0..3 {
            let r = c.get("/").unwrap();
            assert_eq!(r.status, 403, "from {src}");
            assert_eq!(
                r.header("content-length"),
                Some(r.body.len().to_string().as_str())
            );
        }
    }
    assert_eq!(origin.hits(), 0, "the origin saw a denied request");
    assert_eq!(get_from(Some("127.0.0.3"), proxy.addr(), "/").status, 200);
    assert_eq!(origin.hits(), 1);
}

#[test]
fn per_ip_limit_lets_exactly_burst_through_on_a_kept_alive_connection() {
    let origin = Origin::start();
    let body = format!(
        "{}rules:\n  - name: per-ip\n    limit: {{ rate: 1/h, burst: 5 }}\n",
        origin.upstreams()
    );
    let proxy = Proxy::start(&body);
    let mut c = Conn::open(None, proxy.addr()).unwrap();
    let statuses: Vec<u16> = (0..8).map(|_| c.get("/").unwrap().status).collect();
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 403, 403, 403]);
    assert_eq!(origin.hits(), 5);
    // HEAD refusals carry the Content-Length of the GET answer but no body, and the
    // connection stays usable
    let get = c.get("/").unwrap();
    assert_eq!(get.text(), "Forbidden\n");
    let r = c.request("HEAD", "/", &[], b"").unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(r.header("content-length"), Some("10"));
    assert_eq!(c.get("/").unwrap().status, 403);
}

#[test]
fn login_limit_does_not_affect_other_paths() {
    let origin = Origin::start();
    let body = format!(
        "{}rules:\n  - name: login\n    match: {{ path_prefix: /login, methods: [POST] }}\n    limit: {{ rate: 1/h, burst: 2 }}\n    response: {{ status: 429, retry_after: true, body: \"slow down\\n\" }}\n",
        origin.upstreams()
    );
    let proxy = Proxy::start(&body);
    let mut c = Conn::open(None, proxy.addr()).unwrap();
    for _ in 0..2 {
        assert_eq!(
            c.request("POST", "/login", &[], b"u=a&p=b").unwrap().status,
            200
        );
    }
    let r = c.request("POST", "/login", &[], b"u=a&p=b").unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.text(), "slow down\n");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    // 1/h: the next token is an hour (less the time the test took) away
    assert!((3590..=3600).contains(&retry), "retry-after {retry}");
    // a refused request with a body closes the connection; use a new one
    let mut c = Conn::open(None, proxy.addr()).unwrap();
    for _ in 0..10 {
        assert_eq!(c.get("/").unwrap().status, 200);
    }
    // GET /login is not limited (the rule is for POST)
    assert_eq!(c.get("/login").unwrap().status, 200);
}

#[test]
fn two_sources_have_separate_buckets() {
    let origin = Origin::start();
    let body = format!(
        "{}rules:\n  - name: per-ip\n    limit: {{ rate: 1/h, burst: 3 }}\n",
        origin.upstreams()
    );
    let proxy = Proxy::start(&body);
    for src in ["127.0.0.2", "127.0.0.3"] {
        let mut c = Conn::open(Some(src), proxy.addr()).unwrap();
        let s: Vec<u16> = (0..4).map(|_| c.get("/").unwrap().status).collect();
        assert_eq!(s, vec![200, 200, 200, 403], "from {src}");
    }
}

#[test]
fn forwarded_for_is_honoured_only_from_trusted_proxies() {
    let origin = Origin::start();
    let body = format!(
        "{}client_ip:\n  trusted_proxies: [\"127.0.0.2/32\"]\nlists:\n  deny: {{ cidrs: [\"203.0.113.7\"] }}\nrules:\n  - name: per-client\n    limit: {{ rate: 1/h, burst: 2 }}\n",
        origin.upstreams()
    );
    let proxy = Proxy::start(&body);
    let xff = |v: &'static str| [("X-Forwarded-For", v)];
    // trusted peer: the forwarded client is judged
    let r = get_with(Some("127.0.0.2"), proxy.addr(), "/", &xff("203.0.113.7"));
    assert_eq!(r.status, 403);
    // untrusted peer: the header is ignored, the peer itself is judged
    let r = get_with(Some("127.0.0.3"), proxy.addr(), "/", &xff("203.0.113.7"));
    assert_eq!(r.status, 200);
    // buckets follow the forwarded client: two clients behind one proxy
    for client in ["198.51.100.1", "198.51.100.2"] {
        let s: Vec<u16> = (0..3)
            .map(|_| {
                get_with(
                    Some("127.0.0.2"),
                    proxy.addr(),
                    "/",
                    &[("X-Forwarded-For", client)],
                )
                .status
            })
            .collect();
        assert_eq!(s, vec![200, 200, 403], "client {client}");
    }
    // a forged left-most entry does not help: the right-most untrusted address is the client
    let r = get_with(
        Some("127.0.0.2"),
        proxy.addr(),
        "/",
        &xff("198.51.100.99, 203.0.113.7"),
    );
    assert_eq!(r.status, 403);
}

#[test]
fn ipv6_clients_work() {
    let origin = Origin::start();
    let body = format!(
        "{}rules:\n  - name: per-ip\n    limit: {{ rate: 1/h, burst: 2 }}\n",
        origin.upstreams()
    );
    let proxy = Proxy::start(&body);
    let mut c = Conn::open(None, proxy.addr_v6()).unwrap();
    let s: Vec<u16> = (0..3).map(|_| c.get("/").unwrap().status).collect();
    assert_eq!(s, vec![200, 200, 403]);
    // ::1 and 127.0.0.1 are different clients
    assert_eq!(get_from(None, proxy.addr(), "/").status, 200);
}

#[test]
fn upstream_down_gives_502_and_the_proxy_keeps_serving() {
    let dead = free_port("127.0.0.1");
    let mut proxy = Proxy::start(&format!("upstreams: [\"127.0.0.1:{dead}\"]\n"));
    for _ in 0..3 {
        assert_eq!(get_from(None, proxy.addr(), "/").status, 502);
    }
    assert!(proxy.alive());

    // with a live peer beside the dead one, every request is served
    let origin = Origin::start();
    let proxy = Proxy::start(&format!(
        "upstreams: [\"127.0.0.1:{dead}\", \"{}\"]\n",
        origin.addr
    ));
    let mut c = Conn::open(None, proxy.addr()).unwrap();
    for i in 0..6 {
        assert_eq!(c.get("/").unwrap().status, 200, "request {i}");
    }
    assert_eq!(origin.hits(), 6);
}

#[test]
fn rules_see_through_evasions() {
    let origin = Origin::start();
    let body = format!(
        "{}rules:\n  - name: wp\n    match: {{ path_regex: \"^/(wp-admin|wp-login\\\\.php|\\\\.env)\" }}\n    action: deny\n  - name: admin-host\n    match: {{ host: admin.example.com }}\n    action: deny\n  - name: tools\n    match: {{ user_agent: \"(?i)sqlmap\" }}\n    action: deny\n",
        origin.upstreams()
    );
    let proxy = Proxy::start(&body);
    let mut c = Conn::open(None, proxy.addr()).unwrap();
    for path in [
        "/wp-login.php",
        "/%77p-login.php",
        "//wp-admin/",
        "/x/../.env",
        "/./.env",
    ] {
        assert_eq!(c.get(path).unwrap().status, 403, "{path}");
    }
    for host in [
        "admin.example.com",
        "ADMIN.example.com.",
        "admin.example.com:8080",
    ] {
        let r = c.request("GET", "/", &[("Host", host)], b"").unwrap();
        assert_eq!(r.status, 403, "{host}");
    }
    let raw = |request: &[u8]| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(proxy.addr()).unwrap();
        s.write_all(request).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        String::from_utf8_lossy(&out).into_owned()
    };
    // absolute-form target: its authority is the host (a Host that differs is refused: 400)
    let out = raw(
        b"GET http://admin.example.com/ HTTP/1.1\r\nHost: admin.example.com\r\nConnection: close\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    let out =
        raw(b"GET http://admin.example.com/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    // without Host at all, an HTTP/1.1 request is refused whatever its target (§3.2: 400)
    let out = raw(b"GET http://admin.example.com/ HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    // a non-ASCII byte in User-Agent does not hide the tool's name
    let out = raw(
        b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: sqlmap/1.7\xff\r\nConnection: close\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert_eq!(origin.hits(), 0);
    assert_eq!(c.get("/wp-content/x.css").unwrap().status, 200);
}

#[test]
fn count_mode_passes_and_is_recorded_per_rule() {
    let origin = Origin::start();
    let body = format!(
        "{}lists:\n  deny: {{ cidrs: [\"127.0.0.2\"], mode: count }}\nrules:\n  - name: shadow\n    limit: {{ rate: 1/h, burst: 2 }}\n    mode: count\n",
        origin.upstreams()
    );
    let proxy = Proxy::start(&body);
    let mut c = Conn::open(None, proxy.addr()).unwrap();
    for _ in 0..5 {
        assert_eq!(c.get("/").unwrap().status, 200);
    }
    assert_eq!(get_from(Some("127.0.0.2"), proxy.addr(), "/").status, 200);
    let s = proxy.status();
    assert_eq!(s["rule_stats"][0]["would_refuse"], 3, "{s}");
    assert!(s["rule_stats"][0]["refused"].is_null(), "{s}");
    assert_eq!(s["deny_list"]["would_refuse"], 1, "{s}");
    assert_eq!(s["decisions"]["count"], 4, "{s}");
    assert_eq!(origin.hits(), 6);
}
