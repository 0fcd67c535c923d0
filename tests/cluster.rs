//! Fleet mode over real sockets: three sekisho instances sharing one `redis-server` of the
//! test's own (a free loopback port, no persistence), a client spreading its requests over
//! all three. Approximate and exact cluster limits against their bounds, a local limit still
//! per instance, bans and the switch reaching every instance, the store killed and started
//! again in the middle of a load loop.

mod support;

use std::time::{Duration, Instant};

use support::{admin, admin_json, metric_value, Conn, Origin, Proxy, Store};

/// The sync interval of the tests' instances.
const SYNC_MS: u64 = 100;

fn metrics(proxy: &Proxy) -> String {
    admin(proxy, "GET", "/metrics").text()
}

/// Polls `f` every 20 ms until it holds; panics with `what` after 20 s. Returns how long it
/// took (printed by the tests, never asserted).
fn wait_for(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// Three instances of `rules` (and `extra`) on `store`, each in step with the store and seeing
/// the other two.
fn fleet(store: &Store, origin: &Origin, timeout: &str, extra: &str) -> Vec<Proxy> {
    let body = format!(
        "{}cluster:\n  redis: \"{}\"\n  name: test-fleet\n  sync_interval: {SYNC_MS}ms\n  timeout: {timeout}\n{extra}",
        origin.upstreams(),
        store.url()
    );
    let proxies: Vec<Proxy> = (0..3).map(|_| Proxy::start(&body)).collect();
    for p in &proxies {
        wait_for("every instance up and seeing three", || {
            let s = admin_json(p, "GET", "/admin/status");
            s["cluster"]["up"] == true && s["cluster"]["instances"] == 3
        });
    }
    proxies
}

fn banned(proxy: &Proxy, net: &str) -> bool {
    let v = admin_json(proxy, "GET", "/admin/bans");
    v["bans"]
        .as_array()
        .expect("bans array")
        .iter()
        .any(|b| b["net"] == net)
}

/// Shared rules: `fleet` approximate, `exact` exact, `local` per instance; the same rate and
/// burst for the first and last, so that what they admit compares.
const RULES: &str = "rules:
  - name: fleet
    match: { path_prefix: /fleet }
    limit: { rate: 60/min, burst: 10, key: ip, scope: cluster }
  - name: exact
    match: { path_prefix: /exact }
    limit: { rate: 3/h, burst: 10, key: ip, scope: cluster, consistency: exact }
  - name: local
    match: { path_prefix: /local }
    limit: { rate: 60/min, burst: 10, key: ip }
";

#[test]
fn cluster_limits_hold_across_three_instances_over_a_minute() {
    let store = Store::start();
    let origin = Origin::start();
    // a generous timeout: this test is about counting, not about a loaded CI machine's latency
    let proxies = fleet(&store, &origin, "500ms", RULES);
    let mut conns: Vec<Conn> = proxies
        .iter()
        .map(|p| Conn::open(Some("127.0.0.5"), p.addr()).expect("connect"))
        .collect();
    let mut admitted = [0u64; 3];
    let mut refused = [0u64; 3];
    let start = Instant::now();
    let mut i = 0usize;
    // about 25 requests a second per path, spread round robin over the three instances
    while start.elapsed() < Duration::from_secs(60) {
        for (k, path) in ["/fleet", "/exact", "/local"].iter().enumerate() {
            let c = &mut conns[i % 3];
            let r = c.get(path).expect("request");
            match r.status {
                200 => admitted[k] += 1,
                403 => refused[k] += 1,
                s => panic!("{path}: unexpected status {s}"),
            }
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(40));
    }
    let t = start.elapsed().as_secs_f64();
    // the bound of the README (Fleet mode): r*T + B + (N-1)*(B + 2*r*I)
    let (r, b, n, interval) = (1.0, 10.0, 3.0, SYNC_MS as f64 / 1000.0);
    let bound = r * t + b + (n - 1.0) * (b + 2.0 * r * interval);
    let single = r * t + b;
    eprintln!(
        "over {t:.1} s: approximate admitted {} (one bucket: {single:.1}, bound {bound:.1}), exact {} (limit 10), local {} (3 buckets: {:.1}); refused {refused:?}",
        admitted[0],
        admitted[1],
        admitted[2],
        3.0 * single
    );
    assert!(
        (admitted[0] as f64) <= bound,
        "approximate: {} admitted, over the bound {bound:.1}",
        admitted[0]
    );
    // and not much less than one bucket: a batch charges its tokens at the time it is applied,
    // which can cost a partly refilled bucket a fraction of a token per interval, and the last
    // tokens of the minute may wait for a batch
    assert!(
        admitted[0] as f64 >= single - 3.0,
        "approximate: {} admitted, far fewer than one bucket's {single:.1}",
        admitted[0]
    );
    assert_eq!(
        admitted[1], 10,
        "exact: admits exactly its burst of 10 (3/h refills none in a minute)"
    );
    // a local limit still counts per instance: close to three buckets' worth, far over the bound
    assert!(
        admitted[2] as f64 > bound,
        "local: {} admitted, should count per instance (3 x {single:.1})",
        admitted[2]
    );
    let m = metrics(&proxies[0]);
    assert_eq!(metric_value(&m, "sekisho_cluster_up", &[]), Some(1.0));
    assert_eq!(
        metric_value(&m, "sekisho_cluster_instances", &[]),
        Some(3.0)
    );
    // the store admitted exactly ten exact checks, whichever instance asked
    let store_admitted: f64 = proxies
        .iter()
        .map(|p| {
            metric_value(
                &metrics(p),
                "sekisho_cluster_exact_total",
                &[("result", "admitted")],
            )
            .unwrap_or(0.0)
        })
        .sum();
    assert_eq!(store_admitted, 10.0);
    // store memory per tracked key, for the README
    if let Some(info) = store.command(&[
        "MEMORY",
        "USAGE",
        &format!("sekisho:test-fleet:l:fleet:{:032x}", 0x7f00_0005u128),
    ]) {
        eprintln!("MEMORY USAGE of one bucket key: {}", info.trim());
    }
}

#[test]
fn bans_and_the_switch_reach_every_instance_and_survive_restarts() {
    let store = Store::start();
    let origin = Origin::start();
    let autoban = "autoban:\n  - name: probers\n    more_than: 5\n    window: 1m\n    ban: 1h\nunder_attack:\n  rules:\n    - name: search-closed\n      match: { path_prefix: /search }\n      action: deny\n";
    let mut proxies = fleet(&store, &origin, "500ms", autoban);
    // a prober on instance 0 only
    let mut c = Conn::open(Some("127.0.0.6"), proxies[0].addr()).expect("connect");
    for i in 0..10 {
        let _ = c.get(&format!("/status/404/probe-{i}"));
    }
    wait_for("the autoban on instance 0", || {
        banned(&proxies[0], "127.0.0.6/32")
    });
    let took = wait_for("the ban on instances 1 and 2", || {
        banned(&proxies[1], "127.0.0.6/32") && banned(&proxies[2], "127.0.0.6/32")
    });
    eprintln!("the autoban reached the other two instances in {took:?}");
    for p in &proxies[1..] {
        let r = Conn::open(Some("127.0.0.6"), p.addr())
            .and_then(|mut c| c.get("/hello"))
            .expect("request");
        assert_eq!(r.status, 403, "banned everywhere");
    }

    // a ban by hand on instance 1, lifted by hand on instance 2
    let v = admin_json(&proxies[1], "POST", "/admin/bans?net=127.0.0.7&ttl=1h");
    assert_eq!(v["result"], "banned");
    wait_for("the manual ban everywhere", || {
        proxies.iter().all(|p| banned(p, "127.0.0.7/32"))
    });
    let v = admin_json(&proxies[2], "DELETE", "/admin/bans?net=127.0.0.7");
    assert_eq!(v["result"], "unbanned");
    let took = wait_for("the unban everywhere", || {
        proxies.iter().all(|p| !banned(p, "127.0.0.7/32"))
    });
    eprintln!("the unban reached every instance in {took:?}");

    // the switch, set on instance 2, changes decisions on all three
    for p in &proxies {
        let r = Conn::open(Some("127.0.0.12"), p.addr())
            .and_then(|mut c| c.get("/search?q=x"))
            .expect("request");
        assert_eq!(r.status, 200, "the profile is off at first");
    }
    let v = admin_json(&proxies[2], "POST", "/admin/under-attack?switch=on");
    assert_eq!(v["on"], true);
    let took = wait_for("the switch on everywhere", || {
        proxies
            .iter()
            .all(|p| admin_json(p, "GET", "/admin/under-attack")["on"] == true)
    });
    eprintln!("the switch reached every instance in {took:?}");
    for p in &proxies {
        let r = Conn::open(Some("127.0.0.12"), p.addr())
            .and_then(|mut c| c.get("/search?q=x"))
            .expect("request");
        assert_eq!(r.status, 403, "the profile is enforced on every instance");
    }

    // every instance restarted (no state file): the ban is still everywhere, from the store
    for p in proxies.iter_mut() {
        p.restart();
    }
    for p in &proxies {
        wait_for("the ban after a restart", || banned(p, "127.0.0.6/32"));
        wait_for("the switch after a restart", || {
            admin_json(p, "GET", "/admin/under-attack")["on"] == true
        });
    }
}

#[test]
fn the_store_killed_and_restarted_in_a_load_loop() {
    let mut store = Store::start();
    let origin = Origin::start();
    let rules = "rules:
  - name: shared
    match: { path_prefix: /shared }
    limit: { rate: 1/h, burst: 9, key: ip, scope: cluster }
  - name: open
    match: { path_prefix: /open }
    limit: { rate: 100000/s, burst: 100000, key: ip, scope: cluster }
";
    let proxies = fleet(&store, &origin, "5ms", rules);
    let addrs: Vec<_> = proxies.iter().map(|p| p.addr()).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // 0: store up, 1: store down, 2: store back (for the slowest request of each, printed)
    let phase = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load = {
        let stop = stop.clone();
        let phase = phase.clone();
        std::thread::spawn(move || {
            let mut conns: Vec<Conn> = addrs
                .iter()
                .map(|a| Conn::open(Some("127.0.0.8"), *a).expect("connect"))
                .collect();
            let (mut ok, mut failed, mut slowest) = (0u64, 0u64, [Duration::ZERO; 3]);
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                match conns[i % 3].get("/open") {
                    Ok(r) if r.status == 200 => ok += 1,
                    _ => failed += 1,
                }
                let p = phase.load(std::sync::atomic::Ordering::Relaxed);
                slowest[p] = slowest[p].max(t.elapsed());
                i += 1;
            }
            (ok, failed, slowest)
        })
    };
    // a ban by hand, to be published again when the store comes back empty
    let v = admin_json(&proxies[0], "POST", "/admin/bans?net=127.0.0.11&ttl=1h");
    assert_eq!(v["result"], "banned");
    let in_store = |store: &Store| {
        store
            .command(&["HEXISTS", "sekisho:test-fleet:bans", "127.0.0.11/32"])
            .is_some_and(|r| r.trim() == ":1")
    };
    wait_for("the ban in the store", || in_store(&store));
    std::thread::sleep(Duration::from_secs(2));
    store.kill();
    phase.store(1, std::sync::atomic::Ordering::Relaxed);
    for p in &proxies {
        wait_for("cluster_up 0", || {
            metric_value(&metrics(p), "sekisho_cluster_up", &[]) == Some(0.0)
        });
    }
    // the fallback share: ceil(9 / 3) = 3 of a fresh client's burst on one instance
    let mut c = Conn::open(Some("127.0.0.9"), proxies[0].addr()).expect("connect");
    let statuses: Vec<u16> = (0..6)
        .map(|_| c.get("/shared").expect("req").status)
        .collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 403, 403, 403],
        "a third of the burst while the store is down"
    );
    std::thread::sleep(Duration::from_secs(1));
    store.restart();
    phase.store(2, std::sync::atomic::Ordering::Relaxed);
    for p in &proxies {
        wait_for("cluster_up 1", || {
            metric_value(&metrics(p), "sekisho_cluster_up", &[]) == Some(1.0)
        });
    }
    // the store came back empty: the instances noticed and published their bans again
    wait_for("the ban published again", || in_store(&store));
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed, slowest) = load.join().expect("load thread");
    eprintln!(
        "load loop: {ok} passed, {failed} failed; slowest with the store up {:?}, down {:?}, back {:?} (timeout 5ms)",
        slowest[0], slowest[1], slowest[2]
    );
    assert!(ok > 100, "the load loop ran ({ok})");
    assert_eq!(
        failed, 0,
        "no request that should pass failed while the store was down"
    );

    // shared counting resumed: a fresh client takes 5 on instance 0, then instance 1 (which
    // never saw it) admits the rest of the fleet's burst of 9 and no more, once in step
    let mut a = Conn::open(Some("127.0.0.10"), proxies[0].addr()).expect("connect");
    for _ in 0..5 {
        assert_eq!(a.get("/shared").expect("req").status, 200);
    }
    std::thread::sleep(Duration::from_millis(4 * SYNC_MS));
    let mut b = Conn::open(Some("127.0.0.10"), proxies[1].addr()).expect("connect");
    let mut from_b = 0;
    for _ in 0..10 {
        if b.get("/shared").expect("req").status == 200 {
            from_b += 1;
        }
        std::thread::sleep(Duration::from_millis(3 * SYNC_MS));
    }
    eprintln!("after the store came back: instance 1 admitted {from_b} of the 4 left");
    assert!(
        (4..=5).contains(&from_b),
        "instance 1 admits what is left of the fleet's burst (4), at most one more blind: {from_b}"
    );
}
