//! TLS to the origin: the OpenSSL connector `upstream_options.tls` asks for (certificates
//! verified against the system's roots or the given CA file, TLS 1.2 or later, ALPN
//! `http/1.1`: upstreams speak HTTP/1.1).

use std::path::Path;

use pingora::tls::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use pingora::tls::x509::X509;

/// A connector that verifies the origin's certificate when `verify` (against the certificates
/// in `ca` when given, else the system's roots).
pub fn connector(ca: Option<&Path>, verify: bool) -> Result<SslConnector, String> {
    let mut b = SslConnector::builder(SslMethod::tls())
        .map_err(|e| format!("OpenSSL cannot make a TLS connector: {e}"))?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(|e| format!("OpenSSL refuses TLS 1.2 as the lowest version: {e}"))?;
    b.set_alpn_protos(b"\x08http/1.1")
        .map_err(|e| format!("OpenSSL refuses ALPN: {e}"))?;
    if let Some(ca) = ca {
        let pem =
            std::fs::read(ca).map_err(|e| format!("{}: cannot read it: {e}", ca.display()))?;
        let certs = X509::stack_from_pem(&pem)
            .map_err(|e| format!("{}: no PEM certificate in it ({e})", ca.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no PEM certificate in it", ca.display()));
        }
        // the given CA instead of the system's roots
        let mut store = pingora::tls::x509::store::X509StoreBuilder::new()
            .map_err(|e| format!("OpenSSL cannot make a certificate store: {e}"))?;
        for c in certs {
            store
                .add_cert(c)
                .map_err(|e| format!("{}: {e}", ca.display()))?;
        }
        b.set_verify_cert_store(store.build())
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    b.set_verify(if verify {
        SslVerifyMode::PEER
    } else {
        SslVerifyMode::NONE
    });
    Ok(b.build())
}
