//! The OpenSSL acceptor of a TLS listener: Mozilla's "intermediate" profile (TLS 1.2 and 1.3,
//! its cipher list), the listener's lowest version, ALPN (`h2` when HTTP/2 is on, then
//! `http/1.1`), and no certificate: each handshake is given one by SNI from the certificates
//! loaded at that moment (see `proxy::tls`), which is how a reload reaches new handshakes
//! while established connections keep theirs.

use pingora::tls::ssl::{select_next_proto, AlpnError, SslAcceptor, SslMethod, SslRef, SslVersion};

use serde::Serialize;

use super::Certified;

/// The lowest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    V12,
    #[serde(rename = "1.3")]
    V13,
}

/// ALPN protocols offered, in preference order, in wire format.
const H2_AND_H1: &[u8] = b"\x02h2\x08http/1.1";
const H1_ONLY: &[u8] = b"\x08http/1.1";

/// The acceptor for a listener with lowest version `min`, offering `h2` when `http2`.
pub fn acceptor(min: TlsVersion, http2: bool) -> Result<SslAcceptor, String> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())
        .map_err(|e| format!("OpenSSL cannot make a TLS acceptor: {e}"))?;
    b.set_min_proto_version(Some(match min {
        TlsVersion::V12 => SslVersion::TLS1_2,
        TlsVersion::V13 => SslVersion::TLS1_3,
    }))
    .map_err(|e| format!("OpenSSL refuses the lowest TLS version: {e}"))?;
    let offered = if http2 { H2_AND_H1 } else { H1_ONLY };
    b.set_alpn_select_callback(move |_, client| {
        // a client that offers nothing we speak gets no ALPN and HTTP/1.1
        select_next_proto(offered, client).ok_or(AlpnError::NOACK)
    });
    Ok(b.build())
}

/// Gives handshake `ssl` the certificate, chain and key of `cert`.
pub fn use_certificate(ssl: &mut SslRef, cert: &Certified) -> Result<(), String> {
    use pingora::tls::ext;
    let Some(leaf) = cert.chain.first() else {
        return Err(format!("{}: no certificate", cert.cert_path.display()));
    };
    ext::ssl_use_certificate(ssl, leaf).map_err(|e| e.to_string())?;
    for c in &cert.chain[1..] {
        ext::ssl_add_chain_cert(ssl, c).map_err(|e| e.to_string())?;
    }
    ext::ssl_use_private_key(ssl, &cert.key).map_err(|e| e.to_string())
}
