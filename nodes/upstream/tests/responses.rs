//! Upstream behaviours distribution cannot be made to show on demand (rate limits, oversized
//! manifests), against a small local HTTP server.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::response::IntoResponse;
use wharf_core::config::{UpstreamClientConfig, UpstreamConfig};
use wharf_upstream::{UpstreamClient, UpstreamError};

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn client(url: &str) -> UpstreamClient {
    let settings = UpstreamClientConfig {
        retries: 2,
        retry_backoff_ms: 10,
        ..UpstreamClientConfig::default()
    };
    UpstreamClient::new(&UpstreamConfig::new("fake", url, true), None, &settings).unwrap()
}

/// A fake upstream answering every request with `answer`; the number of requests it got.
async fn counting_upstream(answer: fn() -> axum::response::Response) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async move { answer() }
    });
    (serve(app).await, hits)
}

#[tokio::test]
async fn rate_limit_is_reported_and_respected() {
    let (url, hits) = counting_upstream(|| {
        (
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "30")],
            "slow down",
        )
            .into_response()
    })
    .await;
    let upstream = client(&url);
    let repo = "library/x".parse().unwrap();
    let first = upstream.get_manifest(&repo, "latest").await.unwrap_err();
    assert!(matches!(
        first,
        UpstreamError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(30)
    ));
    assert_eq!(hits.load(Ordering::SeqCst), 1, "a 429 is not retried");
    // During the Retry-After window the upstream is not asked again.
    let second = upstream.head_manifest(&repo, "latest").await.unwrap_err();
    assert!(matches!(second, UpstreamError::RateLimited { .. }));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn oversized_manifests_are_refused() {
    let app = axum::Router::new().fallback(|| async {
        (
            [("content-type", "application/vnd.oci.image.manifest.v1+json")],
            vec![b' '; 5 * 1024 * 1024],
        )
    });
    let upstream = client(&serve(app).await);
    let err = upstream
        .get_manifest(&"a/b".parse().unwrap(), "v1")
        .await
        .unwrap_err();
    assert!(
        matches!(err, UpstreamError::ManifestTooLarge { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn server_errors_are_retried_then_reported() {
    let (url, hits) =
        counting_upstream(|| axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response()).await;
    let upstream = client(&url);
    let err = upstream
        .get_manifest(&"a/b".parse().unwrap(), "v1")
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Failed(_)), "{err:?}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        3,
        "one attempt and two retries"
    );
}
