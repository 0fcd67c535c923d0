//! A minimal HTTP/1.1 client for the admin listener, for `sekisho attack` and friends: one
//! request, `Connection: close`, read to the end. The admin listener is on loopback; nothing
//! here is meant for the open network.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Sends `method path` to the admin listener at `addr`; returns (status, body).
pub fn request(addr: SocketAddr, method: &str, path: &str) -> Result<(u16, String), String> {
    let timeout = Duration::from_secs(10);
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot reach the admin listener at {addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes())
        .map_err(|e| format!("{addr}: {e}"))?;
    // Read the head, then exactly Content-Length bytes (or to the end without one).
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    let bad = || format!("{addr}: not an HTTP response");
    let (status, body_at, length) = loop {
        let n = s.read(&mut chunk).map_err(|e| format!("{addr}: {e}"))?;
        if n == 0 {
            return Err(bad());
        }
        raw.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(at)) = resp.parse(&raw) {
            let length = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| {
                    std::str::from_utf8(h.value)
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                });
            break (resp.code.ok_or_else(bad)?, at, length);
        }
    };
    loop {
        if length.is_some_and(|l| raw.len() >= body_at + l) {
            break;
        }
        let n = s.read(&mut chunk).map_err(|e| format!("{addr}: {e}"))?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..n]);
    }
    let end = length.map_or(raw.len(), |l| (body_at + l).min(raw.len()));
    Ok((
        status,
        String::from_utf8_lossy(&raw[body_at..end]).into_owned(),
    ))
}
