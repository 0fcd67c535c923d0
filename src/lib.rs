//! sekisho: an inline reverse proxy that judges every request before it reaches the origin.
//!
//! The decision path ([`engine`], [`limiter`], [`iplist`]) is pure and knows nothing of
//! Pingora; [`proxy`] is the thin glue that feeds it a request's facts and writes the answer.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod defense;
pub mod engine;
pub mod fuzzing;
pub mod geo;
pub mod iplist;
pub mod limiter;
pub mod metrics;
pub mod origin;
pub mod proxy;
pub mod reload;
pub mod replay;
pub mod server;
pub mod tls;
