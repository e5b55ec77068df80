//! The scenarios, each run against wharf and against distribution, and the results table.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use wharf_testkit::image::{Format, Image, big_image, image};
use wharf_testkit::push::{PushAuth, Pusher};
use wharf_testkit::registry::{Registry, RegistryOptions};
use wharf_testkit::s3::S3Server;
use wharf_testkit::wan::{LinkShape, WanLink};

use crate::Args;
use crate::load::{Load, blob_rate_and_cpu, get_ok, request_rate};
use crate::mirrors::Mirror;
use crate::plot::Series;

pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

#[derive(Serialize, Clone, Copy)]
pub enum Better {
    Lower,
    Higher,
}

#[derive(Serialize)]
pub struct Figure {
    pub name: String,
    pub unit: String,
    pub wharf: f64,
    /// wharf with its store in S3 (moto on loopback), when measured.
    pub wharf_s3: Option<f64>,
    pub distribution: f64,
    pub better: Better,
}

struct Seeds {
    cold: Image,
    herd: Image,
    warm: Image,
    /// Pulled across the emulated WAN.
    wan_image: Image,
    wan_herd: Image,
}

/// One mirror's measurements, in table order.
type Measured = Vec<(String, String, f64, Better)>;

/// Every scenario's figures, and the herd completion times across the link for the plot.
pub async fn run_all(args: &Args) -> anyhow::Result<(Vec<Figure>, Vec<Series>)> {
    eprintln!("starting the upstream (distribution) and seeding it...");
    let upstream = Registry::start(RegistryOptions::default()).await?;
    let pusher = Pusher::new(&upstream.url(), PushAuth::None);
    let seeds = Seeds {
        cold: image(Format::Docker, "bench-cold", "amd64", 4),
        herd: big_image(7, args.herd_mib * 1024 * 1024),
        warm: big_image(8, args.warm_blob_mib * 1024 * 1024),
        wan_image: big_image(41, 256 * 1024 * 1024),
        wan_herd: big_image(42, 64 * 1024 * 1024),
    };
    pusher.push_image("bench/cold", "v1", &seeds.cold).await?;
    pusher.push_image("bench/herd", "v1", &seeds.herd).await?;
    pusher.push_image("bench/warm", "v1", &seeds.warm).await?;
    let link = if args.no_wan {
        None
    } else {
        pusher
            .push_image("bench/wan-image", "v1", &seeds.wan_image)
            .await?;
        pusher
            .push_image("bench/wan-herd", "v1", &seeds.wan_herd)
            .await?;
        let shape = LinkShape {
            bytes_per_sec: args.wan_mb_per_s * 1_000_000,
            rtt: Duration::from_millis(args.wan_rtt_ms),
            cut_every: None,
            per_connection: None,
        };
        Some(WanLink::start(upstream.host(), shape).await?)
    };
    // The same link, but cutting a connection every `wan_cut_mib` it carries (injected errors).
    let cut_link = match &link {
        Some(link) if args.wan_cut_mib > 0 => {
            let shape = LinkShape {
                cut_every: Some(args.wan_cut_mib * 1024 * 1024),
                per_connection: None,
                ..link.shape
            };
            Some(WanLink::start(upstream.host(), shape).await?)
        }
        _ => None,
    };

    let s3 = if args.no_s3 {
        None
    } else {
        let server = S3Server::start().await?;
        server.create_bucket("bench").await?;
        Some(server)
    };
    let mut measured = Vec::new();
    let mut series = Vec::new();
    for which in ["wharf", "wharf-s3", "distribution"] {
        if which == "wharf-s3" && s3.is_none() {
            continue;
        }
        let mirror = start_mirror(args, which, &upstream.url(), s3.as_ref(), "bench").await?;
        eprintln!("== {} at {}", mirror.name(), mirror.url());
        let mut figures = measure(args, &mirror, &upstream, &seeds).await?;
        drop(mirror);
        if let Some(link) = &link {
            // A second, empty instance whose upstream is across the emulated WAN.
            let mirror = fresh_mirror(args, which, &link.url(), s3.as_ref(), "bench-wan").await?;
            eprintln!("== {} across the WAN link", mirror.name());
            let (wan_figures, samples) = measure_wan(args, &mirror, &upstream, &seeds).await?;
            figures.extend(wan_figures);
            series.push(Series::new(format!("{}, one node", mirror.name()), samples));
        }
        if let Some(link) = &cut_link {
            let mirror = fresh_mirror(args, which, &link.url(), s3.as_ref(), "bench-cut").await?;
            eprintln!("== {} across the link that cuts connections", mirror.name());
            figures.extend(measure_cuts(args, &mirror, &seeds).await?);
        }
        measured.push(figures);
    }
    let wharf = &measured[0];
    let distribution = &measured[measured.len() - 1];
    let wharf_s3 = (measured.len() == 3).then(|| &measured[1]);
    let mut figures: Vec<Figure> = wharf
        .iter()
        .zip(distribution)
        .enumerate()
        .map(|(i, (w, d))| Figure {
            name: w.0.clone(),
            unit: w.1.clone(),
            wharf: w.2,
            wharf_s3: wharf_s3.map(|m| m[i].2),
            distribution: d.2,
            better: w.3,
        })
        .collect();
    if let (Some(server), false) = (&s3, args.no_cluster) {
        let (upstream_url, link_name) = match &link {
            Some(l) => (
                l.url(),
                format!("{} MB/s, {} ms link", args.wan_mb_per_s, args.wan_rtt_ms),
            ),
            None => (upstream.url(), "loopback".to_string()),
        };
        let (cluster_figures, cluster_series) =
            crate::cluster::cluster_herd(args, &upstream, &upstream_url, &link_name, server)
                .await?;
        figures.extend(cluster_figures);
        series.extend(cluster_series);
    }
    Ok((figures, series))
}

/// An empty instance of `which` (its own bucket on S3) mirroring `upstream_url`.
async fn fresh_mirror(
    args: &Args,
    which: &str,
    upstream_url: &str,
    s3: Option<&S3Server>,
    bucket: &str,
) -> anyhow::Result<Mirror> {
    if let (Some(server), "wharf-s3") = (s3, which) {
        server.create_bucket(bucket).await?;
    }
    start_mirror(args, which, upstream_url, s3, bucket).await
}

async fn start_mirror(
    args: &Args,
    which: &str,
    upstream_url: &str,
    s3: Option<&S3Server>,
    bucket: &str,
) -> anyhow::Result<Mirror> {
    match (which, s3) {
        ("wharf", _) => Mirror::wharf(&args.wharf_bin, upstream_url, None).await,
        ("wharf-s3", Some(server)) => {
            Mirror::wharf(&args.wharf_bin, upstream_url, Some((server, bucket))).await
        }
        _ => Mirror::distribution(upstream_url).await,
    }
}

async fn measure(
    args: &Args,
    mirror: &Mirror,
    upstream: &Registry,
    seeds: &Seeds,
) -> anyhow::Result<Measured> {
    let mut out: Measured = Vec::new();
    let url = mirror.url();
    let http = reqwest::Client::new();

    // Cold pull: manifest by tag, then config and layers, one after another, as a client does.
    let before = upstream.count_matching("GET", "/v2/bench/cold/blobs/");
    let started = Instant::now();
    get_ok(&http, &format!("{url}/v2/bench/cold/manifests/v1")).await?;
    for blob in seeds.cold.blobs() {
        get_ok(&http, &format!("{url}/v2/bench/cold/blobs/{}", blob.digest)).await?;
    }
    let cold_secs = started.elapsed().as_secs_f64();
    // distribution writes its access-log line when a request ends; let its background copies finish.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let gets = upstream.count_matching("GET", "/v2/bench/cold/blobs/") - before;
    let amplification = gets as f64 / seeds.cold.blobs().len() as f64;
    eprintln!(
        "  cold pull: {gets} upstream blob GETs for {} blobs",
        seeds.cold.blobs().len()
    );
    out.push((
        "cold pull: upstream GETs per blob".into(),
        "ratio".into(),
        amplification,
        Better::Lower,
    ));
    out.push((
        "cold pull: time (manifest + 5 blobs)".into(),
        "s".into(),
        cold_secs,
        Better::Lower,
    ));

    // Herd: N clients, one cold blob, all at once.
    let layer = &seeds.herd.layers[0];
    let path = format!("/v2/bench/herd/blobs/{}", layer.digest);
    let before = upstream.count_requests("GET", &path);
    let rss_before = mirror.rss_kib().unwrap_or(0);
    let sampling = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampler = {
        let (sampling, peak, pid) = (sampling.clone(), peak.clone(), mirror.pid());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Some(rss) = pid.and_then(wharf_testkit::registry::rss_kib) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = Instant::now();
    let clients: Vec<_> = (0..args.herd_clients)
        .map(|i| {
            let url = format!("{url}{path}");
            let expect = layer.data.len() as u64;
            let digest = (i == 0).then(|| layer.digest.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let t0 = Instant::now();
                let response = client.get(&url).send().await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "herd GET {}",
                    response.status()
                );
                let mut stream = response.bytes_stream();
                let mut len = 0u64;
                let mut first_byte = None;
                let mut hasher = digest
                    .as_ref()
                    .map(|_| <sha2::Sha256 as sha2::Digest>::new());
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk?;
                    first_byte.get_or_insert_with(|| t0.elapsed());
                    len += chunk.len() as u64;
                    if let Some(h) = hasher.as_mut() {
                        sha2::Digest::update(h, &chunk);
                    }
                }
                anyhow::ensure!(len == expect, "herd body {len} bytes, expected {expect}");
                if let (Some(h), Some(d)) = (hasher, digest) {
                    let got = format!("sha256:{}", hex::encode(sha2::Digest::finalize(h)));
                    anyhow::ensure!(got == d, "herd body digest {got}");
                }
                Ok((t0.elapsed(), first_byte.unwrap_or_default()))
            })
        })
        .collect();
    let mut done = Histogram::<u64>::new(3)?;
    let mut ttfb = Histogram::<u64>::new(3)?;
    for c in clients {
        let (total, first) = c.await??;
        done.record(total.as_millis() as u64)?;
        ttfb.record(first.as_millis() as u64)?;
    }
    let herd_secs = started.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    sampler.await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let gets = upstream.count_requests("GET", &path) - before;
    eprintln!(
        "  herd: {gets} upstream GETs, all {} clients done in {herd_secs:.1}s",
        args.herd_clients
    );
    let herd = format!("herd {}×{} MiB", args.herd_clients, args.herd_mib);
    out.push((
        format!("{herd}: upstream GETs"),
        "count".into(),
        gets as f64,
        Better::Lower,
    ));
    out.push((
        format!("{herd}: time to first byte p50"),
        "s".into(),
        ms(ttfb.value_at_quantile(0.5)),
        Better::Lower,
    ));
    out.push((
        format!("{herd}: completion p50"),
        "s".into(),
        ms(done.value_at_quantile(0.5)),
        Better::Lower,
    ));
    out.push((
        format!("{herd}: completion p99"),
        "s".into(),
        ms(done.value_at_quantile(0.99)),
        Better::Lower,
    ));
    out.push((
        format!("{herd}: peak RSS"),
        "MiB".into(),
        peak.load(Ordering::Relaxed) as f64 / 1024.0,
        Better::Lower,
    ));

    // Warm manifests, by tag and by digest.
    let by_tag = format!("{url}/v2/bench/cold/manifests/v1");
    let by_digest = format!(
        "{url}/v2/bench/cold/manifests/{}",
        seeds.cold.manifest.digest
    );
    for (label, target) in [("by tag", by_tag), ("by digest", by_digest)] {
        get_ok(&http, &target).await?;
        let (rate, p99) =
            request_rate(&Load::plain(), &target, args.connections, args.seconds).await?;
        eprintln!("  warm manifest {label}: {rate:.0} req/s, p99 {p99:.2} ms");
        out.push((
            format!("warm manifest {label}, {} connections", args.connections),
            "req/s".into(),
            rate,
            Better::Higher,
        ));
        out.push((
            format!("warm manifest {label}: p99 latency"),
            "ms".into(),
            p99,
            Better::Lower,
        ));
    }

    // Warm blob throughput and the mirror's CPU per GB.
    let blob_url = format!("{url}/v2/bench/warm/blobs/{}", seeds.warm.layers[0].digest);
    get_ok(&http, &blob_url).await?;
    let (gb_per_s, cpu_per_gb) =
        blob_rate_and_cpu(&Load::plain(), mirror, &blob_url, args.seconds).await?;
    eprintln!("  warm blob: {gb_per_s:.2} GB/s, {cpu_per_gb:.2} CPU-s/GB");
    out.push((
        format!("warm {} MiB blob, 4 clients", args.warm_blob_mib),
        "GB/s".into(),
        gb_per_s,
        Better::Higher,
    ));
    out.push((
        "warm blob: mirror CPU per GB".into(),
        "CPU-s/GB".into(),
        cpu_per_gb,
        Better::Lower,
    ));
    Ok(out)
}

/// Cold pull of a big image and a herd of clients on one blob, upstream across the WAN link.
async fn measure_wan(
    args: &Args,
    mirror: &Mirror,
    upstream: &Registry,
    seeds: &Seeds,
) -> anyhow::Result<(Measured, Vec<f64>)> {
    let link = format!("{} MB/s, {} ms link", args.wan_mb_per_s, args.wan_rtt_ms);
    let url = mirror.url();
    let http = reqwest::Client::new();
    let image = &seeds.wan_image;
    let bytes: usize =
        image.manifest.body.len() + image.blobs().iter().map(|b| b.data.len()).sum::<usize>();
    let started = Instant::now();
    get_ok(&http, &format!("{url}/v2/bench/wan-image/manifests/v1")).await?;
    for blob in image.blobs() {
        get_ok(
            &http,
            &format!("{url}/v2/bench/wan-image/blobs/{}", blob.digest),
        )
        .await?;
    }
    let rate = bytes as f64 / 1e6 / started.elapsed().as_secs_f64();
    eprintln!("  cold pull across the link: {rate:.1} MB/s");

    let layer = &image_layer(&seeds.wan_herd);
    let path = format!("/v2/bench/wan-herd/blobs/{layer}");
    let before = upstream.count_requests("GET", &path);
    let (done, samples) = herd_times(&[url], &path, args.herd_clients).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let gets = upstream.count_requests("GET", &path) - before;
    eprintln!(
        "  herd across the link: p50 {:.2}s, {gets} upstream GETs",
        ms(done.value_at_quantile(0.5))
    );
    let herd = format!("herd {}×64 MiB, {link}", args.herd_clients);
    let figures = vec![
        (
            format!("cold pull of a 256 MiB image, {link}"),
            "MB/s".into(),
            rate,
            Better::Higher,
        ),
        (
            format!("{herd}: completion p50"),
            "s".into(),
            ms(done.value_at_quantile(0.5)),
            Better::Lower,
        ),
        (
            format!("{herd}: completion p99"),
            "s".into(),
            ms(done.value_at_quantile(0.99)),
            Better::Lower,
        ),
        (
            format!("{herd}: upstream GETs"),
            "count".into(),
            gets as f64,
            Better::Lower,
        ),
    ];
    Ok((figures, samples))
}

/// `clients` clients spread over `bases` GET `path` at once: their completion times, as a
/// histogram (ms) and in seconds.
pub async fn herd_times(
    bases: &[String],
    path: &str,
    clients: usize,
) -> anyhow::Result<(Histogram<u64>, Vec<f64>)> {
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let url = format!("{}{path}", bases[i % bases.len()]);
            tokio::spawn(async move {
                let t0 = Instant::now();
                get_ok(&reqwest::Client::new(), &url).await?;
                anyhow::Ok(t0.elapsed())
            })
        })
        .collect();
    let mut done = Histogram::<u64>::new(3)?;
    let mut samples = Vec::new();
    for task in tasks {
        let elapsed = task.await??;
        done.record(elapsed.as_millis() as u64)?;
        samples.push(elapsed.as_secs_f64());
    }
    Ok((done, samples))
}

/// Cold pull across a link that cuts connections mid-response, by a client that retries a
/// failed blob GET up to five times (as `docker pull` does): failed GETs the client saw, MB/s.
async fn measure_cuts(args: &Args, mirror: &Mirror, seeds: &Seeds) -> anyhow::Result<Measured> {
    let url = mirror.url();
    let http = reqwest::Client::new();
    let image = &seeds.wan_image;
    let bytes: usize =
        image.manifest.body.len() + image.blobs().iter().map(|b| b.data.len()).sum::<usize>();
    let started = Instant::now();
    get_ok(&http, &format!("{url}/v2/bench/wan-image/manifests/v1")).await?;
    let mut failed = 0;
    let mut complete = true;
    for blob in image.blobs() {
        let blob_url = format!("{url}/v2/bench/wan-image/blobs/{}", blob.digest);
        let mut succeeded = false;
        for _ in 0..5 {
            match get_verified(&http, &blob_url, &blob.digest).await {
                Ok(()) => {
                    succeeded = true;
                    break;
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("  client GET failed: {e:#}");
                }
            }
        }
        complete &= succeeded;
    }
    // A pull that never completed has no rate.
    let rate = if complete {
        bytes as f64 / 1e6 / started.elapsed().as_secs_f64()
    } else {
        0.0
    };
    eprintln!(
        "  cold pull across the cutting link: complete {complete}, {rate:.1} MB/s, {failed} failed client GETs"
    );
    let name = format!(
        "cold pull of a 256 MiB image, {} MB/s link cutting a connection every {} MiB",
        args.wan_mb_per_s, args.wan_cut_mib
    );
    Ok(vec![
        (
            format!("{name}: failed client GETs"),
            "count".into(),
            f64::from(failed),
            Better::Lower,
        ),
        (
            format!("{name}: rate (0 = never completed in 5 attempts a blob)"),
            "MB/s".into(),
            rate,
            Better::Higher,
        ),
    ])
}

/// GET a blob and check its digest.
async fn get_verified(http: &reqwest::Client, url: &str, digest: &str) -> anyhow::Result<()> {
    let response = http.get(url).send().await?;
    anyhow::ensure!(
        response.status().is_success(),
        "GET {url}: {}",
        response.status()
    );
    let body = response.bytes().await?;
    let got = wharf_testkit::sha256(&body);
    anyhow::ensure!(got == digest, "GET {url}: body digest {got}");
    Ok(())
}

fn image_layer(image: &Image) -> String {
    image.layers[0].digest.clone()
}

fn ms(v: u64) -> f64 {
    v as f64 / 1000.0
}

/// The results as a Markdown table; the ratio says how many times better wharf is.
pub fn markdown(figures: &[Figure]) -> String {
    let mut out = String::from(
        "| figure | unit | wharf (disk) | wharf (S3) | distribution proxy | wharf (disk) advantage |\n| --- | --- | ---: | ---: | ---: | ---: |\n",
    );
    for f in figures {
        let ratio = match f.better {
            Better::Higher if f.distribution > 0.0 => format!("{:.2}×", f.wharf / f.distribution),
            Better::Lower if f.wharf > 0.0 => format!("{:.2}×", f.distribution / f.wharf),
            _ => "–".into(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            f.name,
            f.unit,
            fmt(f.wharf),
            f.wharf_s3.map_or("–".into(), fmt),
            fmt(f.distribution),
            ratio
        ));
    }
    out.push_str("\nwharf advantage: distribution ÷ wharf where lower is better, wharf ÷ distribution where higher is better.\n");
    out
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}
