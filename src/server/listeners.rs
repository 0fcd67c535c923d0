//! The listening sockets: bound here, before anything starts, then handed to Pingora.
//!
//! Pingora binds in its service threads once the server runs: an address in use is retried
//! every second for 30 s and then panics that thread, and so does an address the host lacks,
//! while the process stays up. So each configured address is bound here first, with the
//! options Pingora would use (`SO_REUSEADDR`; `IPV6_V6ONLY` for v6; its backlog), and a
//! failure is an error naming the field, the address and the OS error before any service
//! starts. Pingora takes the sockets through its table of listening fds (`Fds`, the one a
//! graceful upgrade fills from the old process): [`Prebound`] puts each socket in that table
//! under the address Pingora looks up, so Pingora listens on it instead of binding, and hands
//! it over on `SIGQUIT` as it would its own. In an upgrade (`sekisho run --upgrade`) the sockets
//! come from the old process instead ([`take_over`], Pingora's own transfer over the upgrade
//! socket, done before anything is bound): an address it sent is used as it is, and only one it
//! did not send is bound. [`Prebound`] also follows sekisho's [`Stop`] rather than Pingora's
//! shutdown (see [`super::stop`]). This module binds and hands over; it knows nothing of
//! requests.

use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::{L4BufferSettings, ListenerConfig, TcpSocketOptions};
use pingora::server::{Fds, ListenFds, ShutdownWatch};
use pingora::services::listening::Service;
use pingora::services::Service as ServiceTrait;
use socket2::{Domain, Protocol, Socket, Type};

use super::stop::Stop;
use crate::admin::ready::Listeners;

/// Pingora's listen backlog (`LISTENER_BACKLOG` in pingora-core's `listeners/l4.rs`); it sets
/// it again when it takes the socket.
const BACKLOG: i32 = 65_535;

/// An address that could not be listened on.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({field}): {source}")]
pub struct BindError {
    /// The config field that names it: `listen[0]`, `admin.listen`.
    pub field: String,
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// A listening socket for one configured address, not yet accepting.
#[derive(Debug)]
pub struct Bound {
    /// The config field that names it.
    pub field: String,
    pub addr: SocketAddr,
    /// Where it sits in the readiness [`Listeners`].
    index: usize,
    socket: Listening,
}

/// A socket bound here, or one taken over from the old process in an upgrade.
#[derive(Debug)]
enum Listening {
    Bound(Socket),
    /// A listening fd the old process sent; the table owns it (as Pingora's own).
    Inherited(RawFd),
}

impl Bound {
    /// The key Pingora files this listener under in its fd table: the string given to
    /// `add_tcp`.
    fn key(&self) -> String {
        self.addr.to_string()
    }
}

/// Binds and listens on `addr` (named by `field`) as Pingora would; the socket is non-blocking,
/// as the runtime that takes it needs.
pub fn bind(field: &str, addr: SocketAddr, index: usize) -> Result<Bound, BindError> {
    let socket = listen_socket(addr).map_err(|source| BindError {
        field: field.to_string(),
        addr,
        source,
    })?;
    Ok(Bound {
        field: field.to_string(),
        addr,
        index,
        socket: Listening::Bound(socket),
    })
}

/// An address whose listening socket came from the old process (see [`take_over`]).
pub fn inherited(field: &str, addr: SocketAddr, index: usize, fd: RawFd) -> Bound {
    Bound {
        field: field.to_string(),
        addr,
        index,
        socket: Listening::Inherited(fd),
    }
}

/// The listening sockets the old process sends over `path` on `SIGQUIT` (Pingora's transfer:
/// it waits about 5 s for it), keyed by address as configured.
pub fn take_over(path: &Path) -> Result<Fds, String> {
    let shown = path.display().to_string();
    if let Some(why) = crate::config::paths::missing_folder(path) {
        return Err(format!("cannot wait for the sockets on {shown}: {why}"));
    }
    let mut fds = Fds::new();
    fds.get_from_sock(shown.as_str()).map_err(|e| {
        format!("no running sekisho sent its listening sockets on {shown} ({e}); send it SIGQUIT within 5 s of starting this one")
    })?;
    Ok(fds)
}

fn listen_socket(addr: SocketAddr) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // v6-only, so that "0.0.0.0:P" and "[::]:P" can both be listed.
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// A Pingora listening service that serves sockets bound beforehand.
pub struct Prebound<A> {
    name: String,
    threads: Option<usize>,
    addresses: Option<Vec<String>>,
    inner: Option<Service<A>>,
    sockets: Vec<Bound>,
    listeners: Arc<Listeners>,
    indices: Vec<usize>,
    stop: Arc<Stop>,
}

/// Pingora's read buffer in front of each client socket: none. Its default, 64 KiB a
/// connection (meant for TLS, whose reads come in 16 KiB records), made an idle or half-open
/// plaintext connection cost 84 KiB; a request head is read straight into the 4 KiB buffer
/// the HTTP/1 parser keeps anyway, and a body into its own.
const L4_READ_BUFFER: usize = 0;
/// Pingora's write buffer: its default, one MSS.
const L4_WRITE_BUFFER: usize = 1460;

impl<A: ServerApp + Send + Sync + 'static> Prebound<A> {
    /// `service` listening on `sockets` until `stop`; marks them serving in `listeners` while
    /// it runs.
    pub fn new(
        mut service: Service<A>,
        sockets: Vec<Bound>,
        listeners: Arc<Listeners>,
        stop: Arc<Stop>,
    ) -> Self {
        for b in &sockets {
            // The options matter only if Pingora ever binds itself (it does not find the
            // socket in its table); they are those the socket was bound with.
            let mut opts = TcpSocketOptions::default();
            if b.addr.is_ipv6() {
                opts.ipv6_only = Some(true);
            }
            service.add_listener(
                ListenerConfig::tcp(b.key())
                    .tcp_socket_options(opts)
                    .l4_buffer(L4BufferSettings::new(L4_READ_BUFFER, L4_WRITE_BUFFER)),
            );
        }
        Self {
            name: ServiceTrait::name(&service).to_string(),
            threads: ServiceTrait::threads(&service),
            addresses: ServiceTrait::listen_addresses(&service),
            indices: sockets.iter().map(|b| b.index).collect(),
            inner: Some(service),
            sockets,
            listeners,
            stop,
        }
    }

    fn mark(&self, serving: bool) {
        for &i in &self.indices {
            self.listeners.set_serving(i, serving);
        }
    }
}

/// Puts each socket in Pingora's fd table under its key, unless the table already holds one
/// for that address (inherited from the old process in a graceful upgrade): that one is used
/// and ours is closed. The table owns the fds from here on, as it does those Pingora binds.
fn hand_over(table: &mut Fds, sockets: Vec<Bound>) {
    for b in sockets {
        let key = b.key();
        if table.get(&key).is_none() {
            let fd = match b.socket {
                Listening::Bound(s) => s.into_raw_fd(),
                Listening::Inherited(fd) => fd,
            };
            table.add(key, fd);
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServiceTrait for Prebound<A> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        _pingora_shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        let Some(mut inner) = self.inner.take() else {
            return;
        };
        // Pingora passes its table on Unix; were there none, one of our own does the same job.
        let fds = fds.unwrap_or_else(|| Arc::new(parking_lot::Mutex::new(Fds::new())));
        hand_over(&mut fds.lock(), std::mem::take(&mut self.sockets));
        self.stop.adopt(fds.clone());
        // sekisho's stop, not Pingora's: it comes first and is waited out (see `stop`)
        let shutdown = self.stop.watch();
        // Its own task, so that a panic in Pingora's listener set-up is seen here.
        let mut stopping = shutdown.clone();
        let mut run = tokio::spawn(async move {
            ServiceTrait::start_service(&mut inner, Some(fds), shutdown, listeners_per_fd).await
        });
        self.mark(true);
        let ended = tokio::select! {
            r = &mut run => r,
            _ = async {
                if stopping.wait_for(|s| *s).await.is_err() {
                    std::future::pending::<()>().await; // no shutdown signal: never stopping
                }
            } => {
                self.mark(false);
                run.await
            }
        };
        self.mark(false);
        if let Err(e) = ended {
            if e.is_panic() {
                let addrs = self.addresses.as_deref().unwrap_or_default().join(", ");
                tracing::error!("the {} service failed on {addrs}; exiting", self.name);
                std::process::exit(1);
            }
        }
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn threads(&self) -> Option<usize> {
        self.threads
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.addresses.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_in_use_names_the_field_the_address_and_the_os_error() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let e = bind("listen[1]", addr, 0).unwrap_err();
        assert_eq!(e.source.kind(), std::io::ErrorKind::AddrInUse);
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("cannot listen on {addr} (listen[1]): ")),
            "{text}"
        );
        assert!(text.contains("(os error 98)"), "{text}");
    }

    #[test]
    fn a_bound_socket_accepts_before_anyone_takes_it() {
        let b = bind("listen[0]", "127.0.0.1:0".parse().unwrap(), 0).unwrap();
        let Listening::Bound(socket) = &b.socket else {
            panic!("bound here");
        };
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        std::net::TcpStream::connect(addr).expect("the backlog takes the connection");
    }

    #[test]
    fn the_table_gets_the_key_pingora_looks_up_and_keeps_an_inherited_socket() {
        let mut table = Fds::new();
        // keyed by the address as configured (what add_tcp is given), port 0 included
        let v4 = bind("listen[0]", "127.0.0.1:0".parse().unwrap(), 0).unwrap();
        let v6 = Bound {
            field: "listen[1]".into(),
            addr: "[::1]:8080".parse().unwrap(),
            index: 1,
            socket: Listening::Bound(Socket::new(Domain::IPV6, Type::STREAM, None).unwrap()),
        };
        table.add("[::1]:8080".to_string(), 1_000_000); // inherited in an upgrade
        hand_over(&mut table, vec![v4, v6]);
        assert!(table.get("127.0.0.1:0").is_some());
        assert_eq!(table.get("[::1]:8080"), Some(&1_000_000));
        // (the table owns the v4 socket now, as it owns Pingora's own; it stays open)
    }
}
