//! `sekisho replay` end to end: the same labelled traffic sent to a live proxy and replayed from
//! its log in every format gives the same refusals; `--against` reports exactly what one rule
//! changes; unreadable lines are counted with their line numbers; gzip logs of several members
//! read whole.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sekisho::replay::synth::{self, Label, Plan, Synth};
use support::{Conn, Origin, Proxy};

/// The rules both the live proxy and replay judge by: a deny rule on the scraper's user agent,
/// a limit the flood runs into (1/min: no token comes back during the test, so where a request
/// falls within its second cannot change the outcome), and autoban on 404s for the prober
/// (`distinct_paths: 1`: the distinct-path estimate hashes with a seed of each process's own,
/// so a collision can differ between the live proxy and the replay).
const RULES: &str = r#"
connections: { per_client: { rate: off } }
bans: { state_file: off }
rules:
  - name: scraper-ua
    match: { user_agent: "(?i)scrapy" }
    action: deny
  - name: flood
    match: { path: / }
    limit: { rate: 1/min, burst: 20, key: ip }
    response: { status: 429 }
autoban:
  - name: probers
    kind: status
    statuses: [404]
    distinct_paths: 1
    more_than: 5
    window: 10s
    ban: 10m
"#;

fn sekisho() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sekisho"))
}

/// `sekisho replay --json` of `logs` with `config` (and `extra` arguments): the report.
fn replay(config: &Path, logs: &[&Path], extra: &[&str]) -> serde_json::Value {
    let out = sekisho()
        .arg("replay")
        .arg("-c")
        .arg(config)
        .arg("--json")
        .args(extra)
        .args(logs)
        .output()
        .expect("run sekisho replay");
    assert!(
        out.status.success(),
        "sekisho replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("replay --json prints one JSON object")
}

/// `by_rule` as (name → refused) for the rules that refused something.
fn refused_by_rule(report: &serde_json::Value) -> BTreeMap<String, u64> {
    report["by_rule"]
        .as_object()
        .expect("by_rule")
        .iter()
        .filter_map(|(k, v)| {
            let n = v["refused"].as_u64().unwrap_or(0);
            (n > 0).then(|| (k.clone(), n))
        })
        .collect()
}

fn write_config(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    let text = support::config_text(1, 2, &format!("upstreams: [\"127.0.0.1:9\"]\n{body}"));
    std::fs::write(&path, text).expect("write config");
    path
}

fn write_log(dir: &Path, format: &str, reqs: &[Synth]) -> PathBuf {
    let path = dir.join(format!("{format}.log"));
    let mut f = std::fs::File::create(&path).expect("create log");
    synth::write(format, reqs, &mut f).expect("write log");
    path
}

#[test]
fn replay_of_the_live_traffic_in_every_format_finds_the_refusals_the_live_proxy_made() {
    let origin = Origin::start();
    let proxy = Proxy::start(&format!("{}{RULES}", origin.upstreams()));
    let plan = Plan {
        seconds: 3,
        browsers: 6,
        flood_rate: 50,
        loopback: true,
        seed: 7,
        ..Plan::default()
    };
    let mut traffic = synth::generate(&plan);
    let first = traffic[0].time;
    let started = Instant::now();
    let epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64;
    // live: each request at its time, from its client's address; what the proxy decided
    let mut live: BTreeMap<String, u64> = BTreeMap::new();
    let mut passed_by_label: BTreeMap<String, u64> = BTreeMap::new();
    for r in &mut traffic {
        let due = Duration::from_nanos((r.time - first) as u64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        // what the log will say: when it was sent, to the millisecond
        r.time = epoch + started.elapsed().as_millis() as i64 * 1_000_000;
        let target = if r.status == 404 {
            format!("/status/404{}", r.target)
        } else {
            r.target.clone()
        };
        let mut c = Conn::open(Some(&r.ip.to_string()), proxy.addr()).expect("connect");
        let ua = r.user_agent.to_owned();
        let resp = c
            .request(
                r.method,
                &target,
                &[("User-Agent", ua.as_str()), ("Host", r.host)],
                b"",
            )
            .expect("an answer");
        let rule = match (resp.status, r.label) {
            (429, _) => Some("flood"),
            (403, Label::Scraper) => Some("scraper-ua"),
            (403, _) => Some("ban"),
            _ => None,
        };
        match rule {
            Some(rule) => *live.entry(rule.to_owned()).or_default() += 1,
            None => {
                *passed_by_label.entry(format!("{:?}", r.label)).or_default() += 1;
                r.status = resp.status;
            }
        }
        r.target = target;
    }
    // the traffic was of every kind, and each rule refused something live
    assert_eq!(
        live.keys().map(String::as_str).collect::<Vec<_>>(),
        ["ban", "flood", "scraper-ua"],
        "{live:?}"
    );
    assert_eq!(live["flood"], 50 - 20, "the flood after its burst");
    assert!(
        passed_by_label.contains_key("Browser"),
        "{passed_by_label:?}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "rules.yaml", RULES);
    for format in [
        "nginx",
        "nginx-main",
        "apache",
        "alb",
        "cloudfront",
        "aws-waf",
        "caddy",
        "sekisho",
        "sekisho-access",
    ] {
        let log = write_log(dir.path(), format, &traffic);
        let report = replay(&config, &[&log], &[]);
        assert_eq!(
            report["unparsed"], 0,
            "{format}: {}",
            report["unparsed_examples"]
        );
        assert_eq!(report["requests"], traffic.len() as u64, "{format}");
        assert_eq!(
            refused_by_rule(&report),
            live,
            "{format}: replay and live differ"
        );
        let bans = report["bans"].as_array().expect("bans");
        assert_eq!(bans.len(), 1, "{format}: {bans:?}");
        assert_eq!(bans[0]["client"], "127.0.9.1/32", "{format}: the prober");
        assert_eq!(bans[0]["policy"], "probers");
    }
}

#[test]
fn against_a_config_that_differs_in_one_rule_reports_exactly_that_difference() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = Plan {
        seconds: 30,
        browsers: 20,
        flood_rate: 40,
        ..Plan::default()
    };
    let traffic = synth::generate(&plan);
    let log = write_log(dir.path(), "nginx", &traffic);
    let current = write_config(dir.path(), "current.yaml", RULES);
    let candidate = write_config(
        dir.path(),
        "candidate.yaml",
        &RULES.replace("burst: 20", "burst: 10"),
    );
    let flood = traffic.iter().filter(|s| s.label == Label::Flood).count() as u64;
    let report = replay(
        &candidate,
        &[&log],
        &["--against", current.to_str().expect("path")],
    );
    let diff = &report["diff"];
    assert_eq!(diff["newly_refused"], 10, "{diff}");
    assert_eq!(diff["newly_passed"], 0);
    assert_eq!(diff["by_rule"]["flood"]["newly_refused"], 10);
    assert_eq!(
        diff["by_rule"].as_object().expect("by_rule").len(),
        1,
        "{diff}"
    );
    assert_eq!(report["by_rule"]["flood"]["refused"], flood - 10);
    let examples = diff["examples"].as_array().expect("examples");
    assert_eq!(examples.len(), 10);
    assert!(examples
        .iter()
        .all(|e| e["change"] == "newly_refused" && e["client"] == "203.0.113.66"));
    // the other way round: exactly the same requests, newly passed
    let back = replay(
        &current,
        &[&log],
        &["--against", candidate.to_str().expect("path")],
    );
    assert_eq!(back["diff"]["newly_passed"], 10);
    assert_eq!(back["diff"]["newly_refused"], 0);
    assert_eq!(back["diff"]["by_rule"]["flood"]["newly_passed"], 10);
    // the flood's 2xx answers the candidate refuses are false-positive candidates
    assert_eq!(
        report["false_positive_candidates"]["by_rule"]["flood"],
        flood - 10
    );
}

#[test]
fn unreadable_lines_are_counted_with_their_numbers_and_gzip_members_are_all_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "rules.yaml", RULES);
    let plan = Plan {
        seconds: 10,
        browsers: 5,
        ..Plan::default()
    };
    let traffic = synth::generate(&plan);
    let mut text = Vec::new();
    synth::write("nginx", &traffic, &mut text).expect("write");
    let text = String::from_utf8(text).expect("utf8");
    let lines: Vec<&str> = text.lines().collect();
    // two bad lines, at 3 and at the end
    let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    edited.insert(2, "this is not a log line".into());
    edited.push("127.0.0.1 - - [garbage] \"GET / HTTP/1.1\" 200 1 \"-\" \"-\"".into());
    let n = edited.len();
    // three gzip members, as logrotate's delaycompress and nginx's gzip= leave them
    let path = dir.path().join("access.log.gz");
    let mut bytes = Vec::new();
    for chunk in edited.chunks(n / 3 + 1) {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for l in chunk {
            writeln!(e, "{l}").expect("gzip");
        }
        bytes.extend(e.finish().expect("gzip"));
    }
    std::fs::write(&path, bytes).expect("write");
    let report = replay(&config, &[&path], &[]);
    assert_eq!(report["lines"], n as u64);
    assert_eq!(report["unparsed"], 2);
    assert_eq!(report["requests"], traffic.len() as u64);
    let bad: Vec<u64> = report["unparsed_examples"]
        .as_array()
        .expect("examples")
        .iter()
        .map(|e| e["line"].as_u64().expect("line"))
        .collect();
    assert_eq!(bad, [3, n as u64]);
    for key in [
        "lines",
        "unparsed",
        "requests",
        "by_rule",
        "top_clients",
        "timeline",
        "false_positive_candidates",
    ] {
        assert!(report.get(key).is_some(), "no {key} in the report");
    }
    for name in ["deny-list", "allow-list", "ban", "scraper-ua", "flood"] {
        assert!(
            report["by_rule"].get(name).is_some(),
            "by_rule lacks {name}"
        );
    }
}

#[test]
fn suggested_limits_paste_into_a_valid_config_that_refuses_no_browser_of_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = Plan {
        seconds: 120,
        browsers: 40,
        ..Plan::default()
    };
    let traffic = synth::generate(&plan);
    let log = write_log(dir.path(), "nginx", &traffic);
    let config = write_config(
        dir.path(),
        "now.yaml",
        "rules:\n  - name: products\n    match: { path_prefix: /products/ }\n    limit: { rate: 1000/min, burst: 1000, key: ip }\n",
    );
    let out = sekisho()
        .args(["suggest", "-c"])
        .arg(&config)
        .arg(&log)
        .output()
        .expect("run sekisho suggest");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).expect("utf8");
    assert!(yaml.contains("- name: products\n"), "{yaml}");
    assert!(
        yaml.contains("- name: limit-static\n    match: { path_prefix: /static/ }"),
        "{yaml}"
    );
    let rules = yaml.split_once("rules:\n").expect("a rules: list").1;
    let pasted = write_config(dir.path(), "suggested.yaml", &format!("rules:\n{rules}"));
    let check = sekisho()
        .args(["check", "--strict", "-c"])
        .arg(&pasted)
        .output()
        .expect("run sekisho check");
    assert!(
        check.status.success(),
        "{}\n{yaml}",
        String::from_utf8_lossy(&check.stderr)
    );
    // the browsers (10.0.0.0/8) never got a 4xx: the suggestion refuses none of them
    let report = replay(&pasted, &[&log], &[]);
    let browsers_refused: Vec<_> = report["top_clients"]
        .as_array()
        .expect("top_clients")
        .iter()
        .filter(|c| c["key"].as_str().is_some_and(|k| k.starts_with("10.")))
        .collect();
    assert!(browsers_refused.is_empty(), "{browsers_refused:?}\n{yaml}");
    // and says so: with 0.1% and fewer than 1000 keys a group, not one well-behaved key
    for line in yaml
        .lines()
        .filter(|l| l.contains("this would have refused"))
    {
        assert!(line.contains("refused 0 of"), "{line}");
    }
}
