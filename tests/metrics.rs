//! `/metrics` after a scripted mix of allowed, denied, limited and counted requests: exact values.

mod support;

use std::collections::BTreeMap;

use support::{get_from, Conn, Origin, Proxy};

/// The value of the series `name{labels}` in a text exposition (labels compared as a set).
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<&str, &str> = labels.iter().copied().collect();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, v) = line.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let got: BTreeMap<&str, &str> = rest
                .split(',')
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k, v.trim_matches('"')))
                })
                .collect();
            (got == want).then(|| v.parse().ok()).flatten()
        })
}

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
