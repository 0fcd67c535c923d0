//! TLS at the edge (issue 15, in increments): the certificates a listener serves, chosen by
//! SNI. This first piece loads and checks a certificate and its key the way `sekisho check`
//! and a reload will (a file that cannot be read, a PEM without a certificate, a key that is
//! not the certificate's, a certificate outside its validity window: each an error naming the
//! file and the reason), and picks the certificate for a server name. No socket here: the
//! listener (Pingora's openssl backend and its certificate callback) is glue on top.
//! [`ja4`] computes the client's TLS fingerprint from its raw ClientHello.

pub mod acceptor;
pub mod certs;
pub mod ja4;
pub mod upstream;

pub use certs::{load, pick, CertError, Certified};
