//! The replay's HTML report in a real browser: a hand-built [`Report`] is rendered, loaded from
//! a file in headless Chromium with the network mapped to nowhere, and the DOM the page's script
//! leaves is checked — it ran to the end, fetched nothing, drew one group a minute and one bar
//! a series, and ran none of the script that hostile strings in the data carry.
//!
//! Chromium is required (`scripts/setup.sh` installs Debian's `chromium`): without it this test
//! fails, it does not skip.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sekisho::replay::html;
use sekisho::replay::report::{
    BanIssued, Diff, DiffCounts, DiffExample, Example, FalsePositives, LogSummary, Minute, Report,
    RuleCounts, Top, Unparsed,
};

/// How long the browser may take before it is killed and the test fails.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

/// Scripts hidden in the data: had any of them run, the body would carry `data-pwned`.
const HOSTILE_UA: &str = "</script><script>document.body.setAttribute('data-pwned','ua')</script>";
const HOSTILE_PATH: &str =
    "/<img src=x onerror=\"document.body.setAttribute('data-pwned','img')\">";
const HOSTILE_CONFIG: &str =
    "conf/</noscript><script>document.body.setAttribute('data-pwned','config')</script>.yaml";
const HOSTILE_LINE: &str =
    "<b>x</b></script><script>document.body.setAttribute('data-pwned','line')</script>";
/// Last in the JSON: in a script, `<!--<script>` would keep the next `</script>` from ending it.
const HOSTILE_COMMENT: &str = "<!--<script>";

fn counts<const N: usize>(pairs: [(&str, u64); N]) -> BTreeMap<String, u64> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn minute(
    at: &str,
    requests: u64,
    refused: BTreeMap<String, u64>,
    counted: BTreeMap<String, u64>,
) -> Minute {
    Minute {
        minute: format!("2025-03-01T{at}:00Z"),
        requests,
        refused,
        counted,
    }
}

fn top(key: &str, requests: u64, refused: u64) -> Top {
    Top {
        key: key.to_string(),
        requests,
        refused,
    }
}

fn example(line: u64, user_agent: &str, rule: &str) -> Example {
    Example {
        file: String::from("access.log"),
        line,
        time: String::from("2025-03-01T10:01:12Z"),
        client: String::from("198.51.100.7"),
        method: String::from("GET"),
        target: String::from("/login"),
        status: 200,
        user_agent: user_agent.to_string(),
        rule: rule.to_string(),
    }
}

/// Four rules (one in count mode), five minutes, three clients, four paths, two user agents,
/// three countries, a ban, false-positive candidates, unreadable lines and a diff.
fn report() -> Report {
    let rule_order: Vec<String> = ["deny-list", "ban", "login-burst", "api-count"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let by_rule = [
        ("deny-list", 7, 0),
        ("ban", 12, 0),
        ("login-burst", 60, 0),
        ("api-count", 0, 22),
    ]
    .into_iter()
    .map(|(k, refused, counted)| {
        (
            k.to_string(),
            RuleCounts {
                refused,
                counted,
                allowed: 0,
            },
        )
    })
    .collect();
    Report {
        config: HOSTILE_CONFIG.to_string(),
        against: Some(String::from("conf/live.yaml")),
        logs: vec![LogSummary {
            path: String::from("access.log"),
            format: String::from("combined"),
            lines: 562,
            unparsed: 2,
        }],
        lines: 562,
        unparsed: 2,
        unparsed_examples: vec![
            Unparsed {
                file: String::from("access.log"),
                line: 17,
                reason: String::from("no timestamp"),
                text: HOSTILE_LINE.to_string(),
            },
            Unparsed {
                file: String::from("access.log"),
                line: 301,
                reason: String::from("truncated"),
                text: String::from("10.0.0.1 - - [01/Mar"),
            },
        ],
        requests: 560,
        unjudged: 0,
        late: 1,
        reorder_window_s: 5,
        first: Some(String::from("2025-03-01T10:00:03Z")),
        last: Some(String::from("2025-03-01T10:04:58Z")),
        refused: 79,
        counted: 22,
        passed: 481,
        under_attack: false,
        by_rule,
        rule_order,
        top_clients: vec![
            top("198.51.100.7", 200, 60),
            top("203.0.113.9", 40, 12),
            top("2001:db8::1", 30, 7),
        ],
        top_paths: vec![
            top("/login", 220, 60),
            top(HOSTILE_PATH, 20, 10),
            top("/api/items?page=2", 30, 6),
            top("/", 10, 3),
        ],
        top_user_agents: vec![top(HOSTILE_UA, 150, 50), top("curl/8.5.0", 90, 29)],
        top_countries: vec![top("NL", 200, 60), top("US", 60, 12), top("??", 10, 7)],
        timeline: vec![
            minute("10:00", 100, counts([("login-burst", 10)]), counts([])),
            minute(
                "10:01",
                120,
                counts([("login-burst", 20), ("deny-list", 5)]),
                counts([("api-count", 7)]),
            ),
            // A zero is no bar.
            minute(
                "10:02",
                90,
                counts([("login-burst", 0), ("ban", 4)]),
                counts([("api-count", 3)]),
            ),
            minute("10:03", 50, counts([]), counts([])),
            minute(
                "10:04",
                200,
                counts([("login-burst", 30), ("deny-list", 2), ("ban", 8)]),
                counts([("api-count", 12)]),
            ),
        ],
        bans: vec![BanIssued {
            client: String::from("198.51.100.7"),
            policy: String::from("login-abuse"),
            at: String::from("2025-03-01T10:02:10Z"),
            until: String::from("2025-03-01T10:12:10Z"),
            seconds: 600,
            mode: String::from("enforce"),
            reason: String::from("login-burst refused 20 times in 60s"),
        }],
        false_positive_candidates: FalsePositives {
            total: 3,
            by_rule: counts([("login-burst", 3)]),
            clients: 1,
            examples: vec![example(40, HOSTILE_UA, "login-burst")],
        },
        diff: Some(Diff {
            newly_refused: 15,
            newly_passed: 4,
            refused_by_another_rule: 1,
            by_rule: [(
                String::from("login-burst"),
                DiffCounts {
                    newly_refused: 15,
                    newly_passed: 4,
                },
            )]
            .into_iter()
            .collect(),
            examples: vec![DiffExample {
                change: String::from("newly_refused"),
                request: example(41, HOSTILE_COMMENT, "login-burst"),
                before: String::new(),
                after: String::from("login-burst"),
            }],
        }),
    }
}

/// The first of the usual Chromium names found on `PATH`.
fn chromium() -> PathBuf {
    const NAMES: [&str; 4] = [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ];
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in NAMES {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "no Chromium on PATH (looked for {}): tests/replay_html.rs renders the HTML report in \
         headless Chromium; scripts/setup.sh installs Debian's `chromium` package",
        NAMES.join(", ")
    );
}

/// Reads a child's pipe to its end on a thread, so that a full pipe never stalls the child.
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}

/// Waits for the child, killing it after `limit`; `None` when it had to be killed.
fn wait_or_kill(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// The DOM Chromium holds once the page has loaded (and its script has run).
fn dump_dom(page: &Path, profile: &Path) -> String {
    let browser = chromium();
    let mut child = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--host-resolver-rules=MAP * ~NOTFOUND",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", browser.display()));
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_or_kill(&mut child, BROWSER_TIMEOUT);
    let dom = stdout.join().unwrap_or_default();
    let errors = stderr.join().unwrap_or_default();
    let tail: String = errors
        .lines()
        .rev()
        .take(20)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    match status {
        None => panic!(
            "{} did not finish within {}s and was killed; its stderr ends:\n{tail}",
            browser.display(),
            BROWSER_TIMEOUT.as_secs()
        ),
        Some(status) if !status.success() || dom.is_empty() => panic!(
            "{} exited with {status} and {} bytes of DOM; its stderr ends:\n{tail}",
            browser.display(),
            dom.len()
        ),
        Some(_) => dom,
    }
}

/// The text from `open` to the first `close` after it (both included).
fn element<'a>(dom: &'a str, open: &str, close: &str) -> &'a str {
    let start = dom
        .find(open)
        .unwrap_or_else(|| panic!("no {open} in the DOM:\n{dom}"));
    let len = dom[start..]
        .find(close)
        .unwrap_or_else(|| panic!("{open} is not closed by {close}"));
    &dom[start..start + len + close.len()]
}

#[test]
fn the_report_renders_in_chromium_without_fetching_or_running_the_data() {
    let report = report();
    let dir = tempfile::tempdir().expect("temp dir");
    let page = dir.path().join("report.html");
    std::fs::write(&page, html::render(&report)).expect("write the page");
    let profile = dir.path().join("profile");

    let started = Instant::now();
    let dom = dump_dom(&page, &profile);
    eprintln!(
        "chromium dumped {} bytes of DOM in {:?}",
        dom.len(),
        started.elapsed()
    );

    // The script ran to its end and nothing was fetched; no hidden script ran.
    let body = element(&dom, "<body", ">");
    assert!(
        !body.contains("data-pwned"),
        "a script from the data ran: {body}"
    );
    assert!(
        body.contains(r#"data-rendered="1""#),
        "not rendered: {body}"
    );
    assert!(
        body.contains(r#"data-resources="0""#),
        "resources fetched: {body}"
    );
    assert_eq!(
        dom.matches("<script").count(),
        2,
        "only the page's two scripts"
    );
    assert!(
        !dom.contains("<img"),
        "markup from the data became an element"
    );
    // The hostile strings are there, as text.
    assert!(dom.contains("&lt;/script&gt;&lt;script&gt;document.body.setAttribute("));
    assert!(dom.contains("/&lt;img src=x onerror="));

    // The timeline: a group a minute, a bar a rule and minute with refused > 0, a hatched bar a
    // rule and minute with counted > 0.
    let timeline = element(&dom, r#"<svg id="timeline""#, "</svg>");
    let nonzero = |m: &BTreeMap<String, u64>| m.values().filter(|&&n| n > 0).count();
    let refused_bars: usize = report.timeline.iter().map(|m| nonzero(&m.refused)).sum();
    let counted_bars: usize = report.timeline.iter().map(|m| nonzero(&m.counted)).sum();
    assert_eq!(
        timeline.matches(r#"<g class="minute""#).count(),
        report.timeline.len()
    );
    assert_eq!(
        timeline.matches(r#"<rect class="bar" "#).count(),
        refused_bars
    );
    assert_eq!(
        timeline.matches(r#"<rect class="bar counted" "#).count(),
        counted_bars
    );
    assert_eq!(
        (refused_bars, counted_bars),
        (7, 3),
        "the report built above"
    );
    for rule in ["deny-list", "ban", "login-burst"] {
        assert!(
            timeline.contains(&format!(r#"data-rule="{rule}""#)),
            "no bar of {rule}"
        );
    }
    for label in ["10:00", "10:04"] {
        assert!(
            timeline.contains(&format!(">{label}</text>")),
            "no time label {label}"
        );
    }
    let legend = element(&dom, r#"<div id="timeline-legend""#, "</div>");
    for rule in ["deny-list", "ban", "login-burst", "api-count"] {
        assert!(legend.contains(rule), "{rule} not in the legend: {legend}");
    }

    // The top charts: one bar an entry.
    for (id, entries) in [
        ("top-clients", &report.top_clients),
        ("top-paths", &report.top_paths),
        ("top-user-agents", &report.top_user_agents),
        ("top-countries", &report.top_countries),
    ] {
        let chart = element(&dom, &format!(r#"<svg id="{id}""#), "</svg>");
        assert_eq!(
            chart.matches(r#"<rect class="bar" "#).count(),
            entries.len(),
            "{id}"
        );
        assert_eq!(
            chart.matches(r#"<g class="entry""#).count(),
            entries.len(),
            "{id}"
        );
    }

    // The tables.
    let rules = element(&dom, r#"<section id="rules""#, "</section>");
    let at = |name: &str| {
        rules
            .find(&format!(">{name}</span>"))
            .unwrap_or_else(|| panic!("{name} missing: {rules}"))
    };
    assert!(
        at("deny-list") < at("ban")
            && at("ban") < at("login-burst")
            && at("login-burst") < at("api-count"),
        "rules not in file order"
    );
    let bans = element(&dom, r#"<section id="bans""#, "</section>");
    assert!(
        bans.contains("login-abuse") && bans.contains(">600</td>"),
        "{bans}"
    );
    let fp = element(&dom, r#"<section id="false-positives""#, "</section>");
    assert!(fp.contains("access.log:40"), "{fp}");
    let unparsed = element(&dom, r#"<section id="unparsed""#, "</section>");
    assert!(
        unparsed.contains(">17</td>") && unparsed.contains(">301</td>"),
        "{unparsed}"
    );
    assert!(
        unparsed.contains("&lt;b&gt;x&lt;/b&gt;&lt;/script&gt;"),
        "{unparsed}"
    );
    let diff = element(&dom, r#"<section id="diff""#, "</section>");
    assert!(
        !diff.starts_with(r#"<section id="diff" hidden"#),
        "the diff is hidden"
    );
    assert!(
        diff.contains("access.log:41") && diff.contains(">15</td>"),
        "{diff}"
    );
    let totals = element(&dom, r#"<section id="totals""#, "</section>");
    assert!(totals.contains(">Refused</th><td>79</td>"), "{totals}");
}

/// The page `sekisho replay --report` itself writes for a replayed log renders in Chromium:
/// one timeline group a minute of its `--json` report, and one bar a rule and minute with
/// refusals.
#[test]
fn the_report_the_cli_writes_for_a_replayed_log_renders_with_its_numbers() {
    use sekisho::replay::synth::{self, Plan};
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = Vec::new();
    let plan = Plan {
        seconds: 180,
        browsers: 10,
        flood_rate: 20,
        ..Plan::default()
    };
    synth::write("nginx", &synth::generate(&plan), &mut log).expect("write log");
    let log_path = dir.path().join("access.log");
    std::fs::write(&log_path, log).expect("write log");
    let config = dir.path().join("rules.yaml");
    std::fs::write(
        &config,
        "listen: [\"127.0.0.1:1\"]\nupstreams: [\"127.0.0.1:9\"]\nbans: { state_file: off }\nrules:\n  - name: scraper\n    match: { user_agent: \"(?i)scrapy\" }\n    action: deny\n  - name: flood\n    match: { path: / }\n    limit: { rate: 60/min, burst: 20, key: ip }\n",
    )
    .expect("write config");
    let page = dir.path().join("report.html");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sekisho"))
        .arg("replay")
        .arg("-c")
        .arg(&config)
        .arg("--json")
        .arg("--report")
        .arg(&page)
        .arg(&log_path)
        .output()
        .expect("run sekisho replay");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let minutes = json["timeline"].as_array().expect("timeline");
    let bars: usize = minutes
        .iter()
        .map(|m| m["refused"].as_object().map_or(0, |r| r.len()))
        .sum();
    assert!(minutes.len() >= 3 && bars >= 4, "{minutes:?}");
    let dom = dump_dom(&page, &dir.path().join("profile"));
    assert!(dom.contains(r#"data-rendered="1""#), "the script ran");
    assert!(dom.contains(r#"data-resources="0""#), "nothing fetched");
    let timeline = element(&dom, r#"<svg id="timeline""#, "</svg>");
    assert_eq!(
        timeline.matches(r#"<g class="minute""#).count(),
        minutes.len()
    );
    assert_eq!(timeline.matches(r#"<rect class="bar" "#).count(), bars);
    let clients = element(&dom, r#"<svg id="top-clients""#, "</svg>");
    let top = json["top_clients"].as_array().expect("top_clients");
    assert!(!top.is_empty());
    assert_eq!(clients.matches(r#"<rect class="bar" "#).count(), top.len());
}
