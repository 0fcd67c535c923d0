//! Test support: a counting origin, the real `sekisho` binary on ephemeral loopback ports, and
//! a small HTTP/1.1 client that can bind its source address (127.0.0.2, 127.0.0.3, ...).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The demo origin on 127.0.0.1, in its own runtime thread; counts the requests it served.
pub struct Origin {
    pub addr: SocketAddr,
    hits: Arc<AtomicU64>,
}

impl Origin {
    pub fn start() -> Self {
        let std_listener = TcpListener::bind("127.0.0.1:0").expect("bind origin");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("origin addr");
        let hits = Arc::new(AtomicU64::new(0));
        let h = hits.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("origin runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
                sekisho::origin::serve(listener, h).await;
            });
        });
        Self { addr, hits }
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// The config line naming this origin as the only upstream.
    pub fn upstreams(&self) -> String {
        format!("upstreams: [\"{}\"]\n", self.addr)
    }
}

/// A port that was free a moment ago on `ip`.
pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The real binary, running a config written for the test.
pub struct Proxy {
    child: Child,
    pub port: u16,
    pub admin_port: u16,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Proxy {
    /// Starts `sekisho run` with `body` (the config without `listen` and `admin`), listening on
    /// 127.0.0.1 and [::1] at one ephemeral port, the admin listener at another. Retries with
    /// other ports if one was taken in between.
    pub fn start(body: &str) -> Self {
        Self::start_with(body, |_| {})
    }

    /// Like [`start`](Self::start), with a hook to write extra files (list files) first.
    pub fn start_with(body: &str, prepare: impl Fn(&std::path::Path)) -> Self {
        Self::launch(body, prepare, None)
    }

    /// Like [`start`](Self::start), the process limited to `nofile` descriptors (soft and
    /// hard, through util-linux's `prlimit`).
    pub fn start_limited(body: &str, nofile: u64) -> Self {
        Self::launch(body, |_| {}, Some(nofile))
    }

    fn launch(body: &str, prepare: impl Fn(&std::path::Path), nofile: Option<u64>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        prepare(dir.path());
        let config = dir.path().join("sekisho.yaml");
        for _attempt in 0..5 {
            let port = free_port("127.0.0.1");
            let admin_port = free_port("127.0.0.1");
            std::fs::write(&config, config_text(port, admin_port, body)).expect("write config");
            if let Some(child) = spawn(&config, port, admin_port, nofile) {
                return Self {
                    child,
                    port,
                    admin_port,
                    dir,
                    config,
                };
            }
        }
        panic!("sekisho did not start (see its stderr above)");
    }

    /// Kills the process without warning (as a crash or `kill -9` would) and starts it again
    /// on the same config and ports.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for _attempt in 0..50 {
            if let Some(child) = spawn(&self.config, self.port, self.admin_port, None) {
                self.child = child;
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("sekisho did not start again on port {}", self.port);
    }

    /// Replaces the config (same listeners) by writing a temporary file and renaming it into
    /// place, as editors and config management do.
    pub fn rewrite(&self, body: &str) {
        write_atomically(&self.config, &config_text(self.port, self.admin_port, body));
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn addr_v6(&self) -> SocketAddr {
        SocketAddr::new("::1".parse().expect("::1"), self.port)
    }

    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.admin_port))
    }

    /// `GET /admin/status`, parsed.
    pub fn status(&self) -> serde_json::Value {
        let r = get_from(None, self.admin_addr(), "/admin/status");
        assert_eq!(r.status, 200);
        serde_json::from_slice(&r.body).expect("status json")
    }

    /// The config generation now serving.
    pub fn generation(&self) -> u64 {
        self.status()["generation"].as_u64().expect("generation")
    }

    /// Waits (polling, bounded) until `f(status)` holds; panics with `what` after 30 s.
    pub fn wait_status(
        &self,
        what: &str,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.status();
            if f(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; last status: {s}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `POST /admin/reload`.
    pub fn reload(&self) -> Response {
        Conn::open(None, self.admin_addr())
            .and_then(|mut c| c.request("POST", "/admin/reload", &[], b""))
            .expect("POST /admin/reload")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (up to `limit`, a guard against a hang, not a timing claim) for the process to
    /// exit on its own; its exit status, or `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// A zero-downtime upgrade to a second process of the same binary: starts `sekisho run
    /// --upgrade` on this config, waits (bounded) until it waits on the upgrade socket, then
    /// sends the running process SIGQUIT. From then on `self` is the new process; the old one
    /// is returned, to be waited for.
    pub fn upgrade(&mut self) -> Child {
        let socket = self.dir.path().join("sekisho-upgrade.sock");
        let _ = std::fs::remove_file(&socket);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sekisho"));
        let new = as_test_child(cmd.args(["run", "--upgrade", "-c"]).arg(&self.config))
            .spawn()
            .expect("spawn sekisho --upgrade");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "no upgrade socket at {socket:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
        let status = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -QUIT");
        std::mem::replace(&mut self.child, new)
    }
}

/// Waits (polling, up to `limit`: a guard against a hang, not a timing claim) for `child` to
/// exit; its status, or `None` if it still runs.
pub fn wait_child(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// The config [`Proxy::start`] writes: `body` after listeners on 127.0.0.1 and [::1] at `port`,
/// the admin listener at `admin_port`, one thread, no grace period and a quick reload debounce
/// (unless `body` sets them).
pub fn config_text(port: u16, admin_port: u16, body: &str) -> String {
    let reload = if body.contains("reload:") {
        ""
    } else {
        "reload: { debounce: 50ms, poll_interval: 500ms }\n"
    };
    let grace = if body.contains("grace_period:") {
        ""
    } else {
        "grace_period: 0s\n"
    };
    format!(
            "listen: [\"127.0.0.1:{port}\", \"[::1]:{port}\"]\nadmin: {{ listen: \"127.0.0.1:{admin_port}\" }}\nthreads: 1\n{grace}graceful_shutdown_timeout: 1s\n{reload}{body}"
        )
}

/// The environment of a test's sekisho: warnings and up on the test's stderr, and none of
/// systemd's directories (paths resolve beside the config).
fn as_test_child(cmd: &mut Command) -> &mut Command {
    cmd.env("SEKISHO_LOG", "warn")
        .env_remove("STATE_DIRECTORY")
        .env_remove("LOGS_DIRECTORY")
        .env_remove("RUNTIME_DIRECTORY")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
}

/// Runs `sekisho run -c config` and waits until it listens on both ports; `None` if it exited
/// first (a port was taken, or the config is bad).
fn spawn(
    config: &std::path::Path,
    port: u16,
    admin_port: u16,
    nofile: Option<u64>,
) -> Option<Child> {
    let mut cmd = match nofile {
        Some(n) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={n}:{n}"))
                .arg("--")
                .arg(env!("CARGO_BIN_EXE_sekisho"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_sekisho")),
    };
    let mut child = as_test_child(cmd.args(["run", "-c"]).arg(config))
        .spawn()
        .expect("spawn sekisho");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return None; // exited: port taken or config error
        }
        let up = TcpStream::connect(("127.0.0.1", port)).is_ok()
            && TcpStream::connect(("::1", port)).is_ok()
            && TcpStream::connect(("127.0.0.1", admin_port)).is_ok();
        if up {
            return Some(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sekisho did not start listening on port {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The real binary on a config written for the test, its stderr kept: for what it says when it
/// starts, stops or cannot start.
pub struct Run {
    child: Child,
    stderr: Option<std::thread::JoinHandle<String>>,
    pub dir: tempfile::TempDir,
}

impl Run {
    /// Writes `config` (the whole file) and runs `sekisho run` on it, with `SEKISHO_LOG` set to
    /// `log`, or unset (the default filter) for `None`.
    pub fn start(config: &str, log: Option<&str>) -> Self {
        Self::start_with(config, log, |_| {})
    }

    /// [`Run::start`], after `prepare` has written what else the test needs into the folder
    /// the config is in (a state file, a list file).
    pub fn start_with(config: &str, log: Option<&str>, prepare: impl Fn(&std::path::Path)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sekisho.yaml");
        std::fs::write(&path, config).expect("write config");
        prepare(dir.path());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sekisho"));
        cmd.args(["run", "-c"])
            .arg(&path)
            .current_dir(dir.path())
            .env_remove("STATE_DIRECTORY")
            .env_remove("SEKISHO_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(l) = log {
            cmd.env("SEKISHO_LOG", l);
        }
        let mut child = cmd.spawn().expect("spawn sekisho");
        let mut pipe = child.stderr.take().expect("stderr pipe");
        // read as it comes, so that a chatty process never blocks on a full pipe
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        });
        Self {
            child,
            stderr: Some(stderr),
            dir,
        }
    }

    /// Waits (polling, up to `limit`: a guard against a hang, not a timing claim) until every
    /// one of `addrs` takes a connection; false if the process exited first or `limit` passed.
    pub fn wait_listening(&mut self, addrs: &[SocketAddr], limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return false;
            }
            if addrs.iter().all(|a| TcpStream::connect(a).is_ok()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`TERM`, `INT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal}");
    }

    /// Waits (polling, up to `limit`: a guard against a hang, not a timing claim) for the
    /// process to exit on its own: its exit status and everything it wrote to stderr. Panics,
    /// showing that output, if it is still running after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let text = self
                    .stderr
                    .take()
                    .map(|h| h.join().expect("stderr reader"))
                    .unwrap_or_default();
                return (status, text);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let text = self
                    .stderr
                    .take()
                    .map(|h| h.join().expect("stderr reader"))
                    .unwrap_or_default();
                panic!("sekisho still ran after {limit:?}; its stderr:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `text` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename into place");
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One parsed response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive HTTP/1.1 connection from a chosen source address.
pub struct Conn {
    reader: BufReader<TcpStream>,
    from: Option<String>,
    to: SocketAddr,
    /// The last response said `Connection: close`: the next request opens a new connection,
    /// as any client does.
    closing: bool,
}

impl Conn {
    /// Connects to `to` from `from` (any port), e.g. from 127.0.0.2.
    pub fn open(from: Option<&str>, to: SocketAddr) -> std::io::Result<Self> {
        let stream = match from {
            None => TcpStream::connect(to)?,
            Some(src) => {
                let src: IpAddr = src.parse().expect("source ip");
                let domain = if src.is_ipv6() {
                    socket2::Domain::IPV6
                } else {
                    socket2::Domain::IPV4
                };
                let s = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
                s.bind(&SocketAddr::new(src, 0).into())?;
                s.connect(&to.into())?;
                s.into()
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            reader: BufReader::new(stream),
            from: from.map(str::to_string),
            to,
            closing: false,
        })
    }

    /// The connection itself (what was buffered of it is dropped), to watch it close.
    #[allow(dead_code)] // not every test binary uses it
    pub fn into_stream(self) -> TcpStream {
        self.reader.into_inner()
    }

    /// Sends one request and reads its response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        let mut req = format!("{method} {path} HTTP/1.1\r\n");
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
            req.push_str("Host: test.local\r\n");
        }
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        if self.closing {
            *self = Self::open(self.from.as_deref(), self.to)?;
        }
        let stream = self.reader.get_mut();
        stream.write_all(req.as_bytes())?;
        stream.write_all(body)?;
        let r = read_response(&mut self.reader, method == "HEAD")?;
        self.closing = r
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        Ok(r)
    }

    pub fn get(&mut self, path: &str) -> std::io::Result<Response> {
        self.request("GET", path, &[], b"")
    }

    /// Writes `bytes` as they are (several requests at once, a malformed one).
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.reader.get_mut().write_all(bytes)
    }

    /// Reads the next response (to a request sent with [`Conn::send_raw`]).
    pub fn response(&mut self) -> std::io::Result<Response> {
        read_response(&mut self.reader, false)
    }
}

fn read_response(r: &mut BufReader<TcpStream>, head: bool) -> std::io::Result<Response> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(&format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if head {
        return Ok(resp);
    }
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if let Some(len) = resp
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        resp.body = body;
    } else if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim(), 16).map_err(|_| bad("chunk size"))?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            resp.body.extend_from_slice(&chunk[..n]);
        }
    } else {
        r.read_to_end(&mut resp.body)?;
    }
    Ok(resp)
}

/// One request on a fresh connection.
pub fn get_from(from: Option<&str>, to: SocketAddr, path: &str) -> Response {
    Conn::open(from, to)
        .and_then(|mut c| c.get(path))
        .unwrap_or_else(|e| panic!("GET {path} from {from:?}: {e}"))
}

/// One request with headers on a fresh connection.
pub fn get_with(
    from: Option<&str>,
    to: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    Conn::open(from, to)
        .and_then(|mut c| c.request("GET", path, headers, b""))
        .unwrap_or_else(|e| panic!("GET {path} from {from:?}: {e}"))
}

/// A MaxMind-format country database with the given (CIDR, country) entries; even entries use
/// the GeoIP2 layout (`country.iso_code`), odd ones the ip-location-db layout (`country_code`).
pub fn geo_fixture(entries: &[(&str, &str)]) -> Vec<u8> {
    use mmdb_writer::{Value, Writer};
    let mut w = Writer::builder("Test-Country")
        .description(&[("en", "sekisho test fixture")])
        .build();
    for (i, (cidr, cc)) in entries.iter().enumerate() {
        let net: ipnet::IpNet = cidr.parse().expect("fixture cidr");
        let value = if i % 2 == 0 {
            Value::map([("country", Value::map([("iso_code", Value::from(*cc))]))])
        } else {
            Value::map([("country_code", Value::from(*cc))])
        };
        w.insert_value(net, value).expect("fixture insert");
    }
    w.to_bytes().expect("fixture bytes")
}

/// The value of the series `name{labels}` in a text exposition (labels compared as a set).
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: std::collections::BTreeMap<&str, &str> = labels.iter().copied().collect();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, v) = line.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let got: std::collections::BTreeMap<&str, &str> = rest
                .split(',')
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k, v.trim_matches('"')))
                })
                .collect();
            (got == want).then(|| v.parse().ok()).flatten()
        })
}

/// A `redis-server` of its own on a free loopback port, without persistence, killed on drop.
pub struct Store {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Store {
    /// Starts one and waits until it answers `PING`.
    pub fn start() -> Self {
        for _attempt in 0..5 {
            let mut s = Self {
                child: None,
                port: free_port("127.0.0.1"),
                dir: tempfile::tempdir().expect("tempdir"),
            };
            if s.launch() {
                return s;
            }
        }
        panic!("redis-server did not start (is it installed? scripts/setup.sh installs it)");
    }

    fn launch(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn redis-server (scripts/setup.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.as_mut().map_or(Ok(None), |c| c.try_wait()) {
                return false;
            }
            if self.command(&["PING"]).is_some_and(|r| r.contains("PONG")) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The URL for `cluster.redis`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills it (SIGKILL: nothing is saved, as in a crash).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again, empty, on the same port.
    pub fn restart(&mut self) {
        self.kill();
        for _ in 0..50 {
            if self.launch() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not start again on port {}", self.port);
    }

    /// One command in RESP, its raw reply (`None`: no answer).
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut buf = vec![0u8; 1 << 16];
        let n = s.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One request to `proxy`'s admin listener.
pub fn admin(proxy: &Proxy, method: &str, path: &str) -> Response {
    Conn::open(None, proxy.admin_addr())
        .and_then(|mut c| c.request(method, path, &[], b""))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// One request to `proxy`'s admin listener, its JSON answer.
pub fn admin_json(proxy: &Proxy, method: &str, path: &str) -> serde_json::Value {
    let r = admin(proxy, method, path);
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{method} {path}: {} is not JSON: {e}", r.text()))
}
