//! A zero-downtime binary upgrade over real sockets: `sekisho run --upgrade` takes the listening
//! sockets over from the running process (SIGQUIT), under load, without a failed request or a
//! refused connection, and the bans come along.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{get_from, wait_child, Conn, Origin, Proxy};

/// What the load saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    /// Answers other than 200, and requests that got no answer.
    failed: AtomicU64,
    /// Connections that could not be opened.
    refused: AtomicU64,
    /// Kept-alive connections the old process closed while idle, as it stopped: the request
    /// sent on one got no byte back and was sent again on a new connection, as HTTP clients do
    /// with an idempotent request (RFC 9112 §9.3.1). Counted, not failed.
    retried: AtomicU64,
}

/// Requests until `stop`: each on a new connection (`keep_alive` false), or all on one
/// kept-alive connection, reopened when the server closes it.
fn load(addr: std::net::SocketAddr, keep_alive: bool, stop: Arc<AtomicBool>, t: Arc<Tally>) {
    let mut conn: Option<Conn> = None;
    while !stop.load(Ordering::SeqCst) {
        let reused = conn.is_some();
        if conn.is_none() {
            match Conn::open(None, addr) {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    eprintln!("connect: {e}");
                    t.refused.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        match c.get("/") {
            Ok(r) if r.status == 200 => {
                t.ok.fetch_add(1, Ordering::SeqCst);
                let close = r
                    .header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                if !keep_alive || close {
                    conn = None;
                }
            }
            Ok(r) => {
                eprintln!("status {}", r.status);
                t.failed.fetch_add(1, Ordering::SeqCst);
                conn = None;
            }
            Err(_) if reused => {
                // closed while idle: send it again on a new connection
                t.retried.fetch_add(1, Ordering::SeqCst);
                conn = None;
            }
            Err(e) => {
                eprintln!("request: {e}");
                t.failed.fetch_add(1, Ordering::SeqCst);
                conn = None;
            }
        }
    }
}

#[test]
fn an_upgrade_under_load_drops_no_request_refuses_no_connection_and_keeps_the_bans() {
    let origin = Origin::start();
    let mut proxy = Proxy::start(&format!(
        "{}grace_period: 20s\nconnections: {{ per_client: {{ rate: off }} }}\n",
        origin.upstreams()
    ));
    let ban = Conn::open(None, proxy.admin_addr())
        .and_then(|mut c| c.request("POST", "/admin/bans?net=127.0.0.5&ttl=1h", &[], b""))
        .expect("POST /admin/bans");
    assert_eq!(ban.status, 200, "{}", ban.text());
    assert_eq!(get_from(Some("127.0.0.5"), proxy.addr(), "/").status, 403);

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let loaders: Vec<_> = [false, false, true, true]
        .into_iter()
        .map(|keep_alive| {
            let (stop, t, addr) = (stop.clone(), tally.clone(), proxy.addr());
            std::thread::spawn(move || load(addr, keep_alive, stop, t))
        })
        .collect();
    let wait_for_more = |t: &Tally, n: u64, what: &str| {
        let from = t.ok.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(30);
        while t.ok.load(Ordering::SeqCst) < from + n {
            assert!(Instant::now() < deadline, "no load served {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_for_more(&tally, 100, "before the upgrade");

    let mut old = proxy.upgrade();
    let exit = wait_child(&mut old, Duration::from_secs(60)).expect("the old process exited");
    assert!(exit.success(), "old process: {exit:?}");
    // only the new process can answer now
    wait_for_more(&tally, 200, "after the old process exited");
    stop.store(true, Ordering::SeqCst);
    for l in loaders {
        l.join().expect("load thread");
    }
    let (ok, failed, refused, retried) = (
        tally.ok.load(Ordering::SeqCst),
        tally.failed.load(Ordering::SeqCst),
        tally.refused.load(Ordering::SeqCst),
        tally.retried.load(Ordering::SeqCst),
    );
    eprintln!("upgrade under load: {ok} ok, {failed} failed, {refused} refused, {retried} kept-alive connections closed idle and retried");
    assert_eq!((failed, refused), (0, 0), "{ok} ok, {retried} retried");
    assert!(proxy.alive(), "the new process runs");
    // the ban made in the old process holds in the new one
    assert_eq!(get_from(Some("127.0.0.5"), proxy.addr(), "/").status, 403);
    assert_eq!(get_from(None, proxy.addr(), "/").status, 200);
    let bans = get_from(None, proxy.admin_addr(), "/admin/bans");
    assert!(bans.text().contains("127.0.0.5/32"), "{}", bans.text());
}

/// A connection the old process accepted just before the hand-over, whose request had not come
/// yet, is still answered (`Connection: close`) by the old process: it does not exit, nor close
/// the connection, while a request it accepted the connection for is on its way.
#[test]
fn a_connection_accepted_before_the_upgrade_gets_its_answer_from_the_old_process() {
    let origin = Origin::start();
    let mut proxy = Proxy::start(&format!("{}grace_period: 20s\n", origin.upstreams()));
    let mut early = Conn::open(None, proxy.addr()).expect("connect");
    // the old process accepts it (the next request on a new connection is answered after it)
    assert_eq!(get_from(None, proxy.addr(), "/").status, 200);
    let mut old = proxy.upgrade();
    // the new process serves: the sockets were handed over and the old one is stopping
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "the new process never answered");
        let pid = get_from(None, proxy.admin_addr(), "/admin/status");
        if pid.status == 200 && pid.text().contains(&format!("\"pid\": {},", proxy.pid())) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        old.try_wait().expect("try_wait").is_none(),
        "the old process exited with a connection it accepted unanswered"
    );
    let r = early
        .get("/")
        .expect("an answer on the connection accepted before the upgrade");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("connection"),
        Some("close"),
        "the old process lets it go after"
    );
    let exit = wait_child(&mut old, Duration::from_secs(60)).expect("the old process exited");
    assert!(exit.success(), "old process: {exit:?}");
}
