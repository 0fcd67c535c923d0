//! JA4, the client's TLS fingerprint (FoxIO's specification, `technical_details/JA4.md`),
//! from the raw ClientHello: `t13d1516h2_8daaf6152771_e5627efa2ab1` is
//! - `t` (TCP), the highest TLS version offered (`13`), `d` when SNI is sent (`i` when not),
//!   the number of cipher suites and of extensions (two digits each, at most 99), and the first
//!   and last character of the first ALPN value (`00` without ALPN);
//! - the first 12 hex digits of the SHA-256 of the cipher suites, sorted, as 4-digit lowercase
//!   hex joined by commas;
//! - the same of the extensions, sorted, without SNI (0000) and ALPN (0010), then `_` and the
//!   signature algorithms in the order sent.
//!
//! GREASE values (RFC 8701: `0x?a?a` with both bytes equal) are left out everywhere. Where the
//! specification and FoxIO's code differ (an ALPN value of one character, or whose first or last
//! byte is not alphanumeric) this follows the specification: one character is used twice, and
//! a non-alphanumeric end takes the first and last hex digit of the value. Pure: bytes in, the
//! fingerprint out; a truncated or malformed ClientHello is an error, never a panic.

/// Why no fingerprint came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Ja4Error {
    /// The bytes end before the ClientHello does.
    #[error("the ClientHello is truncated")]
    Truncated,
    /// Not a TLS handshake record holding a ClientHello.
    #[error("not a TLS ClientHello")]
    NotClientHello,
}

/// What JA4 reads from a ClientHello.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hello {
    /// `legacy_version`.
    pub legacy_version: u16,
    /// Cipher suites, in order, GREASE included.
    pub ciphers: Vec<u16>,
    /// Extension types, in order, GREASE included.
    pub extensions: Vec<u16>,
    /// `supported_versions` (0x002b), if sent.
    pub versions: Vec<u16>,
    /// `signature_algorithms` (0x000d), in order.
    pub sig_algs: Vec<u16>,
    /// The first ALPN protocol name, if any.
    pub alpn: Option<Vec<u8>>,
}

/// Reads big-endian fields off a slice, failing with [`Ja4Error::Truncated`].
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Ja4Error> {
        if self.0.len() < n {
            return Err(Ja4Error::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, Ja4Error> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Ja4Error> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Result<usize, Ja4Error> {
        let b = self.take(3)?;
        Ok(usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
    /// A field preceded by its length in `width` bytes.
    fn vector(&mut self, width: usize) -> Result<Reader<'a>, Ja4Error> {
        let n = match width {
            1 => usize::from(self.u8()?),
            2 => usize::from(self.u16()?),
            _ => self.u24()?,
        };
        Ok(Reader(self.take(n)?))
    }
    fn u16s(mut self) -> Result<Vec<u16>, Ja4Error> {
        let mut out = Vec::with_capacity(self.0.len() / 2);
        while !self.0.is_empty() {
            out.push(self.u16()?);
        }
        Ok(out)
    }
}

/// Parses the first TLS record of a connection (a handshake record holding a ClientHello,
/// which must fit in it).
pub fn parse_record(bytes: &[u8]) -> Result<Hello, Ja4Error> {
    let mut r = Reader(bytes);
    if r.u8()? != 0x16 {
        return Err(Ja4Error::NotClientHello);
    }
    r.u16()?; // record version: not used by JA4
    let mut record = r.vector(2)?;
    if record.u8()? != 0x01 {
        return Err(Ja4Error::NotClientHello);
    }
    let body = record.vector(3)?;
    parse_client_hello(body)
}

fn parse_client_hello(mut r: Reader<'_>) -> Result<Hello, Ja4Error> {
    let mut hello = Hello {
        legacy_version: r.u16()?,
        ..Hello::default()
    };
    r.take(32)?; // random
    r.vector(1)?; // session id
    hello.ciphers = r.vector(2)?.u16s()?;
    r.vector(1)?; // compression methods
    if r.0.is_empty() {
        return Ok(hello); // no extensions
    }
    let mut exts = r.vector(2)?;
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let mut data = exts.vector(2)?;
        hello.extensions.push(kind);
        match kind {
            0x002b => hello.versions = data.vector(1)?.u16s()?,
            0x000d => hello.sig_algs = data.vector(2)?.u16s()?,
            0x0010 => {
                let mut list = data.vector(2)?;
                if !list.0.is_empty() {
                    hello.alpn = Some(list.vector(1)?.0.to_vec());
                }
            }
            _ => {}
        }
    }
    Ok(hello)
}

/// Whether `v` is a GREASE value (RFC 8701).
fn grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

/// The first 12 hex digits of the SHA-256 of `text`, `000000000000` for an empty list.
fn hash12(text: &str, empty: bool) -> String {
    if empty {
        return "000000000000".into();
    }
    let digest = openssl::sha::sha256(text.as_bytes());
    let mut out = String::with_capacity(12);
    for b in &digest[..6] {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `0a0a,1301,...`: one allocation, not one a value.
fn hex_list(values: &[u16]) -> String {
    let mut out = String::with_capacity(values.len() * 5);
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for shift in [12, 8, 4, 0] {
            out.push(char::from(HEX[usize::from((v >> shift) & 0xf)]));
        }
    }
    out
}

fn version_code(v: u16) -> &'static str {
    match v {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        _ => "00",
    }
}

fn alpn_code(alpn: Option<&[u8]>) -> String {
    let Some(v) = alpn.filter(|v| !v.is_empty()) else {
        return "00".into();
    };
    let (first, last) = (v[0], v[v.len() - 1]);
    if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() {
        return format!("{}{}", char::from(first), char::from(last));
    }
    let hex = format!("{:02x}{:02x}", first, last);
    let mut chars = hex.chars();
    match (chars.next(), chars.last()) {
        (Some(a), Some(b)) => format!("{a}{b}"),
        _ => "00".into(),
    }
}

/// Whether `text` has the shape of a JA4 fingerprint: `a_b_c`, `a` ten ASCII letters and
/// digits starting with the protocol (`t` TCP, `q` QUIC, `d` DTLS), `b` and `c` twelve
/// lowercase hex digits each.
pub fn is_fingerprint(text: &str) -> bool {
    let mut parts = text.split('_');
    let (Some(a), Some(b), Some(c), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let hex = |p: &str| p.len() == 12 && p.bytes().all(|x| matches!(x, b'0'..=b'9' | b'a'..=b'f'));
    a.len() == 10
        && matches!(a.as_bytes()[0], b't' | b'q' | b'd')
        && a.bytes().all(|x| x.is_ascii_alphanumeric())
        && hex(b)
        && hex(c)
}

/// The JA4 fingerprint of `hello` (over TCP).
pub fn ja4(hello: &Hello) -> String {
    let ciphers: Vec<u16> = hello
        .ciphers
        .iter()
        .copied()
        .filter(|v| !grease(*v))
        .collect();
    let exts: Vec<u16> = (hello.extensions.iter().copied())
        .filter(|v| !grease(*v))
        .collect();
    let version = (hello.versions.iter().copied())
        .filter(|v| !grease(*v))
        .max()
        .unwrap_or(hello.legacy_version);
    let sni = if exts.contains(&0x0000) { 'd' } else { 'i' };
    let a = format!(
        "t{}{sni}{:02}{:02}{}",
        version_code(version),
        ciphers.len().min(99),
        exts.len().min(99),
        alpn_code(hello.alpn.as_deref())
    );
    let mut sorted_ciphers = ciphers.clone();
    sorted_ciphers.sort_unstable();
    let b = hash12(&hex_list(&sorted_ciphers), sorted_ciphers.is_empty());
    let mut sorted_exts: Vec<u16> = exts
        .into_iter()
        .filter(|v| *v != 0x0000 && *v != 0x0010)
        .collect();
    sorted_exts.sort_unstable();
    let sig_algs: Vec<u16> = (hello.sig_algs.iter().copied())
        .filter(|v| !grease(*v))
        .collect();
    let mut c_text = hex_list(&sorted_exts);
    if !sig_algs.is_empty() {
        c_text.push('_');
        c_text.push_str(&hex_list(&sig_algs));
    }
    let c = hash12(&c_text, sorted_exts.is_empty());
    format!("{a}_{b}_{c}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16s(v: &[u16]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_be_bytes()).collect()
    }

    fn with_len16(body: Vec<u8>) -> Vec<u8> {
        let mut out = (body.len() as u16).to_be_bytes().to_vec();
        out.extend(body);
        out
    }

    /// A ClientHello record with the specification's example values, GREASE added; without
    /// `sig_algs`, its signature_algorithms extension is sent empty.
    fn spec_hello(sig_algs: bool) -> Vec<u8> {
        let ciphers: [u16; 16] = [
            0x0a0a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013,
            0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
        ];
        let ext_order: [u16; 17] = [
            0x3a3a, 0x001b, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002d, 0x000d, 0x0005, 0x0023,
            0x0012, 0x002b, 0xff01, 0x000b, 0x000a, 0x0015,
        ];
        let mut exts = Vec::new();
        for &kind in &ext_order {
            let data: Vec<u8> = match kind {
                0x0000 => {
                    let name = b"example.com";
                    let mut entry = vec![0u8];
                    entry.extend(with_len16(name.to_vec()));
                    with_len16(entry)
                }
                0x0010 => with_len16(vec![
                    2, b'h', b'2', 8, b'h', b't', b't', b'p', b'/', b'1', b'.', b'1',
                ]),
                0x002b => {
                    let v = u16s(&[0x7a7a, 0x0304, 0x0303]);
                    let mut d = vec![v.len() as u8];
                    d.extend(v);
                    d
                }
                0x000d if sig_algs => with_len16(u16s(&[
                    0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
                ])),
                0x000d => with_len16(Vec::new()),
                _ => Vec::new(),
            };
            exts.extend(kind.to_be_bytes());
            exts.extend(with_len16(data));
        }
        let mut body = vec![0x03, 0x03];
        body.extend([7u8; 32]);
        body.push(0); // session id
        body.extend(with_len16(u16s(&ciphers)));
        body.extend([1, 0]); // compression: null
        body.extend(with_len16(exts));
        let mut hs = vec![0x01, 0, (body.len() >> 8) as u8, body.len() as u8];
        hs.extend(body);
        let mut record = vec![0x16, 0x03, 0x01];
        record.extend(with_len16(hs));
        record
    }

    #[test]
    fn the_specification_example_with_grease() {
        let hello = parse_record(&spec_hello(true)).unwrap();
        assert_eq!(ja4(&hello), "t13d1516h2_8daaf6152771_e5627efa2ab1");
        assert!(is_fingerprint(&ja4(&hello)));
        for not in [
            "",
            "t13d1516h2_8daaf6152771",
            "x13d1516h2_8daaf6152771_e5627efa2ab1",
            "t13d1516h2_8DAAF6152771_e5627efa2ab1",
            "t13d1516h2_8daaf6152771_e5627efa2ab1_",
        ] {
            assert!(!is_fingerprint(not), "{not}");
        }
    }

    #[test]
    fn without_signature_algorithms_there_is_no_underscore_part() {
        let hello = parse_record(&spec_hello(false)).unwrap();
        assert_eq!(ja4(&hello), "t13d1516h2_8daaf6152771_6d807ffa2a79");
    }

    #[test]
    fn alpn_codes_follow_the_specification() {
        assert_eq!(alpn_code(None), "00");
        assert_eq!(alpn_code(Some(b"h2")), "h2");
        assert_eq!(alpn_code(Some(b"http/1.1")), "h1");
        assert_eq!(alpn_code(Some(b"x")), "xx");
        assert_eq!(alpn_code(Some(&[0xab, 0x01, 0xcd])), "ad");
    }

    #[test]
    fn every_prefix_is_an_error_not_a_panic() {
        let full = spec_hello(true);
        for n in 0..full.len() {
            assert!(
                parse_record(&full[..n]).is_err(),
                "a prefix of {n} bytes parsed"
            );
        }
        assert_eq!(
            parse_record(b"GET / HTTP/1.1\r\n"),
            Err(Ja4Error::NotClientHello)
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            if let Ok(h) = parse_record(&bytes) {
                let _ = ja4(&h);
            }
        }
    }
}
