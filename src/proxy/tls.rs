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
use std::pin::Pin;
use std::task::{Context, Poll};

use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, IO,
};
use pingora::server::ShutdownWatch;
use pingora::tls::ssl::{NameType, SslAcceptor};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{accept, Sekisho, State};
use crate::config::TlsListener;
use crate::conn::frames::{Abuse, Budgets, FrameMeter};
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
        (self.state.snapshot.load().config)
            .tls_of(self.addr)
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

/// A TLS stream that speaks HTTP/2, its client's frames counted as they are read
/// ([`FrameMeter`]). Over budget, the frames before the offending one are passed on, and in
/// its place the h2 crate is handed [`REFUSED_FRAME`], a frame it must refuse: it answers with
/// a GOAWAY and closes the connection, as for its own limits. Reads end there. (When the
/// offending frame's header began in an earlier read, part of it is with the crate already, and
/// the read fails instead: the connection closes without a GOAWAY.) The reason is left in the
/// shared [`Meter`] for the front to count.
#[derive(Debug)]
struct Metered<S> {
    inner: S,
    born: std::time::Instant,
    /// Shared with the front, which reads the verdict once the connection is over.
    meter: Arc<Mutex<Meter>>,
    /// What is left to hand over of [`REFUSED_FRAME`]; reads end after it.
    refusing: Option<&'static [u8]>,
}

/// A PING on stream 1: a connection error (PROTOCOL_ERROR, RFC 9113 §6.7) that makes the h2
/// crate send GOAWAY and close.
const REFUSED_FRAME: &[u8] = &[0, 0, 8, 6, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];

/// The frame meter of a connection and its verdict.
#[derive(Debug)]
struct Meter {
    frames: FrameMeter,
    abuse: Option<Abuse>,
}

/// Resets that the h2 crate's own burst counter (20 streams reset before they were accepted)
/// may have ended the connection over first: taken for Rapid Reset when most streams were reset.
const H2_CRATE_RESETS: u64 = 20;

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(rest) = this.refusing {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.refusing = Some(&rest[n..]);
            // an empty read after it: end of stream
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let now = u64::try_from(this.born.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut m = this.meter.lock();
        if let Some(a) = m.abuse {
            return Poll::Ready(Err(std::io::Error::other(a.as_str())));
        }
        if let Err(cut) = m.frames.feed_cut(&buf.filled()[before..], now) {
            m.abuse = Some(cut.abuse);
            let Some(at) = cut.at else {
                return Poll::Ready(Err(std::io::Error::other(cut.abuse.as_str())));
            };
            // the whole frames before it, then the frame the crate refuses
            buf.set_filled(before + at);
            let n = REFUSED_FRAME.len().min(buf.remaining());
            buf.put_slice(&REFUSED_FRAME[..n]);
            this.refusing = Some(&REFUSED_FRAME[n..]);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl<S: IO> Shutdown for Metered<S> {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl<S: IO> UniqueID for Metered<S> {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl<S: IO> Ssl for Metered<S> {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl<S: IO> GetTimingDigest for Metered<S> {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> std::time::Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> std::time::Duration {
        self.inner.get_write_pending_time()
    }
}

impl<S: IO> GetProxyDigest for Metered<S> {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl<S: IO> GetSocketDigest for Metered<S> {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl<S: IO> Peek for Metered<S> {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
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
                if tls_stream.ssl().selected_alpn_protocol() != Some(b"h2") {
                    return self.app.process_new(Box::new(tls_stream), shutdown).await;
                }
                // HTTP/2: Pingora serves the whole connection in this call
                let meter = Arc::new(Mutex::new(Meter {
                    frames: FrameMeter::new(Budgets::default(), 0),
                    abuse: None,
                }));
                let metered = Metered {
                    inner: tls_stream,
                    born: std::time::Instant::now(),
                    meter: meter.clone(),
                    refusing: None,
                };
                // the HTTP/2 preface and SETTINGS within connections.header_timeout, as a
                // request head would be (Pingora's h2 handshake waits forever)
                let within = self.state.snapshot.load().config.connections.header_timeout;
                let started = {
                    let meter = meter.clone();
                    async move {
                        tokio::time::sleep(within).await;
                        if meter.lock().frames.started() {
                            std::future::pending::<()>().await;
                        }
                    }
                };
                let reuse = tokio::select! {
                    r = self.app.process_new(Box::new(metered), shutdown) => r,
                    () = started => {
                        metrics.closed_header_timeout.inc();
                        let snap = self.state.snapshot.load();
                        accept::report_cut(&self.state, &snap, ip, "connections.header_timeout");
                        return None;
                    }
                };
                let cut = {
                    let m = meter.lock();
                    let (streams, resets) = m.frames.counts();
                    // a burst the h2 crate ended itself (GOAWAY) before the budget ran out
                    m.abuse
                        .or((resets >= H2_CRATE_RESETS && resets * 2 > streams)
                            .then_some(Abuse::RapidReset))
                };
                if let Some(a) = cut {
                    metrics.closed_h2(a).inc();
                    let snap = self.state.snapshot.load();
                    accept::report_cut(&self.state, &snap, ip, a.field());
                    tracing::debug!(%ip, reason = a.as_str(), "HTTP/2 connection cut");
                }
                reuse
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
