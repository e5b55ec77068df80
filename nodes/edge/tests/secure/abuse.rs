//! Hostile input at the authentication layer: malformed and huge Authorization headers,
//! garbage tokens, and a flood of wrong passwords, answered quickly with OCI errors, within a
//! bound on bcrypt work and without memory growth.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::common::*;
use crate::setup::*;

fn rss_kib() -> u64 {
    wharf_testkit::registry::rss_kib(std::process::id()).unwrap_or(0)
}

#[tokio::test]
async fn malformed_credentials_get_401_never_500() {
    capture_logs();
    let (registry, _seeds) = seeded_registry().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = auth_config(&registry, dir.path());
    config.auth.token_key_file = secret_file(dir.path(), "token.key", TOKEN_KEY);
    let wharf = Wharf::start(config).await;
    let url = format!("{}/v2/test/docker/manifests/v1", wharf.url);
    let http = reqwest::Client::new();
    let huge = format!("Bearer {}", "A".repeat(20 * 1024));
    let cases: Vec<Vec<u8>> = vec![
        b"Basic".to_vec(),
        b"Basic !!!notbase64".to_vec(),
        b"Basic Zm9v".to_vec(),         // "foo": no colon
        b"Basic OnBhc3N3b3Jk".to_vec(), // ":password": empty user
        b"Digest username=x".to_vec(),
        b"Bearer".to_vec(),
        b"Bearer a.b.c".to_vec(),
        b"Bearer eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJ3aGFyZjp3aGFyZiJ9.x".to_vec(),
        b"Bearer \xff\xfe".to_vec(),
        huge.into_bytes(),
    ];
    for case in cases {
        let value = reqwest::header::HeaderValue::from_bytes(&case).unwrap();
        let r = http
            .get(&url)
            .header("authorization", value)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let shown = String::from_utf8_lossy(&case[..case.len().min(40)]).into_owned();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{shown}");
        assert_eq!(error_code(r).await, "UNAUTHORIZED", "{shown}");
    }
    // A header past hyper's limit is refused by HTTP itself, not with a 500.
    let r = http
        .get(&url)
        .header("authorization", format!("Basic {}", "A".repeat(200 * 1024)))
        .send()
        .await;
    if let Ok(r) = r {
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    // The node still serves.
    let r = http
        .get(&url)
        .header("authorization", basic("alice", ALICE_PASSWORD))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

// Two workers: the 400 flooding clients share the runtime with the node, and on one thread
// their connection set-up alone delayed the probe past a second on a busy CI machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_flood_is_answered_fast_with_bounded_work_and_memory() {
    capture_logs();
    let (registry, _seeds) = seeded_registry().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(vec![upstream("docker.io", &registry.url(), true)]);
    // A production cost for alice: each check is real work.
    config.auth.htpasswd_file = secret_file(
        dir.path(),
        "htpasswd",
        &format!("alice:{}\n", bcrypt::hash(ALICE_PASSWORD, 10).unwrap()),
    );
    config.auth.max_concurrent_hashes = 2;
    let wharf = Wharf::start(config).await;
    let url = format!("{}/v2/", wharf.url);
    let http = reqwest::Client::new();
    let alice = basic("alice", ALICE_PASSWORD);
    assert_eq!(
        http.get(&url)
            .header("authorization", &alice)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    // 10,000 wrong passwords in a row, the same one: one hash, then remembered.
    let wrong = basic("alice", WRONG_PASSWORD);
    let rss_before = rss_kib();
    let started = Instant::now();
    for _ in 0..10_000 {
        let r = http
            .get(&url)
            .header("authorization", &wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let repeated = started.elapsed();
    println!("10,000 repeated wrong passwords: {repeated:?}");
    assert!(repeated < Duration::from_secs(60), "{repeated:?}");

    // 400 different wrong passwords at once: at most 2 hashes run; the rest wait a second,
    // then 429. Meanwhile a user whose password was checked before is served at once: a 200
    // (queued behind the flood it would get a 429 after its one-second wait), well within the
    // flood's own time.
    let started = Instant::now();
    let flood: Vec<_> = (0..400)
        .map(|i| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                http.get(&url)
                    .header("authorization", basic("alice", &format!("guess-{i}")))
                    .send()
                    .await
                    .map(|r| r.status())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let probe = Instant::now();
    let r = http
        .get(&url)
        .header("authorization", &alice)
        .send()
        .await
        .unwrap();
    let probe = probe.elapsed();
    assert_eq!(r.status(), StatusCode::OK);
    let mut counts = std::collections::BTreeMap::<u16, usize>::new();
    for task in flood {
        let status = task.await.unwrap().unwrap();
        *counts.entry(status.as_u16()).or_default() += 1;
    }
    let elapsed = started.elapsed();
    println!(
        "400 distinct wrong passwords: {counts:?} in {elapsed:?}; a known user meanwhile: {probe:?}"
    );
    assert!(
        counts.keys().all(|s| *s == 401 || *s == 429),
        "only 401 and 429: {counts:?}"
    );
    assert!(
        counts.get(&429).is_some_and(|n| *n > 0),
        "the hash bound turned some away"
    );
    assert!(
        probe < Duration::from_secs(3),
        "a known user waited {probe:?}"
    );
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
    let grown = rss_kib().saturating_sub(rss_before);
    println!("RSS growth over the floods: {grown} KiB");
    assert!(grown < 64 * 1024, "memory grew by {grown} KiB");
    let _ = Arc::new(());
    assert_no_secret_logged();
}
