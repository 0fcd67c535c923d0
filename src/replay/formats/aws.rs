//! AWS's text logs: Application Load Balancer access logs (space-separated, quoted request
//! and user agent, `client:port`, RFC 3339 times to the microsecond) and CloudFront standard
//! logs (tab-separated in the order of the last `#Fields:` header, URL-encoded values, `-` for
//! none, whole-second UTC times).

use std::borrow::Cow;

use super::clf::{hex_byte, origin_form, peer, request_line, url_host};
use super::{time, Entry, ParseError, Peer};

fn err(why: String) -> ParseError {
    ParseError(why)
}

/// The fields of an ALB line: bare words and quoted strings (ALB escapes nothing inside).
fn fields(line: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::with_capacity(max);
    let mut rest = line;
    while out.len() < max {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            break;
        }
        if let Some(q) = rest.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            out.push(&q[..end]);
            rest = q.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            out.push(&rest[..end]);
            rest = &rest[end..];
        }
    }
    out
}

/// `192.0.2.1:4711`, `[2001:db8::1]:4711`, `2001:db8::1:4711` (ALB writes IPv6 without
/// brackets), or `-`.
fn client_of(s: &str) -> Peer<'_> {
    if let Some(v6) = s.strip_prefix('[') {
        return peer(v6.split_once(']').map_or(v6, |(a, _)| a));
    }
    match s.rsplit_once(':') {
        Some((addr, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !port.is_empty() => {
            match peer(addr) {
                Peer::Ip(ip) => Peer::Ip(ip),
                _ => peer(s),
            }
        }
        _ => peer(s),
    }
}

/// One ALB access log line.
pub fn alb(line: &str) -> Result<Option<Entry<'_>>, ParseError> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let f = fields(line, 14);
    if f.len() < 14 {
        return Err(err(format!(
            "{} fields; an ALB line has at least 14 (type time elb client:port ... \"request\" \"user_agent\")",
            f.len()
        )));
    }
    let (when, precision) =
        time::rfc3339(f[1]).ok_or_else(|| err(format!("time {:?} is not RFC 3339", f[1])))?;
    let status = match f[8] {
        "-" => 0,
        s => s
            .parse()
            .map_err(|_| err(format!("elb_status_code {s:?} is not a number")))?,
    };
    let request = f[12];
    let (method, url, protocol) = request_line(Cow::Borrowed(request))?;
    if method == "-" {
        return Err(err("no request (`- - -`): the client sent none".into()));
    }
    let host = url_host(request.split(' ').nth(1).unwrap_or("")).map(Cow::Borrowed);
    Ok(Some(Entry {
        time: when,
        precision,
        peer: client_of(f[3]),
        forwarded_for: None,
        method,
        target: url,
        host,
        protocol,
        status,
        user_agent: (f[13] != "-" && !f[13].is_empty()).then_some(Cow::Borrowed(f[13])),
        country: None,
        ja4: None,
    }))
}

/// Where each field CloudFront writes is, by its `#Fields` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    date: Option<usize>,
    time: Option<usize>,
    ip: Option<usize>,
    method: Option<usize>,
    host: Option<usize>,
    x_host: Option<usize>,
    stem: Option<usize>,
    query: Option<usize>,
    status: Option<usize>,
    agent: Option<usize>,
    forwarded: Option<usize>,
    protocol: Option<usize>,
    count: usize,
}

/// The standard log fields, in the order CloudFront documents and writes them.
pub const DEFAULT_FIELDS: &str = "date time x-edge-location sc-bytes c-ip cs-method cs(Host) cs-uri-stem sc-status cs(Referer) cs(User-Agent) cs-uri-query cs(Cookie) x-edge-result-type x-edge-request-id x-host-header cs-protocol cs-bytes time-taken x-forwarded-for ssl-protocol ssl-cipher x-edge-response-result-type cs-protocol-version fle-status fle-encrypted-fields c-port time-to-first-byte x-edge-detailed-result-type sc-content-type sc-content-len sc-range-start sc-range-end";

impl Columns {
    /// From the names of a `#Fields:` line.
    pub fn from_names(names: &str) -> Self {
        let v: Vec<&str> = names.split_whitespace().collect();
        let at = |n: &str| v.iter().position(|f| f.eq_ignore_ascii_case(n));
        Self {
            date: at("date"),
            time: at("time"),
            ip: at("c-ip"),
            method: at("cs-method"),
            host: at("cs(Host)"),
            x_host: at("x-host-header"),
            stem: at("cs-uri-stem"),
            query: at("cs-uri-query"),
            status: at("sc-status"),
            agent: at("cs(User-Agent)"),
            forwarded: at("x-forwarded-for"),
            protocol: at("cs-protocol-version"),
            count: v.len(),
        }
    }
}

impl Default for Columns {
    fn default() -> Self {
        Self::from_names(DEFAULT_FIELDS)
    }
}

/// `%XX` decoded once (CloudFront encodes spaces and other bytes in its fields).
fn decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], hex_byte(b, i + 1)) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// One CloudFront line under `cols` (a `#` line is a header: `Ok(None)`, and a `#Fields` one
/// replaces `cols`).
pub fn cloudfront<'a>(line: &'a str, cols: &mut Columns) -> Result<Option<Entry<'a>>, ParseError> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    if let Some(h) = line.strip_prefix('#') {
        if let Some(names) = h.strip_prefix("Fields:") {
            *cols = Columns::from_names(names);
        }
        return Ok(None);
    }
    let v: Vec<&str> = line.split('\t').collect();
    let get = |i: Option<usize>| -> Option<&'a str> {
        i.and_then(|i| v.get(i).copied())
            .filter(|s| !s.is_empty() && *s != "-")
    };
    let need = |i: Option<usize>, name: &str| {
        get(i).ok_or_else(|| {
            err(format!(
                "no {name} field ({} tab-separated fields)",
                v.len()
            ))
        })
    };
    if v.len() < cols.count {
        return Err(err(format!(
            "{} tab-separated fields; a CloudFront line has {} (#Fields)",
            v.len(),
            cols.count
        )));
    }
    let (date, t) = (need(cols.date, "date")?, need(cols.time, "time")?);
    let when = time::date_time(date, t).ok_or_else(|| {
        err(format!(
            "date and time {date:?} {t:?} are not like 2019-12-04 21:02:31"
        ))
    })?;
    let status = match get(cols.status) {
        None | Some("000") => 0,
        Some(s) => s
            .parse()
            .map_err(|_| err(format!("sc-status {s:?} is not a number")))?,
    };
    let stem = decode(need(cols.stem, "cs-uri-stem")?);
    let target = match get(cols.query) {
        Some(q) => Cow::Owned(format!("{stem}?{q}")),
        None => stem,
    };
    Ok(Some(Entry {
        time: when,
        precision: 1_000_000_000,
        peer: get(cols.ip).map_or(Peer::Missing, peer),
        forwarded_for: get(cols.forwarded).map(decode),
        method: Cow::Borrowed(need(cols.method, "cs-method")?),
        target: origin_form(target),
        host: get(cols.x_host).or(get(cols.host)).map(Cow::Borrowed),
        protocol: get(cols.protocol).map(Cow::Borrowed),
        status,
        user_agent: get(cols.agent).map(decode),
        country: None,
        ja4: None,
    }))
}
