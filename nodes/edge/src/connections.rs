//! Accepting client connections and running HTTP on them, within limits: at most
//! `max_connections` at once (the rest wait in the listen backlog), request headers within
//! `header_read_timeout` (slowloris), and responses that stall on a client that does not
//! read cut off after `send_timeout` ([`SendfileStream`]). HTTP/2 (h2 over TLS, h2c on plain
//! listeners) obeys the same two limits through [`Activity`]: a connection with no open
//! stream is closed after `header_read_timeout`, one with a stream whose client reads nothing
//! (flow-control window held at zero) after `send_timeout`. hyper writes vectored, which the
//! sendfile placeholders depend on, set here rather than left to hyper's choice.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::Service;
use tracing::{debug, warn};

use crate::activity::{Activity, TrackedBody};
use crate::sendfile::{SendfileConn, SendfileStream};
use crate::tls::ServerTls;

/// Bounds on what clients' connections may hold.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub send_timeout: Duration,
}

/// Serve `router` on `listener` until `shutdown` resolves, then let open requests finish.
/// With `tls`, connections are TLS (the handshake must finish within the header timeout);
/// without, plain HTTP with the sendfile fast path.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    tls: Option<Arc<ServerTls>>,
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
    let http = Arc::new(http);
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
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
        let (http, router, watcher) = (Arc::clone(&http), router.clone(), graceful.watcher());
        let limits = limits.clone();
        let tls = tls.as_ref().map(|t| t.acceptor());
        tokio::spawn(async move {
            // A connection that never sends a byte is closed like one that sends too slowly
            // (hyper's header timeout starts with the first byte).
            let mut first = [0u8; 1];
            if !matches!(
                tokio::time::timeout(limits.header_read_timeout, tcp.peek(&mut first)).await,
                Ok(Ok(1..))
            ) {
                drop(permit);
                return;
            }
            let stream = SendfileStream::new(tcp, limits.send_timeout);
            let activity = Arc::new(Activity::default());
            let watchdog = watch(Arc::clone(&activity), &limits);
            let served = match tls {
                None => {
                    let info = Some(ConnectInfo(SendfileConn::of(&stream)));
                    let connection = http
                        .serve_connection_with_upgrades(
                            TokioIo::new(stream),
                            service(router, info, peer, activity),
                        )
                        .into_owned();
                    until_closed(watcher.watch(connection), watchdog).await
                }
                Some(acceptor) => {
                    // A client that fails the handshake (no client certificate under mTLS,
                    // an untrusted CA, plain HTTP) is dropped here.
                    let handshake =
                        tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream))
                            .await;
                    let stream = match handshake {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            debug!(error = %e, "TLS handshake failed");
                            drop(permit);
                            return;
                        }
                        Err(_) => {
                            debug!("TLS handshake timed out");
                            drop(permit);
                            return;
                        }
                    };
                    let connection = http
                        .serve_connection_with_upgrades(
                            TokioIo::new(stream),
                            service(router, None, peer, activity),
                        )
                        .into_owned();
                    until_closed(watcher.watch(connection), watchdog).await
                }
            };
            if let Err(e) = served {
                debug!(error = %e, "client connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
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
async fn until_closed<E>(
    connection: impl Future<Output = Result<(), E>>,
    watchdog: impl Future<Output = ()>,
) -> Result<(), E> {
    tokio::select! {
        served = connection => served,
        () = watchdog => Ok(()),
    }
}

/// The router as a hyper service; plain connections carry what sendfile needs. HTTP/2
/// streams are counted in `activity` until their response bodies end.
fn service(
    router: Router,
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
