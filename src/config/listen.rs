//! `listen:` and the process settings beside it: `threads`, `work_stealing`, `grace_period`,
//! `graceful_shutdown_timeout`, `upgrade_socket` (all read at start; a reload keeps the running
//! values). A `listen:` entry is an address, or `{ addr, tls }` for a TLS listener, whose
//! certificates (and only they) a reload reads again.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{format_duration, Config, RawConfig, Validator, S};
pub use crate::tls::acceptor::TlsVersion;
use crate::tls::Certified;

/// One `listen:` entry as written: `"0.0.0.0:80"` or `{ addr: "0.0.0.0:443", tls: {...} }`.
#[derive(Debug)]
pub enum RawListen {
    Addr(String),
    Full(Box<RawListener>),
}

/// `{ addr, tls }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub addr: S<String>,
    pub tls: Option<S<RawTls>>,
}

/// `listen[].tls`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    #[serde(default)]
    pub certificates: Vec<S<RawCertificate>>,
    pub min_version: Option<S<String>>,
    pub http2: Option<S<bool>>,
    pub handshake_timeout: Option<S<String>>,
}

/// `listen[].tls.certificates[]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: S<String>,
    pub key: S<String>,
}

impl<'de> Deserialize<'de> for RawListen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawListen;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an address (\"0.0.0.0:8080\") or { addr, tls }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawListen, E> {
                Ok(RawListen::Addr(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawListen, A::Error> {
                RawListener::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|l| RawListen::Full(Box::new(l)))
            }
        }
        d.deserialize_any(V)
    }
}

/// A TLS listener's settings, validated, its certificates loaded and checked.
#[derive(Debug)]
pub struct TlsListener {
    /// Chosen by SNI from their names; the first is the default.
    pub certificates: Vec<Certified>,
    /// (restart to change)
    pub min_version: TlsVersion,
    /// ALPN offers `h2` besides `http/1.1` (restart to change).
    pub http2: bool,
    /// From accept to the end of the handshake.
    pub handshake_timeout: Duration,
}

/// `listen:` and the process settings, validated.
pub(super) struct Process {
    pub listen: Vec<SocketAddr>,
    pub tls: Vec<Option<Arc<TlsListener>>>,
    pub threads: usize,
    pub work_stealing: bool,
    pub grace_period: Duration,
    pub graceful_shutdown_timeout: Duration,
    pub upgrade_socket: PathBuf,
}

/// The top-level process keys as `sekisho config` prints them.
#[derive(Serialize)]
pub(super) struct EffectiveProcess {
    listen: Vec<EffectiveListen>,
    /// Given, or one per CPU of this machine.
    threads: usize,
    work_stealing: bool,
    grace_period: String,
    graceful_shutdown_timeout: String,
    upgrade_socket: String,
}

/// A `listen:` entry as `sekisho config` prints it.
#[derive(Serialize)]
#[serde(untagged)]
enum EffectiveListen {
    Plain(String),
    Tls { addr: String, tls: EffectiveTls },
}

#[derive(Serialize)]
struct EffectiveTls {
    certificates: Vec<EffectiveCertificate>,
    min_version: TlsVersion,
    http2: bool,
    handshake_timeout: String,
}

#[derive(Serialize)]
struct EffectiveCertificate {
    cert: String,
    names: Vec<String>,
    not_after_unix: i64,
}

/// `listen:` and the process settings of `c`.
pub(super) fn effective(c: &Config) -> EffectiveProcess {
    let listen = c
        .listen
        .iter()
        .enumerate()
        .map(|(i, a)| match c.tls.get(i).and_then(Option::as_ref) {
            None => EffectiveListen::Plain(a.to_string()),
            Some(t) => EffectiveListen::Tls {
                addr: a.to_string(),
                tls: EffectiveTls {
                    certificates: t
                        .certificates
                        .iter()
                        .map(|c| EffectiveCertificate {
                            cert: c.cert_path.display().to_string(),
                            names: c.names.clone(),
                            not_after_unix: c.not_after_unix,
                        })
                        .collect(),
                    min_version: t.min_version,
                    http2: t.http2,
                    handshake_timeout: format_duration(t.handshake_timeout),
                },
            },
        })
        .collect();
    EffectiveProcess {
        listen,
        threads: c.threads,
        work_stealing: c.work_stealing,
        grace_period: format_duration(c.grace_period),
        graceful_shutdown_timeout: format_duration(c.graceful_shutdown_timeout),
        upgrade_socket: c.upgrade_socket.display().to_string(),
    }
}

impl Validator<'_> {
    /// `listen:`, `threads:`, `work_stealing:`, `grace_period:`, `graceful_shutdown_timeout:`,
    /// `upgrade_socket:`.
    pub(super) fn process(&mut self, raw: &RawConfig) -> Process {
        let mut listen = Vec::new();
        let mut tls = Vec::new();
        for (i, l) in raw.listen.iter().enumerate() {
            let (text, field, at_tls) = match &l.value {
                RawListen::Addr(a) => (a.as_str(), format!("listen[{i}]"), None),
                RawListen::Full(f) => (
                    f.addr.value.as_str(),
                    format!("listen[{i}].addr"),
                    f.tls.as_ref(),
                ),
            };
            match text.parse::<SocketAddr>() {
                Ok(a) => {
                    listen.push(a);
                    tls.push(at_tls.map(|t| Arc::new(self.tls_listener(t, i))));
                }
                Err(_) => self.err(
                    l,
                    field,
                    format!(
                        "{text:?} is not an address:port (e.g. \"0.0.0.0:8080\" or \"[::]:8080\")"
                    ),
                ),
            }
        }
        if raw.listen.is_empty() {
            listen.push(SocketAddr::from(([127, 0, 0, 1], 8080)));
            tls.push(None);
        }
        let threads = match &raw.threads {
            Some(t) if t.value == 0 => {
                self.err(
                    t,
                    "threads",
                    "must be at least 1 (leave it out to use one per CPU)",
                );
                1
            }
            Some(t) => t.value,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let grace_period = self.whole_seconds(
            raw.grace_period.as_ref(),
            "grace_period",
            Duration::from_secs(5),
        );
        let graceful_shutdown_timeout = self.whole_seconds(
            raw.graceful_shutdown_timeout.as_ref(),
            "graceful_shutdown_timeout",
            Duration::from_secs(10),
        );
        let upgrade_socket = self.upgrade_socket(raw);
        Process {
            listen,
            tls,
            threads,
            work_stealing: raw.work_stealing.as_ref().is_some_and(|w| w.value),
            grace_period,
            graceful_shutdown_timeout,
            upgrade_socket,
        }
    }

    /// `listen[i].tls`: each certificate loaded and checked as a handshake would use it (an
    /// error names the file and the reason), its files watched for a reload.
    fn tls_listener(&mut self, raw: &S<RawTls>, i: usize) -> TlsListener {
        let at = format!("listen[{i}].tls");
        let t = &raw.value;
        if t.certificates.is_empty() {
            self.err(
                raw,
                format!("{at}.certificates"),
                "give at least one { cert, key }",
            );
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let mut certificates = Vec::new();
        for (j, c) in t.certificates.iter().enumerate() {
            let cert = self.dir.join(c.value.cert.value.trim());
            let key = self.dir.join(c.value.key.value.trim());
            for path in [&cert, &key] {
                // what the watcher compares with: a file replaced after this read is reloaded
                if let Ok(bytes) = std::fs::read(path) {
                    self.loaded_hashes
                        .push((path.clone(), super::cache::content_hash(&bytes)));
                }
                self.list_files.push(path.clone());
            }
            match crate::tls::load(&cert, &key, now) {
                Ok(loaded) => certificates.push(loaded),
                Err(e) => self.err(c, format!("{at}.certificates[{j}]"), e.to_string()),
            }
        }
        let min_version = match t.min_version.as_ref() {
            None => TlsVersion::V12,
            Some(v) => {
                match v.value.trim() {
                    "1.2" => TlsVersion::V12,
                    "1.3" => TlsVersion::V13,
                    "1.0" | "1.1" => {
                        self.err(v, format!("{at}.min_version"), format!("{:?}: TLS 1.0 and 1.1 are broken and refused; use \"1.2\" or \"1.3\"", v.value));
                        TlsVersion::V12
                    }
                    _ => {
                        self.err(
                            v,
                            format!("{at}.min_version"),
                            format!("{:?}: use \"1.2\" or \"1.3\"", v.value),
                        );
                        TlsVersion::V12
                    }
                }
            }
        };
        let handshake_timeout = self.duration_in(
            t.handshake_timeout.as_ref(),
            &format!("{at}.handshake_timeout"),
            Duration::from_secs(10),
            Duration::from_millis(100),
            Duration::from_secs(300),
        );
        TlsListener {
            certificates,
            min_version,
            http2: t.http2.as_ref().is_none_or(|h| h.value),
            handshake_timeout,
        }
    }

    /// `upgrade_socket:`: the Unix socket a new process (`sekisho run --upgrade`) takes the
    /// listening sockets over from; relative to the config's folder. Default:
    /// `sekisho-upgrade.sock` in systemd's `$RUNTIME_DIRECTORY`, else beside the config. Only
    /// used at an upgrade, so it is not checked for being writable here.
    fn upgrade_socket(&mut self, raw: &RawConfig) -> PathBuf {
        match &raw.upgrade_socket {
            Some(s) if s.value.trim().is_empty() => {
                self.err(s, "upgrade_socket", "give a file name");
                self.dir.join(UPGRADE_SOCKET)
            }
            Some(s) => {
                let path = self.dir.join(s.value.trim());
                // sun_path holds 107 bytes and a NUL
                if path.as_os_str().len() > 107 {
                    self.err(
                        s,
                        "upgrade_socket",
                        format!(
                            "{} is longer than a Unix socket path may be (107 bytes)",
                            path.display()
                        ),
                    );
                }
                path
            }
            None => std::env::var_os("RUNTIME_DIRECTORY")
                .and_then(|d| std::env::split_paths(&d).next())
                .unwrap_or_else(|| self.dir.clone())
                .join(UPGRADE_SOCKET),
        }
    }
}

/// The upgrade socket's file name when `upgrade_socket` is not given.
const UPGRADE_SOCKET: &str = "sekisho-upgrade.sock";
