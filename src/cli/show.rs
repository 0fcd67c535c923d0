//! Human-readable output for the operator commands: aligned tables, times as RFC 3339 with
//! how long ago (or from now) they are, and the views of `status`, `top` and `bans` built from
//! the admin listener's JSON. Pure: JSON and the time in, text out.

use serde_json::Value;

/// `rows` under `header`, each column as wide as its widest cell, two spaces apart; numbers
/// (cells that parse as one) are right-aligned. No trailing spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(cols) {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let numeric: Vec<bool> = (0..cols)
        .map(|i| {
            !rows.is_empty()
                && rows
                    .iter()
                    .all(|r| r.get(i).is_some_and(|c| c.parse::<f64>().is_ok()))
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = width[i].saturating_sub(c.chars().count());
            if i > 0 {
                out.push_str("  ");
            }
            if numeric[i] {
                out.push_str(&" ".repeat(pad));
                out.push_str(c);
            } else {
                out.push_str(c);
                if i + 1 < cells.len() {
                    out.push_str(&" ".repeat(pad));
                }
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = line(header.to_vec());
    for r in rows {
        let cells: Vec<&str> = (0..cols)
            .map(|i| r.get(i).map_or("", String::as_str))
            .collect();
        out.push_str(&line(cells));
    }
    out
}

/// A span of seconds the short way: `45s`, `12m`, `3h 20m`, `2d 4h`.
pub fn span(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m"),
        (0, _, 0) => format!("{h}h"),
        (0, _, _) => format!("{h}h {m}m"),
        (_, 0, _) => format!("{d}d"),
        _ => format!("{d}d {h}h"),
    }
}

/// Unix seconds `at` as RFC 3339 (UTC) with how far it is from `now`:
/// `2026-12-01T21:33:18Z (5m ago)`, `... (in 1h)`.
pub fn when(at: u64, now: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(at);
    let stamp = humantime::format_rfc3339_seconds(t);
    let rel = if at + 1 >= now && at <= now + 1 {
        "now".to_string()
    } else if at < now {
        format!("{} ago", span(now - at))
    } else {
        format!("in {}", span(at - now))
    };
    format!("{stamp} ({rel})")
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The `sekisho status` view of `GET /admin/status` at `now` (Unix seconds).
pub fn status(s: &Value, now: u64) -> String {
    let mut out = String::new();
    let mut row = |label: &str, value: String| {
        out.push_str(&format!("{label:<13}{value}\n"));
    };
    row(
        "sekisho",
        format!(
            "{}, up {} (started {})",
            text(&s["version"]),
            span(num(&s["uptime_s"])),
            when(num(&s["started_unix"]), now)
        ),
    );
    let r = &s["reloads"];
    let last = match r["last_error"].as_str() {
        Some(e) => format!(
            "; the last reload FAILED: {}",
            e.lines().next().unwrap_or(e)
        ),
        None => String::new(),
    };
    row(
        "config",
        format!(
            "{}, generation {}, loaded {}; {} reloads ok, {} failed{last}",
            text(&s["config"]),
            num(&s["generation"]),
            when(num(&r["last_ok_unix"]), now),
            num(&r["ok"]),
            num(&r["failed"]),
        ),
    );
    for (i, l) in s["listeners"].as_array().into_iter().flatten().enumerate() {
        let state = if l["serving"] == true {
            "serving"
        } else {
            "NOT SERVING"
        };
        row(
            if i == 0 { "listeners" } else { "" },
            format!("{} ({}) {state}", text(&l["addr"]), text(&l["field"])),
        );
    }
    for (i, u) in s["upstreams"].as_array().into_iter().flatten().enumerate() {
        let name = text(&u["name"]);
        let addr = text(&u["addr"]);
        let shown = if name == addr {
            addr
        } else {
            format!("{name} ({addr})")
        };
        let state = match u["skipped_for_s"].as_u64() {
            Some(secs) => format!("DOWN, skipped for {}", span(secs)),
            None => "up".to_string(),
        };
        row(
            if i == 0 { "upstreams" } else { "" },
            format!("{shown} {state}"),
        );
    }
    let c = &s["connections"];
    if c.is_object() {
        let (open, max) = (num(&c["open"]), num(&c["max_open"]));
        let full = if max > 0 && open >= max { " FULL" } else { "" };
        row(
            "connections",
            format!(
                "{open} open of {max}{full} ({} idle), {} clients",
                num(&c["idle"]),
                num(&c["clients"])
            ),
        );
    }
    let geo = &s["geo"];
    row(
        "geo",
        if geo.is_null() {
            "no country database".to_string()
        } else {
            let t =
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(num(&geo["build_epoch"]));
            let mut day = humantime::format_rfc3339_seconds(t).to_string();
            day.truncate(10);
            format!("{}, built {day}", text(&geo["database_type"]))
        },
    );
    let d = &s["defense"];
    let ua = &d["under_attack"];
    row(
        "under attack",
        format!(
            "{} since {}; setting {}{}: {}",
            if ua["on"] == true { "ON" } else { "off" },
            when(num(&ua["since_unix"]), now),
            text(&ua["setting"]),
            if ua["set_by_hand"] == true {
                " (set by hand)"
            } else {
                ""
            },
            text(&ua["reason"])
        ),
    );
    let policies: Vec<String> = d["autoban_policies"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    row(
        "bans",
        format!(
            "{} live, {} offenders tracked; autoban: {}{}",
            num(&d["bans_live"]),
            num(&d["tracked_offenders"]),
            if policies.is_empty() {
                "none".to_string()
            } else {
                policies.join(", ")
            },
            match d["state_error"].as_str() {
                Some(e) => format!("; STATE FILE: {e}"),
                None => String::new(),
            }
        ),
    );
    let l = &s["limiter"];
    row(
        "limiter",
        format!(
            "{} of {} keys tracked, {} evicted",
            num(&l["tracked_keys"]),
            num(&l["capacity"]),
            num(&l["evictions"])
        ),
    );
    let decisions: Vec<String> = s["decisions"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| format!("{k} {}", num(v)))
        .collect();
    row("decisions", decisions.join(", "));
    out.push('\n');
    let rules: Vec<Vec<String>> = s["rule_stats"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let (key, n) = if r.get("would_refuse").is_some() {
                ("would refuse", num(&r["would_refuse"]))
            } else {
                ("refused", num(&r["refused"]))
            };
            vec![
                text(&r["name"]),
                text(&r["mode"]),
                n.to_string(),
                if r["under_attack"] == true {
                    format!("{key} (under-attack profile)")
                } else {
                    key.to_string()
                },
            ]
        })
        .collect();
    out.push_str(&table(&["RULE", "MODE", "COUNT", "WHAT"], &rules));
    out
}

/// The `sekisho top` view of `GET /admin/top`.
pub fn top(t: &Value) -> String {
    // connections are counted per client only
    let by_ip = t["by"] == "ip";
    let rows: Vec<Vec<String>> = t["top"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            let (allowed, refused) = (num(&h["allowed"]), num(&h["refused"]));
            let mut row = vec![
                text(&h["key"]),
                (allowed + refused).to_string(),
                allowed.to_string(),
                refused.to_string(),
            ];
            if by_ip {
                row.push(num(&h["connections_refused"]).to_string());
            }
            row.push(num(&h["error"]).to_string());
            row
        })
        .collect();
    let by = text(&t["by"]).to_uppercase();
    let mut out = format!(
        "top {} by {} over the last {} minutes (approximate: counts are upper bounds, each within ±ERROR)\n",
        rows.len(),
        text(&t["by"]),
        num(&t["window_minutes"])
    );
    if rows.is_empty() {
        out.push_str("(no requests in this window)\n");
        return out;
    }
    let head: &[&str] = if by_ip {
        &[
            by.as_str(),
            "REQUESTS",
            "ALLOWED",
            "REFUSED",
            "CONNS_REFUSED",
            "ERROR",
        ]
    } else {
        &[by.as_str(), "REQUESTS", "ALLOWED", "REFUSED", "ERROR"]
    };
    out.push_str(&table(head, &rows));
    out
}

/// The `sekisho bans list` view of ban records (the state file's or `GET /admin/bans`'s) at
/// `now`.
pub fn bans(records: &[Value], now: u64) -> String {
    if records.is_empty() {
        return "no live bans\n".to_string();
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|b| {
            vec![
                text(&b["net"]),
                text(&b["mode"]),
                text(&b["source"]),
                when(num(&b["since"]), now),
                when(num(&b["until"]), now),
                num(&b["strikes"]).to_string(),
                text(&b["reason"]),
            ]
        })
        .collect();
    table(
        &[
            "NET", "MODE", "SOURCE", "SINCE", "UNTIL", "STRIKES", "REASON",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_text_left_and_numbers_right() {
        let t = table(
            &["NAME", "N", "NOTE"],
            &[
                vec!["a".into(), "5".into(), "x".into()],
                vec!["longer".into(), "1234".into(), "".into()],
            ],
        );
        assert_eq!(t, "NAME       N  NOTE\na          5  x\nlonger  1234\n");
    }

    #[test]
    fn spans_and_times() {
        assert_eq!(span(0), "0s");
        assert_eq!(span(59), "59s");
        assert_eq!(span(60), "1m");
        assert_eq!(span(3600), "1h");
        assert_eq!(span(3600 + 20 * 60 + 5), "1h 20m");
        assert_eq!(span(86_400 * 2 + 3600 * 4), "2d 4h");
        assert_eq!(span(86_400), "1d");
        let now = 1_796_160_000;
        assert_eq!(when(now - 300, now), "2026-12-01T21:15:00Z (5m ago)");
        assert_eq!(when(now + 3600, now), "2026-12-01T22:20:00Z (in 1h)");
        assert_eq!(when(now, now), "2026-12-01T21:20:00Z (now)");
    }

    #[test]
    fn the_status_view_shows_what_is_wrong_in_capitals() {
        let now = 1_796_160_000;
        let s = json!({
            "version": "0.1.0", "uptime_s": 7300, "started_unix": now - 7300,
            "config": "conf/sekisho.yaml", "generation": 3,
            "reloads": {"ok": 2, "failed": 1, "last_ok_unix": now - 60, "last_error": "s.yaml:3:5: rules[0].limit.rate: bad\nmore"},
            "listeners": [
                {"field": "listen[0]", "addr": "127.0.0.1:8080", "serving": true},
                {"field": "admin.listen", "addr": "127.0.0.1:9248", "serving": false}
            ],
            "upstreams": [
                {"name": "origin:8000", "addr": "10.0.0.5:8000", "up": false, "skipped_for_s": 7},
                {"name": "10.0.0.6:8000", "addr": "10.0.0.6:8000", "up": true, "skipped_for_s": null}
            ],
            "geo": null,
            "connections": {"open": 12, "idle": 4, "clients": 3, "max_open": 12, "per_client_max_open": 256},
            "defense": {"bans_live": 2, "tracked_offenders": 5, "autoban_policies": ["scanners"], "state_error": null,
                "under_attack": {"on": true, "setting": "on", "set_by_hand": true, "since_unix": now - 120, "reason": "set by hand"}},
            "limiter": {"tracked_keys": 10, "capacity": 100, "evictions": 0},
            "decisions": {"allow": 5, "deny": 2},
            "rule_stats": [
                {"name": "wp-probes", "mode": "enforce", "refused": 2},
                {"name": "slow", "mode": "shadow", "would_refuse": 9, "under_attack": true}
            ]
        });
        let v = status(&s, now);
        for want in [
            "sekisho      0.1.0, up 2h 1m (started 2026-12-01T19:18:20Z (2h 1m ago))\n",
            "; the last reload FAILED: s.yaml:3:5: rules[0].limit.rate: bad\n",
            "listeners    127.0.0.1:8080 (listen[0]) serving\n",
            "             127.0.0.1:9248 (admin.listen) NOT SERVING\n",
            "upstreams    origin:8000 (10.0.0.5:8000) DOWN, skipped for 7s\n",
            "             10.0.0.6:8000 up\n",
            "geo          no country database\n",
            "connections  12 open of 12 FULL (4 idle), 3 clients\n",
            "under attack ON since 2026-12-01T21:18:00Z (2m ago); setting on (set by hand): set by hand\n",
            "bans         2 live, 5 offenders tracked; autoban: scanners\n",
            "decisions    allow 5, deny 2\n",
            "slow       shadow       9  would refuse (under-attack profile)\n",
        ] {
            assert!(v.contains(want), "missing {want:?} in:\n{v}");
        }
    }

    #[test]
    fn top_and_bans_views() {
        let t = json!({"by": "ip", "window_minutes": 5, "top": [
            {"key": "203.0.113.7", "allowed": 10, "refused": 90, "connections_refused": 40, "error": 1},
            {"key": "2001:db8::/64", "allowed": 3, "refused": 0, "error": 0}
        ]});
        assert_eq!(
            top(&t),
            "top 2 by ip over the last 5 minutes (approximate: counts are upper bounds, each within ±ERROR)\n\
             IP             REQUESTS  ALLOWED  REFUSED  CONNS_REFUSED  ERROR\n\
             203.0.113.7         100       10       90             40      1\n\
             2001:db8::/64         3        3        0              0      0\n"
        );
        assert!(top(&json!({"by": "path", "window_minutes": 1, "top": []}))
            .ends_with("(no requests in this window)\n"));
        let now = 1_796_160_000;
        let b = [
            json!({"net": "203.0.113.7/32", "mode": "enforce", "source": "manual",
            "since": now - 60, "until": now + 3540, "strikes": 1, "reason": "scraper"}),
        ];
        assert_eq!(
            bans(&b, now),
            "NET             MODE     SOURCE  SINCE                          UNTIL                          STRIKES  REASON\n\
             203.0.113.7/32  enforce  manual  2026-12-01T21:19:00Z (1m ago)  2026-12-01T22:19:00Z (in 59m)        1  scraper\n"
        );
        assert_eq!(bans(&[], now), "no live bans\n");
    }
}
