//! Plain HTTP/1 connections that hold no HTTP state while they wait for their next request.
//!
//! hyper keeps a read buffer, a write buffer (8 KiB each) and its connection state for as
//! long as a connection is open: at 10,000 idle keep-alive connections (a kubelet fleet, a
//! CDN's connection pool) that is most of a node's memory. Here hyper serves a connection
//! only while requests come. Once every response is handed over and flushed and the client
//! has sent nothing more, [`Releasing`] tells hyper the client is done (an end of stream
//! between requests, which hyper takes as a clean close), hyper gives the socket back without
//! shutting it down, and the connection waits for its next request holding only the socket.
//! The next request starts a new hyper connection on the same socket. A connection silent
//! for the header timeout is closed, as hyper closes an idle one.
//!
//! hyper is told so only when its buffers are certainly empty: no response in flight (each is
//! counted until hyper drops its body), no write attempted since hyper's last flush (hyper
//! flushes the socket only once its write buffer is empty), and the bytes it last read ended
//! a request head (so no part of a next request waits in its read buffer).

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::sendfile::SendfileStream;

/// How long a connection between requests keeps hyper's state before it lets it go: requests
/// that come back to back (a busy client, a proxy's pool) do not each start a new hyper
/// connection, and an idle one holds the state only this long.
const GRACE: Duration = Duration::from_millis(10);

/// The end of a request head: what the bytes hyper last read must end with before it is
/// told that the client is done.
const HEAD_END: [u8; 4] = *b"\r\n\r\n";

/// A connection's requests whose responses hyper still holds.
#[derive(Debug, Default)]
pub struct InFlight(AtomicUsize);

impl InFlight {
    /// A request arrived; it counts until the returned guard (kept in its response body) drops.
    pub fn start(self: &Arc<Self>) -> Handling {
        self.0.fetch_add(1, Ordering::AcqRel);
        Handling(Arc::clone(self))
    }

    fn none(&self) -> bool {
        self.0.load(Ordering::Acquire) == 0
    }
}

/// Counts one request in [`InFlight`] for as long as it lives.
#[derive(Debug)]
pub struct Handling(Arc<InFlight>);

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted until hyper drops it.
pub struct HandledBody<B> {
    inner: B,
    _handling: Handling,
}

impl<B> HandledBody<B> {
    pub fn new(inner: B, handling: Handling) -> Self {
        HandledBody {
            inner,
            _handling: handling,
        }
    }
}

impl<B: HttpBody<Data = Bytes> + Unpin> HttpBody for HandledBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket as hyper sees it: reads end (with no error) once the connection is idle
/// between requests and nothing more has arrived.
pub struct Releasing<S> {
    io: S,
    in_flight: Arc<InFlight>,
    /// No write was attempted since hyper last flushed.
    flushed: bool,
    /// The last (up to) four bytes hyper read; [`HEAD_END`] before it read any.
    tail: [u8; 4],
    /// hyper was told the client is done while the socket stays open.
    released: bool,
    /// Runs while the connection is between requests; hyper's state goes when it ends.
    grace: Option<Pin<Box<Sleep>>>,
    /// `grace` was set for the current stretch between requests.
    grace_armed: bool,
}

impl<S> Releasing<S> {
    fn new(io: S, in_flight: Arc<InFlight>, grace: Option<Pin<Box<Sleep>>>) -> Self {
        Releasing {
            io,
            in_flight,
            flushed: true,
            tail: HEAD_END,
            released: false,
            grace,
            grace_armed: false,
        }
    }

    /// Whether the connection has been between requests for [`GRACE`].
    fn grace_over(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = Instant::now() + GRACE;
        let armed = self.grace_armed;
        let grace = self
            .grace
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !armed {
            grace.as_mut().reset(deadline);
            self.grace_armed = true;
        }
        grace.as_mut().poll(cx).is_ready()
    }

    fn remember(&mut self, read: &[u8]) {
        let last = read.get(read.len().saturating_sub(4)..).unwrap_or_default();
        // The four bytes as one number, oldest first: each new byte shifts the oldest out
        // (a rotation of the array per byte cost a call each).
        let mut tail = u32::from_be_bytes(self.tail);
        for &byte in last {
            tail = (tail << 8) | u32::from(byte);
        }
        self.tail = tail.to_be_bytes();
    }

    /// Nothing of a request or response is left in hyper's hands.
    fn between_requests(&self) -> bool {
        self.flushed && self.tail == HEAD_END && self.in_flight.none()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Releasing<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().get(before..).unwrap_or_default();
                this.remember(read);
                this.grace_armed = false;
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.between_requests() && this.grace_over(cx) => {
                this.released = true;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Releasing<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.flushed = false;
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.flushed = false;
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.io).poll_flush(cx);
        if matches!(flushed, Poll::Ready(Ok(()))) {
            this.flushed = true;
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// What the HTTP/1 service returns for a request: boxed, because hyper hands the socket back
/// (`poll_without_shutdown`) only for services whose futures are `Unpin`.
pub type ServiceFuture = Pin<
    Box<dyn Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send>,
>;

/// Serve HTTP/1 on `stream` until the client closes it, it stays silent for `idle` between
/// requests, or `shutdown` is cancelled (a request in flight then finishes first, its
/// response saying `Connection: close`). `service` makes each stretch's hyper service.
pub async fn serve<F, Svc>(
    mut stream: SendfileStream,
    http: &http1::Builder,
    service: F,
    idle: Duration,
    shutdown: &CancellationToken,
) -> Result<(), hyper::Error>
where
    F: Fn(Arc<InFlight>) -> Svc,
    Svc: hyper::service::Service<
            hyper::Request<Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
            Future = ServiceFuture,
        > + Unpin,
{
    let mut grace = None;
    loop {
        // Wait for the socket to become readable holding only the socket: no system call
        // (hyper's last read left the readiness cleared) and no state of its own in this
        // task. A close is readable too; hyper then reads the end and finishes at once.
        let next = std::future::poll_fn(|cx| stream.tcp().poll_read_ready(cx));
        tokio::select! {
            ready = tokio::time::timeout(idle, next) => {
                if !matches!(ready, Ok(Ok(()))) {
                    return Ok(());
                }
            }
            () = shutdown.cancelled() => return Ok(()),
        }
        let in_flight = Arc::new(InFlight::default());
        let io = TokioIo::new(Releasing::new(stream, Arc::clone(&in_flight), grace.take()));
        // Boxed, so an idle connection's task is not the size of hyper's connection state.
        let mut connection = Box::new(http.serve_connection(io, service(in_flight)));
        let mut stopping = false;
        let served = loop {
            tokio::select! {
                served = std::future::poll_fn(|cx| connection.poll_without_shutdown(cx)) => {
                    break served;
                }
                () = shutdown.cancelled(), if !stopping => {
                    Pin::new(&mut *connection).graceful_shutdown();
                    stopping = true;
                }
            }
        };
        served?;
        let parts = connection.into_parts();
        let io = parts.io.into_inner();
        // Closed by the client, by `Connection: close` or by the shutdown: dropping the socket
        // closes it (every response byte was flushed before hyper finished).
        if !io.released || stopping || !parts.read_buf.is_empty() {
            return Ok(());
        }
        stream = io.io;
        // One timer for the connection's life, not one per stretch of requests.
        grace = io.grace;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bytes_that_end_a_request_head_release_the_connection() {
        let in_flight = Arc::new(InFlight::default());
        let mut io = Releasing::new((), Arc::clone(&in_flight), None);
        assert!(io.between_requests(), "nothing read yet");
        io.remember(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n");
        assert!(!io.between_requests(), "half a head");
        io.remember(b"\r");
        io.remember(b"\n");
        assert!(io.between_requests(), "the head ended across two reads");
        let handling = in_flight.start();
        assert!(!io.between_requests(), "a response in flight");
        drop(handling);
        io.flushed = false;
        assert!(!io.between_requests(), "a write not yet flushed");
        io.flushed = true;
        assert!(io.between_requests());
    }
}
