//! `/metrics` after a scripted mix of allowed, denied, limited and counted requests: exact values.

mod support;

use support::{get_from, metric_value as value, Conn, Origin, Proxy};

#[test]
fn counters_after_a_scripted_mix() {
    let origin = Origin::start();
    let body = format!(
        "{}lists:\n  deny: {{ cidrs: [\"127.0.0.4\"] }}\nrules:\n  - name: probes\n    match: {{ path: /.env }}\n    action: deny\n  - name: login\n    match: {{ path_prefix: /login }}\n    limit: {{ rate: 1/h, burst: 2 }}\n    response: {{ status: 429, retry_after: true }}\n  - name: shadow\n    match: {{ path: /s }}\n    limit: {{ rate: 1/h, burst: 1 }}\n    mode: count\n",
        origin.upstreams()
    );
    let proxy = Proxy::start(&body);
    let mut c = Conn::open(None, proxy.addr()).unwrap();
    let mut statuses = Vec::new();
    for path in [
        "/",
        "/",
        "/",
        "/.env",
        "/.env",
        "/login",
        "/login",
        "/login",
        "/login",
        "/s",
        "/s",
        "/s",
        "/status/404",
        "/status/503",
    ] {
        statuses.push(c.get(path).unwrap().status);
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 403, 403, 200, 200, 429, 429, 200, 200, 200, 404, 503]
    );
    assert_eq!(get_from(Some("127.0.0.4"), proxy.addr(), "/").status, 403);

    let r = get_from(None, proxy.admin_addr(), "/metrics");
    assert_eq!(r.status, 200);
    let text = r.text();
    let req = |d, rule, mode| {
        value(
            &text,
            "sekisho_requests_total",
            &[("decision", d), ("rule", rule), ("mode", mode)],
        )
    };
    assert_eq!(req("allow", "", ""), Some(8.0), "{text}");
    assert_eq!(req("deny", "probes", "enforce"), Some(2.0));
    assert_eq!(req("limit", "login", "enforce"), Some(2.0));
    assert_eq!(req("count", "shadow", "count"), Some(2.0));
    assert_eq!(req("deny", "deny-list", "enforce"), Some(1.0));
    assert_eq!(req("allow_listed", "allow-list", "enforce"), Some(0.0));
    let local = |s| value(&text, "sekisho_local_responses_total", &[("status", s)]);
    assert_eq!(local("403"), Some(3.0));
    assert_eq!(local("429"), Some(2.0));
    let up = |c| value(&text, "sekisho_upstream_responses_total", &[("class", c)]);
    assert_eq!(up("2xx"), Some(8.0));
    assert_eq!(up("4xx"), Some(1.0));
    assert_eq!(up("5xx"), Some(1.0));
    assert_eq!(
        value(&text, "sekisho_upstream_duration_seconds_count", &[]),
        Some(10.0)
    );
    assert_eq!(
        value(&text, "sekisho_upstream_errors_total", &[]),
        Some(0.0)
    );
    assert_eq!(value(&text, "sekisho_config_generation", &[]), Some(1.0));
    assert_eq!(value(&text, "sekisho_limiter_tracked_keys", &[]), Some(2.0));
    assert_eq!(
        value(&text, "sekisho_limiter_evictions_total", &[]),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "sekisho_list_entries", &[("list", "deny")]),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "sekisho_geo_database_build_timestamp_seconds", &[]),
        Some(0.0)
    );
    assert!(
        value(&text, "sekisho_last_reload_success_timestamp_seconds", &[])
            .is_some_and(|t| t > 1.7e9)
    );
    // no raw addresses, paths or agents in any label
    assert!(
        !text.contains("127.0.0.") && !text.contains("/login") && !text.contains("/.env"),
        "{text}"
    );

    // the counters survive a reload (they are per rule name, not per snapshot)
    let rr = proxy.reload();
    assert_eq!(rr.status, 200);
    let text = get_from(None, proxy.admin_addr(), "/metrics").text();
    assert_eq!(
        value(
            &text,
            "sekisho_requests_total",
            &[
                ("decision", "deny"),
                ("rule", "probes"),
                ("mode", "enforce")
            ]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(&text, "sekisho_reloads_total", &[("result", "ok")]),
        Some(1.0)
    );
    assert_eq!(value(&text, "sekisho_config_generation", &[]), Some(2.0));
}

/// Reads the JSON lines of `path`, waiting (bounded) until there are at least `n`.
fn log_lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let start = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "only {} of {n} log lines in {}",
            lines.len(),
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn decision_log_lines_carry_every_field_and_reopen_on_sigusr1() {
    let origin = Origin::start();
    let body = format!(
        "{}decision_log: {{ path: decisions.log }}\nlists:\n  deny: {{ cidrs: [\"127.0.0.4\"] }}\nrules:\n  - name: login\n    match: {{ path_prefix: /login }}\n    limit: {{ rate: 1/h, burst: 1 }}\n    response: {{ status: 429 }}\n  - name: shadow\n    match: {{ path: /s }}\n    action: deny\n    mode: count\n",
        origin.upstreams()
    );
    let proxy = Proxy::start(&body);
    let log = proxy.dir.path().join("decisions.log");
    let mut c = Conn::open(None, proxy.addr()).unwrap();
    for (path, ua) in [
        ("/", "ok"),
        ("/login", "ok"),
        ("/login", "curl/8.5"),
        ("/s", "Mozilla/5.0"),
    ] {
        c.request(
            "GET",
            path,
            &[("User-Agent", ua), ("Host", "shop.example:8080")],
            b"",
        )
        .unwrap();
    }
    assert_eq!(get_from(Some("127.0.0.4"), proxy.addr(), "/x").status, 403);
    // allowed requests are not logged (sample_allowed 0): the limit, the count, the deny list
    let lines = log_lines(&log, 3);
    assert_eq!(lines.len(), 3, "{lines:?}");
    let fields = [
        "timestamp",
        "client_ip",
        "country",
        "method",
        "host",
        "path",
        "user_agent",
        "rule",
        "action",
        "mode",
        "status",
        "upstream_status",
    ];
    for l in &lines {
        for f in fields {
            assert!(l.get(f).is_some(), "missing {f} in {l}");
        }
        assert!(l["timestamp"].as_str().unwrap().ends_with('Z'), "{l}");
    }
    let by_rule = |r: &str| {
        lines
            .iter()
            .find(|l| l["rule"] == r)
            .unwrap_or_else(|| panic!("no {r} line"))
    };
    let limit = by_rule("login");
    assert_eq!(limit["action"], "limit");
    assert_eq!(limit["status"], 429);
    assert_eq!(limit["user_agent"], "curl/8.5");
    assert_eq!(limit["host"], "shop.example");
    assert_eq!(limit["client_ip"], "127.0.0.1");
    assert_eq!(limit["country"], "??");
    assert!(limit["upstream_status"].is_null());
    let count = by_rule("shadow");
    assert_eq!(
        (count["action"].as_str(), count["mode"].as_str()),
        (Some("count"), Some("count"))
    );
    assert_eq!(count["status"], 200);
    assert_eq!(count["upstream_status"], 200);
    let denied = by_rule("deny-list");
    assert_eq!(
        (denied["action"].as_str(), denied["status"].as_u64()),
        (Some("deny"), Some(403))
    );
    assert_eq!(denied["client_ip"], "127.0.0.4");
    assert_eq!(denied["path"], "/x");

    // logrotate: move the file away, SIGUSR1, the next lines go to a new file by that name
    let rotated = proxy.dir.path().join("decisions.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-USR1", &proxy.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let start = std::time::Instant::now();
    while !log.exists() {
        // a line written before the reopen lands in the rotated file: keep sending
        assert_eq!(get_from(Some("127.0.0.4"), proxy.addr(), "/y").status, 403);
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "no new log file"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(get_from(Some("127.0.0.4"), proxy.addr(), "/z").status, 403);
    let new_lines = log_lines(&log, 1);
    assert!(new_lines.iter().all(|l| l["rule"] == "deny-list"));
    let metrics = get_from(None, proxy.admin_addr(), "/metrics").text();
    assert_eq!(
        value(&metrics, "sekisho_decision_log_dropped_total", &[]),
        Some(0.0)
    );
    assert!(value(&metrics, "sekisho_decision_log_lines_total", &[]).is_some_and(|n| n >= 4.0));
}

#[test]
fn top_talkers_over_the_window() {
    let origin = Origin::start();
    let body = format!(
        "{}rules:\n  - name: per-ip\n    limit: {{ rate: 1/h, burst: 3 }}\n",
        origin.upstreams()
    );
    let proxy = Proxy::start(&body);
    for (src, n) in [("127.0.0.2", 5), ("127.0.0.3", 2)] {
        let mut c = Conn::open(Some(src), proxy.addr()).unwrap();
        for _ in 0..n {
            c.request("GET", "/hot", &[("User-Agent", "flood/1.0")], b"")
                .unwrap();
        }
    }
    let top = |q: &str| {
        let r = get_from(None, proxy.admin_addr(), &format!("/admin/top?{q}"));
        (
            r.status,
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap(),
        )
    };
    let (status, v) = top("by=ip&window=5m");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["approximate"], true);
    assert_eq!(v["top"][0]["key"], "127.0.0.2", "{v}");
    assert_eq!(
        (
            v["top"][0]["allowed"].as_u64(),
            v["top"][0]["refused"].as_u64()
        ),
        (Some(3), Some(2))
    );
    assert_eq!(v["top"][1]["key"], "127.0.0.3");
    let (_, v) = top("by=path&window=1m&n=1");
    assert_eq!(v["top"][0]["key"], "/hot");
    assert_eq!(v["top"].as_array().unwrap().len(), 1);
    let (_, v) = top("by=user_agent");
    assert_eq!(v["top"][0]["key"], "flood/1.0");
    assert_eq!(top("by=cookie").0, 400);
    assert_eq!(top("window=99m").0, 400);
}

#[test]
fn a_stuck_log_writer_drops_and_counts_instead_of_waiting() {
    let origin = Origin::start();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("stuck.log");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    // a reader that opens the pipe and never reads: the writer fills 64 KiB, then blocks
    let reader_path = fifo.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&reader_path).unwrap();
        tx.send(()).unwrap();
        std::thread::sleep(std::time::Duration::from_secs(120));
        drop(f);
    });
    let body = format!(
        "{}decision_log: {{ path: \"{}\", queue: 16, max_lines_per_second: 0 }}\nlists:\n  deny: {{ cidrs: [\"127.0.0.4\"] }}\n",
        origin.upstreams(),
        fifo.display()
    );
    let proxy = Proxy::start(&body);
    rx.recv().unwrap();
    let total = 3000;
    let mut c = Conn::open(Some("127.0.0.4"), proxy.addr()).unwrap();
    for _ in 0..total {
        // every refusal is answered at once, whatever the log does
        assert_eq!(
            c.get("/a-path-to-make-the-line-longer").unwrap().status,
            403
        );
    }
    let text = get_from(None, proxy.admin_addr(), "/metrics").text();
    let dropped = value(&text, "sekisho_decision_log_dropped_total", &[]).unwrap();
    let written = value(&text, "sekisho_decision_log_lines_total", &[]).unwrap();
    assert!(dropped > 0.0, "{text}");
    // every line is accounted for: written, dropped, or still queued (16) / in the write (1)
    assert!(
        f64::from(total) - dropped - written <= 17.0,
        "dropped {dropped} written {written}"
    );
}

/// The metric names and the label values a PromQL text selects with `=` or with `=~` on plain
/// alternatives (`class=~"4xx|5xx"`): (name, [(label, value)]). `instance` and `job` are the
/// scraper's labels; negative matchers select nothing to check.
fn selected_series(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let text = text.replace("\\\"", "\"");
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("sekisho_") {
        rest = &rest[i..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = rest[..end].to_string();
        rest = &rest[end..];
        let mut wanted = Vec::new();
        if let Some(sel) = rest.strip_prefix('{') {
            let close = sel.find('}').unwrap_or(sel.len());
            for m in sel[..close].split(',') {
                let m = m.trim();
                let (label, values) = if let Some((l, v)) = m.split_once("=~") {
                    (l, v)
                } else if let Some((l, v)) = m.split_once('=') {
                    if l.ends_with('!') {
                        continue;
                    }
                    (l, v)
                } else {
                    continue;
                };
                let label = label.trim();
                if label == "instance" || label == "job" || label.ends_with('!') {
                    continue;
                }
                let values = values.trim().trim_matches('"');
                if values
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '|')
                {
                    for v in values.split('|') {
                        wanted.push((label.to_string(), v.to_string()));
                    }
                }
            }
        }
        out.push((name, wanted));
    }
    out
}

/// Whether the exposition has a series `name` carrying `label="value"` (any other labels).
fn has_series(scrape: &str, name: &str, label: Option<(&str, &str)>) -> bool {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series))
        .any(|series| {
            let (n, labels) = series.split_once('{').unwrap_or((series, "}"));
            let labels = labels.strip_suffix('}').unwrap_or(labels);
            n == name
                && label.is_none_or(|(k, v)| labels.split(',').any(|p| p == format!("{k}=\"{v}\"")))
        })
}

#[test]
fn a_fresh_process_exports_every_series_the_shipped_alerts_and_dashboard_select() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let origin = Origin::start();
    // The shipped config, with the test's listeners and origin.
    let shipped = std::fs::read_to_string(root.join("conf/sekisho.yaml")).unwrap();
    let body: String = shipped
        .lines()
        .filter(|l| {
            ![
                "listen:",
                "admin:",
                "threads:",
                "graceful_shutdown_timeout:",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        })
        .map(|l| {
            if l.starts_with("upstreams:") {
                origin.upstreams().trim_end().to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let proxy = Proxy::start_with(&body, |dir| {
        std::fs::copy(root.join("conf/deny.txt"), dir.join("deny.txt")).unwrap();
        std::fs::create_dir_all(dir.join("geo")).unwrap();
        for e in std::fs::read_dir(root.join("conf/geo")).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "mmdb") {
                std::fs::copy(&p, dir.join("geo").join(p.file_name().unwrap())).unwrap();
            }
        }
    });
    let scrape = get_from(None, proxy.admin_addr(), "/metrics").text();
    let mut missing = Vec::new();
    let mut checked = 0;
    for file in [
        "contrib/prometheus/sekisho.rules.yml",
        "contrib/grafana/sekisho.json",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        for (name, labels) in selected_series(&text) {
            checked += 1;
            // a gauge per certificate a TLS listener serves (the shipped config has none; a
            // gauge alert needs no series before its first event); tests/tls.rs reads it
            if name == "sekisho_tls_certificate_expiry_timestamp_seconds" {
                continue;
            }
            // fleet mode only (the shipped config has no cluster: section); gauge alerts;
            // tests/cluster.rs reads them, and the observability check scrapes a fleet instance
            if name.starts_with("sekisho_cluster_") {
                continue;
            }
            if !has_series(&scrape, &name, None) {
                missing.push(format!("{file}: {name}"));
            }
            for (k, v) in &labels {
                if !has_series(&scrape, &name, Some((k, v))) {
                    missing.push(format!("{file}: {name}{{{k}=\"{v}\"}}"));
                }
            }
        }
    }
    // The alert on autoban surges selects policy!="manual": each shipped policy's series.
    for policy in ["probers", "limit-trippers"] {
        assert!(shipped.contains(&format!("name: {policy}")), "{policy}");
        if !has_series(&scrape, "sekisho_bans_total", Some(("policy", policy))) {
            missing.push(format!("sekisho_bans_total{{policy=\"{policy}\"}}"));
        }
    }
    assert!(checked > 30, "too few selectors found ({checked})");
    assert!(
        missing.is_empty(),
        "a fresh process lacks series that shipped alerts or panels select (an alert on increase() would miss the first event):\n{}",
        missing.join("\n")
    );
}
