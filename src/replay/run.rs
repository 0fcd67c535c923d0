//! The replay run: parsed requests in time order, judged by the engine with the log's clock.
//!
//! (being written)

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `sekisho replay` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Access logs (plain or gzip, several gzip members in one file too); `-` for stdin.
    #[arg(required = true)]
    pub logs: Vec<PathBuf>,
    /// The log format, or `auto` to detect it from the first lines of each log.
    #[arg(long, default_value = "auto")]
    pub format: String,
    /// The config in force now: report what changes from it to the candidate (`-c`).
    #[arg(long)]
    pub against: Option<PathBuf>,
    /// Write a self-contained HTML report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Print the result as one JSON object instead of the terminal summary.
    #[arg(long)]
    pub json: bool,
    /// Judge with the under-attack profile switched on.
    #[arg(long)]
    pub under_attack: bool,
}

/// Runs `sekisho replay` with the candidate config at `config`.
pub fn main(config: &Path, args: &ReplayArgs) -> ExitCode {
    let _ = (config, args);
    eprintln!("sekisho replay: not written yet");
    ExitCode::from(2)
}
