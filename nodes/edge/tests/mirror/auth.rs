//! Authenticated upstreams: HTTP basic (distribution 2.8 cannot use one) and Docker-style
//! bearer tokens, against distribution's real htpasswd and token auth.

use reqwest::StatusCode;
use wharf_testkit::image::{Format, image};
use wharf_testkit::push::{PushAuth, Pusher};
use wharf_testkit::registry::{Registry, RegistryAuth, RegistryOptions};
use wharf_testkit::token::{ISSUER, SERVICE, TokenIssuer};

use crate::common::*;

async fn pull(wharf: &Wharf, repo: &str, img: &wharf_testkit::image::Image) -> StatusCode {
    let http = reqwest::Client::new();
    let m = http
        .get(format!("{}/v2/{repo}/manifests/v1", wharf.url))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    if m.status() != StatusCode::OK {
        return m.status();
    }
    assert_eq!(m.bytes().await.unwrap(), img.manifest.body);
    for blob in img.blobs() {
        let r = http
            .get(format!("{}/v2/{repo}/blobs/{}", wharf.url, blob.digest))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(hash_body(r).await.unwrap().0, blob.digest);
    }
    StatusCode::OK
}

#[tokio::test]
async fn basic_auth_upstream() {
    let (user, password) = ("mirror".to_string(), "s3cret-pw".to_string());
    let registry = Registry::start(RegistryOptions {
        auth: RegistryAuth::Htpasswd {
            username: user.clone(),
            password: password.clone(),
        },
        proxy: None,
        root_dir: None,
    })
    .await
    .unwrap();
    let img = image(Format::Docker, "basic", "amd64", 2);
    Pusher::new(
        &registry.url(),
        PushAuth::Basic {
            username: user.clone(),
            password: password.clone(),
        },
    )
    .push_image("private/app", "v1", &img)
    .await
    .unwrap();

    let mut with_credentials = upstream("private.example", &registry.url(), true);
    with_credentials.username = Some(user);
    with_credentials.password = Some(password);
    let wharf = Wharf::start(test_config(vec![with_credentials])).await;
    assert_eq!(pull(&wharf, "private/app", &img).await, StatusCode::OK);

    let anonymous = Wharf::start(test_config(vec![upstream(
        "private.example",
        &registry.url(),
        true,
    )]))
    .await;
    let r = reqwest::Client::new()
        .get(format!("{}/v2/private/app/manifests/v1", anonymous.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(r).await, "DENIED");
}

#[tokio::test]
async fn token_auth_upstream_with_cached_tokens() {
    let credentials = ("robot".to_string(), "t0ken-pw".to_string());
    let issuer = TokenIssuer::start(Some(credentials.clone())).await.unwrap();
    let registry = Registry::start(RegistryOptions {
        auth: RegistryAuth::Token {
            realm: issuer.realm(),
            service: SERVICE.into(),
            issuer: ISSUER.into(),
            cert_pem: issuer.cert_pem.clone(),
        },
        proxy: None,
        root_dir: None,
    })
    .await
    .unwrap();
    let img = image(Format::Oci, "token", "amd64", 2);
    Pusher::new(&registry.url(), PushAuth::Token(issuer.clone()))
        .push_image("org/app", "v1", &img)
        .await
        .unwrap();

    let mut up = upstream("tokens.example", &registry.url(), true);
    up.username = Some(credentials.0.clone());
    up.password = Some(credentials.1.clone());
    let mut config = test_config(vec![up]);
    config.cache.tag_ttl_secs = 0;
    let wharf = Wharf::start(config).await;
    assert_eq!(pull(&wharf, "org/app", &img).await, StatusCode::OK);
    // Further revalidations reuse the cached token for this scope.
    for _ in 0..5 {
        assert_eq!(pull(&wharf, "org/app", &img).await, StatusCode::OK);
    }
    let issued = issuer.issued.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        issued, 1,
        "one token for one scope, reused until it expires"
    );

    // Wrong credentials: the token endpoint refuses, the client is told access was denied.
    let mut bad = upstream("tokens.example", &registry.url(), true);
    bad.username = Some("robot".into());
    bad.password = Some("wrong".into());
    let wharf = Wharf::start(test_config(vec![bad])).await;
    let r = reqwest::Client::new()
        .get(format!("{}/v2/org/app/manifests/v1", wharf.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(r).await, "DENIED");
}
