//! Zero-copy sending of local-disk blobs on HTTP/1.1: `sendfile(2)` from the page cache to the
//! socket, so wharf's CPU per GB served is the kernel's TCP work and no copy.
//!
//! hyper owns the connection and writes response bodies from memory. So a file-backed body
//! yields *placeholders*: `Bytes` that point into [`PLACEHOLDER`], a static region nothing
//! else uses, and that each stand for one [`FileSpan`]. The body queues the spans on its
//! connection ([`SendfileConn`], given to handlers as axum `ConnectInfo`) in the order it
//! yields them. hyper queues body buffers and writes them in order with vectored writes (its
//! documented queue strategy, chosen because [`SendfileStream`] says it writes vectored), and
//! when the connection sees a write that starts at a placeholder, it sends the next queued
//! span's bytes with `sendfile` instead. Every write is checked against the span it stands for;
//! a mismatch fails the connection rather than send wrong bytes.
//!
//! Fail closed: hyper is configured to write vectored ([`crate::connections`]), and a
//! placeholder dropped before its span went out (what a writer that copies buffers would do,
//! sending zeros instead) poisons the connection, which then refuses every further write.
//!
//! Spans whose bytes are not in the page cache are sent as ordinary read chunks instead, so a
//! runtime thread never waits for the disk in `sendfile` (except for pages evicted between the
//! check and the send). HTTP/2 connections, `HEAD` and the S3 store use the ordinary path.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use wharf_storage::FileSpan;
use wharf_storage::file_read::{self, CHUNK};

/// Stands for file bytes in hyper's write queue; never read, so it stays untouched `.bss`.
static PLACEHOLDER: [u8; CHUNK] = [0; CHUNK];

/// One placeholder's worth of a file: at most [`CHUNK`] bytes.
#[derive(Debug)]
struct Span {
    file: Arc<std::fs::File>,
    offset: u64,
    len: usize,
    /// Every byte went out.
    sent: AtomicBool,
    /// The connection's queue, poisoned when this span's placeholder is dropped unsent: the
    /// connection's bytes can no longer be trusted to match the response.
    conn: SpanQueue,
}

/// The spans a connection's current response has yielded and not yet sent, oldest first.
#[derive(Debug, Default)]
struct ConnSpans {
    queue: Mutex<VecDeque<Weak<Span>>>,
    poisoned: AtomicBool,
}

type SpanQueue = Arc<ConnSpans>;

/// A connection that can send file spans; handlers see it as `ConnectInfo<SendfileConn>`.
#[derive(Clone, Debug, Default)]
pub struct SendfileConn {
    spans: SpanQueue,
}

impl SendfileConn {
    /// The span queue of `stream`, for its requests.
    pub fn of(stream: &SendfileStream) -> SendfileConn {
        SendfileConn {
            spans: Arc::clone(&stream.spans),
        }
    }
}

impl SendfileConn {
    /// The response body for `span` on this connection: placeholders for what is in the page
    /// cache, read chunks for the rest. `sent` is told the size of each span left to `sendfile`.
    pub fn body(&self, span: FileSpan, sent: impl Fn(u64) + Send + Sync + 'static) -> Body {
        let queue = Arc::clone(&self.spans);
        let end = span.start.saturating_add(span.len);
        let state = (span.file, span.start);
        let chunks = futures::stream::try_unfold(state, move |(file, pos)| {
            let len = end.saturating_sub(pos).min(CHUNK as u64);
            let cached = (len > 0 && file_read::is_cached(&file, pos, len)).then(|| {
                sent(len);
                placeholder(&queue, Arc::clone(&file), pos, len as usize)
            });
            async move {
                if len == 0 {
                    return Ok(None);
                }
                let chunk = match cached {
                    Some(placeholder) => placeholder,
                    None => file_read::read_at(&file, pos, len).await?,
                };
                if chunk.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "blob file shorter than its size",
                    ));
                }
                let next = pos + chunk.len() as u64;
                Ok::<_, io::Error>(Some((chunk, (file, next))))
            }
        });
        Body::from_stream(chunks)
    }
}

/// Queue a span and return the placeholder that stands for it.
fn placeholder(spans: &SpanQueue, file: Arc<std::fs::File>, offset: u64, len: usize) -> Bytes {
    let span = Arc::new(Span {
        file,
        offset,
        len,
        sent: AtomicBool::new(false),
        conn: Arc::clone(spans),
    });
    if let Ok(mut queue) = spans.queue.lock() {
        queue.push_back(Arc::downgrade(&span));
    }
    Bytes::from_owner(Placeholder(span))
}

/// Owns its span: the span lives exactly as long as hyper holds the placeholder.
struct Placeholder(Arc<Span>);

impl Drop for Placeholder {
    fn drop(&mut self) {
        if !self.0.sent.load(Ordering::Acquire) {
            self.0.conn.poisoned.store(true, Ordering::Release);
        }
    }
}

impl AsRef<[u8]> for Placeholder {
    fn as_ref(&self) -> &[u8] {
        &PLACEHOLDER[..self.0.len]
    }
}

/// Where `buf` starts inside [`PLACEHOLDER`], if it is a placeholder.
fn placeholder_offset(buf: &[u8]) -> Option<usize> {
    let base = PLACEHOLDER.as_ptr() as usize;
    let at = (buf.as_ptr() as usize).checked_sub(base)?;
    (!buf.is_empty() && at < CHUNK).then_some(at)
}

/// A TCP connection that sends placeholders' file spans with `sendfile`.
/// A write that makes no progress for its send timeout fails, so a client that stops reading
/// does not hold a connection (and its response's buffers) forever.
pub struct SendfileStream {
    tcp: TcpStream,
    spans: SpanQueue,
    /// The span being sent and how many of its bytes went out.
    sending: Option<(Arc<Span>, usize)>,
    send_timeout: Duration,
    /// Armed while a write waits for the client to read.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl SendfileStream {
    pub fn new(tcp: TcpStream, send_timeout: Duration) -> SendfileStream {
        SendfileStream {
            tcp,
            spans: SpanQueue::default(),
            sending: None,
            send_timeout,
            stalled: None,
        }
    }

    /// The socket, to wait for a client's next request without reading it.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Track a write's progress: `Pending` arms the send timeout, which fails the write once
    /// it runs out; anything else disarms it.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let timeout = self.send_timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stalled.as_mut().poll(cx).is_ready() {
            self.stalled = None;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing within the send timeout",
            )));
        }
        Poll::Pending
    }

    /// Send (part of) the span `buf` stands for; `at` is `buf`'s offset in [`PLACEHOLDER`].
    fn poll_send_span(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        at: usize,
    ) -> Poll<io::Result<usize>> {
        if self.sending.is_none() {
            self.sending = self.next_span().map(|span| (span, 0));
        }
        let Some((span, sent)) = &self.sending else {
            return Poll::Ready(Err(mismatch("a placeholder with no file span queued")));
        };
        // hyper resumes a placeholder exactly where the last write stopped, and never passes
        // more of it than the span holds.
        if at != *sent || buf.len() > span.len - sent {
            return Poll::Ready(Err(mismatch(
                "a placeholder that does not match its file span",
            )));
        }
        let (span, sent) = (Arc::clone(span), *sent);
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            let mut offset = span.offset + sent as u64;
            let written = self.tcp.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(&self.tcp, &*span.file, Some(&mut offset), buf.len())
                    .map_err(io::Error::from)
            });
            match written {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "blob file shorter than its size",
                    )));
                }
                Ok(n) => {
                    if sent + n >= span.len {
                        span.sent.store(true, Ordering::Release);
                        self.sending = None;
                    } else {
                        self.sending = Some((span, sent + n));
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// The oldest queued span whose placeholder is still alive.
    fn next_span(&self) -> Option<Arc<Span>> {
        let mut queue = self.spans.queue.lock().ok()?;
        while let Some(weak) = queue.pop_front() {
            if let Some(span) = weak.upgrade() {
                return Some(span);
            }
        }
        None
    }
}

fn mismatch(what: &str) -> io::Error {
    tracing::error!("sendfile: {what}; closing the connection");
    io::Error::other(format!("sendfile: {what}"))
}

impl AsyncRead for SendfileStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    /// Writes either the ordinary buffers before the first placeholder, or (from) one
    /// placeholder's span; hyper calls again for the rest.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.spans.poisoned.load(Ordering::Acquire) {
            return Poll::Ready(Err(mismatch("a file span was dropped before it was sent")));
        }
        let first_placeholder = bufs.iter().position(|b| placeholder_offset(b).is_some());
        let poll = match first_placeholder {
            Some(0) => {
                let buf: &[u8] = &bufs[0];
                let at = placeholder_offset(buf).unwrap_or_default();
                this.poll_send_span(cx, buf, at)
            }
            Some(n) => Pin::new(&mut this.tcp).poll_write_vectored(cx, &bufs[..n]),
            None => Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs),
        };
        this.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        // Also what makes hyper queue body buffers instead of copying them into one buffer,
        // which placeholders depend on.
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.tcp).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A connected pair: wharf's side as a `SendfileStream`, and the client's.
    async fn pair() -> (SendfileStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"));
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (server, _) = accepted.expect("accept");
        (
            SendfileStream::new(server, Duration::from_secs(60)),
            client.expect("connect"),
        )
    }

    fn file_of(content: &[u8]) -> (tempfile::NamedTempFile, Arc<std::fs::File>) {
        let mut tmp = tempfile::NamedTempFile::new().expect("temp file");
        tmp.write_all(content).expect("write");
        let file = std::fs::File::open(tmp.path()).expect("open");
        (tmp, Arc::new(file))
    }

    #[tokio::test]
    async fn ordinary_bytes_and_placeholders_arrive_in_order() {
        let (mut server, mut client) = pair().await;
        let (_tmp, file) = file_of(b"0123456789");
        let conn = SendfileConn {
            spans: Arc::clone(&server.spans),
        };
        let first = placeholder(&conn.spans, Arc::clone(&file), 2, 5);
        let second = placeholder(&conn.spans, file, 0, 2);
        for part in [&b"head:"[..], &first, &b"|"[..], &second] {
            server.write_all(part).await.expect("write");
        }
        drop(server);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"head:23456|01");
    }

    #[tokio::test]
    async fn a_placeholder_without_its_span_fails_instead_of_sending_zeros() {
        let (mut server, _client) = pair().await;
        let err = server
            .write_all(&PLACEHOLDER[..4])
            .await
            .expect_err("no span queued");
        assert!(err.to_string().contains("sendfile"), "{err}");
    }

    #[tokio::test]
    async fn a_placeholder_longer_than_its_span_fails() {
        let (mut server, _client) = pair().await;
        let (_tmp, file) = file_of(b"0123456789");
        let _held = placeholder(&server.spans, file, 0, 3);
        let err = server
            .write_all(&PLACEHOLDER[..8])
            .await
            .expect_err("span is 3 bytes");
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[tokio::test]
    async fn a_placeholder_copied_instead_of_sent_closes_the_connection() {
        let (mut server, mut client) = pair().await;
        let (_tmp, file) = file_of(b"abcdef");
        // What a writer that flattens buffers does: copy the placeholder, drop it, write the copy.
        let copied = placeholder(&server.spans, Arc::clone(&file), 0, 3).to_vec();
        let err = server
            .write_all(&copied)
            .await
            .expect_err("zeros must not go out");
        assert!(err.to_string().contains("dropped"), "{err}");
        let kept = placeholder(&server.spans, file, 3, 3);
        assert!(server.write_all(&kept).await.is_err(), "poisoned for good");
        drop(server);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"", "not one byte of the copy");
    }

    #[tokio::test]
    async fn a_client_that_never_reads_is_cut_off_after_the_send_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"));
        let (client, accepted) = tokio::join!(client, listener.accept());
        let _client = client.expect("connect");
        let mut server =
            SendfileStream::new(accepted.expect("accept").0, Duration::from_millis(300));
        let chunk = vec![1u8; 1 << 20];
        let started = std::time::Instant::now();
        let err = loop {
            if let Err(e) = server.write_all(&chunk).await {
                break e;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never timed out"
            );
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
