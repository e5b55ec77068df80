//! Blob isolation across repositories: with policy on, a digest cached for one repository is
//! served under another only if it belongs there too (the upstream says so). Bytes stay
//! shared; only authorization is per repository.

use std::sync::Arc;

use reqwest::StatusCode;
use wharf_core::config::AccessRule;
use wharf_testkit::image::{Format, image};
use wharf_testkit::push::{PushAuth, Pusher};

use crate::common::*;
use crate::setup::*;

#[tokio::test]
async fn a_private_digest_is_not_served_under_a_repository_it_is_not_in() {
    capture_logs();
    let (registry, seeds) = seeded_registry().await;
    let secret = image(Format::Docker, "acme-secret", "amd64", 2);
    let pusher = Pusher::new(&registry.url(), PushAuth::None);
    pusher
        .push_image("acme/secret", "v1", &secret)
        .await
        .unwrap();
    // The same layers, really present in a public repository too.
    pusher
        .push_image("library/copy", "v1", &secret)
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut config = auth_config(&registry, dir.path());
    config.access = vec![
        AccessRule::new(
            &["docker.io/library/*"],
            &["alice", "bob"],
            &[],
            false,
            true,
        ),
        AccessRule::new(&["docker.io/**"], &["bob"], &[], false, true),
    ];
    let wharf = Wharf::start(config).await;
    let http = reqwest::Client::new();
    let get = |path: String, auth: String| {
        let http = http.clone();
        let url = format!("{}/v2/{path}", wharf.url);
        async move {
            http.get(url)
                .header("authorization", auth)
                .header("accept", ACCEPT_ALL)
                .send()
                .await
                .unwrap()
        }
    };
    let alice = basic("alice", ALICE_PASSWORD);
    let bob = basic("bob", BOB_PASSWORD);

    // bob, allowed acme/*, pulls the private image: its manifest and layers are now cached.
    let r = get("acme/secret/manifests/v1".into(), bob.clone()).await;
    assert_eq!(r.status(), StatusCode::OK);
    for blob in secret.blobs() {
        let r = get(format!("acme/secret/blobs/{}", blob.digest), bob.clone()).await;
        assert_eq!(hash_body(r).await.unwrap().0, blob.digest);
    }

    // alice, allowed only library/*, names the cached private digests under library/hello.
    let private_layer = &secret.layers[0].digest;
    let r = get(
        format!("library/hello/blobs/{private_layer}"),
        alice.clone(),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "a private layer leaked by digest"
    );
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
    let r = get(
        format!("library/hello/manifests/{}", secret.manifest.digest),
        alice.clone(),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "a private manifest leaked by digest"
    );
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    // HEAD too.
    let r = http
        .head(format!(
            "{}/v2/library/hello/blobs/{private_layer}",
            wharf.url
        ))
        .header("authorization", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // The same digest under a repository that really contains it: served (from the cache).
    let before = registry.count_matching("GET", &format!("/blobs/{private_layer}"));
    let r = get(format!("library/copy/blobs/{private_layer}"), alice.clone()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(hash_body(r).await.unwrap().0, *private_layer);
    assert_eq!(
        registry.count_matching("GET", &format!("/blobs/{private_layer}")),
        before,
        "bytes stay shared: no second download, only a HEAD to confirm membership"
    );

    // alice's own pulls work: the manifest links its layers.
    let r = get("hello/manifests/latest".into(), alice.clone()).await;
    assert_eq!(r.status(), StatusCode::OK);
    for blob in seeds.docker.blobs() {
        let r = get(
            format!("library/hello/blobs/{}", blob.digest),
            alice.clone(),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(hash_body(r).await.unwrap().0, blob.digest);
    }
}

/// A manifest's link outlives a restart (it is kept in the store): with auth on and the
/// upstream down, a pull by digest of a manifest served before still works, while a digest
/// never linked to the repository is not served.
#[tokio::test]
async fn links_of_manifests_survive_a_restart_while_the_upstream_is_down() {
    capture_logs();
    let (mut registry, seeds) = seeded_registry().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let config = auth_config(&registry, dir.path());
    let alice = basic("alice", ALICE_PASSWORD);
    let store = || {
        let path = cache.path().to_path_buf();
        async move {
            Arc::new(wharf_storage::fs::FsStore::open(path).await.unwrap())
                as Arc<dyn wharf_storage::BlobStore>
        }
    };
    let get = |url: String| {
        let alice = alice.clone();
        async move {
            reqwest::Client::new()
                .get(url)
                .header("authorization", alice)
                .header("accept", ACCEPT_ALL)
                .send()
                .await
                .unwrap()
        }
    };
    let by_digest = |wharf: &Wharf, repo: &str, digest: &str| {
        format!("{}/v2/{repo}/manifests/{digest}", wharf.url)
    };
    {
        let wharf = Wharf::start_with(config.clone(), Some(store().await)).await;
        let url = by_digest(&wharf, "test/docker", &seeds.docker.manifest.digest);
        assert_eq!(get(url).await.status(), StatusCode::OK);
        // Also cache test/oci's manifest, under its own repository only.
        let url = by_digest(&wharf, "test/oci", &seeds.oci.manifest.digest);
        assert_eq!(get(url).await.status(), StatusCode::OK);
        // The link write runs in the background.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    registry.stop();
    let wharf = Wharf::start_with(config, Some(store().await)).await;
    let r = get(by_digest(
        &wharf,
        "test/docker",
        &seeds.docker.manifest.digest,
    ))
    .await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "pull by digest from the cache, upstream down"
    );
    assert_eq!(r.bytes().await.unwrap(), seeds.docker.manifest.body);
    let r = get(by_digest(&wharf, "test/docker", &seeds.oci.manifest.digest)).await;
    assert!(
        r.status().is_server_error(),
        "a digest of another repository is not served: {}",
        r.status()
    );
    assert_eq!(error_code(r).await, "UNAVAILABLE");
}
