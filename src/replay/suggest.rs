//! `sekisho suggest`: limits proposed from a log's traffic.
//!
//! (being written)

use std::path::Path;
use std::process::ExitCode;

/// `sekisho suggest` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct SuggestArgs {
    /// Log files (plain or gzip); `-` for stdin.
    #[arg(required = true)]
    pub logs: Vec<std::path::PathBuf>,
    /// The log format, or `auto` to detect it from the first lines.
    #[arg(long, default_value = "auto")]
    pub format: String,
    /// The share of well-behaved keys (never answered a 4xx) a suggested limit may refuse.
    #[arg(long, default_value = "0.1%")]
    pub max_refused: String,
}

/// Runs `sekisho suggest` on the config at `config`.
pub fn main(config: &Path, args: &SuggestArgs) -> ExitCode {
    let _ = (config, args);
    eprintln!("sekisho suggest: not written yet");
    ExitCode::from(2)
}
