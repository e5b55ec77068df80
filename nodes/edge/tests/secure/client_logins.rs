//! `credentials = "client"`: a private registry where every user has an account and their own
//! permissions. Each user pulls what the upstream grants that user; a user without access, a
//! wrong password and no password are refused, also for content another user already brought
//! into the cache; the upstream sees each user's own identity, never another's.

use reqwest::StatusCode;
use wharf_core::config::UpstreamCredentials;
use wharf_testkit::have_program;
use wharf_testkit::image::{Format, Image, image};
use wharf_testkit::proxy::MitmProxy;
use wharf_testkit::push::{PushAuth, Pusher};
use wharf_testkit::registry::{Registry, RegistryAuth, RegistryOptions};
use wharf_testkit::token::{SERVICE, TokenIssuer, TokenUser};

use crate::common::*;
use crate::setup::*;

/// A request to `url` with `auth` (an `Authorization` value) and `host`, if given.
async fn get(url: &str, auth: Option<&str>, host: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(url).header("accept", ACCEPT_ALL);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    if let Some(host) = host {
        request = request.header("host", host);
    }
    request.send().await.unwrap()
}

/// wharf mirroring the registry at `url` as the default upstream `private`, with each
/// client's own login, also reached by the host `localhost`.
async fn client_login_wharf(url: &str) -> Wharf {
    let mut private = upstream("private", url, true);
    private.credentials = UpstreamCredentials::Client;
    private.hosts = vec!["localhost".into()];
    Wharf::start(test_config(vec![private])).await
}

/// docker-registry with htpasswd logins for `users` (the first pushes), holding `repo:v1`: an
/// image of `layers` layers made from `seed`.
async fn htpasswd_registry(
    users: &[(&str, &str)],
    repo: &str,
    seed: &str,
    layers: usize,
) -> (Registry, Image) {
    let registry = Registry::start(RegistryOptions {
        auth: RegistryAuth::Users(
            users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
        ),
        ..RegistryOptions::default()
    })
    .await
    .expect("docker-registry starts");
    let app = image(Format::Oci, seed, "amd64", layers);
    let (username, password) = users[0];
    Pusher::new(
        &registry.url(),
        PushAuth::Basic {
            username: username.into(),
            password: password.into(),
        },
    )
    .push_image(repo, "v1", &app)
    .await
    .unwrap();
    (registry, app)
}

/// Who asked the token service since entry `from`, and for which scopes.
fn token_requests(issuer: &TokenIssuer, from: usize) -> Vec<String> {
    issuer.asked_by.lock().unwrap()[from..].to_vec()
}

#[tokio::test]
async fn each_user_pulls_what_a_token_registry_grants_them_and_nothing_else() {
    capture_logs();
    let issuer = TokenIssuer::start_with_users(vec![
        TokenUser {
            name: "alice".into(),
            password: ALICE_PASSWORD.into(),
            repositories: vec!["team-a/app".into()],
        },
        TokenUser {
            name: "bob".into(),
            password: BOB_PASSWORD.into(),
            repositories: vec!["team-b/app".into()],
        },
    ])
    .await
    .unwrap();
    let registry = Registry::start(RegistryOptions {
        auth: RegistryAuth::Token {
            realm: issuer.realm(),
            service: SERVICE.into(),
            issuer: wharf_testkit::token::ISSUER.into(),
            cert_pem: issuer.cert_pem.clone(),
        },
        ..RegistryOptions::default()
    })
    .await
    .expect("docker-registry starts");
    let pusher = Pusher::new(&registry.url(), PushAuth::Token(issuer.clone()));
    let a = image(Format::Oci, "team-a-private", "amd64", 1);
    let b = image(Format::Oci, "team-b-private", "amd64", 1);
    pusher.push_image("team-a/app", "v1", &a).await.unwrap();
    pusher.push_image("team-b/app", "v1", &b).await.unwrap();
    let wharf = client_login_wharf(&registry.url()).await;
    let alice = basic("alice", ALICE_PASSWORD);
    let bob = basic("bob", BOB_PASSWORD);
    let wrong = basic("alice", WRONG_PASSWORD);
    let manifest = |repo: &str| format!("{}/v2/{repo}/manifests/v1", wharf.url);
    let blob = |repo: &str, image: &Image| {
        format!("{}/v2/{repo}/blobs/{}", wharf.url, image.layers[0].digest)
    };

    // alice pulls her team's image: manifest and layer, verified.
    let r = get(&manifest("team-a/app"), Some(&alice), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), a.manifest.body);
    let (digest, _) = hash_body(get(&blob("team-a/app", &a), Some(&alice), None).await)
        .await
        .unwrap();
    assert_eq!(digest, a.layers[0].digest);
    let alice_asked = token_requests(&issuer, 0);
    assert!(
        !alice_asked.is_empty() && alice_asked.iter().all(|r| r.starts_with("alice ")),
        "{alice_asked:?}"
    );
    let mark = alice_asked.len();

    // Now cached, team-a's content is still refused to anyone the upstream does not let in:
    // bob (no grant), alice with a wrong password, nobody; each with the challenge to answer.
    for (who, auth) in [
        ("bob", Some(&bob)),
        ("wrong password", Some(&wrong)),
        ("nobody", None),
    ] {
        for url in [manifest("team-a/app"), blob("team-a/app", &a)] {
            let r = get(&url, auth.map(String::as_str), None).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{who}: {url}");
            let challenge = r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .to_string();
            assert!(challenge.starts_with("Basic realm="), "{challenge}");
            assert_eq!(error_code(r).await, "UNAUTHORIZED");
        }
    }
    // bob cannot reach team-a's cached layer through his own repository either.
    let r = get(&blob("team-b/app", &a), Some(&bob), None).await;
    assert!(r.status().is_client_error(), "{}", r.status());
    // bob pulls his own team's image.
    let r = get(&manifest("team-b/app"), Some(&bob), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), b.manifest.body);
    let (digest, _) = hash_body(get(&blob("team-b/app", &b), Some(&bob), None).await)
        .await
        .unwrap();
    assert_eq!(digest, b.layers[0].digest);

    // alice again: her verdict holds (login_verdict_secs), so the upstream is not asked anew.
    let before = registry.count_matching("GET", "/v2/team-a/app/tags/list");
    for _ in 0..5 {
        let r = get(&manifest("team-a/app"), Some(&alice), None).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert_eq!(
        registry.count_matching("GET", "/v2/team-a/app/tags/list"),
        before
    );

    // While the others asked, the token service saw bob and the anonymous client as
    // themselves, never alice (whose login is cached in wharf's token store): nobody was
    // served with another's login. The wrong password got no token at all.
    let others = token_requests(&issuer, mark);
    assert!(
        others
            .iter()
            .any(|r| r.starts_with("bob repository:team-a/app:pull")),
        "{others:?}"
    );
    assert!(
        others.iter().any(|r| r.starts_with("anonymous ")),
        "{others:?}"
    );
    assert!(
        others
            .iter()
            .any(|r| r.starts_with("bob repository:team-b/app:pull")),
        "{others:?}"
    );
    assert!(others.iter().all(|r| !r.starts_with("alice")), "{others:?}");
    // The operator sees the verdicts: alice's and bob's accepted, the others refused.
    let metrics = reqwest::get(format!("{}/metrics", wharf.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for verdict in ["accepted", "refused"] {
        let series = format!(
            "wharf_upstream_login_checks_total{{upstream=\"private\",verdict=\"{verdict}\"}}"
        );
        assert!(metrics.contains(&series), "{series} in:\n{metrics}");
    }
    assert_no_secret_logged();
}

#[tokio::test]
async fn skopeo_pulls_with_its_own_login_through_a_host_route() {
    assert!(
        have_program("skopeo"),
        "skopeo is not installed: run the README's test command (it installs it)"
    );
    capture_logs();
    let (registry, app) = htpasswd_registry(
        &[("alice", ALICE_PASSWORD), ("bob", BOB_PASSWORD)],
        "team/app",
        "htpasswd-private",
        2,
    )
    .await;
    // Between wharf and the registry, a proxy notes whose login each request carries.
    let proxy = MitmProxy::start(&registry.url()).await.unwrap();
    proxy.set_corrupt(false);
    let wharf = client_login_wharf(&proxy.url()).await;
    let host = format!("localhost:{}", wharf.port);

    // `/v2/` on the registry's host asks for its login with the registry's own challenge,
    // and checks it as `docker login` expects.
    let base = format!("{}/v2/", wharf.url);
    let r = get(&base, None, Some(&host)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Basic realm=\"wharf-test\""
    );
    let r = get(&base, Some(&basic("alice", WRONG_PASSWORD)), Some(&host)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = get(&base, Some(&basic("alice", ALICE_PASSWORD)), Some(&host)).await;
    assert_eq!(r.status(), StatusCode::OK);

    let work = tempfile::tempdir().unwrap();
    let policy = work.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let reference = format!("docker://{host}/team/app:v1");
    let copy = |creds: Option<String>, out: std::path::PathBuf| {
        let policy = policy.clone();
        let reference = reference.clone();
        async move {
            let mut args = vec![
                "--policy".to_string(),
                policy.display().to_string(),
                "copy".into(),
                "--retry-times".into(),
                "0".into(),
                "--src-tls-verify=false".into(),
            ];
            match creds {
                Some(creds) => args.push(format!("--src-creds={creds}")),
                None => args.push("--src-no-creds".into()),
            }
            args.push(reference);
            args.push(format!("dir:{}", out.display()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run("skopeo", &args).await
        }
    };
    let digests: Vec<String> = app.blobs().iter().map(|b| b.digest.clone()).collect();
    let (ok, text) = copy(
        Some(format!("alice:{ALICE_PASSWORD}")),
        work.path().join("alice"),
    )
    .await;
    assert!(ok, "skopeo copy as alice failed:\n{text}");
    assert_dir_verified(&work.path().join("alice"), &digests);
    let alice_requests = proxy.users_on("/v2/team/app/");
    assert!(
        !alice_requests.is_empty() && alice_requests.iter().all(|u| u == "alice"),
        "{alice_requests:?}"
    );

    // Cached now: no login and an unknown one are still refused.
    for creds in [None, Some(format!("mallory:{WRONG_PASSWORD}"))] {
        let (ok, text) = copy(creds.clone(), work.path().join("refused")).await;
        assert!(!ok, "skopeo copy with {creds:?} should be refused:\n{text}");
    }
    // bob (htpasswd grants every user everything) pulls with his own login: the registry
    // sees bob (and the refused clients as themselves), never alice on their behalf.
    let (ok, text) = copy(Some(format!("bob:{BOB_PASSWORD}")), work.path().join("bob")).await;
    assert!(ok, "skopeo copy as bob failed:\n{text}");
    assert_dir_verified(&work.path().join("bob"), &digests);
    let users = proxy.users_on("/v2/team/app/");
    let since = &users[alice_requests.len()..];
    assert!(since.iter().any(|u| u == "bob"), "{since:?}");
    assert!(
        since
            .iter()
            .all(|u| u == "bob" || u == "-" || u == "mallory"),
        "{since:?}"
    );
    // Each blob came from the upstream once, whoever asked.
    for blob in app.blobs() {
        assert_eq!(
            registry.count_requests("GET", &format!("/v2/team/app/blobs/{}", blob.digest)),
            1,
            "{}",
            blob.digest
        );
    }
    assert_no_secret_logged();
}

#[tokio::test]
async fn the_docker_engine_logs_in_to_the_upstream_through_its_host() {
    capture_logs();
    let (running, text) = run("docker", &["info", "--format", "{{.ServerVersion}}"]).await;
    assert!(
        have_program("docker") && running,
        "the Docker Engine is needed for this test: {text}"
    );
    let (registry, app) = htpasswd_registry(
        &[("alice", ALICE_PASSWORD)],
        "team/engine",
        "engine-private",
        2,
    )
    .await;
    let wharf = client_login_wharf(&registry.url()).await;
    let host = format!("localhost:{}", wharf.port);
    let reference = format!("{host}/team/engine:v1");
    // Each docker CLI config is its own credential store, so no login leaks between cases.
    let configs = tempfile::tempdir().unwrap();
    let docker = |config: &str, args: &[&str]| {
        let mut all = vec![
            "--config".to_string(),
            configs.path().join(config).display().to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        async move {
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            run("docker", &all).await
        }
    };
    let _ = docker("none", &["image", "rm", "-f", &reference]).await;
    let (ok, text) = docker("none", &["pull", &reference]).await;
    assert!(!ok, "a pull without a login must be refused:\n{text}");
    let (ok, _) = docker(
        "wrong",
        &["login", &host, "-u", "alice", "-p", WRONG_PASSWORD],
    )
    .await;
    assert!(!ok, "docker login with a wrong password must fail");
    let (ok, text) = docker(
        "alice",
        &["login", &host, "-u", "alice", "-p", ALICE_PASSWORD],
    )
    .await;
    assert!(ok, "docker login as alice failed:\n{text}");
    let (ok, text) = docker("alice", &["pull", &reference]).await;
    let _ = docker("alice", &["image", "rm", "-f", &reference]).await;
    assert!(ok, "docker pull {reference} as alice failed:\n{text}");
    for blob in app.blobs() {
        assert_eq!(
            registry.count_requests("GET", &format!("/v2/team/engine/blobs/{}", blob.digest)),
            1,
            "{}",
            blob.digest
        );
    }
    assert_no_secret_logged();
}

#[tokio::test]
async fn with_auth_on_wharfs_own_logins_never_reach_the_upstream() {
    capture_logs();
    let (registry, app) = htpasswd_registry(
        &[("alice", ALICE_PASSWORD)],
        "team/app",
        "auth-on-private",
        1,
    )
    .await;
    let proxy = MitmProxy::start(&registry.url()).await.unwrap();
    proxy.set_corrupt(false);
    // wharf's own user carol (a password only wharf knows) and wharf's token flow.
    let dir = tempfile::tempdir().unwrap();
    let mut private = upstream("private", &proxy.url(), true);
    private.credentials = UpstreamCredentials::Client;
    private.hosts = vec!["localhost".into()];
    let mut config = test_config(vec![private]);
    config.auth.htpasswd_file = secret_file(
        dir.path(),
        "htpasswd",
        &htpasswd(&[("carol", BOB_PASSWORD)]),
    );
    config.auth.token_key_file = secret_file(dir.path(), "token.key", TOKEN_KEY);
    let wharf = Wharf::start(config).await;
    let host = format!("localhost:{}", wharf.port);
    let manifest = format!("{}/v2/team/app/manifests/v1", wharf.url);
    let carol = basic("carol", BOB_PASSWORD);

    // Off the registry's host, the header is wharf's: carol is let in by wharf, the registry
    // is asked as for an anonymous client and refuses; carol's password never leaves wharf.
    let r = get(&manifest, Some(&carol), None).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(r).await, "DENIED");
    // A token wharf issued is no login for the registry, even on its host.
    let r = get(
        &format!(
            "{}/token?service=wharf&scope=repository:team/app:pull",
            wharf.url
        ),
        Some(&carol),
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json().await.unwrap();
    let bearer = format!("Bearer {}", body["token"].as_str().unwrap());
    let r = get(&manifest, Some(&bearer), Some(&host)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let seen = proxy.users_on("/v2/");
    assert!(
        seen.iter().all(|u| u == "-"),
        "only anonymous requests reached the registry: {seen:?}"
    );
    // On its host, the registry's own login is the registry's.
    let r = get(
        &manifest,
        Some(&basic("alice", ALICE_PASSWORD)),
        Some(&host),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), app.manifest.body);
    assert!(proxy.users_on("/v2/team/app/").iter().any(|u| u == "alice"));
    assert_no_secret_logged();
}
