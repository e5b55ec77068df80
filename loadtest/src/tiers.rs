//! What the multi-region features buy and cost, measured side by side in one run:
//!
//! - warm 50 MiB blob throughput and the mirror's CPU per GB: wharf on local disk, on S3, and
//!   on S3 with the local hot tier (`[hot_cache]`), beside distribution's proxy;
//! - a herd of clients on one cold 64 MiB blob, the upstream across an emulated WAN link: one
//!   tier (wharf → link → upstream) against two (wharf → link → parent wharf → link →
//!   upstream), completion p50 and p99.

use std::path::Path;
use std::time::Duration;

use wharf_testkit::image::big_image;
use wharf_testkit::push::{PushAuth, Pusher};
use wharf_testkit::registry::{Registry, RegistryOptions};
use wharf_testkit::s3::S3Server;
use wharf_testkit::wan::{LinkShape, WanLink};

use crate::Args;
use crate::load::{Load, blob_rate_and_cpu, get_ok};
use crate::mirrors::Mirror;
use crate::scenarios::herd_times;

/// A mirror to measure: its name, its bucket (none: local disk), its `WHARF_*` settings.
type Variant = (
    &'static str,
    Option<&'static str>,
    &'static [(&'static str, &'static str)],
);

/// Run both comparisons and print them as Markdown tables.
pub async fn tier_costs(args: &Args) -> anyhow::Result<()> {
    let upstream = Registry::start(RegistryOptions::default()).await?;
    let pusher = Pusher::new(&upstream.url(), PushAuth::None);
    let warm = big_image(11, args.warm_blob_mib * 1024 * 1024);
    let herd = big_image(12, 64 * 1024 * 1024);
    let herd2 = big_image(13, 64 * 1024 * 1024);
    pusher.push_image("bench/warm", "v1", &warm).await?;
    pusher.push_image("bench/herd", "v1", &herd).await?;
    pusher.push_image("bench/herd2", "v1", &herd2).await?;
    let s3 = S3Server::start().await?;
    for bucket in ["tier-s3", "tier-hot"] {
        s3.create_bucket(bucket).await?;
    }

    println!(
        "\n| warm {} MiB blob, 4 clients, {} s | GB/s | CPU-s/GB | GB/s vs disk | GB/s vs distribution |",
        args.warm_blob_mib, args.seconds
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    let layer = &warm.layers[0].digest;
    let path = format!("/v2/bench/warm/blobs/{layer}");
    let variants: [Variant; 4] = [
        ("wharf (disk)", None, &[]),
        ("wharf (S3)", Some("tier-s3"), &[]),
        (
            "wharf (S3 + hot tier)",
            Some("tier-hot"),
            &[("WHARF_HOT_CACHE__MAX_SIZE_MIB", "1024")],
        ),
        ("distribution proxy", None, &[]),
    ];
    let mut results = Vec::new();
    for (name, bucket, env) in variants {
        let mirror = if name.starts_with("distribution") {
            Mirror::distribution(&upstream.url()).await?
        } else {
            Mirror::wharf_with_env(
                &args.wharf_bin,
                &upstream.url(),
                bucket.map(|b| (&s3, b)),
                env,
            )
            .await?
        };
        let url = format!("{}{path}", mirror.url());
        let http = reqwest::Client::new();
        get_ok(&http, &url).await?;
        // Let the store (and the hot tier's copy) settle before measuring warm reads.
        tokio::time::sleep(Duration::from_secs(3)).await;
        get_ok(&http, &url).await?;
        let (gb_per_s, cpu_per_gb) =
            blob_rate_and_cpu(&Load::plain(), &mirror, &url, args.seconds).await?;
        eprintln!("  {name}: {gb_per_s:.2} GB/s, {cpu_per_gb:.3} CPU-s/GB");
        results.push((name, gb_per_s, cpu_per_gb));
    }
    let disk = results[0].1;
    let distribution = results[3].1;
    for (name, gb_per_s, cpu) in &results {
        println!(
            "| {name} | {gb_per_s:.2} | {cpu:.3} | {:.2}× | {:.2}× |",
            gb_per_s / disk,
            gb_per_s / distribution
        );
    }

    let shape = LinkShape {
        bytes_per_sec: args.wan_mb_per_s * 1_000_000,
        rtt: Duration::from_millis(args.wan_rtt_ms),
        cut_every: None,
        per_connection: None,
    };
    let link = WanLink::start(upstream.host(), shape).await?;
    let herd_path = |repo: &str, image: &wharf_testkit::image::Image| {
        format!("/v2/bench/{repo}/blobs/{}", image.layers[0].digest)
    };

    // One tier: a wharf across the link from the upstream.
    let single = Mirror::wharf(&args.wharf_bin, &link.url(), None).await?;
    let (one, _) = herd_times(
        &[single.url()],
        &herd_path("herd", &herd),
        args.herd_clients,
    )
    .await?;
    drop(single);

    // Two tiers: a parent across the link from the upstream, a child across the same kind of
    // link from the parent, forwarding ns= as a regional tier does.
    let parent = Mirror::wharf(&args.wharf_bin, &link.url(), None).await?;
    let parent_host = parent.url().trim_start_matches("http://").to_string();
    let to_parent = WanLink::start(parent_host, shape).await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("child.toml");
    let upstream_name = link.url().trim_start_matches("http://").to_string();
    std::fs::write(
        &config,
        format!(
            "[[upstream]]\nname = \"{upstream_name}\"\nurl = \"{}\"\nparent = true\ndefault = true\n",
            to_parent.url()
        ),
    )?;
    let child =
        Mirror::wharf_configured(&args.wharf_bin, "", Path::new(&config), false, "warn").await?;
    let herd2_path = herd_path("herd2", &herd2);
    let (two, _) = herd_times(&[child.url()], &herd2_path, args.herd_clients).await?;
    let upstream_gets = upstream.count_matching("GET", &herd2.layers[0].digest);

    let s = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let link_name = format!("{} MB/s, {} ms links", args.wan_mb_per_s, args.wan_rtt_ms);
    println!(
        "\n| herd of {} on a cold 64 MiB blob, {link_name} | p50 s | p99 s | p50 vs one tier |",
        args.herd_clients
    );
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| one tier (wharf → upstream) | {:.2} | {:.2} | 1.00× |",
        s(&one, 0.5),
        s(&one, 0.99)
    );
    println!(
        "| two tiers (wharf → parent wharf → upstream) | {:.2} | {:.2} | {:.2}× |",
        s(&two, 0.5),
        s(&two, 0.99),
        s(&two, 0.5) / s(&one, 0.5)
    );
    println!("\nupstream GETs of the two-tier herd's blob: {upstream_gets}");
    drop(child);
    drop(parent);
    Ok(())
}
