//! The cluster as operators run it: three `wharf` processes on loopback over one real S3
//! server (moto) and a real upstream (docker-registry), with members killed, restarted and
//! partitioned while clients pull.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use wharf_testkit::cluster::WharfCluster;
use wharf_testkit::image::random_bytes;
use wharf_testkit::push::{PushAuth, Pusher};
use wharf_testkit::registry::{Registry, RegistryOptions};
use wharf_testkit::s3::S3Server;
use wharf_testkit::wan::{LinkShape, WanLink};
use wharf_testkit::{sha256, wait_until};

const MIB: usize = 1024 * 1024;
const REPO: &str = "team/cluster";

struct Blob {
    data: Bytes,
    digest: String,
}

struct Setup {
    registry: Registry,
    _s3: S3Server,
    cluster: WharfCluster,
    _link: Option<WanLink>,
}

fn blob(len: usize, seed: u64) -> Blob {
    let data = random_bytes(len, seed);
    let digest = sha256(&data);
    Blob { data, digest }
}

/// A registry holding `blobs`, a moto bucket, and three members; `link` shapes the upstream.
async fn setup(blobs: &[&Blob], link: Option<LinkShape>) -> Setup {
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let pusher = Pusher::new(&registry.url(), PushAuth::None);
    for b in blobs {
        pusher
            .push_blob(REPO, b.data.clone(), &b.digest)
            .await
            .unwrap();
    }
    let link = match link {
        Some(shape) => Some(WanLink::start(registry.host(), shape).await.unwrap()),
        None => None,
    };
    let upstream = link.as_ref().map_or_else(|| registry.url(), |l| l.url());
    let s3 = S3Server::start().await.unwrap();
    s3.create_bucket("cluster").await.unwrap();
    let binary = Path::new(env!("CARGO_BIN_EXE_wharf"));
    let cluster = WharfCluster::start(binary, 3, &upstream, &s3, "cluster")
        .await
        .unwrap();
    Setup {
        registry,
        _s3: s3,
        cluster,
        _link: link,
    }
}

fn blob_url(base: &str, digest: &str) -> String {
    format!("{base}/v2/{REPO}/blobs/{digest}")
}

/// GET a blob and check its digest; the error says how it failed.
async fn pull(http: &reqwest::Client, base: &str, digest: &str) -> Result<(), String> {
    let response = http
        .get(blob_url(base, digest))
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    let body = response.bytes().await.map_err(|e| format!("body: {e}"))?;
    if sha256(&body) != digest {
        return Err("wrong bytes".into());
    }
    Ok(())
}

/// Upstream GETs of `digest`, once the registry's access log stops changing.
async fn upstream_gets(registry: &Registry, digest: &str) -> usize {
    let path = format!("/v2/{REPO}/blobs/{digest}");
    let mut last = usize::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = registry.count_requests("GET", &path);
        if now == last {
            return now;
        }
        last = now;
    }
}

/// `n` clients spread over the running members pull `digest` at once; every one must succeed.
async fn herd(cluster: &WharfCluster, n: usize, digest: &str) {
    let members: Vec<String> = cluster
        .running()
        .map(|i| cluster.members[i].url())
        .collect();
    let clients: Vec<_> = (0..n)
        .map(|i| {
            let base = members[i % members.len()].clone();
            let digest = digest.to_string();
            tokio::spawn(async move { pull(&reqwest::Client::new(), &base, &digest).await })
        })
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        let result = client.await.unwrap();
        assert!(result.is_ok(), "client {i}: {result:?}");
    }
}

#[tokio::test]
async fn a_herd_over_three_nodes_fetches_each_blob_once() {
    let big = blob(64 * MIB, 401);
    let s = setup(&[&big], None).await;
    let status = s.cluster.status(1).unwrap();
    assert_eq!(status["members"].as_array().unwrap().len(), 3, "{status}");

    herd(&s.cluster, 16, &big.digest).await;
    assert_eq!(
        upstream_gets(&s.registry, &big.digest).await,
        1,
        "one upstream GET for 16 clients on 3 nodes"
    );
    // The lease was given back, and every node now serves it from S3.
    let released = wait_until(Duration::from_secs(10), || async {
        s.cluster
            .status(0)
            .is_some_and(|s| s["leases"].as_array().is_some_and(|l| l.is_empty()))
    })
    .await;
    assert!(released, "{:?}", s.cluster.status(0));
    herd(&s.cluster, 3, &big.digest).await;
    assert_eq!(upstream_gets(&s.registry, &big.digest).await, 1);
}

#[tokio::test]
async fn killing_the_lease_owner_mid_transfer_costs_at_most_one_more_fetch() {
    let big = blob(64 * MIB, 402);
    // 16 MB/s: the transfer takes about four seconds, time to kill its owner halfway.
    let shape = LinkShape {
        bytes_per_sec: 16_000_000,
        rtt: Duration::from_millis(2),
        cut_every: None,
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
    let gets = upstream_gets(&s.registry, &big.digest).await;
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
    assert_eq!(upstream_gets(&s.registry, &fresh.digest).await, 1);

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
    let gets = upstream_gets(&s.registry, &big.digest).await;
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
    assert_eq!(upstream_gets(&s.registry, &majority_cold.digest).await, 1);

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
    assert_eq!(upstream_gets(&s.registry, &after.digest).await, 1);
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

/// Cold pulls of fresh blobs from `base`, three at a time, while `event` runs and for `after`
/// beyond it; every pull must succeed. The slowest pull's time, and how many there were.
async fn slowest_cold_pull(
    base: String,
    digests: Vec<String>,
    event: impl std::future::Future<Output = ()>,
    after: Duration,
) -> (Duration, usize) {
    let digests = Arc::new(digests);
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let probes: Vec<_> = (0..3)
        .map(|_| {
            let (base, digests, next, stop) =
                (base.clone(), digests.clone(), next.clone(), stop.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut times = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(digest) = digests.get(i) else { break };
                    let started = std::time::Instant::now();
                    let result = pull(&http, &base, digest).await;
                    assert!(result.is_ok(), "cold pull of {digest}: {result:?}");
                    times.push(started.elapsed());
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                times
            })
        })
        .collect();
    event.await;
    tokio::time::sleep(after).await;
    stop.store(true, Ordering::Relaxed);
    let mut times = Vec::new();
    for probe in probes {
        times.extend(probe.await.unwrap());
    }
    let slowest = times.iter().max().copied().unwrap_or_default();
    (slowest, times.len())
}

/// A leader stopped gracefully (SIGTERM, as every rolling restart does) hands leadership to
/// its most up-to-date voter before it leaves: cold pulls on the other members go on with no
/// stall worth the name (an election without the handoff took 3.5-4 s: lease plus timeout).
#[tokio::test]
async fn a_stopping_leader_hands_over_and_cold_pulls_do_not_stall() {
    let pool: Vec<Blob> = (0..160).map(|i| blob(MIB, 900 + i)).collect();
    let refs: Vec<&Blob> = pool.iter().collect();
    let mut s = setup(&refs, None).await;
    s.cluster.wait_members(3).await.unwrap();
    let leader = s.cluster.leader().expect("a leader");
    let survivor = (leader + 1) % 3;
    let base = s.cluster.members[survivor].url();
    let digests: Vec<String> = pool.iter().map(|b| b.digest.clone()).collect();
    let (baseline, _) = slowest_cold_pull(
        base.clone(),
        digests[..40].to_vec(),
        tokio::time::sleep(Duration::from_millis(500)),
        Duration::ZERO,
    )
    .await;
    let stopping = std::time::Instant::now();
    let cluster = &mut s.cluster;
    let (slowest, pulls) = slowest_cold_pull(
        base,
        digests[40..].to_vec(),
        async {
            cluster.stop(leader).await.unwrap();
        },
        Duration::from_millis(1500),
    )
    .await;
    eprintln!(
        "cold pulls: slowest {baseline:?} before, {slowest:?} over {pulls} pulls across the leader's stop ({:?})",
        stopping.elapsed()
    );
    if std::env::var_os("WHARF_TEST_DUMP").is_some() {
        for i in 0..3 {
            eprintln!(
                "=== member {i}{}\n{}",
                if i == leader { " (leader)" } else { "" },
                s.cluster.full_log(i)
            );
        }
    }
    let new_leader = s.cluster.leader();
    assert!(
        new_leader.is_some_and(|l| l != leader),
        "no new leader; the old leader's log:\n{}\nthe survivor's:\n{}",
        s.cluster.log(leader),
        s.cluster.log(survivor)
    );
    assert!(
        slowest < Duration::from_millis(500),
        "a cold pull stalled {slowest:?} while the leader stopped; the leader's log:\n{}\nthe survivor's:\n{}",
        s.cluster.log(leader),
        s.cluster.log(survivor)
    );
}

/// Members in member `i`'s view of the cluster.
fn member_count(cluster: &WharfCluster, i: usize) -> Option<usize> {
    cluster.status(i)?["members"].as_array().map(Vec::len)
}

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
    let mut removals = 0;
    for i in cluster.running().collect::<Vec<_>>() {
        let metrics = reqwest::get(format!("{}/metrics", cluster.members[i].url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        removals += metrics
            .lines()
            .find_map(|l| l.strip_prefix("wharf_cluster_members_removed_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    assert_eq!(removals, 1);
    // The two left still agree and fetch once.
    herd(&cluster, 4, &b.digest).await;

    // Back: it rejoins by itself.
    cluster.restart(follower).await.unwrap();
    cluster.wait_members(3).await.unwrap();
}
