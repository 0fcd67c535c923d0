//! What a replay found: the [`Report`] (serialised as `--json` prints it, and embedded in the
//! HTML report), and the terminal summary.

use std::collections::BTreeMap;

use serde::Serialize;

/// Everything `sekisho replay` reports. Times are RFC 3339 UTC.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The candidate config (`-c`).
    pub config: String,
    /// The config compared against (`--against`), if any.
    pub against: Option<String>,
    /// Each log read.
    pub logs: Vec<LogSummary>,
    /// Lines read, over all logs (headers and blank lines included).
    pub lines: u64,
    /// Lines that could not be read.
    pub unparsed: u64,
    /// The first unreadable lines (up to 100), with where and why.
    pub unparsed_examples: Vec<Unparsed>,
    /// Requests judged.
    pub requests: u64,
    /// Requests read but not judged: the log names no client address (a host name or `-`).
    pub unjudged: u64,
    /// Requests that arrived later than the reorder window allows (judged at the clock then).
    pub late: u64,
    /// How far back, in seconds of log time, requests are put in order.
    pub reorder_window_s: u64,
    /// The first and last request time.
    pub first: Option<String>,
    /// See `first`.
    pub last: Option<String>,
    /// Requests the candidate would refuse.
    pub refused: u64,
    /// Requests that pass but that a `count`-mode rule (or list, or ban) would have refused.
    pub counted: u64,
    /// Requests that pass.
    pub passed: u64,
    /// Whether the under-attack profile was on.
    pub under_attack: bool,
    /// By what decided: each rule's name, and `deny-list`, `allow-list`, `ban`, as in the
    /// metrics. Rules that decided nothing are there with zeros.
    pub by_rule: BTreeMap<String, RuleCounts>,
    /// The rule names in file order (the lists and `ban` first): the order to show them in.
    pub rule_order: Vec<String>,
    /// The clients with the most refused requests.
    pub top_clients: Vec<Top>,
    /// The paths with the most refused requests.
    pub top_paths: Vec<Top>,
    /// The user agents with the most refused requests.
    pub top_user_agents: Vec<Top>,
    /// The countries with the most refused requests (`??` unknown).
    pub top_countries: Vec<Top>,
    /// Per minute: requests, and refused and counted by rule.
    pub timeline: Vec<Minute>,
    /// The bans autoban would have issued.
    pub bans: Vec<BanIssued>,
    /// Requests the origin answered 2xx/3xx that the candidate would refuse.
    pub false_positive_candidates: FalsePositives,
    /// With `--against`: what changes from that config to the candidate.
    pub diff: Option<Diff>,
}

/// One log read.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LogSummary {
    /// As given on the command line (`-` for stdin).
    pub path: String,
    /// The format it was read as.
    pub format: String,
    /// Lines read.
    pub lines: u64,
    /// Lines that could not be read.
    pub unparsed: u64,
}

/// An unreadable line.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Unparsed {
    /// The log.
    pub file: String,
    /// Its line number, from 1.
    pub line: u64,
    /// Why it cannot be read.
    pub reason: String,
    /// The line (its first 300 bytes).
    pub text: String,
}

/// What one rule (or list) decided.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct RuleCounts {
    /// Requests it refused.
    pub refused: u64,
    /// Requests it would have refused, in `count` mode.
    pub counted: u64,
    /// Requests it let through without limits (the allow list only).
    pub allowed: u64,
}

/// One entry of a top list.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Top {
    /// The client address, path, user agent or country.
    pub key: String,
    /// Its requests.
    pub requests: u64,
    /// Of them, refused.
    pub refused: u64,
}

/// One minute of the timeline.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Minute {
    /// The minute's start.
    pub minute: String,
    /// Requests judged in it.
    pub requests: u64,
    /// Refused, by rule.
    pub refused: BTreeMap<String, u64>,
    /// Counted, by rule.
    pub counted: BTreeMap<String, u64>,
}

/// A ban autoban would have issued.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BanIssued {
    /// The banned address or network.
    pub client: String,
    /// The autoban policy.
    pub policy: String,
    /// When (log time).
    pub at: String,
    /// Until when.
    pub until: String,
    /// For how long, in seconds.
    pub seconds: u64,
    /// `enforce` or `count`.
    pub mode: String,
    /// Why, as the proxy would log it.
    pub reason: String,
}

/// A request worth a look.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Example {
    /// The log.
    pub file: String,
    /// The line number.
    pub line: u64,
    /// The request time.
    pub time: String,
    /// The client address (after trusted-proxy resolution).
    pub client: String,
    /// Method.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// What the origin answered.
    pub status: u16,
    /// User agent.
    pub user_agent: String,
    /// The rule that would refuse it.
    pub rule: String,
}

/// Requests the origin answered 2xx/3xx that the candidate would refuse.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FalsePositives {
    /// How many.
    pub total: u64,
    /// By the rule that would refuse them.
    pub by_rule: BTreeMap<String, u64>,
    /// Distinct clients among them.
    pub clients: u64,
    /// Examples: the first few of each rule (up to 10 a rule).
    pub examples: Vec<Example>,
}

/// From `--against` to the candidate.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Diff {
    /// Passed by `--against`, refused by the candidate.
    pub newly_refused: u64,
    /// Refused by `--against`, passed by the candidate.
    pub newly_passed: u64,
    /// Refused by both, but by a different rule.
    pub refused_by_another_rule: u64,
    /// By rule: for newly refused requests the candidate's rule, for newly passed ones the
    /// rule of `--against` that refused them.
    pub by_rule: BTreeMap<String, DiffCounts>,
    /// Examples of each change (up to 10 a rule and direction).
    pub examples: Vec<DiffExample>,
}

/// Changes by one rule.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct DiffCounts {
    /// Requests this candidate rule newly refuses.
    pub newly_refused: u64,
    /// Requests this rule of `--against` refused that now pass.
    pub newly_passed: u64,
}

/// One changed request.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiffExample {
    /// `newly_refused` or `newly_passed`.
    pub change: String,
    /// The request.
    #[serde(flatten)]
    pub request: Example,
    /// What decided under `--against` (empty when it passed).
    pub before: String,
    /// What decides under the candidate (empty when it passes).
    pub after: String,
}

/// The terminal's width in columns (`COLUMNS`, else the terminal's, else 100), at least 60.
pub fn width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .or_else(|| {
            console::Term::stdout()
                .size_checked()
                .map(|(_, w)| usize::from(w))
        })
        .unwrap_or(100)
        .max(60)
}

/// `s` cut to `w` characters (an ellipsis marks the cut).
fn fit(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(w.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A table: a header and rows, the first column as wide as the width leaves.
fn table(out: &mut String, width: usize, head: &[&str], rows: &[Vec<String>]) {
    use std::fmt::Write;
    let numbers = head.len() - 1;
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().skip(1) {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let rest: usize = widths[1..].iter().map(|w| w + 2).sum();
    let longest = rows
        .iter()
        .map(|r| r[0].chars().count())
        .chain([widths[0]])
        .max()
        .unwrap_or(0);
    widths[0] = longest.min(width.saturating_sub(rest + 2).max(12));
    let line = |out: &mut String, cells: &[String]| {
        let _ = write!(out, "  {:<w$}", fit(&cells[0], widths[0]), w = widths[0]);
        for i in 1..=numbers {
            let _ = write!(out, "  {:>w$}", cells[i], w = widths[i]);
        }
        out.push('\n');
    };
    line(out, &head.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for r in rows {
        line(out, r);
    }
}

/// The terminal summary of `r`, its tables sized to `width` columns.
pub fn summary(r: &Report, width: usize) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let pct = |n: u64| {
        if r.requests == 0 {
            "0.0%".to_owned()
        } else {
            format!("{:.1}%", n as f64 * 100.0 / r.requests as f64)
        }
    };
    let _ = writeln!(
        o,
        "{} lines read, {} unreadable, {} requests judged ({} with no client address), {} later than the {} s reorder window",
        r.lines, r.unparsed, r.requests, r.unjudged, r.late, r.reorder_window_s
    );
    if let (Some(a), Some(b)) = (&r.first, &r.last) {
        let _ = writeln!(
            o,
            "from {a} to {b}{}",
            if r.under_attack {
                ", under-attack profile on"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(
        o,
        "would refuse {} ({}), would count {} ({}), pass {}",
        r.refused,
        pct(r.refused),
        r.counted,
        pct(r.counted),
        r.passed
    );
    let rows: Vec<Vec<String>> = r
        .rule_order
        .iter()
        .filter_map(|n| r.by_rule.get(n).map(|c| (n, c)))
        .filter(|(_, c)| c.refused + c.counted + c.allowed > 0)
        .map(|(n, c)| {
            vec![
                n.clone(),
                c.refused.to_string(),
                c.counted.to_string(),
                c.allowed.to_string(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        o.push_str("\nby rule\n");
        table(
            &mut o,
            width,
            &["rule", "refused", "counted", "allowed"],
            &rows,
        );
    }
    for (title, list) in [
        ("top refused clients", &r.top_clients),
        ("top refused paths", &r.top_paths),
        ("top refused user agents", &r.top_user_agents),
        ("top refused countries", &r.top_countries),
    ] {
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(o, "\n{title}");
        let rows: Vec<Vec<String>> = list
            .iter()
            .take(10)
            .map(|t| vec![t.key.clone(), t.refused.to_string(), t.requests.to_string()])
            .collect();
        table(&mut o, width, &["", "refused", "requests"], &rows);
    }
    if !r.bans.is_empty() {
        let _ = writeln!(o, "\nbans autoban would issue: {}", r.bans.len());
        let rows: Vec<Vec<String>> = r
            .bans
            .iter()
            .take(10)
            .map(|b| {
                vec![
                    b.client.clone(),
                    b.policy.clone(),
                    b.at.clone(),
                    format!("{} s", b.seconds),
                ]
            })
            .collect();
        table(&mut o, width, &["client", "policy", "at", "for"], &rows);
    }
    let fp = &r.false_positive_candidates;
    let _ = writeln!(
        o,
        "\nfalse-positive candidates (the origin answered 2xx/3xx, the candidate refuses): {} requests from {} clients",
        fp.total, fp.clients
    );
    if fp.total > 0 {
        let rows: Vec<Vec<String>> = fp
            .by_rule
            .iter()
            .map(|(k, v)| vec![k.clone(), v.to_string()])
            .collect();
        table(&mut o, width, &["rule", "requests"], &rows);
        for e in fp.examples.iter().take(5) {
            let _ = writeln!(
                o,
                "  {}:{} {} {} {} {} -> {} ({})",
                e.file,
                e.line,
                e.time,
                e.client,
                e.method,
                fit(&e.target, 60),
                e.status,
                e.rule
            );
        }
    }
    if let Some(d) = &r.diff {
        let _ = writeln!(
            o,
            "\nagainst {}: {} newly refused, {} newly passed, {} refused by another rule",
            r.against.as_deref().unwrap_or("?"),
            d.newly_refused,
            d.newly_passed,
            d.refused_by_another_rule
        );
        let rows: Vec<Vec<String>> = d
            .by_rule
            .iter()
            .map(|(k, c)| {
                vec![
                    k.clone(),
                    c.newly_refused.to_string(),
                    c.newly_passed.to_string(),
                ]
            })
            .collect();
        if !rows.is_empty() {
            table(
                &mut o,
                width,
                &["rule", "newly refused", "newly passed"],
                &rows,
            );
        }
    }
    if r.unparsed > 0 {
        let _ = writeln!(o, "\nunreadable lines: {}", r.unparsed);
        for u in r.unparsed_examples.iter().take(5) {
            let _ = writeln!(o, "  {}:{}: {}", u.file, u.line, u.reason);
        }
    }
    o
}
