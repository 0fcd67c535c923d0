//! The combined log format, as nginx (`combined`, and `main` with `"$http_x_forwarded_for"`
//! after the user agent) and Apache (`%h %l %u %t \"%r\" %>s %b \"%{Referer}i\"
//! \"%{User-agent}i\"`) write it; sekisho's own access log appends `rt= urt= rule= id=`.
//!
//! Both escape inside quoted fields, differently: nginx writes `"`, `\`, control bytes and
//! bytes from 0x7f as `\xHH`; Apache writes `\"` and `\\` and non-printable bytes as `\xHH`.
//! One unescaper reads both (nginx never writes a bare `\"`). Fields past the user agent are
//! optional: a first further quoted field is the forwarding header; anything else is ignored.

use std::borrow::Cow;
use std::net::IpAddr;

use super::{time, Entry, ParseError, Peer};

const SEC: i64 = 1_000_000_000;

fn err(why: &str) -> ParseError {
    ParseError(why.to_owned())
}

/// `-` or empty: absent.
fn present(s: Cow<'_, str>) -> Option<Cow<'_, str>> {
    (!s.is_empty() && s != "-").then_some(s)
}

/// The peer field: an address (IPv4, IPv6, an IPv4-mapped one made plain), or a name.
pub fn peer(s: &str) -> Peer<'_> {
    if s.is_empty() || s == "-" {
        return Peer::Missing;
    }
    match s.parse::<IpAddr>() {
        Ok(ip) => Peer::Ip(ip.to_canonical()),
        Err(_) => Peer::Name(Cow::Borrowed(s)),
    }
}

/// Undoes `\xHH`, `\"`, `\\`, `\n`, `\t`, `\r`.
fn unescape(s: &str) -> Cow<'_, str> {
    if memchr::memchr(b'\\', s.as_bytes()).is_none() {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let (byte, len) = match (b[i], b.get(i + 1)) {
            (b'\\', Some(b'x')) => hex_byte(b, i + 2).map_or((b'\\', 1), |v| (v, 4)),
            (b'\\', Some(b'"')) => (b'"', 2),
            (b'\\', Some(b'\\')) => (b'\\', 2),
            (b'\\', Some(b'n')) => (b'\n', 2),
            (b'\\', Some(b't')) => (b'\t', 2),
            (b'\\', Some(b'r')) => (b'\r', 2),
            (c, _) => (c, 1),
        };
        out.push(byte);
        i += len;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// The byte the two hex digits at `b[i..i + 2]` spell (`\xHH`, `%HH`), if they are there.
pub fn hex_byte(b: &[u8], i: usize) -> Option<u8> {
    let digit = |at: usize| b.get(at).and_then(|c| (*c as char).to_digit(16));
    Some((digit(i)? * 16 + digit(i + 1)?) as u8)
}

/// At `s` (just after an opening `"`): the raw inside of the quoted field and what follows
/// its closing `"`.
fn quoted(s: &str) -> Option<(&str, &str)> {
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(at) = memchr::memchr2(b'"', b'\\', b.get(i..)?) {
        i += at;
        if b[i] == b'"' {
            return Some((&s[..i], &s[i + 1..]));
        }
        i += 2;
    }
    None
}

/// The next quoted field of `rest` (after spaces), if `rest` goes on with one.
fn next_quoted(rest: &str) -> Option<(&str, &str)> {
    quoted(rest.trim_start_matches(' ').strip_prefix('"')?)
}

/// One line of the combined (or common) log format; `memo` holds the last timestamp read.
pub fn parse<'a>(line: &'a str, memo: &mut time::ClfMemo) -> Result<Option<Entry<'a>>, ParseError> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let space = memchr::memchr(b' ', line.as_bytes())
        .ok_or_else(|| err("expected `ADDRESS - USER [TIME] \"REQUEST\" STATUS BYTES ...`"))?;
    let (peer_text, rest) = (&line[..space], &line[space + 1..]);
    let open = memchr::memchr(b'[', rest.as_bytes())
        .filter(|&i| i > 0 && rest.as_bytes()[i - 1] == b' ')
        .ok_or_else(|| err("no [time] field"))?;
    let rest = &rest[open + 1..];
    let close =
        memchr::memchr(b']', rest.as_bytes()).ok_or_else(|| err("no end to the [time] field"))?;
    let when = memo.clf(&rest[..close]).ok_or_else(|| {
        ParseError(format!(
            "time {:?} is not like 10/Oct/2000:13:55:36 -0700",
            &rest[..close]
        ))
    })?;
    let (request, rest) = next_quoted(&rest[close + 1..])
        .ok_or_else(|| err("no quoted request line after the time"))?;
    let mut tail = rest.trim_start_matches(' ');
    let mut word = || {
        let end = memchr::memchr(b' ', tail.as_bytes()).unwrap_or(tail.len());
        let w = &tail[..end];
        tail = tail.get(end + 1..).unwrap_or("");
        w
    };
    let status_text = word();
    let status = match status_text.parse::<u16>() {
        Ok(s) if (100..=999).contains(&s) => s,
        _ => {
            return Err(ParseError(format!(
                "status {status_text:?} is not a 3-digit number"
            )))
        }
    };
    let bytes = word();
    if !(bytes == "-" || (!bytes.is_empty() && bytes.bytes().all(|b| b.is_ascii_digit()))) {
        return Err(ParseError(format!(
            "body size {bytes:?} is not a number or -"
        )));
    }
    let mut rest = tail;
    let mut fields = [None, None, None];
    for f in &mut fields {
        match next_quoted(rest) {
            Some((v, after)) => {
                *f = Some(v);
                rest = after;
            }
            None => break,
        }
    }
    let [_referer, agent, forwarded] = fields;
    let request = unescape(request);
    let (method, target, protocol) = request_line(request)?;
    Ok(Some(Entry {
        time: when,
        precision: SEC,
        peer: peer(peer_text),
        forwarded_for: forwarded.map(unescape).and_then(present),
        method,
        target,
        host: None,
        protocol,
        status,
        user_agent: agent.map(unescape).and_then(present),
        country: None,
        ja4: None,
    }))
}

type RequestLine<'a> = (Cow<'a, str>, Cow<'a, str>, Option<Cow<'a, str>>);

/// `GET /a?b HTTP/1.1` (or `GET /a`, HTTP/0.9) into method, target and protocol.
pub fn request_line(r: Cow<'_, str>) -> Result<RequestLine<'_>, ParseError> {
    let bad = |r: &str| {
        if r == "-" || r.is_empty() {
            err("no request line (`-`): the client sent no request before closing")
        } else {
            ParseError(format!(
                "request line {:?} is not `METHOD TARGET HTTP/x.y`",
                r.chars().take(80).collect::<String>()
            ))
        }
    };
    let parts = |s: &str| -> Option<(usize, usize, Option<usize>)> {
        let m = memchr::memchr(b' ', s.as_bytes())?;
        let after = &s[m + 1..];
        let last = memchr::memrchr(b' ', after.as_bytes());
        let (t, p) = match last {
            Some(p) if after[p + 1..].starts_with("HTTP/") => (p, Some(m + 1 + p + 1)),
            _ => (after.len(), None),
        };
        let method = &s[..m];
        let target = &after[..t];
        let ok = !method.is_empty()
            && method
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.!#$%&'*+^`|~".contains(&b))
            && !target.is_empty()
            && memchr::memchr(b' ', target.as_bytes()).is_none()
            && (p.is_some() || last.is_none());
        ok.then_some((m, m + 1 + t, p))
    };
    match r {
        Cow::Borrowed(s) => {
            let (m, t, p) = parts(s).ok_or_else(|| bad(s))?;
            Ok((
                Cow::Borrowed(&s[..m]),
                origin_form(Cow::Borrowed(&s[m + 1..t])),
                p.map(|p| Cow::Borrowed(&s[p..])),
            ))
        }
        Cow::Owned(s) => {
            let (m, t, p) = parts(&s).ok_or_else(|| bad(&s))?;
            Ok((
                Cow::Owned(s[..m].to_owned()),
                origin_form(Cow::Owned(s[m + 1..t].to_owned())),
                p.map(|p| Cow::Owned(s[p..].to_owned())),
            ))
        }
    }
}

/// An absolute-form target (`http://host/path?q`) cut to its path and query.
pub fn origin_form(t: Cow<'_, str>) -> Cow<'_, str> {
    // an origin-form target is kept whole, whatever its query holds (`/r?u=http://x/y`);
    // most targets have no `:` at all: one memchr instead of a substring search
    if t.starts_with('/') || memchr::memchr(b':', t.as_bytes()).is_none() {
        return t;
    }
    let Some(after) = t.find("://").map(|i| i + 3) else {
        return t;
    };
    let path_at = t[after..].find(['/', '?']).map(|i| after + i);
    match (t, path_at) {
        (Cow::Borrowed(s), Some(p)) if s[p..].starts_with('/') => Cow::Borrowed(&s[p..]),
        (Cow::Borrowed(s), Some(p)) => Cow::Owned(format!("/{}", &s[p..])),
        (Cow::Owned(s), Some(p)) if s[p..].starts_with('/') => Cow::Owned(s[p..].to_owned()),
        (Cow::Owned(s), Some(p)) => Cow::Owned(format!("/{}", &s[p..])),
        (_, None) => Cow::Borrowed("/"),
    }
}

/// The authority of an absolute URL, without port or user info.
pub fn url_host(url: &str) -> Option<&str> {
    let after = url.find("://")? + 3;
    let rest = &url[after..];
    let auth = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let auth = auth.rsplit_once('@').map_or(auth, |(_, h)| h);
    let host = if let Some(v6) = auth.strip_prefix('[') {
        &v6[..v6.find(']')?]
    } else {
        auth.split_once(':').map_or(auth, |(h, _)| h)
    };
    (!host.is_empty()).then_some(host)
}

/// Whether the line looks written by Apache rather than nginx (a `\"` escape, or a host name
/// where the address goes).
pub fn looks_apache(line: &str) -> bool {
    line.contains("\\\"") || matches!(line.split(' ').next().map(peer), Some(Peer::Name(_)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_origin_form_target_with_a_url_in_its_query_is_kept_whole() {
        assert_eq!(
            origin_form(Cow::Borrowed("/r?u=http://x/y")),
            "/r?u=http://x/y"
        );
        assert_eq!(origin_form(Cow::Borrowed("http://example.com/a?b")), "/a?b");
        assert_eq!(origin_form(Cow::Borrowed("https://example.com")), "/");
        assert_eq!(origin_form(Cow::Borrowed("https://example.com?q")), "/?q");
    }

    use super::*;

    #[test]
    fn unescapes_both_styles() {
        assert_eq!(unescape(r#"a\x22b\x5Cc"#), "a\"b\\c");
        assert_eq!(unescape(r#"say \"hi\" \\ bye"#), "say \"hi\" \\ bye");
        assert_eq!(unescape(r"\xe6\x97\xa5"), "日");
        assert_eq!(unescape(r"end\x4"), "end\\x4");
        assert!(matches!(unescape("plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn request_lines() {
        let ok = |s: &str| {
            request_line(Cow::Borrowed(s))
                .map(|(m, t, p)| (m.into_owned(), t.into_owned(), p.map(Cow::into_owned)))
        };
        assert_eq!(
            ok("GET /a?b=1 HTTP/1.1"),
            Ok(("GET".into(), "/a?b=1".into(), Some("HTTP/1.1".into())))
        );
        assert_eq!(ok("GET /"), Ok(("GET".into(), "/".into(), None)));
        assert_eq!(
            ok("GET http://h.example:8080/x?y HTTP/1.1").map(|r| r.1),
            Ok("/x?y".into())
        );
        assert_eq!(
            ok("GET http://h.example HTTP/1.1").map(|r| r.1),
            Ok("/".into())
        );
        assert!(ok("-").is_err());
        assert!(ok("\u{16}\u{3}\u{1}").is_err());
        assert!(ok("GET /a b HTTP/1.1").is_err());
        assert_eq!(
            url_host("https://www.example.com:443/x"),
            Some("www.example.com")
        );
        assert_eq!(url_host("http://[2001:db8::1]:80/"), Some("2001:db8::1"));
    }
}
