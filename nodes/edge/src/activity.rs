//! What an HTTP/2 connection is doing, for the limits hyper does not enforce there: its
//! header timeout is HTTP/1-only and its keep-alive PING is answered by any live client, so
//! an h2 (or h2c) connection with no open stream would hold its slot forever; and a stream
//! whose client keeps the flow-control window at zero is never polled again, so no write
//! timeout sees it. The connection task asks [`Activity::verdict`] periodically and closes
//! the connection when it has been idle for the header timeout, or when one of its streams
//! has made no progress for the send timeout (closing resets every stream it still holds).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

/// One connection's streams and when it was last busy.
pub struct Activity {
    started: Instant,
    /// An HTTP/1 request was seen: hyper's own header timeout governs this connection.
    http1: AtomicBool,
    /// An HTTP/2 request was seen.
    http2: AtomicBool,
    open: AtomicUsize,
    /// Milliseconds since `started` when the last stream ended.
    last_closed_ms: AtomicU64,
    /// The open streams' clocks (dead ones are pruned as streams end).
    streams: Mutex<Vec<Weak<StreamClock>>>,
}

/// When a stream handed its last frame to hyper and has not been asked for the next since:
/// milliseconds since the connection started, plus one; 0 while not waiting on the client.
#[derive(Default)]
pub struct StreamClock {
    handed_at_ms: AtomicU64,
}

/// Why a connection is to be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No request for the header timeout (h2 preface and PINGs only, or nothing).
    Idle,
    /// A stream's client has read nothing for the send timeout.
    Stalled,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            started: Instant::now(),
            http1: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            last_closed_ms: AtomicU64::new(0),
            streams: Mutex::default(),
        }
    }
}

impl Activity {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// An HTTP/1 request arrived: nothing more to track here.
    pub fn saw_http1(&self) {
        self.http1.store(true, Ordering::Relaxed);
    }

    /// An HTTP/2 request arrived: its response body is tracked until it ends.
    pub fn open_stream(self: &Arc<Self>) -> StreamGuard {
        self.http2.store(true, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::AcqRel);
        let clock = Arc::new(StreamClock::default());
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        streams.retain(|s| s.strong_count() > 0);
        streams.push(Arc::downgrade(&clock));
        StreamGuard {
            activity: Arc::clone(self),
            clock,
        }
    }

    /// HTTP/1 only so far: hyper's own timeouts govern it, the watchdog may stop asking.
    pub fn http1_only(&self) -> bool {
        self.http1.load(Ordering::Relaxed) && !self.http2.load(Ordering::Relaxed)
    }

    /// Whether the connection should be closed now.
    pub fn verdict(&self, idle_after: Duration, stall_after: Duration) -> Option<Verdict> {
        if self.http1_only() {
            return None;
        }
        let now = self.now_ms();
        let idle_ms = u64::try_from(idle_after.as_millis()).unwrap_or(u64::MAX);
        let stall_ms = u64::try_from(stall_after.as_millis()).unwrap_or(u64::MAX);
        if self.open.load(Ordering::Acquire) == 0 {
            let since = self.last_closed_ms.load(Ordering::Acquire);
            return (now.saturating_sub(since) >= idle_ms).then_some(Verdict::Idle);
        }
        let streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let stalled = streams.iter().filter_map(Weak::upgrade).any(|clock| {
            let handed = clock.handed_at_ms.load(Ordering::Acquire);
            handed > 0 && now.saturating_sub(handed - 1) >= stall_ms
        });
        stalled.then_some(Verdict::Stalled)
    }

    /// How often the connection task should ask: often enough to close within about a
    /// quarter of the shorter limit late.
    pub fn check_every(idle_after: Duration, stall_after: Duration) -> Duration {
        (idle_after.min(stall_after) / 4).max(Duration::from_millis(100))
    }
}

/// One open stream: counted until its response body ends or is dropped.
pub struct StreamGuard {
    activity: Arc<Activity>,
    clock: Arc<StreamClock>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let now = self.activity.now_ms();
        self.activity.last_closed_ms.store(now, Ordering::Release);
        self.activity.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that tells its stream's clock when it waits on the client.
pub struct TrackedBody<B> {
    inner: B,
    guard: Option<StreamGuard>,
}

impl<B> TrackedBody<B> {
    pub fn new(inner: B, guard: StreamGuard) -> Self {
        TrackedBody {
            inner,
            guard: Some(guard),
        }
    }
}

impl<B> HttpBody for TrackedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(guard) = &this.guard {
            // Asked for more: the client took what it was given.
            guard.clock.handed_at_ms.store(0, Ordering::Release);
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => {
                if let Some(guard) = &this.guard {
                    let at = guard.activity.now_ms().saturating_add(1);
                    guard.clock.handed_at_ms.store(at, Ordering::Release);
                }
            }
            Poll::Ready(_) => this.guard = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_and_stalled_connections_are_told_apart() {
        let a = Arc::new(Activity::default());
        let (idle, stall) = (Duration::from_millis(40), Duration::from_millis(40));
        assert_eq!(a.verdict(idle, stall), None, "just opened");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            a.verdict(idle, stall),
            Some(Verdict::Idle),
            "h2 preface only"
        );
        let guard = a.open_stream();
        assert_eq!(
            a.verdict(idle, stall),
            None,
            "a stream is open and not waiting"
        );
        guard
            .clock
            .handed_at_ms
            .store(a.now_ms() + 1, Ordering::Release);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(a.verdict(idle, stall), Some(Verdict::Stalled));
        drop(guard);
        assert_eq!(a.verdict(idle, stall), None, "the stream just ended");
        let h1 = Activity::default();
        h1.saw_http1();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            h1.verdict(idle, stall),
            None,
            "HTTP/1 has hyper's own timeout"
        );
    }
}
