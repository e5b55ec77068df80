//! Cold content on a long path: the upstream behind an emulated link (200 MB/s in all, 25 MB/s
//! for one connection, 20 ms a round trip, as one TCP stream over a long path gets), and for
//! each blob size one plain stream over it, wharf and distribution's proxy each fetching the
//! blob cold through a link of their own; the time to the last MiB of a cold blob; the bytes
//! the upstream sent per blob; wharf's resident memory while it fills the largest one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use sha2::Digest as _;
use wharf_testkit::push::{PushAuth, Pusher};
use wharf_testkit::registry::{Registry, RegistryOptions};
use wharf_testkit::wan::{LinkShape, WanLink};

use crate::Args;
use crate::mirrors::Mirror;

const MIB: usize = 1024 * 1024;
const REPO: &str = "bench/cold";

/// A fresh link over the long path to `upstream`, and `which` mirror behind it (none for
/// "one stream"): the base URL to ask.
async fn over_long_path(
    args: &Args,
    upstream: &Registry,
    which: &str,
) -> anyhow::Result<(WanLink, Option<Mirror>, String)> {
    let link = WanLink::start(upstream.host(), LinkShape::long_path()).await?;
    let mirror = match which {
        "wharf" => Some(Mirror::wharf(&args.wharf_bin, &link.url(), None).await?),
        "distribution" => Some(Mirror::distribution(&link.url()).await?),
        _ => None,
    };
    let base = mirror.as_ref().map_or(link.url(), Mirror::url);
    Ok((link, mirror, base))
}

/// One fetch of a cold blob: how long, how many bytes the link carried, the peak RSS (wharf).
struct Fetch {
    seconds: f64,
    carried: u64,
    peak_rss_kib: Option<u64>,
}

/// GET `url` (with `range`), check the body's digest (whole reads) and time it.
async fn timed_get(url: &str, range: Option<String>, digest: Option<&str>) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut request = reqwest::Client::new().get(url);
    if let Some(range) = range {
        request = request.header("range", range);
    }
    let response = request.send().await?;
    anyhow::ensure!(
        response.status().is_success(),
        "GET {url}: {}",
        response.status()
    );
    let mut hasher = sha2::Sha256::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        hasher.update(&chunk?);
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(digest) = digest {
        let got = format!("sha256:{}", hex::encode(hasher.finalize()));
        anyhow::ensure!(got == digest, "GET {url}: digest {got}, expected {digest}");
    }
    Ok(seconds)
}

/// Fetch the blob through `mirror` (or directly with `None`) over its own fresh link.
async fn fetch_cold(
    args: &Args,
    upstream: &Registry,
    which: &str,
    digest: &str,
) -> anyhow::Result<Fetch> {
    let (link, mirror, base) = over_long_path(args, upstream, which).await?;
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = mirror
        .as_ref()
        .and_then(|m| m.pid())
        .filter(|_| which == "wharf")
        .map(|pid| {
            let (peak, done) = (peak.clone(), done.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    if let Some(rss) = wharf_testkit::registry::rss_kib(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        });
    let url = format!("{base}/v2/{REPO}/blobs/{digest}");
    let seconds = timed_get(&url, None, Some(digest)).await?;
    done.store(true, Ordering::Relaxed);
    if let Some(sampler) = sampler {
        sampler.await?;
    }
    // Let the mirror finish storing before the link's count is read.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(Fetch {
        seconds,
        carried: link.carried(),
        peak_rss_kib: (which == "wharf").then(|| peak.load(Ordering::Relaxed)),
    })
}

/// Run the comparison and print it as Markdown tables.
pub async fn cold_path(args: &Args) -> anyhow::Result<()> {
    let upstream = Registry::start(RegistryOptions::default()).await?;
    let pusher = Pusher::new(&upstream.url(), PushAuth::None);
    let mut blobs = Vec::new();
    for (i, mib) in args.cold_mib.iter().enumerate() {
        let data = wharf_testkit::image::random_bytes(mib * MIB, 40 + i as u64);
        let digest = wharf_testkit::sha256(&data);
        pusher.push_blob(REPO, data, &digest).await?;
        blobs.push((*mib, digest));
    }
    println!(
        "\n| cold blob over the long path (200 MB/s, 25 MB/s a connection, 20 ms) | seconds | MB/s | vs one stream | upstream bytes / size | peak RSS MiB |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (mib, digest) in &blobs {
        let size = (mib * MIB) as f64;
        let mut one_stream = None;
        for which in ["one stream", "wharf", "distribution"] {
            let fetch = fetch_cold(args, &upstream, which, digest).await?;
            let anchor = *one_stream.get_or_insert(fetch.seconds);
            println!(
                "| {mib} MiB, {which} | {:.2} | {:.0} | {:.2}x | {:.3} | {} |",
                fetch.seconds,
                size / fetch.seconds / 1e6,
                anchor / fetch.seconds,
                fetch.carried as f64 / size,
                fetch
                    .peak_rss_kib
                    .map_or("-".to_string(), |kib| format!("{:.0}", kib as f64 / 1024.0)),
            );
        }
    }
    // The last MiB of the first (cold) blob, as a lazy-pulling snapshotter or the last of
    // containerd's chunk requests asks for it.
    let (mib, digest) = blobs
        .first()
        .ok_or_else(|| anyhow::anyhow!("no blob sizes"))?;
    println!("\n| last MiB of a cold {mib} MiB blob | seconds |");
    println!("| --- | ---: |");
    for which in ["one stream", "wharf", "distribution"] {
        let (_link, _mirror, base) = over_long_path(args, &upstream, which).await?;
        let url = format!("{base}/v2/{REPO}/blobs/{digest}");
        let from = mib * MIB - MIB;
        let range = format!("bytes={from}-{}", mib * MIB - 1);
        let seconds = timed_get(&url, Some(range), None).await?;
        println!("| {which} | {seconds:.3} |");
    }
    Ok(())
}
