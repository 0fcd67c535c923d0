//! HTTP/1.1 framing a shield refuses: a request whose length or target two parsers could read
//! differently (request smuggling, RFC 9112 §6.3 and §11.2) is answered 400 and its
//! connection closed, before any rule and before the origin sees a byte of it. Pure: the
//! request head in, the reason out.

use http::{header, HeaderMap, Version};

/// Why a request's framing is refused; `as_str` is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ambiguous {
    /// Both `Content-Length` and `Transfer-Encoding`.
    ContentLengthAndTransferEncoding,
    /// More than one `Content-Length` (as fields or as a list), or one that is not digits.
    ContentLength,
    /// A `Transfer-Encoding` whose last coding is not `chunked`, or that lists `chunked` twice,
    /// or one on an HTTP/1.0 request.
    TransferEncoding,
    /// An HTTP/1.1 request without `Host`, or with more than one.
    Host,
}

impl Ambiguous {
    /// Every reason, for metric series that start at 0.
    pub const ALL: [Ambiguous; 4] = [
        Self::ContentLengthAndTransferEncoding,
        Self::ContentLength,
        Self::TransferEncoding,
        Self::Host,
    ];

    /// The `reason` label of `sekisho_malformed_requests_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ContentLengthAndTransferEncoding => "content_length_and_transfer_encoding",
            Self::ContentLength => "content_length",
            Self::TransferEncoding => "transfer_encoding",
            Self::Host => "host",
        }
    }
}

/// Whether the raw request head `raw` (request line and fields, as received) has a
/// `Content-Length` field. Pingora drops that field from the parsed head when
/// `Transfer-Encoding` is present too, so only the raw bytes still show it.
pub fn names_content_length(raw: &[u8]) -> bool {
    raw.split(|&b| b == b'\n').skip(1).any(|line| {
        line.iter().position(|&b| b == b':').is_some_and(|colon| {
            line[..colon]
                .trim_ascii()
                .eq_ignore_ascii_case(b"content-length")
        })
    })
}

/// Why the request with `version` and `headers` must be refused, or `None` if its framing is
/// unambiguous. `stripped_length`: the raw head had a `Content-Length` that the parsed
/// `headers` no longer show (see [`names_content_length`]).
pub fn check(version: Version, headers: &HeaderMap, stripped_length: bool) -> Option<Ambiguous> {
    let lengths = headers.get_all(header::CONTENT_LENGTH);
    let codings = headers.get_all(header::TRANSFER_ENCODING);
    let has_length = stripped_length || lengths.iter().next().is_some();
    let has_codings = codings.iter().next().is_some();
    if has_length && has_codings {
        return Some(Ambiguous::ContentLengthAndTransferEncoding);
    }
    if has_length {
        let mut n = 0;
        for v in lengths {
            n += 1;
            let digits = v.as_bytes();
            if n > 1 || digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Some(Ambiguous::ContentLength);
            }
        }
    }
    if has_codings {
        if version == Version::HTTP_10 {
            return Some(Ambiguous::TransferEncoding);
        }
        let mut chunked = 0;
        let mut last_chunked = false;
        for v in codings {
            let Ok(text) = v.to_str() else {
                return Some(Ambiguous::TransferEncoding);
            };
            for coding in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                last_chunked = coding.eq_ignore_ascii_case("chunked");
                chunked += usize::from(last_chunked);
            }
        }
        if !last_chunked || chunked != 1 {
            return Some(Ambiguous::TransferEncoding);
        }
    }
    if version == Version::HTTP_11 {
        let mut hosts = headers.get_all(header::HOST).iter();
        if hosts.next().is_none() || hosts.next().is_some() {
            return Some(Ambiguous::Host);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(version: Version, fields: &[(&str, &str)]) -> Option<Ambiguous> {
        let mut h = HeaderMap::new();
        for (k, v) in fields {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        check(version, &h, false)
    }

    fn v11(fields: &[(&str, &str)]) -> Option<Ambiguous> {
        let mut all = vec![("host", "a")];
        all.extend_from_slice(fields);
        with(Version::HTTP_11, &all)
    }

    #[test]
    fn every_reason_has_its_metric_series() {
        let labels = Ambiguous::ALL.map(Ambiguous::as_str);
        assert_eq!(labels, crate::metrics::MALFORMED_REASONS);
    }

    #[test]
    fn plain_requests_pass() {
        assert_eq!(v11(&[]), None);
        assert_eq!(v11(&[("content-length", "0")]), None);
        assert_eq!(v11(&[("content-length", "12")]), None);
        assert_eq!(v11(&[("transfer-encoding", "chunked")]), None);
        assert_eq!(v11(&[("transfer-encoding", "Chunked")]), None);
        assert_eq!(v11(&[("transfer-encoding", "gzip, chunked")]), None);
        assert_eq!(
            v11(&[
                ("transfer-encoding", "gzip"),
                ("transfer-encoding", "chunked")
            ]),
            None
        );
        // HTTP/1.0 needs no Host
        assert_eq!(with(Version::HTTP_10, &[]), None);
    }

    #[test]
    fn ambiguous_lengths_are_refused() {
        use Ambiguous::*;
        assert_eq!(
            v11(&[("content-length", "5"), ("transfer-encoding", "chunked")]),
            Some(ContentLengthAndTransferEncoding)
        );
        assert_eq!(
            v11(&[("content-length", "5"), ("content-length", "5")]),
            Some(ContentLength)
        );
        assert_eq!(v11(&[("content-length", "5, 5")]), Some(ContentLength));
        assert_eq!(v11(&[("content-length", "+5")]), Some(ContentLength));
        assert_eq!(v11(&[("content-length", "")]), Some(ContentLength));
        assert_eq!(
            v11(&[("transfer-encoding", "gzip")]),
            Some(TransferEncoding)
        );
        assert_eq!(
            v11(&[("transfer-encoding", "chunked, gzip")]),
            Some(TransferEncoding)
        );
        assert_eq!(
            v11(&[("transfer-encoding", "chunked, chunked")]),
            Some(TransferEncoding)
        );
        assert_eq!(
            v11(&[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked")
            ]),
            Some(TransferEncoding)
        );
        assert_eq!(
            v11(&[("transfer-encoding", "xchunked")]),
            Some(TransferEncoding)
        );
        assert_eq!(
            with(Version::HTTP_10, &[("transfer-encoding", "chunked")]),
            Some(TransferEncoding)
        );
    }

    #[test]
    fn a_length_pingora_dropped_is_still_seen() {
        let raw = b"POST / HTTP/1.1\r\nHost: a\r\ncontent-LENGTH : 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(names_content_length(raw));
        assert!(!names_content_length(
            b"POST /content-length: HTTP/1.1\r\nHost: a\r\nX-Content-Length: 4\r\n\r\n"
        ));
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "a".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        assert_eq!(
            check(Version::HTTP_11, &h, true),
            Some(Ambiguous::ContentLengthAndTransferEncoding)
        );
        assert_eq!(check(Version::HTTP_11, &h, false), None);
    }

    #[test]
    fn an_http11_request_needs_exactly_one_host() {
        assert_eq!(with(Version::HTTP_11, &[]), Some(Ambiguous::Host));
        assert_eq!(
            with(Version::HTTP_11, &[("host", "a"), ("host", "b")]),
            Some(Ambiguous::Host)
        );
    }
}
