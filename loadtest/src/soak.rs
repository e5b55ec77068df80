//! Chaos soak: three wharf nodes on one S3 bucket, pulled by many clients that verify every
//! byte, while a seeded random schedule kills (SIGKILL) and stops (SIGTERM) nodes, partitions
//! them, stops S3 and the upstream, and a WAN link cuts upstream connections. A checker then
//! asserts that nothing corrupt was ever delivered as complete, every pull eventually
//! succeeded, the upstream served each blob at most twice per fault window (outside
//! partitions, where a cut-off node fetches alone by design, and S3 outages, where content
//! passes through uncached), and nothing was left behind:
//! no downloads or leases, no files in `.spool`, no open multipart uploads but those of nodes
//! SIGKILLed mid-upload (which the bucket's lifecycle rule aborts).
//! `--seed` reproduces a run's schedule.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use sha2::Digest as _;
use wharf_testkit::cluster::WharfCluster;
use wharf_testkit::image::random_bytes;
use wharf_testkit::push::{PushAuth, Pusher};
use wharf_testkit::registry::{Registry, RegistryOptions};
use wharf_testkit::s3::S3Server;
use wharf_testkit::wan::{LinkShape, WanLink};

use crate::Args;

const REPO: &str = "soak/images";
const BUCKET: &str = "soak";
const CLIENTS: usize = 8;
/// A pull that has not succeeded this long after it began is lost.
const PULL_DEADLINE: Duration = Duration::from_secs(180);
/// The autopilot runs with a timeout just past the longest fault (8 s down, then a restart):
/// it must remove nobody, however the faults fall.
const DEAD_MEMBER_TIMEOUT_SECS: u64 = 15;

/// xorshift64: the schedule and the clients' choices, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn secs(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from * 1000 + self.below((to - from) * 1000))
    }
}

#[derive(Clone)]
struct Blob {
    digest: String,
    size: u64,
}

/// The blobs clients pull: a base set, and fresh ones pushed at each fault so that every
/// fault window has cold fetches in flight while it strikes.
type Blobs = Arc<Mutex<Vec<Blob>>>;

fn snapshot(blobs: &Blobs) -> Vec<Blob> {
    blobs.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Push a fresh blob of `mib` MiB to the upstream and add it to the set.
async fn push_fresh(pusher: &Pusher, blobs: &Blobs, mib: usize, seed: u64) -> anyhow::Result<()> {
    let data = random_bytes(mib * 1024 * 1024 + 7, seed);
    let digest = wharf_testkit::sha256(&data);
    pusher.push_blob(REPO, data.clone(), &digest).await?;
    blobs.lock().unwrap_or_else(|p| p.into_inner()).push(Blob {
        digest,
        size: data.len() as u64,
    });
    Ok(())
}

#[derive(Default)]
struct Tally {
    pulls: AtomicU64,
    failed_attempts: AtomicU64,
    corrupted: AtomicU64,
    lost: AtomicU64,
    bytes: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    KillNode,
    StopNode,
    Partition,
    StopS3,
    StopUpstream,
    LinkCutsOnly,
}

/// One fault window: from a fault's start to the next one's.
struct Window {
    fault: Fault,
    /// Bytes the upstream sent of each blob so far (pieces of one ranged fill add up to one
    /// copy).
    sent_before: Vec<u64>,
}

pub async fn soak(args: &Args, minutes: f64, seed: u64) -> anyhow::Result<()> {
    let mut rng = Rng(seed.max(1));
    eprintln!("== chaos soak: {minutes} min, seed {seed}");
    let mut upstream = Registry::start(RegistryOptions::default()).await?;
    let pusher = Pusher::new(&upstream.url(), PushAuth::None);
    let blobs: Blobs = Arc::default();
    for (i, mib) in [1usize, 3, 6, 12, 24, 2, 8, 16, 4, 32]
        .into_iter()
        .enumerate()
    {
        push_fresh(&pusher, &blobs, mib, seed.wrapping_add(i as u64)).await?;
    }
    // Fast, but cutting a connection every 40 MiB it carries.
    let link = WanLink::start(
        upstream.host(),
        LinkShape {
            bytes_per_sec: 200_000_000,
            rtt: Duration::from_millis(2),
            cut_every: Some(40 * 1024 * 1024),
            per_connection: None,
        },
    )
    .await?;
    let mut s3 = S3Server::start().await?;
    s3.create_bucket(BUCKET).await?;
    let mut cluster = WharfCluster::start_configured(
        &args.wharf_bin,
        3,
        &link.url(),
        &s3,
        BUCKET,
        &format!("[cluster]\ndead_member_timeout_secs = {DEAD_MEMBER_TIMEOUT_SECS}\n"),
    )
    .await?;
    let urls: Arc<Vec<String>> = Arc::new(cluster.members.iter().map(|m| m.url()).collect());

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (blobs, urls, tally, stop) =
                (blobs.clone(), urls.clone(), tally.clone(), stop.clone());
            let seed = rng.next() ^ c as u64;
            tokio::spawn(async move { client(seed, &blobs, &urls, &tally, &stop).await })
        })
        .collect();

    let sent = |upstream: &Registry, blobs: &[Blob]| -> Vec<u64> {
        blobs
            .iter()
            .map(|b| upstream.bytes_sent("GET", &format!("/v2/{REPO}/blobs/{}", b.digest)))
            .collect()
    };
    let resumes = |cluster: &WharfCluster, blobs: &[Blob]| -> Vec<usize> {
        let logs: Vec<String> = (0..cluster.members.len()).map(|i| cluster.log(i)).collect();
        blobs
            .iter()
            .map(|b| {
                logs.iter()
                    .flat_map(|l| l.lines())
                    .filter(|l| l.contains("broke off; resuming") && l.contains(&b.digest))
                    .count()
            })
            .collect()
    };

    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(minutes * 60.0);
    let mut windows: Vec<Window> = Vec::new();
    let mut peak_rss = [0u64; 3];
    // A SIGKILLed node cannot abort its multipart upload (the bucket's lifecycle rule does);
    // moto forgets everything when it restarts.
    let mut kills_since_s3_restart = 0usize;
    while Instant::now() < deadline {
        let fault = match rng.below(6) {
            0 => Fault::KillNode,
            1 => Fault::StopNode,
            2 => Fault::Partition,
            3 => Fault::StopS3,
            4 => Fault::StopUpstream,
            _ => Fault::LinkCutsOnly,
        };
        // Fresh blobs, pushed before the snapshot: their fetches count in this window.
        for k in 0..2u64 {
            let mib = [4usize, 16, 32][rng.below(3) as usize];
            push_fresh(&pusher, &blobs, mib, rng.next() ^ k).await?;
        }
        let known = snapshot(&blobs);
        windows.push(Window {
            fault,
            sent_before: sent(&upstream, &known),
        });
        let node = rng.below(3) as usize;
        let hold = rng.secs(2, 8);
        eprintln!(
            "[{:>5.1}s] {fault:?} (node {node}, {hold:?}); pulls so far {}",
            started.elapsed().as_secs_f64(),
            tally.pulls.load(Ordering::Relaxed)
        );
        match fault {
            Fault::KillNode => {
                kills_since_s3_restart += 1;
                cluster.kill(node);
                tokio::time::sleep(hold).await;
                cluster.restart(node).await?;
            }
            Fault::StopNode => {
                cluster.stop(node).await?;
                tokio::time::sleep(hold).await;
                cluster.restart(node).await?;
            }
            Fault::Partition => {
                cluster.partition(node)?;
                tokio::time::sleep(hold).await;
                cluster.heal(node)?;
            }
            Fault::StopS3 => {
                kills_since_s3_restart = 0;
                s3.stop();
                tokio::time::sleep(hold).await;
                s3.restart().await?;
                s3.create_bucket(BUCKET).await?;
            }
            Fault::StopUpstream => {
                upstream.stop();
                tokio::time::sleep(hold).await;
                upstream.restart().await?;
            }
            Fault::LinkCutsOnly => tokio::time::sleep(hold).await,
        }
        for (i, peak) in peak_rss.iter_mut().enumerate() {
            *peak = (*peak).max(cluster.rss_kib(i).unwrap_or(0));
        }
        // Let the cluster settle (a restarted node rejoins) before the next fault.
        let _ = cluster.wait_members(3).await;
        tokio::time::sleep(rng.secs(2, 6)).await;
    }
    let known = snapshot(&blobs);
    windows.push(Window {
        fault: Fault::LinkCutsOnly,
        sent_before: sent(&upstream, &known),
    });
    // Faults are over: let every pull under way finish, then stop the clients.
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await?;
    }
    let settled = wharf_testkit::wait_until(Duration::from_secs(30), || {
        let idle = (0..3).all(|i| spool_files(&cluster, i) == 0)
            && (0..3).all(|i| {
                cluster
                    .status(i)
                    .is_some_and(|s| s["leases"].as_array().is_some_and(|l| l.is_empty()))
            });
        async move { idle }
    })
    .await;
    let members_back = cluster.wait_members(3).await.is_ok();
    let mut removed = 0u64;
    for i in cluster.running().collect::<Vec<_>>() {
        let Ok(response) = reqwest::get(format!("{}/metrics", cluster.members[i].url())).await
        else {
            continue;
        };
        removed += response
            .text()
            .await?
            .lines()
            .find_map(|l| l.strip_prefix("wharf_cluster_members_removed_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    let open_uploads = s3
        .client()
        .list_multipart_uploads()
        .bucket(BUCKET)
        .send()
        .await
        .map(|r| r.uploads().len())
        .unwrap_or(usize::MAX);

    // Fetches per blob per window: the bytes the upstream sent of it over its size, rounded
    // (a piece or body cut by the link and resumed sends a little more than once; a fetch
    // killed mid-way and made again, 1.5 times or more).
    let end = windows.pop().expect("the closing snapshot");
    let known_sizes: Vec<u64> = snapshot(&blobs).iter().map(|b| b.size).collect();
    // By design a node cut off from the quorum fetches alone, and while S3 is down every
    // request passes through from the upstream uncached: those windows are reported apart.
    let mut max_quorum = 0usize;
    let mut max_partition = 0usize;
    let mut max_s3_down = 0usize;
    for (w, window) in windows.iter().enumerate() {
        let next = windows.get(w + 1).unwrap_or(&end);
        // Blobs pushed later are absent from this window's snapshot: they count from zero.
        for b in 0..window.sent_before.len() {
            let got = next.sent_before[b].saturating_sub(window.sent_before[b]);
            let size = known_sizes.get(b).copied().unwrap_or(u64::MAX).max(1);
            let fetches = (got as f64 / size as f64).round() as usize;
            let max = match window.fault {
                Fault::Partition => &mut max_partition,
                Fault::StopS3 => &mut max_s3_down,
                _ => &mut max_quorum,
            };
            *max = (*max).max(fetches);
        }
    }
    let faults = windows.len();
    let count = |f: Fault| windows.iter().filter(|w| w.fault == f).count();
    let resumed_total: usize = resumes(&cluster, &snapshot(&blobs)).iter().sum();
    let (pulls, corrupted, lost) = (
        tally.pulls.load(Ordering::Relaxed),
        tally.corrupted.load(Ordering::Relaxed),
        tally.lost.load(Ordering::Relaxed),
    );
    println!("\n## Chaos soak (seed {seed}, {minutes} min)\n");
    println!("| figure | value |\n| --- | --- |");
    println!(
        "| faults injected | {faults}: {} kill, {} SIGTERM, {} partition, {} S3 stop, {} upstream stop, {} link cuts only; link cut every 40 MiB throughout ({resumed_total} resumes) |",
        count(Fault::KillNode),
        count(Fault::StopNode),
        count(Fault::Partition),
        count(Fault::StopS3),
        count(Fault::StopUpstream),
        count(Fault::LinkCutsOnly)
    );
    println!(
        "| pulls completed (every byte verified) | {pulls} ({:.1} GiB) |",
        tally.bytes.load(Ordering::Relaxed) as f64 / (1u64 << 30) as f64
    );
    println!(
        "| failed attempts, retried | {} |",
        tally.failed_attempts.load(Ordering::Relaxed)
    );
    println!("| corrupted bodies delivered as complete | {corrupted} |");
    println!("| pulls never completed | {lost} |");
    println!(
        "| max upstream fetches of a blob in a fault window, quorum and S3 kept | {max_quorum} |"
    );
    println!(
        "| max upstream fetches of a blob in a partition window (cut-off node fetches alone) | {max_partition} |"
    );
    println!(
        "| max upstream fetches of a blob in an S3-outage window (passed through uncached) | {max_s3_down} |"
    );
    println!(
        "| after the faults: downloads, leases and .spool files drained | {} |",
        if settled { "yes" } else { "NO" }
    );
    println!(
        "| after the faults: all 3 members back; removed by the autopilot (dead_member_timeout_secs = {DEAD_MEMBER_TIMEOUT_SECS}, past every fault) | {}; {removed} |",
        if members_back { "yes" } else { "NO" }
    );
    println!(
        "| multipart uploads left open in S3 | {open_uploads} ({kills_since_s3_restart} SIGKILLs since S3 last restarted) |"
    );
    println!(
        "| peak RSS per node, MiB | {} |",
        peak_rss
            .iter()
            .map(|k| format!("{:.0}", *k as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let logs = || {
        (0..3)
            .map(|i| cluster.log(i))
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    anyhow::ensure!(corrupted == 0, "corrupt bodies delivered as complete");
    anyhow::ensure!(lost == 0, "{lost} pulls never completed");
    anyhow::ensure!(pulls > 0, "no pull completed");
    anyhow::ensure!(
        max_quorum <= 2,
        "a blob was fetched {max_quorum} times in one window; logs:\n{}",
        logs()
    );
    anyhow::ensure!(settled, "downloads, leases or spool files left behind");
    anyhow::ensure!(
        members_back && removed == 0,
        "the autopilot removed {removed} member(s), or not all 3 came back; logs:\n{}",
        logs()
    );
    anyhow::ensure!(
        open_uploads <= kills_since_s3_restart,
        "{open_uploads} multipart uploads left open, more than the {kills_since_s3_restart} SIGKILLs since S3 restarted (only a killed node cannot abort its upload)"
    );
    Ok(())
}

/// Files in a node's download spool.
fn spool_files(cluster: &WharfCluster, i: usize) -> usize {
    std::fs::read_dir(cluster.members[i].data_dir.join(".spool")).map_or(0, |d| d.count())
}

/// Pull random blobs from random nodes until told to stop; each pull is retried (on any node)
/// until it succeeds or [`PULL_DEADLINE`] passes.
async fn client(seed: u64, blobs: &Blobs, urls: &[String], tally: &Tally, stop: &AtomicBool) {
    let mut rng = Rng(seed.max(1));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    while !stop.load(Ordering::Relaxed) {
        // Half the pulls go to the newest blobs, which are cold while the current fault lasts.
        let blob = {
            let blobs = blobs.lock().unwrap_or_else(|p| p.into_inner());
            let len = blobs.len() as u64;
            let pick = if rng.below(2) == 0 {
                len.saturating_sub(1 + rng.below(2))
            } else {
                rng.below(len)
            };
            blobs[pick as usize].clone()
        };
        let blob = &blob;
        let began = Instant::now();
        loop {
            let url = format!(
                "{}/v2/{REPO}/blobs/{}",
                urls[rng.below(urls.len() as u64) as usize],
                blob.digest
            );
            match pull(&http, &url, blob).await {
                Pull::Ok => {
                    tally.pulls.fetch_add(1, Ordering::Relaxed);
                    tally.bytes.fetch_add(blob.size, Ordering::Relaxed);
                    break;
                }
                Pull::Corrupt => {
                    tally.corrupted.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Pull::Failed => {
                    tally.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    if began.elapsed() > PULL_DEADLINE {
                        tally.lost.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
    }
}

enum Pull {
    Ok,
    /// A 200 whose body was complete (every announced byte arrived, the stream ended cleanly)
    /// but did not hash to the digest: the one thing that must never happen.
    Corrupt,
    /// An error status, or a body cut off: the client would retry.
    Failed,
}

async fn pull(http: &reqwest::Client, url: &str, blob: &Blob) -> Pull {
    let Ok(response) = http.get(url).send().await else {
        return Pull::Failed;
    };
    if !response.status().is_success() {
        return Pull::Failed;
    }
    let mut hasher = sha2::Sha256::new();
    let mut len = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let Ok(chunk): Result<Bytes, _> = chunk else {
            return Pull::Failed;
        };
        len += chunk.len() as u64;
        hasher.update(&chunk);
    }
    if len != blob.size {
        // reqwest ends a body early only with an error; a short clean body is a lie too.
        return Pull::Corrupt;
    }
    if format!("sha256:{}", hex::encode(hasher.finalize())) != blob.digest {
        return Pull::Corrupt;
    }
    Pull::Ok
}
