//! Running out of descriptors anyway (the limit lowered under the running process, below what
//! `connections.max_open` was sized for at start): the proxy keeps what it has, counts the
//! failed accepts, logs one line a second at most instead of one per failure, and serves again
//! by itself once descriptors free up.

mod support;

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{free_port, get_from, metric_value, Origin, Run};

/// A guard against a hang, not a timing claim.
const GUARD: Duration = Duration::from_secs(30);

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn out_of_descriptors_it_counts_logs_once_a_second_and_recovers() {
    let origin = Origin::start();
    let (port, admin) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let mut run = Run::start(
        &format!(
            "listen: [\"127.0.0.1:{port}\"]\nadmin: {{ listen: \"127.0.0.1:{admin}\" }}\nthreads: 1\ngrace_period: 0s\ngraceful_shutdown_timeout: 1s\n{}connections: {{ per_client: {{ max_open: off, rate: off }} }}\n",
            origin.upstreams()
        ),
        Some("warn"),
    );
    let proxy = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let admin_addr = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
    assert!(run.wait_listening(&[proxy, admin_addr], GUARD));
    assert_eq!(get_from(None, proxy, "/").status, 200);
    let pid = run.pid();
    // room for a few more descriptors than it holds now
    let limit = open_fds(pid) + 4;
    let status = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .expect("prlimit");
    assert!(status.success());
    // a flood of connections: the first few are accepted, then accept() fails (EMFILE) and
    // the rest wait in the listen queue
    let flood: Vec<TcpStream> = (0..40)
        .filter_map(|_| TcpStream::connect(proxy).ok())
        .collect();
    let start = Instant::now();
    while open_fds(pid) < limit {
        assert!(start.elapsed() < GUARD, "the descriptors never ran out");
        std::thread::sleep(Duration::from_millis(20));
    }
    // the attack lasts a few seconds (Pingora retries an accept each second)
    std::thread::sleep(Duration::from_secs(3));
    drop(flood);
    // it serves again by itself
    let start = Instant::now();
    loop {
        let ok = support::Conn::open(None, proxy)
            .and_then(|mut c| c.get("/"))
            .is_ok_and(|r| r.status == 200);
        if ok {
            break;
        }
        assert!(start.elapsed() < GUARD, "never served again");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = get_from(None, admin_addr, "/metrics").text();
    let failed = metric_value(&text, "sekisho_accept_errors_total", &[]).expect("exported");
    assert!(failed >= 1.0, "{text}");
    run.signal("TERM");
    let (_, stderr) = run.wait_exit(GUARD);
    let lines = stderr
        .lines()
        .filter(|l| l.contains("cannot accept new connections"))
        .count();
    assert!(lines >= 1, "no line said so:\n{stderr}");
    assert!(
        lines as f64 <= failed,
        "{lines} lines for {failed} failures:\n{stderr}"
    );
    assert!(
        !stderr.contains("Accept() failed"),
        "Pingora's own line per failure came through:\n{stderr}"
    );
    assert!(stderr.contains("Too many open files"), "{stderr}");
}
