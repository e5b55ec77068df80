//! The API's one middleware: the request id and access line ([`crate::access_log`]) around
//! the request metrics ([`crate::http_metrics`]), in one layer: each axum `from_fn` layer boxes
//! its inner service and future on every request.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::Edge;

/// Start both records, run the request, finish the metrics, then hand the response to the
/// access log (which puts the id on it and the line on its body).
pub async fn observe(State(edge): State<Arc<Edge>>, request: Request, next: Next) -> Response {
    let access = crate::access_log::Started::of(&request);
    let metrics = crate::http_metrics::Started::of(&edge.mirror.stats.metrics, &request);
    let response = next.run(request).await;
    if let Some(metrics) = metrics {
        metrics.finish(&response);
    }
    access.finish(response)
}
