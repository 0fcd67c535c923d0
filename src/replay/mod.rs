//! Tuning before enforcing: `sekisho replay` judges the requests of access logs with a
//! candidate config, as the proxy would have judged them live; `sekisho explain` shows how one
//! request is judged, rule by rule; `sekisho suggest` proposes limits from a log's traffic.
//!
//! Every consumer here calls the engine's own [`crate::engine::Policy::judge`], with the log's
//! timestamps as the clock, and the proxy's own client resolution ([`crate::proxy::resolve`])
//! and country lookup. Nothing here opens a socket except `explain --admin`.
//!
//! - [`formats`]: one parser per log format, and format detection;
//! - [`input`]: files (plain or gzip, several members), stdin, lines with their numbers;
//! - [`run`]: the ordered, clocked run of `judge` and autoban over parsed requests;
//! - [`report`]: what a run found, as a terminal summary and JSON; [`html`]: as one HTML file;
//! - [`explain`], [`suggest`]: the other two commands.

pub mod explain;
pub mod formats;
pub mod html;
pub mod input;
pub mod report;
pub mod run;
pub mod stats;
pub mod suggest;
pub mod synth;
