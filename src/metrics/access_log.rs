//! The access log: one line per request, in the Apache/nginx combined format (with sekisho's
//! fields appended) or as JSON, for the tools that already read nginx logs.
//!
//! The request path formats one line into a buffer and hands it to a [`LineWriter`] (bounded
//! queue, writer thread, `SIGUSR1` reopen, drops counted in `sekisho_access_log_dropped_total`);
//! it never does I/O or waits. Unlike the decision log there is no per-second cap: an access log
//! that skips requests under load is not an access log, so a full queue is the only bound.
//!
//! `combined`:
//! `$remote_addr - - [$time_local] "$request" $status $body_bytes_sent "$http_referer"
//! "$http_user_agent" rt=$total urt=$upstream rule=$rule id=$request_id`, where `$remote_addr`
//! is the client address after trusted-proxy resolution, `$time_local` is UTC
//! (`23/Nov/2026:17:10:02 +0000`), `rt`/`urt` are seconds with 3 decimals (`urt=-` when the
//! request did not go upstream) and `rule=-` when no rule decided. In the quoted fields `"`, `\`,
//! control bytes and bytes from 0x7f up are written `\xHH`, as nginx does; an absent referer or
//! user agent is `-`.

use std::io::Write;
use std::net::IpAddr;
use std::time::SystemTime;

use prometheus::IntCounter;
use serde::Serialize;

use super::line_writer::{LineWriter, Target};

/// `access_log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// The Apache/nginx combined format plus `rt= urt= rule= id=`.
    #[default]
    Combined,
    /// One JSON object a line.
    Json,
}

/// What one line says about one request.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    /// The client address (after trusted-proxy resolution).
    pub client: IpAddr,
    /// Request method.
    pub method: &'a str,
    /// The request target as received (path and query).
    pub target: &'a [u8],
    /// `HTTP/1.1`, `HTTP/1.0`.
    pub proto: &'a str,
    /// The status sent to the client (0 if none was sent).
    pub status: u16,
    /// Response body bytes sent to the client.
    pub bytes: u64,
    /// Nanoseconds the upstream exchange took, when the request went upstream.
    pub upstream_nanos: Option<u64>,
    /// Nanoseconds from the request head read to the end of the response.
    pub total_nanos: u64,
    /// `allow`, `deny`, `limit` or `count`.
    pub decision: &'a str,
    /// The rule that decided (`deny-list`, `allow-list`, `ban`, a rule name), empty if none.
    pub rule: &'a str,
    /// Host, without port (empty if none).
    pub host: &'a str,
    /// `Referer`, empty if absent.
    pub referer: &'a [u8],
    /// `User-Agent`, empty if absent.
    pub user_agent: &'a [u8],
    /// The request id sent upstream in `X-Request-Id`.
    pub request_id: &'a str,
}

/// The sending side, held by the proxy.
#[derive(Debug)]
pub struct AccessLog {
    out: LineWriter,
    format: Format,
}

impl AccessLog {
    /// Opens `target` and starts the writer thread; `queue`: lines held before dropping.
    pub fn start(
        target: Target,
        format: Format,
        queue: usize,
        dropped: IntCounter,
        written: IntCounter,
    ) -> std::io::Result<Self> {
        let out = LineWriter::start("access log", target, queue, dropped, written)?;
        Ok(Self { out, format })
    }

    /// Formats `r` as of now and queues it; dropped (and counted) if the writer is behind.
    pub fn log(&self, r: &Record<'_>) {
        let mut line = Vec::with_capacity(256);
        format_line(self.format, r, SystemTime::now(), &mut line);
        self.out.send(line);
    }

    /// Waits (up to `limit`) until the lines queued so far are written; false if not in time.
    pub fn flush(&self, limit: std::time::Duration) -> bool {
        self.out.flush(limit)
    }
}

/// `r` at `at` in `format`, with its `\n`, appended to `out`.
pub fn format_line(format: Format, r: &Record<'_>, at: SystemTime, out: &mut Vec<u8>) {
    match format {
        Format::Combined => combined(r, at, out),
        Format::Json => json(r, at, out),
    }
    out.push(b'\n');
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn combined(r: &Record<'_>, at: SystemTime, out: &mut Vec<u8>) {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    // writes into a Vec cannot fail
    let _ = write!(
        out,
        "{} - - [{d:02}/{}/{y}:{:02}:{:02}:{:02} +0000] \"",
        r.client,
        MONTHS[(m - 1) as usize % 12],
        s / 3600,
        s / 60 % 60,
        s % 60
    );
    escape(r.method.as_bytes(), out);
    out.push(b' ');
    escape(r.target, out);
    out.push(b' ');
    escape(r.proto.as_bytes(), out);
    let _ = write!(out, "\" {} {} \"", r.status, r.bytes);
    quoted(r.referer, out);
    out.extend_from_slice(b"\" \"");
    quoted(r.user_agent, out);
    out.extend_from_slice(b"\" rt=");
    seconds(r.total_nanos, out);
    out.extend_from_slice(b" urt=");
    match r.upstream_nanos {
        Some(n) => seconds(n, out),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" rule=");
    if r.rule.is_empty() {
        out.push(b'-');
    } else {
        escape(r.rule.as_bytes(), out);
    }
    out.extend_from_slice(b" id=");
    escape(r.request_id.as_bytes(), out);
}

/// A header value in quotes: `-` when absent, escaped otherwise.
fn quoted(v: &[u8], out: &mut Vec<u8>) {
    if v.is_empty() {
        out.push(b'-');
    } else {
        escape(v, out);
    }
}

/// nginx's `escape=default`: `"`, `\`, control bytes and bytes from 0x7f up as `\xHH`.
fn escape(v: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in v {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        } else {
            out.push(b);
        }
    }
}

/// Nanoseconds as seconds with 3 decimals, rounded to the nearest millisecond.
fn seconds(nanos: u64, out: &mut Vec<u8>) {
    let ms = nanos.saturating_add(500_000) / 1_000_000;
    let _ = write!(out, "{}.{:03}", ms / 1000, ms % 1000);
}

/// Nanoseconds as seconds rounded to the millisecond, for JSON.
fn seconds_f64(nanos: u64) -> f64 {
    (nanos.saturating_add(500_000) / 1_000_000) as f64 / 1000.0
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[derive(Serialize)]
struct JsonLine<'a> {
    ts: String,
    client: IpAddr,
    method: &'a str,
    path: std::borrow::Cow<'a, str>,
    proto: &'a str,
    status: u16,
    bytes: u64,
    upstream_seconds: Option<f64>,
    total_seconds: f64,
    decision: &'a str,
    rule: Option<&'a str>,
    host: &'a str,
    referer: Option<std::borrow::Cow<'a, str>>,
    user_agent: Option<std::borrow::Cow<'a, str>>,
    request_id: &'a str,
}

fn json(r: &Record<'_>, at: SystemTime, out: &mut Vec<u8>) {
    fn present(v: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
        (!v.is_empty()).then(|| String::from_utf8_lossy(v))
    }
    let line = JsonLine {
        ts: humantime::format_rfc3339_millis(at).to_string(),
        client: r.client,
        method: r.method,
        path: String::from_utf8_lossy(r.target),
        proto: r.proto,
        status: r.status,
        bytes: r.bytes,
        upstream_seconds: r.upstream_nanos.map(seconds_f64),
        total_seconds: seconds_f64(r.total_nanos),
        decision: r.decision,
        rule: Some(r.rule).filter(|s| !s.is_empty()),
        host: r.host,
        referer: present(r.referer),
        user_agent: present(r.user_agent),
        request_id: r.request_id,
    };
    // a struct of strings and numbers always serialises
    let _ = serde_json::to_writer(&mut *out, &line);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn record() -> Record<'static> {
        Record {
            client: "203.0.113.7".parse().unwrap(),
            method: "GET",
            target: b"/search?q=\"x\"\x01\xe3",
            proto: "HTTP/1.1",
            status: 200,
            bytes: 3,
            upstream_nanos: Some(1_499_999),
            total_nanos: 2_500_000,
            decision: "allow",
            rule: "",
            host: "shop.example",
            referer: b"",
            user_agent: b"curl/8.5 \\ \"q\"",
            request_id: "abc",
        }
    }

    /// 2026-11-23T17:10:02.481Z
    fn at() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_453_802_481)
    }

    #[test]
    fn combined_is_nginx_combined_plus_our_fields_escaped_as_nginx_does() {
        let mut out = Vec::new();
        format_line(Format::Combined, &record(), at(), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "203.0.113.7 - - [23/Nov/2026:17:10:02 +0000] \"GET /search?q=\\x22x\\x22\\x01\\xE3 HTTP/1.1\" 200 3 \"-\" \"curl/8.5 \\x5C \\x22q\\x22\" rt=0.003 urt=0.001 rule=- id=abc\n"
        );
        let mut r = record();
        r.upstream_nanos = None;
        r.rule = "login";
        r.status = 429;
        let mut out = Vec::new();
        format_line(Format::Combined, &r, at(), &mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.ends_with(" urt=- rule=login id=abc\n"), "{s}");
    }

    #[test]
    fn json_lines_parse_and_carry_every_field() {
        let mut out = Vec::new();
        format_line(Format::Json, &record(), at(), &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["ts"], "2026-11-23T17:10:02.481Z");
        assert_eq!(v["client"], "203.0.113.7");
        assert_eq!(v["path"], "/search?q=\"x\"\u{1}\u{fffd}");
        assert_eq!(v["upstream_seconds"], 0.001);
        assert_eq!(v["total_seconds"], 0.003);
        assert!(v["rule"].is_null() && v["referer"].is_null());
        assert_eq!(v["user_agent"], "curl/8.5 \\ \"q\"");
        assert_eq!(v["request_id"], "abc");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_780), (2026, 11, 23));
    }
}
