//! A man-in-the-middle between wharf and its upstream: the upstream misbehaving, for tests. It
//! flips one byte of every blob body while corruption is switched on (verification tests), and
//! adds Docker Hub's `ratelimit-*` headers to every answer while a remaining count is set. It
//! notes who each request came as (the Basic login's user), for tests of whose login is used.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};

pub struct MitmProxy {
    pub port: u16,
    upstream: String,
    corrupt: AtomicBool,
    /// Drop `Range` from requests: an upstream that ignores ranges (answers 200).
    ignore_ranges: AtomicBool,
    /// `ratelimit-remaining` to announce; negative: none.
    ratelimit_remaining: AtomicI64,
    /// Blob bodies corrupted so far.
    pub corrupted: AtomicUsize,
    /// Each request's path and who it came as: the Basic user, `bearer`, or `-` (nobody).
    pub seen: std::sync::Mutex<Vec<(String, String)>>,
    http: reqwest::Client,
}

impl MitmProxy {
    pub async fn start(upstream: &str) -> anyhow::Result<Arc<MitmProxy>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let proxy = Arc::new(MitmProxy {
            port: listener.local_addr()?.port(),
            upstream: upstream.trim_end_matches('/').to_string(),
            corrupt: AtomicBool::new(true),
            ignore_ranges: AtomicBool::new(false),
            ratelimit_remaining: AtomicI64::new(-1),
            corrupted: AtomicUsize::new(0),
            seen: std::sync::Mutex::new(Vec::new()),
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

    /// Who the requests whose path contains `fragment` came as, in order.
    pub fn users_on(&self, fragment: &str) -> Vec<String> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, path)| path.contains(fragment))
            .map(|(user, _)| user.clone())
            .collect()
    }

    pub fn set_corrupt(&self, on: bool) {
        self.corrupt.store(on, Ordering::SeqCst);
    }

    /// Forward requests without their `Range`, as an upstream that ignores ranges would.
    pub fn set_ignore_ranges(&self, on: bool) {
        self.ignore_ranges.store(on, Ordering::SeqCst);
    }

    /// Announce `remaining` pulls of a 100-pull allowance on every answer; `None`: no headers.
    pub fn set_ratelimit_remaining(&self, remaining: Option<u32>) {
        self.ratelimit_remaining
            .store(remaining.map_or(-1, i64::from), Ordering::SeqCst);
    }
}

async fn forward(State(proxy): State<Arc<MitmProxy>>, request: Request) -> Response {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let user = match request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    {
        None => "-".to_string(),
        Some(v) if v.starts_with("Bearer ") => "bearer".to_string(),
        Some(v) => {
            use base64::Engine as _;
            let pair = base64::engine::general_purpose::STANDARD
                .decode(v.trim_start_matches("Basic "))
                .unwrap_or_default();
            let pair = String::from_utf8_lossy(&pair).to_string();
            pair.split(':').next().unwrap_or_default().to_string()
        }
    };
    proxy
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((user, path.clone()));
    let mut outgoing = proxy.http.request(
        request.method().clone(),
        format!("{}{path}", proxy.upstream),
    );
    for (name, value) in request.headers() {
        let dropped = name == "range" && proxy.ignore_ranges.load(Ordering::SeqCst);
        if name != "host" && !dropped {
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
    let remaining = proxy.ratelimit_remaining.load(Ordering::SeqCst);
    if remaining >= 0 {
        let h = out.headers_mut();
        h.insert(
            "ratelimit-limit",
            axum::http::HeaderValue::from_static("100;w=21600"),
        );
        if let Ok(v) = axum::http::HeaderValue::from_str(&format!("{remaining};w=21600")) {
            h.insert("ratelimit-remaining", v);
        }
    }
    out
}
