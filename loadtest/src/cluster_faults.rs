//! `--cluster-faults`: how long cold fetches stall when the Raft leader of a 3-node cluster
//! goes away, gracefully (SIGTERM: the handoff) and by a crash (SIGKILL: an election), against
//! the same cluster's cold fetches with nothing happening (the anchor of the same run); then
//! relay fan-out: nine nodes and eighteen clients on one fresh blob, the bytes each node
//! streamed to its peers, in copies of the blob.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use wharf_testkit::cluster::WharfCluster;
use wharf_testkit::image::random_bytes;
use wharf_testkit::push::{PushAuth, Pusher};
use wharf_testkit::registry::{Registry, RegistryOptions};
use wharf_testkit::s3::S3Server;
use wharf_testkit::wan::{LinkShape, WanLink};

use crate::Args;
use crate::load::get_ok;

const REPO: &str = "bench/cluster-faults";
const BLOBS: usize = 240;
const BLOB_BYTES: usize = 1024 * 1024;

/// Cold pulls of one phase: how many, the median and the slowest.
struct Phase {
    name: &'static str,
    pulls: usize,
    median: Duration,
    slowest: Duration,
}

pub async fn cluster_faults(args: &Args) -> anyhow::Result<()> {
    let registry = Registry::start(RegistryOptions::default()).await?;
    let pusher = Pusher::new(&registry.url(), PushAuth::None);
    let mut digests = Vec::new();
    for seed in 0..BLOBS {
        let data = random_bytes(BLOB_BYTES, 5000 + seed as u64);
        let digest = wharf_testkit::sha256(&data);
        pusher.push_blob(REPO, data, &digest).await?;
        digests.push(digest);
    }
    let s3 = S3Server::start().await?;
    s3.create_bucket("bench-faults").await?;
    let mut cluster =
        WharfCluster::start(&args.wharf_bin, 3, &registry.url(), &s3, "bench-faults").await?;
    cluster.wait_members(3).await?;
    let mut fresh = digests.into_iter();
    let mut take = |n: usize| fresh.by_ref().take(n).collect::<Vec<_>>();
    let mut phases = Vec::new();

    let base = cluster.members[0].url();
    phases.push(
        probe(
            "baseline",
            &base,
            take(60),
            tokio::time::sleep(Duration::from_secs(3)),
        )
        .await,
    );

    let (leader, base) = leader_and_other(&cluster)?;
    phases.push(
        probe("leader stopped (SIGTERM)", &base, take(80), async {
            let _ = cluster.stop(leader).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
        })
        .await,
    );
    cluster.restart(leader).await?;
    cluster.wait_members(3).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (leader, base) = leader_and_other(&cluster)?;
    phases.push(
        probe("leader killed (SIGKILL)", &base, take(100), async {
            cluster.kill(leader);
            tokio::time::sleep(Duration::from_secs(6)).await;
        })
        .await,
    );

    drop(cluster);
    let anchor = phases[0].median.as_secs_f64().max(1e-6);
    println!(
        "| phase | cold 1 MiB pulls | median (ms) | slowest (ms) | slowest vs baseline median |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    for p in &phases {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.1}x |",
            p.name,
            p.pulls,
            p.median.as_secs_f64() * 1000.0,
            p.slowest.as_secs_f64() * 1000.0,
            p.slowest.as_secs_f64() / anchor
        );
    }
    relay_fan_out(args, &registry, &s3).await
}

/// Nine nodes, eighteen clients on one fresh 64 MiB blob behind a 64 MB/s link: what each
/// node streamed to its peers.
async fn relay_fan_out(args: &Args, registry: &Registry, s3: &S3Server) -> anyhow::Result<()> {
    const RELAY_BYTES: usize = 64 * 1024 * 1024;
    let data = random_bytes(RELAY_BYTES, 6000);
    let digest = wharf_testkit::sha256(&data);
    Pusher::new(&registry.url(), PushAuth::None)
        .push_blob(REPO, data, &digest)
        .await?;
    let shape = LinkShape {
        bytes_per_sec: 64_000_000,
        rtt: Duration::from_millis(2),
        cut_every: None,
        per_connection: None,
    };
    let link = WanLink::start(registry.host(), shape).await?;
    s3.create_bucket("bench-relay").await?;
    let cluster = WharfCluster::start(&args.wharf_bin, 9, &link.url(), s3, "bench-relay").await?;
    let started = Instant::now();
    let clients: Vec<_> = (0..18)
        .map(|i| {
            let url = format!("{}/v2/{REPO}/blobs/{digest}", cluster.members[i % 9].url());
            tokio::spawn(async move { get_ok(&reqwest::Client::new(), &url).await })
        })
        .collect();
    for client in clients {
        client.await??;
    }
    let elapsed = started.elapsed();
    let path = format!("/v2/{REPO}/blobs/{digest}");
    let mut copies = Vec::new();
    for i in 0..9 {
        let text = reqwest::get(format!("{}/metrics", cluster.members[i].url()))
            .await?
            .text()
            .await?;
        let served: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("wharf_cluster_peer_bytes_served_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        copies.push(served / RELAY_BYTES as f64);
    }
    copies.sort_by(|a, b| b.total_cmp(a));
    println!(
        "\nrelay fan-out: 9 nodes, 18 clients, one 64 MiB blob: all done in {:.2} s, {} upstream GET(s); blob copies each node streamed to peers, most first: {}",
        elapsed.as_secs_f64(),
        registry.count_requests("GET", &path),
        copies
            .iter()
            .map(|c| format!("{c:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// The leader's index, and the URL of a member that is not the leader.
fn leader_and_other(cluster: &WharfCluster) -> anyhow::Result<(usize, String)> {
    let leader = cluster
        .leader()
        .ok_or_else(|| anyhow::anyhow!("no leader"))?;
    Ok((leader, cluster.members[(leader + 1) % 3].url()))
}

/// Three clients pulling fresh blobs from `base` one after another while `event` runs.
async fn probe(
    name: &'static str,
    base: &str,
    digests: Vec<String>,
    event: impl std::future::Future<Output = ()>,
) -> Phase {
    let digests = Arc::new(digests);
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (base, digests, next, stop) = (
                base.to_string(),
                digests.clone(),
                next.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut times = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let Some(digest) = digests.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        break;
                    };
                    let started = Instant::now();
                    let url = format!("{base}/v2/{REPO}/blobs/{digest}");
                    if let Err(e) = get_ok(&http, &url).await {
                        eprintln!("{name}: {digest}: {e}");
                    }
                    times.push(started.elapsed());
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                times
            })
        })
        .collect();
    event.await;
    stop.store(true, Ordering::Relaxed);
    let mut times = Vec::new();
    for client in clients {
        times.extend(client.await.unwrap_or_default());
    }
    times.sort();
    Phase {
        name,
        pulls: times.len(),
        median: times.get(times.len() / 2).copied().unwrap_or_default(),
        slowest: times.last().copied().unwrap_or_default(),
    }
}
