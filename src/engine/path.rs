//! The path rules see: percent-escapes of unreserved characters decoded, repeated slashes
//! merged, `.` and `..` segments resolved, so that `/%77p-login.php`, `//wp-admin` and
//! `/x/../.env` meet the rules written for `/wp-login.php`, `/wp-admin` and `/.env`.
//!
//! The request sent upstream is not changed. A path with nothing to normalise (almost every
//! legitimate one) is returned as is, without allocating.

use std::borrow::Cow;

/// The normalised form of `path` (without query string).
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    let b = path.as_bytes();
    let suspicious = b.contains(&b'%')
        || b.windows(2).any(|w| w == b"//" || w == b"/.")
        || !path.starts_with('/');
    if !suspicious {
        return Cow::Borrowed(path);
    }
    // 1. decode %XX where XX is an unreserved character (RFC 3986 2.3); keep other escapes
    //    (notably %2F) as they are, uppercased.
    let mut decoded = String::with_capacity(path.len() + 1);
    if !path.starts_with('/') {
        decoded.push('/');
    }
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                let c = h * 16 + l;
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                    decoded.push(char::from(c));
                } else {
                    decoded.push('%');
                    decoded.push(char::from(b[i + 1].to_ascii_uppercase()));
                    decoded.push(char::from(b[i + 2].to_ascii_uppercase()));
                }
                i += 3;
                continue;
            }
        }
        // `path` is a &str: copy whole characters
        let ch_len = utf8_len(b[i]);
        decoded.push_str(&path[i..(i + ch_len).min(path.len())]);
        i += ch_len;
    }
    // 2. merge slashes and resolve dot segments
    let mut out: Vec<&str> = Vec::new();
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut norm = String::with_capacity(decoded.len());
    for s in &out {
        norm.push('/');
        norm.push_str(s);
    }
    if norm.is_empty() || (trailing && !norm.ends_with('/')) {
        norm.push('/');
    }
    Cow::Owned(norm)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_path;
    use std::borrow::Cow;

    #[test]
    fn plain_paths_are_borrowed() {
        for p in ["/", "/login", "/a/b.c/d", "/search", "/wp-admin/x.php"] {
            assert!(matches!(normalize_path(p), Cow::Borrowed(_)), "{p}");
        }
    }

    #[test]
    fn evasions_are_normalised() {
        let cases = [
            ("/%77p-login.php", "/wp-login.php"),
            ("//wp-admin", "/wp-admin"),
            ("/x/../.env", "/.env"),
            ("/./.env", "/.env"),
            ("/a/./b//c/", "/a/b/c/"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/a%2Fb", "/a%2Fb"),
            ("/a%2fb", "/a%2Fb"),
            ("/%2e%2e/%2e%65nv", "/.env"),
            ("/a/..", "/"),
            ("/a/b/..", "/a/"),
            ("/%", "/%"),
            ("/%4", "/%4"),
            ("/%zz", "/%zz"),
            ("/caf\u{e9}/%41", "/caf\u{e9}/A"),
            ("*", "/*"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_path(input), want, "{input}");
        }
    }
}
