//! A graceful stop (`SIGTERM`) over real sockets: it lasts as long as the requests in flight,
//! not the whole `grace_period`, and saves the ban state file on the way out.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::{Conn, Proxy};

/// Far longer than any wait below: an exit seen before it ends did not wait it out.
const GRACE: &str = "grace_period: 20s\n";
/// How long the tests wait for the exit: a guard against a hang, shorter than [`GRACE`].
const EXIT_WITHIN: Duration = Duration::from_secs(10);

static ARRIVED: AtomicUsize = AtomicUsize::new(0);
static RELEASED: AtomicUsize = AtomicUsize::new(0);

/// An origin that answers each request once the test releases it (bounded: 20 s).
fn slow_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream);
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                ARRIVED.fetch_add(1, Ordering::SeqCst);
                let deadline = Instant::now() + Duration::from_secs(20);
                while RELEASED.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let _ = r
                    .get_mut()
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow");
            });
        }
    });
    addr
}

fn sigterm(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -TERM");
}

#[test]
fn sigterm_exits_once_the_slow_request_in_flight_is_answered_not_after_the_grace_period() {
    let origin = slow_origin();
    let mut proxy = Proxy::start(&format!("upstreams: [\"{origin}\"]\n{GRACE}"));
    let addr = proxy.addr();
    let in_flight = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
            .expect("send");
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while ARRIVED.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the request never reached the origin"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    sigterm(proxy.pid());
    // the stop has begun once the listener is closed; the request is still held upstream
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_ok() {
        assert!(Instant::now() < deadline, "still listening after SIGTERM");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(proxy.alive(), "exited with a request in flight");
    RELEASED.store(1, Ordering::SeqCst);
    let answer = in_flight.join().expect("client");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.ends_with("slow"), "{answer:?}");
    let exit = proxy
        .wait_exit(EXIT_WITHIN)
        .expect("exited once nothing was in flight, well within grace_period");
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn sigterm_with_nothing_in_flight_exits_at_once_and_saves_the_bans() {
    let origin = support::Origin::start();
    let mut proxy = Proxy::start(&format!("{}{GRACE}", origin.upstreams()));
    // an idle keep-alive client does not hold the stop up
    let mut idle = Conn::open(None, proxy.addr()).expect("connect");
    assert_eq!(idle.get("/").expect("first").status, 200);
    let added = Conn::open(None, proxy.admin_addr())
        .and_then(|mut c| c.request("POST", "/admin/bans?net=192.0.2.7&ttl=1h", &[], b""))
        .expect("POST /admin/bans");
    assert_eq!(added.status, 200, "{}", added.text());
    sigterm(proxy.pid());
    let exit = proxy
        .wait_exit(EXIT_WITHIN)
        .expect("exited well within grace_period");
    assert!(exit.success(), "{exit:?}");
    let state = std::fs::read_to_string(proxy.dir.path().join("sekisho-bans.json"))
        .expect("state file saved");
    assert!(state.contains("192.0.2.7"), "{state}");
}
