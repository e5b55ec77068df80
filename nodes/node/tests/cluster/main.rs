//! The cluster as operators run it: three `wharf` processes on loopback over one real S3
//! server (moto) and a real upstream (docker-registry), with members killed, restarted and
//! partitioned while clients pull.
//!
//! Modules: [`failover`] (leadership handoff, crash failover), [`autopilot`] (dead members,
//! learners and promotion), [`relay`] (relay fan-out, resumed peer streams); this file: herds, kills, partitions, rolling restarts, prefetch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod autopilot;
mod common;
mod failover;
mod relay;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use wharf_testkit::cluster::WharfCluster;
use wharf_testkit::push::{PushAuth, Pusher};
use wharf_testkit::registry::{Registry, RegistryOptions};
use wharf_testkit::s3::S3Server;
use wharf_testkit::wait_until;
use wharf_testkit::wan::LinkShape;

use common::*;

#[tokio::test]
async fn a_herd_over_three_nodes_fetches_each_blob_once() {
    let big = blob(64 * MIB, 401);
    let s = setup(&[&big], None).await;
    let status = s.cluster.status(1).unwrap();
    assert_eq!(status["members"].as_array().unwrap().len(), 3, "{status}");

    herd(&s.cluster, 16, &big.digest).await;
    assert_eq!(
        upstream_fetches(&s.registry, &big.digest).await,
        1,
        "the blob came from the upstream once for 16 clients on 3 nodes"
    );
    // The lease holder fetched it as 16 MiB pieces side by side, each asked once.
    let path = format!("/v2/{REPO}/blobs/{}", big.digest);
    assert_eq!(s.registry.count_requests("GET", &path), 4);
    // The lease was given back, and every node now serves it from S3.
    let released = wait_until(Duration::from_secs(10), || async {
        s.cluster
            .status(0)
            .is_some_and(|s| s["leases"].as_array().is_some_and(|l| l.is_empty()))
    })
    .await;
    assert!(released, "{:?}", s.cluster.status(0));
    herd(&s.cluster, 3, &big.digest).await;
    assert_eq!(upstream_fetches(&s.registry, &big.digest).await, 1);
}

#[tokio::test]
async fn killing_the_lease_owner_mid_transfer_costs_at_most_one_more_fetch() {
    let big = blob(64 * MIB, 402);
    // 16 MB/s: the transfer takes about four seconds, time to kill its owner halfway.
    let shape = LinkShape {
        bytes_per_sec: 16_000_000,
        rtt: Duration::from_millis(2),
        cut_every: None,
        per_connection: None,
    };
    let mut s = setup(&[&big], Some(shape)).await;
    let members: Vec<String> = s.cluster.members.iter().map(|m| m.url()).collect();
    let clients: Vec<_> = (0..6)
        .map(|i| {
            let (members, digest) = (members.clone(), big.digest.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut errors = Vec::new();
                // First on its own node, then retried on the others, as a load balancer would.
                for attempt in 0..6 {
                    let base = &members[(i + attempt) % members.len()];
                    match pull(&http, base, &digest).await {
                        Ok(()) => return Ok(errors),
                        Err(e) => errors.push(e),
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(errors)
            })
        })
        .collect();
    let owner_id = {
        let mut owner = None;
        let found = wait_until(Duration::from_secs(20), || {
            let status = s.cluster.status(0);
            owner = status.and_then(|s| s["leases"][0]["owner"].as_u64());
            async move { owner.is_some() }
        })
        .await;
        assert!(found, "a lease was taken");
        owner.unwrap()
    };
    let owner = s.cluster.index_of(owner_id).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.cluster.kill(owner);

    let mut retried = 0;
    for (i, client) in clients.into_iter().enumerate() {
        match client.await.unwrap() {
            Ok(errors) => retried += usize::from(!errors.is_empty()),
            Err(errors) => panic!("client {i} never got the blob: {errors:?}"),
        }
    }
    assert!(retried > 0, "the kill interrupted someone");
    let gets = upstream_fetches(&s.registry, &big.digest).await;
    let logs: Vec<String> = s.cluster.running().map(|i| s.cluster.log(i)).collect();
    assert!(
        (1..=2).contains(&gets),
        "upstream served it {gets} times; logs: {logs:#?}"
    );
}

#[tokio::test]
async fn killing_the_raft_leader_elects_another_and_pulls_go_on() {
    let fresh = blob(16 * MIB, 403);
    let mut s = setup(&[&fresh], None).await;
    let leader = s.cluster.leader().expect("a leader");
    let old_id = s.cluster.node_id(leader).unwrap();
    s.cluster.kill(leader);
    let elected = wait_until(Duration::from_secs(20), || async {
        s.cluster
            .leader()
            .is_some_and(|l| s.cluster.node_id(l).is_some_and(|id| id != old_id))
    })
    .await;
    assert!(elected, "no new leader: {:?}", s.cluster.statuses());
    herd(&s.cluster, 8, &fresh.digest).await;
    assert_eq!(upstream_fetches(&s.registry, &fresh.digest).await, 1);

    // An operator removes the dead member; the two left are the whole cluster.
    let survivor = s.cluster.running().next().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .env("WHARF_CLUSTER__SECRET_FILE", s.cluster.secret_file())
        .args(["cluster", "remove", "--node"])
        .arg(s.cluster.members[survivor].cluster_addr())
        .arg(old_id.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.cluster.wait_members(2).await.unwrap();
}

#[tokio::test]
async fn killing_the_raft_leader_mid_transfer_keeps_the_fetch_lease() {
    let big = blob(48 * MIB, 405);
    // 4 MB/s: about twelve seconds of transfer, longer than an election plus two lease TTLs.
    let shape = LinkShape {
        bytes_per_sec: 4_000_000,
        rtt: Duration::from_millis(2),
        cut_every: None,
        per_connection: None,
    };
    let mut s = setup(&[&big], Some(shape)).await;
    let leader = s.cluster.leader().expect("a leader");
    let mut others = (0..3).filter(|i| *i != leader);
    let (fetcher, waiter) = (others.next().unwrap(), others.next().unwrap());
    let http = reqwest::Client::new();
    let first = tokio::spawn({
        let (http, base, digest) = (
            http.clone(),
            s.cluster.members[fetcher].url(),
            big.digest.clone(),
        );
        async move { pull(&http, &base, &digest).await }
    });
    let taken = wait_until(Duration::from_secs(20), || {
        let held = s
            .cluster
            .status(fetcher)
            .is_some_and(|st| st["leases"][0]["owner"].as_u64() == s.cluster.node_id(fetcher));
        async move { held }
    })
    .await;
    assert!(taken, "the fetcher holds the lease");
    s.cluster.kill(leader);
    // Past the lease TTL (5 s) and an election: only renewals kept the lease.
    tokio::time::sleep(Duration::from_secs(7)).await;
    pull(&http, &s.cluster.members[waiter].url(), &big.digest)
        .await
        .expect("the waiter's pull");
    first.await.unwrap().expect("the fetcher's pull");
    let gets = upstream_fetches(&s.registry, &big.digest).await;
    let logs: Vec<String> = s.cluster.running().map(|i| s.cluster.log(i)).collect();
    assert_eq!(gets, 1, "the lease lapsed; logs: {logs:#?}");
}

#[tokio::test]
async fn a_partitioned_node_serves_cached_content_falls_back_for_cold_and_rejoins() {
    let cached = blob(4 * MIB, 404);
    let cold = blob(4 * MIB, 405);
    let majority_cold = blob(4 * MIB, 406);
    let after = blob(16 * MIB, 407);
    let s = setup(&[&cached, &cold, &majority_cold, &after], None).await;
    let http = reqwest::Client::new();
    let cut = 2;
    let cut_url = s.cluster.members[cut].url();
    pull(&http, &s.cluster.members[0].url(), &cached.digest)
        .await
        .unwrap();

    s.cluster.partition(cut).unwrap();
    pull(&http, &cut_url, &cached.digest).await.unwrap();
    pull(&http, &cut_url, &cold.digest).await.unwrap();
    let health = s.cluster.health(cut).await.unwrap();
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["cluster"]["ok"], false, "{health}");
    assert!(
        health["cluster"]["fallbacks"].as_u64().unwrap() >= 1,
        "{health}"
    );
    // The majority keeps its quorum and its singleflight.
    let majority: Vec<String> = (0..2).map(|i| s.cluster.members[i].url()).collect();
    let both = futures::future::join_all(
        majority
            .iter()
            .map(|base| pull(&http, base, &majority_cold.digest)),
    )
    .await;
    assert!(both.iter().all(Result::is_ok), "{both:?}");
    assert_eq!(
        upstream_fetches(&s.registry, &majority_cold.digest).await,
        1
    );

    s.cluster.heal(cut).unwrap();
    let rejoined = wait_until(Duration::from_secs(30), || async {
        s.cluster
            .health(cut)
            .await
            .is_some_and(|h| h["cluster"]["ok"] == true)
    })
    .await;
    assert!(
        rejoined,
        "{:?} {:?}",
        s.cluster.health(cut).await,
        s.cluster.statuses()
    );
    herd(&s.cluster, 9, &after.digest).await;
    assert_eq!(upstream_fetches(&s.registry, &after.digest).await, 1);
}

#[tokio::test]
async fn a_rolling_restart_under_steady_load_fails_no_pull() {
    let pool: Vec<Blob> = (0..48).map(|i| blob(2 * MIB, 500 + i)).collect();
    let refs: Vec<&Blob> = pool.iter().collect();
    let mut s = setup(&refs, None).await;
    let members: Vec<String> = s.cluster.members.iter().map(|m| m.url()).collect();
    let digests: Vec<String> = pool.iter().map(|b| b.digest.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (pulled, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..3)
        .map(|worker| {
            let (members, digests) = (members.clone(), digests.clone());
            let (stop, pulled, failed) = (stop.clone(), pulled.clone(), failed.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .pool_max_idle_per_host(0)
                    .build()
                    .unwrap();
                let mut n = worker;
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    // Cold for the first pass over the pool, warm after; the node rotates.
                    let digest = &digests[n % digests.len()];
                    n += 3;
                    let mut outcome = Err("no member reachable".to_string());
                    for offset in 0..members.len() {
                        let base = &members[(n + offset) % members.len()];
                        outcome = pull(&http, base, digest).await;
                        // A stopped member refuses connections: the balancer tries the next.
                        match &outcome {
                            Err(e) if e.starts_with("send:") => continue,
                            _ => break,
                        }
                    }
                    match outcome {
                        Ok(()) => pulled.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            failures.push(e);
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
                failures
            })
        })
        .collect();

    let started = std::time::Instant::now();
    for i in 0..3 {
        s.cluster.stop(i).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.cluster.restart(i).await.unwrap();
        s.cluster.wait_members(3).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for worker in load {
        failures.extend(worker.await.unwrap());
    }
    assert!(failures.is_empty(), "failed pulls: {failures:?}");
    let (pulled, secs) = (
        pulled.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
    );
    eprintln!("{pulled} pulls in {secs:.1} s of rolling restarts");
    // The Raft leader hands leadership over before it leaves (see
    // `a_stopping_leader_hands_over_and_cold_pulls_do_not_stall`); the load keeps moving.
    assert!(
        pulled >= 15,
        "steady load stalled: {pulled} pulls in {secs:.1} s"
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    for digest in &digests {
        let gets = s
            .registry
            .count_requests("GET", &format!("/v2/{REPO}/blobs/{digest}"));
        assert!(gets <= 1, "{digest} fetched {gets} times");
    }
}

/// Each member's `[[prefetch]]` passes, from its status page.
async fn prefetch_passes(cluster: &WharfCluster) -> Vec<u64> {
    let mut out = Vec::new();
    for member in &cluster.members {
        let status: serde_json::Value = reqwest::get(format!("{}/status.json", member.url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        out.push(status["prefetch"][0]["passes"].as_u64().unwrap_or(0));
    }
    out
}

#[tokio::test]
async fn prefetch_in_a_three_node_cluster_runs_on_the_leader_only() {
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let image = wharf_testkit::image::image(wharf_testkit::image::Format::Oci, "warm", "amd64", 3);
    Pusher::new(&registry.url(), PushAuth::None)
        .push_image(REPO, "v1", &image)
        .await
        .unwrap();
    let s3 = S3Server::start().await.unwrap();
    s3.create_bucket("cluster").await.unwrap();
    let config =
        format!("[[prefetch]]\nimage = \"{REPO}\"\ntags = \"^v\"\ninterval_secs = 2\npin = true\n");
    let binary = Path::new(env!("CARGO_BIN_EXE_wharf"));
    let cluster =
        WharfCluster::start_configured(binary, 3, &registry.url(), &s3, "cluster", &config)
            .await
            .unwrap();
    // Over some intervals, the leader syncs and no other member does.
    let synced = wait_until(Duration::from_secs(30), || async {
        prefetch_passes(&cluster).await.iter().max() >= Some(&3)
    })
    .await;
    let passes = prefetch_passes(&cluster).await;
    assert!(synced, "no member ran 3 passes: {passes:?}");
    let leader = cluster.leader().unwrap();
    for (i, p) in passes.iter().enumerate() {
        assert_eq!(*p > 0, i == leader, "passes {passes:?}, leader {leader}");
    }
    // Every blob came from the upstream once, and all members serve it from S3.
    for blob in image.blobs() {
        let path = format!("/v2/{REPO}/blobs/{}", blob.digest);
        assert_eq!(registry.count_requests("GET", &path), 1, "{path}");
        for member in &cluster.members {
            pull(&reqwest::Client::new(), &member.url(), &blob.digest)
                .await
                .unwrap();
        }
        assert_eq!(registry.count_requests("GET", &path), 1, "{path}");
    }
}
