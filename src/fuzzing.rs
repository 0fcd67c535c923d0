//! The fuzz targets' bodies: each takes arbitrary bytes and feeds them to one parser that
//! outside input reaches, checking its properties; none may panic. `fuzz/` (cargo-fuzz, nightly)
//! drives them with libFuzzer; `tests/fuzz_replay.rs` (stable) replays every committed seed
//! and every input that ever crashed one, so `cargo test` keeps them fixed. [`TARGETS`] names
//! them all, and [`run`] dispatches by name.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

mod request;
pub use request::request;

/// Every target, by the name of its folder under `fuzz/corpus/` and `fuzz/fuzz_targets/`.
pub const TARGETS: [&str; 9] = [
    "config_yaml",
    "list_file",
    "forwarded_for",
    "path",
    "country",
    "admin_query",
    "state_file",
    "client_hello",
    "request",
];

/// Runs target `name` on `data`; `false` for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "config_yaml" => config_yaml(data),
        "list_file" => list_file(data),
        "forwarded_for" => forwarded_for(data),
        "path" => path(data),
        "country" => country(data),
        "admin_query" => admin_query(data),
        "state_file" => state_file(data),
        "client_hello" => client_hello(data),
        "request" => request(data),
        _ => return false,
    }
    true
}

/// A config file, through the same validation `sekisho check` runs. Inputs naming device or
/// kernel files are skipped (a list `files: [/dev/zero]` would read forever: the operator's
/// own choice, not a parser bug); relative paths resolve under a folder that does not exist.
pub fn config_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if ["/dev", "/proc", "/sys"].iter().any(|p| text.contains(p)) {
        return;
    }
    let slots = crate::engine::SlotRegistry::default();
    let _ = crate::config::parse(text, Path::new("/nonexistent/fuzz.yaml"), &slots);
}

/// A list file (`lists.*.files`); every network it accepts prints and parses back to itself.
pub fn list_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(nets) = crate::iplist::parse_list(&text) {
        for net in nets {
            let again = crate::iplist::parse_net(&net.to_string());
            assert_eq!(again, Ok(net), "{net} does not parse back");
        }
    }
}

/// `X-Forwarded-For` from a peer chosen by the first byte (trusted or not), against a trusted
/// set of 10.0.0.0/8 and 127.0.0.0/8: the client is the peer itself unless the peer is
/// trusted, and never a trusted address unless every hop is one.
pub fn forwarded_for(data: &[u8]) {
    let Some((&first, value)) = data.split_first() else {
        return;
    };
    let Ok(value) = http::HeaderValue::from_bytes(value) else {
        return;
    };
    let peer = IpAddr::V4(if first % 2 == 0 {
        Ipv4Addr::new(10, 0, 0, first)
    } else {
        Ipv4Addr::new(203, 0, 113, first)
    });
    let trusted: Vec<ipnet::IpNet> = ["10.0.0.0/8", "127.0.0.0/8"]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    let policy = crate::config::ClientIp {
        trusted_proxies: crate::iplist::IpSet::new(trusted.clone()),
        header: http::header::HeaderName::from_static("x-forwarded-for"),
        ipv6_prefix: 64,
        trusted,
    };
    let mut headers = http::HeaderMap::new();
    headers.insert("x-forwarded-for", value);
    let client = crate::proxy::resolve(peer, &headers, &policy);
    if !policy.trusted_proxies.contains(peer) {
        assert_eq!(client.ip, peer, "an untrusted peer's header was believed");
    }
}

/// Path normalisation: normalising twice changes nothing.
pub fn path(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let once = crate::engine::normalize_path(&text);
    let twice = crate::engine::normalize_path(&once);
    assert_eq!(once, twice, "normalising {text:?} twice changed it");
    // Whatever a deny rule for `once` matches must still match it dressed in any encoding the
    // origin would undo: escaped characters, doubled slashes, `.` and `x/..` segments. The
    // input's bytes, read again, choose the dressing.
    let dressed = dress(&once, data);
    assert_eq!(
        crate::engine::normalize_path(&dressed),
        once,
        "{dressed:?}, an encoding of {once:?}, normalises to something else"
    );
}

/// `norm` (a normalised path) re-encoded the ways an origin undoes, choices taken from `seed`.
fn dress(norm: &str, seed: &[u8]) -> String {
    let mut choices = seed.iter().rev().cycle().copied();
    let mut pick = || choices.next().unwrap_or(0);
    let mut out = String::with_capacity(norm.len() * 3);
    let b = norm.as_bytes();
    let mut i = 0;
    for ch in norm.chars() {
        let at = i;
        i += ch.len_utf8();
        // an escape norm kept (%2F...) is left whole: re-encoding its `%` is double encoding
        let in_escape = b[..at].ends_with(b"%")
            || (at >= 2 && b[at - 2] == b'%' && b[at - 1].is_ascii_hexdigit());
        let how = pick();
        if ch == '/' {
            out.push('/');
            match how % 8 {
                0 => out.push('/'),
                1 => out.push_str("./"),
                2 => out.push_str("%2e/"),
                3 => out.push_str("x/../"),
                // `..` climbs: a segment for it to take away
                4 => out.push_str("y/%2E%2e/"),
                _ => {}
            }
            continue;
        }
        let encode =
            !in_escape && how % 3 == 0 && (!ch.is_ascii() || crate::engine::path_decodes(ch as u8));
        if encode {
            let mut buf = [0u8; 4];
            for byte in ch.encode_utf8(&mut buf).bytes() {
                if how & 0x40 == 0 {
                    out.push_str(&format!("%{byte:02X}"));
                } else {
                    out.push_str(&format!("%{byte:02x}"));
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// A country header value.
pub fn country(data: &[u8]) {
    if let Some(c) = crate::engine::Country::parse(data) {
        assert_eq!(
            crate::engine::Country::parse(c.as_str().as_bytes()),
            Some(c)
        );
    }
}

/// An admin query string (`/admin/top?by=...`, `/admin/bans?net=...`).
pub fn admin_query(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::admin::parse_query(&text, &["by", "window", "n", "net", "ttl", "reason"]);
}

/// The ban state file, and each of its records turned back into a ban.
pub fn state_file(data: &[u8]) {
    let Ok(state) = serde_json::from_slice::<crate::defense::store::StateFile>(data) else {
        return;
    };
    let clocks = crate::defense::store::Clocks {
        mono: 1_000_000_000_000,
        unix: 1_796_160_000,
    };
    for record in &state.bans {
        let _ = record.to_ban(&clocks);
    }
}

/// A TLS ClientHello, to its JA4 fingerprint.
pub fn client_hello(data: &[u8]) {
    if let Ok(hello) = crate::tls::ja4::parse_record(data) {
        let ja4 = crate::tls::ja4::ja4(&hello);
        assert_eq!(ja4.len(), 36, "{ja4}");
    }
}

#[cfg(test)]
mod tests {
    use super::dress;
    use crate::engine::normalize_path;

    #[test]
    fn the_dressing_changes_the_path_and_normalising_undoes_it() {
        let norm = "/caf\u{e9}/wp-login.php/";
        let mut changed = 0;
        for seed in 0u8..=255 {
            let dressed = dress(norm, &[seed, seed.wrapping_mul(7), 3, 0, 1, 2, 4]);
            changed += usize::from(dressed != norm);
            assert_eq!(normalize_path(&dressed), norm, "{dressed}");
        }
        assert!(changed > 200, "only {changed} of 256 dressings differ");
        // each way of dressing is there
        let mut x = 1u32;
        let all: String = (0..2000)
            .map(|_| {
                let seed: Vec<u8> = (0..9)
                    .map(|_| {
                        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        (x >> 16) as u8
                    })
                    .collect();
                dress(norm, &seed)
            })
            .collect();
        for piece in [
            "//",
            "/./",
            "%2e/",
            "x/../",
            "y/%2E%2e/",
            "%C3%A9",
            "%c3%a9",
            "%2D",
        ] {
            assert!(all.contains(piece), "no dressing has {piece}");
        }
    }
}
