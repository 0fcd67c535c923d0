//! Every format `replay` reads, on fixture logs built from each format's documented example
//! lines and edge cases (escapes, IPv6, host names, missing fields, `-`, malformed lines): the
//! exact entry of each line, the reason a bad line is refused, and the detected format.

use std::path::Path;

use sekisho::replay::formats::{detect, Entry, Format, Parser, Peer};

/// One entry as `time precision peer xff method target host proto status ua country ja4`,
/// `_` for absent fields.
fn show(e: &Entry<'_>) -> String {
    let o = |v: &Option<std::borrow::Cow<'_, str>>| v.as_deref().unwrap_or("_").to_owned();
    let peer = match &e.peer {
        Peer::Ip(ip) => ip.to_string(),
        Peer::Name(n) => format!("name:{n}"),
        Peer::Missing => "_".into(),
    };
    format!(
        "{} {} {peer} [{}] {} {} {} {} {} [{}] {} {}",
        e.time,
        e.precision,
        o(&e.forwarded_for),
        e.method,
        e.target,
        o(&e.host),
        o(&e.protocol),
        e.status,
        o(&e.user_agent),
        e.country
            .map_or("_".into(), |c| String::from_utf8_lossy(&c).into_owned()),
        o(&e.ja4),
    )
}

/// Each line of `file` read as `format`: `ok: ...`, `none`, or `err: reason`.
fn read(file: &str, format: Format) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/logs")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("fixture");
    let mut p = Parser::new(format);
    text.lines()
        .map(|l| match p.parse(l) {
            Ok(Some(e)) => format!("ok: {}", show(&e)),
            Ok(None) => "none".into(),
            Err(e) => format!("err: {e}"),
        })
        .collect()
}

fn detected(file: &str) -> Option<Format> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/logs")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("fixture");
    detect(&text.lines().collect::<Vec<_>>())
}

#[test]
fn nginx_combined() {
    assert_eq!(detected("nginx-combined.log"), Some(Format::Nginx));
    let expected: &[&str] = &[
        r#"ok: 971211336000000000 1000000000 127.0.0.1 [_] GET /apache_pb.gif _ HTTP/1.0 200 [Mozilla/4.08 [en] (Win98; I ;Nav)] _ _"#,
        r#"ok: 1796000400000000000 1000000000 2001:db8::7 [_] POST /login?next=%2F _ HTTP/1.1 302 [say "hi" \ 日] _ _"#,
        r#"ok: 1796032800000000000 1000000000 192.0.2.9 [_] GET /x?y=1 _ HTTP/1.1 404 [_] _ _"#,
        r#"err: no request line (`-`): the client sent no request before closing"#,
        r#"err: request line "\u{16}\u{3}\u{1}\u{2}\0\u{1}\0\u{1}�\u{3}\u{3}" is not `METHOD TARGET HTTP/x.y`"#,
        r#"ok: 1796032802000000000 1000000000 192.0.2.12 [_] GET / _ HTTP/1.1 200 [curl/8.5.0] _ _"#,
        r#"none"#,
        r#"err: time "31/Nov/2026:10:00:02 +0000" is not like 10/Oct/2000:13:55:36 -0700"#,
        r#"err: status "2000" is not a 3-digit number"#,
        r#"ok: 1796032803000000000 1000000000 192.0.2.15 [_] GET / _ _ 200 [_] _ _"#,
    ];
    assert_eq!(read("nginx-combined.log", Format::Nginx), expected);
}

#[test]
fn nginx_main() {
    assert_eq!(detected("nginx-main.log"), Some(Format::Nginx));
    let expected: &[&str] = &[
        r#"ok: 1796032800000000000 1000000000 10.0.0.2 [203.0.113.9, 10.0.0.1] GET /a _ HTTP/1.1 200 [Mozilla/5.0] _ _"#,
        r#"ok: 1796032800000000000 1000000000 10.0.0.2 [_] GET /b _ HTTP/2.0 200 [Mozilla/5.0] _ _"#,
    ];
    assert_eq!(read("nginx-main.log", Format::Nginx), expected);
}

#[test]
fn apache_combined() {
    assert_eq!(detected("apache-combined.log"), Some(Format::Apache));
    let expected: &[&str] = &[
        r#"ok: 971211336000000000 1000000000 127.0.0.1 [_] GET /apache_pb.gif _ HTTP/1.0 200 [Mozilla/4.08 [en] (Win98; I ;Nav)] _ _"#,
        r#"ok: 1796032800000000000 1000000000 name:client-7.example.net [_] GET /q?a="b" _ HTTP/1.1 200 [Bot "quoted" \ done] _ _"#,
        r#"err: status "-\"" is not a 3-digit number"#,
    ];
    assert_eq!(read("apache-combined.log", Format::Apache), expected);
}

#[test]
fn alb() {
    assert_eq!(detected("alb.log"), Some(Format::Alb));
    let expected: &[&str] = &[
        r#"ok: 1530570180186641000 1000 192.168.131.39 [_] GET / www.example.com HTTP/1.1 200 [curl/7.46.0] _ _"#,
        r#"ok: 1530570180244323000 1000 2001:db8::1 [_] GET /missing?x=1 www.example.com HTTP/1.1 404 [_] _ _"#,
        r#"err: request line "- - - " is not `METHOD TARGET HTTP/x.y`"#,
        r#"err: time "not-a-time" is not RFC 3339"#,
    ];
    assert_eq!(read("alb.log", Format::Alb), expected);
}

#[test]
fn cloudfront() {
    assert_eq!(detected("cloudfront.log"), Some(Format::CloudFront));
    let expected: &[&str] = &[
        r#"none"#,
        r#"none"#,
        r#"ok: 1575493351000000000 1000000000 192.0.2.100 [_] GET /index.html d111111abcdef8.cloudfront.net HTTP/2.0 200 [Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/78.0.3904.108 Safari/537.36] _ _"#,
        r#"ok: 1575493351000000000 1000000000 2001:db8::9 [198.51.100.1] POST /api/cart x?id=7&x=y shop.example HTTP/1.1 403 [curl/8.5.0] _ _"#,
        r#"none"#,
        r#"ok: 1575504000000000000 1000000000 192.0.2.101 [_] HEAD /health _ _ 0 [_] _ _"#,
        r#"err: 3 tab-separated fields; a CloudFront line has 6 (#Fields)"#,
    ];
    assert_eq!(read("cloudfront.log", Format::CloudFront), expected);
}

#[test]
fn aws_waf() {
    assert_eq!(detected("aws-waf.log"), Some(Format::AwsWaf));
    let expected: &[&str] = &[
        r#"ok: 1576280412771000000 1000000 1.1.1.1 [_] GET /myUri localhost HTTP/1.1 0 [curl/7.61.1] AU _"#,
        r#"ok: 1576280412772000000 1000000 2001:db8::5 [203.0.113.1] POST /search?q=a%20b shop.example HTTP/2.0 429 [Mozilla/5.0 "x"] JP t13d1516h2_8daaf6152771_02713d6af862"#,
        r#"err: not a AWS WAF JSON line: missing field `uri` at line 1 column 63"#,
        r#"err: not a AWS WAF JSON line: EOF while parsing an object at line 1 column 45"#,
    ];
    assert_eq!(read("aws-waf.log", Format::AwsWaf), expected);
}

#[test]
fn caddy() {
    assert_eq!(detected("caddy.log"), Some(Format::Caddy));
    let expected: &[&str] = &[
        r#"ok: 1646861401524103000 1000 127.0.0.1 [_] GET / localhost HTTP/2.0 200 [curl/7.82.0] _ _"#,
        r#"ok: 1796000400250000000 1000000 2001:db8::2 [198.51.100.3, 10.0.0.1] DELETE /cart/7?force=1 shop.example HTTP/1.1 204 [_] _ _"#,
        r#"err: not a Caddy JSON line: missing field `request` at line 1 column 69"#,
    ];
    assert_eq!(read("caddy.log", Format::Caddy), expected);
}

#[test]
fn sekisho_decision() {
    assert_eq!(detected("sekisho-decision.log"), Some(Format::Sekisho));
    let expected: &[&str] = &[
        r#"ok: 1796032800001000000 1000000 203.0.113.66 [_] GET /login shop.example HTTP/1.1 429 [curl/8.5.0] JP _"#,
        r#"ok: 1796032800002000000 1000000 2001:db8::3 [_] GET / _ HTTP/2 503 [_] _ t13d1516h2_8daaf6152771_02713d6af862"#,
        r#"err: timestamp "yesterday" is not RFC 3339"#,
    ];
    assert_eq!(read("sekisho-decision.log", Format::Sekisho), expected);
}

#[test]
fn a_format_nothing_reads_is_not_guessed() {
    assert_eq!(detect(&["hello world", "this is not a log"]), None);
    assert_eq!(detect(&[]), None);
}
