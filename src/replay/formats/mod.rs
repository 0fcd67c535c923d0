//! Access log formats: each line becomes one [`Entry`] (or a reason it cannot be read).
//!
//! A parser borrows the line where no unescaping is needed, and allocates only for a field it
//! must unescape. A line that holds no request by design (blank, a CloudFront `#Version` or
//! `#Fields` header) is `Ok(None)`; one that cannot be read is an error that says why, and the
//! caller counts and shows it with its line number: never skipped silently.

mod aws;
mod clf;
mod json;
pub mod time;

use std::borrow::Cow;
use std::net::IpAddr;

/// A log format `replay` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// nginx `combined`, and `main` (combined plus `"$http_x_forwarded_for"`); sekisho's own
    /// access log (combined plus `rt= urt= rule= id=`) reads as this too.
    Nginx,
    /// Apache `combined` (`\"` and `\\` escapes in quoted fields).
    Apache,
    /// AWS Application Load Balancer access logs.
    Alb,
    /// CloudFront standard logs (tab-separated, `#Fields` header).
    CloudFront,
    /// AWS WAF logs (one JSON object a line).
    AwsWaf,
    /// Caddy's JSON access log.
    Caddy,
    /// sekisho's decision log (JSON).
    Sekisho,
}

impl Format {
    /// Every format, in the order `--format` lists them.
    pub const ALL: [Format; 7] = [
        Format::Nginx,
        Format::Apache,
        Format::Alb,
        Format::CloudFront,
        Format::AwsWaf,
        Format::Caddy,
        Format::Sekisho,
    ];

    /// The name `--format` takes.
    pub fn name(self) -> &'static str {
        match self {
            Format::Nginx => "nginx",
            Format::Apache => "apache",
            Format::Alb => "alb",
            Format::CloudFront => "cloudfront",
            Format::AwsWaf => "aws-waf",
            Format::Caddy => "caddy",
            Format::Sekisho => "sekisho",
        }
    }

    /// The format named `s` (as [`Format::name`]).
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == s)
    }
}

/// Who sent a logged request, as the log names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer<'a> {
    /// An address (the socket peer the server saw).
    Ip(IpAddr),
    /// A host name where the server logged names (Apache `HostnameLookups On`).
    Name(Cow<'a, str>),
    /// `-` or an empty field.
    Missing,
}

/// One request as a log line records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// When, in nanoseconds since the Unix epoch (UTC; the line's offset applied).
    pub time: i64,
    /// The timestamp's resolution in nanoseconds: 1_000_000_000 for a whole second (nginx,
    /// Apache, CloudFront), 1_000_000 for milliseconds, and so on.
    pub precision: i64,
    /// The socket peer the server saw.
    pub peer: Peer<'a>,
    /// The logged `X-Forwarded-For` value, where the format has one and it is not `-`.
    pub forwarded_for: Option<Cow<'a, str>>,
    /// The request method, e.g. `GET`.
    pub method: Cow<'a, str>,
    /// The request target in origin form, path and query, as received (`/a?b=1`); an
    /// absolute URL (ALB, CloudFront) is cut to its path and query.
    pub target: Cow<'a, str>,
    /// The host the request named, where logged (without port).
    pub host: Option<Cow<'a, str>>,
    /// `HTTP/1.1`, `HTTP/2.0`, ... where logged.
    pub protocol: Option<Cow<'a, str>>,
    /// The status the origin (or the logging server) answered; 0 when not logged.
    pub status: u16,
    /// The `User-Agent`, where logged and not `-`.
    pub user_agent: Option<Cow<'a, str>>,
    /// The client's country, where the log has one (AWS WAF, sekisho).
    pub country: Option<[u8; 2]>,
    /// The JA4 fingerprint, where the log has one (AWS WAF, sekisho).
    pub ja4: Option<Cow<'a, str>>,
}

/// Why a line could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// Reads lines of one format. CloudFront's keeps the `#Fields` header it last saw; the
/// combined format's, the last timestamp (see [`time::ClfMemo`]).
#[derive(Debug, Clone)]
pub struct Parser {
    format: Format,
    columns: aws::Columns,
    clf_time: time::ClfMemo,
}

impl Parser {
    /// A parser for `format`.
    pub fn new(format: Format) -> Self {
        Self {
            format,
            columns: aws::Columns::default(),
            clf_time: time::ClfMemo::default(),
        }
    }

    /// Its format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// One line (without its end of line): the request it records, `Ok(None)` for a line that
    /// holds none by design, or why it cannot be read.
    pub fn parse<'a>(&mut self, line: &'a str) -> Result<Option<Entry<'a>>, ParseError> {
        match self.format {
            Format::Nginx | Format::Apache => clf::parse(line, &mut self.clf_time),
            Format::Alb => aws::alb(line),
            Format::CloudFront => aws::cloudfront(line, &mut self.columns),
            Format::AwsWaf => json::waf(line),
            Format::Caddy => json::caddy(line),
            Format::Sekisho => json::sekisho(line),
        }
    }
}

/// The format of a log from its first lines (up to 20), or `None` when no format reads most
/// of them.
pub fn detect(lines: &[&str]) -> Option<Format> {
    let lines: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.trim().is_empty())
        .take(20)
        .collect();
    let mut best: Option<(usize, Format)> = None;
    for f in Format::ALL {
        if f == Format::Apache {
            continue; // reads as nginx does; told apart below
        }
        let mut p = Parser::new(f);
        let mut read = 0;
        for l in &lines {
            match p.parse(l) {
                Ok(Some(_)) => read += 1,
                // a CloudFront header is CloudFront's own
                Ok(None) if f == Format::CloudFront && l.starts_with("#Fields:") => read += 1,
                _ => {}
            }
        }
        if read > 0 && best.is_none_or(|(n, _)| read > n) {
            best = Some((read, f));
        }
    }
    let (read, f) = best?;
    // most of the lines, not one that happens to parse
    if read * 2 < lines.len() {
        return None;
    }
    if f == Format::Nginx && lines.iter().any(|l| clf::looks_apache(l)) {
        return Some(Format::Apache);
    }
    Some(f)
}
