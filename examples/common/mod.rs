//! Shared by the memory examples.

/// The process's resident set size, from /proc/self/statm (Linux only).
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("statm rss field");
    pages * 4096
}
