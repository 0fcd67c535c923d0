//! Reloading: build a new snapshot off the request path, then swap it in whole.
//!
//! A config that fails validation never replaces the one serving: the error is logged with its
//! position and the old snapshot stays. Settings that need a restart (listen addresses,
//! threads, the limiter's size) are reported as warnings while the rest reloads.
//! Triggers here: `SIGHUP` (what `systemctl reload` sends). File watching comes later.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::{self, ConfigErrors};
use crate::limiter::Clock;
use crate::proxy::{Snapshot, State};

/// Re-reads the config file the current snapshot came from; returns the new generation.
pub fn reload(state: &State) -> Result<u64, ConfigErrors> {
    let old = state.snapshot.load_full();
    let new = config::load(&old.config.path, &state.slots)?;
    let o = &old.config;
    if new.listen != o.listen {
        tracing::warn!(old = ?o.listen, new = ?new.listen, "listen changed: takes effect after a restart");
    }
    if new.threads != o.threads {
        tracing::warn!(
            old = o.threads,
            new = new.threads,
            "threads changed: takes effect after a restart"
        );
    }
    if new.max_tracked_keys != o.max_tracked_keys {
        tracing::warn!(
            old = o.max_tracked_keys,
            new = new.max_tracked_keys,
            "max_tracked_keys changed: takes effect after a restart"
        );
    }
    if new.upstream_options.pool_size != o.upstream_options.pool_size {
        tracing::warn!("upstream_options.pool_size changed: takes effect after a restart");
    }
    if new.grace_period != o.grace_period
        || new.graceful_shutdown_timeout != o.graceful_shutdown_timeout
    {
        tracing::warn!("shutdown timeouts changed: take effect after a restart");
    }
    let generation = old.generation + 1;
    state
        .snapshot
        .store(Arc::new(Snapshot::new(new, generation)));
    Ok(generation)
}

/// Background work: reload on `SIGHUP`, and sweep refilled buckets every few seconds.
pub struct Housekeeping {
    state: Arc<State>,
}

impl Housekeeping {
    /// Housekeeping for `state`.
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

#[async_trait]
impl BackgroundService for Housekeeping {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!("cannot listen for SIGHUP, reload by signal is off: {e}");
                None
            }
        };
        let mut sweep = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = sweep.tick() => {
                    let dropped = self.state.limiter.sweep(self.state.clock.now());
                    tracing::trace!(dropped, "limiter sweep");
                }
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    match reload(&self.state) {
                        Ok(generation) => tracing::info!(generation, "config reloaded (SIGHUP)"),
                        Err(errors) => {
                            for e in &errors.0 {
                                tracing::error!("reload rejected, old config still serving: {e}");
                            }
                        }
                    }
                }
            }
        }
    }
}
