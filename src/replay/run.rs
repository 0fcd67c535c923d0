//! The replay run: parsed requests in time order, judged by the engine with the log's clock.
//!
//! Each log is read as a stream of [`Request`]s put back in time order within a reorder window
//! (logs are written as requests finish, so lines are only nearly in order): a request is
//! judged once a request [`Options::reorder_window`] later has been read. One that comes later
//! still is counted `late` and judged at the stream's clock then. Several logs (the servers of
//! a pool, rotated files) are merged by time.
//!
//! Requests that share one logged timestamp of a whole second (nginx, Apache, CloudFront) are
//! spread evenly over that second, in file order: the i-th of n at `t + (i + ½)/n s`. Live,
//! they may have come in a clump; spread, a limit refills between them, so a burst finer than
//! the log's resolution can be refused a little less than it was live: by at most one second
//! of a rule's rate per key and second.
//!
//! Each request is judged by [`crate::engine::Policy::judge`] exactly as the proxy judges it:
//! the client resolved through the config's trusted proxies from the logged peer and
//! forwarding header ([`crate::proxy::resolve`]), the country from the log or the config's
//! database, the path normalised, the bans autoban adds from the statuses the log records (a
//! request the candidate refuses counts with the status the candidate would send), and the
//! background sweeps every 10 s of log time.

use std::collections::{HashMap, VecDeque};
use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use http::{HeaderMap, HeaderValue};

use super::formats::{self, Entry, Format, Parser, Peer};
use super::input::Log;
use super::report::{Report, Unparsed};
use super::stats::Stats;
use crate::config::{self, Config};
use crate::defense::store::Clocks;
use crate::defense::Defense;
use crate::engine::{normalize_path, Country, Decision, Facts, Live, RuleRef, SlotRegistry};
use crate::limiter::{Limiter, Nanos};

const SEC: i64 = 1_000_000_000;

/// `sekisho replay` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Access logs (plain or gzip, several gzip members in one file too); `-` for stdin.
    #[arg(required = true)]
    pub logs: Vec<PathBuf>,
    /// The log format, or `auto` to detect it from the first lines of each log.
    #[arg(long, default_value = "auto", value_parser = ["auto", "nginx", "apache", "alb", "cloudfront", "aws-waf", "caddy", "sekisho"])]
    pub format: String,
    /// The config in force now: report what changes from it to the candidate (`-c`).
    #[arg(long)]
    pub against: Option<PathBuf>,
    /// Write a self-contained HTML report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Print the result as one JSON object instead of the terminal summary.
    #[arg(long)]
    pub json: bool,
    /// Judge with the under-attack profile switched on.
    #[arg(long)]
    pub under_attack: bool,
    /// How far out of order (in log time) lines may be and still be judged in order.
    #[arg(long, default_value = "10s")]
    pub reorder_window: String,
    /// How many entries each top list holds.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
}

/// How a run reads and judges.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// See [`ReplayArgs::reorder_window`], in nanoseconds.
    pub reorder_window: i64,
    /// Whether the under-attack profile is enforced.
    pub under_attack: bool,
    /// Entries a top list holds.
    pub top: usize,
    /// At most this many requests are held for reordering; past it the oldest is judged.
    pub max_held: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            reorder_window: 10 * SEC,
            under_attack: false,
            top: 20,
            max_held: 2_000_000,
        }
    }
}

/// One request, owned, ready to judge.
#[derive(Debug, Clone)]
pub struct Request {
    /// When it is judged (the logged time, spread within its second), Unix nanoseconds.
    pub time: i64,
    /// Which log (index in the order given).
    pub file: u32,
    /// Its line number in that log.
    pub line: u64,
    /// The logged socket peer.
    pub peer: IpAddr,
    /// The status the origin answered (0: not logged).
    pub status: u16,
    /// The logged country, if any.
    pub country: Option<Country>,
    /// method, target, host, user agent, forwarded-for and JA4, one after another.
    text: Box<str>,
    ends: [u32; 6],
    /// Where the path ends in `text` (at the target's first `?`, or its end).
    path_end: u32,
}

impl Request {
    fn part(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.text.get(start..self.ends[i] as usize).unwrap_or("")
    }
    /// The method.
    pub fn method(&self) -> &str {
        self.part(0)
    }
    /// Path and query, as logged.
    pub fn target(&self) -> &str {
        self.part(1)
    }
    /// The host, empty when not logged.
    pub fn host(&self) -> &str {
        self.part(2)
    }
    /// The user agent, empty when not logged.
    pub fn user_agent(&self) -> &str {
        self.part(3)
    }
    /// The logged forwarding header, empty when not logged.
    pub fn forwarded_for(&self) -> &str {
        self.part(4)
    }
    /// The JA4, empty when not logged.
    pub fn ja4(&self) -> &str {
        self.part(5)
    }
    /// The path, without the query.
    pub fn path(&self) -> &str {
        let start = self.ends[0] as usize;
        self.text.get(start..self.path_end as usize).unwrap_or("")
    }

    /// An owned request from a parsed entry; `None` when the entry names no client address.
    pub fn from_entry(e: &Entry<'_>, file: u32, line: u64) -> Option<Self> {
        let Peer::Ip(peer) = e.peer else {
            return None;
        };
        let parts: [&str; 6] = [
            &e.method,
            &e.target,
            e.host.as_deref().unwrap_or(""),
            e.user_agent.as_deref().unwrap_or(""),
            e.forwarded_for.as_deref().unwrap_or(""),
            e.ja4.as_deref().unwrap_or(""),
        ];
        let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0u32; 6];
        for (i, p) in parts.iter().enumerate() {
            text.push_str(p);
            ends[i] = u32::try_from(text.len()).ok()?;
        }
        let path = memchr::memchr(b'?', e.target.as_bytes()).unwrap_or(e.target.len());
        let path_end = ends[0] + u32::try_from(path).ok()?;
        Some(Self {
            time: e.time,
            file,
            line,
            peer,
            status: e.status,
            country: e.country.map(Country),
            text: text.into_boxed_str(),
            ends,
            path_end,
        })
    }
}

/// What reading found besides requests.
#[derive(Debug, Default)]
pub struct ReadStats {
    /// Lines read.
    pub lines: u64,
    /// Lines that could not be read.
    pub unparsed: u64,
    /// The first of them.
    pub unparsed_examples: Vec<Unparsed>,
    /// Requests with no client address.
    pub unjudged: u64,
    /// Requests that came later than the reorder window.
    pub late: u64,
}

const MAX_UNPARSED_EXAMPLES: usize = 100;

impl ReadStats {
    fn unreadable(&mut self, file: &str, line: u64, reason: String, text: &str) {
        self.unparsed += 1;
        if self.unparsed_examples.len() < MAX_UNPARSED_EXAMPLES {
            let mut end = text.len().min(300);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            self.unparsed_examples.push(Unparsed {
                file: file.to_owned(),
                line,
                reason,
                text: text[..end].to_owned(),
            });
        }
    }
}

/// One log as a stream of requests in time order (within the reorder window).
pub struct Stream {
    log: Log,
    name: String,
    parser: Parser,
    file: u32,
    /// Requests read and not yet judged, by logged time: (time, precision, requests).
    held: VecDeque<(i64, i64, Vec<Request>)>,
    held_count: usize,
    /// Ready, spread, in order.
    out: VecDeque<Request>,
    /// The latest logged time read.
    max_seen: i64,
    /// The logged time of the last bucket handed out.
    emitted: i64,
    /// The time the last request handed out was judged at.
    clock: i64,
    eof: bool,
    /// Lines read from this log, and its unreadable ones.
    pub lines: u64,
    /// See `lines`.
    pub unparsed: u64,
}

impl Stream {
    /// A stream over `log` in `format`.
    pub fn new(log: Log, format: Format, file: u32) -> Self {
        Self {
            name: log.name.clone(),
            log,
            parser: Parser::new(format),
            file,
            held: VecDeque::new(),
            held_count: 0,
            out: VecDeque::new(),
            max_seen: i64::MIN,
            emitted: i64::MIN,
            clock: i64::MIN,
            eof: false,
            lines: 0,
            unparsed: 0,
        }
    }

    /// The log's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes read so far and the size, for the progress bar.
    pub fn progress(&self) -> (u64, Option<u64>) {
        (
            self.log.read.load(std::sync::atomic::Ordering::Relaxed),
            self.log.size,
        )
    }

    /// The next request in time order; `None` at the end of the log.
    pub fn next(
        &mut self,
        opts: &Options,
        stats: &mut ReadStats,
    ) -> std::io::Result<Option<Request>> {
        loop {
            if let Some(r) = self.out.pop_front() {
                return Ok(Some(r));
            }
            let ready = self.held.front().is_some_and(|(t, _, _)| {
                self.eof
                    || *t < self.max_seen.saturating_sub(opts.reorder_window)
                    || self.held_count > opts.max_held
            });
            if ready {
                self.release();
                continue;
            }
            if self.eof {
                return Ok(None);
            }
            self.read_one(stats)?;
        }
    }

    /// Hands the oldest bucket out, spread over its timestamp's resolution.
    fn release(&mut self) {
        let Some((t, precision, reqs)) = self.held.pop_front() else {
            return;
        };
        self.held_count -= reqs.len();
        self.emitted = t;
        let n = reqs.len() as i64;
        // spread over the resolution, at most a second (finer logs are taken as they are)
        let span = if precision > 1_000_000 {
            precision.min(SEC)
        } else {
            0
        };
        for (i, mut r) in reqs.into_iter().enumerate() {
            r.time = t + (2 * i as i64 + 1) * span / (2 * n);
            self.clock = r.time;
            self.out.push_back(r);
        }
    }

    fn read_one(&mut self, stats: &mut ReadStats) -> std::io::Result<()> {
        let number = self.log.line + 1;
        let Some(line) = self.log.next_line()? else {
            self.eof = true;
            return Ok(());
        };
        self.lines += 1;
        stats.lines += 1;
        let entry = match self.parser.parse(&line) {
            Ok(Some(e)) => e,
            Ok(None) => return Ok(()),
            Err(e) => {
                self.unparsed += 1;
                stats.unreadable(&self.name, number, e.0, &line);
                return Ok(());
            }
        };
        let precision = entry.precision.max(1);
        let Some(mut req) = Request::from_entry(&entry, self.file, number) else {
            stats.unjudged += 1;
            return Ok(());
        };
        drop(line);
        if req.time <= self.emitted && self.emitted != i64::MIN {
            if req.time < self.emitted {
                stats.late += 1;
            }
            // its second was handed out already: judged now, at the clock of the last one
            req.time = self.clock;
            self.out.push_back(req);
            return Ok(());
        }
        self.max_seen = self.max_seen.max(req.time);
        self.held_count += 1;
        let t = req.time;
        match self.held.back_mut() {
            Some((bt, _, v)) if *bt == t => v.push(req),
            Some((bt, _, _)) if *bt < t => self.held.push_back((t, precision, vec![req])),
            None => self.held.push_back((t, precision, vec![req])),
            Some(_) => {
                // out of order within the window: into its place
                let at = self.held.partition_point(|(bt, _, _)| *bt < t);
                match self.held.get_mut(at) {
                    Some((bt, _, v)) if *bt == t => v.push(req),
                    _ => self.held.insert(at, (t, precision, vec![req])),
                }
            }
        }
        Ok(())
    }
}

/// What one judgement gave.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// The client after trusted-proxy resolution.
    pub client: IpAddr,
    /// The client's country.
    pub country: Country,
    /// What the engine decided.
    pub decision: Decision,
}

/// The database's country of the clients seen lately, so that a client's requests look it
/// up once: the answer depends on the client address alone when the config has no country
/// header (the database does not change during a run).
#[derive(Default)]
pub struct CountryMemo(HashMap<IpAddr, Country, foldhash::fast::RandomState>);

/// Clients a [`CountryMemo`] holds; when full it starts afresh.
const COUNTRY_MEMO: usize = 65_536;

impl CountryMemo {
    /// [`crate::proxy::country_of`], remembered by client where it depends on nothing else.
    pub fn country_of(
        &mut self,
        cfg: &Config,
        peer: IpAddr,
        client: IpAddr,
        headers: &HeaderMap,
    ) -> Country {
        let look_up = || crate::proxy::country_of(&cfg.geo, &cfg.client_ip, peer, client, headers);
        if cfg.geo.header.is_some() || cfg.geo.database.is_none() {
            return look_up();
        }
        if let Some(c) = self.0.get(&client) {
            return *c;
        }
        let c = look_up();
        if self.0.len() >= COUNTRY_MEMO {
            self.0.clear();
        }
        self.0.insert(client, c);
        c
    }
}

/// One config's engine and state, judging requests in time order.
pub struct Judge {
    /// The config.
    pub config: Config,
    limiter: Limiter,
    defense: Defense,
    under_attack: bool,
    /// Whether a request's headers are looked at (trusted proxies, header keys, a country
    /// header).
    wants_headers: bool,
    next_sweep: i64,
    countries: CountryMemo,
    /// The bans added, with when (Unix nanoseconds).
    pub bans: Vec<(i64, crate::defense::bans::Ban)>,
}

impl Judge {
    /// A fresh engine for `config`: full buckets, no bans (the config's state file is not read).
    pub fn new(config: Config, under_attack: bool) -> Self {
        let mut settings = config.defense.clone();
        settings.state_file = None;
        let defense = Defense::start(
            &settings,
            config.client_ip.ipv6_prefix,
            Clocks { mono: 0, unix: 0 },
        );
        let wants_headers = wants_headers(&config);
        Self {
            limiter: Limiter::new(config.max_tracked_keys),
            defense,
            under_attack,
            wants_headers,
            next_sweep: i64::MIN,
            countries: CountryMemo::default(),
            bans: Vec::new(),
            config,
        }
    }

    /// The name of what decided.
    pub fn name_of(&self, r: RuleRef) -> &str {
        self.config.policy.name_of(r)
    }

    /// Judges `r` at its time, and feeds autoban what it got.
    pub fn judge(&mut self, r: &Request) -> Outcome {
        let now = r.time.max(0) as Nanos;
        if r.time >= self.next_sweep {
            if self.next_sweep != i64::MIN {
                self.limiter.sweep(now);
                self.defense.offenders.sweep(now);
                self.defense.bans.sweep(now);
                self.defense.sweep(now);
            }
            self.next_sweep = r.time.saturating_add(10 * SEC);
        }
        let live = Live {
            limiter: &self.limiter,
            bans: Some(&self.defense.bans),
            under_attack: self.under_attack,
            shared: None,
        };
        let policy = &self.config.policy;
        let (client, country, decision) = with_facts(
            &self.config,
            self.wants_headers,
            r,
            Some(&mut self.countries),
            |f, _| (f.ip, f.country, policy.judge(f, &live, now).decision),
        );
        self.observe(r, client, decision, now);
        Outcome {
            client,
            country,
            decision,
        }
    }

    /// As the proxy's `observe`: the status this request got feeds the autoban policies.
    fn observe(&mut self, r: &Request, ip: IpAddr, decision: Decision, now: Nanos) {
        let cfg = &self.config;
        if cfg.defense.autoban.is_empty() || !crate::defense::feeds_autoban(decision) {
            return;
        }
        // what the client got: the candidate's own refusal, or what the origin answered
        let status = match decision {
            Decision::Deny { rule } | Decision::Limit { rule, .. } => {
                cfg.policy.response_of(rule).status
            }
            _ => r.status,
        };
        let unix = (r.time.max(0) / SEC) as u64;
        for p in &cfg.defense.autoban {
            if !p.counts_request(decision, status) {
                continue;
            }
            let v6 = cfg.client_ip.ipv6_prefix;
            for ban in self
                .defense
                .observe(p, ip, v6, r.path().as_bytes(), now, unix)
            {
                self.bans.push((r.time, ban));
            }
        }
    }
}

/// Whether judging under `config` looks at a request's headers (trusted proxies, header keys,
/// a country header).
pub fn wants_headers(config: &Config) -> bool {
    !config.client_ip.trusted_proxies.is_empty()
        || config.geo.header.is_some()
        || config.policy.rules.iter().any(|r| {
            matches!(&r.kind, crate::engine::RuleKind::Limit(l)
                if matches!(l.key, crate::engine::KeyKind::Header(_)))
        })
}

/// Calls `f` with the facts of `r` under `cfg`, built as the proxy builds them: the client
/// resolved from the logged peer and forwarding header, the country from the log or the
/// config (through `countries` when given), the path normalised; and the socket peer.
pub fn with_facts<T>(
    cfg: &Config,
    wants_headers: bool,
    r: &Request,
    countries: Option<&mut CountryMemo>,
    f: impl FnOnce(&Facts<'_>, IpAddr) -> T,
) -> T {
    let mut headers = HeaderMap::new();
    if wants_headers {
        let mut put = |name: http::HeaderName, v: &str| {
            if let Ok(v) = HeaderValue::from_str(v) {
                headers.append(name, v);
            }
        };
        if !r.forwarded_for().is_empty() {
            put(cfg.client_ip.header.clone(), r.forwarded_for());
        }
        if !r.host().is_empty() {
            put(http::header::HOST, r.host());
        }
        if !r.user_agent().is_empty() {
            put(http::header::USER_AGENT, r.user_agent());
        }
    }
    let client = crate::proxy::resolve(r.peer, &headers, &cfg.client_ip);
    let country = r.country.unwrap_or_else(|| match countries {
        Some(memo) => memo.country_of(cfg, client.peer, client.ip, &headers),
        None => {
            crate::proxy::country_of(&cfg.geo, &cfg.client_ip, client.peer, client.ip, &headers)
        }
    });
    let path = normalize_path(r.path());
    let facts = Facts {
        ip: client.ip,
        method: r.method(),
        host: r.host(),
        path: &path,
        user_agent: r.user_agent().as_bytes(),
        headers: wants_headers.then_some(&headers),
        country,
        ja4: r.ja4(),
    };
    f(&facts, client.peer)
}

/// Loads a config as `check` does; its errors printed, `None` if it is not valid.
fn load(path: &Path) -> Option<Config> {
    match config::load(path, &SlotRegistry::default()) {
        Ok(c) => Some(c),
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("sekisho replay: {} is not a valid config", path.display());
            None
        }
    }
}

/// The format of `log` (`auto`: from its first lines), or why not.
pub fn format_of(log: &mut Log, format: &str) -> Result<Format, String> {
    if let Some(f) = Format::from_name(format) {
        return Ok(f);
    }
    let first = log
        .peek(20)
        .map_err(|e| format!("cannot read {}: {e}", log.name))?;
    let lines: Vec<&str> = first
        .iter()
        .map(String::as_str)
        .filter(|l| !l.trim().is_empty())
        .collect();
    if lines.is_empty() {
        return Ok(Format::Nginx);
    }
    formats::detect(&lines).ok_or_else(|| {
        format!(
            "{}: cannot tell the log format from its first lines; give --format ({})",
            log.name,
            Format::ALL.map(Format::name).join(", ")
        )
    })
}

/// Reads every log, judges every request with `judges` (the candidate first), and returns
/// the report. `progress` is told the bytes read and the total.
pub fn replay(
    logs: &[PathBuf],
    format: &str,
    judges: &mut [Judge],
    opts: &Options,
    mut progress: impl FnMut(u64, u64),
) -> Result<Report, String> {
    let mut streams = Vec::new();
    let mut summaries = Vec::new();
    for (i, path) in logs.iter().enumerate() {
        let mut log =
            Log::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let f = format_of(&mut log, format)?;
        summaries.push(f);
        streams.push(Stream::new(log, f, i as u32));
    }
    let total: u64 = streams.iter().filter_map(|s| s.progress().1).sum();
    let mut read = ReadStats::default();
    let names: Vec<String> = streams.iter().map(|s| s.name().to_owned()).collect();
    let mut stats = Stats::new(&judges[0], judges.len() > 1);
    let mut heads: Vec<Option<Request>> = Vec::with_capacity(streams.len());
    for s in &mut streams {
        heads.push(
            s.next(opts, &mut read)
                .map_err(|e| format!("{}: {e}", s.name()))?,
        );
    }
    let mut n: u64 = 0;
    // the log whose next request is the earliest
    while let Some(i) = (0..heads.len())
        .filter(|&i| heads[i].is_some())
        .min_by_key(|&i| heads[i].as_ref().map(|r| r.time))
    {
        let Some(req) = heads[i].take() else { break };
        heads[i] = streams[i]
            .next(opts, &mut read)
            .map_err(|e| format!("{}: {e}", streams[i].name()))?;
        let outcome = judges[0].judge(&req);
        stats.add(&req, &outcome, &names);
        if let [_, against] = judges {
            let before = against.judge(&req);
            stats.diff(&req, &outcome, &before, against, &names);
        }
        n += 1;
        if n % 65_536 == 0 {
            progress(streams.iter().map(|s| s.progress().0).sum(), total);
        }
    }
    progress(streams.iter().map(|s| s.progress().0).sum(), total);
    let mut report = stats.finish(&judges[0], opts);
    report.lines = read.lines;
    report.unparsed = read.unparsed;
    report.unparsed_examples = read.unparsed_examples;
    report.unjudged = read.unjudged;
    report.late = read.late;
    report.reorder_window_s = (opts.reorder_window / SEC) as u64;
    report.under_attack = opts.under_attack;
    report.logs = streams
        .iter()
        .zip(&summaries)
        .map(|(s, f)| super::report::LogSummary {
            path: s.name().to_owned(),
            format: f.name().to_owned(),
            lines: s.lines,
            unparsed: s.unparsed,
        })
        .collect();
    Ok(report)
}

/// Runs `sekisho replay` with the candidate config at `config`.
pub fn main(config: &Path, args: &ReplayArgs) -> ExitCode {
    let window = match config::parse_duration(&args.reorder_window) {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "sekisho replay: --reorder-window {:?}: {e}",
                args.reorder_window
            );
            return ExitCode::from(2);
        }
    };
    let opts = Options {
        reorder_window: i64::try_from(window.as_nanos()).unwrap_or(i64::MAX),
        under_attack: args.under_attack,
        top: args.top.max(1),
        ..Options::default()
    };
    let Some(candidate) = load(config) else {
        return ExitCode::from(2);
    };
    let mut judges = vec![Judge::new(candidate, opts.under_attack)];
    if let Some(against) = &args.against {
        let Some(c) = load(against) else {
            return ExitCode::from(2);
        };
        judges.push(Judge::new(c, opts.under_attack));
    }
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let result = replay(
        &args.logs,
        &args.format,
        &mut judges,
        &opts,
        |done, total| {
            if let Some(b) = &bar {
                b.set_length(total.max(done));
                b.set_position(done);
            }
        },
    );
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let mut report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sekisho replay: {e}");
            return ExitCode::from(2);
        }
    };
    report.config = config.display().to_string();
    report.against = args.against.as_ref().map(|p| p.display().to_string());
    if let Some(path) = &args.report {
        if let Err(e) = std::fs::write(path, super::html::render(&report)) {
            eprintln!("sekisho replay: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("sekisho replay: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        print!(
            "{}",
            super::report::summary(&report, super::report::width())
        );
        if let Some(path) = &args.report {
            println!("report: {}", path.display());
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(ip: &str, time: &str) -> String {
        format!("{ip} - - [{time} +0000] \"GET / HTTP/1.1\" 200 1 \"-\" \"t\"\n")
    }

    #[test]
    fn requests_come_out_in_time_order_spread_over_their_second_and_late_ones_are_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a.log");
        let text = [
            line("192.0.2.1", "30/Nov/2026:10:00:01"),
            line("192.0.2.2", "30/Nov/2026:10:00:00"), // out of order, within the window
            line("192.0.2.3", "30/Nov/2026:10:00:01"),
            line("192.0.2.4", "30/Nov/2026:10:00:30"),
            // read after 10:00:01 was judged, but before 10:00:30 was: still in order
            line("192.0.2.5", "30/Nov/2026:10:00:02"),
            // read after 10:00:02 was judged: late
            line("192.0.2.6", "30/Nov/2026:10:00:00"),
        ]
        .concat();
        std::fs::write(&p, text).expect("write");
        let mut s = Stream::new(Log::open(&p).expect("open"), Format::Nginx, 0);
        let mut stats = ReadStats::default();
        let opts = Options::default();
        let mut out = Vec::new();
        while let Some(r) = s.next(&opts, &mut stats).expect("read") {
            out.push((r.peer.to_string(), r.time - 1_796_032_800 * SEC));
        }
        assert_eq!(
            out,
            [
                ("192.0.2.2".to_owned(), SEC / 2),
                // two in one second: at a quarter and three quarters of it, in file order
                ("192.0.2.1".to_owned(), SEC + SEC / 4),
                ("192.0.2.3".to_owned(), SEC + 3 * SEC / 4),
                ("192.0.2.5".to_owned(), 2 * SEC + SEC / 2),
                // late: judged at the clock then, never before a request judged already
                ("192.0.2.6".to_owned(), 2 * SEC + SEC / 2),
                ("192.0.2.4".to_owned(), 30 * SEC + SEC / 2),
            ]
        );
        assert_eq!(stats.late, 1);
        assert_eq!(stats.lines, 6);
    }
}
