//! The fuzz targets' bodies: each takes arbitrary bytes and feeds them to one parser that
//! outside input reaches, checking its properties; none may panic. `fuzz/` (cargo-fuzz, nightly)
//! drives them with libFuzzer; `tests/fuzz_replay.rs` (stable) replays every committed seed
//! and every input that ever crashed one, so `cargo test` keeps them fixed. [`TARGETS`] names
//! them all, and [`run`] dispatches by name.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// Every target, by the name of its folder under `fuzz/corpus/` and `fuzz/fuzz_targets/`.
pub const TARGETS: [&str; 8] = [
    "config_yaml",
    "list_file",
    "forwarded_for",
    "path",
    "country",
    "admin_query",
    "state_file",
    "client_hello",
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
