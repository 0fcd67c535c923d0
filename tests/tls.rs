//! TLS listeners over real TLS on loopback, with certificates the test issues from its own CA
//! (rcgen): certificates by SNI and the default, HTTP/1.1 and HTTP/2 (ALPN) on one port, old
//! TLS versions refused, the handshake deadline, certificates replaced while handshakes run,
//! and bad certificate files kept out and named, by `check` and by a reload alike.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::X509;
use support::{free_port, Origin, Run};

/// A test CA and the certificates it issues.
struct Ca {
    key: rcgen::KeyPair,
    cert: rcgen::Certificate,
    params: rcgen::CertificateParams,
}

impl Ca {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sekisho test CA");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.clone().self_signed(&key).expect("CA");
        Self { key, cert, params }
    }

    /// Writes `{stem}.pem` and `{stem}.key` into `dir`: a certificate for `names`, valid from
    /// year `from` to year `to`, with serial `serial`.
    fn issue(&self, dir: &Path, stem: &str, names: &[&str], serial: u64, years: (i32, i32)) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        params.not_before = rcgen::date_time_ymd(years.0, 1, 1);
        params.not_after = rcgen::date_time_ymd(years.1, 1, 1);
        let key = rcgen::KeyPair::generate().expect("key");
        let issuer = self.params.clone().self_signed(&self.key).expect("issuer");
        let cert = params.signed_by(&key, &issuer, &self.key).expect("sign");
        std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).expect("write");
        std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).expect("write");
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }
}

/// The served certificate's serial and names, the negotiated ALPN and version, for one
/// handshake with server name `sni`; the connection after it.
struct Shaken {
    serial: u64,
    alpn: Option<Vec<u8>>,
    stream: openssl::ssl::SslStream<TcpStream>,
}

fn connector(ca: &Ca, alpn: &[u8]) -> SslConnector {
    let mut b = SslConnector::builder(SslMethod::tls()).expect("connector");
    b.cert_store_mut()
        .add_cert(X509::from_pem(ca.pem().as_bytes()).expect("CA pem"))
        .expect("CA");
    b.set_alpn_protos(alpn).expect("alpn");
    b.build()
}

fn handshake(c: &SslConnector, addr: SocketAddr, sni: &str) -> Result<Shaken, String> {
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    handshake_on(c, tcp, sni)
}

/// [`handshake`] from source address `from` (127.0.0.x).
fn handshake_from(c: &SslConnector, from: &str, addr: SocketAddr) -> Shaken {
    let tcp = support::Conn::open(Some(from), addr)
        .expect("connect")
        .into_stream();
    handshake_on(c, tcp, "a.test").expect("handshake")
}

fn handshake_on(c: &SslConnector, tcp: TcpStream, sni: &str) -> Result<Shaken, String> {
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut cfg = c.configure().map_err(|e| e.to_string())?;
    // the leaf is checked against the CA; the name is what the test looks at
    cfg.set_verify_hostname(false);
    let stream = cfg.connect(sni, tcp).map_err(|e| e.to_string())?;
    let serial = stream
        .ssl()
        .peer_certificate()
        .ok_or("no certificate")?
        .serial_number()
        .to_bn()
        .map_err(|e| e.to_string())?
        .to_dec_str()
        .map_err(|e| e.to_string())?
        .parse()
        .map_err(|e: std::num::ParseIntError| e.to_string())?;
    Ok(Shaken {
        serial,
        alpn: stream.ssl().selected_alpn_protocol().map(<[u8]>::to_vec),
        stream,
    })
}

/// One HTTP/1.1 GET over an established TLS connection; the status code.
fn get(s: &mut openssl::ssl::SslStream<TcpStream>, path: &str) -> u16 {
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

struct Edge {
    run: Run,
    tls: SocketAddr,
    admin: SocketAddr,
    ca: Ca,
    origin: Origin,
}

fn config(tls_port: u16, admin_port: u16, origin: &Origin, extra: &str) -> String {
    format!(
        "listen:\n  - addr: \"127.0.0.1:{tls_port}\"\n    tls:\n      certificates:\n        - {{ cert: a.pem, key: a.key }}\n        - {{ cert: b.pem, key: b.key }}\n      handshake_timeout: 500ms\nadmin: {{ listen: \"127.0.0.1:{admin_port}\" }}\nthreads: 1\ngrace_period: 0s\ngraceful_shutdown_timeout: 1s\nreload: {{ debounce: 50ms, poll_interval: 500ms }}\n{}rules:\n  - name: nope\n    match: {{ path_prefix: /denied }}\n    action: deny\n{extra}",
        origin.upstreams()
    )
}

fn edge() -> Edge {
    edge_with("")
}

fn edge_with(extra: &str) -> Edge {
    let origin = Origin::start();
    let ca = Ca::new();
    for _ in 0..5 {
        let (tls_port, admin_port) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
        let text = config(tls_port, admin_port, &origin, extra);
        let mut run = Run::start_with(&text, Some("warn"), |dir| {
            ca.issue(dir, "a", &["a.test"], 1, (2020, 2040));
            ca.issue(dir, "b", &["b.test", "*.b.test"], 2, (2020, 2040));
        });
        let tls = SocketAddr::from(([127, 0, 0, 1], tls_port));
        let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
        if run.wait_listening(&[tls, admin], Duration::from_secs(30)) {
            return Edge {
                run,
                tls,
                admin,
                ca,
                origin,
            };
        }
    }
    panic!("sekisho did not start with a TLS listener");
}

/// curl over HTTP/2 to the edge's TLS listener as `a.test`, trusting the test CA.
struct Curl {
    ca_file: std::path::PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Curl {
    fn new(e: &Edge) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, e.ca.pem()).expect("ca file");
        Self {
            ca_file,
            port: e.tls.port(),
            _dir: dir,
        }
    }

    /// curl with its options for the edge, then `args`.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "--max-time", "10", "--http2", "--cacert"])
            .arg(&self.ca_file)
            .arg("--resolve")
            .arg(format!("a.test:{}:127.0.0.1", self.port))
            .args(args);
        cmd
    }

    fn url(&self, path: &str) -> String {
        format!("https://a.test:{}{path}", self.port)
    }

    /// One GET: "HTTP-version status", e.g. "2 200".
    fn get(&self, path: &str) -> String {
        let out = self
            .command(&["-o", "/dev/null", "-w", "%{http_version} %{http_code}"])
            .arg(self.url(path))
            .output()
            .expect("curl (scripts/setup.sh installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The body of `GET path` on the admin listener.
fn admin_get(admin: SocketAddr, path: &str) -> String {
    support::get_from(None, admin, path).text()
}

fn metric(admin: SocketAddr, series: &str) -> f64 {
    admin_get(admin, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// Waits (a guard against a hang, not a timing claim) until `series` reaches `at_least`: a
/// handshake is counted just after the client sees it done.
fn wait_metric(admin: SocketAddr, series: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(admin, series) < at_least {
        assert!(Instant::now() < deadline, "{series} stays below {at_least}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn generation(admin: SocketAddr) -> u64 {
    serde_json::from_str::<serde_json::Value>(&admin_get(admin, "/admin/status"))
        .ok()
        .and_then(|v| v["generation"].as_u64())
        .unwrap_or(0)
}

#[test]
fn certificates_by_sni_both_protocols_and_no_old_versions() {
    let e = edge();
    let c = connector(&e.ca, b"\x08http/1.1");
    assert_eq!(handshake(&c, e.tls, "a.test").expect("a").serial, 1);
    assert_eq!(handshake(&c, e.tls, "b.test").expect("b").serial, 2);
    assert_eq!(
        handshake(&c, e.tls, "x.b.test").expect("wildcard").serial,
        2
    );
    // a name no certificate has gets the first, the default
    assert_eq!(
        handshake(&c, e.tls, "unknown.test")
            .expect("default")
            .serial,
        1
    );

    // HTTP/1.1 over TLS reaches the origin, and the rules judge it
    let mut s = handshake(&c, e.tls, "a.test").expect("a");
    assert_eq!(s.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(get(&mut s.stream, "/hello"), 200);
    let mut s = handshake(&c, e.tls, "a.test").expect("a");
    assert_eq!(get(&mut s.stream, "/denied/x"), 403);

    // ALPN h2 is chosen when offered, and curl speaks HTTP/2 through it
    let c2 = connector(&e.ca, b"\x02h2\x08http/1.1");
    assert_eq!(
        handshake(&c2, e.tls, "a.test").expect("h2").alpn.as_deref(),
        Some(&b"h2"[..])
    );
    let curl = Curl::new(&e);
    let curl = |path: &str| curl.get(path);
    assert_eq!(curl("/hello"), "2 200");
    assert_eq!(curl("/denied/y"), "2 403");

    // TLS 1.1 is refused
    let mut old = SslConnector::builder(SslMethod::tls()).expect("connector");
    old.set_verify(SslVerifyMode::NONE);
    old.set_cipher_list("DEFAULT:@SECLEVEL=0").expect("ciphers");
    old.set_min_proto_version(Some(SslVersion::TLS1))
        .expect("min");
    old.set_max_proto_version(Some(SslVersion::TLS1_1))
        .expect("max");
    let failed_before = metric(
        e.admin,
        "sekisho_tls_handshakes_total{result=\"failed\",version=\"-\"}",
    );
    assert!(
        handshake(&old.build(), e.tls, "a.test").is_err(),
        "TLS 1.1 was accepted"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(
        e.admin,
        "sekisho_tls_handshakes_total{result=\"failed\",version=\"-\"}",
    ) <= failed_before
    {
        assert!(
            Instant::now() < deadline,
            "the refused handshake was not counted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_metric(
        e.admin,
        "sekisho_tls_handshakes_total{result=\"ok\",version=\"TLSv1.3\"}",
        6.0,
    );
    let expiry = metric(
        e.admin,
        &format!(
            "sekisho_tls_certificate_expiry_timestamp_seconds{{listen=\"{}\",name=\"b.test\"}}",
            e.tls
        ),
    );
    assert_eq!(expiry, 2_208_988_800.0); // 2040-01-01
}

#[test]
fn a_handshake_that_never_comes_is_cut_at_its_deadline() {
    let e = edge();
    let mut idle = TcpStream::connect(e.tls).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut buf = [0u8; 1];
    // closed by sekisho (handshake_timeout 500ms), not by the guard
    assert_eq!(idle.read(&mut buf).expect("closed, not timed out"), 0);
    // (counted just after the close)
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(
        e.admin,
        "sekisho_connections_closed_total{reason=\"handshake_timeout\"}",
    ) < 1.0
        || metric(
            e.admin,
            "sekisho_tls_handshakes_total{result=\"timeout\",version=\"-\"}",
        ) < 1.0
    {
        assert!(Instant::now() < deadline, "the cut was not counted");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn certificates_replaced_while_handshakes_run_and_bad_ones_kept_out() {
    let mut e = edge();
    let dir = e.run.dir.path().to_path_buf();
    let c = connector(&e.ca, b"\x08http/1.1");
    assert_eq!(handshake(&c, e.tls, "a.test").expect("a").serial, 1);
    // a connection made before the replacement, used after it
    let mut before_swap = handshake(&c, e.tls, "a.test").expect("a");

    // a loop of handshakes runs through the replacement
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let looping = {
        let (stop, ok, failed, c, addr) =
            (stop.clone(), ok.clone(), failed.clone(), c.clone(), e.tls);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match handshake(&c, addr, "a.test") {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    let before = generation(e.admin);
    // new files written beside, then renamed over the old ones (key first, then certificate)
    let staging = tempfile::tempdir_in(&dir).expect("staging");
    e.ca.issue(staging.path(), "a", &["a.test"], 11, (2020, 2040));
    std::fs::rename(staging.path().join("a.key"), dir.join("a.key")).expect("rename key");
    std::fs::rename(staging.path().join("a.pem"), dir.join("a.pem")).expect("rename cert");
    let deadline = Instant::now() + Duration::from_secs(20);
    while handshake(&c, e.tls, "a.test").map(|s| s.serial) != Ok(11) {
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    looping.join().expect("loop");
    assert!(generation(e.admin) > before);
    assert!(ok.load(Ordering::Relaxed) > 0);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "handshakes failed during the replacement"
    );
    // the established connection keeps its certificate and goes on serving
    assert_eq!(before_swap.serial, 1);
    assert_eq!(get(&mut before_swap.stream, "/after"), 200);

    // a key that is not the certificate's: the reload fails, naming the file; serial 11 stays
    let gen = generation(e.admin);
    e.ca.issue(staging.path(), "other", &["other.test"], 12, (2020, 2040));
    std::fs::copy(staging.path().join("other.key"), dir.join("b.key")).expect("copy key");
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(e.admin, "sekisho_reloads_total{result=\"error\"}") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the bad key did not fail a reload"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(generation(e.admin), gen);
    assert_eq!(handshake(&c, e.tls, "a.test").expect("a").serial, 11);
    assert_eq!(handshake(&c, e.tls, "b.test").expect("b").serial, 2);
    // `check` says the same as the reload
    let cfg = dir.join("sekisho.yaml");
    let check = || {
        let out = Command::new(env!("CARGO_BIN_EXE_sekisho"))
            .args(["check", "-c"])
            .arg(&cfg)
            .output()
            .expect("check");
        let said = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        (out.status.success(), said)
    };
    let (ok, said) = check();
    assert!(!ok);
    assert!(
        said.contains("listen[0].tls.certificates[1]")
            && said.contains("b.key: this private key does not belong to the certificate in"),
        "{said}"
    );
    // an expired certificate likewise
    e.ca.issue(&dir, "b", &["b.test"], 13, (2001, 2002));
    let (ok, said) = check();
    assert!(!ok);
    assert!(said.contains("b.pem: the certificate expired"), "{said}");
    e.run.signal("TERM");
    let (_, said) = e.run.wait_exit(Duration::from_secs(20));
    assert!(
        said.contains("reload rejected, the running config stays")
            && said.contains("b.key: this private key does not belong"),
        "{said}"
    );
}

#[test]
fn the_tls_fingerprint_keys_a_limit_across_addresses_and_matches_a_rule() {
    let e = edge_with(
        "  - name: per-stack\n    match: { path_prefix: /stack }\n    limit: { rate: 1/h, burst: 2, key: ja4 }\n    response: { status: 429 }\n",
    );
    let c = connector(&e.ca, b"\x08http/1.1");
    // one TLS stack, three addresses: one bucket of 2
    let got: Vec<u16> = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
        .iter()
        .map(|from| get(&mut handshake_from(&c, from, e.tls).stream, "/stack"))
        .collect();
    assert_eq!(got, [200, 200, 429]);
    // the fingerprint, as the operator finds it
    let top = admin_get(e.admin, "/admin/top?by=ja4&window=1m");
    let v: serde_json::Value = serde_json::from_str(&top).expect("top json");
    let fp = v["top"][0]["key"]
        .as_str()
        .expect("a fingerprint")
        .to_string();
    assert!(fp.starts_with("t13d") && fp.len() == 36, "{fp}");
    assert_eq!(v["top"][0]["allowed"].as_u64(), Some(2), "{v}");
    assert_eq!(v["top"][0]["refused"].as_u64(), Some(1), "{v}");
    // ...and denies it by a rule
    let cfg = e.run.dir.path().join("sekisho.yaml");
    let text = std::fs::read_to_string(&cfg).expect("config");
    let before = generation(e.admin);
    std::fs::write(
        &cfg,
        format!("{text}  - name: that-stack\n    match: {{ ja4: [\"{fp}\"] }}\n    action: deny\n"),
    )
    .expect("rewrite");
    let deadline = Instant::now() + Duration::from_secs(20);
    while generation(e.admin) == before {
        assert!(Instant::now() < deadline, "no reload");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        get(&mut handshake_from(&c, "127.0.0.4", e.tls).stream, "/hello"),
        403
    );
}

/// An HTTP/2 frame: length, type, flags, stream, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// `GET https://a.test/` in HPACK: :method GET, :path /, :scheme https (static table), and
/// :authority as a literal.
const GET_ROOT: &[u8] = b"\x82\x84\x87\x41\x06a.test";

/// A raw HTTP/2 connection (ALPN h2) that has sent its preface and SETTINGS.
fn h2_client(e: &Edge) -> openssl::ssl::SslStream<TcpStream> {
    let c = connector(&e.ca, b"\x02h2");
    let mut s = handshake(&c, e.tls, "a.test").expect("h2 handshake");
    assert_eq!(s.alpn.as_deref(), Some(&b"h2"[..]));
    s.stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .expect("preface");
    s.stream
        .write_all(&h2_frame(4, 0, 0, &[]))
        .expect("settings");
    s.stream
}

/// Sends `frames` (each given its stream's id by `make`), pausing `pace` between them, until
/// the connection fails or `limit` frames went out; how many went out.
fn flood(
    s: &mut openssl::ssl::SslStream<TcpStream>,
    limit: u32,
    pace: Duration,
    make: impl Fn(u32) -> Vec<u8>,
) -> u32 {
    for i in 0..limit {
        if s.write_all(&make(2 * i + 1)).is_err() {
            return i;
        }
        if !pace.is_zero() {
            std::thread::sleep(pace);
        }
    }
    limit
}

#[test]
fn http2_floods_are_cut_while_a_well_behaved_client_is_served() {
    let e = edge();
    let curl = Curl::new(&e);
    let well_behaved = || curl.get("/hello");
    let closed = |reason: &str| format!("sekisho_connections_closed_total{{reason=\"{reason}\"}}");
    let open_and_cancel = |id: u32| {
        let mut f = h2_frame(1, 0x4, id, GET_ROOT); // HEADERS, END_HEADERS
        f.extend(h2_frame(3, 0, id, &8u32.to_be_bytes())); // RST_STREAM CANCEL
        f
    };
    // Rapid Reset, as fast as the socket takes it
    let mut s = h2_client(&e);
    let sent = flood(&mut s, 20_000, Duration::ZERO, open_and_cancel);
    wait_metric(e.admin, &closed("h2_rapid_reset"), 1.0);
    assert!(sent < 20_000, "the connection took every reset");
    assert_eq!(well_behaved(), "2 200");
    // Rapid Reset paced at 100 a second: under any burst counter, over the budget
    let mut s = h2_client(&e);
    flood(&mut s, 1000, Duration::from_millis(10), open_and_cancel);
    wait_metric(e.admin, &closed("h2_rapid_reset"), 2.0);
    assert_eq!(well_behaved(), "2 200");
    // a PING flood
    let mut s = h2_client(&e);
    flood(&mut s, 20_000, Duration::ZERO, |_| {
        h2_frame(6, 0, 0, &[0; 8])
    });
    wait_metric(e.admin, &closed("h2_ping_flood"), 1.0);
    assert_eq!(well_behaved(), "2 200");
    // a connection over budget is told so: GOAWAY, then the close (60 PINGs, over the 50
    // allowed at once, and no more, so that sekisho reads all it was sent before it closes)
    let mut s = h2_client(&e);
    let pings: Vec<u8> = (0..60).flat_map(|_| h2_frame(6, 0, 0, &[0; 8])).collect();
    s.write_all(&pings).expect("pings");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let mut kinds = Vec::new();
    let mut at = 0;
    while at + 9 <= got.len() {
        let len = u32::from_be_bytes([0, got[at], got[at + 1], got[at + 2]]) as usize;
        kinds.push(got[at + 3]);
        at += 9 + len;
    }
    assert!(kinds.contains(&7), "no GOAWAY among the frames {kinds:?}");
    wait_metric(e.admin, &closed("h2_ping_flood"), 2.0);
    // a CONTINUATION flood: a header block that never ends
    let mut s = h2_client(&e);
    s.write_all(&h2_frame(1, 0, 1, GET_ROOT)).expect("headers");
    flood(&mut s, 20_000, Duration::ZERO, |_| h2_frame(9, 0, 1, &[]));
    wait_metric(e.admin, &closed("h2_continuation_flood"), 1.0);
    assert_eq!(well_behaved(), "2 200");
    // the well-behaved client was never cut
    assert_eq!(metric(e.admin, &closed("h2_settings_flood")), 0.0);
}

#[test]
fn http2_streams_meet_the_rules_as_http1_requests_do() {
    let e = edge_with(
        "  - name: per-ip\n    match: { path_prefix: /ip }\n    limit: { rate: 1/h, burst: 2, key: ip }\n    response: { status: 429 }\n  - name: per-path\n    match: { path_prefix: /pp }\n    limit: { rate: 1/h, burst: 1, key: ip_path }\n    response: { status: 429 }\n",
    );
    // several URLs in one curl: streams of one HTTP/2 connection
    let client = Curl::new(&e);
    let curl = |paths: &[&str], show_headers: bool| {
        let mut cmd = if show_headers {
            client.command(&["-D", "-", "-o", "/dev/null"])
        } else {
            client.command(&["-w", "%{http_version} %{http_code}\n"])
        };
        for p in paths {
            if !show_headers {
                cmd.args(["-o", "/dev/null"]);
            }
            cmd.arg(client.url(p));
        }
        let out = cmd.output().expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let hits = e.origin.hits();
    let got = curl(
        &[
            "/ip/1", "/ip/2", "/ip/3", "/pp/a", "/pp/a", "/pp/b", "/denied",
        ],
        false,
    );
    assert_eq!(
        got.lines().collect::<Vec<_>>(),
        ["2 200", "2 200", "2 429", "2 200", "2 429", "2 200", "2 403"]
    );
    // the origin saw the four that passed, and nothing of the refused ones
    assert_eq!(e.origin.hits() - hits, 4);
    // Host from :authority, X-Forwarded-Proto https, the client as X-Forwarded-For
    let head = curl(&["/hello"], true).to_ascii_lowercase();
    assert!(head.contains("x-origin-host: a.test"), "{head}");
    assert!(head.contains("x-origin-proto: https"), "{head}");
    assert!(head.contains("x-origin-xff: 127.0.0.1"), "{head}");
}

/// An HTTPS origin with a certificate for `origin.test` from `ca`, answering `200 ok` on
/// kept-alive connections; counts the TLS connections it accepted and the requests.
struct TlsOrigin {
    addr: SocketAddr,
    conns: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

fn tls_origin(ca: &Ca, dir: &Path) -> TlsOrigin {
    use openssl::ssl::{SslAcceptor, SslFiletype};
    ca.issue(dir, "origin", &["origin.test"], 50, (2020, 2040));
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
    b.set_certificate_chain_file(dir.join("origin.pem"))
        .expect("cert");
    b.set_private_key_file(dir.join("origin.key"), SslFiletype::PEM)
        .expect("key");
    let acceptor = Arc::new(b.build());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (conns, requests) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (c, r) = (conns.clone(), requests.clone());
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let (acceptor, c, r) = (acceptor.clone(), c.clone(), r.clone());
            std::thread::spawn(move || {
                let Ok(mut s) = acceptor.accept(tcp) else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let mut buf = Vec::new();
                loop {
                    // one request: its head, then Content-Length bytes of body
                    let (head, length) = loop {
                        let mut fields = [httparse::EMPTY_HEADER; 64];
                        let mut req = httparse::Request::new(&mut fields);
                        if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                            let length = req
                                .headers
                                .iter()
                                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                                .unwrap_or(0usize);
                            break (n, length);
                        }
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    while buf.len() < head + length {
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head + length);
                    r.fetch_add(1, Ordering::SeqCst);
                    if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    TlsOrigin {
        addr,
        conns,
        requests,
    }
}

#[test]
fn an_https_origin_is_verified_and_pooled_and_a_wrong_ca_is_a_clear_502() {
    let ca = Ca::new();
    let files = tempfile::tempdir().expect("tempdir");
    let origin = tls_origin(&ca, files.path());
    let body = format!(
        "upstreams: [\"{}\"]\nupstream_options: {{ tls: {{ enabled: true, sni: origin.test, ca: ca.pem }} }}\n",
        origin.addr
    );
    let ca_pem = ca.pem();
    let proxy = support::Proxy::start_with(&body, |dir| {
        std::fs::write(dir.join("ca.pem"), &ca_pem).expect("ca");
    });
    let mut c = support::Conn::open(None, proxy.addr()).expect("connect");
    for i in 0..6 {
        let r = if i % 2 == 0 {
            c.get("/x").expect("get")
        } else {
            // a request that cannot be sent twice: the pooled connection is checked first
            c.request("POST", "/form", &[], b"a=1").expect("post")
        };
        assert_eq!(r.status, 200, "request {i}");
    }
    assert_eq!(origin.requests.load(Ordering::SeqCst), 6);
    // one TLS connection to the origin served all six: pooled, TLS 1.3 session tickets and all
    assert_eq!(origin.conns.load(Ordering::SeqCst), 1);

    // the same origin behind a CA that did not issue its certificate
    let other = Ca::new();
    let (port, admin) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let text = support::config_text(port, admin, &body);
    let other_pem = other.pem();
    let mut run = Run::start_with(&text, Some("warn"), |dir| {
        std::fs::write(dir.join("ca.pem"), &other_pem).expect("ca");
    });
    let at = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(run.wait_listening(&[at], Duration::from_secs(30)));
    let r = support::get_from(None, at, "/x");
    assert_eq!(r.status, 502);
    assert_eq!(
        origin.requests.load(Ordering::SeqCst),
        6,
        "nothing reached the origin"
    );
    run.signal("TERM");
    let (_, said) = run.wait_exit(Duration::from_secs(20));
    assert!(
        said.contains("connect failed; peer skipped") && said.contains("certificate verify failed"),
        "{said}"
    );
}

#[test]
fn a_silent_http2_client_is_cut_and_a_reset_stream_cancels_its_upstream_request() {
    // an origin that takes requests and never answers; it notes when sekisho closes on it
    let hanging = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hanging_addr = hanging.local_addr().expect("addr");
    let closed_on_it = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let (seen, took) = (closed_on_it.clone(), accepted.clone());
    std::thread::spawn(move || {
        for mut tcp in hanging.incoming().flatten() {
            took.fetch_add(1, Ordering::SeqCst);
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                // read until sekisho closes the connection
                while matches!(tcp.read(&mut buf), Ok(n) if n > 0) {}
                seen.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    let origin = Origin::start();
    let ca = Ca::new();
    let (tls_port, admin_port) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let text = config(
        tls_port,
        admin_port,
        &origin,
        "connections: { header_timeout: 1s }\nupstream_options: { read_timeout: 60s }\n",
    )
    .replace(
        &origin.upstreams(),
        &format!("upstreams: [\"{hanging_addr}\"]\n"),
    );
    let mut run = Run::start_with(&text, Some("warn"), |dir| {
        ca.issue(dir, "a", &["a.test"], 1, (2020, 2040));
        ca.issue(dir, "b", &["b.test"], 2, (2020, 2040));
    });
    let tls = SocketAddr::from(([127, 0, 0, 1], tls_port));
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    assert!(run.wait_listening(&[tls, admin], Duration::from_secs(30)));
    let e = Edge {
        run,
        tls,
        admin,
        ca,
        origin,
    };

    // TLS and ALPN h2, then not a byte of HTTP/2: cut at header_timeout
    let c = connector(&e.ca, b"\x02h2");
    let mut silent = handshake(&c, e.tls, "a.test").expect("h2 handshake");
    // (its SETTINGS come first; then the close, well before the 10 s read guard)
    let mut buf = [0u8; 512];
    let started = Instant::now();
    while matches!(silent.stream.read(&mut buf), Ok(n) if n > 0) {}
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "not cut; the guard ended it"
    );
    wait_metric(
        e.admin,
        "sekisho_connections_closed_total{reason=\"header_timeout\"}",
        1.0,
    );

    // a request the origin sits on, then RST_STREAM: sekisho closes its upstream connection
    let mut s = h2_client(&e);
    s.write_all(&h2_frame(1, 0x4 | 0x1, 1, GET_ROOT))
        .expect("headers");
    let deadline = Instant::now() + Duration::from_secs(10);
    // wait until the request is upstream (the origin holds its connection)
    while accepted.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the request never went upstream");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100)); // (its head written)
    assert_eq!(closed_on_it.load(Ordering::SeqCst), 0);
    s.write_all(&h2_frame(3, 0, 1, &8u32.to_be_bytes()))
        .expect("reset");
    while closed_on_it.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the upstream request outlived the stream's reset"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
