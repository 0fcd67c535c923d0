//! conn_flood: holds many client connections open against a proxy on loopback, for the
//! connection-layer measurements of `scripts/conn-bench.sh` (a load generator, not a test).
//!
//! usage: cargo run --release --example conn_flood -- MODE TARGET CONNECTIONS ADDRESSES SECONDS
//!   MODE         slowloris: a request head that never ends, one more header line per
//!                connection every 5 s, reconnecting when the proxy cuts it;
//!                idle: one full request each, its response read, then the connection held idle
//!   TARGET       the proxy, e.g. 127.0.0.1:8080 (loopback only)
//!   CONNECTIONS  connections to hold (spread evenly over the source addresses)
//!   ADDRESSES    source addresses 127.0.2.1, 127.0.2.2, ... (at most 250)
//!   SECONDS      how long to hold them
//!
//! Prints, each second, the connections open and how many the proxy closed or refused.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

fn connect(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&SocketAddr::new(from, 0).into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(2))?;
    Ok(s.into())
}

struct Held {
    from: IpAddr,
    stream: Option<TcpStream>,
    /// When to try again after a failed open (once a second at most).
    retry_at: Instant,
}

fn open(mode: &str, from: IpAddr, to: SocketAddr) -> Option<TcpStream> {
    let mut s = connect(from, to).ok()?;
    if mode == "idle" {
        s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n").ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).ok()?;
        if n == 0 || !buf.starts_with(b"HTTP/1.1 200") {
            return None;
        }
    } else {
        s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n").ok()?;
    }
    s.set_nonblocking(true).ok()?;
    Some(s)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, target, conns, addrs, secs] = args.as_slice() else {
        eprintln!("usage: conn_flood slowloris|idle TARGET CONNECTIONS ADDRESSES SECONDS");
        std::process::exit(2);
    };
    let parse = |s: &str, what: &str| -> u64 {
        s.parse().unwrap_or_else(|_| {
            eprintln!("conn_flood: {what} {s:?} is not a number");
            std::process::exit(2)
        })
    };
    let to: SocketAddr = target.parse().unwrap_or_else(|_| {
        eprintln!("conn_flood: {target:?} is not an address");
        std::process::exit(2)
    });
    if !to.ip().is_loopback() || !matches!(mode.as_str(), "slowloris" | "idle") {
        eprintln!("conn_flood: loopback targets only; mode slowloris or idle");
        std::process::exit(2);
    }
    let (n, addrs, secs) = (
        parse(conns, "CONNECTIONS"),
        parse(addrs, "ADDRESSES").clamp(1, 250),
        parse(secs, "SECONDS"),
    );
    let source = |i: u64| IpAddr::V4(Ipv4Addr::new(127, 0, 2, (i % addrs) as u8 + 1));
    let mut held: Vec<Held> = (0..n)
        .map(|i| Held {
            from: source(i),
            stream: None,
            retry_at: Instant::now(),
        })
        .collect();
    let start = Instant::now();
    let (mut cut, mut refused) = (0u64, 0u64);
    let mut next_trickle = Instant::now() + Duration::from_secs(5);
    let mut next_report = Instant::now() + Duration::from_secs(1);
    while start.elapsed() < Duration::from_secs(secs) {
        let trickle = mode == "slowloris" && Instant::now() >= next_trickle;
        if trickle {
            next_trickle += Duration::from_secs(5);
        }
        let mut buf = [0u8; 256];
        for h in &mut held {
            match &mut h.stream {
                None if Instant::now() < h.retry_at => {}
                None => {
                    h.stream = open(mode, h.from, to);
                    if h.stream.is_none() {
                        refused += 1;
                        h.retry_at = Instant::now() + Duration::from_secs(1);
                    }
                }
                Some(s) => {
                    let gone = match s.read(&mut buf) {
                        Ok(_) => true,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            trickle && s.write_all(b"X-a: b\r\n").is_err()
                        }
                        Err(_) => true,
                    };
                    if gone {
                        h.stream = None;
                        cut += 1;
                    }
                }
            }
        }
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(1);
            let open = held.iter().filter(|h| h.stream.is_some()).count();
            println!(
                "t={:>3}s open={open} cut={cut} failed_opens={refused}",
                start.elapsed().as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
