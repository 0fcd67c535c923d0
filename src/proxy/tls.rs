//! A TLS listener's front (Pingora glue): each accepted connection is counted, its ClientHello
//! peeked for the JA4 fingerprint, its handshake done under the listener's
//! `tls.handshake_timeout` with a certificate chosen by SNI from the certificates loaded at
//! that moment, and the TLS stream then served by the same HTTP code as a plaintext one
//! (HTTP/1.1, or HTTP/2 when ALPN chose `h2`).
//!
//! Pingora's own TLS listener is not used: it allows every handshake 60 s, fixed, and logs an
//! error line for each one that fails (a scanner makes thousands). Here a failed handshake is
//! counted (`sekisho_tls_handshakes_total`), a slow one is cut and reported like a slow request
//! head, and the connection's place in `connections.max_open` is held from accept to close, in
//! the [`TlsConn`] that Pingora keeps in the connection's TLS digest, where every request and
//! HTTP/2 stream on it finds it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::apps::ServerApp;
use pingora::listeners::TlsAccept;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::tls::server::handshake_with_callback;
use pingora::protocols::{GetSocketDigest, Peek, Stream};
use pingora::server::ShutdownWatch;
use pingora::tls::ssl::{NameType, SslAcceptor};

use super::{accept, Sekisho, State};
use crate::config::TlsListener;
use crate::conn::Open;
use crate::iplist::ip_key;

/// What a TLS connection carries for its requests, in Pingora's `SslDigest` extension.
#[derive(Debug)]
pub struct TlsConn {
    /// The client's JA4 fingerprint; `None` when its ClientHello could not be read (split
    /// over several records, or not TLS at all).
    pub ja4: Option<Box<str>>,
    /// The server name the client asked for.
    pub sni: Option<Box<str>>,
    /// The connection's place in the open count, given back when the connection ends.
    pub(super) open: Open,
}

/// Serves one TLS listener.
pub struct TlsFront {
    app: Arc<Sekisho>,
    state: Arc<State>,
    addr: SocketAddr,
    acceptor: SslAcceptor,
    /// The listener's settings at start: the certificates used when a reload no longer lists
    /// this address with TLS (the listener itself stays until a restart).
    at_start: Arc<TlsListener>,
}

impl TlsFront {
    /// The front of the TLS listener on `addr` with settings `tls`.
    pub fn new(state: Arc<State>, addr: SocketAddr, tls: Arc<TlsListener>) -> Result<Self, String> {
        let acceptor = crate::tls::acceptor::acceptor(tls.min_version, tls.http2)?;
        Ok(Self {
            app: Arc::new(Sekisho::new(state.clone())),
            state,
            addr,
            acceptor,
            at_start: tls,
        })
    }

    /// The certificates as loaded now.
    fn current(&self) -> Arc<TlsListener> {
        let snap = self.state.snapshot.load();
        let c = &snap.config;
        c.listen
            .iter()
            .position(|a| *a == self.addr)
            .and_then(|i| c.tls.get(i).cloned().flatten())
            .unwrap_or_else(|| self.at_start.clone())
    }
}

/// The per-handshake callbacks: the certificate by SNI, then the connection's [`TlsConn`].
struct Handshake {
    tls: Arc<TlsListener>,
    ja4: Option<Box<str>>,
    open: Mutex<Option<Open>>,
}

#[async_trait]
impl TlsAccept for Handshake {
    async fn certificate_callback(&self, ssl: &mut pingora::protocols::tls::TlsRef) {
        let sni = ssl.servername(NameType::HOST_NAME);
        let names = self.tls.certificates.iter().map(|c| c.names.as_slice());
        let pick = crate::tls::pick(names, sni);
        if let Some(cert) = self.tls.certificates.get(pick) {
            if let Err(e) = crate::tls::acceptor::use_certificate(ssl, cert) {
                // the handshake then fails for want of a certificate, and is counted
                tracing::warn!(cert = %cert.cert_path.display(), "cannot serve the certificate: {e}");
            }
        }
    }

    async fn handshake_complete_callback(
        &self,
        ssl: &pingora::protocols::tls::TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let open = self.open.lock().take()?;
        Some(Arc::new(TlsConn {
            ja4: self.ja4.clone(),
            sni: ssl.servername(NameType::HOST_NAME).map(Into::into),
            open,
        }))
    }
}

/// TLS record header: content type, version, length.
const RECORD_HEADER: usize = 5;
/// The largest TLS plaintext record (RFC 8446 §5.1) with its header.
const MAX_RECORD: usize = RECORD_HEADER + (1 << 14);

/// The JA4 of the ClientHello waiting on `stream`, read without taking it off the stream
/// (Pingora's peek puts the bytes back for the handshake).
async fn peek_ja4(stream: &mut L4Stream) -> Option<Box<str>> {
    let mut head = [0u8; RECORD_HEADER];
    stream.try_peek(&mut head).await.ok()?;
    if head[0] != 22 {
        return None; // not a handshake record: the handshake fails on it, counted there
    }
    let len = RECORD_HEADER + usize::from(u16::from_be_bytes([head[3], head[4]]));
    if len > MAX_RECORD {
        return None;
    }
    let mut record = vec![0u8; len];
    stream.try_peek(&mut record).await.ok()?;
    let hello = crate::tls::ja4::parse_record(&record).ok()?;
    Some(crate::tls::ja4::ja4(&hello).into_boxed_str())
}

#[async_trait]
impl ServerApp for TlsFront {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if stream.get_ssl_digest().is_some() {
            // a kept-alive HTTP/1.1 connection, back for its next request
            return self.app.process_new(stream, shutdown).await;
        }
        let Ok(l4) = stream.into_any().downcast::<L4Stream>() else {
            return None; // only TCP is accepted here
        };
        let mut l4 = *l4;
        let peer = l4
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied());
        let ip = peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.ip().to_canonical());
        let tls = self.current();
        let v6 = self.state.snapshot.load().config.client_ip.ipv6_prefix;
        let open = self.state.connections.claim(peer, ip_key(ip, v6));
        let metrics = &self.state.metrics;
        let within = tls.handshake_timeout;
        let handshake = async {
            let ja4 = peek_ja4(&mut l4).await;
            let callbacks = Handshake {
                tls,
                ja4,
                open: Mutex::new(Some(open)),
            };
            handshake_with_callback(&self.acceptor, l4, &callbacks).await
        };
        match pingora::prelude::timeout(within, handshake).await {
            Ok(Ok(tls_stream)) => {
                let version = tls_stream.ssl().version_str();
                metrics
                    .tls_handshakes
                    .with_label_values(&["ok", version])
                    .inc();
                self.app.process_new(Box::new(tls_stream), shutdown).await
            }
            Ok(Err(e)) => {
                metrics
                    .tls_handshakes
                    .with_label_values(&["failed", "-"])
                    .inc();
                tracing::debug!(%ip, "TLS handshake failed: {e}");
                None
            }
            Err(_) => {
                metrics
                    .tls_handshakes
                    .with_label_values(&["timeout", "-"])
                    .inc();
                metrics.closed_handshake_timeout.inc();
                let snap = self.state.snapshot.load();
                accept::report_cut(&self.state, &snap, ip, "tls.handshake_timeout");
                None
            }
        }
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}
