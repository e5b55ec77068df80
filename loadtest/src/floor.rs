//! The framework's floor: hyper alone (HTTP/1, on current-thread event loops of its own, as
//! wharf serves) answering every request with the warm manifest's bytes and headers, made once.
//! Run as a child process of the loadtest (`--serve-floor`), so `--vs-nginx` measures its CPU a
//! request like the servers': what is left of wharf's figure above it is wharf's own work.

use std::convert::Infallible;
use std::path::Path;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Serve on `port` with `threads` event loops until killed; `dir` holds `manifest`,
/// `content-type` and `digest`.
pub fn serve(port: u16, dir: &Path, threads: usize) -> anyhow::Result<()> {
    let body = Bytes::from(std::fs::read(dir.join("manifest"))?);
    let content_type = std::fs::read_to_string(dir.join("content-type"))?;
    let digest = std::fs::read_to_string(dir.join("digest"))?;
    let etag = format!("\"{digest}\"");
    let response = move || {
        hyper::Response::builder()
            .header("content-type", content_type.as_str())
            .header("docker-content-digest", digest.as_str())
            .header("etag", etag.as_str())
            .header("docker-distribution-api-version", "registry/2.0")
            .body(Full::new(body.clone()))
    };
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
    listener.set_nonblocking(true)?;
    let mut loops = Vec::new();
    for _ in 0..threads.max(1) {
        let listener = listener.try_clone()?;
        let response = response.clone();
        loops.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener)?;
                loop {
                    let (tcp, _) = listener.accept().await?;
                    tcp.set_nodelay(true)?;
                    let response = response.clone();
                    tokio::spawn(async move {
                        let service =
                            hyper::service::service_fn(move |_: hyper::Request<Incoming>| {
                                let answer = response();
                                async move {
                                    Ok::<_, Infallible>(answer.unwrap_or_else(|_| {
                                        hyper::Response::new(Full::new(Bytes::new()))
                                    }))
                                }
                            });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .writev(true)
                            .serve_connection(TokioIo::new(tcp), service)
                            .await;
                    });
                }
            })
        }));
    }
    for event_loop in loops {
        event_loop
            .join()
            .map_err(|_| anyhow::anyhow!("a serving thread panicked"))??;
    }
    Ok(())
}
