//! Upstream behaviours distribution cannot be made to show on demand (rate limits, oversized
//! manifests), against a small local HTTP server.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::response::IntoResponse;
use wharf_core::config::{UpstreamClientConfig, UpstreamConfig, UpstreamPasswords};
use wharf_upstream::{UpstreamClient, UpstreamError};

mod common;
use common::serve;

fn client(url: &str) -> UpstreamClient {
    let settings = UpstreamClientConfig {
        retries: 2,
        retry_backoff_ms: 10,
        ..UpstreamClientConfig::default()
    };
    UpstreamClient::new(
        &UpstreamConfig::new("fake", url, true),
        UpstreamPasswords::default(),
        &settings,
    )
    .unwrap()
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

/// A challenge naming a token realm on another host over plain HTTP must not receive the
/// upstream's credentials; the realm is still asked (anonymously).
#[tokio::test]
async fn credentials_never_go_to_a_plain_http_realm_on_another_host() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::<Option<String>>::new()));
    let record = seen.clone();
    let realm_app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let record = record.clone();
        async move {
            let auth = headers
                .get("authorization")
                .map(|v| v.to_str().unwrap_or_default().to_string());
            record.lock().unwrap().push(auth);
            ([("content-type", "application/json")], r#"{"token":"t"}"#)
        }
    });
    // "localhost" and "127.0.0.1" are different hosts to a URL, as a lure would be.
    let realm = serve(realm_app).await.replace("127.0.0.1", "localhost");
    let challenge = format!("Bearer realm=\"{realm}/token\",service=\"x\"");
    let app = axum::Router::new().fallback(move || {
        let challenge = challenge.clone();
        async move {
            (
                axum::http::StatusCode::UNAUTHORIZED,
                [("www-authenticate", challenge)],
                "",
            )
                .into_response()
        }
    });
    let url = serve(app).await;
    let mut config = UpstreamConfig::new("fake", &url, true);
    config.username = Some("robot".into());
    let settings = UpstreamClientConfig {
        retries: 0,
        ..UpstreamClientConfig::default()
    };
    let upstream = UpstreamClient::new(
        &config,
        UpstreamPasswords::for_url(Some("hunter2".into())),
        &settings,
    )
    .unwrap();
    let repo = "library/x".parse().unwrap();
    let _ = upstream.get_manifest(&repo, "latest").await;
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the realm was asked");
    assert!(
        seen.iter().all(Option::is_none),
        "credentials went to a plain-HTTP realm on another host: {seen:?}"
    );
    assert!(wharf_upstream::client::credentials_may_go_to(
        &url,
        &format!("{url}/token")
    ));
    assert!(wharf_upstream::client::credentials_may_go_to(
        &url,
        "https://auth.example.com/token"
    ));
}
