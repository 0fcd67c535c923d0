//! Synthetic traffic with labelled clients, written in any log format `replay` reads: for the
//! tests (replay against a live proxy, every format), the benchmarks and for trying replay out
//! (`sekisho synth-log`).
//!
//! Four kinds of client, each with its own addresses and user agent:
//! - browsers: a page and its assets (4 to 6 requests within 300 ms), then a pause of 2 to
//!   30 s; now and then a `POST /login`; answered 200 (304 for some assets);
//! - a prober of missing paths (`/wp-admin/…`, `/.env`, `/phpmyadmin/`, random `.php`), 5 a
//!   second, answered 404;
//! - a flood of `GET /` from one address, 200 a second during the middle third of the run;
//! - a scraper with a bot user agent walking `/products/N`, 10 a second.
//!
//! The same seed gives the same traffic. Times are in order (as a log of start times is).

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};

use super::stats::rfc3339;

const SEC: i64 = 1_000_000_000;

/// What kind of client sent a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Label {
    /// A person with a browser.
    Browser,
    /// A scanner for missing paths.
    Prober,
    /// Many requests from one address.
    Flood,
    /// A crawler with a bot user agent.
    Scraper,
}

/// One generated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synth {
    /// Unix nanoseconds.
    pub time: i64,
    /// The client.
    pub ip: IpAddr,
    /// Its kind.
    pub label: Label,
    /// Method.
    pub method: &'static str,
    /// Path and query.
    pub target: String,
    /// Host.
    pub host: &'static str,
    /// What the origin answers.
    pub status: u16,
    /// User agent.
    pub user_agent: &'static str,
}

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// The first second, Unix seconds.
    pub start: i64,
    /// How many seconds of traffic.
    pub seconds: u32,
    /// How many browsers.
    pub browsers: u32,
    /// The random seed.
    pub seed: u64,
    /// Clients in 127.0.0.0/8 (to send the traffic to a proxy on loopback), else in
    /// documentation and private ranges.
    pub loopback: bool,
    /// The flood's requests a second (while it runs).
    pub flood_rate: u32,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            start: 1_796_032_800, // 2026-11-30T10:00:00Z
            seconds: 600,
            browsers: 200,
            seed: 1,
            loopback: false,
            flood_rate: 200,
        }
    }
}

/// The prober's, flood's and scraper's addresses under `plan`.
pub fn attackers(plan: &Plan) -> [(Label, IpAddr); 3] {
    let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    if plan.loopback {
        [
            (Label::Prober, v4(127, 0, 9, 1)),
            (Label::Flood, v4(127, 0, 9, 2)),
            (Label::Scraper, v4(127, 0, 9, 3)),
        ]
    } else {
        [
            (Label::Prober, v4(198, 51, 100, 7)),
            (Label::Flood, v4(203, 0, 113, 66)),
            (Label::Scraper, v4(192, 0, 2, 44)),
        ]
    }
}

/// SplitMix64: small, fast, and the same everywhere.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const BROWSER_AGENTS: [&str; 3] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
];
const PROBER_AGENT: &str = "Mozilla/5.0 zgrab/0.x";
const FLOOD_AGENT: &str = "Go-http-client/1.1";
const SCRAPER_AGENT: &str = "Scrapy/2.11.2 (+https://scrapy.org)";
const HOST: &str = "shop.example";
const PROBES: [&str; 6] = [
    "/wp-admin/setup-config.php",
    "/.env",
    "/phpmyadmin/index.php",
    "/.git/config",
    "/cgi-bin/luci",
    "/xmlrpc.php",
];

/// The traffic of `plan`, in time order.
pub fn generate(plan: &Plan) -> Vec<Synth> {
    let mut out = Vec::new();
    generate_each(plan, |s| out.push(s.clone()));
    out
}

/// The traffic of `plan`, one second at a time (in time order), to `each`.
pub fn generate_each(plan: &Plan, mut each: impl FnMut(&Synth)) {
    let mut rng = Rng(plan.seed);
    let [(_, prober), (_, flood), (_, scraper)] = attackers(plan);
    let browser_ip = |i: u32| -> IpAddr {
        let i = i + 1;
        let (a, b, c) = ((i >> 16) as u8, (i >> 8) as u8, i as u8);
        if plan.loopback {
            IpAddr::V4(Ipv4Addr::new(127, 1 + a, b, c))
        } else {
            IpAddr::V4(Ipv4Addr::new(10, a, b, c))
        }
    };
    // each browser's next page view, in nanoseconds from the start
    let mut next_visit: Vec<i64> = (0..plan.browsers)
        .map(|_| rng.below(20 * SEC as u64) as i64)
        .collect();
    let start = plan.start * SEC;
    let mut second: Vec<Synth> = Vec::new();
    let flood_from = i64::from(plan.seconds) / 3;
    let flood_to = 2 * i64::from(plan.seconds) / 3;
    for s in 0..i64::from(plan.seconds) {
        let (lo, hi) = (s * SEC, (s + 1) * SEC);
        for (i, at) in next_visit.iter_mut().enumerate() {
            while *at < hi {
                let ip = browser_ip(i as u32);
                let ua = BROWSER_AGENTS[i % BROWSER_AGENTS.len()];
                let t = *at;
                let page = if rng.below(20) == 0 {
                    ("POST", "/login".to_owned(), 200)
                } else {
                    ("GET", format!("/products/{}", rng.below(500)), 200)
                };
                let mut push = |dt: i64, method, target: String, status| {
                    second.push(Synth {
                        time: start + t + dt,
                        ip,
                        label: Label::Browser,
                        method,
                        target,
                        host: HOST,
                        status,
                        user_agent: ua,
                    })
                };
                push(0, page.0, page.1, page.2);
                for (k, asset) in [
                    "/static/app.js",
                    "/static/app.css",
                    "/static/logo.svg",
                    "/api/cart",
                ]
                .iter()
                .enumerate()
                {
                    let cached = k < 3 && rng.below(3) == 0;
                    push(
                        (k as i64 + 1) * 50_000_000 + rng.below(20_000_000) as i64,
                        "GET",
                        (*asset).to_owned(),
                        if cached { 304 } else { 200 },
                    );
                }
                *at += 2 * SEC + rng.below(28 * SEC as u64) as i64;
            }
        }
        let mut steady = |ip,
                          label,
                          rate: i64,
                          ua: &'static str,
                          rng: &mut Rng,
                          target: &dyn Fn(&mut Rng) -> (String, u16)| {
            for k in 0..rate {
                let (target, status) = target(rng);
                second.push(Synth {
                    time: start + lo + k * SEC / rate + rng.below((SEC / rate / 2) as u64) as i64,
                    ip,
                    label,
                    method: "GET",
                    target,
                    host: HOST,
                    status,
                    user_agent: ua,
                });
            }
        };
        steady(
            prober,
            Label::Prober,
            5,
            PROBER_AGENT,
            &mut rng,
            &|r: &mut Rng| {
                let p = PROBES[r.below(PROBES.len() as u64) as usize];
                if r.below(2) == 0 {
                    (p.to_owned(), 404)
                } else {
                    (format!("/{:x}.php", r.next() & 0xffff_ffff), 404)
                }
            },
        );
        if (flood_from..flood_to).contains(&s) {
            steady(
                flood,
                Label::Flood,
                i64::from(plan.flood_rate.max(1)),
                FLOOD_AGENT,
                &mut rng,
                &|_| ("/".to_owned(), 200),
            );
        }
        steady(
            scraper,
            Label::Scraper,
            10,
            SCRAPER_AGENT,
            &mut rng,
            &|r: &mut Rng| {
                (
                    format!("/products/{}?page={}", r.below(500), r.below(9) + 1),
                    200,
                )
            },
        );
        second.sort_by_key(|s| s.time);
        // what falls in the next second (a page's last assets) waits for it
        let last = s + 1 == i64::from(plan.seconds);
        let cut = if last {
            second.len()
        } else {
            second.partition_point(|r| r.time < start + hi)
        };
        second.drain(..cut).for_each(|r| each(&r));
    }
}

/// `[10/Oct/2000:13:55:36 +0000]`'s inside.
fn clf_time(t: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // from RFC 3339: 2026-11-30T10:00:00.000Z
    let r = rfc3339(t);
    let month: usize = r[5..7].parse().unwrap_or(1);
    format!(
        "{}/{}/{}:{} +0000",
        &r[8..10],
        MONTHS[month.clamp(1, 12) - 1],
        &r[0..4],
        &r[11..19]
    )
}

/// `%XX` for what CloudFront encodes in its fields.
fn url_encode(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/();:,+=&!*@".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// A JSON string.
fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// The CloudFront `#Fields` line the writer uses (the documented standard log fields).
pub const CLOUDFRONT_FIELDS: &str = "#Fields: date time x-edge-location sc-bytes c-ip cs-method cs(Host) cs-uri-stem sc-status cs(Referer) cs(User-Agent) cs-uri-query cs(Cookie) x-edge-result-type x-edge-request-id x-host-header cs-protocol cs-bytes time-taken x-forwarded-for ssl-protocol ssl-cipher x-edge-response-result-type cs-protocol-version fle-status fle-encrypted-fields c-port time-to-first-byte x-edge-detailed-result-type sc-content-type sc-content-len sc-range-start sc-range-end";

/// Writes `reqs` in `format` (its name as `--format` takes it; `nginx-main` adds
/// `"$http_x_forwarded_for"`), with a header where the format has one.
pub fn write(format: &str, reqs: &[Synth], out: &mut impl Write) -> io::Result<()> {
    let mut w = Writer::new(format)?;
    w.header(out)?;
    for r in reqs {
        w.line(r, out)?;
    }
    Ok(())
}

/// Writes one format, line by line.
pub struct Writer {
    format: String,
    n: u64,
}

impl Writer {
    /// A writer of `format`; an error names the formats it writes.
    pub fn new(format: &str) -> io::Result<Self> {
        const FORMATS: [&str; 9] = [
            "nginx",
            "nginx-main",
            "apache",
            "alb",
            "cloudfront",
            "aws-waf",
            "caddy",
            "sekisho",
            "sekisho-access",
        ];
        if !FORMATS.contains(&format) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot write {format:?}: one of {}", FORMATS.join(", ")),
            ));
        }
        Ok(Self {
            format: format.to_owned(),
            n: 0,
        })
    }

    /// The format's header lines, if it has any.
    pub fn header(&mut self, out: &mut impl Write) -> io::Result<()> {
        if self.format == "cloudfront" {
            writeln!(out, "#Version: 1.0")?;
            writeln!(out, "{CLOUDFRONT_FIELDS}")?;
        }
        Ok(())
    }

    /// One request.
    pub fn line(&mut self, r: &Synth, out: &mut impl Write) -> io::Result<()> {
        self.n += 1;
        let n = self.n;
        let (path, query) = r.target.split_once('?').unwrap_or((&r.target, ""));
        let bytes = 100 + (n % 900);
        match self.format.as_str() {
            "nginx" | "apache" | "sekisho-access" => {
                write!(
                    out,
                    "{} - - [{}] \"{} {} HTTP/1.1\" {} {bytes} \"-\" \"{}\"",
                    r.ip,
                    clf_time(r.time),
                    r.method,
                    r.target,
                    r.status,
                    r.user_agent
                )?;
                if self.format == "sekisho-access" {
                    write!(out, " rt=0.001 urt=0.001 rule=- id=req{n}")?;
                }
                writeln!(out)
            }
            "nginx-main" => writeln!(
                out,
                "{} - - [{}] \"{} {} HTTP/1.1\" {} {bytes} \"-\" \"{}\" \"-\"",
                r.ip,
                clf_time(r.time),
                r.method,
                r.target,
                r.status,
                r.user_agent
            ),
            "alb" => {
                let t = rfc3339_micros(r.time);
                writeln!(
                    out,
                    "https {t} app/shop-lb/50dc6c495c0c9188 {}:{} 10.0.1.5:80 0.000 0.001 0.000 {} {} 120 {bytes} \"{} https://{}:443{} HTTP/1.1\" \"{}\" ECDHE-RSA-AES128-GCM-SHA256 TLSv1.2 arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/shop/73e2d6bc24d8a067 \"Root=1-58337281-1d84f3d73c47ec4e58577259\" \"{}\" \"arn:aws:acm:us-east-2:123456789012:certificate/12345678-1234-1234-1234-123456789012\" 0 {t} \"forward\" \"-\" \"-\" \"10.0.1.5:80\" \"{}\" \"-\" \"-\" TID_1234",
                    r.ip,
                    40_000 + n % 20_000,
                    r.status,
                    r.status,
                    r.method,
                    r.host,
                    r.target,
                    r.user_agent,
                    r.host,
                    r.status
                )
            }
            "cloudfront" => {
                let t = rfc3339(r.time);
                let q = if query.is_empty() { "-".to_owned() } else { query.to_owned() };
                writeln!(
                    out,
                    "{}\t{}\tNRT57-P2\t{bytes}\t{}\t{}\td111111abcdef8.cloudfront.net\t{}\t{}\t-\t{}\t{}\t-\tMiss\treq{n}==\t{}\thttps\t120\t0.001\t-\tTLSv1.3\tTLS_AES_128_GCM_SHA256\tMiss\tHTTP/1.1\t-\t-\t{}\t0.001\tMiss\ttext/html\t{bytes}\t-\t-",
                    &t[0..10],
                    &t[11..19],
                    r.ip,
                    r.method,
                    url_encode(path),
                    r.status,
                    url_encode(r.user_agent),
                    q,
                    r.host,
                    40_000 + n % 20_000
                )
            }
            "aws-waf" => writeln!(
                out,
                "{{\"timestamp\":{},\"formatVersion\":1,\"webaclId\":\"arn:aws:wafv2:us-east-1:123456789012:regional/webacl/shop/1234\",\"terminatingRuleId\":\"Default_Action\",\"terminatingRuleType\":\"REGULAR\",\"action\":\"ALLOW\",\"httpSourceName\":\"ALB\",\"httpSourceId\":\"123456789012-app/shop-lb/50dc6c495c0c9188\",\"ruleGroupList\":[],\"rateBasedRuleList\":[],\"nonTerminatingMatchingRules\":[],\"requestHeadersInserted\":null,\"responseCodeSent\":{},\"httpRequest\":{{\"clientIp\":\"{}\",\"country\":\"US\",\"headers\":[{{\"name\":\"Host\",\"value\":{}}},{{\"name\":\"User-Agent\",\"value\":{}}}],\"uri\":{},\"args\":{},\"httpVersion\":\"HTTP/1.1\",\"httpMethod\":\"{}\",\"requestId\":\"req{n}\"}}}}",
                r.time / 1_000_000,
                r.status,
                r.ip,
                js(r.host),
                js(r.user_agent),
                js(path),
                js(query),
                r.method
            ),
            "caddy" => writeln!(
                out,
                "{{\"level\":\"info\",\"ts\":{}.{:06},\"logger\":\"http.log.access.log0\",\"msg\":\"handled request\",\"request\":{{\"remote_ip\":\"{}\",\"remote_port\":\"{}\",\"client_ip\":\"{}\",\"proto\":\"HTTP/1.1\",\"method\":\"{}\",\"host\":{},\"uri\":{},\"headers\":{{\"User-Agent\":[{}],\"Accept\":[\"*/*\"]}}}},\"bytes_read\":0,\"user_id\":\"\",\"duration\":0.000929675,\"size\":{bytes},\"status\":{},\"resp_headers\":{{\"Server\":[\"Caddy\"]}}}}",
                r.time.div_euclid(SEC),
                r.time.rem_euclid(SEC) / 1000,
                r.ip,
                40_000 + n % 20_000,
                r.ip,
                r.method,
                js(r.host),
                js(&r.target),
                js(r.user_agent),
                r.status
            ),
            _ => writeln!(
                out,
                "{{\"timestamp\":\"{}\",\"client_ip\":\"{}\",\"country\":\"??\",\"method\":\"{}\",\"host\":{},\"path\":{},\"user_agent\":{},\"rule\":\"\",\"action\":\"allow\",\"mode\":\"enforce\",\"status\":{},\"upstream_status\":{},\"request_id\":\"req{n}\",\"protocol\":\"HTTP/1.1\",\"tls\":false}}",
                rfc3339(r.time),
                r.ip,
                r.method,
                js(r.host),
                js(path),
                js(r.user_agent),
                r.status,
                r.status
            ),
        }
    }
}

/// RFC 3339 with microseconds, as ALB writes it.
fn rfc3339_micros(t: i64) -> String {
    let ms = rfc3339(t);
    format!(
        "{}{:03}Z",
        &ms[..ms.len() - 1],
        t.rem_euclid(1_000_000) / 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_traffic_in_order_with_every_kind() {
        let plan = Plan {
            seconds: 30,
            browsers: 20,
            ..Plan::default()
        };
        let a = generate(&plan);
        assert_eq!(a, generate(&plan));
        assert!(a.windows(2).all(|w| w[0].time <= w[1].time));
        for l in [Label::Browser, Label::Prober, Label::Flood, Label::Scraper] {
            assert!(a.iter().any(|s| s.label == l), "{l:?}");
        }
        let flood = a.iter().filter(|s| s.label == Label::Flood).count();
        assert_eq!(flood, 10 * 200, "200 a second for the middle 10 s");
        assert!(a
            .iter()
            .all(|s| s.time >= plan.start * SEC && s.time < (plan.start + 31) * SEC));
    }

    #[test]
    fn times_are_written_as_each_format_writes_them() {
        assert_eq!(
            clf_time(1_796_032_800 * SEC + 5),
            "30/Nov/2026:10:00:00 +0000"
        );
        assert_eq!(
            rfc3339_micros(1_796_032_800 * SEC + 123_456_789),
            "2026-11-30T10:00:00.123456Z"
        );
    }
}
