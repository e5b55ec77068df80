//! The security review's defects in the pull path, one test each.

use reqwest::StatusCode;

use crate::common::*;

/// Review #12: a missing tag is remembered like a missing blob: repeated requests within the
/// negative cache's lifetime reach the upstream once.
#[tokio::test]
async fn a_missing_tag_is_asked_of_the_upstream_once() {
    let (registry, _seeds) = seeded_registry().await;
    let wharf = Wharf::mirroring(&registry).await;
    let url = format!("{}/v2/test/docker/manifests/no-such-tag", wharf.url);
    for _ in 0..3 {
        let r = reqwest::Client::new()
            .get(&url)
            .header("accept", ACCEPT_ALL)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    }
    assert_eq!(
        registry.count_matching("GET", "/manifests/no-such-tag"),
        1,
        "one upstream GET for three requests"
    );
}

/// Review #19: validators never turn a digest that exists nowhere into a `304`.
#[tokio::test]
async fn validators_get_304_only_for_blobs_that_exist() {
    let (registry, seeds) = seeded_registry().await;
    let wharf = Wharf::mirroring(&registry).await;
    let http = reqwest::Client::new();
    let random = format!("sha256:{}", "7".repeat(64));
    for repo in ["test/docker", "no/such-repo"] {
        for (name, value) in [
            ("if-none-match", "*".to_string()),
            ("if-none-match", format!("\"{random}\"")),
            ("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT".into()),
        ] {
            let r = http
                .get(format!("{}/v2/{repo}/blobs/{random}", wharf.url))
                .header(name, &value)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{repo} {name}: {value}");
        }
    }
    // A blob that exists upstream (cold here) still gets its 304.
    let cold = &seeds.docker.layers[0];
    let r = http
        .get(format!(
            "{}/v2/test/docker/blobs/{}",
            wharf.url, cold.digest
        ))
        .header("if-none-match", "*")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(registry.count_matching("GET", &cold.digest), 0);
}

/// Review #8: `/health` needs no authentication, so a failing store shows there as
/// `degraded` and a coarse reason, never the store's words (object keys name private
/// repositories and tags); `/status.json` keeps the detail for the operator.
#[tokio::test]
async fn health_says_degraded_without_naming_keys_or_paths() {
    let (registry, _seeds) = seeded_registry().await;
    let wharf = Wharf::mirroring(&registry).await;
    // A file where the store keeps test/'s tag records: every tag write there fails.
    let tags = wharf.data_dir.path().join("tags").join("docker.io");
    std::fs::create_dir_all(&tags).unwrap();
    std::fs::write(tags.join("test"), b"in the way").unwrap();
    let r = reqwest::Client::new()
        .get(format!("{}/v2/test/docker/manifests/v1", wharf.url))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "passed through while the store fails"
    );
    let health = reqwest::get(format!("{}/health", wharf.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(parsed["status"], "degraded", "{health}");
    assert_eq!(parsed["reason"], "io", "{health}");
    for secret in [
        "test/docker",
        "tags/",
        "directory",
        wharf.data_dir.path().to_str().unwrap(),
    ] {
        assert!(
            !health.contains(secret),
            "/health shows {secret:?}: {health}"
        );
    }
    let status = reqwest::get(format!("{}/status.json", wharf.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        status.contains("test/docker"),
        "the detail stays on the status page"
    );
}

/// Review #20: a 5xx tells the client which upstream failed and how, never the URL, address
/// or port it was reached at (those go to the log and the status page).
#[tokio::test]
async fn server_errors_name_no_internal_address() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mut config = test_config(vec![upstream(
        "docker.io",
        &format!("http://{closed}"),
        true,
    )]);
    config.upstream_client.retries = 0;
    let wharf = Wharf::start(config).await;
    let r = reqwest::Client::new()
        .get(format!("{}/v2/team/app/manifests/v1", wharf.url))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());
    let body = r.text().await.unwrap();
    assert!(
        body.contains("UNAVAILABLE") && body.contains("docker.io"),
        "{body}"
    );
    for internal in [
        "127.0.0.1",
        &closed.port().to_string(),
        "http://",
        "error sending",
    ] {
        assert!(!body.contains(internal), "{internal:?} in {body}");
    }
}
