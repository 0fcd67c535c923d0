//! Counting what a replay decided, request by request, into a [`Report`].
//!
//! Every count is exact except the top lists' `requests`: clients, paths and user agents are
//! tracked from their first request up to [`MAX_TRACKED`] distinct keys each; past that only
//! keys with a refused request are added (their `requests` then count from that refusal on).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use super::report::{
    BanIssued, Diff, DiffCounts, DiffExample, Example, FalsePositives, Minute, Report, RuleCounts,
    Top,
};
use super::run::{Judge, Options, Outcome, Request};
use crate::engine::{Decision, RuleRef};

/// Distinct keys a top list tracks before it tracks only refused ones.
pub const MAX_TRACKED: usize = 200_000;
/// Examples kept per rule (and per direction of a diff).
const EXAMPLES: usize = 10;
const MINUTE: i64 = 60_000_000_000;

type Map<K> = HashMap<K, (u64, u64), foldhash::fast::RandomState>;

/// Index of what decided: the allow list, the deny list, bans, then the rules.
fn slot(r: RuleRef) -> usize {
    match r {
        RuleRef::AllowList => 0,
        RuleRef::DenyList => 1,
        RuleRef::Ban => 2,
        RuleRef::Rule(i) => 3 + usize::from(i),
    }
}

/// The names by slot, and the rule's of a slot.
fn names(j: &Judge) -> Vec<String> {
    let p = &j.config.policy;
    ["allow-list", "deny-list", "ban"]
        .into_iter()
        .map(str::to_owned)
        .chain(p.rules.iter().map(|r| r.name.clone()))
        .collect()
}

/// The counts of one config's run.
pub struct Stats {
    names: Vec<String>,
    requests: u64,
    refused: u64,
    counted: u64,
    passed: u64,
    by_rule: Vec<RuleCounts>,
    first: Option<i64>,
    last: Option<i64>,
    /// (minute, requests, refused by slot, counted by slot), in order.
    timeline: Vec<(i64, u64, Vec<u64>, Vec<u64>)>,
    clients: Map<IpAddr>,
    paths: Map<Box<str>>,
    agents: Map<Box<str>>,
    countries: Map<[u8; 2]>,
    fp_total: u64,
    fp_by_rule: Vec<u64>,
    fp_clients: HashMap<IpAddr, (), foldhash::fast::RandomState>,
    fp_examples: Vec<Example>,
    diff: Option<DiffStats>,
}

/// `--against`: what changes.
#[derive(Default)]
struct DiffStats {
    newly_refused: u64,
    newly_passed: u64,
    another_rule: u64,
    by_rule: BTreeMap<String, DiffCounts>,
    examples: Vec<DiffExample>,
    shown: HashMap<(bool, String), usize>,
}

/// Adds one to `key`'s requests (and refused), tracking new keys while there is room.
fn bump<K: std::hash::Hash + Eq>(map: &mut Map<K>, key: K, refused: bool) {
    let full = map.len() >= MAX_TRACKED;
    if full && !refused && !map.contains_key(&key) {
        return;
    }
    let e = map.entry(key).or_default();
    e.0 += 1;
    e.1 += u64::from(refused);
}

/// `bump` for string keys, allocating only for a new one.
fn bump_str(map: &mut Map<Box<str>>, key: &str, refused: bool) {
    if let Some(e) = map.get_mut(key) {
        e.0 += 1;
        e.1 += u64::from(refused);
    } else if refused || map.len() < MAX_TRACKED {
        map.insert(key.into(), (1, u64::from(refused)));
    }
}

/// The top `n` of `map` by refused, then requests; only keys with a refusal.
fn top<K>(map: &Map<K>, n: usize, show: impl Fn(&K) -> String) -> Vec<Top> {
    let mut v: Vec<(&K, &(u64, u64))> = map.iter().filter(|(_, c)| c.1 > 0).collect();
    v.sort_by(|a, b| {
        (b.1 .1, b.1 .0)
            .cmp(&(a.1 .1, a.1 .0))
            .then_with(|| show(a.0).cmp(&show(b.0)))
    });
    v.into_iter()
        .take(n)
        .map(|(k, c)| Top {
            key: show(k),
            requests: c.0,
            refused: c.1,
        })
        .collect()
}

/// RFC 3339 UTC of Unix nanoseconds, to the millisecond.
pub fn rfc3339(t: i64) -> String {
    let secs = t.div_euclid(1_000_000_000);
    let ms = t.rem_euclid(1_000_000_000) / 1_000_000;
    let days = secs.div_euclid(86_400);
    let s = secs.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// The civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A request as an example, decided by `rule`.
fn example(r: &Request, client: IpAddr, rule: &str, files: &[String]) -> Example {
    Example {
        file: files.get(r.file as usize).cloned().unwrap_or_default(),
        line: r.line,
        time: rfc3339(r.time),
        client: client.to_string(),
        method: r.method().to_owned(),
        target: r.target().to_owned(),
        status: r.status,
        user_agent: r.user_agent().to_owned(),
        rule: rule.to_owned(),
    }
}

/// The rule that refused, if the request is refused.
fn refused_by(d: &Decision) -> Option<RuleRef> {
    match *d {
        Decision::Deny { rule } | Decision::Limit { rule, .. } => Some(rule),
        _ => None,
    }
}

impl Stats {
    /// Empty counts for `judge`'s config; with `against`, the diff is counted too.
    pub fn new(judge: &Judge, against: bool) -> Self {
        let names = names(judge);
        let n = names.len();
        Self {
            by_rule: vec![RuleCounts::default(); n],
            fp_by_rule: vec![0; n],
            names,
            requests: 0,
            refused: 0,
            counted: 0,
            passed: 0,
            first: None,
            last: None,
            timeline: Vec::new(),
            clients: Map::default(),
            paths: Map::default(),
            agents: Map::default(),
            countries: Map::default(),
            fp_total: 0,
            fp_clients: HashMap::default(),
            fp_examples: Vec::new(),
            diff: against.then(DiffStats::default),
        }
    }

    /// Counts one judged request.
    pub fn add(&mut self, r: &Request, o: &Outcome, files: &[String]) {
        self.requests += 1;
        self.first = Some(self.first.map_or(r.time, |f| f.min(r.time)));
        self.last = Some(self.last.map_or(r.time, |l| l.max(r.time)));
        let minute = r.time.div_euclid(MINUTE);
        let n = self.names.len();
        let at = match self.timeline.last() {
            Some((m, ..)) if *m == minute => self.timeline.len() - 1,
            _ => match self.timeline.binary_search_by_key(&minute, |t| t.0) {
                Ok(i) => i,
                Err(i) => {
                    self.timeline.insert(i, (minute, 0, vec![0; n], vec![0; n]));
                    i
                }
            },
        };
        let m = &mut self.timeline[at];
        m.1 += 1;
        let refused = match o.decision {
            Decision::Allow => {
                self.passed += 1;
                false
            }
            Decision::AllowListed => {
                self.passed += 1;
                self.by_rule[0].allowed += 1;
                false
            }
            Decision::Count { rule } => {
                self.passed += 1;
                self.counted += 1;
                self.by_rule[slot(rule)].counted += 1;
                m.3[slot(rule)] += 1;
                false
            }
            Decision::Deny { rule } | Decision::Limit { rule, .. } => {
                self.refused += 1;
                let s = slot(rule);
                self.by_rule[s].refused += 1;
                m.2[s] += 1;
                if (200..400).contains(&r.status) {
                    self.fp_total += 1;
                    self.fp_by_rule[s] += 1;
                    self.fp_clients.insert(o.client, ());
                    if self.fp_by_rule[s] <= EXAMPLES as u64 {
                        self.fp_examples
                            .push(example(r, o.client, &self.names[s], files));
                    }
                }
                true
            }
        };
        bump(&mut self.clients, o.client, refused);
        bump(&mut self.countries, o.country.0, refused);
        bump_str(&mut self.paths, r.path(), refused);
        bump_str(&mut self.agents, r.user_agent(), refused);
    }

    /// Counts how `after` (the candidate) differs from `before` (`--against`) on `r`.
    pub fn diff(
        &mut self,
        r: &Request,
        after: &Outcome,
        before: &Outcome,
        against: &Judge,
        files: &[String],
    ) {
        let Some(d) = &mut self.diff else { return };
        let (a, b) = (refused_by(&after.decision), refused_by(&before.decision));
        let (change, rule) = match (b, a) {
            (None, Some(a)) => {
                d.newly_refused += 1;
                let name = self.names[slot(a)].clone();
                d.by_rule.entry(name.clone()).or_default().newly_refused += 1;
                (true, name)
            }
            (Some(b), None) => {
                d.newly_passed += 1;
                let name = against.name_of(b).to_owned();
                d.by_rule.entry(name.clone()).or_default().newly_passed += 1;
                (false, name)
            }
            (Some(b), Some(a)) => {
                if against.name_of(b) != self.names[slot(a)] {
                    d.another_rule += 1;
                }
                return;
            }
            (None, None) => return,
        };
        let shown = d.shown.entry((change, rule.clone())).or_default();
        if *shown < EXAMPLES {
            *shown += 1;
            d.examples.push(DiffExample {
                change: if change {
                    "newly_refused"
                } else {
                    "newly_passed"
                }
                .to_owned(),
                request: example(r, after.client, &rule, files),
                before: b.map(|b| against.name_of(b).to_owned()).unwrap_or_default(),
                after: a.map(|a| self.names[slot(a)].clone()).unwrap_or_default(),
            });
        }
    }

    /// The report of the run; `judge`'s bans are listed.
    pub fn finish(self, judge: &Judge, opts: &Options) -> Report {
        let names = &self.names;
        let by_rule = names
            .iter()
            .cloned()
            .zip(self.by_rule.iter().copied())
            .collect();
        let named = |v: &[u64]| -> BTreeMap<String, u64> {
            v.iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, c)| (names[i].clone(), *c))
                .collect()
        };
        let timeline = self
            .timeline
            .iter()
            .map(|(m, n, refused, counted)| Minute {
                minute: rfc3339(m * MINUTE),
                requests: *n,
                refused: named(refused),
                counted: named(counted),
            })
            .collect();
        let bans = judge
            .bans
            .iter()
            .map(|(at, b)| {
                let now = at.max(&0).unsigned_abs();
                let secs = b.until.saturating_sub(now) / 1_000_000_000;
                BanIssued {
                    client: b.net.to_string(),
                    policy: b.source.name().to_owned(),
                    at: rfc3339(*at),
                    until: rfc3339(i64::try_from(b.until).unwrap_or(i64::MAX)),
                    seconds: secs,
                    mode: b.mode.as_str().to_owned(),
                    reason: b.reason.clone(),
                }
            })
            .collect();
        let diff = self.diff.map(|d| Diff {
            newly_refused: d.newly_refused,
            newly_passed: d.newly_passed,
            refused_by_another_rule: d.another_rule,
            by_rule: d.by_rule,
            examples: d.examples,
        });
        Report {
            requests: self.requests,
            refused: self.refused,
            counted: self.counted,
            passed: self.passed,
            first: self.first.map(rfc3339),
            last: self.last.map(rfc3339),
            by_rule,
            rule_order: names.clone(),
            top_clients: top(&self.clients, opts.top, |ip| ip.to_string()),
            top_paths: top(&self.paths, opts.top, |p| p.to_string()),
            top_user_agents: top(&self.agents, opts.top, |u| {
                if u.is_empty() {
                    "-".to_owned()
                } else {
                    u.to_string()
                }
            }),
            top_countries: top(&self.countries, opts.top, |c| {
                String::from_utf8_lossy(c).into_owned()
            }),
            timeline,
            bans,
            false_positive_candidates: FalsePositives {
                total: self.fp_total,
                by_rule: named(&self.fp_by_rule),
                clients: self.fp_clients.len() as u64,
                examples: self.fp_examples,
            },
            diff,
            ..Report::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day) 12:34:56.789
        assert_eq!(rfc3339(951_827_696_789_000_000), "2000-02-29T12:34:56.789Z");
        assert_eq!(
            rfc3339(1_796_083_200_000_000_000),
            "2026-12-01T00:00:00.000Z"
        );
    }
}
