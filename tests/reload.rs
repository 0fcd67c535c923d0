//! Hot reload over real sockets and real files: no dropped request, bad files kept out,
//! buckets kept, list changes picked up by rename and by symlink swap.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{get_from, write_atomically, Conn, Origin, Proxy};

/// Polls `f` until it holds (bounded at 20 s); returns how long it took.
fn eventually(what: &str, f: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}

/// Config version `k`: `k % 5 + 1` dummy rules (so the status shows which version serves),
/// 127.0.0.3 denied inline, the deny file named.
fn valid_config(origin: &Origin, k: usize) -> String {
    let mut s = format!(
        "{}lists:\n  deny: {{ files: [deny.txt], cidrs: [\"127.0.0.3/32\"] }}\nrules:\n",
        origin.upstreams()
    );
    for r in 0..(k % 5 + 1) {
        s.push_str(&format!(
            "  - name: v{k}-{r}\n    match: {{ path_prefix: /never-{k}-{r} }}\n    action: deny\n"
        ));
    }
    s
}

/// Deny file version `k`: 127.0.0.5 always, 127.0.0.4 in odd versions.
fn valid_deny(k: usize) -> String {
    if k % 2 == 1 {
        "# v\n127.0.0.5\n127.0.0.4\n".to_string()
    } else {
        "# v\n127.0.0.5\n".to_string()
    }
}

#[derive(Default)]
struct Tally {
    ok_2: AtomicU64,
    denied_3: AtomicU64,
    denied_5: AtomicU64,
    seen_4: AtomicU64,
    wrong: AtomicU64,
    errors: AtomicU64,
}

#[test]
fn reloads_under_load_drop_nothing_and_never_apply_a_bad_file() {
    let origin = Origin::start();
    let proxy = Proxy::start_with(&valid_config(&origin, 0), |dir| {
        std::fs::write(dir.join("deny.txt"), valid_deny(0)).unwrap();
    });
    let deny = proxy.dir.path().join("deny.txt");
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for src in ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        let (tally, stop, addr) = (tally.clone(), stop.clone(), proxy.addr());
        load.push(std::thread::spawn(move || {
            let mut conn = Conn::open(Some(src), addr).expect("connect");
            while !stop.load(Ordering::Relaxed) {
                let status = match conn.get("/") {
                    Ok(r) => r.status,
                    Err(e) => {
                        eprintln!("request from {src} failed: {e}");
                        tally.errors.fetch_add(1, Ordering::Relaxed);
                        conn = Conn::open(Some(src), addr).expect("reconnect");
                        continue;
                    }
                };
                let counter = match (src, status) {
                    ("127.0.0.2", 200) => &tally.ok_2,
                    ("127.0.0.3", 403) => &tally.denied_3,
                    ("127.0.0.5", 403) => &tally.denied_5,
                    ("127.0.0.4", 200 | 403) => &tally.seen_4,
                    _ => {
                        eprintln!("{src} got {status}");
                        &tally.wrong
                    }
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    let ok = |s: &serde_json::Value| s["reloads"]["ok"].as_u64().unwrap_or(0);
    let failed = |s: &serde_json::Value| s["reloads"]["failed"].as_u64().unwrap_or(0);
    let mut k = 0;
    for step in 0..100 {
        let before = proxy.status();
        match step % 4 {
            0 => {
                // a valid change to both files
                k += 1;
                write_atomically(&deny, &valid_deny(k));
                proxy.rewrite(&valid_config(&origin, k));
                let (rules, entries) = (k % 5 + 1, 2 + k % 2);
                proxy.wait_status("a valid version to serve", |s| {
                    s["rules"].as_u64() == Some(rules as u64)
                        && s["deny_entries"].as_u64() == Some(entries as u64)
                });
            }
            1 => {
                // invalid: broken YAML, or an unknown key; both would drop 127.0.0.3
                let bad = if step % 8 == 1 {
                    format!(
                        "{}lists:\n  deny: {{ files: [deny.txt\nrules: [\n",
                        origin.upstreams()
                    )
                } else {
                    format!(
                        "{}lists:\n  deny: {{ files: [deny.txt] }}\nrulez: []\n",
                        origin.upstreams()
                    )
                };
                proxy.rewrite(&bad);
                proxy.wait_status("the bad YAML to be rejected", |s| {
                    failed(s) > failed(&before)
                });
            }
            2 => {
                // the valid config back
                proxy.rewrite(&valid_config(&origin, k));
                proxy.wait_status("the config to be restored", |s| ok(s) > ok(&before));
            }
            _ => {
                // a deny list with a bad line, and without 127.0.0.5
                write_atomically(&deny, "127.0.0.4\n10.0.0.0/33\n");
                proxy.wait_status("the bad deny list to be rejected", |s| {
                    failed(s) > failed(&before)
                });
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().expect("load thread");
    }
    let s = proxy.status();
    eprintln!("after 100 rewrites: {s}");
    assert_eq!(tally.errors.load(Ordering::Relaxed), 0, "connection errors");
    assert_eq!(tally.wrong.load(Ordering::Relaxed), 0, "wrong answers");
    for (what, c) in [
        ("allowed 127.0.0.2", &tally.ok_2),
        ("denied 127.0.0.3", &tally.denied_3),
        ("denied 127.0.0.5", &tally.denied_5),
        ("answered 127.0.0.4", &tally.seen_4),
    ] {
        assert!(c.load(Ordering::Relaxed) > 0, "no request {what}");
    }
    assert!(s["reloads"]["failed"].as_u64().unwrap() >= 50);
    assert!(s["reloads"]["ok"].as_u64().unwrap() >= 50);
    assert!(
        s["reloads"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("deny.txt:2:1: lists.deny.files[0]")),
        "{s}"
    );
}

#[test]
fn a_deny_entry_renamed_into_place_takes_effect_promptly() {
    let origin = Origin::start();
    let body = format!(
        "{}reload: {{ debounce: 100ms, poll_interval: 2s }}\nlists:\n  deny: {{ files: [deny.txt] }}\n",
        origin.upstreams()
    );
    let proxy = Proxy::start_with(&body, |dir| {
        std::fs::write(dir.join("deny.txt"), "127.0.0.9\n").unwrap();
    });
    assert_eq!(get_from(Some("127.0.0.6"), proxy.addr(), "/").status, 200);
    write_atomically(&proxy.dir.path().join("deny.txt"), "127.0.0.9\n127.0.0.6\n");
    let took = eventually("127.0.0.6 to be denied", || {
        get_from(Some("127.0.0.6"), proxy.addr(), "/").status == 403
    });
    eprintln!("deny entry effective {took:?} after the rename");
    assert_eq!(get_from(Some("127.0.0.7"), proxy.addr(), "/").status, 200);
}

#[test]
fn a_kubernetes_style_symlink_swap_is_picked_up() {
    let origin = Origin::start();
    let body = format!(
        "{}lists:\n  deny: {{ files: [deny.txt] }}\n",
        origin.upstreams()
    );
    let proxy = Proxy::start_with(&body, |dir| {
        for (v, ip) in [("..v1", "127.0.0.9"), ("..v2", "127.0.0.7")] {
            std::fs::create_dir(dir.join(v)).unwrap();
            std::fs::write(dir.join(v).join("deny.txt"), format!("{ip}\n")).unwrap();
        }
        std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/deny.txt", dir.join("deny.txt")).unwrap();
    });
    assert_eq!(get_from(Some("127.0.0.7"), proxy.addr(), "/").status, 200);
    let dir = proxy.dir.path();
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    eventually("127.0.0.7 to be denied after the swap", || {
        get_from(Some("127.0.0.7"), proxy.addr(), "/").status == 403
    });
    assert_eq!(get_from(Some("127.0.0.9"), proxy.addr(), "/").status, 200);
}

#[test]
fn a_drained_bucket_stays_drained_across_reloads() {
    let origin = Origin::start();
    let login = "rules:\n  - name: login\n    match: { path_prefix: /login }\n    limit: { rate: 1/h, burst: 2 }\n";
    let proxy = Proxy::start(&format!("{}{login}", origin.upstreams()));
    let mut c = Conn::open(Some("127.0.0.2"), proxy.addr()).unwrap();
    let s: Vec<u16> = (0..3).map(|_| c.get("/login").unwrap().status).collect();
    assert_eq!(s, vec![200, 200, 403]);

    // an unrelated rule added: same bucket
    proxy.rewrite(&format!(
        "{}{login}  - name: probes\n    match: {{ path: /.env }}\n    action: deny\n",
        origin.upstreams()
    ));
    proxy.wait_status("generation 2", |s| s["generation"] == 2);
    assert_eq!(c.get("/login").unwrap().status, 403);
    assert_eq!(c.get("/.env").unwrap().status, 403);

    // the same rule with a larger burst: no bonus for a drained client, a fresh one gets it
    proxy.rewrite(&format!(
        "{}rules:\n  - name: login\n    match: {{ path_prefix: /login }}\n    limit: {{ rate: 1/h, burst: 5 }}\n",
        origin.upstreams()
    ));
    proxy.wait_status("generation 3", |s| s["generation"] == 3);
    assert_eq!(c.get("/login").unwrap().status, 403);
    let mut fresh = Conn::open(Some("127.0.0.3"), proxy.addr()).unwrap();
    let s: Vec<u16> = (0..6)
        .map(|_| fresh.get("/login").unwrap().status)
        .collect();
    assert_eq!(s, vec![200, 200, 200, 200, 200, 403]);

    // an explicit reload of the same file keeps everything too
    let r = proxy.reload();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(c.get("/login").unwrap().status, 403);
}

#[test]
fn a_rejected_reload_reports_what_check_reports_and_keeps_serving() {
    let origin = Origin::start();
    let good = format!(
        "{}reload: {{ watch: false, poll_interval: 1h }}\nrules:\n  - name: probes\n    match: {{ path: /.env }}\n    action: deny\n",
        origin.upstreams()
    );
    let proxy = Proxy::start(&good);
    proxy.rewrite(&format!(
        "{}reload: {{ watch: false, poll_interval: 1h }}\nrules:\n  - name: probes\n    match: {{ path: /.env }}\n    limit: {{ rate: 5/x }}\n",
        origin.upstreams()
    ));
    let r = proxy.reload();
    assert_eq!(r.status, 422, "{}", r.text());
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let errors: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_sekisho"))
        .args(["check", "-c"])
        .arg(&proxy.config)
        .output()
        .unwrap();
    assert!(!check.status.success());
    let printed = String::from_utf8_lossy(&check.stderr);
    let printed: Vec<&str> = printed.lines().filter(|l| l.contains(": rules[")).collect();
    assert_eq!(errors, printed);
    assert!(errors[0].contains("sekisho.yaml:"), "{errors:?}");
    assert!(
        errors[0].contains(": rules[0].limit.rate: unknown unit"),
        "{errors:?}"
    );
    // the old config still serves
    assert_eq!(proxy.generation(), 1);
    assert_eq!(get_from(None, proxy.addr(), "/.env").status, 403);
    assert_eq!(get_from(None, proxy.addr(), "/").status, 200);
}

#[test]
fn a_reload_with_warnings_applies_and_says_them() {
    let origin = Origin::start();
    let proxy = Proxy::start(&origin.upstreams());
    let r = proxy.reload();
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v["warnings"], serde_json::json!([]), "{v}");
    proxy.rewrite(&format!(
        "{}rules:\n  - name: shut\n    action: deny\n",
        origin.upstreams()
    ));
    let r = proxy.reload();
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    let w = v["warnings"].as_array().expect("warnings");
    assert_eq!(w.len(), 1, "{v}");
    let w = w[0].as_str().expect("a string");
    assert!(
        w.contains(
            ": rules[0].action: warning: matches every request: every request will be refused"
        ),
        "{w}"
    );
    // a warning does not stop the reload: the rule applies
    assert_eq!(get_from(Some("127.0.0.6"), proxy.addr(), "/").status, 403);
}
