//! Connection-layer limits and deadlines, used by every listener. Each piece is pure logic (the
//! limits, what was received and when, in; what to do, out); the proxy applies it to Pingora's
//! sessions. Must not know rules, nor touch a socket itself.

pub mod body;
