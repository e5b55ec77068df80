//! `wharf-loadtest`: wharf beside CNCF distribution's `proxy:` mode, on one machine, in one run.
//!
//! Starts on loopback: the upstream (distribution, seeded with synthetic images), wharf (the
//! release binary), and distribution as a pull-through proxy of the same upstream. Then runs
//! each scenario against both and prints a Markdown table with ratios (and JSON with `--json`).
//! Every loop is bounded in count and time; nothing leaves 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;
mod cluster_faults;
mod cluster_quiet;
mod cold_path;
mod floor;
mod load;
mod mirrors;
mod plot;
mod scenarios;
mod security;
mod soak;
mod tiers;
mod vs_nginx;

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Benchmark wharf beside distribution's proxy mode on loopback")]
pub struct Args {
    /// The wharf binary to measure.
    #[arg(long, default_value = "target/release/wharf")]
    wharf_bin: PathBuf,
    /// Concurrent clients in the herd scenario.
    #[arg(long, default_value_t = 16)]
    herd_clients: usize,
    /// Size of the herd blob, MiB.
    #[arg(long, default_value_t = 256)]
    herd_mib: usize,
    /// Size of the warm-throughput blob, MiB.
    #[arg(long, default_value_t = 50)]
    warm_blob_mib: usize,
    /// Connections for the request-rate scenarios.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds each request-rate or throughput scenario runs.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Skip wharf-on-S3 (which needs moto: `$WHARF_TEST_MOTO_SERVER` or `moto_server`).
    #[arg(long)]
    no_s3: bool,
    /// Skip the scenarios across the emulated WAN link.
    #[arg(long)]
    no_wan: bool,
    /// Emulated link between mirror and upstream: bandwidth towards the mirror, MB/s.
    #[arg(long, default_value_t = 100)]
    wan_mb_per_s: u64,
    /// Emulated link: added round-trip time, ms.
    #[arg(long, default_value_t = 20)]
    wan_rtt_ms: u64,
    /// Injected errors: a second link cuts a connection every this many MiB it carries
    /// (0: skip that scenario).
    #[arg(long, default_value_t = 64)]
    wan_cut_mib: u64,
    /// Skip the cluster herd (3 wharf nodes beside 3 distribution proxies; needs S3).
    #[arg(long)]
    no_cluster: bool,
    /// Instead of the benchmarks: what TLS, auth+policy and metrics cost on the warm hot paths.
    #[arg(long)]
    security: bool,
    /// Instead of the benchmarks: the hot tier over S3 against disk and S3, and a herd through
    /// two tiers against one, across emulated WAN links (needs moto).
    #[arg(long)]
    tiers: bool,
    /// Instead of the benchmarks: how long cold fetches stall when a 3-node cluster's leader
    /// is stopped (SIGTERM) and killed (SIGKILL), against the same cluster's baseline (needs moto).
    #[arg(long)]
    cluster_faults: bool,
    /// Instead of the benchmarks: a 3-node cluster under steady pulls for this many seconds
    /// with no fault: elections counted (none should happen) and the Raft round trip the
    /// heartbeat is scaled from (needs moto). Run it beside the test suite or the soak.
    #[arg(long, value_name = "SECONDS")]
    cluster_quiet: Option<u64>,
    /// Instead of the benchmarks: the warm path beside nginx serving the same bytes as files
    /// (manifest req/s by tag and digest with wrk, blob GB/s and CPU-s/GB, KiB per idle
    /// connection at 10,000); needs wrk and nginx.
    #[arg(long)]
    vs_nginx: bool,
    /// With --vs-nginx: neither server writes access lines (nginx `access_log off`, wharf
    /// `wharf::access=off`).
    #[arg(long)]
    no_access_log: bool,
    /// With --vs-nginx: rounds of the manifest phases, nginx and wharf alternating within each
    /// round; the table gives each server's median and the median of the rounds' ratios.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// (Internal, run by --vs-nginx.) Serve the framework floor on PORT from DIR.
    #[arg(long, hide = true, num_args = 2, value_names = ["PORT", "DIR"])]
    serve_floor: Option<Vec<String>>,
    /// Instead of the benchmarks: cold blobs over an emulated long path (200 MB/s, 25 MB/s a
    /// connection, 20 ms): one stream against wharf and distribution, the last MiB of a cold
    /// blob, upstream bytes per blob, wharf's RSS during the fill.
    #[arg(long)]
    cold_path: bool,
    /// With --cold-path: the blob sizes, MiB.
    #[arg(long, value_delimiter = ',', default_value = "256,1024")]
    cold_mib: Vec<usize>,
    /// Run the chaos soak for this many minutes instead of the benchmarks (3 nodes on S3,
    /// random kills, stops, partitions, S3 and upstream outages, link cuts).
    #[arg(long, value_name = "MINUTES")]
    soak: Option<f64>,
    /// Seed of the soak's fault schedule and clients: the same seed, the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG chart of the herd completion times across the link to this file.
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some([port, dir]) = args.serve_floor.as_deref() {
        let (port, dir) = (port.parse()?, PathBuf::from(dir));
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        return tokio::task::spawn_blocking(move || floor::serve(port, &dir, threads)).await?;
    }
    anyhow::ensure!(
        args.wharf_bin.exists(),
        "{} not found: run `cargo build --release` first",
        args.wharf_bin.display()
    );
    if let Some(minutes) = args.soak {
        return soak::soak(&args, minutes, args.seed).await;
    }
    if args.cold_path {
        return cold_path::cold_path(&args).await;
    }
    if args.vs_nginx {
        return vs_nginx::vs_nginx(&args).await;
    }
    if args.security {
        return security::security_costs(&args).await;
    }
    if args.tiers {
        return tiers::tier_costs(&args).await;
    }
    if let Some(seconds) = args.cluster_quiet {
        return cluster_quiet::cluster_quiet(&args, seconds).await;
    }
    if args.cluster_faults {
        return cluster_faults::cluster_faults(&args).await;
    }
    let (results, series) = scenarios::run_all(&args).await?;
    println!("\n{}", scenarios::markdown(&results));
    if let Some(path) = &args.plot {
        let title = format!(
            "{} clients × one cold 64 MiB blob, upstream across a {} MB/s, {} ms link",
            args.herd_clients, args.wan_mb_per_s, args.wan_rtt_ms
        );
        std::fs::write(path, plot::cdf_svg(&title, &series))?;
        eprintln!("latency chart written to {}", path.display());
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)?;
        eprintln!("results written to {}", path.display());
    }
    Ok(())
}
