//! Client authentication and repository policy through the HTTP API: HTTP Basic against an
//! htpasswd file (reloaded on change), Docker's token flow at `/token`, external JWTs from a
//! JWKS file, `[[access]]` rules, and every refusal as an OCI error with the right status.

use std::time::Duration;

use reqwest::StatusCode;
use wharf_core::config::{AccessRule, JwtIssuerConfig};
use wharf_testkit::idp::TestIdp;

use crate::common::*;
use crate::setup::*;

fn rule(r: &[&str], u: &[&str], g: &[&str], anonymous: bool, allow: bool) -> AccessRule {
    AccessRule::new(r, u, g, anonymous, allow)
}

async fn get(url: &str, auth: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(url).header("accept", ACCEPT_ALL);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    request.send().await.unwrap()
}

/// Status, OCI error code (if any) and WWW-Authenticate of a response.
async fn outcome(r: reqwest::Response) -> (StatusCode, String, String) {
    let status = r.status();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let code = if status.is_success() {
        String::new()
    } else {
        error_code(r).await
    };
    (status, code, challenge)
}

#[tokio::test]
async fn basic_auth_and_repository_policy() {
    capture_logs();
    let (registry, seeds) = seeded_registry().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = auth_config(&registry, dir.path());
    config
        .auth
        .groups
        .insert("builders".into(), vec!["bob".into()]);
    config.access = vec![
        rule(&["docker.io/test/oci*"], &[], &["builders"], false, true),
        rule(&["docker.io/test/*"], &["alice"], &[], false, true),
        rule(&["docker.io/library/*"], &["*"], &[], false, true),
    ];
    let wharf = Wharf::start(config).await;
    let manifest = |repo: &str| format!("{}/v2/{repo}/manifests/v1", wharf.url);
    let alice = basic("alice", ALICE_PASSWORD);
    let bob = basic("bob", BOB_PASSWORD);

    // No credentials: 401 with a Basic challenge, at /v2/ and on a repository.
    let (status, code, challenge) = outcome(get(&format!("{}/v2/", wharf.url), None).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );
    assert!(challenge.starts_with("Basic realm="), "{challenge}");
    let (status, _, _) = outcome(get(&manifest("test/docker"), None).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Wrong password, unknown user: 401 UNAUTHORIZED.
    for wrong in [
        basic("alice", WRONG_PASSWORD),
        basic("nobody", WRONG_PASSWORD),
    ] {
        let (status, code, _) = outcome(get(&manifest("test/docker"), Some(&wrong)).await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
        );
    }

    // alice may pull test/*; bob (group builders) only test/oci*; both library/*.
    let r = get(&manifest("test/docker"), Some(&alice)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), seeds.docker.manifest.body);
    let (status, code, _) = outcome(get(&manifest("test/docker"), Some(&bob)).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "DENIED"));
    assert_eq!(
        get(&manifest("test/oci"), Some(&bob)).await.status(),
        StatusCode::OK
    );
    let hello = format!("{}/v2/hello/manifests/latest", wharf.url);
    assert_eq!(get(&hello, Some(&bob)).await.status(), StatusCode::OK);
    // Blobs and tags/list are checked the same way.
    let blob = format!(
        "{}/v2/test/docker/blobs/{}",
        wharf.url, seeds.docker.layers[0].digest
    );
    assert_eq!(get(&blob, Some(&bob)).await.status(), StatusCode::FORBIDDEN);
    let tags = format!("{}/v2/test/docker/tags/list", wharf.url);
    assert_eq!(get(&tags, Some(&bob)).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(get(&tags, Some(&alice)).await.status(), StatusCode::OK);
    // A denied request does no upstream work.
    let before = registry.count_matching("GET", "/v2/test/docker-list/");
    let (status, _, _) = outcome(get(&manifest("test/docker-list"), Some(&bob)).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        registry.count_matching("GET", "/v2/test/docker-list/"),
        before
    );
    assert_no_secret_logged();
}

#[tokio::test]
async fn htpasswd_and_access_rules_reload_without_a_restart() {
    capture_logs();
    let (registry, _seeds) = seeded_registry().await;
    let dir = tempfile::tempdir().unwrap();
    let config = auth_config(&registry, dir.path());
    let wharf = Wharf::start(config.clone()).await;
    wharf_auth::reload::spawn_watcher(wharf.edge.watched_files(), Duration::from_millis(100));
    let url = format!("{}/v2/test/docker/manifests/v1", wharf.url);
    let carol = basic("carol", "carol-new-user-pw");
    assert_eq!(
        get(&url, Some(&carol)).await.status(),
        StatusCode::UNAUTHORIZED
    );

    std::fs::write(
        &config.auth.htpasswd_file,
        htpasswd(&[("alice", ALICE_PASSWORD), ("carol", "carol-new-user-pw")]),
    )
    .unwrap();
    let added = wharf_testkit::wait_until(Duration::from_secs(10), || {
        let (url, carol) = (url.clone(), carol.clone());
        async move { get(&url, Some(&carol)).await.status() == StatusCode::OK }
    })
    .await;
    assert!(
        added,
        "a user added to the htpasswd file can pull without a restart"
    );
    assert_eq!(
        get(&url, Some(&basic("bob", BOB_PASSWORD))).await.status(),
        StatusCode::UNAUTHORIZED,
        "a removed user cannot"
    );

    // Access rules, as the config file's re-read applies them.
    let mut changed = config.clone();
    changed.access = vec![rule(&["docker.io/library/**"], &["*"], &[], false, true)];
    wharf.edge.reload_rules(&changed).unwrap();
    assert_eq!(
        get(&url, Some(&carol)).await.status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn docker_token_flow_issues_scoped_tokens() {
    capture_logs();
    let (registry, seeds) = seeded_registry().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = auth_config(&registry, dir.path());
    config.auth.token_key_file = secret_file(dir.path(), "token.key", TOKEN_KEY);
    let wharf = Wharf::start(config).await;

    let (status, _, challenge) = outcome(get(&format!("{}/v2/", wharf.url), None).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge,
        format!("Bearer realm=\"{}/token\",service=\"wharf\"", wharf.url)
    );
    let manifest = format!("{}/v2/test/docker/manifests/v1", wharf.url);
    let (_, _, challenge) = outcome(get(&manifest, None).await).await;
    assert!(
        challenge.ends_with(",scope=\"repository:test/docker:pull\""),
        "{challenge}"
    );

    let token_for = |scope: &str, auth: String| {
        let url = format!("{}/token?service=wharf&scope={scope}", wharf.url);
        async move { get(&url, Some(&auth)).await }
    };
    let r = token_for(
        "repository:test/docker:pull",
        basic("alice", ALICE_PASSWORD),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_string();
    assert_eq!(body["access_token"], body["token"]);
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    let bearer = format!("Bearer {token}");

    let r = get(&manifest, Some(&bearer)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), seeds.docker.manifest.body);
    assert_eq!(
        get(&format!("{}/v2/", wharf.url), Some(&bearer))
            .await
            .status(),
        StatusCode::OK
    );
    // The token names one repository: another asks for a token of its own.
    let (status, _, challenge) = outcome(
        get(
            &format!("{}/v2/test/oci/manifests/v1", wharf.url),
            Some(&bearer),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.contains("scope=\"repository:test/oci:pull\""));

    // Wrong password, no credentials (anonymous is off), a tampered token.
    let r = token_for(
        "repository:test/docker:pull",
        basic("alice", WRONG_PASSWORD),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(r).await, "UNAUTHORIZED");
    let url = format!("{}/token?scope=repository:test/docker:pull", wharf.url);
    assert_eq!(get(&url, None).await.status(), StatusCode::UNAUTHORIZED);
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    let (status, code, _) =
        outcome(get(&manifest, Some(&format!("Bearer {tampered}"))).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );
    // A wharf token cannot buy another token.
    assert_eq!(
        get(&url, Some(&bearer)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_no_secret_logged();
}

#[tokio::test]
async fn anonymous_pulls_where_the_policy_allows_them() {
    capture_logs();
    let (registry, _seeds) = seeded_registry().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = auth_config(&registry, dir.path());
    config.auth.anonymous = true;
    config.auth.token_key_file = secret_file(dir.path(), "token.key", TOKEN_KEY);
    config.access = vec![
        rule(&["docker.io/library/*"], &[], &[], true, true),
        rule(&["**"], &["alice"], &[], false, true),
    ];
    let wharf = Wharf::start(config).await;
    // An anonymous token, as Docker fetches one when it has no login.
    let r = get(
        &format!("{}/token?scope=repository:hello:pull", wharf.url),
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let token = r.json::<serde_json::Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let hello = format!("{}/v2/hello/manifests/latest", wharf.url);
    assert_eq!(
        get(&hello, Some(&format!("Bearer {token}"))).await.status(),
        StatusCode::OK
    );
    // Anonymous, not allowed: asked to log in (401), not refused (403).
    let (status, _, challenge) =
        outcome(get(&format!("{}/v2/test/docker/manifests/v1", wharf.url), None).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.starts_with("Bearer "));
}

#[tokio::test]
async fn external_jwts_are_verified_against_the_issuers_keys() {
    capture_logs();
    let (registry, _seeds) = seeded_registry().await;
    let dir = tempfile::tempdir().unwrap();
    let idp = TestIdp::new("https://idp.example.test", "key-1").unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, idp.jwks().to_string()).unwrap();
    let mut config = test_config(vec![upstream("docker.io", &registry.url(), true)]);
    config.auth.jwt.push(JwtIssuerConfig {
        issuer: idp.issuer.clone(),
        audience: "wharf.test".into(),
        jwks_file: jwks.clone(),
        required_claims: [("tenant".to_string(), "acme".to_string())].into(),
        ..JwtIssuerConfig::default()
    });
    // The issuer's identities are "<host>:<name>", its groups "<host>:<group>" (review #9).
    config.access = vec![
        rule(
            &["docker.io/test/**"],
            &[],
            &["idp.example.test:platform"],
            false,
            true,
        ),
        rule(
            &["docker.io/library/*"],
            &["idp.example.test:*"],
            &[],
            false,
            true,
        ),
        rule(&["docker.io/local/*"], &["*"], &[], false, true),
    ];
    let wharf = Wharf::start(config).await;
    let manifest = format!("{}/v2/test/docker/manifests/v1", wharf.url);
    let bearer = |t: String| format!("Bearer {t}");

    let good = idp.token("ci@acme", &["platform"], "wharf.test", 300);
    assert_eq!(
        get(&manifest, Some(&bearer(good.clone()))).await.status(),
        StatusCode::OK
    );
    // As the password of `docker login`.
    assert_eq!(
        get(&manifest, Some(&basic("ci", &good))).await.status(),
        StatusCode::OK
    );
    // Groups map to the policy: a user outside "platform" is refused test/**.
    let outsider = idp.token("dev@acme", &["dev"], "wharf.test", 300);
    let (status, code, _) = outcome(get(&manifest, Some(&bearer(outsider.clone()))).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "DENIED"));
    let hello = format!("{}/v2/hello/manifests/latest", wharf.url);
    assert_eq!(
        get(&hello, Some(&bearer(outsider.clone()))).await.status(),
        StatusCode::OK
    );
    // `users = ["*"]` is htpasswd users only: no issuer's token matches it (review #9).
    let local = format!("{}/v2/local/app/manifests/v1", wharf.url);
    assert_eq!(
        get(&local, Some(&bearer(outsider))).await.status(),
        StatusCode::FORBIDDEN
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let forger = TestIdp::new(&idp.issuer, "key-1").unwrap();
    let refused = [
        (
            "expired",
            idp.token("ci@acme", &["platform"], "wharf.test", -3600),
        ),
        (
            "wrong audience",
            idp.token("ci@acme", &["platform"], "elsewhere", 300),
        ),
        (
            "wrong signature",
            forger.token("ci@acme", &["platform"], "wharf.test", 300),
        ),
        (
            "alg none",
            idp.unsigned(&serde_json::json!({
                "iss": idp.issuer, "sub": "ci@acme", "aud": "wharf.test",
                "groups": ["platform"], "exp": now + 300,
            })),
        ),
        ("HS256 with the public key", {
            use base64::Engine;
            let input = format!(
                    "{}.{}",
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .encode(r#"{"alg":"HS256","typ":"JWT","kid":"key-1"}"#),
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
                        serde_json::json!({"iss": idp.issuer, "sub": "x", "aud": "wharf.test", "exp": now + 300}).to_string()
                    )
                );
            format!("{input}.AAAA")
        }),
        (
            "unknown issuer",
            TestIdp::new("https://evil.test", "k").unwrap().token(
                "ci",
                &["platform"],
                "wharf.test",
                300,
            ),
        ),
        ("garbage", "a.b.c".to_string()),
        (
            "another tenant (review #9: required_claims)",
            idp.sign(
                &serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": "key-1"}),
                &serde_json::json!({
                    "iss": idp.issuer, "sub": "ci@evil", "aud": "wharf.test",
                    "groups": ["platform"], "exp": now + 300, "tenant": "evil",
                }),
            ),
        ),
        (
            "not valid before an hour from now (review #16)",
            idp.sign(
                &serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": "key-1"}),
                &serde_json::json!({
                    "iss": idp.issuer, "sub": "ci@acme", "aud": "wharf.test",
                    "groups": ["platform"], "nbf": now + 3600, "exp": now + 7200,
                }),
            ),
        ),
    ];
    for (why, token) in refused {
        let (status, code, _) = outcome(get(&manifest, Some(&bearer(token))).await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            "{why}"
        );
    }
}

/// `jwks_url`: keys fetched at start, and again (at most every 30 s) when a token names a key
/// not seen yet, so an IdP's key rotation is picked up without a restart.
#[tokio::test]
async fn jwks_from_a_url_follow_key_rotation() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    capture_logs();
    let (registry, _seeds) = seeded_registry().await;
    let old = TestIdp::new("https://idp.rotating.test", "old").unwrap();
    let new = TestIdp::new("https://idp.rotating.test", "new").unwrap();
    let served = Arc::new(Mutex::new(old.jwks()));
    let fetches = Arc::new(AtomicUsize::new(0));
    let app = {
        let (served, fetches) = (served.clone(), fetches.clone());
        axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let (served, fetches) = (served.clone(), fetches.clone());
                async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    let body = served.lock().unwrap().to_string();
                    ([("content-type", "application/json")], body)
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!("http://{}/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut config = test_config(vec![upstream("docker.io", &registry.url(), true)]);
    config.auth.jwt.push(JwtIssuerConfig {
        issuer: old.issuer.clone(),
        audience: "wharf.test".into(),
        jwks_url,
        allow_http_jwks: true,
        ..JwtIssuerConfig::default()
    });
    let wharf = Wharf::start(config).await;
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "fetched at start");
    let manifest = format!("{}/v2/test/docker/manifests/v1", wharf.url);
    let with = |t: String| format!("Bearer {t}");
    let good_old = old.token("ci", &[], "wharf.test", 300);
    assert_eq!(
        get(&manifest, Some(&with(good_old))).await.status(),
        StatusCode::OK
    );

    // The IdP rotates: a token with the new key makes wharf fetch the set again.
    *served.lock().unwrap() = new.jwks();
    let good_new = new.token("ci", &[], "wharf.test", 300);
    assert_eq!(
        get(&manifest, Some(&with(good_new))).await.status(),
        StatusCode::OK
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    // Unknown key ids do not make wharf hammer the IdP: no refetch within 30 s.
    let stranger = TestIdp::new("https://idp.rotating.test", "unknown").unwrap();
    for _ in 0..20 {
        let t = stranger.token("ci", &[], "wharf.test", 300);
        assert_eq!(
            get(&manifest, Some(&with(t))).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
}

/// `/metrics`, `/` and `/status.json` on the main listener follow the `[[access]]` rule for
/// `_wharf/status` (and `/v2/_catalog` the one for `_wharf/catalog`); the operator listener serves them to anyone who can reach it; with
/// `main_listener = false` the main listener does not serve them at all.
#[tokio::test]
async fn the_operator_pages_follow_the_policy_for_wharf_status() {
    capture_logs();
    let (registry, _seeds) = seeded_registry().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = auth_config(&registry, dir.path());
    config
        .auth
        .groups
        .insert("admins".into(), vec!["alice".into()]);
    config.access = vec![
        rule(&["_wharf/**"], &[], &["admins"], false, true),
        rule(&["docker.io/**"], &["*"], &[], false, true),
    ];
    config.catalog.enabled = true;
    let wharf = Wharf::start(config.clone()).await;
    let alice = basic("alice", ALICE_PASSWORD);
    let bob = basic("bob", BOB_PASSWORD);
    for page in ["/metrics", "/status.json", "/"] {
        let url = format!("{}{page}", wharf.url);
        assert_eq!(
            get(&url, Some(&alice)).await.status(),
            StatusCode::OK,
            "{page}"
        );
        let (status, code, _) = outcome(get(&url, Some(&bob)).await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::FORBIDDEN, "DENIED"),
            "{page}"
        );
        let (status, _, challenge) = outcome(get(&url, None).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{page}");
        assert!(!challenge.is_empty());
    }
    // The catalog follows `_wharf/catalog` the same way.
    let catalog = format!("{}/v2/_catalog", wharf.url);
    assert_eq!(get(&catalog, Some(&alice)).await.status(), StatusCode::OK);
    let (status, code, _) = outcome(get(&catalog, Some(&bob)).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "DENIED"));
    // bob still pulls: the rule only guards the operator pages.
    let r = get(
        &format!("{}/v2/test/docker/manifests/v1", wharf.url),
        Some(&bob),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);

    // The operator listener: no authentication; the main listener can be kept out of it.
    config.metrics.main_listener = false;
    let private = Wharf::start(config).await;
    let (status, code, _) =
        outcome(get(&format!("{}/metrics", private.url), Some(&alice)).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "NAME_UNKNOWN")
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let operator = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(wharf_edge::serve_operator(
        listener,
        private.edge.clone(),
        std::future::pending(),
    ));
    for page in ["/metrics", "/status.json", "/", "/health"] {
        let r = get(&format!("{operator}{page}"), None).await;
        assert_eq!(r.status(), StatusCode::OK, "{page}");
    }
    let r = get(&format!("{operator}/v2/"), None).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "no registry API there");
}
