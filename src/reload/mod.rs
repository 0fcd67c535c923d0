//! Reloading: build a new snapshot off the request path, then swap it in whole.
//!
//! Triggers: a change to the config file or a list file it names (a `notify` watch on their
//! folders, robust to rename-replace and symlink swaps, debounced, confirmed by file stamps and
//! content hashes), a periodic stamp check with a slower content-hash check as fallback,
//! `SIGHUP` (what `systemctl reload` sends) and `POST /admin/reload`. All reloads run one at a
//! time in one task, on a blocking thread, never on a request.
//!
//! A config that fails validation never replaces the one serving: the error is logged with its
//! position (the same text `sekisho check` prints) and counted, and the old snapshot stays.
//! Settings that need a restart (listen addresses, threads, the limiter's size, the admin
//! listener) are reported as warnings while the rest reloads. In-flight requests finish on the
//! snapshot they started with; the limiter lives outside the snapshot, so buckets of unchanged
//! rules survive (see [`crate::engine::SlotRegistry`]).

mod watch;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::{mpsc, oneshot};

use crate::config::{self, ConfigErrors};
use crate::defense::attack::{Switched, Totals};
use crate::defense::store::{Clocks, StoreError};
use crate::limiter::Clock;
use crate::proxy::{unix_now, Snapshot, State};
pub use watch::FileWatch;

/// The result an admin reload request waits for.
pub type ReloadReply = Result<ReloadDone, Vec<String>>;

/// A successful reload.
#[derive(Debug, Clone)]
pub struct ReloadDone {
    /// The generation now serving.
    pub generation: u64,
    /// Parse + build + swap, in milliseconds.
    pub duration_ms: u64,
    /// The new config's warnings, as `check` prints them (also logged).
    pub warnings: Vec<String>,
}

/// A request to reload, from outside the housekeeping task.
#[derive(Debug)]
pub enum Trigger {
    /// `POST /admin/reload`; the reply says how it went.
    Admin(oneshot::Sender<ReloadReply>),
}

/// Frees a replaced snapshot off the request threads (its lists can hold millions of entries),
/// on a thread of its own so that the reload's reply does not wait, once the requests that
/// still hold it are done. After one second (a WebSocket tunnel may hold one for hours) it is
/// left to whoever lets go of it last.
fn retire(old: Arc<Snapshot>) {
    let spawned = std::thread::Builder::new()
        .name("sekisho-retire".into())
        .spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(1);
            while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            drop(old);
        });
    if let Err(e) = spawned {
        tracing::debug!(error = %e, "no thread to retire the old snapshot on; it is freed on the reload thread");
    }
}

/// Re-reads the config the current snapshot came from, and swaps it in if valid. List files
/// whose stamp is unchanged are not read again unless `full`; a file whose content is
/// unchanged is never parsed again.
pub fn reload(state: &State, full: bool, cause: &str) -> Result<ReloadDone, ConfigErrors> {
    let started = Instant::now();
    let old = state.snapshot.load_full();
    let result = {
        let mut cache = state.list_cache.lock();
        if full {
            cache.distrust_stamps();
        }
        config::load_cached(&old.config.path, &state.slots, &mut cache)
    };
    let stats = &state.reloads;
    let new = match result {
        Ok(new) => new,
        Err(errors) => {
            state.metrics.reloads.with_label_values(&["error"]).inc();
            *stats.last_error.lock() = Some(errors.to_string());
            for e in &errors.0 {
                tracing::error!(cause, "reload rejected, the running config stays: {e}");
            }
            return Err(errors);
        }
    };
    warn_restart_only(&old.config, &new);
    let warnings: Vec<String> = new.warnings.iter().map(ToString::to_string).collect();
    for w in &warnings {
        tracing::warn!(cause, "reloaded config: {w}");
    }
    let generation = old.generation + 1;
    state.slots.commit(&new.policy);
    if let Some(c) = &state.cluster {
        c.set_policy(&new.policy);
    }
    let v6_prefix = new.client_ip.ipv6_prefix;
    let auto = new.defense.auto.is_some();
    state
        .snapshot
        .store(Arc::new(Snapshot::new(new, generation, &state.metrics)));
    // Bans follow the client key's IPv6 prefix; the switch follows the config unless set by hand.
    state.defense.bans.rekey(v6_prefix, state.clock.now());
    if let Some(switched) = state
        .defense
        .attack
        .reconfigure(auto, crate::proxy::unix_now())
    {
        announce_switch(state, &switched);
    }
    let duration_ms = started.elapsed().as_millis() as u64;
    state.metrics.reloads.with_label_values(&["ok"]).inc();
    state
        .metrics
        .last_reload_success
        .set(crate::proxy::unix_now() as i64);
    stats.last_duration_ms.store(duration_ms, Ordering::Relaxed);
    *stats.last_error.lock() = None;
    tracing::info!(cause, generation, duration_ms, "config reloaded");
    retire(old);
    Ok(ReloadDone {
        generation,
        duration_ms,
        warnings,
    })
}

fn warn_restart_only(o: &config::Config, n: &config::Config) {
    let mut changed = Vec::new();
    if n.listen != o.listen {
        changed.push("listen");
    }
    if n.threads != o.threads {
        changed.push("threads");
    }
    if n.work_stealing != o.work_stealing {
        changed.push("work_stealing");
    }
    if n.max_tracked_keys != o.max_tracked_keys {
        changed.push("max_tracked_keys");
    }
    if n.upstream_options.pool_size != o.upstream_options.pool_size {
        changed.push("upstream_options.pool_size");
    }
    if n.admin_listen != o.admin_listen {
        changed.push("admin.listen");
    }
    if n.grace_period != o.grace_period
        || n.graceful_shutdown_timeout != o.graceful_shutdown_timeout
    {
        changed.push("grace_period/graceful_shutdown_timeout");
    }
    if n.upgrade_socket != o.upgrade_socket {
        changed.push("upgrade_socket");
    }
    if n.reload != o.reload {
        changed.push("reload");
    }
    if n.decision_log != o.decision_log {
        changed.push("decision_log");
    }
    if n.connections.max_requests_per_connection != o.connections.max_requests_per_connection {
        changed.push("connections.max_requests_per_connection");
    }
    if n.cluster != o.cluster {
        changed.push("cluster");
    }
    let (nd, od) = (&n.defense, &o.defense);
    if nd.state_file != od.state_file
        || nd.max_bans != od.max_bans
        || nd.max_tracked_offenders != od.max_tracked_offenders
        || nd.ipv6_escalate_after != od.ipv6_escalate_after
    {
        changed.push("bans");
    }
    for field in changed {
        tracing::warn!(
            field,
            "changed in the file but takes effect only after a restart; the rest was reloaded"
        );
    }
}

/// Background work: every reload trigger, and the limiter sweep.
pub struct Housekeeping {
    state: Arc<State>,
    triggers: Mutex<Option<mpsc::Receiver<Trigger>>>,
}

impl Housekeeping {
    /// Housekeeping for `state`, taking admin triggers from `triggers`.
    pub fn new(state: Arc<State>, triggers: mpsc::Receiver<Trigger>) -> Self {
        Self {
            state,
            triggers: Mutex::new(Some(triggers)),
        }
    }

    /// Runs [`reload`] on a blocking thread. `changed`: files a scan found changed (their
    /// cached parse is dropped even if their stamp looks the same).
    async fn reload(
        &self,
        files: &mut FileWatch,
        full: bool,
        cause: &'static str,
        changed: Vec<std::path::PathBuf>,
    ) -> ReloadReply {
        if full {
            // Record what the files hold before reading them, so that a change made during
            // the reload is noticed by the next check.
            let snap = self.state.snapshot.load_full();
            files.scan(&watched_files(&snap), false);
        }
        {
            let mut cache = self.state.list_cache.lock();
            for p in &changed {
                cache.forget(p);
            }
        }
        let state = self.state.clone();
        let result = tokio::task::spawn_blocking(move || reload(&state, full, cause)).await;
        let reply = match result {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(errors)) => Err(errors.0.iter().map(ToString::to_string).collect()),
            Err(e) => Err(vec![format!("reload task failed: {e}")]),
        };
        // The new config may name other files: watch those from now on.
        let snap = self.state.snapshot.load_full();
        files.watch_folders(&watched_files(&snap));
        files.adopt(&watched_files(&snap));
        reply
    }
}

impl Housekeeping {
    /// Writes the ban state file if bans changed (off the async threads: it fsyncs).
    async fn save_bans(&self, force: bool) {
        let state = self.state.clone();
        let _ = tokio::task::spawn_blocking(move || save_bans(&state, force).is_ok()).await;
    }
}

/// Writes the ban state file if bans changed (or `force`), counting the outcome. Blocking.
pub fn save_bans(state: &State, force: bool) -> Result<bool, StoreError> {
    let clocks = Clocks {
        mono: state.clock.now(),
        unix: unix_now(),
    };
    let result = state.defense.save(clocks, force);
    match &result {
        Ok(true) => state.metrics.state_saves.with_label_values(&["ok"]).inc(),
        Ok(false) => {}
        Err(_) => state
            .metrics
            .state_saves
            .with_label_values(&["error"])
            .inc(),
    }
    result
}

/// Once a second: feed the under-attack detector, and every tenth second mark the preview.
fn defense_tick(state: &State, mark: bool) {
    let snap = state.snapshot.load();
    let policy = &snap.config.policy;
    let profile: std::collections::HashSet<&str> = policy.rules
        [policy.profile_from.min(policy.rules.len())..]
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    let (requests, refused) = state.metrics.request_totals(&profile);
    let totals = Totals {
        requests,
        refused,
        upstream_5xx: state.metrics.upstream_class(5),
    };
    let now = state.clock.now();
    let d = &state.defense;
    if let Some(switched) =
        d.attack
            .sample(snap.config.defense.auto.as_ref(), totals, now, unix_now())
    {
        announce_switch(state, &switched);
    }
    if mark {
        d.preview.mark(now, totals.requests, would_refuse(state));
    }
}

/// The would-refuse totals of the profile's rules, by name.
pub fn would_refuse(state: &State) -> std::collections::HashMap<String, u64> {
    let snap = state.snapshot.load();
    let policy = &snap.config.policy;
    policy.rules[policy.profile_from.min(policy.rules.len())..]
        .iter()
        .zip(&snap.series.would_refuse)
        .map(|(r, c)| (r.name.clone(), c.get()))
        .collect()
}

/// Logs and counts a switch of the under-attack profile.
pub fn announce_switch(state: &State, switched: &Switched) {
    let to = if switched.on { "on" } else { "off" };
    state.metrics.under_attack.set(i64::from(switched.on));
    state
        .metrics
        .under_attack_switches
        .with_label_values(&[to])
        .inc();
    tracing::warn!(target: "sekisho::audit", to, reason = %switched.reason, "under-attack profile switched {to}");
}

fn watched_files(snap: &Snapshot) -> Vec<std::path::PathBuf> {
    let mut v = Vec::with_capacity(snap.config.list_files.len() + 1);
    v.push(snap.config.path.clone());
    v.extend(snap.config.list_files.iter().cloned());
    v
}

#[async_trait]
impl BackgroundService for Housekeeping {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut triggers = self.triggers.lock().take();
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!("cannot listen for SIGHUP, reload by signal is off: {e}");
                None
            }
        };
        let settings = self.state.snapshot.load().config.reload.clone();
        let (events_tx, mut events) = mpsc::unbounded_channel::<()>();
        let mut files = FileWatch::new(settings.watch.then_some(events_tx));
        let changed_while_starting = {
            // What the files hold now is compared with what the running config was built
            // from: a change made since they were read is reloaded at once.
            let snap = self.state.snapshot.load_full();
            let watched = watched_files(&snap);
            files.watch_folders(&watched);
            files.scan(&watched, true);
            files.differing(&snap.config.loaded_hashes)
        };
        if !changed_while_starting.is_empty() {
            let _ = self
                .reload(
                    &mut files,
                    false,
                    "files changed while starting",
                    changed_while_starting,
                )
                .await;
        }
        let early_hup = self.state.early_hup.lock().take();
        if early_hup.is_some_and(|f| f.load(Ordering::Relaxed)) {
            let _ = self
                .reload(&mut files, true, "SIGHUP (before start)", Vec::new())
                .await;
        }
        let mut sweep = tokio::time::interval(Duration::from_secs(10));
        let mut second = tokio::time::interval(Duration::from_secs(1));
        second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seconds: u64 = 0;
        let mut poll = tokio::time::interval(settings.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut polls: u64 = 0;
        let mut pending: Option<tokio::time::Instant> = None;
        loop {
            let debounce = async {
                match pending {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.changed() => {
                    self.save_bans(false).await;
                    return;
                }
                _ = sweep.tick() => {
                    let now = self.state.clock.now();
                    let dropped = self.state.limiter.sweep(now);
                    let offenders = self.state.defense.offenders.sweep(now);
                    let bans = self.state.defense.bans.sweep(now);
                    let idle_for = self.state.snapshot.load().config.upstream_options.idle_timeout;
                    let upstream_idle = self.state.conns.sweep(now, crate::limiter::nanos(idle_for));
                    self.state.defense.sweep(now);
                    tracing::trace!(dropped, offenders, bans, upstream_idle, "sweep");
                }
                _ = second.tick() => {
                    seconds += 1;
                    defense_tick(&self.state, seconds % 10 == 1);
                    self.save_bans(false).await;
                }
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    let _ = self.reload(&mut files, true, "SIGHUP", Vec::new()).await;
                }
                Some(t) = async { match triggers.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                    match t {
                        Trigger::Admin(reply) => {
                            let r = self.reload(&mut files, true, "admin", Vec::new()).await;
                            let _ = reply.send(r);
                        }
                    }
                }
                Some(()) = events.recv() => {
                    // Wait for the writes to settle, then look.
                    pending = Some(tokio::time::Instant::now() + settings.debounce);
                }
                () = debounce => {
                    pending = None;
                    let snap = self.state.snapshot.load_full();
                    let changed = files.scan(&watched_files(&snap), false);
                    if !changed.is_empty() {
                        let _ = self.reload(&mut files, false, "file change", changed).await;
                    }
                }
                _ = poll.tick() => {
                    polls += 1;
                    let snap = self.state.snapshot.load_full();
                    // Stamps every tick; content hashes every 15th, for changes that kept them.
                    let changed = files.scan(&watched_files(&snap), polls % 15 == 0);
                    if !changed.is_empty() {
                        let _ = self.reload(&mut files, false, "file change (poll)", changed).await;
                    }
                }
            }
        }
    }
}

/// What the fleet sync reads and changes of the process.
impl crate::cluster::sync::Host for State {
    fn limiter(&self) -> &crate::limiter::Limiter {
        &self.limiter
    }

    fn defense(&self) -> &crate::defense::Defense {
        &self.defense
    }

    fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    fn now(&self) -> crate::limiter::Nanos {
        crate::limiter::Clock::now(&self.clock)
    }

    fn announce_switch(&self, switched: &Switched) {
        announce_switch(self, switched);
    }
}
