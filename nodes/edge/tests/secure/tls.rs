//! TLS on the client listener: HTTP/2 by ALPN and HTTP/1.1, certificate reload without a
//! restart (a broken renewal keeps the old certificate), mTLS refusing clients without a
//! certificate during the handshake.

use std::time::Duration;

use reqwest::StatusCode;
use wharf_auth::reload::spawn_watcher;
use wharf_testkit::registry::{Registry, RegistryOptions};
use wharf_testkit::tls::TestPki;

use crate::common::*;
use crate::setup::*;

fn tls_config(
    registry: &Registry,
    pki: &TestPki,
    dir: &std::path::Path,
) -> wharf_core::config::Config {
    let mut config = test_config(vec![upstream("docker.io", &registry.url(), true)]);
    // Copies: the test rewrites them to renew the certificate.
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    std::fs::copy(&pki.server_cert, &cert).unwrap();
    std::fs::copy(&pki.server_key, &key).unwrap();
    config.tls.cert_file = cert;
    config.tls.key_file = key;
    config
}

#[tokio::test]
async fn https_with_h2_and_http1_and_a_certificate_renewed_in_place() {
    capture_logs();
    let (registry, seeds) = seeded_registry().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&["127.0.0.1", "localhost"]).unwrap();
    let config = tls_config(&registry, &pki, dir.path());
    let wharf = Wharf::start(config.clone()).await;
    assert!(wharf.url.starts_with("https://"));

    // HTTP/2 through ALPN, the manifest and a blob byte-exact.
    let h2 = pki.client(false).unwrap();
    let r = h2
        .get(format!("{}/v2/test/docker/manifests/v1", wharf.url))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN chose h2");
    assert_eq!(r.bytes().await.unwrap(), seeds.docker.manifest.body);
    let layer = &seeds.docker.layers[0];
    let r = h2
        .get(format!(
            "{}/v2/test/docker/blobs/{}",
            wharf.url, layer.digest
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(hash_body(r).await.unwrap().0, layer.digest);

    // HTTP/1.1 over TLS: a cached blob, so the read path (not sendfile) serves it.
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca_cert).unwrap()).unwrap();
    let h1 = reqwest::Client::builder()
        .add_root_certificate(ca)
        .http1_only()
        .build()
        .unwrap();
    let r = h1
        .get(format!(
            "{}/v2/test/docker/blobs/{}",
            wharf.url, layer.digest
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(hash_body(r).await.unwrap().0, layer.digest);

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = reqwest::get(format!("http://127.0.0.1:{}/v2/", wharf.port)).await;
    assert!(plain.is_err() || plain.unwrap().status() != StatusCode::OK);

    // Renewal: a certificate from another CA replaces the files; the watcher picks it up.
    spawn_watcher(wharf.edge.watched_files(), Duration::from_millis(100));
    let renewed = TestPki::new(&["127.0.0.1"]).unwrap();
    std::fs::copy(&renewed.server_key, &config.tls.key_file).unwrap();
    std::fs::copy(&renewed.server_cert, &config.tls.cert_file).unwrap();
    let fresh = renewed.client(false).unwrap();
    let url = format!("{}/v2/", wharf.url);
    let switched = wharf_testkit::wait_until(Duration::from_secs(10), || {
        let (fresh, url) = (fresh.clone(), url.clone());
        async move { fresh.get(&url).send().await.is_ok() }
    })
    .await;
    assert!(
        switched,
        "the renewed certificate is served without a restart"
    );
    assert!(
        pki.client(false).unwrap().get(&url).send().await.is_err(),
        "the old CA no longer verifies the server"
    );

    // A broken renewal (half-written file) keeps the last good certificate.
    std::fs::write(
        &config.tls.cert_file,
        "-----BEGIN CERTIFICATE-----\ngarbage\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = fresh
        .get(&url)
        .send()
        .await
        .expect("still served with the last good certificate");
    assert_eq!(r.status(), StatusCode::OK);
    assert_no_secret_logged();
}

#[tokio::test]
async fn mtls_refuses_clients_without_a_certificate_during_the_handshake() {
    capture_logs();
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&["127.0.0.1"]).unwrap();
    let mut config = tls_config(&registry, &pki, dir.path());
    config.tls.client_ca_file = pki.ca_cert.clone();
    let wharf = Wharf::start(config).await;
    let url = format!("{}/v2/", wharf.url);

    let err = pki
        .client(false)
        .unwrap()
        .get(&url)
        .send()
        .await
        .expect_err("no client certificate: no HTTP exchange at all");
    assert!(err.is_connect() || err.is_request(), "{err:?}");

    // A certificate from another CA is refused too.
    let stranger = TestPki::new(&["127.0.0.1"]).unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca_cert).unwrap()).unwrap();
    let mut pem = std::fs::read(&stranger.client_cert).unwrap();
    pem.extend(std::fs::read(&stranger.client_key).unwrap());
    let foreign = reqwest::Client::builder()
        .add_root_certificate(ca)
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    assert!(
        foreign.get(&url).send().await.is_err(),
        "a foreign client CA"
    );

    let r = pki.client(true).unwrap().get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
