//! The graceful stop and the upgrade hand-over, driven here instead of by Pingora's fixed waits.
//!
//! Pingora's `Server::run` sleeps the whole `grace_period` after `SIGTERM` (and 5 s more after
//! handing its sockets over on `SIGQUIT`), whether or not a request is still in flight. So
//! sekisho gives Pingora a grace period of 0 and its own signal watch ([`Signals`], through
//! Pingora's public `RunArgs`), and its listening services ([`super::listeners::Prebound`])
//! follow [`Stop`]'s watch rather than Pingora's. On `SIGTERM` the watch turns: the listeners
//! stop accepting and idle keep-alive clients are let go; then the signal watch waits until no
//! request is in flight, or `grace_period` has passed, and only then returns to Pingora, which
//! shuts its runtimes down. On `SIGQUIT` the ban state file is saved and left to the new process,
//! the listening sockets are sent to it over `upgrade_socket`, and the stop goes on as for
//! `SIGTERM`; if no new process takes them, this one keeps serving. `SIGUSR2` does the same
//! after starting that new process itself (`sekisho run --upgrade` from the binary's path, which
//! now holds the new build): under systemd the new process is then one of the unit's, in its
//! sandbox, and tells systemd it is the main process ([`notify_main_pid`]). `SIGINT` stops at
//! once.
//! What runs after Pingora returns (saving bans, flushing the logs) is [`finish`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::server::{ListenFds, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

use crate::defense::store::Clocks;
use crate::limiter::Clock;
use crate::proxy::{unix_now, State};

/// How often the in-flight count is looked at while stopping.
const POLL: Duration = Duration::from_millis(10);

/// How long the logs get to write what is queued when the process ends.
const FLUSH_LIMIT: Duration = Duration::from_secs(2);

/// The stop every listening service follows, and the listening sockets to hand over.
pub struct Stop {
    tx: watch::Sender<bool>,
    fds: Mutex<Option<ListenFds>>,
}

impl Stop {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            tx: watch::channel(false).0,
            fds: Mutex::new(None),
        })
    }

    /// The watch a listening service stops on (true: stop accepting).
    pub fn watch(&self) -> ShutdownWatch {
        self.tx.subscribe()
    }

    /// The table of listening sockets (Pingora's, the same for every service), to hand over.
    pub fn adopt(&self, fds: ListenFds) {
        self.fds.lock().get_or_insert(fds);
    }

    fn begin(&self) {
        self.tx.send_replace(true);
    }
}

/// The stop signals, caught from the start (before Pingora runs the watch below, a `SIGTERM`
/// would otherwise kill the process at once): each sets its flag until the watch listens.
pub struct Early {
    term: Arc<AtomicBool>,
    quit: Arc<AtomicBool>,
    usr2: Arc<AtomicBool>,
}

impl Early {
    pub fn catch() -> Self {
        let flag = |signal: i32| {
            let f = Arc::new(AtomicBool::new(false));
            if let Err(e) = signal_hook::flag::register(signal, f.clone()) {
                tracing::warn!("cannot catch signal {signal} early: {e}");
            }
            f
        };
        use signal_hook::consts::{SIGQUIT, SIGTERM, SIGUSR2};
        Self {
            term: flag(SIGTERM),
            quit: flag(SIGQUIT),
            usr2: flag(SIGUSR2),
        }
    }
}

/// Pingora's shutdown signal watch, replaced: see the module docs.
pub struct Signals {
    pub early: Early,
    pub stop: Arc<Stop>,
    pub state: Arc<State>,
    pub grace_period: Duration,
    pub upgrade_socket: PathBuf,
    /// The binary's path and the config's, for `SIGUSR2`; `None` if the binary's path is
    /// unknown.
    pub relaunch: Option<(PathBuf, PathBuf)>,
}

/// A Unix signal stream, or one that never fires (logged) if it cannot be listened for.
fn listen(kind: SignalKind, name: &str) -> Option<Signal> {
    match signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!("cannot listen for {name}: {e}");
            None
        }
    }
}

async fn next(s: &mut Option<Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let mut quit = listen(SignalKind::quit(), "SIGQUIT");
        let mut term = listen(SignalKind::terminate(), "SIGTERM");
        let mut int = listen(SignalKind::interrupt(), "SIGINT");
        let mut usr2 = listen(SignalKind::user_defined2(), "SIGUSR2");
        // what came before the streams above listened (a flag only)
        let early = &self.early;
        let early_stop = if early.term.load(Ordering::Relaxed) {
            tracing::info!("SIGTERM (while starting): stopping");
            true
        } else if early.usr2.load(Ordering::Relaxed) {
            self.start_new_process() && self.hand_over().await
        } else if early.quit.load(Ordering::Relaxed) {
            self.hand_over().await
        } else {
            false
        };
        if !early_stop {
            loop {
                tokio::select! {
                    _ = next(&mut term) => {
                        tracing::info!("SIGTERM: stopping");
                        break;
                    }
                    _ = next(&mut quit) => {
                        if self.hand_over().await {
                            break;
                        }
                    }
                    _ = next(&mut usr2) => {
                        if self.start_new_process() && self.hand_over().await {
                            break;
                        }
                    }
                    _ = next(&mut int) => {
                        tracing::info!("SIGINT: stopping now");
                        return ShutdownSignal::FastShutdown;
                    }
                }
            }
        }
        self.stop.begin();
        tokio::select! {
            () = self.drain() => {}
            _ = next(&mut int) => {
                tracing::info!("SIGINT: stopping now");
                return ShutdownSignal::FastShutdown;
            }
        }
        // Pingora's grace period is 0: it now shuts its runtimes down
        ShutdownSignal::GracefulTerminate
    }
}

impl Signals {
    /// `SIGUSR2`: starts `sekisho run --upgrade -c CONFIG` from the binary's path, to take over.
    fn start_new_process(&self) -> bool {
        let Some((exe, config)) = &self.relaunch else {
            tracing::error!("SIGUSR2: the path of this binary is unknown; start `sekisho run --upgrade` and send SIGQUIT instead");
            return false;
        };
        let started = std::process::Command::new(exe)
            .args(["run", "--upgrade", "-c"])
            .arg(config)
            .stdin(std::process::Stdio::null())
            .spawn();
        match started {
            Ok(child) => {
                tracing::info!(pid = child.id(), binary = %exe.display(), "SIGUSR2: started a new process to take over");
                true
            }
            Err(e) => {
                tracing::error!(
                    "SIGUSR2: cannot start {}: {e}; still serving",
                    exe.display()
                );
                false
            }
        }
    }

    /// Waits until no request is in flight, or `grace_period` has passed.
    async fn drain(&self) {
        let in_flight = &self.state.in_flight;
        let deadline = tokio::time::Instant::now() + self.grace_period;
        tracing::info!(
            in_flight = in_flight.count(),
            grace_period = ?self.grace_period,
            "stopped listening; serving the requests in flight"
        );
        while in_flight.count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        match in_flight.count() {
            0 => tracing::info!("no request in flight: exiting"),
            n => tracing::warn!(
                in_flight = n,
                "grace_period over with requests still in flight: they are cut"
            ),
        }
    }

    /// `SIGQUIT`: saves the ban state and leaves it to the new process, then sends the
    /// listening sockets to it. False (and serving on, the state file ours again) when no new
    /// process took them.
    async fn hand_over(&self) -> bool {
        let path = self.upgrade_socket.display().to_string();
        let Some(fds) = self.stop.fds.lock().clone() else {
            tracing::error!("SIGQUIT: no listening sockets to hand over yet; still serving");
            return false;
        };
        tracing::info!(socket = %path, "SIGQUIT: handing the listening sockets to a new process");
        let state = self.state.clone();
        let sent = tokio::task::spawn_blocking(move || {
            let clocks = Clocks {
                mono: state.clock.now(),
                unix: unix_now(),
            };
            if let Err(e) = state.defense.hand_over(clocks) {
                tracing::error!("the new process starts without the bans of this one: {e}");
            }
            // retries for ~5 s while the new process comes up (Pingora's `send_fds_to`)
            let sent = fds.lock().send_to_sock(path.as_str());
            if sent.is_err() {
                state.defense.take_back();
            }
            sent.map_err(|e| (path, e))
        })
        .await;
        match sent {
            Ok(Ok(_)) => {
                tracing::info!("listening sockets handed over; stopping");
                true
            }
            Ok(Err((path, e))) => {
                tracing::error!(
                    "SIGQUIT: no new process took the listening sockets on {path} ({e}); still serving (start the new one with `sekisho run --upgrade` first)"
                );
                false
            }
            Err(e) => {
                tracing::error!("SIGQUIT: the hand-over failed ({e}); still serving");
                self.state.defense.take_back();
                false
            }
        }
    }
}

/// After Pingora returns: saves the bans (unless handed over in an upgrade) and waits for the
/// decision and access logs to write what is queued.
pub fn finish(state: &State) {
    let _ = crate::reload::save_bans(state, false);
    if let Some(log) = &state.decision_log {
        if !log.flush(FLUSH_LIMIT) {
            tracing::warn!("the decision log did not finish writing in {FLUSH_LIMIT:?}");
        }
    }
    if let Some(log) = &state.access_log {
        if !log.flush(FLUSH_LIMIT) {
            tracing::warn!("the access log did not finish writing in {FLUSH_LIMIT:?}");
        }
    }
}

/// Tells systemd (`$NOTIFY_SOCKET`, with `NotifyAccess=all`) that this process is the unit's main
/// process now: after taking over in an upgrade, the old main process is about to exit. Does
/// nothing outside systemd.
pub fn notify_main_pid() {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let message = format!("MAINPID={}\n", std::process::id());
    if let Err(e) = send_notify(Path::new(&socket), message.as_bytes()) {
        tracing::warn!("cannot tell systemd the new main PID: {e}");
    }
}

fn send_notify(socket: &Path, message: &[u8]) -> std::io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let out = UnixDatagram::unbound()?;
    let bytes = socket.as_os_str().as_bytes();
    // systemd gives an abstract socket as "@name"
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(socket)?,
    };
    out.send_to_addr(message, &addr)
}
