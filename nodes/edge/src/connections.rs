//! Accepting client connections and running HTTP on them, within limits: at most
//! `max_connections` at once (the rest wait in the listen backlog), request headers within
//! `header_read_timeout` (slowloris), and responses that stall on a client that does not
//! read cut off after `send_timeout` ([`SendfileStream`]). HTTP/2 (h2 over TLS, h2c on plain
//! listeners) obeys the same two limits through [`Activity`]: a connection with no open
//! stream is closed after `header_read_timeout`, one with a stream whose client reads nothing
//! (flow-control window held at zero) after `send_timeout`. hyper writes vectored, which the
//! sendfile placeholders depend on, set here rather than left to hyper's choice. Plain
//! HTTP/1 connections hold no hyper state between requests ([`idle_http1`]); TLS and HTTP/2
//! connections keep theirs while open.
//!
//! Plain and TLS connections of the main listener are each given to one of
//! [`ServingThreads`], event loops of their own (as nginx's workers): a connection's requests
//! are parsed, answered and written on the thread that holds it, with no hand-over between
//! a multi-threaded runtime's workers on every request.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::ReadBuf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::Service;
use tracing::{debug, warn};

use crate::activity::{Activity, TrackedBody};
use crate::idle_http1::{self, HandledBody, InFlight, ServiceFuture};
use crate::sendfile::{SendfileConn, SendfileStream};
use crate::tls::ServerTls;

/// Bounds on what clients' connections may hold.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub send_timeout: Duration,
}

/// Threads that each run an event loop (a current-thread runtime) of their own and serve the
/// connections they are given, from first byte to close.
///
/// Work a request starts in the background (a download, a store write) runs on the thread of
/// its connection too. A thread ends once the pool is dropped and the last task it holds is
/// done, so downloads under way when the listener stops still finish.
pub struct ServingThreads {
    threads: Vec<ServingThread>,
    stop: CancellationToken,
}

struct ServingThread {
    runtime: tokio::runtime::Handle,
    /// Connections this thread holds now: a new one goes to the thread holding the fewest.
    open: Arc<AtomicUsize>,
}

impl ServingThreads {
    /// Start `count` serving threads (at least one).
    pub fn start(count: usize) -> std::io::Result<Arc<ServingThreads>> {
        // Built up in place: if a thread cannot start, dropping the pool stops those that did.
        let mut pool = ServingThreads {
            threads: Vec::with_capacity(count.max(1)),
            stop: CancellationToken::new(),
        };
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let stop = pool.stop.clone();
            std::thread::Builder::new()
                .name(format!("wharf-serve-{index}"))
                .spawn(move || {
                    runtime.block_on(async {
                        stop.cancelled().await;
                        let metrics = tokio::runtime::Handle::current().metrics();
                        while metrics.num_alive_tasks() > 0 {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    });
                })?;
            pool.threads.push(ServingThread {
                runtime: handle,
                open: Arc::new(AtomicUsize::new(0)),
            });
        }
        Ok(Arc::new(pool))
    }

    /// Run `serve` for an accepted connection on the thread holding the fewest.
    fn spawn<F, Fut>(&self, tcp: TcpStream, serve: F) -> std::io::Result<()>
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(thread) = self
            .threads
            .iter()
            .min_by_key(|t| t.open.load(Ordering::Relaxed))
        else {
            return Err(std::io::Error::other("no serving thread"));
        };
        // The socket leaves this runtime's reactor and joins the serving thread's.
        let tcp = tcp.into_std()?;
        let open = OpenConnection::count(&thread.open);
        thread.runtime.spawn(async move {
            let _open = open;
            match TcpStream::from_std(tcp) {
                Ok(tcp) => serve(tcp).await,
                Err(e) => debug!(error = %e, "could not hand a connection to its serving thread"),
            }
        });
        Ok(())
    }
}

impl Drop for ServingThreads {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Counts a connection in its thread's [`ServingThread::open`] while it lives.
struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    fn count(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(Arc::clone(open))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a listener serves: axum's `Router` (the operator pages), or the main listener's
/// [`crate::api::Api`].
pub trait HttpService:
    Service<
        hyper::Request<Incoming>,
        Response = axum::response::Response,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + Unpin
    + 'static
{
}

impl<T> HttpService for T where
    T: Service<
            hyper::Request<Incoming>,
            Response = axum::response::Response,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + Unpin
        + 'static
{
}

/// Serve `router` on `listener` until `shutdown` resolves, then let open requests finish.
/// With `tls`, connections are TLS (the handshake must finish within the header timeout);
/// without, plain HTTP with the sendfile fast path. With `threads`, each connection is served
/// on one of them; without, as a task of the calling runtime.
pub async fn serve<S: HttpService>(
    listener: TcpListener,
    router: S,
    limits: ConnectionLimits,
    tls: Option<Arc<ServerTls>>,
    threads: Option<Arc<ServingThreads>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .writev(true)
        .keep_alive(true);
    http.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(256);
    let graceful = GracefulShutdown::new();
    let shared = Arc::new(Shared {
        http,
        http1: http1_builder(&limits),
        router,
        stopping: CancellationToken::new(),
        limits,
        tls,
    });
    let open = Arc::new(Semaphore::new(shared.limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&open).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before accept: wait a
                    // little rather than spin, then go on.
                    warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Without TCP_NODELAY a response's small last write (the byte held back until a blob
        // verifies, a short manifest) waits for the client's delayed ACK: ~40 ms per request.
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(error = %e, "could not set TCP_NODELAY");
        }
        let connection = Connection {
            shared: Arc::clone(&shared),
            watcher: graceful.watcher(),
            peer,
        };
        let serve = move |tcp| async move {
            if let Err(e) = connection.serve(tcp).await {
                debug!(error = %e, "client connection ended with an error");
            }
            drop(permit);
        };
        match &threads {
            Some(threads) => {
                if let Err(e) = threads.spawn(tcp, serve) {
                    warn!(error = %e, "could not hand a connection to a serving thread");
                }
            }
            None => {
                tokio::spawn(serve(tcp));
            }
        }
    }
    drop(listener);
    shared.stopping.cancel();
    // Every connection holds a watcher until it ends: idle HTTP/1 ones end at once, busy ones
    // after their response.
    graceful.shutdown().await;
    Ok(())
}

/// hyper's HTTP/1 settings for plain connections. They repeat the `auto` builder's HTTP/1
/// settings above (used for HTTP/1 over TLS): change both together.
fn http1_builder(limits: &ConnectionLimits) -> http1::Builder {
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .writev(true)
        .keep_alive(true);
    http1
}

/// What every connection of a listener is served with.
struct Shared<S> {
    http: auto::Builder<TokioExecutor>,
    http1: http1::Builder,
    router: S,
    /// Cancelled when the listener stops: idle HTTP/1 connections close, busy ones finish.
    stopping: CancellationToken,
    limits: ConnectionLimits,
    tls: Option<Arc<ServerTls>>,
}

/// One accepted connection; small, as its task lives as long as the connection.
struct Connection<S> {
    shared: Arc<Shared<S>>,
    /// Held until the connection ends, so a graceful shutdown waits for it.
    watcher: Watcher,
    peer: SocketAddr,
}

/// What a plain connection's first bytes say it speaks.
enum Speaks {
    Http1,
    /// The HTTP/2 preface (h2c with prior knowledge).
    Http2,
}

type ConnectionError = Box<dyn std::error::Error + Send + Sync>;

impl<S: HttpService> Connection<S> {
    async fn serve(self, tcp: TcpStream) -> Result<(), ConnectionError> {
        let shared = &self.shared;
        let limits = &shared.limits;
        // A connection that never sends a byte is closed like one that sends too slowly
        // (hyper's header timeout starts with the first byte).
        let Ok(Ok(Some(speaks))) =
            tokio::time::timeout(limits.header_read_timeout, first_bytes(&tcp)).await
        else {
            return Ok(());
        };
        let stream = SendfileStream::new(tcp, limits.send_timeout);
        if shared.tls.is_some() || matches!(speaks, Speaks::Http2) {
            // Boxed: the task of every plain HTTP/1 connection stays the size of its own state.
            return Box::pin(self.serve_watched(stream)).await;
        }
        let info = ConnectInfo(SendfileConn::of(&stream));
        let (router, peer) = (&shared.router, self.peer);
        let service = move |in_flight| http1_service(router, &info, peer, in_flight);
        let idle = limits.header_read_timeout;
        idle_http1::serve(stream, &shared.http1, service, idle, &shared.stopping).await?;
        Ok(())
    }

    /// Serve h2c, or TLS (HTTP/1 or h2), with hyper's state held for the connection's life and
    /// [`Activity`] watching HTTP/2's limits.
    async fn serve_watched(self, stream: SendfileStream) -> Result<(), ConnectionError> {
        let shared = &self.shared;
        let limits = &shared.limits;
        let activity = Arc::new(Activity::default());
        let Some(tls) = &shared.tls else {
            let info = ConnectInfo(SendfileConn::of(&stream));
            let connection = shared
                .http
                .serve_connection_with_upgrades(
                    TokioIo::new(stream),
                    service(
                        shared.router.clone(),
                        Some(info),
                        self.peer,
                        activity.clone(),
                    ),
                )
                .into_owned();
            let watchdog = watch(activity, limits);
            return until_closed(self.watcher.watch(connection), watchdog).await;
        };
        // A client that fails the handshake (no client certificate under mTLS, an untrusted
        // CA, plain HTTP) is dropped here.
        let handshake = tls.acceptor().accept(stream);
        let stream = match tokio::time::timeout(limits.header_read_timeout, handshake).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                debug!(error = %e, "TLS handshake failed");
                return Ok(());
            }
            Err(_) => {
                debug!("TLS handshake timed out");
                return Ok(());
            }
        };
        let connection = shared
            .http
            .serve_connection_with_upgrades(
                TokioIo::new(stream),
                service(shared.router.clone(), None, self.peer, activity.clone()),
            )
            .into_owned();
        let watchdog = watch(activity, limits);
        until_closed(self.watcher.watch(connection), watchdog).await
    }
}

/// Wait for a plain connection's first bytes: `None` if it closes first.
async fn first_bytes(tcp: &TcpStream) -> std::io::Result<Option<Speaks>> {
    const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut seen = [0u8; 24];
    let mut pause = Duration::from_millis(1);
    loop {
        let n = std::future::poll_fn(|cx| tcp.poll_peek(cx, &mut ReadBuf::new(&mut seen))).await?;
        let seen = seen.get(..n).unwrap_or_default();
        if seen.is_empty() {
            return Ok(None);
        }
        if !PREFACE.starts_with(seen) {
            return Ok(Some(Speaks::Http1));
        }
        if seen.len() == PREFACE.len() {
            return Ok(Some(Speaks::Http2));
        }
        // Part of the preface (or of `PRI`): wait for the rest. `peek` returns at once while
        // any byte is there, so look again after a pause that doubles up to 256 ms: a client
        // that stops mid-preface costs ~45 wake-ups until the caller's timeout, not thousands.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(256));
    }
}

/// Resolves when `activity` says the connection should close (idle, or a stalled stream).
async fn watch(activity: Arc<Activity>, limits: &ConnectionLimits) {
    let (idle, stall) = (limits.header_read_timeout, limits.send_timeout);
    let mut tick = tokio::time::interval(Activity::check_every(idle, stall));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some(verdict) = activity.verdict(idle, stall) {
            debug!(?verdict, "closing an HTTP/2 connection");
            return;
        }
        // An HTTP/1 connection (a connection speaks one protocol): no timer per idle
        // keep-alive connection from here on.
        if activity.http1_only() {
            return std::future::pending().await;
        }
    }
}

/// Serve a connection until it ends, or until the watchdog closes it (dropping it closes the
/// socket and ends every stream it held).
async fn until_closed<E: Into<ConnectionError>>(
    connection: impl Future<Output = Result<(), E>>,
    watchdog: impl Future<Output = ()>,
) -> Result<(), ConnectionError> {
    tokio::select! {
        served = connection => served.map_err(Into::into),
        () = watchdog => Ok(()),
    }
}

/// The router as a hyper service for one stretch of an HTTP/1 connection's requests; each
/// response counts in `in_flight` until hyper is done with its body.
fn http1_service<S: HttpService>(
    router: &S,
    info: &ConnectInfo<SendfileConn>,
    peer: SocketAddr,
    in_flight: Arc<InFlight>,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = Infallible,
    Future = ServiceFuture,
> + Unpin
+ use<S> {
    let (router, info) = (router.clone(), info.clone());
    hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        let handling = in_flight.start();
        request.extensions_mut().insert(info.clone());
        request
            .extensions_mut()
            .insert(crate::access_log::ClientAddr(peer));
        let mut router = router.clone();
        Box::pin(async move {
            let response = router.call(request).await.unwrap_or_else(|e| match e {});
            Ok::<_, Infallible>(
                response.map(|body| axum::body::Body::new(HandledBody::new(body, handling))),
            )
        }) as ServiceFuture
    })
}

/// The router as a hyper service; plain connections carry what sendfile needs. HTTP/2
/// streams are counted in `activity` until their response bodies end.
fn service<S: HttpService>(
    router: S,
    info: Option<ConnectInfo<SendfileConn>>,
    peer: std::net::SocketAddr,
    activity: Arc<Activity>,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = Infallible,
    Future = impl Future<Output = Result<axum::response::Response, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        if let Some(info) = &info {
            request.extensions_mut().insert(info.clone());
        }
        request
            .extensions_mut()
            .insert(crate::access_log::ClientAddr(peer));
        let stream = if request.version() == http::Version::HTTP_2 {
            Some(activity.open_stream())
        } else {
            activity.saw_http1();
            None
        };
        let mut router = router.clone();
        async move {
            let response = router.call(request).await.unwrap_or_else(|e| match e {});
            Ok::<_, Infallible>(match stream {
                Some(guard) => {
                    response.map(|body| axum::body::Body::new(TrackedBody::new(body, guard)))
                }
                None => response,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `runtime` has shut down: a task spawned on it is cancelled at once.
    async fn ended(runtime: &tokio::runtime::Handle) -> bool {
        runtime.spawn(async {}).await.is_err()
    }

    #[tokio::test]
    async fn connections_are_served_on_serving_threads_that_outlive_the_pool_until_their_work_ends()
    {
        let threads = ServingThreads::start(2).expect("threads");
        assert_eq!(threads.threads.len(), 2);
        let runtimes: Vec<_> = threads.threads.iter().map(|t| t.runtime.clone()).collect();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let _client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (tcp, _) = listener.accept().await.expect("accept");
        // The connection's work: it reports where it runs, then waits to be let go (a download
        // still under way when the listener stops).
        let (ran_on, where_) = tokio::sync::oneshot::channel();
        let (let_go, wait) = tokio::sync::oneshot::channel::<()>();
        threads
            .spawn(tcp, move |tcp| async move {
                let name = std::thread::current().name().map(str::to_string);
                let _ = ran_on.send(name);
                let _ = wait.await;
                drop(tcp);
            })
            .expect("spawn");
        let name = where_.await.expect("ran").unwrap_or_default();
        assert!(name.starts_with("wharf-serve-"), "served on {name:?}");
        assert_eq!(
            threads
                .threads
                .iter()
                .map(|t| t.open.load(Ordering::Relaxed))
                .sum::<usize>(),
            1,
            "the connection is counted on its thread"
        );
        drop(threads);
        // The idle thread ends at once (waited for, up to 5 s); the one with work runs on.
        let mut waited = 0;
        let still_running = loop {
            let mut running = 0;
            for runtime in &runtimes {
                if !ended(runtime).await {
                    running += 1;
                }
            }
            if running <= 1 || waited >= 250 {
                break running;
            }
            waited += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(still_running, 1, "only the thread with work keeps running");
        let _ = let_go.send(());
        for runtime in &runtimes {
            let mut waited = 0;
            while !ended(runtime).await {
                waited += 1;
                assert!(waited < 100, "a serving thread did not end");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
