//! The access log: one line per request (allowed, refused by a rule, limited), in the combined
//! format and as JSON, with the request id the origin received; a trusted peer's id kept, an
//! untrusted one's replaced; reopened on SIGUSR1.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::{get_from, get_with, metric_value as value, Conn, Origin, Proxy};

const RULES: &str = "rules:\n  - name: probes\n    match: { path: /.env }\n    action: deny\n  - name: login\n    match: { path_prefix: /login }\n    limit: { rate: 1/h, burst: 1 }\n    response: { status: 429 }\n";

/// The lines of `path` once there are at least `n` (polling, bounded by a deadline).
fn lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} lines in {}: {lines:?}",
            lines.len(),
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A combined line, split: (client, request, status, bytes, referer, user agent, rt, urt, rule, id).
struct Combined {
    client: String,
    request: String,
    status: u16,
    bytes: usize,
    referer: String,
    user_agent: String,
    urt: String,
    rule: String,
    id: String,
}

fn parse_combined(line: &str) -> Combined {
    // quoted fields cannot hold a raw quote (it is written \x22)
    let q: Vec<&str> = line.split('"').collect();
    assert_eq!(q.len(), 7, "{line}");
    let head: Vec<&str> = q[0].split(' ').collect();
    assert_eq!(&head[1..3], ["-", "-"], "{line}");
    assert!(head[3].starts_with('[') && head[4] == "+0000]", "{line}");
    let mut sb = q[2].split_whitespace();
    let status = sb.next().and_then(|s| s.parse().ok()).expect("status");
    let bytes = sb.next().and_then(|s| s.parse().ok()).expect("bytes");
    let tail: Vec<(&str, &str)> = q[6]
        .split_whitespace()
        .map(|kv| kv.split_once('=').expect("key=value"))
        .collect();
    let keys: Vec<&str> = tail.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, ["rt", "urt", "rule", "id"], "{line}");
    let rt: f64 = tail[0].1.parse().expect("rt");
    assert!(rt >= 0.0 && tail[0].1.split_once('.').map(|(_, d)| d.len()) == Some(3));
    Combined {
        client: head[0].to_string(),
        request: q[1].to_string(),
        status,
        bytes,
        referer: q[3].to_string(),
        user_agent: q[5].to_string(),
        urt: tail[1].1.to_string(),
        rule: tail[2].1.to_string(),
        id: tail[3].1.to_string(),
    }
}

#[test]
fn combined_lines_for_allowed_refused_and_limited_requests_carry_the_id_upstream_saw() {
    let origin = Origin::start();
    let proxy = Proxy::start(&format!(
        "{}access_log: {{ path: access.log }}\n{RULES}",
        origin.upstreams()
    ));
    let metrics = get_from(None, proxy.admin_addr(), "/metrics").text();
    assert_eq!(
        value(&metrics, "sekisho_access_log_lines_total", &[]),
        Some(0.0)
    );
    assert_eq!(
        value(&metrics, "sekisho_access_log_dropped_total", &[]),
        Some(0.0)
    );

    let mut c = Conn::open(None, proxy.addr()).unwrap();
    let ua = [
        ("User-Agent", "Mozilla/5.0 \"quoted\""),
        ("Referer", "https://a.example/"),
    ];
    let mut got = Vec::new();
    for path in ["/a?q=1", "/.env", "/login", "/login"] {
        got.push(c.request("GET", path, &ua, b"").unwrap());
    }
    let statuses: Vec<u16> = got.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 403, 200, 429]);
    let log = lines(&proxy.dir.path().join("access.log"), 4);
    assert_eq!(log.len(), 4, "{log:?}");
    let parsed: Vec<Combined> = log.iter().map(|l| parse_combined(l)).collect();
    for ((p, r), (path, rule)) in parsed.iter().zip(&got).zip([
        ("/a?q=1", "-"),
        ("/.env", "probes"),
        ("/login", "-"),
        ("/login", "login"),
    ]) {
        assert_eq!(p.client, "127.0.0.1");
        assert_eq!(p.request, format!("GET {path} HTTP/1.1"));
        assert_eq!(p.status, r.status);
        assert_eq!(p.bytes, r.body.len(), "{}", p.request);
        assert_eq!(p.rule, rule);
        assert_eq!(p.referer, "https://a.example/");
        assert_eq!(p.user_agent, "Mozilla/5.0 \\x22quoted\\x22");
        assert_eq!(p.id.len(), 32, "a generated id");
        assert!(p.id.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    // the allowed ones went upstream with the id that was logged; the refused ones did not
    for i in [0, 2] {
        assert_eq!(
            got[i].header("x-origin-request-id"),
            Some(parsed[i].id.as_str())
        );
        assert_ne!(parsed[i].urt, "-");
    }
    for i in [1, 3] {
        assert_eq!(parsed[i].urt, "-");
    }
    assert_eq!(origin.hits(), 2);
    let ids: std::collections::BTreeSet<&str> = parsed.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids.len(), 4, "ids are distinct");

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = get_from(None, proxy.admin_addr(), "/metrics").text();
        if value(&m, "sekisho_access_log_lines_total", &[]) == Some(4.0) {
            assert_eq!(
                value(&m, "sekisho_access_log_dropped_total", &[]),
                Some(0.0)
            );
            break;
        }
        assert!(Instant::now() < deadline, "lines not counted: {m}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn json_lines_parse_and_keep_only_a_trusted_peers_request_id() {
    let origin = Origin::start();
    let proxy = Proxy::start(&format!(
        "{}client_ip: {{ trusted_proxies: [\"127.0.0.2/32\"] }}\naccess_log: {{ path: access.json, format: json, queue: 1024 }}\n{RULES}",
        origin.upstreams()
    ));
    let id = [("X-Request-Id", "lb-7f3a-0001")];
    let trusted = get_with(Some("127.0.0.2"), proxy.addr(), "/t", &id);
    let untrusted = get_with(Some("127.0.0.3"), proxy.addr(), "/u", &id);
    let insane = get_with(
        Some("127.0.0.2"),
        proxy.addr(),
        "/v",
        &[("X-Request-Id", "a b")],
    );
    let limited = [
        get_with(Some("127.0.0.2"), proxy.addr(), "/login", &id),
        get_with(Some("127.0.0.2"), proxy.addr(), "/login", &id),
    ];
    assert_eq!(trusted.header("x-origin-request-id"), Some("lb-7f3a-0001"));
    let replaced = untrusted
        .header("x-origin-request-id")
        .expect("an id upstream");
    assert_ne!(replaced, "lb-7f3a-0001");
    assert_eq!(replaced.len(), 32);
    let generated = insane
        .header("x-origin-request-id")
        .expect("an id upstream");
    assert_eq!(generated.len(), 32);
    assert_eq!(limited[1].status, 429);

    let log = lines(&proxy.dir.path().join("access.json"), 5);
    let v: Vec<serde_json::Value> = log
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    for l in &v {
        for f in [
            "ts",
            "client",
            "method",
            "path",
            "proto",
            "status",
            "bytes",
            "upstream_seconds",
            "total_seconds",
            "decision",
            "rule",
            "host",
            "referer",
            "user_agent",
            "request_id",
        ] {
            assert!(l.get(f).is_some(), "missing {f} in {l}");
        }
        assert!(l["ts"].as_str().unwrap().ends_with('Z'), "{l}");
        assert_eq!(l["method"], "GET");
        assert_eq!(l["proto"], "HTTP/1.1");
        assert_eq!(l["host"], "test.local");
        assert!(l["total_seconds"].as_f64().is_some_and(|s| s >= 0.0));
    }
    assert_eq!(v[0]["request_id"], "lb-7f3a-0001");
    assert_eq!(v[0]["client"], "127.0.0.2");
    assert_eq!(v[0]["path"], "/t");
    assert_eq!(v[0]["status"], 200);
    assert_eq!(v[0]["bytes"], 3);
    assert_eq!(v[0]["decision"], "allow");
    assert!(v[0]["rule"].is_null());
    assert!(v[0]["upstream_seconds"].as_f64().is_some());
    assert_eq!(v[1]["request_id"], replaced);
    assert_eq!(v[1]["client"], "127.0.0.3");
    assert_eq!(v[2]["request_id"], generated);
    assert_eq!(v[4]["decision"], "limit");
    assert_eq!(v[4]["rule"], "login");
    assert_eq!(v[4]["status"], 429);
    assert_eq!(v[4]["bytes"], limited[1].body.len());
    assert!(v[4]["upstream_seconds"].is_null());
    assert_eq!(v[4]["request_id"], "lb-7f3a-0001", "kept on refusals too");
}

#[test]
fn the_access_log_is_reopened_on_sigusr1() {
    let origin = Origin::start();
    let proxy = Proxy::start(&format!(
        "{}access_log: {{ path: access.log }}\ndecision_log: {{ path: decisions.log }}\n",
        origin.upstreams()
    ));
    let log = proxy.dir.path().join("access.log");
    assert_eq!(get_from(None, proxy.addr(), "/before").status, 200);
    lines(&log, 1);
    let rotated = proxy.dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-USR1", &proxy.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log.exists() {
        // a line written before the reopen lands in the rotated file: keep sending
        assert_eq!(get_from(None, proxy.addr(), "/during").status, 200);
        assert!(Instant::now() < deadline, "no new access log file");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(get_from(None, proxy.addr(), "/after").status, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !lines(&log, 1).iter().any(|l| l.contains("GET /after ")) {
        assert!(Instant::now() < deadline, "/after not in the new file");
        std::thread::sleep(Duration::from_millis(10));
    }
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("GET /before "), "{old}");
    assert!(!old.contains("GET /after "), "{old}");
}
