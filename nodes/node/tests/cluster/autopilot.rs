//! Autopilot membership: dead members removed, learners beyond `max_voters`, promotion.

use std::path::Path;
use std::time::Duration;

use wharf_testkit::cluster::WharfCluster;
use wharf_testkit::push::{PushAuth, Pusher};
use wharf_testkit::registry::{Registry, RegistryOptions};
use wharf_testkit::s3::S3Server;
use wharf_testkit::wait_until;

use super::common::*;

/// Autopilot: a member cut off for less than `dead_member_timeout_secs` stays; one killed for
/// good is removed by the leader within the timeout (plus a check interval), so it no longer
/// counts towards the quorum; restarted, it rejoins by itself.
#[tokio::test]
async fn a_dead_member_is_removed_after_its_timeout_and_rejoins_when_back() {
    let b = blob(MIB, 1200);
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    Pusher::new(&registry.url(), PushAuth::None)
        .push_blob(REPO, b.data.clone(), &b.digest)
        .await
        .unwrap();
    let s3 = S3Server::start().await.unwrap();
    s3.create_bucket("autopilot").await.unwrap();
    let binary = Path::new(env!("CARGO_BIN_EXE_wharf"));
    let mut cluster = WharfCluster::start_configured(
        binary,
        3,
        &registry.url(),
        &s3,
        "autopilot",
        "[cluster]\ndead_member_timeout_secs = 6\n",
    )
    .await
    .unwrap();
    let leader = cluster.leader().expect("a leader");
    let cut = (leader + 1) % 3;

    // Cut off for less than the timeout: kept.
    cluster.partition(cut).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.heal(cut).unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        member_count(&cluster, leader),
        Some(3),
        "a brief partition cost a member"
    );
    cluster.wait_members(3).await.unwrap();
    // (The healed member may have called an election: ask again who leads.)
    let leader = cluster.leader().expect("a leader");
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;

    // Killed for good: removed within the timeout and a few checks.
    let (dead_id, leader_id) = (cluster.node_id(follower), cluster.node_id(leader));
    cluster.kill(follower);
    let killed = std::time::Instant::now();
    // Status shows how long ago each member last answered the leader.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = cluster.status(leader).expect("the leader answers");
    for m in status["members"].as_array().unwrap() {
        let contact = m["last_contact_ms"].as_i64();
        if m["id"].as_u64() == dead_id {
            assert!(contact.is_some_and(|ms| ms >= 2500), "{status}");
        } else if m["id"].as_u64() != leader_id {
            assert!(contact.is_some_and(|ms| ms < 2000), "{status}");
        }
        assert_eq!(m["role"], "voter");
        if m["id"].as_u64() != dead_id {
            assert_eq!(m["health"], "ok", "{status}");
        }
    }
    // So does the leader's /status.json (and its status page).
    let page: serde_json::Value =
        reqwest::get(format!("{}/status.json", cluster.members[leader].url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let roster = page["cluster"]["roster"]
        .as_array()
        .expect("a roster")
        .clone();
    assert_eq!(roster.len(), 3, "{page}");
    let dead = roster
        .iter()
        .find(|m| m["id"].as_u64() == dead_id)
        .expect("listed");
    assert!(
        dead["last_contact_ms"]
            .as_u64()
            .is_some_and(|ms| ms >= 2500),
        "{page}"
    );
    assert_eq!(dead["role"], "voter");
    let removed = wait_until(Duration::from_secs(6 + 20), || {
        let count = member_count(&cluster, leader);
        async move { count == Some(2) }
    })
    .await;
    assert!(
        removed,
        "the dead member is still counted after {:?}: {:?}\n{}",
        killed.elapsed(),
        cluster.statuses(),
        cluster.log(leader)
    );
    eprintln!("dead member removed {:?} after it died", killed.elapsed());
    // The other member applies the change a heartbeat later.
    let agreed = wait_until(Duration::from_secs(5), || {
        let count = member_count(&cluster, other);
        async move { count == Some(2) }
    })
    .await;
    assert!(agreed, "{:?}", cluster.statuses());
    // Exactly one removal, by whichever member led then.
    assert_eq!(
        metric_sum(&cluster, "wharf_cluster_members_removed_total").await,
        1
    );
    // The two left still agree and fetch once.
    herd(&cluster, 4, &b.digest).await;

    // Back: it rejoins by itself.
    cluster.restart(follower).await.unwrap();
    cluster.wait_members(3).await.unwrap();
}

/// Past `max_voters`, members join as learners: they serve and take part in the one fetch per
/// blob like voters, without voting. A voter killed for good is removed and the most
/// up-to-date learner takes its place.
#[tokio::test]
async fn members_past_max_voters_learn_and_a_learner_replaces_a_dead_voter() {
    let (first, second) = (blob(MIB, 1300), blob(MIB, 1301));
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let pusher = Pusher::new(&registry.url(), PushAuth::None);
    for b in [&first, &second] {
        pusher
            .push_blob(REPO, b.data.clone(), &b.digest)
            .await
            .unwrap();
    }
    let s3 = S3Server::start().await.unwrap();
    s3.create_bucket("learners").await.unwrap();
    let binary = Path::new(env!("CARGO_BIN_EXE_wharf"));
    // Started, it waits for 3 voters and 3 learners.
    let mut cluster = WharfCluster::start_configured(
        binary,
        6,
        &registry.url(),
        &s3,
        "learners",
        "[cluster]\nmax_voters = 3\ndead_member_timeout_secs = 6\n",
    )
    .await
    .unwrap();

    // A herd over all six, learners included: one upstream fetch.
    herd(&cluster, 12, &first.digest).await;
    assert_eq!(upstream_fetches(&registry, &first.digest).await, 1);

    // A voter (not the leader) killed for good: removed, and a learner promoted.
    let leader = cluster.leader().expect("a leader");
    let status = cluster.status(leader).expect("the leader answers");
    let voter_ids: Vec<u64> = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "voter")
        .filter_map(|m| m["id"].as_u64())
        .collect();
    let leader_id = cluster.node_id(leader).unwrap();
    let dead_id = *voter_ids.iter().find(|id| **id != leader_id).unwrap();
    let dead = cluster.index_of(dead_id).unwrap();
    cluster.kill(dead);
    let killed = std::time::Instant::now();
    let replaced = wait_until(Duration::from_secs(6 + 20), || {
        let status = cluster.status(leader);
        async move {
            status.is_some_and(|s| {
                let members = s["members"].as_array().cloned().unwrap_or_default();
                let voters = members.iter().filter(|m| m["role"] == "voter").count();
                members.len() == 5
                    && voters == 3
                    && members.iter().all(|m| m["id"].as_u64() != Some(dead_id))
            })
        }
    })
    .await;
    assert!(
        replaced,
        "the dead voter was not replaced after {:?}: {:?}\n{}",
        killed.elapsed(),
        cluster.statuses(),
        cluster.log(leader)
    );
    eprintln!(
        "dead voter removed and replaced {:?} after it died",
        killed.elapsed()
    );
    cluster.wait_roles(3, 2).await.unwrap();
    assert_eq!(
        metric_sum(&cluster, "wharf_cluster_members_removed_total").await,
        1
    );
    assert_eq!(
        metric_sum(&cluster, "wharf_cluster_members_promoted_total").await,
        1
    );
    // The five left still fetch each blob once.
    herd(&cluster, 10, &second.digest).await;
    assert_eq!(upstream_fetches(&registry, &second.digest).await, 1);
}
