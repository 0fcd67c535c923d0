//! The client side of `sekisho bans` and `sekisho attack`: read the state file or ask the
//! running proxy's admin listener, and print. `main.rs` parses the arguments and calls these.

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
) -> Result<String, String> {
    let now = crate::proxy::unix_now();
    if let Some(addr) = source.admin {
        return bans_from_admin(addr, export);
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
        return serde_json::to_string_pretty(&live)
            .map(|t| t + "\n")
            .map_err(|e| e.to_string());
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

fn bans_from_admin(addr: SocketAddr, export: Option<&ExportRequest>) -> Result<String, String> {
    let Some(x) = export else {
        let (status, body) = request(addr, "GET", "/admin/bans")?;
        if status != 200 {
            return Err(format!("{addr}: {status}: {body}"));
        }
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{addr}: bad answer: {e}"))?;
        return serde_json::to_string_pretty(&v["bans"])
            .map(|t| t + "\n")
            .map_err(|e| e.to_string());
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
