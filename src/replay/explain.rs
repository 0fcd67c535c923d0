//! `sekisho explain`: how one request is judged, list by list and rule by rule.
//!
//! Offline it loads the config (`-c`) and explains against it with full buckets, no bans and
//! the under-attack switch off; with `--admin` it asks the running proxy
//! (`GET /admin/explain`), which explains against its live config and reads the live state of
//! the request's buckets and ban. Both answers are the JSON of [`crate::admin::explain`]; this
//! command prints it (`--json`) or lays it out as one line per step.

use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;

use crate::admin::client::request;
use crate::admin::explain::{explain, Request, DEFAULT_PEER};
use crate::engine::SlotRegistry;

/// `sekisho explain` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ExplainArgs {
    /// The client address (default 192.0.2.1). Where the config trusts it as a proxy, the
    /// client is taken from the forwarding header given with -H, as live.
    #[arg(long)]
    pub ip: Option<std::net::IpAddr>,
    /// A request header, `Name: value` (repeatable): Host, User-Agent, X-Forwarded-For, ...
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// The client's country (ISO code), instead of a lookup.
    #[arg(long)]
    pub country: Option<String>,
    /// The client's TLS fingerprint (JA4), for rules that match or key on it (default: none,
    /// as over plaintext).
    #[arg(long)]
    pub ja4: Option<String>,
    /// Ask the running proxy's admin listener, and show the live state of the request's keys
    /// (tokens left, the next token, its ban).
    #[arg(long)]
    pub admin: Option<std::net::SocketAddr>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// The method, e.g. GET.
    pub method: String,
    /// The URL or path, e.g. https://shop.example/login?x=1 or /login.
    pub url: String,
}

/// Runs `sekisho explain` on the config at `config`.
pub fn main(config: &Path, args: &ExplainArgs) -> ExitCode {
    let req = Request {
        method: args.method.clone(),
        url: args.url.clone(),
        peer: args.ip.unwrap_or(DEFAULT_PEER),
        headers: args.headers.clone(),
        country: args.country.clone(),
        ja4: args.ja4.clone(),
    };
    let answer = match args.admin {
        Some(addr) => match ask(addr, &req) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("sekisho explain: {e}");
                return ExitCode::from(1);
            }
        },
        None => {
            let Some(c) = load(config) else {
                return ExitCode::from(1);
            };
            match explain(&c, &req, None) {
                Ok(mut v) => {
                    v["config"] = Value::from(config.display().to_string());
                    v
                }
                Err(e) => {
                    eprintln!("sekisho explain: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&answer).unwrap_or_default()
        );
    } else {
        print!("{}", text(&answer));
    }
    if answer["agrees"] == Value::Bool(false) {
        eprintln!(
            "sekisho explain: the steps above imply {}, the engine decides {}: a bug, please report it",
            answer["decision"]["text"], answer["engine_decision"]["text"]
        );
        return ExitCode::from(3);
    }
    ExitCode::SUCCESS
}

/// The config at `path`, or `None` after printing its errors as `sekisho check` does.
fn load(path: &Path) -> Option<crate::config::Config> {
    match crate::config::load(path, &SlotRegistry::default()) {
        Ok(c) => Some(c),
        Err(errors) if errors.is_whole_file() => {
            eprintln!("sekisho: {errors}");
            None
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            None
        }
    }
}

/// `GET /admin/explain` for `req` on the admin listener at `addr`.
fn ask(addr: std::net::SocketAddr, req: &Request) -> Result<Value, String> {
    let mut query = format!(
        "method={}&url={}&ip={}",
        encode(&req.method),
        encode(&req.url),
        req.peer
    );
    for h in &req.headers {
        query.push_str(&format!("&header={}", encode(h)));
    }
    for (name, v) in [("country", &req.country), ("ja4", &req.ja4)] {
        if let Some(v) = v {
            query.push_str(&format!("&{name}={}", encode(v)));
        }
    }
    let (status, body) = request(addr, "GET", &format!("/admin/explain?{query}"))?;
    let v: Value = serde_json::from_str(&body).map_err(|e| match status {
        404 => format!("{addr}: this proxy has no /admin/explain (an older sekisho?)"),
        _ => format!("{addr}: {status}: not a JSON answer: {e}"),
    })?;
    match status {
        200 => Ok(v),
        _ => Err(format!(
            "{addr}: {status}: {}",
            v["error"].as_str().unwrap_or(body.trim_end())
        )),
    }
}

/// `%XX` for every byte but the unreserved ones.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The explanation as text: the request and client, one line per step, the decision.
pub fn text(v: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let r = &v["request"];
    let c = &v["client"];
    let mut out = String::new();
    let host = match s(&r["host"]) {
        h if h.is_empty() => "no host".to_string(),
        h => format!("host {h}"),
    };
    let ua = match s(&r["user_agent"]) {
        u if u.is_empty() => "no user agent".to_string(),
        u => format!("user agent {u:?}"),
    };
    out.push_str(&format!(
        "request: {} {}  (path {}, {host}, {ua})\n",
        s(&r["method"]),
        s(&r["url"]),
        s(&r["path"])
    ));
    out.push_str(&format!(
        "client:  {} ({}), country {} ({})\n",
        s(&c["ip"]),
        s(&c["via"]),
        s(&c["country"]),
        s(&c["country_source"])
    ));
    match (v["live"].as_bool(), v["generation"].as_u64()) {
        (Some(true), Some(g)) => out.push_str(&format!(
            "against: the running proxy (config {}, generation {g}), under attack: {}\n",
            s(&v["config"]),
            if v["under_attack"] == Value::Bool(true) {
                "on"
            } else {
                "off"
            }
        )),
        _ => out.push_str(&format!(
            "against: {} (full buckets, no bans, the under-attack switch off)\n",
            s(&v["config"])
        )),
    }
    let steps = v["steps"].as_array().map(Vec::as_slice).unwrap_or_default();
    let width = steps
        .iter()
        .map(|st| s(&st["label"]).chars().count())
        .max()
        .unwrap_or(0);
    for st in steps {
        out.push_str(&format!(
            "  {:width$}  {}\n",
            s(&st["label"]),
            s(&st["text"])
        ));
    }
    out.push_str(&format!("decision: {}\n", s(&v["decision"]["text"])));
    if let Some(p) = v["preview"].as_str() {
        out.push_str(&format!(
            "under attack: the profile rule {p} would refuse it (the switch is off)\n"
        ));
    }
    if v["live"] == Value::Bool(true) && v["engine_decision"] != v["decision"] {
        out.push_str(&format!(
            "with full buckets: {}\n",
            s(&v["engine_decision"]["text"])
        ));
    }
    out
}
