//! `sekisho explain`: how one request is judged, list by list and rule by rule.
//!
//! (being written)

use std::path::Path;
use std::process::ExitCode;

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
    let _ = (config, args);
    eprintln!("sekisho explain: not written yet");
    ExitCode::from(2)
}
