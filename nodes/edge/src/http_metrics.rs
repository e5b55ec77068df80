//! Request metrics: count, latency to the response headers, in-flight requests, declared body
//! bytes, and what the cache did, recorded once per request with atomic adds.

use std::time::Instant;

use axum::extract::Request;
use axum::http::{Method as HttpMethod, header};
use axum::response::Response;
use wharf_metrics::{Content, Method, Metrics, Route};

use crate::access_log::Served;

/// Takes a request off the in-flight gauge however its handler ends (a client that leaves
/// drops the future).
struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.http_in_flight(-1);
    }
}

/// A request on its way in, counted in flight; [`Started::finish`] records its response.
/// `None` when metrics are off.
pub struct Started<'a> {
    metrics: &'a Metrics,
    started: Instant,
    route: Route,
    head: bool,
    method: Method,
    _in_flight: InFlight<'a>,
}

impl<'a> Started<'a> {
    /// Count `request` in flight and note what its record needs.
    pub fn of(metrics: &'a Metrics, request: &Request) -> Option<Started<'a>> {
        if !metrics.enabled() {
            return None;
        }
        metrics.http_in_flight(1);
        Some(Started {
            metrics,
            started: Instant::now(),
            route: Route::of_path(request.uri().path()),
            head: request.method() == HttpMethod::HEAD,
            method: Method::of(request.method().as_str()),
            _in_flight: InFlight(metrics),
        })
    }

    /// Record the response (count, latency to its headers, declared bytes, cache result).
    pub fn finish(self, response: &Response) {
        let Started {
            metrics,
            started,
            route,
            head,
            method,
            _in_flight,
        } = self;
        drop(_in_flight);
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
    }
}
