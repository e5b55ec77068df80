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
