//! The path rules see: percent-escapes of the characters a path may carry as they are
//! decoded (unreserved, sub-delims, `:`, `@`, and UTF-8), repeated slashes merged, `.` and `..` segments resolved, so that `/%77p-login.php`, `//wp-admin` and
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
    // 1. decode %XX where the character may stand in a path segment as it is (see
    //    [`decodes`]) or the escapes spell one UTF-8 character; keep the others (notably
    //    %2F) as they are, uppercased. A `%` that starts no escape is written `%25`: kept
    //    bare, it could join the decoded characters after it into a new escape (`%%44e`
    //    would become `%De`), and a second pass would read it differently.
    let mut decoded = String::with_capacity(path.len() + 1);
    if !path.starts_with('/') {
        decoded.push('/');
    }
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let Some(c) = escape_at(b, i) else {
                decoded.push_str("%25");
                i += 1;
                continue;
            };
            if c.is_ascii() && decodes(c) {
                decoded.push(char::from(c));
                i += 3;
                continue;
            }
            if let Some((ch, used)) = utf8_escapes(b, i, c) {
                decoded.push(ch);
                i += used;
                continue;
            }
            decoded.push('%');
            decoded.push(char::from(b[i + 1].to_ascii_uppercase()));
            decoded.push(char::from(b[i + 2].to_ascii_uppercase()));
            i += 3;
            continue;
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

/// Whether the ASCII character `c`, percent-encoded in a path, is decoded for matching: the
/// characters a path segment may hold as they are (RFC 3986 `pchar`: unreserved, sub-delims,
/// `:` and `@`), which every origin reads the same either way. `/`, `?`, `#`, `%`, space and
/// controls stay encoded: decoding them would change where the path ends or splits.
pub fn decodes(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

/// The byte that the escape `%XX` at `b[i]` stands for.
fn escape_at(b: &[u8], i: usize) -> Option<u8> {
    match (
        b.get(i + 1).copied().and_then(hex),
        b.get(i + 2).copied().and_then(hex),
    ) {
        (Some(h), Some(l)) => Some(h * 16 + l),
        _ => None,
    }
}

/// The character that the run of escapes at `b[i]` (its first byte `lead`) spells in UTF-8,
/// and how many input bytes it took; `None` if they spell none (an invalid or overlong
/// sequence stays encoded).
fn utf8_escapes(b: &[u8], i: usize, lead: u8) -> Option<(char, usize)> {
    let n = match lead {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return None,
    };
    let mut bytes = [lead, 0, 0, 0];
    for (k, slot) in bytes.iter_mut().enumerate().take(n).skip(1) {
        let at = i + 3 * k;
        if b.get(at) != Some(&b'%') {
            return None;
        }
        *slot = escape_at(b, at)?;
    }
    let ch = std::str::from_utf8(&bytes[..n]).ok()?.chars().next()?;
    Some((ch, 3 * n))
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
            ("/%", "/%25"),
            ("/%4", "/%254"),
            ("/%zz", "/%25zz"),
            ("/a./]b%%44e?e", "/a./]b%25De?e"),
            ("/%%41", "/%25A"),
            ("/caf\u{e9}/%41", "/caf\u{e9}/A"),
            ("/caf%C3%A9", "/caf\u{e9}"),
            ("/caf%c3%a9/%E2%82%AC", "/caf\u{e9}/\u{20ac}"),
            ("/%C3", "/%C3"),
            ("/%C3%41", "/%C3A"),
            ("/%C0%AF", "/%C0%AF"),
            ("/%ff", "/%FF"),
            ("/api/users%3Asearch/%40me", "/api/users:search/@me"),
            ("/a%3fb%23c%20d%00", "/a%3Fb%23c%20d%00"),
            ("/admin%3B/x", "/admin;/x"),
            ("*", "/*"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_path(input), want, "{input}");
        }
    }
}
