//! The JSON logs, one object a line: AWS WAF logs, Caddy's access log, and sekisho's own
//! decision log. Deserialised into borrowed structs (a string without escapes is not copied);
//! fields a format may leave out are optional, unknown ones ignored.

use std::borrow::Cow;

use serde::Deserialize;

use super::clf::{origin_form, peer};
use super::{time, Entry, ParseError, Peer};

fn bad(format: &str, e: serde_json::Error) -> ParseError {
    ParseError(format!("not a {format} JSON line: {e}"))
}

fn country(c: Option<&str>) -> Option<[u8; 2]> {
    match c.map(str::as_bytes) {
        Some([a, b]) if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() && c != Some("??") => {
            Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
        }
        _ => None,
    }
}

fn some<'a>(s: Option<Cow<'a, str>>) -> Option<Cow<'a, str>> {
    s.filter(|s| !s.is_empty() && s != "-")
}

#[derive(Deserialize)]
struct WafHeader<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    value: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WafRequest<'a> {
    #[serde(borrow)]
    client_ip: Cow<'a, str>,
    #[serde(borrow, default)]
    country: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    headers: Vec<WafHeader<'a>>,
    #[serde(borrow)]
    uri: Cow<'a, str>,
    #[serde(borrow, default)]
    args: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    http_version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    http_method: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Waf<'a> {
    timestamp: i64,
    #[serde(borrow)]
    http_request: WafRequest<'a>,
    #[serde(default)]
    response_code_sent: Option<u16>,
    #[serde(borrow, default)]
    ja4_fingerprint: Option<Cow<'a, str>>,
}

/// One AWS WAF log line. Its status is `responseCodeSent` (WAF writes it for the requests it
/// answered itself); 0 otherwise.
pub fn waf(line: &str) -> Result<Option<Entry<'_>>, ParseError> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let w: Waf<'_> = serde_json::from_str(line).map_err(|e| bad("AWS WAF", e))?;
    let r = w.http_request;
    let header = |n: &str| {
        r.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(n))
            .map(|h| h.value.clone())
    };
    let target = match some(r.args.clone()) {
        Some(a) => Cow::Owned(format!("{}?{a}", r.uri)),
        None => r.uri.clone(),
    };
    let peer = owned_peer(r.client_ip);
    Ok(Some(Entry {
        time: w.timestamp.saturating_mul(1_000_000),
        precision: 1_000_000,
        peer,
        forwarded_for: some(header("x-forwarded-for")),
        method: r.http_method,
        target: origin_form(target),
        host: some(header("host")).map(|h| strip_port(h)),
        protocol: some(r.http_version),
        status: w.response_code_sent.unwrap_or(0),
        user_agent: some(header("user-agent")),
        country: country(r.country.as_deref()),
        ja4: some(w.ja4_fingerprint),
    }))
}

/// `host:port` → `host` (`[v6]:port` → `v6`).
fn strip_port(h: Cow<'_, str>) -> Cow<'_, str> {
    let cut = |s: &str| -> Option<(usize, usize)> {
        if let Some(v6) = s.strip_prefix('[') {
            return Some((1, 1 + v6.find(']')?));
        }
        match s.rfind(':') {
            Some(i) if s[i + 1..].bytes().all(|b| b.is_ascii_digit()) && !s[..i].contains(':') => {
                Some((0, i))
            }
            _ => None,
        }
    };
    match (cut(&h), h) {
        (Some((a, b)), Cow::Borrowed(s)) => Cow::Borrowed(&s[a..b]),
        (Some((a, b)), Cow::Owned(s)) => Cow::Owned(s[a..b].to_owned()),
        (None, h) => h,
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum CaddyTime<'a> {
    Seconds(f64),
    Text(#[serde(borrow)] Cow<'a, str>),
}

#[derive(Deserialize, Default)]
struct CaddyHeaders<'a> {
    #[serde(rename = "User-Agent", borrow, default)]
    user_agent: Vec<Cow<'a, str>>,
    #[serde(rename = "X-Forwarded-For", borrow, default)]
    forwarded_for: Vec<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct CaddyRequest<'a> {
    #[serde(borrow)]
    remote_ip: Cow<'a, str>,
    #[serde(borrow)]
    method: Cow<'a, str>,
    #[serde(borrow, default)]
    host: Option<Cow<'a, str>>,
    #[serde(borrow)]
    uri: Cow<'a, str>,
    #[serde(borrow, default)]
    proto: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    headers: CaddyHeaders<'a>,
}

#[derive(Deserialize)]
struct Caddy<'a> {
    #[serde(borrow)]
    ts: CaddyTime<'a>,
    #[serde(borrow)]
    request: CaddyRequest<'a>,
    #[serde(default)]
    status: u16,
}

/// One line of Caddy's JSON access log (`ts` as seconds, or as text with a `time_format`).
pub fn caddy(line: &str) -> Result<Option<Entry<'_>>, ParseError> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let c: Caddy<'_> = serde_json::from_str(line).map_err(|e| bad("Caddy", e))?;
    let (time, precision) = match &c.ts {
        CaddyTime::Seconds(s) if s.is_finite() => (((s * 1e6).round() as i64) * 1000, 1000),
        CaddyTime::Seconds(_) => return Err(ParseError("ts is not a number".into())),
        CaddyTime::Text(t) => time::rfc3339(t)
            .ok_or_else(|| ParseError(format!("ts {t:?} is neither seconds nor RFC 3339")))?,
    };
    let r = c.request;
    let peer = owned_peer(r.remote_ip);
    let join = |v: Vec<Cow<'_, str>>| -> Option<String> {
        (!v.is_empty()).then(|| v.iter().map(|s| s.as_ref()).collect::<Vec<_>>().join(", "))
    };
    let mut agents = r.headers.user_agent;
    Ok(Some(Entry {
        time,
        precision,
        peer,
        forwarded_for: join(r.headers.forwarded_for).map(Cow::Owned),
        method: r.method,
        target: origin_form(r.uri),
        host: some(r.host).map(strip_port),
        protocol: some(r.proto),
        status: c.status,
        user_agent: if agents.len() == 1 {
            agents.pop()
        } else {
            join(agents).map(Cow::Owned)
        },
        country: None,
        ja4: None,
    }))
}

/// [`peer`] of a field that serde may have had to unescape into its own string.
fn owned_peer(s: Cow<'_, str>) -> Peer<'_> {
    match s {
        Cow::Borrowed(s) => peer(s),
        Cow::Owned(s) => match peer(&s) {
            Peer::Ip(ip) => Peer::Ip(ip),
            Peer::Missing => Peer::Missing,
            Peer::Name(_) => Peer::Name(Cow::Owned(s)),
        },
    }
}

#[derive(Deserialize)]
struct Decision<'a> {
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    #[serde(borrow)]
    client_ip: Cow<'a, str>,
    #[serde(borrow, default)]
    country: Option<Cow<'a, str>>,
    #[serde(borrow)]
    method: Cow<'a, str>,
    #[serde(borrow, default)]
    host: Option<Cow<'a, str>>,
    #[serde(borrow)]
    path: Cow<'a, str>,
    #[serde(borrow, default)]
    user_agent: Option<Cow<'a, str>>,
    #[serde(default)]
    status: u16,
    #[serde(default)]
    upstream_status: Option<u16>,
    #[serde(borrow, default)]
    protocol: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    ja4: Option<Cow<'a, str>>,
}

/// One line of sekisho's decision log. The status is what upstream answered when the request
/// went there, else what sekisho sent.
pub fn sekisho(line: &str) -> Result<Option<Entry<'_>>, ParseError> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let d: Decision<'_> = serde_json::from_str(line).map_err(|e| bad("sekisho decision log", e))?;
    let (time, precision) = time::rfc3339(&d.timestamp)
        .ok_or_else(|| ParseError(format!("timestamp {:?} is not RFC 3339", d.timestamp)))?;
    Ok(Some(Entry {
        time,
        precision,
        peer: owned_peer(d.client_ip),
        forwarded_for: None,
        method: d.method,
        target: d.path,
        host: some(d.host),
        protocol: some(d.protocol),
        status: d.upstream_status.unwrap_or(d.status),
        user_agent: some(d.user_agent),
        country: country(d.country.as_deref()),
        ja4: some(d.ja4),
    }))
}
