//! Cluster herd: a 3-node wharf cluster (one S3 bucket) beside three independent distribution
//! proxies sharing one storage directory, each asked for one cold blob by a herd of clients
//! spread over its three nodes.

use std::path::PathBuf;
use std::time::Duration;

use wharf_testkit::cluster::WharfCluster;
use wharf_testkit::image::random_bytes;
use wharf_testkit::push::{PushAuth, Pusher};
use wharf_testkit::registry::{ProxyMode, Registry, RegistryOptions};
use wharf_testkit::s3::S3Server;

use crate::Args;
use crate::plot::Series;
use crate::scenarios::{Better, Figure, herd_times};

const REPO: &str = "bench/cluster-herd";
const BLOB_MIB: usize = 64;

pub async fn cluster_herd(
    args: &Args,
    upstream: &Registry,
    upstream_url: &str,
    link: &str,
    s3: &S3Server,
) -> anyhow::Result<(Vec<Figure>, Vec<Series>)> {
    // A fresh blob for each side, so each sees it cold.
    let pusher = Pusher::new(&upstream.url(), PushAuth::None);
    let mut digests = Vec::new();
    for seed in [71, 72] {
        let data = random_bytes(BLOB_MIB * 1024 * 1024, seed);
        let digest = wharf_testkit::sha256(&data);
        pusher.push_blob(REPO, data, &digest).await?;
        digests.push(digest);
    }

    eprintln!("== 3-node wharf cluster on S3");
    s3.create_bucket("bench-cluster").await?;
    let cluster =
        WharfCluster::start(&args.wharf_bin, 3, upstream_url, s3, "bench-cluster").await?;
    let urls: Vec<String> = cluster.members.iter().map(|m| m.url()).collect();
    let wharf = herd(args, upstream, &urls, &digests[0]).await?;
    drop(cluster);

    eprintln!("== 3 distribution proxies sharing one storage directory");
    let shared = tempfile::tempdir()?;
    let mut proxies = Vec::new();
    for _ in 0..3 {
        proxies.push(
            Registry::start(RegistryOptions {
                proxy: Some(ProxyMode {
                    remote_url: upstream_url.to_string(),
                    username: None,
                    password: None,
                }),
                root_dir: Some(PathBuf::from(shared.path())),
                ..RegistryOptions::default()
            })
            .await?,
        );
    }
    let urls: Vec<String> = proxies.iter().map(Registry::url).collect();
    let distribution = herd(args, upstream, &urls, &digests[1]).await?;
    drop(proxies);

    let name = format!("3 nodes, herd {}×{BLOB_MIB} MiB, {link}", args.herd_clients);
    let figure = |what: &str, unit: &str, w: f64, d: f64| Figure {
        name: format!("{name}: {what}"),
        unit: unit.into(),
        wharf: w,
        wharf_s3: None,
        distribution: d,
        better: Better::Lower,
    };
    let figures = vec![
        figure("upstream GETs", "count", wharf.gets, distribution.gets),
        figure("completion p50", "s", wharf.p50, distribution.p50),
        figure("completion p99", "s", wharf.p99, distribution.p99),
    ];
    let series = vec![
        Series::new("wharf, 3-node cluster", wharf.samples),
        Series::new("distribution ×3, shared directory", distribution.samples),
    ];
    Ok((figures, series))
}

struct Herd {
    gets: f64,
    p50: f64,
    p99: f64,
    samples: Vec<f64>,
}

/// `args.herd_clients` clients, spread over `urls`, GET one cold blob at once.
async fn herd(
    args: &Args,
    upstream: &Registry,
    urls: &[String],
    digest: &str,
) -> anyhow::Result<Herd> {
    let path = format!("/v2/{REPO}/blobs/{digest}");
    let before = upstream.count_requests("GET", &path);
    let (done, samples) = herd_times(urls, &path, args.herd_clients).await?;
    // distribution logs a request when it ends, and copies to storage in the background.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let gets = (upstream.count_requests("GET", &path) - before) as f64;
    let herd = Herd {
        gets,
        p50: done.value_at_quantile(0.5) as f64 / 1000.0,
        p99: done.value_at_quantile(0.99) as f64 / 1000.0,
        samples,
    };
    eprintln!(
        "  cluster herd: {} upstream GETs, p50 {:.2}s, p99 {:.2}s",
        herd.gets, herd.p50, herd.p99
    );
    Ok(herd)
}
