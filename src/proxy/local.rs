//! Answers sekisho writes itself rather than the origin: a rule's refusal (its header built
//! once per snapshot from [`local_header`]) and the errors of [`answer`]: a malformed request,
//! a request body that came too slowly, `CONNECT`, an origin that could not be reached or did
//! not answer in time.
//!
//! Every one carries a short text body, `Content-Type: text/plain`, `Cache-Control: no-store`
//! and no `Server` field; Pingora's writer adds `Date` and `Connection` (`close` when the
//! connection will not be kept). Nothing here is written by Pingora's `respond_error`, whose
//! answers have an empty body and `Server: Pingora`.

use bytes::Bytes;
use http::header;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;

/// The response header of a local answer with a `len`-byte text body.
pub fn local_header(status: u16, len: usize) -> Result<Box<ResponseHeader>> {
    let mut header = ResponseHeader::build(status, Some(5))?;
    header.insert_header(header::CONTENT_LENGTH, len)?;
    header.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    header.insert_header(header::CACHE_CONTROL, "no-store")?;
    Ok(Box::new(header))
}

/// The body of an error sekisho answers itself with `status`.
pub fn body_of(status: u16) -> &'static str {
    match status {
        400 => "400 Bad Request\n",
        405 => "405 Method Not Allowed: sekisho does not forward CONNECT\n",
        408 => "408 Request Timeout: the request body did not arrive in time\n",
        500 => "500 Internal Server Error\n",
        502 => "502 Bad Gateway: no valid response from the origin\n",
        504 => "504 Gateway Timeout: the origin did not answer in time\n",
        _ => "sekisho could not serve this request\n",
    }
}

/// Writes the error answer `status` with its [`body_of`]. The caller decides whether the
/// connection is kept (`set_keepalive`) before calling; a `HEAD` request gets the header only
/// (Pingora's writer drops the body). Nothing is written if a final response already was.
pub async fn answer(session: &mut ServerSession, status: u16) -> Result<()> {
    if session
        .response_written()
        .is_some_and(|r| !r.status.is_informational() || r.status == 101)
    {
        return Ok(());
    }
    let body = body_of(status);
    session
        .write_response_header(local_header(status, body.len())?)
        .await?;
    session
        .write_response_body(Bytes::from_static(body.as_bytes()), true)
        .await
}
