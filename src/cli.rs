//! The client side of `sekisho status`, `top`, `bans` and `attack`: read the state file or ask
//! the running proxy's admin listener, and print (tables for people, `--json` for scripts; see
//! [`show`]). `main.rs` parses the arguments and calls these.

pub mod show;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::admin::client::request;
use crate::config::{self, Config};
use crate::defense::export::ExportOptions;
use crate::defense::store::{self, BanRecord, Loaded};
use crate::engine::SlotRegistry;

/// Where `sekisho bans` reads from.
#[derive(Debug, Clone, Default)]
pub struct BanSource {
    /// A state file to read instead of the config's `bans.state_file`.
    pub state: Option<PathBuf>,
    /// The running proxy's admin listener (the live view).
    pub admin: Option<SocketAddr>,
}

/// What `sekisho bans export` prints.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// `plain`, `nginx`, `nginx-geo`, `aws-waf-ipset` or `json`.
    pub format: String,
    /// At most this many entries per family.
    pub max: Option<usize>,
    /// Widen prefixes to fit instead of failing.
    pub aggregate: bool,
}

/// The admin listener named by the config at `path`.
pub fn admin_addr(path: &Path) -> Result<SocketAddr, String> {
    let config = load(path)?;
    config
        .admin_listen
        .ok_or_else(|| format!("{}: admin.listen is off; give --admin", path.display()))
}

fn load(path: &Path) -> Result<Config, String> {
    config::load(path, &SlotRegistry::default()).map_err(|e| e.to_string())
}

/// `GET path` on the admin listener at `addr`, parsed; an error for any status but 200.
fn get_json(addr: SocketAddr, path: &str) -> Result<serde_json::Value, String> {
    match request(addr, "GET", path)? {
        (200, body) => {
            serde_json::from_str(&body).map_err(|e| format!("{addr}: not a JSON answer: {e}"))
        }
        (status, body) => Err(format!("{addr}: {status}: {}", body.trim_end())),
    }
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).map_or_else(|e| e.to_string(), |t| t + "\n")
}

/// `sekisho status`: the running proxy's state, as a summary and a table of rules, or the
/// admin listener's JSON with `json`.
pub fn status(addr: SocketAddr, json: bool) -> Result<String, String> {
    let v = get_json(addr, "/admin/status")?;
    Ok(if json {
        pretty(&v)
    } else {
        show::status(&v, crate::proxy::unix_now())
    })
}

/// What `sekisho top` asks for.
#[derive(Debug, Clone)]
pub struct TopRequest {
    /// `ip`, `country`, `user_agent` or `path`.
    pub by: String,
    /// Minutes, 1 to 15.
    pub window: u64,
    /// How many keys.
    pub n: usize,
}

/// `sekisho top`: the heaviest clients (or countries, user agents, paths) of the last minutes.
pub fn top(addr: SocketAddr, req: &TopRequest, json: bool) -> Result<String, String> {
    let path = format!(
        "/admin/top?by={}&window={}&n={}",
        encode(&req.by),
        req.window,
        req.n
    );
    let v = get_json(addr, &path)?;
    Ok(if json { pretty(&v) } else { show::top(&v) })
}

/// What `sekisho bans add` asks for.
#[derive(Debug, Clone)]
pub struct BanRequest {
    /// An address or a CIDR network.
    pub net: String,
    /// How long (`1h`, `7d`); the proxy's default when `None`.
    pub ttl: Option<String>,
    /// Why (logged and kept with the ban).
    pub reason: Option<String>,
    /// Ban a network wider than a /8 (IPv4) or /16 (IPv6) anyway.
    pub force: bool,
}

/// `sekisho bans add`: bans `req.net` in the running proxy (it saves its state file).
pub fn ban_add(addr: SocketAddr, req: &BanRequest, json: bool) -> Result<String, String> {
    let mut path = format!("/admin/bans?net={}", encode(&req.net));
    if let Some(t) = &req.ttl {
        path.push_str(&format!("&ttl={}", encode(t)));
    }
    if let Some(r) = &req.reason {
        path.push_str(&format!("&reason={}", encode(r)));
    }
    if req.force {
        path.push_str("&force=true");
    }
    let (status, body) = request(addr, "POST", &path)?;
    let v: serde_json::Value = serde_json::from_str(&body)
        .map_err(|_| format!("{addr}: {status}: {}", body.trim_end()))?;
    if status != 200 {
        return Err(format!("{addr}: {status}: {}", show_error(&v)));
    }
    if json {
        return Ok(pretty(&v));
    }
    let b = &v["ban"];
    let now = crate::proxy::unix_now();
    let mut out = format!(
        "{}: {} until {} ({})\n",
        v["result"].as_str().unwrap_or("banned"),
        b["net"].as_str().unwrap_or(&req.net),
        show::when(b["until"].as_u64().unwrap_or(now), now),
        b["reason"].as_str().unwrap_or("")
    );
    for key in ["warning", "save_error"] {
        if let Some(w) = v[key].as_str() {
            out.push_str(&format!("{}: {w}\n", key.replace('_', " ")));
        }
    }
    Ok(out)
}

/// `sekisho bans remove`: lifts the ban on exactly `net` in the running proxy.
pub fn ban_remove(addr: SocketAddr, net: &str, json: bool) -> Result<String, String> {
    let (status, body) = request(addr, "DELETE", &format!("/admin/bans?net={}", encode(net)))?;
    let v: serde_json::Value = serde_json::from_str(&body)
        .map_err(|_| format!("{addr}: {status}: {}", body.trim_end()))?;
    match status {
        200 if json => Ok(pretty(&v)),
        200 => Ok(format!(
            "unbanned: {}{}\n",
            v["net"].as_str().unwrap_or(net),
            v["save_error"]
                .as_str()
                .map(|e| format!("\nsave error: {e}"))
                .unwrap_or_default()
        )),
        404 => Err(format!(
            "{}: not banned (give the network exactly as `sekisho bans list` shows it)",
            v["net"].as_str().unwrap_or(net)
        )),
        _ => Err(format!("{addr}: {status}: {}", show_error(&v))),
    }
}

fn show_error(v: &serde_json::Value) -> String {
    v["error"]
        .as_str()
        .map_or_else(|| v.to_string(), str::to_string)
}

/// `s` percent-encoded for a query value: everything but unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `sekisho attack on|off|auto|status|preview` against the admin listener at `addr`.
pub fn attack(addr: SocketAddr, switch: &str) -> Result<String, String> {
    let (method, path) = match switch {
        "status" => ("GET", "/admin/under-attack".to_string()),
        "preview" => ("GET", "/admin/under-attack/preview".to_string()),
        s => ("POST", format!("/admin/under-attack?switch={s}")),
    };
    match request(addr, method, &path)? {
        (200, body) => Ok(body),
        (status, body) => Err(format!("{addr}: {status}: {body}")),
    }
}

/// `sekisho bans list` (`export: None`) or `sekisho bans export`: from the admin listener
/// (`--admin`), a state file (`--state`), or the config's `bans.state_file`. Warnings (a
/// missing state file, bans the allow list kept out) go to stderr.
pub fn bans(
    config_path: &Path,
    source: &BanSource,
    export: Option<&ExportRequest>,
    json: bool,
) -> Result<String, String> {
    let now = crate::proxy::unix_now();
    if let Some(addr) = source.admin {
        return bans_from_admin(addr, export, json);
    }
    // The config gives the state file's path and the allow list to keep out of exports.
    let loaded = load(config_path);
    let path = match (&source.state, &loaded) {
        (Some(p), _) => p.clone(),
        (None, Ok(c)) => c.defense.state_file.clone().ok_or_else(|| {
            format!(
                "{}: bans.state_file is off; give --admin",
                config_path.display()
            )
        })?,
        (None, Err(e)) => {
            return Err(format!(
                "{e}\n{}: cannot find bans.state_file; give --state or --admin",
                config_path.display()
            ))
        }
    };
    let config = match loaded {
        Ok(c) => Some(c),
        Err(e) => {
            if export.is_some() {
                eprintln!(
                    "warning: {e}\n{}: cannot read the allow list: it is not applied to this export",
                    config_path.display()
                );
            }
            None
        }
    };
    let records = match store::read(&path).map_err(|e| e.to_string())? {
        Loaded::Missing => {
            eprintln!(
                "warning: no state file at {} (no ban saved yet? under systemd it is in $STATE_DIRECTORY, e.g. --state /var/lib/sekisho/sekisho-bans.json; or ask the proxy with --admin)",
                path.display()
            );
            Vec::new()
        }
        Loaded::State(s) => s.bans,
        Loaded::Corrupt { error, .. } => return Err(error.to_string()),
    };
    let Some(x) = export else {
        let live: Vec<&BanRecord> = records.iter().filter(|r| r.until > now).collect();
        let v = serde_json::to_value(&live).map_err(|e| e.to_string())?;
        return Ok(if json {
            pretty(&v)
        } else {
            show::bans(v.as_array().map_or(&[], Vec::as_slice), now)
        });
    };
    let options = ExportOptions {
        max_entries: x.max,
        aggregate: x.aggregate,
    };
    let allow = config.as_ref().map(|c| &*c.policy.allow);
    let e = crate::defense::export_records(&records, now, &x.format, &options, allow)
        .map_err(|e| e.to_string())?;
    if e.allow_listed > 0 {
        eprintln!(
            "note: {} ban(s) overlapping the allow list left out",
            e.allow_listed
        );
    }
    Ok(e.text)
}

fn bans_from_admin(
    addr: SocketAddr,
    export: Option<&ExportRequest>,
    json: bool,
) -> Result<String, String> {
    let Some(x) = export else {
        let v = get_json(addr, "/admin/bans")?;
        return Ok(if json {
            pretty(&v["bans"])
        } else {
            let now = v["now"].as_u64().unwrap_or_else(crate::proxy::unix_now);
            show::bans(v["bans"].as_array().map_or(&[], Vec::as_slice), now)
        });
    };
    let mut path = format!(
        "/admin/bans/export?format={}&aggregate={}",
        x.format, x.aggregate
    );
    if let Some(m) = x.max {
        path.push_str(&format!("&max={m}"));
    }
    match request(addr, "GET", &path)? {
        (200, body) => Ok(body),
        (status, body) => Err(format!("{addr}: {status}: {body}")),
    }
}
