//! `--cluster-quiet SECONDS`: a 3-node cluster under steady cold and warm pulls with no fault,
//! counting elections (Raft term changes) and reading the Raft round trip the heartbeat is
//! scaled from (`wharf_cluster_raft_rtt_seconds`). Run it beside the full test suite or the
//! chaos soak to see whether the election timing holds on a loaded machine: a spurious
//! election is a term change with nothing stopped, cut off or killed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use wharf_testkit::cluster::WharfCluster;
use wharf_testkit::image::random_bytes;
use wharf_testkit::push::{PushAuth, Pusher};
use wharf_testkit::registry::{Registry, RegistryOptions};
use wharf_testkit::s3::S3Server;

use crate::Args;
use crate::load::get_ok;

const REPO: &str = "bench/cluster-quiet";
const BLOB_BYTES: usize = 256 * 1024;

pub async fn cluster_quiet(args: &Args, seconds: u64) -> anyhow::Result<()> {
    let registry = Registry::start(RegistryOptions::default()).await?;
    let pusher = Pusher::new(&registry.url(), PushAuth::None);
    // About five cold pulls a second for the run, then warm ones.
    let blobs = usize::try_from(seconds.saturating_mul(5).clamp(50, 5000))?;
    let mut digests = Vec::new();
    for seed in 0..blobs {
        let data = random_bytes(BLOB_BYTES, 7000 + seed as u64);
        let digest = wharf_testkit::sha256(&data);
        pusher.push_blob(REPO, data, &digest).await?;
        digests.push(digest);
    }
    let s3 = S3Server::start().await?;
    s3.create_bucket("bench-quiet").await?;
    let cluster =
        WharfCluster::start(&args.wharf_bin, 3, &registry.url(), &s3, "bench-quiet").await?;
    let first_term = term(&cluster)?;
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let digests = Arc::new(digests);
    let clients: Vec<_> = (0..3)
        .map(|i| {
            let base = cluster.members[i].url();
            let (digests, next, stop, failures) = (
                digests.clone(),
                next.clone(),
                stop.clone(),
                failures.clone(),
            );
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let digest = &digests[n % digests.len()];
                    let url = format!("{base}/v2/{REPO}/blobs/{digest}");
                    if get_ok(&http, &url).await.is_err() {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            })
        })
        .collect();
    let started = Instant::now();
    let mut terms = BTreeSet::from([first_term]);
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Ok(t) = term(&cluster) {
            terms.insert(t);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
    let last_term = term(&cluster)?;
    let leader = cluster
        .leader()
        .ok_or_else(|| anyhow::anyhow!("no leader at the end"))?;
    let metrics = reqwest::get(format!("{}/metrics", cluster.members[leader].url()))
        .await?
        .text()
        .await?;
    let rtt = RoundTrips::parse(&metrics);
    println!(
        "cluster quiet for {seconds} s: {} pulls ({} failed), term {first_term} -> {last_term}: {} election(s) without a fault",
        next.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed),
        last_term.saturating_sub(first_term)
    );
    println!(
        "Raft round trips (leader's append-entries, {} calls): p50 <= {} ms, p99 <= {} ms, p99.9 <= {} ms, max bucket <= {} ms",
        rtt.count,
        ms(rtt.quantile(0.5)),
        ms(rtt.quantile(0.99)),
        ms(rtt.quantile(0.999)),
        ms(rtt.quantile(1.0)),
    );
    Ok(())
}

fn ms(seconds: Option<f64>) -> String {
    seconds.map_or("?".into(), |s| {
        if s.is_infinite() {
            "inf".into()
        } else {
            format!("{}", s * 1000.0)
        }
    })
}

/// The highest term any member reports.
fn term(cluster: &WharfCluster) -> anyhow::Result<u64> {
    cluster
        .running()
        .filter_map(|i| cluster.status(i)?["term"].as_u64())
        .max()
        .ok_or_else(|| anyhow::anyhow!("no member answered"))
}

/// The cumulative buckets of `wharf_cluster_raft_rtt_seconds`.
struct RoundTrips {
    buckets: Vec<(f64, u64)>,
    count: u64,
}

impl RoundTrips {
    fn parse(metrics: &str) -> RoundTrips {
        let mut buckets: Vec<(f64, u64)> = metrics
            .lines()
            .filter_map(|l| l.strip_prefix("wharf_cluster_raft_rtt_seconds_bucket{le=\""))
            .filter_map(|rest| {
                let (le, count) = rest.split_once("\"} ")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, count.trim().parse().ok()?))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let count = buckets.last().map_or(0, |b| b.1);
        RoundTrips { buckets, count }
    }

    /// The upper bound of the bucket holding quantile `q` (the highest non-empty one for 1.0).
    fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q * self.count as f64).ceil().max(1.0) as u64;
        self.buckets
            .iter()
            .find(|(_, cumulative)| *cumulative >= rank)
            .map(|(le, _)| *le)
    }
}
