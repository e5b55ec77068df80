//! Blob isolation across repositories: with policy on, a digest cached for one repository is
//! served under another only if it belongs there too (the upstream says so). Bytes stay
//! shared; only authorization is per repository.

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
