//! A hostile upstream, parent, token realm or CDN against the upstream client: where each
//! login may go (its own URL and the realm that URL names, nothing else) and what a flood
//! of bytes costs (a bounded read, a short message).
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use base64::Engine as _;
use wharf_core::config::{FallbackConfig, UpstreamClientConfig, UpstreamConfig, UpstreamPasswords};
use wharf_upstream::{UpstreamClient, UpstreamError};

mod common;
use common::serve;

/// `(path, Authorization)` of every request a fake server saw.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

fn record(seen: &Seen, uri: &Uri, headers: &HeaderMap) -> Option<String> {
    let auth = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap_or_default().to_string());
    seen.lock()
        .unwrap()
        .push((uri.path().to_string(), auth.clone()));
    auth
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A registry like Docker Hub: manifests need a bearer token from its own `/token`, which
/// refuses credentials it does not know (`auth.docker.io` answers 401) and accepts
/// `known` (or anonymous requests).
async fn token_registry(known: Option<String>) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let addr = Arc::new(Mutex::new(String::new()));
    let me = addr.clone();
    let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
        let log = log.clone();
        let me = me.lock().unwrap().clone();
        let known = known.clone();
        async move {
            let auth = record(&log, &uri, &headers);
            if uri.path() == "/token" {
                return match auth {
                    Some(a) if Some(&a) != known.as_ref() => {
                        StatusCode::UNAUTHORIZED.into_response()
                    }
                    _ => ([("content-type", "application/json")], r#"{"token":"tok"}"#)
                        .into_response(),
                };
            }
            if auth.as_deref() != Some("Bearer tok") {
                let challenge = format!("Bearer realm=\"{me}/token\",service=\"registry\"");
                return (
                    StatusCode::UNAUTHORIZED,
                    [("www-authenticate", challenge)],
                    "",
                )
                    .into_response();
            }
            (
                [("content-type", "application/vnd.oci.image.manifest.v1+json")],
                r#"{"schemaVersion":2}"#,
            )
                .into_response()
        }
    });
    let url = serve(app).await;
    *addr.lock().unwrap() = url.clone();
    (url, seen)
}

fn quick() -> UpstreamClientConfig {
    UpstreamClientConfig {
        retries: 0,
        retry_backoff_ms: 10,
        connect_timeout_secs: 2,
        ..UpstreamClientConfig::default()
    }
}

/// A URL nothing listens on: a parent that is down.
async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

/// Review #1: the documented regional config (parent with a login, the registry itself as a
/// fallback) fails over to an anonymous pull; the parent's password never reaches the
/// registry or its token service.
#[tokio::test]
async fn a_parents_login_never_reaches_a_fallback_registry() {
    let (registry, seen) = token_registry(None).await;
    let mut config = UpstreamConfig::new("docker.io", &closed_port().await, true);
    config.parent = true;
    config.username = Some("region-eu".into());
    config.fallback_urls = vec![registry.clone()];
    let upstream = UpstreamClient::new(
        &config,
        UpstreamPasswords::for_url(Some("central-secret".into())),
        &quick(),
    )
    .unwrap();
    let pulled = upstream
        .get_manifest(&"library/alpine".parse().unwrap(), "latest")
        .await;
    assert!(pulled.is_ok(), "failover to an anonymous pull: {pulled:?}");
    let seen = seen.lock().unwrap().clone();
    assert!(seen.iter().any(|(path, _)| path == "/token"), "{seen:?}");
    assert!(
        seen.iter()
            .all(|(_, auth)| auth.as_deref().is_none_or(|a| !a.starts_with("Basic"))),
        "the parent's login went to the fallback registry: {seen:?}"
    );
}

/// `[[upstream.fallback]]` brings its own login, which goes to its URL and realm only.
#[tokio::test]
async fn a_fallback_with_its_own_login_gets_that_login() {
    let hub_login = basic("hub-user", "hub-secret");
    let (registry, seen) = token_registry(Some(hub_login.clone())).await;
    let mut config = UpstreamConfig::new("docker.io", &closed_port().await, true);
    config.parent = true;
    config.username = Some("region-eu".into());
    config.fallback = vec![FallbackConfig {
        url: registry,
        username: Some("hub-user".into()),
        password: None,
        password_file: None,
    }];
    let passwords = UpstreamPasswords {
        url: Some("central-secret".into()),
        fallback: vec![Some("hub-secret".into())],
    };
    let upstream = UpstreamClient::new(&config, passwords, &quick()).unwrap();
    let pulled = upstream
        .get_manifest(&"library/alpine".parse().unwrap(), "latest")
        .await;
    assert!(pulled.is_ok(), "{pulled:?}");
    let tokens: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(path, _)| path == "/token")
        .map(|(_, auth)| auth.clone())
        .collect();
    assert_eq!(tokens, vec![Some(hub_login)]);
}

/// Review #18: a host the upstream redirects to (a blob CDN) that challenges with a realm of
/// its own gets nothing: the challenge is not answered, the realm is never asked.
#[tokio::test]
async fn a_redirect_targets_challenge_is_not_answered() {
    let realm_seen: Seen = Arc::default();
    let log = realm_seen.clone();
    let realm = serve(
        axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
            let log = log.clone();
            async move {
                record(&log, &uri, &headers);
                (
                    [("content-type", "application/json")],
                    r#"{"token":"evil"}"#,
                )
            }
        }),
    )
    .await;
    let cdn_challenge = format!("Bearer realm=\"{realm}/token\",service=\"cdn\"");
    // "localhost" is another origin than the upstream's 127.0.0.1.
    let cdn = serve(axum::Router::new().fallback(move || {
        let challenge = cdn_challenge.clone();
        async move {
            (
                StatusCode::UNAUTHORIZED,
                [("www-authenticate", challenge)],
                "",
            )
        }
    }))
    .await
    .replace("127.0.0.1", "localhost");
    let login = basic("robot", "robot-secret");
    let upstream_url = serve(
        axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
            let cdn = cdn.clone();
            let login = login.clone();
            async move {
                if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&login) {
                    return (
                        StatusCode::UNAUTHORIZED,
                        [("www-authenticate", "Basic realm=\"r\"".to_string())],
                    )
                        .into_response();
                }
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [("location", format!("{cdn}{}", uri.path()))],
                )
                    .into_response()
            }
        }),
    )
    .await;
    let mut config = UpstreamConfig::new("private.example", &upstream_url, true);
    config.username = Some("robot".into());
    let upstream = UpstreamClient::new(
        &config,
        UpstreamPasswords::for_url(Some("robot-secret".into())),
        &quick(),
    )
    .unwrap();
    let digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
    // Twice: the first request learns the upstream's Basic challenge, the second sends the
    // login at once and so has its one challenge answer left for the CDN's 401.
    for _ in 0..2 {
        let result = upstream
            .get_blob(&"team/app".parse().unwrap(), &digest)
            .await;
        assert!(
            matches!(result, Err(UpstreamError::Denied { .. })),
            "{:?}",
            result.err()
        );
    }
    let seen = realm_seen.lock().unwrap().clone();
    assert!(seen.is_empty(), "the CDN's realm was asked: {seen:?}");
}

/// This process's peak resident memory, KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// 256 MiB made lazily, 64 KiB at a time, as one JSON error body (chunked).
fn flood(prefix: &'static str) -> Body {
    let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
    let head = futures::stream::once(async move {
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(prefix.as_bytes()))
    });
    let tail = futures::stream::iter((0..4096).map(move |_| Ok(chunk.clone())));
    Body::from_stream(futures::StreamExt::chain(head, tail))
}

/// Review #7: a 256 MiB error body and a 256 MiB token answer cost a bounded read each, and
/// what reaches the caller is a short message. (One test: peak memory is the process's.)
#[tokio::test]
async fn huge_error_bodies_and_token_answers_are_read_within_a_bound() {
    let app = axum::Router::new()
        .route(
            "/v2/big/manifests/latest",
            axum::routing::get(|| async {
                (
                    StatusCode::NOT_FOUND,
                    [("content-type", "application/json")],
                    flood(r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":""#),
                )
            }),
        )
        .route(
            "/v2/sized/manifests/latest",
            axum::routing::get(|| async {
                let body = format!(
                    r#"{{"errors":[{{"code":"MANIFEST_UNKNOWN","message":"{}"}}]}}"#,
                    "m".repeat(32 * 1024)
                );
                (StatusCode::NOT_FOUND, body)
            }),
        );
    let registry = serve(app).await;
    let before = peak_rss_kib();
    let upstream = UpstreamClient::new(
        &UpstreamConfig::new("hostile", &registry, true),
        UpstreamPasswords::default(),
        &quick(),
    )
    .unwrap();
    let err = upstream
        .get_manifest(&"big".parse().unwrap(), "latest")
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::NotFound { .. }), "{err:?}");
    assert!(
        err.to_string().len() < 2048,
        "{} bytes",
        err.to_string().len()
    );
    let err = upstream
        .get_manifest(&"sized".parse().unwrap(), "latest")
        .await
        .unwrap_err();
    assert!(
        err.to_string().len() < 2048,
        "a 32 KiB message is clipped: {} bytes",
        err.to_string().len()
    );

    // A token realm that answers with 256 MiB.
    let realm_app = axum::Router::new().fallback(|| async {
        (
            [("content-type", "application/json")],
            flood(r#"{"token":""#),
        )
    });
    let realm = serve(realm_app).await;
    let challenge = format!("Bearer realm=\"{realm}/token\"");
    let locked = serve(axum::Router::new().fallback(move || {
        let challenge = challenge.clone();
        async move {
            (
                StatusCode::UNAUTHORIZED,
                [("www-authenticate", challenge)],
                "",
            )
        }
    }))
    .await;
    let upstream = UpstreamClient::new(
        &UpstreamConfig::new("hostile", &locked, true),
        UpstreamPasswords::default(),
        &quick(),
    )
    .unwrap();
    let err = upstream
        .get_manifest(&"a/b".parse().unwrap(), "latest")
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Failed(_)), "{err:?}");
    let grown = peak_rss_kib().saturating_sub(before);
    assert!(grown < 48 * 1024, "peak memory grew by {grown} KiB");
}

/// Review #17: a manifest's type comes from its bytes (which its digest covers), not from a
/// `Content-Type` one repository's upstream chose; a `Content-Type` that contradicts the
/// declared `mediaType` is refused.
#[tokio::test]
async fn a_manifests_type_is_the_one_its_bytes_declare() {
    const UNDECLARED: &str = r#"{"schemaVersion":2,"config":{},"layers":[]}"#;
    const DECLARED: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{},"layers":[]}"#;
    let app = axum::Router::new()
        .route(
            "/v2/a/manifests/undeclared",
            axum::routing::get(|| async {
                (
                    [("content-type", "application/vnd.oci.image.index.v1+json")],
                    UNDECLARED,
                )
            }),
        )
        .route(
            "/v2/a/manifests/contradicted",
            axum::routing::get(|| async {
                (
                    [("content-type", "application/vnd.oci.image.index.v1+json")],
                    DECLARED,
                )
            }),
        )
        .route(
            "/v2/a/manifests/declared",
            axum::routing::get(|| async {
                (
                    [(
                        "content-type",
                        "application/vnd.docker.distribution.manifest.v2+json",
                    )],
                    DECLARED,
                )
            }),
        );
    let upstream = UpstreamClient::new(
        &UpstreamConfig::new("r", &serve(app).await, true),
        UpstreamPasswords::default(),
        &quick(),
    )
    .unwrap();
    let repo = "a".parse().unwrap();
    let m = upstream.get_manifest(&repo, "undeclared").await.unwrap();
    assert_eq!(m.media_type, "application/vnd.oci.image.manifest.v1+json");
    let err = upstream
        .get_manifest(&repo, "contradicted")
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Inconsistent(_)), "{err:?}");
    let m = upstream.get_manifest(&repo, "declared").await.unwrap();
    assert_eq!(
        m.media_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
}

/// Review #10: one upstream gets at most `max_concurrent_requests` requests awaiting their
/// answers at once, however many distinct names are asked for.
#[tokio::test]
async fn requests_to_one_upstream_are_capped() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (n, p) = (now.clone(), peak.clone());
    let app = axum::Router::new().fallback(move || {
        let (n, p) = (n.clone(), p.clone());
        async move {
            let current = n.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(current, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            n.fetch_sub(1, Ordering::SeqCst);
            StatusCode::NOT_FOUND
        }
    });
    let settings = UpstreamClientConfig {
        max_concurrent_requests: 2,
        ..quick()
    };
    let upstream = Arc::new(
        UpstreamClient::new(
            &UpstreamConfig::new("r", &serve(app).await, true),
            UpstreamPasswords::default(),
            &settings,
        )
        .unwrap(),
    );
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                upstream
                    .get_manifest(&format!("repo{i}").parse().unwrap(), "latest")
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert!(matches!(
            task.await.unwrap(),
            Err(UpstreamError::NotFound { .. })
        ));
    }
    assert_eq!(peak.load(Ordering::SeqCst), 2);
}
