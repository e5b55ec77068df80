//! Clients without containerd's `?ns=` reach any configured registry: by the registry's name
//! as the first component of the repository (`/v2/ghcr.io/org/app/...`), by a configured alias
//! (`/v2/gh/org/app/...`) or by the host they send to. Every route reaches one cached piece
//! of content; real skopeo and the Docker Engine pull by prefix and by host.

use reqwest::StatusCode;
use wharf_testkit::have_program;
use wharf_testkit::image::{self, Format, Image};
use wharf_testkit::push::{PushAuth, Pusher};
use wharf_testkit::registry::{Registry, RegistryOptions};

use crate::common::*;

/// A second registry standing for ghcr.io, holding `org/app:v1`.
async fn ghcr() -> (Registry, Image) {
    let registry = Registry::start(RegistryOptions::default())
        .await
        .expect("docker-registry starts");
    let app = image::image(Format::Oci, "routed-app", "amd64", 2);
    Pusher::new(&registry.url(), PushAuth::None)
        .push_image("org/app", "v1", &app)
        .await
        .unwrap();
    (registry, app)
}

/// Docker Hub (the default) and ghcr.io, reached by its name, the alias `gh` and the host
/// `localhost`.
async fn routed_wharf(hub: &Registry, ghcr: &Registry) -> Wharf {
    let mut gh = upstream("ghcr.io", &ghcr.url(), false);
    gh.prefixes = vec!["gh".into()];
    gh.hosts = vec!["localhost".into()];
    Wharf::start(test_config(vec![
        upstream("docker.io", &hub.url(), true),
        gh,
    ]))
    .await
}

async fn get(url: &str, host: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(url).header("accept", ACCEPT_ALL);
    if let Some(host) = host {
        request = request.header("host", host);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_to_a_registry_reaches_one_cached_piece_of_content() {
    let (hub, seeds) = seeded_registry().await;
    let (ghcr, app) = ghcr().await;
    let wharf = routed_wharf(&hub, &ghcr).await;
    let manifest_path = "/v2/org/app/manifests/v1";
    let manifests = [
        (format!("{}{manifest_path}?ns=ghcr.io", wharf.url), None),
        (
            format!("{}/v2/ghcr.io/org/app/manifests/v1", wharf.url),
            None,
        ),
        (format!("{}/v2/gh/org/app/manifests/v1", wharf.url), None),
        (
            format!("{}{manifest_path}", wharf.url),
            Some(format!("localhost:{}", wharf.port)),
        ),
    ];
    for (url, host) in &manifests {
        let r = get(url, host.as_deref()).await;
        assert_eq!(r.status(), StatusCode::OK, "{url} (host {host:?})");
        assert_eq!(
            r.headers()["docker-content-digest"].to_str().unwrap(),
            app.manifest.digest,
            "{url}"
        );
        assert_eq!(r.bytes().await.unwrap(), app.manifest.body);
    }
    // One tag record for all four: the upstream was asked once.
    assert_eq!(
        ghcr.count_matching("GET", "/v2/org/app/manifests/v1"),
        1,
        "{:?}",
        ghcr.access_log()
    );

    // A blob pulled through ns= and then through the prefix costs the upstream nothing the
    // second time.
    let layer = &app.layers[0];
    for url in [
        format!("{}/v2/org/app/blobs/{}?ns=ghcr.io", wharf.url, layer.digest),
        format!("{}/v2/ghcr.io/org/app/blobs/{}", wharf.url, layer.digest),
        format!("{}/v2/gh/org/app/blobs/{}", wharf.url, layer.digest),
    ] {
        let r = get(&url, None).await;
        assert_eq!(r.status(), StatusCode::OK, "{url}");
        assert_eq!(hash_body(r).await.unwrap().0, layer.digest);
    }
    assert_eq!(
        ghcr.count_requests("GET", &format!("/v2/org/app/blobs/{}", layer.digest)),
        1
    );

    // Docker Hub's short names are normalised behind its prefix.
    let r = get(
        &format!("{}/v2/docker.io/hello/manifests/latest", wharf.url),
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["docker-content-digest"].to_str().unwrap(),
        seeds.docker.manifest.digest
    );
    assert_eq!(
        hub.count_matching("GET", "/v2/library/hello/manifests/latest"),
        1
    );
    // Without a prefix or host route, the default upstream, as before.
    let r = get(&format!("{}/v2/test/docker/manifests/v1", wharf.url), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    // Another host falls back to the default rules.
    let r = get(
        &format!("{}/v2/test/docker/manifests/v1", wharf.url),
        Some(&format!("other.example:{}", wharf.port)),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    // The host route does not reach Docker Hub's repositories.
    let r = get(
        &format!("{}/v2/test/docker/manifests/v1", wharf.url),
        Some(&format!("localhost:{}", wharf.port)),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    // A registry's name alone is a repository of the default upstream.
    let r = get(&format!("{}/v2/ghcr.io/manifests/v1", wharf.url), None).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_and_the_docker_engine_pull_by_prefix_and_by_host() {
    assert!(
        have_program("skopeo"),
        "skopeo is not installed: run the README's test command (it installs it)"
    );
    let (hub, _) = seeded_registry().await;
    let (ghcr, app) = ghcr().await;
    let wharf = routed_wharf(&hub, &ghcr).await;
    let work = tempfile::tempdir().unwrap();
    let policy = work.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    for (i, reference) in [
        format!("docker://{}/gh/org/app:v1", wharf.host()),
        format!("docker://localhost:{}/org/app:v1", wharf.port),
    ]
    .iter()
    .enumerate()
    {
        let out = work.path().join(format!("copy{i}"));
        let (ok, text) = run(
            "skopeo",
            &[
                "--policy",
                policy.to_str().unwrap(),
                "copy",
                "--retry-times",
                "0",
                "--src-tls-verify=false",
                reference,
                &format!("dir:{}", out.display()),
            ],
        )
        .await;
        assert!(ok, "skopeo copy {reference} failed:\n{text}");
        let digests: Vec<String> = app.blobs().iter().map(|b| b.digest.clone()).collect();
        assert_dir_verified(&out, &digests);
    }

    let (running, text) = run("docker", &["info", "--format", "{{.ServerVersion}}"]).await;
    assert!(
        have_program("docker") && running,
        "the Docker Engine is needed for this test: {text}"
    );
    let reference = format!("{}/ghcr.io/org/app:v1", wharf.host());
    let (ok, text) = run("docker", &["pull", &reference]).await;
    let _ = run("docker", &["image", "rm", "-f", &reference]).await;
    assert!(ok, "docker pull {reference} failed:\n{text}");
    // skopeo and the engine together fetched each blob from the upstream once.
    for blob in app.blobs() {
        assert_eq!(
            ghcr.count_requests("GET", &format!("/v2/org/app/blobs/{}", blob.digest)),
            1,
            "{}",
            blob.digest
        );
    }
}
