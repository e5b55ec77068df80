//! `[[access]]` rules name a repository as `<registry>/<repository>`: reached by `ns=`, by
//! the registry's name as a prefix, by an alias or by a host route, it gets the same answer.

use reqwest::StatusCode;
use wharf_core::config::AccessRule;
use wharf_core::config::Config;
use wharf_testkit::image::{Format, Image, image};
use wharf_testkit::push::{PushAuth, Pusher};
use wharf_testkit::registry::{Registry, RegistryOptions};

use crate::common::*;
use crate::setup::*;

/// Docker Hub (the default, with alice's and bob's logins) and a second registry standing for
/// ghcr.io holding `org/app` and `org/other`, reached also by the prefix `gh` and the host
/// `ghcr.mirror.test`; one rule lets alice pull `ghcr.io/org/app`. The registries live as
/// long as the returned values.
async fn routed_config(dir: &std::path::Path) -> (Registry, Registry, Image, Config) {
    let (hub, _) = seeded_registry().await;
    let ghcr = Registry::start(RegistryOptions::default())
        .await
        .expect("docker-registry starts");
    let app = image(Format::Oci, "routed-private", "amd64", 1);
    let pusher = Pusher::new(&ghcr.url(), PushAuth::None);
    pusher.push_image("org/app", "v1", &app).await.unwrap();
    pusher.push_image("org/other", "v1", &app).await.unwrap();
    let mut config = auth_config(&hub, dir);
    let mut gh = upstream("ghcr.io", &ghcr.url(), false);
    gh.prefixes = vec!["gh".into()];
    gh.hosts = vec!["ghcr.mirror.test".into()];
    config.upstreams.push(gh);
    config.access = vec![AccessRule::new(
        &["ghcr.io/org/app"],
        &["alice"],
        &[],
        false,
        true,
    )];
    (hub, ghcr, app, config)
}

#[tokio::test]
async fn access_rules_give_every_route_to_a_repository_the_same_answer() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let (_hub, ghcr, _, config) = routed_config(dir.path()).await;
    let wharf = Wharf::start(config).await;
    let routes = |repo: &str| {
        [
            (
                format!("{}/v2/{repo}/manifests/v1?ns=ghcr.io", wharf.url),
                None,
            ),
            (
                format!("{}/v2/ghcr.io/{repo}/manifests/v1", wharf.url),
                None,
            ),
            (format!("{}/v2/gh/{repo}/manifests/v1", wharf.url), None),
            (
                format!("{}/v2/{repo}/manifests/v1", wharf.url),
                Some("ghcr.mirror.test"),
            ),
        ]
    };
    let status = |url: String, host: Option<&'static str>, auth: Option<String>| async move {
        let mut request = reqwest::Client::new()
            .get(&url)
            .header("accept", ACCEPT_ALL);
        if let Some(host) = host {
            request = request.header("host", host);
        }
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request.send().await.unwrap().status()
    };
    let alice = basic("alice", ALICE_PASSWORD);
    let bob = basic("bob", BOB_PASSWORD);
    for (url, host) in routes("org/app") {
        assert_eq!(
            status(url.clone(), host, Some(alice.clone())).await,
            StatusCode::OK,
            "alice, {url} (host {host:?})"
        );
        assert_eq!(
            status(url.clone(), host, Some(bob.clone())).await,
            StatusCode::FORBIDDEN,
            "bob, {url} (host {host:?})"
        );
        assert_eq!(
            status(url.clone(), host, None).await,
            StatusCode::UNAUTHORIZED,
            "anonymous, {url} (host {host:?})"
        );
    }
    // The rule names one repository: its neighbour is refused by every route.
    for (url, host) in routes("org/other") {
        assert_eq!(
            status(url.clone(), host, Some(alice.clone())).await,
            StatusCode::FORBIDDEN,
            "alice, {url} (host {host:?})"
        );
    }
    // Refused before any upstream work, on every route.
    assert_eq!(ghcr.count_matching("GET", "/v2/org/other/manifests"), 0);
}

fn challenge_of(r: &reqwest::Response) -> String {
    r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string()
}

/// Docker's token flow names the repository as the client wrote it: a prefixed name gets a
/// challenge and a token for that name, which then reads it.
#[tokio::test]
async fn token_scopes_carry_the_name_the_client_used() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let (_hub, _ghcr, app, mut config) = routed_config(dir.path()).await;
    config.auth.token_key_file = secret_file(dir.path(), "token.key", TOKEN_KEY);
    let wharf = Wharf::start(config).await;
    let client = reqwest::Client::new();
    let get = |url: String, auth: Option<String>| {
        let mut request = client.get(url).header("accept", ACCEPT_ALL);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        async move { request.send().await.unwrap() }
    };
    let manifest = format!("{}/v2/ghcr.io/org/app/manifests/v1", wharf.url);
    let r = get(manifest.clone(), None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = challenge_of(&r);
    assert!(
        challenge.ends_with(",scope=\"repository:ghcr.io/org/app:pull\""),
        "{challenge}"
    );
    let r = get(
        format!(
            "{}/token?service=wharf&scope=repository:ghcr.io/org/app:pull",
            wharf.url
        ),
        Some(basic("alice", ALICE_PASSWORD)),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json().await.unwrap();
    let bearer = format!("Bearer {}", body["token"].as_str().unwrap());
    let r = get(manifest, Some(bearer.clone())).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), app.manifest.body);
    // The same repository by ns= is another name: the client is asked for a token of it.
    let r = get(
        format!("{}/v2/org/app/manifests/v1?ns=ghcr.io", wharf.url),
        Some(bearer),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = challenge_of(&r);
    assert!(
        challenge.contains("scope=\"repository:org/app:pull\""),
        "{challenge}"
    );
}
