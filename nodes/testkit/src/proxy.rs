//! A man-in-the-middle between wharf and its upstream that flips one byte of every blob body
//! while corruption is switched on: the upstream misbehaving, for verification tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};

pub struct CorruptingProxy {
    pub port: u16,
    upstream: String,
    corrupt: AtomicBool,
    /// Blob bodies corrupted so far.
    pub corrupted: AtomicUsize,
    http: reqwest::Client,
}

impl CorruptingProxy {
    pub async fn start(upstream: &str) -> anyhow::Result<Arc<CorruptingProxy>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let proxy = Arc::new(CorruptingProxy {
            port: listener.local_addr()?.port(),
            upstream: upstream.trim_end_matches('/').to_string(),
            corrupt: AtomicBool::new(true),
            corrupted: AtomicUsize::new(0),
            http: reqwest::Client::new(),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(proxy.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(proxy)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set_corrupt(&self, on: bool) {
        self.corrupt.store(on, Ordering::SeqCst);
    }
}

async fn forward(State(proxy): State<Arc<CorruptingProxy>>, request: Request) -> Response {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let mut outgoing = proxy.http.request(
        request.method().clone(),
        format!("{}{path}", proxy.upstream),
    );
    for (name, value) in request.headers() {
        if name != "host" {
            outgoing = outgoing.header(name, value);
        }
    }
    let response = match outgoing.send().await {
        Ok(r) => r,
        Err(e) => return (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = response.status();
    let headers = response.headers().clone();
    let mut body = response.bytes().await.unwrap_or_default().to_vec();
    if proxy.corrupt.load(Ordering::SeqCst) && path.contains("/blobs/") && !body.is_empty() {
        let middle = body.len() / 2;
        body[middle] ^= 0x01;
        proxy.corrupted.fetch_add(1, Ordering::SeqCst);
    }
    let mut out = Response::new(Body::from(body));
    *out.status_mut() = status;
    for (name, value) in &headers {
        if name != "transfer-encoding" {
            out.headers_mut().insert(name, value.clone());
        }
    }
    out
}
