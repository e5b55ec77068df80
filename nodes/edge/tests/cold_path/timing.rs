//! How long cold bytes take on a long path: a whole blob, its last MiB, containerd's chunks.

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;

use crate::common::*;
use crate::*;

#[tokio::test]
async fn a_cold_blob_arrives_verified_in_a_third_of_one_streams_time() {
    let _one = ONE_AT_A_TIME.lock().await;
    let blob = ColdBlob::push(128 * MIB, 1).await;
    let link = blob.link(long_path()).await;
    // The anchor: one plain stream of the blob over the same link.
    let started = Instant::now();
    let direct = reqwest::get(format!("{}{}", link.url(), blob.path()))
        .await
        .unwrap();
    assert_eq!(hash_body(direct).await.unwrap().0, blob.digest);
    let one_stream = started.elapsed();

    let wharf = Wharf::start(test_config(vec![upstream("docker.io", &link.url(), true)])).await;
    let before = link.carried();
    let started = Instant::now();
    blob.pull_from(&wharf.url).await;
    let through_wharf = started.elapsed();
    eprintln!("cold 128 MiB: one stream {one_stream:?}, through wharf {through_wharf:?}");
    assert!(
        through_wharf * 3 <= one_stream,
        "through wharf {through_wharf:?}, one stream {one_stream:?}"
    );
    wharf.settled().await;
    blob.sent_about_once(link.carried() - before, "the upstream");
    assert_eq!(metric(&wharf, "wharf_upstream_ranged_fills_total").await, 1);
    assert_eq!(metric(&wharf, "wharf_upstream_range_pieces_total").await, 8);
}

#[tokio::test]
async fn the_last_mib_of_a_cold_blob_is_answered_in_about_a_round_trip() {
    let _one = ONE_AT_A_TIME.lock().await;
    let blob = ColdBlob::push(128 * MIB, 2).await;
    let link = blob.link(long_path()).await;
    let wharf = Wharf::start(test_config(vec![upstream("docker.io", &link.url(), true)])).await;
    let from = blob.data.len() - MIB;
    let started = Instant::now();
    let response = reqwest::Client::new()
        .get(format!("{}{}", wharf.url, blob.path()))
        .header("range", format!("bytes={from}-{}", blob.data.len() - 1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        response.headers()["cache-control"],
        "no-store",
        "unverified: for no shared cache"
    );
    let body = response.bytes().await.unwrap();
    let took = started.elapsed();
    assert_eq!(body, blob.data.slice(from..), "the right bytes");
    eprintln!("last MiB of a cold 128 MiB blob: {took:?}");
    assert!(took < Duration::from_millis(600), "took {took:?}");
    assert!(metric(&wharf, "wharf_upstream_range_pieces_wanted_total").await >= 1);
    // The fill goes on meanwhile; the status shows its pieces.
    let status = status_json(&wharf).await;
    let chunks = &status["downloads"][0]["chunks"];
    assert!(chunks["fetching"].as_u64().unwrap() >= 1, "{status}");
    assert!(
        chunks["received"].as_u64().unwrap() >= MIB as u64,
        "{status}"
    );
    // The fill goes on and verifies: the whole blob, from the cache.
    wharf.settled().await;
    let whole = reqwest::get(format!("{}{}", wharf.url, blob.path()))
        .await
        .unwrap();
    assert_eq!(hash_body(whole).await.unwrap().0, blob.digest);
}

#[tokio::test]
async fn eight_open_ended_chunk_reads_of_a_cold_blob_cost_one_fill() {
    let _one = ONE_AT_A_TIME.lock().await;
    let blob = ColdBlob::push(128 * MIB, 3).await;
    let link = blob.link(long_path()).await;
    let wharf = Wharf::start(test_config(vec![upstream("docker.io", &link.url(), true)])).await;
    let before = link.carried();
    let started = Instant::now();
    // containerd's parallel pull: `bytes=N-` for each 16 MiB chunk, read, then closed.
    let readers: Vec<_> = (0..8)
        .map(|k| {
            let url = format!("{}{}", wharf.url, blob.path());
            let expected = blob.data.slice(k * 16 * MIB..(k + 1) * 16 * MIB);
            tokio::spawn(async move {
                let response = reqwest::Client::new()
                    .get(url)
                    .header("range", format!("bytes={}-", k * 16 * MIB))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
                let mut stream = response.bytes_stream();
                let mut got = Vec::with_capacity(expected.len());
                while got.len() < expected.len() {
                    got.extend_from_slice(&stream.next().await.unwrap().unwrap());
                }
                got.truncate(expected.len());
                assert!(got == expected, "chunk {k} has the right bytes");
            })
        })
        .collect();
    for reader in readers {
        reader.await.unwrap();
    }
    let took = started.elapsed();
    eprintln!("eight chunk reads of a cold 128 MiB blob: {took:?}");
    // One stream would take 5.4 s to bring the last chunk.
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    wharf.settled().await;
    blob.sent_about_once(link.carried() - before, "the upstream");
    assert_eq!(metric(&wharf, "wharf_upstream_ranged_fills_total").await, 1);
    let gets = blob.registry.count_matching("GET", &blob.digest);
    // Stored and verified: a whole read now asks the upstream nothing.
    let whole = reqwest::get(format!("{}{}", wharf.url, blob.path()))
        .await
        .unwrap();
    assert_eq!(hash_body(whole).await.unwrap().0, blob.digest);
    assert_eq!(blob.registry.count_matching("GET", &blob.digest), gets);
}

#[tokio::test]
async fn through_a_parent_tier_still_fetching_the_child_fills_in_pieces_too() {
    let _one = ONE_AT_A_TIME.lock().await;
    let blob = ColdBlob::push(128 * MIB, 8).await;
    // registry → long path → parent wharf → long path → regional wharf.
    let to_parent = blob.link(long_path()).await;
    let parent = Wharf::start(test_config(vec![upstream(
        "docker.io",
        &to_parent.url(),
        true,
    )]))
    .await;
    let to_region = WanLink::start(parent.host(), long_path()).await.unwrap();
    let mut via_parent = upstream("docker.io", &to_region.url(), true);
    via_parent.parent = true;
    let region = Wharf::start(test_config(vec![via_parent])).await;
    let started = Instant::now();
    blob.pull_from(&region.url).await;
    let took = started.elapsed();
    eprintln!("cold 128 MiB through a parent tier: {took:?}");
    // One stream over one of the two hops alone takes 5.4 s.
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    region.settled().await;
    parent.settled().await;
    assert_eq!(
        metric(&region, "wharf_upstream_ranged_fills_total").await,
        1
    );
    assert_eq!(
        metric(&parent, "wharf_upstream_ranged_fills_total").await,
        1
    );
    blob.sent_about_once(to_parent.carried(), "the registry");
    blob.sent_about_once(to_region.carried(), "the parent");
}
