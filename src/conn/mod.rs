//! Connection-layer limits and deadlines, used by every listener. Each piece is pure logic (the
//! limits, what was received and when, in; what to do, out); the proxy applies it to Pingora's
//! sessions. Must not know rules, nor touch a socket itself.
//!
//! - [`table`]: open connections, in all and per client, and the idle ones
//!   (`connections.max_open`, `per_client.max_open`);
//! - [`body`]: the deadline of each read of a request body (`body_timeout`, `body_min_rate`);
//! - [`frames`]: an HTTP/2 client's frames against its per-connection budgets (Rapid Reset,
//!   PING, SETTINGS, empty DATA and CONTINUATION floods).

pub mod body;
pub mod frames;
pub mod table;

pub use table::{Admission, Caps, Idle, Open, Refusal, Table, UNCLAIMED};
