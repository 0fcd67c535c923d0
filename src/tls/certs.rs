//! One certificate (with its chain) and its private key, loaded and checked; and the choice
//! among several by SNI.

use std::path::{Path, PathBuf};

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

/// A certificate ready to serve.
#[derive(Clone)]
pub struct Certified {
    /// The leaf first, then its chain as the file gives it.
    pub chain: Vec<X509>,
    /// The leaf's private key.
    pub key: PKey<Private>,
    /// The names it answers for: its DNS subject alternative names, or its subject common
    /// name when it has none; lowercase, wildcards (`*.example.com`) kept as written.
    pub names: Vec<String>,
    /// The end of its validity, Unix seconds.
    pub not_after_unix: i64,
    /// The certificate file, for messages and the expiry metric's label.
    pub cert_path: PathBuf,
}

impl std::fmt::Debug for Certified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certified")
            .field("cert_path", &self.cert_path)
            .field("names", &self.names)
            .field("not_after_unix", &self.not_after_unix)
            .finish_non_exhaustive()
    }
}

/// Why a certificate or key cannot be served.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertError {
    /// The file cannot be read.
    #[error("{path}: cannot read it: {why}")]
    Read { path: String, why: String },
    /// No PEM certificate in the file.
    #[error("{path}: no PEM certificate in it ({why})")]
    NoCertificate { path: String, why: String },
    /// No PEM private key in the file.
    #[error("{path}: no PEM private key in it ({why})")]
    NoKey { path: String, why: String },
    /// The key is not the certificate's.
    #[error("{key}: this private key does not belong to the certificate in {cert}")]
    KeyMismatch { cert: String, key: String },
    /// The certificate has expired.
    #[error("{path}: the certificate expired {ago} ago (not after {not_after})")]
    Expired {
        path: String,
        not_after: String,
        ago: String,
    },
    /// The certificate is not valid yet.
    #[error("{path}: the certificate is not valid before {not_before}")]
    NotYetValid { path: String, not_before: String },
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|e| CertError::Read {
        path: path.display().to_string(),
        why: e.to_string(),
    })
}

/// Unix seconds of an ASN.1 time.
fn unix_of(t: &Asn1TimeRef) -> Option<i64> {
    let epoch = Asn1Time::from_unix(0).ok()?;
    let d = epoch.diff(t).ok()?;
    Some(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

/// Loads the certificate chain in `cert` and the private key in `key`, and checks that they
/// belong together and that the certificate is valid at `now_unix`.
pub fn load(cert: &Path, key: &Path, now_unix: i64) -> Result<Certified, CertError> {
    let cert_text = read(cert)?;
    let chain = X509::stack_from_pem(&cert_text).map_err(|e| CertError::NoCertificate {
        path: cert.display().to_string(),
        why: e.to_string(),
    })?;
    let Some(leaf) = chain.first() else {
        return Err(CertError::NoCertificate {
            path: cert.display().to_string(),
            why: "the file holds no BEGIN CERTIFICATE block".into(),
        });
    };
    let key_text = read(key)?;
    let pkey = PKey::private_key_from_pem(&key_text).map_err(|e| CertError::NoKey {
        path: key.display().to_string(),
        why: e.to_string(),
    })?;
    let matches = leaf
        .public_key()
        .map(|public| public.public_eq(&pkey))
        .unwrap_or(false);
    if !matches {
        return Err(CertError::KeyMismatch {
            cert: cert.display().to_string(),
            key: key.display().to_string(),
        });
    }
    let not_before = unix_of(leaf.not_before()).unwrap_or(i64::MIN);
    let not_after = unix_of(leaf.not_after()).unwrap_or(i64::MIN);
    if now_unix < not_before {
        return Err(CertError::NotYetValid {
            path: cert.display().to_string(),
            not_before: leaf.not_before().to_string(),
        });
    }
    if now_unix > not_after {
        let ago = std::time::Duration::from_secs(u64::try_from(now_unix - not_after).unwrap_or(0));
        return Err(CertError::Expired {
            path: cert.display().to_string(),
            not_after: leaf.not_after().to_string(),
            ago: humantime::format_duration(ago).to_string(),
        });
    }
    Ok(Certified {
        names: names_of(leaf),
        not_after_unix: not_after,
        key: pkey,
        chain,
        cert_path: cert.to_path_buf(),
    })
}

/// The DNS names of `cert`: its subject alternative names, else its common name.
fn names_of(cert: &X509) -> Vec<String> {
    let mut names: Vec<String> = cert
        .subject_alt_names()
        .into_iter()
        .flatten()
        .filter_map(|n| n.dnsname().map(str::to_ascii_lowercase))
        .collect();
    if names.is_empty() {
        names.extend(
            cert.subject_name()
                .entries_by_nid(Nid::COMMONNAME)
                .filter_map(|e| std::str::from_utf8(e.data().as_slice()).ok())
                .map(str::to_ascii_lowercase),
        );
    }
    names
}

/// Whether certificate name `pattern` covers server name `name` (both lowercase): equal, or a
/// wildcard `*.example.com` covering exactly one more label (`a.example.com`, not
/// `example.com` nor `a.b.example.com`), as RFC 6125 §6.4.3 allows.
fn covers(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern == name,
    }
}

/// The index of the certificate to serve for server name `sni`: the first whose names cover
/// it exactly, else the first covering it by a wildcard, else 0 (the default, also for a
/// handshake without SNI).
pub fn pick<'a>(names: impl IntoIterator<Item = &'a [String]> + Clone, sni: Option<&str>) -> usize {
    let Some(sni) = sni.map(|s| s.trim_end_matches('.').to_ascii_lowercase()) else {
        return 0;
    };
    let position = |exact: bool| {
        names.clone().into_iter().position(|ns| {
            ns.iter()
                .any(|n| (n.starts_with("*.") != exact) && covers(n, &sni))
        })
    };
    position(true).or_else(|| position(false)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pair {
        dir: tempfile::TempDir,
    }

    impl Pair {
        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
    }

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) {
        std::fs::write(dir.path().join(name), text).unwrap();
    }

    /// A self-signed certificate for `names`, valid from `from` to `to` (years), as
    /// `{stem}.pem` and `{stem}.key`.
    fn issue(dir: &tempfile::TempDir, stem: &str, names: &[&str], from: i32, to: i32) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(to, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        write(dir, &format!("{stem}.pem"), &cert.pem());
        write(dir, &format!("{stem}.key"), &key.serialize_pem());
    }

    const NOW: i64 = 1_796_160_000; // 2026-12-01

    fn pair() -> Pair {
        let dir = tempfile::tempdir().unwrap();
        issue(&dir, "good", &["Example.com", "*.example.com"], 2020, 2040);
        issue(&dir, "other", &["other.test"], 2020, 2040);
        issue(&dir, "old", &["old.test"], 2001, 2002);
        issue(&dir, "future", &["future.test"], 2099, 2100);
        write(&dir, "junk.pem", "not a certificate\n");
        Pair { dir }
    }

    #[test]
    fn a_good_pair_loads_with_its_names_and_expiry() {
        let p = pair();
        let c = load(&p.path("good.pem"), &p.path("good.key"), NOW).unwrap();
        assert_eq!(c.names, vec!["example.com", "*.example.com"]);
        assert_eq!(c.not_after_unix, 2_208_988_800); // 2040-01-01
        assert_eq!(c.chain.len(), 1);
    }

    #[test]
    fn each_bad_file_is_named_with_its_reason() {
        let p = pair();
        let err = |cert: &str, key: &str| {
            load(&p.path(cert), &p.path(key), NOW)
                .map(|_| ())
                .unwrap_err()
        };
        assert!(
            matches!(err("missing.pem", "good.key"), CertError::Read { path, .. } if path.ends_with("missing.pem"))
        );
        assert!(matches!(
            err("junk.pem", "good.key"),
            CertError::NoCertificate { .. }
        ));
        assert!(matches!(
            err("good.pem", "junk.pem"),
            CertError::NoKey { .. }
        ));
        let mismatch = err("good.pem", "other.key");
        assert!(matches!(&mismatch, CertError::KeyMismatch { .. }));
        assert!(
            mismatch
                .to_string()
                .contains("other.key: this private key does not belong to the certificate in"),
            "{mismatch}"
        );
        let old = err("old.pem", "old.key");
        assert!(
            old.to_string().contains("old.pem: the certificate expired"),
            "{old}"
        );
        let future = err("future.pem", "future.key");
        assert!(
            future
                .to_string()
                .contains("future.pem: the certificate is not valid before"),
            "{future}"
        );
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_the_first() {
        let certs: Vec<Vec<String>> = vec![
            vec!["default.test".into()],
            vec!["*.example.com".into()],
            vec!["api.example.com".into()],
        ];
        let names = || certs.iter().map(Vec::as_slice);
        assert_eq!(
            pick(names(), Some("api.example.com")),
            2,
            "exact beats wildcard"
        );
        assert_eq!(pick(names(), Some("WWW.Example.com.")), 1);
        assert_eq!(
            pick(names(), Some("example.com")),
            0,
            "a wildcard covers one label"
        );
        assert_eq!(pick(names(), Some("a.b.example.com")), 0);
        assert_eq!(pick(names(), Some("unknown.test")), 0);
        assert_eq!(pick(names(), None), 0);
        assert_eq!(pick(names(), Some("default.test")), 0);
    }
}
