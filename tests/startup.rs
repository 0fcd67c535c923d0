//! The real binary starting: an address it cannot listen on stops it at once with one line and
//! exit status 1; a good start logs a line per listener, the admin address and the upstreams,
//! and none of Pingora's own start and stop chatter.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use serde_json::json;
use support::{free_port, Run};

/// A guard against a hang, not a timing claim: a failed start ends long before.
const LIMIT: Duration = Duration::from_secs(30);

/// A config listening on `listen` with the admin listener on `admin`.
fn config(listen: &str, admin: &str) -> String {
    format!(
        "listen: [\"{listen}\"]\nadmin: {{ listen: \"{admin}\" }}\nthreads: 1\ngrace_period: 0s\ngraceful_shutdown_timeout: 1s\nupstreams: [\"127.0.0.1:{}\"]\n",
        free_port("127.0.0.1")
    )
}

/// Runs `config` to its exit; asserts status 1 and exactly one line naming `addr` and `error`,
/// and that Pingora never got to retry the bind.
fn refuses_to_start(config: &str, addr: &str, field: &str, error: &str) {
    let (status, stderr) = Run::start(config, Some("info")).wait_exit(LIMIT);
    assert_eq!(status.code(), Some(1), "exit status; stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(error)).collect();
    assert_eq!(lines.len(), 1, "one line with {error:?}; stderr:\n{stderr}");
    assert!(
        lines[0].contains(&format!("cannot listen on {addr} ({field}): {error}")),
        "{stderr}"
    );
    assert!(!stderr.contains("will try again"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_listen_address_in_use_stops_the_start_with_one_line() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let admin = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    refuses_to_start(
        &config(&addr, &admin),
        &addr,
        "listen[0]",
        "Address already in use",
    );
}

#[test]
fn an_admin_address_in_use_stops_the_start_with_one_line() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = held.local_addr().unwrap().to_string();
    let listen = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    refuses_to_start(
        &config(&listen, &admin),
        &admin,
        "admin.listen",
        "Address already in use",
    );
}

#[test]
fn a_listen_address_the_host_lacks_stops_the_start_with_one_line() {
    // 192.0.2.0/24 is TEST-NET-1: no host has it, so bind() fails with EADDRNOTAVAIL, unless
    // the host lets any address be bound.
    if std::fs::read_to_string("/proc/sys/net/ipv4/ip_nonlocal_bind").is_ok_and(|v| v.trim() != "0")
    {
        eprintln!("skipped: net.ipv4.ip_nonlocal_bind is on, any address can be bound here");
        return;
    }
    let admin = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    refuses_to_start(
        &config("192.0.2.1:80", &admin),
        "192.0.2.1:80",
        "listen[0]",
        "Cannot assign requested address",
    );
}

/// The ports of a proxy that started: its listeners on 127.0.0.1 and [::1], its admin
/// listener, and the (absent) upstream it names as `localhost` and as `127.0.0.1`.
struct Ports {
    port: u16,
    admin: u16,
    upstream: u16,
}

/// Starts the binary with `SEKISHO_LOG` at `log` and waits until it listens everywhere; retries
/// with other ports if one was taken in between.
fn started(log: Option<&str>) -> (Run, Ports) {
    for _attempt in 0..5 {
        let p = Ports {
            port: free_port("127.0.0.1"),
            admin: free_port("127.0.0.1"),
            upstream: free_port("127.0.0.1"),
        };
        let text = format!(
            "listen: [\"127.0.0.1:{0}\", \"[::1]:{0}\"]\nadmin: {{ listen: \"127.0.0.1:{1}\" }}\nthreads: 1\ngrace_period: 0s\ngraceful_shutdown_timeout: 1s\nupstreams: [\"localhost:{2}\", \"127.0.0.1:{2}\"]\n",
            p.port, p.admin, p.upstream
        );
        let addrs = [
            SocketAddr::from(([127, 0, 0, 1], p.port)),
            format!("[::1]:{}", p.port).parse().unwrap(),
            SocketAddr::from(([127, 0, 0, 1], p.admin)),
        ];
        let mut run = Run::start(&text, log);
        if run.wait_listening(&addrs, LIMIT) {
            return (run, p);
        }
        let (_, stderr) = run.wait_exit(LIMIT);
        assert!(stderr.contains("in use"), "did not start:\n{stderr}");
    }
    panic!("no free ports in five attempts");
}

/// Whether `line` is an INFO line of Pingora's own.
fn pingora_info(line: &str) -> bool {
    line.contains(" INFO pingora")
}

#[test]
fn a_start_logs_each_listener_the_admin_address_and_the_upstreams_and_no_pingora_chatter() {
    // SEKISHO_LOG unset: the default filter
    let (mut run, p) = started(None);
    run.signal("TERM");
    let (status, stderr) = run.wait_exit(LIMIT);
    assert!(
        status.success(),
        "exit status {status:?}; stderr:\n{stderr}"
    );
    let info = |needle: &str| -> Vec<&str> {
        stderr
            .lines()
            .filter(|l| l.contains(" INFO ") && l.contains(needle))
            .collect()
    };
    for needle in [
        format!("listening addr=127.0.0.1:{} field=listen[0]", p.port),
        format!("listening addr=[::1]:{} field=listen[1]", p.port),
        format!("admin listening addr=127.0.0.1:{}", p.admin),
    ] {
        assert_eq!(
            info(&needle).len(),
            1,
            "one INFO line with {needle:?}; stderr:\n{stderr}"
        );
    }
    // each upstream as written, with what it resolved to where that differs
    let lines = info("upstreams: ");
    assert_eq!(lines.len(), 1, "one upstreams line; stderr:\n{stderr}");
    let listed = lines[0].split("upstreams: ").nth(1).unwrap_or_default();
    let u = p.upstream;
    assert!(
        [
            format!("localhost:{u} (127.0.0.1:{u}), 127.0.0.1:{u}"),
            format!("localhost:{u} ([::1]:{u}), 127.0.0.1:{u}"),
        ]
        .contains(&listed.to_string()),
        "{}",
        lines[0]
    );
    // no country database, the under-attack switch off (no state file yet)
    assert_eq!(info("no country database or header").len(), 1, "{stderr}");
    assert_eq!(
        info("under-attack switch setting=\"off\"").len(),
        1,
        "{stderr}"
    );
    // Pingora's start ("Server starting", "Bootstrap done") and stop ("SIGTERM received")
    // lines are INFO: not shown by default
    assert!(
        !stderr.lines().any(pingora_info),
        "Pingora INFO lines by default:\n{stderr}"
    );
}

#[test]
fn sekisho_log_can_ask_for_pingoras_own_lines() {
    let (mut run, _) = started(Some("warn,pingora=info"));
    run.signal("TERM");
    let (_, stderr) = run.wait_exit(LIMIT);
    assert!(
        stderr.lines().any(pingora_info),
        "no Pingora INFO line though asked for:\n{stderr}"
    );
    assert!(!stderr.contains(" INFO sekisho"), "{stderr}");
}

/// Polls `/readyz` until it answers 200 (panics with the last answer after [`LIMIT`]). The
/// admin listener can answer before Pingora runs the proxy service (its sockets are bound and
/// take connections already): `/readyz` then names those listeners.
fn wait_ready(proxy: &support::Proxy) -> support::Response {
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let r = support::get_from(None, proxy.admin_addr(), "/readyz");
        if r.status == 200 {
            return r;
        }
        let text = r.text();
        assert_eq!(r.status, 503, "{text}");
        assert!(
            text.lines()
                .all(|l| l.starts_with("not ready: listen[") && l.ends_with(": not serving")),
            "only listeners can be missing here: {text}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "not ready after {LIMIT:?}: {text}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn readyz_is_200_once_every_listener_serves_and_says_what_is_missing_otherwise() {
    let origin = support::Origin::start();
    let proxy = support::Proxy::start(&origin.upstreams());
    assert_eq!(wait_ready(&proxy).text(), "ready\n");

    let dead = free_port("127.0.0.1");
    let proxy = support::Proxy::start(&format!("upstreams: [\"127.0.0.1:{dead}\"]\n"));
    wait_ready(&proxy);
    assert_eq!(support::get_from(None, proxy.addr(), "/").status, 502);
    let r = support::get_from(None, proxy.admin_addr(), "/readyz");
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            503,
            "not ready: every upstream refused its last connection\n"
        )
    );
    // /admin/status says the same: the version, how long it has run, each listener serving,
    // and the one peer skipped for a while
    let status = proxy.status();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(status["started_unix"].as_u64().unwrap_or(0) > 0, "{status}");
    assert!(status["uptime_s"].is_u64(), "{status}");
    let listeners = status["listeners"].as_array().cloned().unwrap_or_default();
    let fields: Vec<&str> = listeners
        .iter()
        .map(|l| l["field"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        fields,
        ["listen[0]", "listen[1]", "admin.listen"],
        "{status}"
    );
    assert!(listeners.iter().all(|l| l["serving"] == true), "{status}");
    let peer = &status["upstreams"][0];
    assert_eq!(peer["addr"], format!("127.0.0.1:{dead}"), "{status}");
    assert_eq!(peer["up"], false, "{status}");
    let skipped = peer["skipped_for_s"].as_u64().unwrap_or(0);
    assert!((1..=10).contains(&skipped), "{status}");
    let live = support::Proxy::start(&origin.upstreams());
    wait_ready(&live);
    let peer = &live.status()["upstreams"][0];
    assert_eq!(
        (&peer["up"], &peer["skipped_for_s"]),
        (&json!(true), &json!(null))
    );
}

#[test]
fn a_restart_that_comes_back_under_attack_says_so_with_the_bans_it_restored() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let admin = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let listen = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let geo = support::geo_fixture(&[("1.0.16.0/20", "JP")]);
    let text = format!(
        "{}geo: {{ database: geo.mmdb }}\nunder_attack:\n  rules:\n    - name: slow\n      limit: {{ rate: 1/s, burst: 5 }}\n",
        config(&listen, &admin)
    );
    let mut run = Run::start_with(&text, None, |dir| {
        std::fs::write(dir.join("geo.mmdb"), &geo).unwrap();
        let state = format!(
            "{{\"version\":1,\"saved_at\":{now},\"under_attack\":\"on\",\"bans\":[{{\"net\":\"203.0.113.7/32\",\"since\":{now},\"until\":{},\"forget_at\":{},\"strikes\":1,\"mode\":\"enforce\",\"source\":\"manual\",\"reason\":\"test\"}}]}}",
            now + 3600,
            now + 7200
        );
        std::fs::write(dir.join("sekisho-bans.json"), state).unwrap();
    });
    let addrs = [listen.parse().unwrap(), admin.parse().unwrap()];
    assert!(run.wait_listening(&addrs, LIMIT), "did not start");
    run.signal("TERM");
    let (_, stderr) = run.wait_exit(LIMIT);
    let line = |level: &str, needle: &str| {
        stderr
            .lines()
            .filter(|l| l.contains(level) && l.contains(needle))
            .count()
    };
    assert_eq!(
        line(
            " WARN ",
            "under-attack switch restored from the state file as set by hand"
        ),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("setting=\"on\""), "{stderr}");
    assert_eq!(line(" INFO ", "ban state restored"), 1, "{stderr}");
    assert!(stderr.contains("restored=1"), "{stderr}");
    // the country database: its file, type and build date (a date, not an epoch)
    let geo_line = stderr
        .lines()
        .find(|l| l.contains(" INFO ") && l.contains("country database file="))
        .unwrap_or_else(|| panic!("no country database line:\n{stderr}"));
    assert!(geo_line.contains("type=\"Test-Country\""), "{geo_line}");
    let built = geo_line.split("built=").nth(1).unwrap_or_default();
    assert!(
        built.len() == 10 && built.as_bytes()[4] == b'-' && built.as_bytes()[7] == b'-',
        "{geo_line}"
    );
}
