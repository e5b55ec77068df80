//! The security review's defects at the HTTP edge, one test each: what an anonymous caller
//! can make the node do before it is authorized, and what it learns.

use reqwest::StatusCode;
use wharf_core::config::AccessRule;

use crate::common::*;
use crate::setup::*;

async fn get(url: &str, auth: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(url).header("accept", ACCEPT_ALL);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    request.send().await.unwrap()
}

/// Review #2 and #20: junk `ns=` values from callers without credentials make nothing (no
/// upstream client, no slot) and so cannot lock a registry out of the `"*"` parent; an
/// unknown registry is not named to an anonymous caller before it authenticates.
#[tokio::test]
async fn anonymous_junk_registries_neither_fill_the_parent_nor_learn_the_configuration() {
    capture_logs();
    let (registry, seeds) = seeded_registry().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = auth_config(&registry, dir.path());
    // The parent is the registry itself (it ignores ns=, as registries do).
    let mut any = upstream("*", &registry.url(), false);
    any.parent = true;
    config.upstreams.push(any);
    config.access = vec![AccessRule::new(&["**"], &["alice"], &[], false, true)];
    let wharf = Wharf::start(config).await;
    for i in 0..200 {
        let url = format!("{}/v2/x/manifests/latest?ns=junk{i}.invalid", wharf.url);
        assert_eq!(get(&url, None).await.status(), StatusCode::UNAUTHORIZED);
    }
    let alice = basic("alice", ALICE_PASSWORD);
    for ns in ["ghcr.io", "GHCR.IO.", "quay.io"] {
        let url = format!("{}/v2/test/docker/manifests/v1?ns={ns}", wharf.url);
        let r = get(&url, Some(&alice)).await;
        assert_eq!(r.status(), StatusCode::OK, "ns={ns}");
        assert_eq!(r.bytes().await.unwrap(), seeds.docker.manifest.body);
    }
    assert_no_secret_logged();
    // Review #21: access lines name who pulled (the anonymous 401s say so too).
    let logs = logged();
    let access: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("wharf::access") && l.contains("ns=quay.io"))
        .collect();
    assert!(
        !access.is_empty() && access.iter().all(|l| l.contains("user=\"alice\"")),
        "{access:?}"
    );
    assert!(logs.lines().any(|l| l.contains("wharf::access")
        && l.contains("junk1.invalid")
        && l.contains("user=\"anonymous\"")));

    // Without a "*" parent: an unknown registry costs a caller without credentials a 401,
    // the same answer as a known one, not "not configured".
    let config = auth_config(&registry, dir.path());
    let wharf = Wharf::start(config).await;
    for ns in ["docker.io", "unknown.example"] {
        let url = format!("{}/v2/x/manifests/latest?ns={ns}", wharf.url);
        let r = get(&url, None).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "ns={ns}");
        assert!(!r.text().await.unwrap().contains("configured"));
    }
}

/// Review #15: a wharf token follows its user's fate at once: out of a group, the group's
/// rules stop applying; out of the htpasswd file, the token stops working (not at `exp`).
#[tokio::test]
async fn tokens_see_group_and_user_removals_at_once() {
    capture_logs();
    let (registry, _seeds) = seeded_registry().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = auth_config(&registry, dir.path());
    config.auth.token_key_file = secret_file(dir.path(), "token.key", TOKEN_KEY);
    config
        .auth
        .groups
        .insert("platform".into(), vec!["alice".into()]);
    config.access = vec![AccessRule::new(
        &["docker.io/test/**"],
        &[],
        &["platform"],
        false,
        true,
    )];
    let wharf = Wharf::start(config.clone()).await;
    let token_url = format!(
        "{}/token?service=wharf&scope=repository:test/docker:pull",
        wharf.url
    );
    let body: serde_json::Value = get(&token_url, Some(&basic("alice", ALICE_PASSWORD)))
        .await
        .json()
        .await
        .unwrap();
    let bearer = format!("Bearer {}", body["token"].as_str().unwrap());
    let manifest = format!("{}/v2/test/docker/manifests/v1", wharf.url);
    assert_eq!(get(&manifest, Some(&bearer)).await.status(), StatusCode::OK);

    let mut without = config.clone();
    without.auth.groups.insert("platform".into(), vec![]);
    wharf.edge.reload_rules(&without).unwrap();
    assert_eq!(
        get(&manifest, Some(&bearer)).await.status(),
        StatusCode::FORBIDDEN,
        "out of the group"
    );
    wharf.edge.reload_rules(&config).unwrap();
    assert_eq!(get(&manifest, Some(&bearer)).await.status(), StatusCode::OK);

    // alice's line removed from the htpasswd file.
    secret_file(dir.path(), "htpasswd", &htpasswd(&[("bob", BOB_PASSWORD)]));
    let files = wharf.edge.watched_files();
    tokio::task::spawn_blocking(move || {
        for f in &files {
            f.reload(true);
        }
    })
    .await
    .unwrap();
    assert_eq!(
        get(&manifest, Some(&bearer)).await.status(),
        StatusCode::UNAUTHORIZED,
        "a removed user's token"
    );
}

/// Review #14: the catalog names only the repositories the caller may pull, and a broad rule
/// (`**`) does not open wharf's own `_wharf/*` names.
#[tokio::test]
async fn the_catalog_lists_only_what_the_caller_may_pull() {
    capture_logs();
    let (registry, _seeds) = seeded_registry().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = auth_config(&registry, dir.path());
    config.catalog.enabled = true;
    config.access = vec![
        AccessRule::new(&["_wharf/catalog"], &["alice", "bob"], &[], false, true),
        AccessRule::new(&["docker.io/test/docker"], &["alice"], &[], false, true),
        AccessRule::new(&["**"], &["bob"], &[], false, true),
    ];
    let wharf = Wharf::start(config).await;
    let bob = basic("bob", BOB_PASSWORD);
    for repo in ["test/docker", "test/oci"] {
        let url = format!("{}/v2/{repo}/manifests/v1", wharf.url);
        assert_eq!(get(&url, Some(&bob)).await.status(), StatusCode::OK);
    }
    let catalog = |auth: String| {
        let url = format!("{}/v2/_catalog", wharf.url);
        async move {
            let r = get(&url, Some(&auth)).await;
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<serde_json::Value>().await.unwrap()["repositories"].clone()
        }
    };
    assert_eq!(
        catalog(bob.clone()).await,
        serde_json::json!(["test/docker", "test/oci"])
    );
    assert_eq!(
        catalog(basic("alice", ALICE_PASSWORD)).await,
        serde_json::json!(["test/docker"]),
        "alice is not told of test/oci"
    );
    // bob's "**" does not reach the status page.
    let status = get(&format!("{}/status.json", wharf.url), Some(&bob)).await;
    assert_eq!(status.status(), StatusCode::FORBIDDEN);
}
