//! What the cluster tests share: blobs, a three-member cluster over a real registry and S3,
//! pulls that check what they got, herds, and probes of how long cold pulls stall.

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
use wharf_testkit::sha256;
use wharf_testkit::wan::{LinkShape, WanLink};

pub const MIB: usize = 1024 * 1024;
pub const REPO: &str = "team/cluster";

pub struct Blob {
    pub data: Bytes,
    pub digest: String,
}

pub struct Setup {
    pub registry: Registry,
    _s3: S3Server,
    pub cluster: WharfCluster,
    _link: Option<WanLink>,
}

pub fn blob(len: usize, seed: u64) -> Blob {
    let data = random_bytes(len, seed);
    let digest = sha256(&data);
    Blob { data, digest }
}

/// A registry holding `blobs`, a moto bucket, and three members; `link` shapes the upstream.
pub async fn setup(blobs: &[&Blob], link: Option<LinkShape>) -> Setup {
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

pub fn blob_url(base: &str, digest: &str) -> String {
    format!("{base}/v2/{REPO}/blobs/{digest}")
}

/// GET a blob and check its digest; the error says how it failed.
pub async fn pull(http: &reqwest::Client, base: &str, digest: &str) -> Result<(), String> {
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

/// How many times the upstream sent `digest` (the pieces of one ranged fill add up to one;
/// a fetch cut short counts as one), once the registry's access log stops changing.
pub async fn upstream_fetches(registry: &Registry, digest: &str) -> usize {
    let path = format!("/v2/{REPO}/blobs/{digest}");
    let size = reqwest::Client::new()
        .head(format!("{}{path}", registry.url()))
        .send()
        .await
        .unwrap()
        .headers()["content-length"]
        .to_str()
        .unwrap()
        .parse::<u64>()
        .unwrap()
        .max(1);
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = registry.bytes_sent("GET", &path);
        if now == last {
            return usize::try_from(now.div_ceil(size)).unwrap();
        }
        last = now;
    }
}

/// `n` clients spread over the running members pull `digest` at once; every one must succeed.
pub async fn herd(cluster: &WharfCluster, n: usize, digest: &str) {
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

/// Cold pulls timed by [`cold_pulls`].
pub struct Pulls {
    pub slowest: Duration,
    pub median: Duration,
    pub count: usize,
}

impl Pulls {
    /// How much longer the slowest of these pulls took than the median pull of `baseline`
    /// (the same pulls with nothing happening): the stall an event caused, without what a
    /// loaded machine adds to every pull.
    pub fn stall_over(&self, baseline: &Pulls) -> Duration {
        self.slowest.saturating_sub(baseline.median)
    }
}

/// Cold pulls of fresh blobs from `base`, three at a time, while `event` runs and for `after`
/// beyond it; every pull must succeed.
pub async fn cold_pulls(
    base: String,
    digests: Vec<String>,
    event: impl std::future::Future<Output = ()>,
    after: Duration,
) -> Pulls {
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
    times.sort();
    Pulls {
        slowest: times.last().copied().unwrap_or_default(),
        median: times.get(times.len() / 2).copied().unwrap_or_default(),
        count: times.len(),
    }
}

/// Members in member `i`'s view of the cluster.
pub fn member_count(cluster: &WharfCluster, i: usize) -> Option<usize> {
    cluster.status(i)?["members"].as_array().map(Vec::len)
}

/// The counter `name` on each running member, from its `/metrics`.
pub async fn metric_per_member(cluster: &WharfCluster, name: &str) -> Vec<u64> {
    let mut values = Vec::new();
    for i in cluster.running().collect::<Vec<_>>() {
        let text = reqwest::get(format!("{}/metrics", cluster.members[i].url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        values.push(
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0),
        );
    }
    values
}

/// The sum of the counter `name` over the running members.
pub async fn metric_sum(cluster: &WharfCluster, name: &str) -> u64 {
    metric_per_member(cluster, name).await.iter().sum()
}
