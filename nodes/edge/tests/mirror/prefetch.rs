//! `[[prefetch]]`: matching tags (and their referrers) pulled before any client asks, a newly
//! pushed tag picked up within one interval, pins honoured by eviction, and the pause at the
//! upstream's pull-allowance reserve.

use std::time::{Duration, Instant};

use wharf_core::Digest;
use wharf_core::config::PrefetchRule;
use wharf_mirror::evict::Pins;
use wharf_testkit::image::{self, Artifact, Format};
use wharf_testkit::proxy::MitmProxy;
use wharf_testkit::push::{PushAuth, Pusher};
use wharf_testkit::registry::{Registry, RegistryOptions};
use wharf_testkit::wait_until;

use crate::common::*;

fn rule(image: &str, tags: &str, interval_secs: u64) -> PrefetchRule {
    PrefetchRule {
        image: image.into(),
        tags: tags.into(),
        semver: String::new(),
        platforms: vec![],
        interval_secs,
        referrers: false,
        pin: false,
        max_tags: 20,
    }
}

async fn cached(wharf: &Wharf, blobs: &[&image::Blob]) -> Vec<bool> {
    let mut out = Vec::new();
    for blob in blobs {
        let digest: Digest = blob.digest.parse().unwrap();
        out.push(wharf.mirror.blobs.contains(&digest).await.unwrap());
    }
    out
}

async fn all_cached(wharf: &Wharf, blobs: &[&image::Blob]) -> bool {
    cached(wharf, blobs).await.iter().all(|c| *c)
}

fn status(wharf: &Wharf) -> wharf_mirror::prefetch::RuleStatus {
    wharf.mirror.prefetch.status().remove(0)
}

#[tokio::test]
async fn matching_tags_platforms_and_referrers_are_prefetched_and_a_new_tag_within_an_interval() {
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let pusher = Pusher::new(&registry.url(), PushAuth::None);
    let v125 = image::index(Format::Oci, "prefetch-1.25");
    pusher
        .push_index("team/app", "1.25.0", &v125)
        .await
        .unwrap();
    let v2 = image::image(Format::Oci, "prefetch-2", "amd64", 1);
    pusher.push_image("team/app", "2.0.0", &v2).await.unwrap();
    let signature = Artifact::new(
        &v125.manifest,
        "application/vnd.dev.cosign.artifact.sig.v1+json",
        b"{\"critical\":{}}",
        "application/vnd.dev.cosign.simplesigning.v1+json",
    );
    pusher
        .push_referrers("team/app", &v125.manifest, &[&signature])
        .await
        .unwrap();

    let interval = 3;
    let mut config = test_config(vec![upstream("docker.io", &registry.url(), true)]);
    let mut r = rule("team/app", r"^1\.", interval);
    r.platforms = vec!["linux/arm64".into()];
    r.referrers = true;
    config.prefetch.push(r);
    let wharf = Wharf::start(config).await;

    let arm64 = v125.images[1].blobs();
    let first = wait_until(Duration::from_secs(20), || async {
        all_cached(&wharf, &arm64).await
    })
    .await;
    assert!(first, "arm64 of 1.25.0 prefetched: {:?}", status(&wharf));
    let signed = wait_until(Duration::from_secs(10), || async {
        all_cached(&wharf, &signature.blobs.iter().collect::<Vec<_>>()).await
    })
    .await;
    assert!(
        signed,
        "the signature's blobs prefetched: {:?}",
        status(&wharf)
    );
    // Only the platform asked for, only the matching tags.
    assert_eq!(
        cached(&wharf, &v125.images[0].blobs()).await,
        vec![false; 3]
    );
    assert_eq!(cached(&wharf, &v2.blobs()).await, vec![false; 2]);
    let s = status(&wharf);
    assert_eq!(s.tags, vec!["1.25.0".to_string()]);
    assert!(s.last_error.is_none() && s.paused.is_none(), "{s:?}");
    let page = status_page(&wharf).await;
    assert!(
        page.contains("<table id=\"prefetch\">") && page.contains("<td>team/app</td>"),
        "{page}"
    );

    // A new matching tag: cached within one interval of being pushed, with no client asking.
    let v126 = image::index(Format::Oci, "prefetch-1.26");
    pusher
        .push_index("team/app", "1.26.0", &v126)
        .await
        .unwrap();
    let pushed = Instant::now();
    let passes_at_push = status(&wharf).passes;
    let picked_up = wait_until(Duration::from_secs(3 * interval + 10), || async {
        all_cached(&wharf, &v126.images[1].blobs()).await
    })
    .await;
    let took = pushed.elapsed();
    assert!(picked_up, "1.26.0 never prefetched: {:?}", status(&wharf));
    // The pass under way at the push may have listed the tags before it; the next one, which
    // starts within an interval, must pull it.
    let passes = status(&wharf).passes;
    assert!(
        passes <= passes_at_push + 2,
        "1.26.0 took {} passes ({took:?}, {interval} s interval)",
        passes - passes_at_push
    );
    eprintln!("1.26.0 cached {took:?} after the push ({interval} s interval)");

    // Each blob came from the upstream once, and a client now pulls it from the cache.
    for blob in arm64.iter().chain(&v126.images[1].blobs()) {
        let path = format!("/v2/team/app/blobs/{}", blob.digest);
        assert_eq!(registry.count_requests("GET", &path), 1, "{path}");
        let r = reqwest::get(format!("{}{path}", wharf.url)).await.unwrap();
        assert_eq!(hash_body(r).await.unwrap().0, blob.digest);
        assert_eq!(registry.count_requests("GET", &path), 1, "{path}");
    }
}

#[tokio::test]
async fn pinned_blobs_survive_an_eviction_pass_that_removes_everything_else() {
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let pusher = Pusher::new(&registry.url(), PushAuth::None);
    let pinned = image::image(Format::Docker, "pinned", "amd64", 2);
    pusher
        .push_image("team/pinned", "1.0", &pinned)
        .await
        .unwrap();
    let other = image::image(Format::Docker, "unpinned", "amd64", 2);
    pusher
        .push_image("team/other", "1.0", &other)
        .await
        .unwrap();

    let mut config = test_config(vec![upstream("docker.io", &registry.url(), true)]);
    let mut r = rule("team/pinned", ".", 3600);
    r.pin = true;
    config.prefetch.push(r);
    config.eviction.max_idle_secs = 1;
    config.eviction.min_age_secs = 0;
    config.eviction.interval_secs = 3600;
    let wharf = Wharf::start(config).await;

    let recorded = wait_until(Duration::from_secs(20), || async {
        Pins::read(wharf.mirror.store.as_ref())
            .await
            .is_ok_and(|p| p.digests.len() == 3)
    })
    .await;
    assert!(recorded, "pins never written: {:?}", status(&wharf));
    // A client pulls the other image; then both sit idle past max_idle_secs.
    for blob in other.blobs() {
        let r = reqwest::get(format!("{}/v2/team/other/blobs/{}", wharf.url, blob.digest))
            .await
            .unwrap();
        assert_eq!(hash_body(r).await.unwrap().0, blob.digest);
    }
    let stored = wait_until(Duration::from_secs(10), || async {
        all_cached(&wharf, &other.blobs()).await
    })
    .await;
    assert!(stored);
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let report = wharf.mirror.blobs.evictor().run_once().await.unwrap();
    assert_eq!((report.deleted, report.pinned), (3, 3), "{report:?}");
    assert_eq!(cached(&wharf, &other.blobs()).await, vec![false; 3]);
    assert!(all_cached(&wharf, &pinned.blobs()).await);
}

#[tokio::test]
async fn prefetching_pauses_at_the_allowance_reserve_and_resumes_above_it() {
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let img = image::image(Format::Oci, "reserve", "amd64", 1);
    Pusher::new(&registry.url(), PushAuth::None)
        .push_image("team/limited", "1.0", &img)
        .await
        .unwrap();
    let proxy = MitmProxy::start(&registry.url()).await.unwrap();
    proxy.set_corrupt(false);
    proxy.set_ratelimit_remaining(Some(5));

    let mut config = test_config(vec![upstream("docker.io", &proxy.url(), true)]);
    config.upstreams[0].prefetch_reserve = 20;
    config.prefetch.push(rule("team/limited", ".", 1));
    let wharf = Wharf::start(config).await;

    let paused = wait_until(Duration::from_secs(10), || async {
        status(&wharf).passes >= 2
    })
    .await;
    let s = status(&wharf);
    assert!(
        paused
            && s.paused
                .as_deref()
                .is_some_and(|p| p.contains("reserve of 20")),
        "{s:?}"
    );
    assert_eq!(cached(&wharf, &img.blobs()).await, vec![false; 2]);
    assert_eq!(registry.count_matching("GET", "/manifests/"), 0);

    // The allowance refills: the next pass pulls the image.
    proxy.set_ratelimit_remaining(Some(80));
    let resumed = wait_until(Duration::from_secs(10), || async {
        all_cached(&wharf, &img.blobs()).await
    })
    .await;
    assert!(resumed, "{:?}", status(&wharf));
    assert!(status(&wharf).paused.is_none());
}
