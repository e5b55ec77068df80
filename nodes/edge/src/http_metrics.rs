//! Request metrics: count, latency to the response headers, in-flight requests, declared body
//! bytes, and what the cache did, recorded once per request with atomic adds.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{Method as HttpMethod, header};
use axum::middleware::Next;
use axum::response::Response;
use wharf_metrics::{Content, Method, Metrics, Route};

use crate::Edge;
use crate::access_log::Served;

/// Takes a request off the in-flight gauge however its handler ends (a client that leaves
/// drops the future).
struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.http_in_flight(-1);
    }
}

/// The middleware.
pub async fn record(State(edge): State<Arc<Edge>>, request: Request, next: Next) -> Response {
    let metrics = &edge.mirror.stats.metrics;
    if !metrics.enabled() {
        return next.run(request).await;
    }
    let started = Instant::now();
    let route = Route::of_path(request.uri().path());
    let head = request.method() == HttpMethod::HEAD;
    let method = Method::of(request.method().as_str());
    metrics.http_in_flight(1);
    let guard = InFlight(metrics);
    let response = next.run(request).await;
    drop(guard);
    let bytes = if head {
        0
    } else {
        response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    metrics.http_response(
        method,
        route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
        bytes,
    );
    let content = match route {
        Route::Manifest => Some(Content::Manifest),
        Route::Blob => Some(Content::Blob),
        Route::Tags => Some(Content::Tags),
        Route::Referrers | Route::Other => None,
    };
    if let (Some(content), Some(served)) = (content, response.extensions().get::<Served>()) {
        metrics.cache_result(&served.upstream, content, served.cache.outcome(), bytes);
    }
    response
}
