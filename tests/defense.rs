//! Adaptive defense over real HTTP: autoban from upstream 404s and from rate-limit refusals,
//! bans by hand and their export, persistence across a crash, a corrupt state file, and the
//! under-attack switch under load.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{admin, admin_json, get_from, Conn, Origin, Proxy};

const PROBERS: &str = "autoban:\n  - name: probers\n    more_than: 20\n    distinct_paths: 10\n    window: 1m\n    ban: 10m\n";

/// The networks of the live bans.
fn banned(proxy: &Proxy) -> Vec<String> {
    let v = admin_json(proxy, "GET", "/admin/bans");
    v["bans"]
        .as_array()
        .expect("bans array")
        .iter()
        .map(|b| b["net"].as_str().expect("net").to_string())
        .collect()
}

/// Polls `f` every 20 ms until it holds; panics with `what` after 20 s.
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `n` requests for distinct missing paths from `from` on one connection; returns
/// the statuses.
fn probe(proxy: &Proxy, from: &str, n: usize) -> Vec<u16> {
    let mut c = Conn::open(Some(from), proxy.addr()).expect("connect");
    (0..n)
        .map(|i| {
            c.get(&format!("/status/404/no-such-page-{i}-{}", i * 7919 % 1000))
                .expect("probe")
                .status
        })
        .collect()
}

#[test]
fn a_prober_is_banned_and_the_origin_sees_nothing_after() {
    let origin = Origin::start();
    let proxy = Proxy::start(&format!("{}{PROBERS}", origin.upstreams()));
    let statuses = probe(&proxy, "127.0.0.2", 30);
    // more_than: 20 → the 21st 404 trips the policy; the next request is refused.
    assert_eq!(&statuses[..21], &[404; 21][..], "{statuses:?}");
    assert_eq!(&statuses[21..], &[403; 9][..], "{statuses:?}");
    assert_eq!(origin.hits(), 21);
    assert_eq!(banned(&proxy), vec!["127.0.0.2/32"]);

    // Any path, any connection: refused, the origin sees nothing.
    for path in ["/", "/login", "/status/404/x"] {
        assert_eq!(get_from(Some("127.0.0.2"), proxy.addr(), path).status, 403);
    }
    assert_eq!(origin.hits(), 21);
    // Another client is not affected.
    assert_eq!(get_from(Some("127.0.0.3"), proxy.addr(), "/").status, 200);
    assert_eq!(origin.hits(), 22);

    let bans = admin_json(&proxy, "GET", "/admin/bans");
    let ban = &bans["bans"][0];
    assert_eq!(ban["source"], "probers");
    assert_eq!(ban["mode"], "enforce");
    assert_eq!(ban["strikes"], 1);
    let length = ban["until"].as_u64().expect("until") - ban["since"].as_u64().expect("since");
    assert!((599..=601).contains(&length), "a 10m ban: {ban}");

    let metrics = admin(&proxy, "GET", "/metrics").text();
    let value = |name, labels: &[(&str, &str)]| support::metric_value(&metrics, name, labels);
    assert_eq!(
        value(
            "sekisho_bans_total",
            &[("policy", "probers"), ("mode", "enforce")]
        ),
        Some(1.0)
    );
    assert_eq!(value("sekisho_bans_active", &[]), Some(1.0));
    assert_eq!(
        value(
            "sekisho_requests_total",
            &[("decision", "deny"), ("rule", "ban"), ("mode", "enforce")]
        ),
        Some(12.0)
    );
}

#[test]
fn one_missing_path_asked_for_again_and_again_is_not_probing() {
    let origin = Origin::start();
    let proxy = Proxy::start(&format!("{}{PROBERS}", origin.upstreams()));
    let mut c = Conn::open(Some("127.0.0.2"), proxy.addr()).expect("connect");
    for _ in 0..30 {
        assert_eq!(c.get("/status/404/favicon.ico").expect("get").status, 404);
    }
    assert_eq!(c.get("/").expect("get").status, 200);
    assert_eq!(origin.hits(), 31);
    assert!(banned(&proxy).is_empty());
}

#[test]
fn an_allow_listed_address_is_never_banned() {
    let origin = Origin::start();
    let proxy = Proxy::start(&format!(
        "{}lists:\n  allow: {{ cidrs: [\"127.0.0.4\"] }}\n{PROBERS}",
        origin.upstreams()
    ));
    let statuses = probe(&proxy, "127.0.0.4", 40);
    assert_eq!(statuses, vec![404; 40]);
    assert_eq!(get_from(Some("127.0.0.4"), proxy.addr(), "/").status, 200);
    assert!(banned(&proxy).is_empty());
    // A ban by hand does not override the allow list either, and says so.
    let v = admin_json(&proxy, "POST", "/admin/bans?net=127.0.0.4&ttl=1h");
    assert_eq!(v["result"], "banned");
    assert!(
        v["warning"]
            .as_str()
            .is_some_and(|w| w.contains("allow list")),
        "{v}"
    );
    assert_eq!(get_from(Some("127.0.0.4"), proxy.addr(), "/").status, 200);
    // Nor is it exported: another firewall would not know it is allow-listed here.
    admin_json(&proxy, "POST", "/admin/bans?net=127.0.0.0/29&ttl=1h");
    admin_json(&proxy, "POST", "/admin/bans?net=127.0.0.9&ttl=1h");
    let plain = admin(&proxy, "GET", "/admin/bans/export?format=plain");
    assert_eq!(plain.text(), "127.0.0.9\n");
    assert_eq!(plain.header("x-sekisho-allow-listed-left-out"), Some("2"));
}

#[test]
fn a_ban_ends_at_its_ttl() {
    let origin = Origin::start();
    let proxy = Proxy::start(&format!(
        "{}autoban:\n  - name: probers\n    more_than: 20\n    ban: 2s\n",
        origin.upstreams()
    ));
    let statuses = probe(&proxy, "127.0.0.2", 22);
    assert_eq!(statuses[21], 403);
    let banned_at = Instant::now();
    // Poll until the client gets through again: the ban lasted about 2 s, not forever.
    wait_for("the ban to end", || {
        get_from(Some("127.0.0.2"), proxy.addr(), "/").status == 200
    });
    assert!(
        banned_at.elapsed() >= Duration::from_secs(1),
        "ended too early"
    );
    assert!(banned(&proxy).is_empty());
}

#[test]
fn a_client_that_keeps_tripping_limits_is_banned() {
    let origin = Origin::start();
    // The limit answers 403, a status `probers` watches: its refusals must count only for
    // `kind: limited`, or probers (more_than: 2) would ban first.
    let proxy = Proxy::start(&format!(
        "{}rules:\n  - name: login\n    match: {{ path: /login }}\n    limit: {{ rate: 1/h, burst: 2 }}\nautoban:\n  - name: probers\n    more_than: 2\n    distinct_paths: 1\n  - name: limit-trippers\n    kind: limited\n    more_than: 3\n    ban: 10m\n",
        origin.upstreams()
    ));
    let mut c = Conn::open(Some("127.0.0.2"), proxy.addr()).expect("connect");
    let statuses: Vec<u16> = (0..8)
        .map(|_| c.get("/login").expect("login").status)
        .collect();
    // 2 admitted, then 4 refusals by the limit (the 4th is more than 3), then the ban.
    assert_eq!(statuses, vec![200, 200, 403, 403, 403, 403, 403, 403]);
    // The ban covers every path, not only the limited one.
    assert_eq!(get_from(Some("127.0.0.2"), proxy.addr(), "/").status, 403);
    assert_eq!(get_from(Some("127.0.0.3"), proxy.addr(), "/").status, 200);
    let v = admin_json(&proxy, "GET", "/admin/bans");
    assert_eq!(v["bans"][0]["net"], "127.0.0.2/32");
    assert_eq!(v["bans"][0]["source"], "limit-trippers");
    assert_eq!(v["live"], 1);
    let metrics = admin(&proxy, "GET", "/metrics").text();
    assert_eq!(
        support::metric_value(
            &metrics,
            "sekisho_requests_total",
            &[
                ("decision", "limit"),
                ("rule", "login"),
                ("mode", "enforce")
            ]
        ),
        Some(4.0),
        "the last two 403s came from the ban"
    );
}

#[test]
fn count_mode_policy_records_the_ban_without_refusing() {
    let origin = Origin::start();
    let proxy = Proxy::start(&format!(
        "{}autoban:\n  - name: probers\n    more_than: 20\n    mode: count\n",
        origin.upstreams()
    ));
    assert_eq!(probe(&proxy, "127.0.0.2", 30), vec![404; 30]);
    let v = admin_json(&proxy, "GET", "/admin/bans");
    assert_eq!(v["bans"][0]["net"], "127.0.0.2/32");
    assert_eq!(v["bans"][0]["mode"], "count");
    assert_eq!(get_from(Some("127.0.0.2"), proxy.addr(), "/").status, 200);
    let metrics = admin(&proxy, "GET", "/metrics").text();
    assert_eq!(
        support::metric_value(
            &metrics,
            "sekisho_requests_total",
            &[("decision", "count"), ("rule", "ban"), ("mode", "count")]
        ),
        Some(10.0),
        "9 probes after the would-be ban and one GET /"
    );
    // Count-mode bans are not exported: that would enforce elsewhere what is only watched.
    let plain = admin(&proxy, "GET", "/admin/bans/export?format=plain");
    assert_eq!(plain.status, 200);
    assert_eq!(plain.text(), "");
}

#[test]
fn bans_by_hand_their_export_and_lifting_them() {
    let origin = Origin::start();
    let proxy = Proxy::start(&origin.upstreams());
    assert_eq!(get_from(Some("127.0.0.5"), proxy.addr(), "/").status, 200);
    let v = admin_json(
        &proxy,
        "POST",
        "/admin/bans?net=127.0.0.5&ttl=1h&reason=seen+in+threat+feed",
    );
    assert_eq!(v["result"], "banned", "{v}");
    assert_eq!(v["ban"]["reason"], "seen in threat feed");
    let v = admin_json(&proxy, "POST", "/admin/bans?net=127.0.1.0/24&ttl=30m");
    assert_eq!(v["result"], "banned", "{v}");
    let hits = origin.hits();
    assert_eq!(get_from(Some("127.0.0.5"), proxy.addr(), "/").status, 403);
    assert_eq!(get_from(Some("127.0.1.9"), proxy.addr(), "/").status, 403);
    assert_eq!(get_from(Some("127.0.0.6"), proxy.addr(), "/").status, 200);
    assert_eq!(origin.hits(), hits + 1);

    let plain = admin(&proxy, "GET", "/admin/bans/export?format=plain");
    assert_eq!(plain.text(), "127.0.0.5\n127.0.1.0/24\n");
    let nginx = admin(&proxy, "GET", "/admin/bans/export?format=nginx").text();
    assert!(nginx.contains("deny 127.0.0.5;\n"), "{nginx}");
    assert!(nginx.contains("deny 127.0.1.0/24;\n"), "{nginx}");
    let aws: serde_json::Value = serde_json::from_slice(
        &admin(&proxy, "GET", "/admin/bans/export?format=aws-waf-ipset").body,
    )
    .expect("aws json");
    assert_eq!(
        aws["IPV4"]["Addresses"],
        serde_json::json!(["127.0.0.5/32", "127.0.1.0/24"])
    );
    let bad = admin(&proxy, "GET", "/admin/bans/export?format=iptables");
    assert_eq!(bad.status, 400);

    // The command line reads the same, from the admin listener and from the state file.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sekisho"))
        .args(["bans", "export", "--format", "nginx-geo", "--admin"])
        .arg(proxy.admin_addr().to_string())
        .output()
        .expect("run sekisho bans export");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("127.0.0.5/32 1;\n"), "{text}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sekisho"))
        .args(["bans", "export", "--format", "plain", "-c"])
        .arg(&proxy.config)
        .output()
        .expect("run sekisho bans export");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "127.0.0.5\n127.0.1.0/24\n"
    );

    let v = admin_json(&proxy, "DELETE", "/admin/bans?net=127.0.0.5");
    assert_eq!(v["result"], "unbanned");
    assert_eq!(
        admin(&proxy, "DELETE", "/admin/bans?net=127.0.0.5").status,
        404
    );
    assert_eq!(get_from(Some("127.0.0.5"), proxy.addr(), "/").status, 200);
    assert_eq!(
        admin(&proxy, "POST", "/admin/bans?net=not-an-ip").status,
        400
    );
}

#[test]
fn bans_survive_a_crash_and_a_corrupt_state_file_is_reported() {
    let origin = Origin::start();
    let mut proxy = Proxy::start(&format!("{}{PROBERS}", origin.upstreams()));
    let state = proxy.dir.path().join("sekisho-bans.json");
    // One ban by the policy, one by hand.
    assert_eq!(probe(&proxy, "127.0.0.2", 22)[21], 403);
    admin_json(&proxy, "POST", "/admin/bans?net=127.0.0.7&ttl=1h");
    // The autoban reaches the file within a second or so.
    wait_for("the state file to hold both bans", || {
        std::fs::read_to_string(&state)
            .is_ok_and(|t| t.contains("127.0.0.2/32") && t.contains("127.0.0.7/32"))
    });

    proxy.restart(); // SIGKILL: nothing is saved on the way down
    assert_eq!(get_from(Some("127.0.0.2"), proxy.addr(), "/").status, 403);
    assert_eq!(get_from(Some("127.0.0.7"), proxy.addr(), "/").status, 403);
    assert_eq!(get_from(Some("127.0.0.3"), proxy.addr(), "/").status, 200);
    assert_eq!(banned(&proxy), vec!["127.0.0.2/32", "127.0.0.7/32"]);
    assert!(admin_json(&proxy, "GET", "/admin/bans")["state_error"].is_null());

    // Corrupt the file (a torn write by something else, a bad hand edit) and crash again.
    std::fs::write(&state, b"{\"version\": 1, \"bans\": [{\"net\": ").expect("corrupt");
    proxy.restart();
    let v = admin_json(&proxy, "GET", "/admin/bans");
    let error = v["state_error"].as_str().expect("the problem is reported");
    assert!(error.contains("sekisho-bans.json"), "{error}");
    assert!(error.contains("not a sekisho state file"), "{error}");
    assert_eq!(v["live"], 0);
    assert_eq!(get_from(Some("127.0.0.2"), proxy.addr(), "/").status, 200);
    // The unreadable file was kept aside, not overwritten.
    let kept: Vec<String> = std::fs::read_dir(proxy.dir.path())
        .expect("read_dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("sekisho-bans.json.corrupt-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    // /admin/status says so too.
    let s = proxy.status();
    assert!(
        s["defense"]["state_error"].as_str().is_some(),
        "status: {s}"
    );
}

#[test]
fn the_under_attack_switch_changes_decisions_at_once_under_load() {
    let origin = Origin::start();
    let proxy = Proxy::start(&format!(
        "{}under_attack:\n  rules:\n    - name: search-closed\n      match: {{ path_prefix: /search }}\n      action: deny\n    - name: tight-per-ip\n      match: {{ path_prefix: /api }}\n      limit: {{ rate: 1/h, burst: 1 }}\n",
        origin.upstreams()
    ));
    // Load that must pass whatever the switch says: 3 clients on keep-alive connections.
    let stop = Arc::new(AtomicBool::new(false));
    let passed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let addr = proxy.addr();
    let workers: Vec<_> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        .into_iter()
        .map(|from| {
            let (stop, passed, failed) = (stop.clone(), passed.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut c = Conn::open(Some(from), addr).expect("connect");
                while !stop.load(Ordering::Relaxed) {
                    match c.get("/home") {
                        Ok(r) if r.status == 200 => passed.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();

    let mut c = Conn::open(Some("127.0.0.9"), proxy.addr()).expect("connect");
    for round in 0..5 {
        assert_eq!(
            c.get("/search?q=x").expect("search").status,
            200,
            "round {round}, off"
        );
        let v = admin_json(&proxy, "POST", "/admin/under-attack?switch=on");
        assert_eq!(v["on"], true, "{v}");
        // The very next request is judged by the profile.
        assert_eq!(
            c.get("/search?q=x").expect("search").status,
            403,
            "round {round}, on"
        );
        let v = admin_json(&proxy, "POST", "/admin/under-attack?switch=off");
        assert_eq!(v["on"], false, "{v}");
        assert_eq!(
            c.get("/search?q=x").expect("search").status,
            200,
            "round {round}, off again"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "a request that should pass failed"
    );
    assert!(passed.load(Ordering::Relaxed) > 0);

    let metrics = admin(&proxy, "GET", "/metrics").text();
    let value = |name, labels: &[(&str, &str)]| support::metric_value(&metrics, name, labels);
    assert_eq!(
        value("sekisho_under_attack_switches_total", &[("to", "on")]),
        Some(5.0)
    );
    assert_eq!(value("sekisho_under_attack", &[]), Some(0.0));
    assert_eq!(
        value(
            "sekisho_requests_total",
            &[
                ("decision", "deny"),
                ("rule", "search-closed"),
                ("mode", "enforce")
            ]
        ),
        Some(5.0)
    );
}

#[test]
fn the_preview_reports_what_the_profile_would_refuse() {
    let origin = Origin::start();
    let proxy = Proxy::start(&format!(
        "{}under_attack:\n  rules:\n    - name: search-closed\n      match: {{ path_prefix: /search }}\n      action: deny\n",
        origin.upstreams()
    ));
    // The preview counts from its first mark, taken when the proxy starts.
    wait_for("the preview's first mark", || {
        admin_json(&proxy, "GET", "/admin/under-attack/preview")["covered_seconds"].is_u64()
    });
    let mut c = Conn::open(Some("127.0.0.2"), proxy.addr()).expect("connect");
    for _ in 0..4 {
        assert_eq!(c.get("/search?q=cat").expect("search").status, 200);
        assert_eq!(c.get("/").expect("home").status, 200);
    }
    let v = admin_json(&proxy, "GET", "/admin/under-attack/preview?window=5m");
    assert_eq!(v["on"], false);
    assert_eq!(v["would_refuse"], 4, "{v}");
    assert_eq!(v["by_rule"][0]["rule"], "search-closed");
    assert_eq!(v["recent_examples"][0]["client_ip"], "127.0.0.2");
    assert_eq!(v["recent_examples"][0]["path"], "/search");
    assert!(v["requests"].as_u64().is_some_and(|n| n >= 8), "{v}");
    // The origin saw all of them: a preview refuses nothing.
    assert_eq!(origin.hits(), 8);
    let bad = admin(&proxy, "GET", "/admin/under-attack/preview?window=2h");
    assert_eq!(bad.status, 400);
}

#[test]
fn the_hand_set_switch_survives_a_restart() {
    let origin = Origin::start();
    let mut proxy = Proxy::start(&format!(
        "{}under_attack:\n  rules:\n    - name: search-closed\n      match: {{ path_prefix: /search }}\n      action: deny\n",
        origin.upstreams()
    ));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sekisho"))
        .args(["attack", "on", "-c"])
        .arg(&proxy.config)
        .output()
        .expect("run sekisho attack on");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(get_from(None, proxy.addr(), "/search").status, 403);
    proxy.restart();
    assert_eq!(get_from(None, proxy.addr(), "/search").status, 403);
    let v = admin_json(&proxy, "GET", "/admin/under-attack");
    assert_eq!(v["on"], true);
    assert_eq!(v["set_by_hand"], true);
}

#[test]
fn the_switch_turns_itself_on_under_a_flood_of_refusals_and_off_when_quiet() {
    let origin = Origin::start();
    let proxy = Proxy::start(&format!(
        "{}lists:\n  deny: {{ cidrs: [\"127.0.0.8\"] }}\nunder_attack:\n  auto: {{ refused_per_second: 20, for: 2s, quiet: 2s }}\n  rules:\n    - name: search-closed\n      match: {{ path_prefix: /search }}\n      action: deny\n",
        origin.upstreams()
    ));
    let v = admin_json(&proxy, "GET", "/admin/under-attack");
    assert_eq!(
        (v["on"].as_bool(), v["setting"].as_str()),
        (Some(false), Some("auto"))
    );
    assert_eq!(get_from(None, proxy.addr(), "/search").status, 200);

    // A deny-listed client floods (about 200 refusals a second) until the switch trips.
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        let addr = proxy.addr();
        std::thread::spawn(move || {
            let mut c = Conn::open(Some("127.0.0.8"), addr).expect("connect");
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(c.get("/").expect("flood").status, 403);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    wait_for("the switch to turn on", || {
        admin_json(&proxy, "GET", "/admin/under-attack")["on"] == true
    });
    let v = admin_json(&proxy, "GET", "/admin/under-attack");
    assert!(
        v["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("auto: above threshold")),
        "{v}"
    );
    assert_eq!(get_from(None, proxy.addr(), "/search").status, 403);
    stop.store(true, Ordering::Relaxed);
    flood.join().expect("flood thread");
    wait_for("the switch to turn off after the quiet period", || {
        admin_json(&proxy, "GET", "/admin/under-attack")["on"] == false
    });
    assert_eq!(get_from(None, proxy.addr(), "/search").status, 200);
    let metrics = admin(&proxy, "GET", "/metrics").text();
    // Once each way, unless the flood stalled for longer than `quiet` on a busy machine and
    // the switch went round again: as many offs as ons, at least one, and off now.
    let count = |to| {
        support::metric_value(
            &metrics,
            "sekisho_under_attack_switches_total",
            &[("to", to)],
        )
    };
    assert!(count("on").is_some_and(|n| n >= 1.0), "{metrics}");
    assert_eq!(count("on"), count("off"));
}

#[test]
fn status_shows_a_profile_rule_as_shadow_while_the_switch_is_off() {
    let origin = Origin::start();
    let proxy = Proxy::start(&format!(
        "{}rules:\n  - name: probes\n    match: {{ path: /.env }}\n    action: deny\nunder_attack:\n  rules:\n    - name: search-closed\n      match: {{ path_prefix: /search }}\n      action: deny\n",
        origin.upstreams()
    ));
    for _ in 0..3 {
        assert_eq!(get_from(None, proxy.addr(), "/search").status, 200);
    }
    let rules = |v: &serde_json::Value| v["rule_stats"].as_array().cloned().unwrap_or_default();
    let off = rules(&proxy.status());
    assert_eq!(off.len(), 2, "{off:?}");
    assert_eq!(off[0]["mode"], "enforce", "{off:?}");
    assert_eq!(off[0].get("under_attack"), None, "{off:?}");
    assert_eq!(off[1]["name"], "search-closed");
    assert_eq!(off[1]["mode"], "shadow", "{off:?}");
    assert_eq!(off[1]["under_attack"], true, "{off:?}");
    assert_eq!(off[1]["would_refuse"], 3, "{off:?}");
    assert_eq!(
        admin(&proxy, "POST", "/admin/under-attack?switch=on").status,
        200
    );
    assert_eq!(get_from(None, proxy.addr(), "/search").status, 403);
    let on = rules(&proxy.status());
    assert_eq!(on[1]["mode"], "enforce", "{on:?}");
    assert_eq!(on[1]["refused"], 1, "{on:?}");
}

#[test]
fn a_ban_by_hand_covering_too_much_needs_force() {
    let origin = Origin::start();
    let proxy = Proxy::start(&origin.upstreams());
    let r = admin(&proxy, "POST", "/admin/bans?net=0.0.0.0/0&ttl=10m");
    assert_eq!(r.status, 400, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(
        v["error"],
        "0.0.0.0/0 covers every IPv4 address: add force=true to ban it anyway"
    );
    for (net, says) in [
        ("::/0", "::/0 covers every IPv6 address"),
        ("64.0.0.0/4", "64.0.0.0/4 covers 1/16 of all IPv4 addresses"),
        (
            "2000::/15",
            "2000::/15 covers 1/32768 of all IPv6 addresses",
        ),
    ] {
        let r = admin(&proxy, "POST", &format!("/admin/bans?net={net}"));
        assert_eq!(r.status, 400, "{net}: {}", r.text());
        assert!(r.text().contains(says), "{net}: {}", r.text());
        assert!(r.text().contains("add force=true"), "{net}: {}", r.text());
    }
    assert_eq!(
        admin(&proxy, "POST", "/admin/bans?net=0.0.0.0/0&force=yes").status,
        400
    );
    assert!(banned(&proxy).is_empty(), "{:?}", banned(&proxy));
    assert_eq!(get_from(Some("127.0.0.6"), proxy.addr(), "/").status, 200);

    // a /8 and a /16 are allowed without force; everything with it
    let v = admin_json(&proxy, "POST", "/admin/bans?net=10.0.0.0/8&ttl=10m");
    assert_eq!(v["result"], "banned", "{v}");
    let v = admin_json(&proxy, "POST", "/admin/bans?net=2001:db8::/16&ttl=10m");
    assert_eq!(v["result"], "banned", "{v}");
    let v = admin_json(
        &proxy,
        "POST",
        "/admin/bans?net=0.0.0.0/0&ttl=10m&force=true",
    );
    assert_eq!(v["result"], "banned", "{v}");
    assert_eq!(get_from(Some("127.0.0.6"), proxy.addr(), "/").status, 403);
}
