//! A tiny HTTP/1.1 origin for demos and tests (`sekisho demo-origin`): not part of the proxy.
//!
//! `GET /anything` answers `200 ok`; `/status/NNN` (and `/status/NNN/anything`) answers status NNN; a request body is echoed
//! back. Every response carries `x-origin: sekisho-demo`, and `x-origin-host` / `x-origin-xff` /
//! `x-origin-proto` / `x-origin-request-id` echo what the origin saw, so tests can check what the proxy forwarded. Requests are counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 8 * 1024 * 1024;

/// Serves connections from `listener` until the task is dropped; `hits` counts requests.
pub async fn serve(listener: TcpListener, hits: Arc<AtomicU64>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let hits = hits.clone();
        tokio::spawn(async move {
            let _ = connection(stream, hits).await;
        });
    }
}

async fn connection(mut stream: TcpStream, hits: Arc<AtomicU64>) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        // Read until a whole request head is buffered.
        let (head_len, method, path, host, xff, proto, request_id, content_length, close) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let find = |name: &str| {
                        req.headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case(name))
                            .map(|h| String::from_utf8_lossy(h.value).into_owned())
                    };
                    let content_length = find("content-length")
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    let close = find("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
                        || req.version == Some(0);
                    break (
                        n,
                        req.method.unwrap_or("GET").to_string(),
                        req.path.unwrap_or("/").to_string(),
                        find("host").unwrap_or_default(),
                        find("x-forwarded-for").unwrap_or_default(),
                        find("x-forwarded-proto").unwrap_or_default(),
                        find("x-request-id").unwrap_or_default(),
                        content_length,
                        close,
                    );
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
                _ => return Ok(()),
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        if content_length > MAX_BODY {
            return Ok(());
        }
        while buf.len() < head_len + content_length {
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body: Vec<u8> = buf[head_len..head_len + content_length].to_vec();
        buf.drain(..head_len + content_length);
        hits.fetch_add(1, Ordering::Relaxed);

        let status: u16 = path
            .strip_prefix("/status/")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .filter(|s| (200..=599).contains(s))
            .unwrap_or(200);
        let reply: Vec<u8> = if body.is_empty() {
            b"ok\n".to_vec()
        } else {
            body
        };
        let head_only = method == "HEAD";
        let mut out = format!(
            "HTTP/1.1 {status} {}\r\ncontent-length: {}\r\ncontent-type: text/plain\r\nx-origin: sekisho-demo\r\nx-origin-host: {}\r\nx-origin-xff: {}\r\nx-origin-proto: {}\r\nx-origin-request-id: {}\r\n{}\r\n",
            http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Status"),
            reply.len(),
            sanitize(&host),
            sanitize(&xff),
            sanitize(&proto),
            sanitize(&request_id),
            if close { "connection: close\r\n" } else { "" },
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(&reply);
        }
        stream.write_all(&out).await?;
        if close {
            return Ok(());
        }
    }
}

fn sanitize(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}
