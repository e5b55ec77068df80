//! One access log line per request (tracing target `wharf::access`, level info): time, method,
//! path, status, bytes sent, duration, cache result, upstream, client address and request id.
//! The request id is the client's `X-Request-Id` when it is a sane token, else a new one; it is
//! returned in `X-Request-Id`. The line is written when the response body is finished or
//! dropped, so bytes and duration are what was really sent. Headers are never logged, so no
//! credential or token can reach the log through it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, Uri};
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

pub use wharf_mirror::CacheResult;

/// Set by a handler on its response: the cache result and the upstream it concerned.
#[derive(Debug, Clone)]
pub struct Served {
    pub cache: CacheResult,
    pub upstream: std::sync::Arc<str>,
}

/// Who made a request, as authentication established it (`anonymous` when no credentials were
/// given); set on the response by the API handler when auth is on.
#[derive(Debug, Clone)]
pub struct Principal(pub String);

/// The client's address, put on every request by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// `X-Request-Id`, as a name made once: a `&str` name is parsed and checked on every use.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A request id: the client's if it is 1-64 characters of `[A-Za-z0-9._-]`, else a new one:
/// the boot stamp's low 8 hex digits, then a counter's (at least 8). A header value either way,
/// since the response carries it; written out from a table, not formatted.
fn request_id(request: &Request) -> HeaderValue {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static BOOT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    if let Some(given) = request.headers().get(REQUEST_ID).filter(|v| {
        (1..=64).contains(&v.len())
            && v.as_bytes()
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    }) {
        return given.clone();
    }
    let boot = BOOT.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        nanos ^ (u64::from(std::process::id()) << 32)
    });
    let count = NEXT.fetch_add(1, Ordering::Relaxed);
    let count_digits = (16 - count.leading_zeros() as usize / 4).max(8);
    let mut id = [0u8; 24];
    hex_into(&mut id[..8], boot & 0xffff_ffff);
    let len = 8 + count_digits;
    hex_into(&mut id[8..len], count);
    // Hex digits are always a valid value; the fallback only keeps this free of a panic path.
    HeaderValue::from_bytes(&id[..len]).unwrap_or(HeaderValue::from_static("0"))
}

/// `value`'s low `out.len()` hex digits, most significant first.
fn hex_into(out: &mut [u8], mut value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in out.iter_mut().rev() {
        *byte = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

/// A request on its way in: its id, and (when access lines are on) what its line needs.
/// [`Started::finish`] puts the id on the response and the line on its body.
pub struct Started {
    id: HeaderValue,
    /// Start, method, path and client, only while `wharf::access` lines are on.
    logged: Option<(Instant, Method, Uri, Option<SocketAddr>)>,
}

impl Started {
    /// Assign the request id and note what the line will say.
    pub fn of(request: &Request) -> Started {
        let id = request_id(request);
        let logged = tracing::enabled!(target: "wharf::access", tracing::Level::INFO).then(|| {
            let client = request.extensions().get::<ClientAddr>().map(|c| c.0);
            (
                Instant::now(),
                request.method().clone(),
                request.uri().clone(),
                client,
            )
        });
        Started { id, logged }
    }

    /// The response with its request id, and its body wrapped to write the line at its end.
    pub fn finish(self, response: Response) -> Response {
        let Started { id, logged } = self;
        let mut response = response;
        response.headers_mut().insert(REQUEST_ID, id.clone());
        match logged {
            Some((started, method, uri, client)) => {
                log_body(response, started, id, method, uri, client)
            }
            // Access lines are filtered out: keep the request id, skip the body wrapper.
            None => response,
        }
    }
}

/// The access line rides on the response body: written when the body ends or is dropped.
fn log_body(
    response: Response,
    started: Instant,
    id: HeaderValue,
    method: Method,
    uri: Uri,
    client: Option<SocketAddr>,
) -> Response {
    let served = response.extensions().get::<Served>().cloned();
    let principal = response
        .extensions()
        .get::<Principal>()
        .map(|p| p.0.clone());
    let line = Line {
        principal,
        started,
        id,
        method,
        uri,
        status: response.status().as_u16(),
        client,
        served,
        bytes: 0,
    };
    // What the client is owed: Content-Length (nothing for HEAD), else what the body says.
    let declared = response
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let head = line.method == Method::HEAD;
    response.map(|body| {
        let expected = if head {
            Some(0)
        } else {
            declared.or(body.size_hint().exact())
        };
        Body::new(Logged {
            body,
            expected,
            line: Some(line),
        })
    })
}

struct Line {
    principal: Option<String>,
    started: Instant,
    /// The request id: visible ASCII by construction.
    id: HeaderValue,
    method: Method,
    /// The request's target; its path and query are logged (a reference-counted copy).
    uri: Uri,
    status: u16,
    client: Option<SocketAddr>,
    served: Option<Served>,
    bytes: u64,
}

impl Line {
    fn write(&self, complete: bool) {
        let (cache, upstream) = match &self.served {
            Some(s) => (s.cache.as_str(), &*s.upstream),
            None => ("", ""),
        };
        tracing::info!(
            target: "wharf::access",
            method = %self.method,
            path = %Path(&self.uri),
            status = self.status,
            bytes = self.bytes,
            // Microsecond precision, printed as such (3.744, not 3.7443950000000004).
            duration_ms = (self.started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
            cache,
            upstream,
            client = %Client(self.client),
            user = self.principal.as_deref().unwrap_or(""),
            request_id = %self.id.to_str().unwrap_or(""),
            complete,
        );
    }
}

/// A request's path and query as the line shows it.
struct Path<'a>(&'a Uri);

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.path_and_query() {
            Some(p) => f.write_str(p.as_str()),
            None => f.write_str(self.0.path()),
        }
    }
}

/// A client address as the line shows it, nothing when unknown, written without a `String`.
struct Client(Option<SocketAddr>);

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => Ok(()),
        }
    }
}

/// The response body, counted on its way out; the line is written at its end (or drop).
struct Logged {
    body: Body,
    /// The body's length when known up front (hyper stops polling once it has sent it).
    expected: Option<u64>,
    line: Option<Line>,
}

impl HttpBody for Logged {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(line)) = (frame.data_ref(), self.line.as_mut()) {
                    line.bytes = line.bytes.saturating_add(data.len() as u64);
                }
            }
            Poll::Ready(None) => {
                if let Some(line) = self.line.take() {
                    line.write(true);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(line) = self.line.take() {
            // hyper drops a body of known length once it sent that many bytes; short of that,
            // the client went away (or the body failed) mid-way.
            let complete = self.body.is_end_stream()
                || self.expected.is_some_and(|expected| line.bytes >= expected);
            line.write(complete);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_request_ids_are_sixteen_hex_digits_and_distinct() {
        let request = Request::new(Body::empty());
        let (a, b) = (request_id(&request), request_id(&request));
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        assert_eq!(a.len(), 16, "{a}");
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
        assert_eq!(a[..8], b[..8], "one boot stamp");
        // The counter only grows (other tests may take ids in between).
        let count = |id: &str| u64::from_str_radix(&id[8..], 16).unwrap();
        assert!(count(b) > count(a), "{a} then {b}");
        let mut given = Request::new(Body::empty());
        given
            .headers_mut()
            .insert(REQUEST_ID, HeaderValue::from_static("client-id.1"));
        assert_eq!(request_id(&given), "client-id.1");
        given
            .headers_mut()
            .insert(REQUEST_ID, HeaderValue::from_static("not a token"));
        assert_eq!(request_id(&given).len(), 16);
    }
}
