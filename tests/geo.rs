//! Country rules over real HTTP: a fixture database selected through a trusted proxy's
//! X-Forwarded-For, a CDN country header, and a database swapped under load.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{
    geo_fixture, get_from, get_with, metric_value, write_atomically, Conn, Origin, Proxy,
};

const FIXTURE: &[(&str, &str)] = &[
    ("1.0.16.0/20", "JP"),
    ("8.8.8.0/24", "US"),
    ("2001:200::/32", "JP"),
    ("2001:4860::/32", "US"),
];

fn write_db(path: &std::path::Path, entries: &[(&str, &str)]) {
    let tmp = path.with_extension("tmp-db");
    std::fs::write(&tmp, geo_fixture(entries)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn config(origin: &Origin, geo: &str) -> String {
    format!(
        "upstreams: [\"{}\"]\nclient_ip: {{ trusted_proxies: [\"127.0.0.2/32\"] }}\ngeo: {{ {geo} }}\nrules:\n  - name: no-us\n    match: {{ country: [US] }}\n    action: deny\n  - name: foreign-search\n    match: {{ country_not: [JP, \"??\"], path_prefix: /search }}\n    limit: {{ rate: 1/h, burst: 1 }}\n",
        origin.addr
    )
}

fn via_proxy(proxy: &Proxy, from: &str, client: &str, path: &str) -> u16 {
    get_with(
        Some(from),
        proxy.addr(),
        path,
        &[("X-Forwarded-For", client)],
    )
    .status
}

#[test]
fn database_countries_through_a_trusted_proxy() {
    let origin = Origin::start();
    let proxy = Proxy::start_with(&config(&origin, "database: geo.mmdb"), |dir| {
        write_db(&dir.join("geo.mmdb"), FIXTURE);
    });
    // US (v4 and v6) denied; JP passes; unknown passes
    assert_eq!(via_proxy(&proxy, "127.0.0.2", "8.8.8.8", "/"), 403);
    assert_eq!(via_proxy(&proxy, "127.0.0.2", "2001:4860::8888", "/"), 403);
    assert_eq!(via_proxy(&proxy, "127.0.0.2", "1.0.16.1", "/"), 200);
    assert_eq!(via_proxy(&proxy, "127.0.0.2", "9.9.9.9", "/"), 200);
    // JP (v6) searches freely; the rule is for other known countries
    for _ in 0..5 {
        assert_eq!(
            via_proxy(&proxy, "127.0.0.2", "2001:200::1", "/search"),
            200
        );
    }
    // an untrusted peer's header is ignored: the peer itself (unknown country) is judged
    assert_eq!(via_proxy(&proxy, "127.0.0.3", "8.8.8.8", "/"), 200);
    assert_eq!(origin.hits(), 8);
    let s = proxy.status();
    assert_eq!(s["geo"]["database_type"], "Test-Country", "{s}");
}

#[test]
fn cdn_country_header_only_from_trusted_peers() {
    let origin = Origin::start();
    let proxy = Proxy::start(&config(&origin, "header: CF-IPCountry"));
    let with = |from, cc| get_with(Some(from), proxy.addr(), "/", &[("CF-IPCountry", cc)]).status;
    assert_eq!(with("127.0.0.2", "US"), 403);
    assert_eq!(with("127.0.0.2", "jp"), 200);
    assert_eq!(with("127.0.0.2", "XX"), 200);
    assert_eq!(with("127.0.0.3", "US"), 200);
}

#[test]
fn database_swapped_under_load_fails_no_request() {
    let origin = Origin::start();
    let proxy = Proxy::start_with(&config(&origin, "database: geo.mmdb"), |dir| {
        write_db(&dir.join("geo.mmdb"), FIXTURE);
    });
    let db = proxy.dir.path().join("geo.mmdb");
    let stop = Arc::new(AtomicBool::new(false));
    let (errors, answered) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for client in ["8.8.8.8", "1.0.16.1"] {
        let (stop, errors, answered, addr) =
            (stop.clone(), errors.clone(), answered.clone(), proxy.addr());
        load.push(std::thread::spawn(move || {
            let mut c = Conn::open(Some("127.0.0.2"), addr).unwrap();
            while !stop.load(Ordering::Relaxed) {
                match c.request("GET", "/", &[("X-Forwarded-For", client)], b"") {
                    Ok(r) if r.status == 200 || r.status == 403 => {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        eprintln!("{client}: {other:?}");
                        errors.fetch_add(1, Ordering::Relaxed);
                        c = Conn::open(Some("127.0.0.2"), addr).unwrap();
                    }
                }
            }
        }));
    }
    // swap: 8.8.8.0/24 becomes JP, 1.0.16.0/20 becomes US
    write_db(&db, &[("1.0.16.0/20", "US"), ("8.8.8.0/24", "JP")]);
    let start = Instant::now();
    while via_proxy(&proxy, "127.0.0.2", "8.8.8.8", "/") != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the new database never served"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(via_proxy(&proxy, "127.0.0.2", "1.0.16.1", "/"), 403);
    // a damaged database is rejected and the last good one keeps serving
    let before = proxy.status();
    write_atomically(&db, "this is not a database");
    proxy.wait_status("the damaged database to be rejected", |s| {
        s["reloads"]["failed"].as_u64() > before["reloads"]["failed"].as_u64()
    });
    assert_eq!(via_proxy(&proxy, "127.0.0.2", "8.8.8.8", "/"), 200);
    assert_eq!(via_proxy(&proxy, "127.0.0.2", "1.0.16.1", "/"), 403);
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    assert_eq!(errors.load(Ordering::Relaxed), 0);
    assert!(answered.load(Ordering::Relaxed) > 0);
    let last_error = proxy.status()["reloads"]["last_error"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        last_error.contains(": geo.database: not a valid MaxMind database"),
        "{last_error}"
    );
}

#[test]
fn listed_countries_are_broken_out_in_metrics() {
    let origin = Origin::start();
    let body = format!(
        "{}metrics: {{ countries: [JP] }}\n",
        config(&origin, "database: geo.mmdb")
    );
    let proxy = Proxy::start_with(&body, |dir| {
        write_db(&dir.join("geo.mmdb"), FIXTURE);
    });
    for client in ["1.0.16.1", "2001:200::1", "8.8.8.8", "9.9.9.9"] {
        via_proxy(&proxy, "127.0.0.2", client, "/");
    }
    let text = get_from(None, proxy.admin_addr(), "/metrics").text();
    let v = |c, r| {
        metric_value(
            &text,
            "sekisho_country_requests_total",
            &[("country", c), ("result", r)],
        )
    };
    assert_eq!(v("JP", "passed"), Some(2.0), "{text}");
    assert_eq!(v("JP", "refused"), Some(0.0));
    assert_eq!(v("other", "refused"), Some(1.0));
    assert_eq!(v("other", "passed"), Some(1.0));
    assert!(
        !text.contains("country=\"US\""),
        "only listed countries get a label"
    );
}
