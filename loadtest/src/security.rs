//! What TLS, client authentication and access logs cost on the hot paths: warm manifest requests by tag and
//! warm blob throughput with the mirror's CPU per GB, for wharf plain, wharf over TLS, and
//! wharf with auth and policy on (Basic credentials on every request, so the remembered
//! password check, the policy and the repository-link lookup all run), beside distribution's
//! proxy measured in the same run.

use std::path::Path;

use wharf_testkit::image::{Format, big_image, image};
use wharf_testkit::push::{PushAuth, Pusher};
use wharf_testkit::registry::{Registry, RegistryOptions};
use wharf_testkit::tls::TestPki;

use crate::Args;
use crate::load::{Load, blob_rate_and_cpu, request_rate, throughput};
use crate::mirrors::Mirror;

const PASSWORD: &str = "loadtest-password";

/// Run the comparison and print it as a Markdown table.
pub async fn security_costs(args: &Args) -> anyhow::Result<()> {
    let upstream = Registry::start(RegistryOptions::default()).await?;
    let pusher = Pusher::new(&upstream.url(), PushAuth::None);
    let manifest_image = image(Format::Docker, "bench-sec", "amd64", 2);
    let warm = big_image(9, args.warm_blob_mib * 1024 * 1024);
    pusher
        .push_image("bench/sec", "v1", &manifest_image)
        .await?;
    pusher.push_image("bench/warm", "v1", &warm).await?;

    let dir = tempfile::tempdir()?;
    let pki = TestPki::new(&["127.0.0.1"])?;
    let tls_config = write_private(
        dir.path(),
        "tls.toml",
        &format!(
            "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            pki.server_cert.display(),
            pki.server_key.display()
        ),
    )?;
    let htpasswd = write_private(
        dir.path(),
        "htpasswd",
        &format!("bench:{}\n", bcrypt_hash(PASSWORD)?),
    )?;
    let auth_config = write_private(
        dir.path(),
        "auth.toml",
        &format!(
            "[auth]\nhtpasswd_file = \"{}\"\n\n[[access]]\nrepositories = [\"**\"]\nusers = [\"bench\"]\n",
            htpasswd.display()
        ),
    )?;
    let empty_config = write_private(dir.path(), "empty.toml", "")?;
    let no_metrics = write_private(
        dir.path(),
        "no-metrics.toml",
        "[metrics]\nenabled = false\n",
    )?;
    let basic = {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("bench:{PASSWORD}"))
        )
    };
    let ca = std::fs::read(&pki.ca_cert)?;

    let mut rows = Vec::new();
    let variants = [
        "wharf",
        "wharf, metrics off",
        "wharf TLS (h2)",
        "wharf TLS (http/1.1)",
        "wharf auth+policy",
        "wharf",
        "wharf, metrics off",
        "wharf, access log on",
        "distribution",
    ];
    for variant in variants {
        let (mirror, load) = match variant {
            "wharf" => (
                Mirror::wharf(&args.wharf_bin, &upstream.url(), None).await?,
                Load::plain(),
            ),
            "wharf TLS (h2)" | "wharf TLS (http/1.1)" => (
                Mirror::wharf_configured(
                    &args.wharf_bin,
                    &upstream.url(),
                    &tls_config,
                    true,
                    "warn",
                )
                .await?,
                Load {
                    ca_pem: Some(ca.clone()),
                    authorization: None,
                    http1_only: variant.ends_with("(http/1.1)"),
                },
            ),
            "wharf auth+policy" => (
                Mirror::wharf_configured(
                    &args.wharf_bin,
                    &upstream.url(),
                    &auth_config,
                    false,
                    "warn",
                )
                .await?,
                Load {
                    ca_pem: None,
                    authorization: Some(basic.clone()),
                    http1_only: false,
                },
            ),
            "wharf, metrics off" => (
                Mirror::wharf_configured(
                    &args.wharf_bin,
                    &upstream.url(),
                    &no_metrics,
                    false,
                    "warn",
                )
                .await?,
                Load::plain(),
            ),
            "wharf, access log on" => (
                Mirror::wharf_configured(
                    &args.wharf_bin,
                    &upstream.url(),
                    &empty_config,
                    false,
                    "warn,wharf::access=info",
                )
                .await?,
                Load::plain(),
            ),
            _ => (Mirror::distribution(&upstream.url()).await?, Load::plain()),
        };
        let url = mirror.url();
        let by_tag = format!("{url}/v2/bench/sec/manifests/v1");
        let blob = format!("{url}/v2/bench/warm/blobs/{}", warm.layers[0].digest);
        // Warm both (and the password check) before measuring.
        let (_, _) = request_rate(&load, &by_tag, 1, 1).await?;
        throughput(&load, &blob, 1, 1).await?;
        let (rate, p99) = request_rate(&load, &by_tag, args.connections, args.seconds).await?;
        let (gb_per_s, cpu_per_gb) = blob_rate_and_cpu(&load, &mirror, &blob, args.seconds).await?;
        eprintln!(
            "{variant}: {rate:.0} req/s (p99 {p99:.2} ms), {gb_per_s:.2} GB/s, {cpu_per_gb:.2} CPU-s/GB"
        );
        rows.push((variant, rate, p99, gb_per_s, cpu_per_gb));
        drop(mirror);
    }
    let base = rows[0];
    println!(
        "| mirror | warm manifest by tag, {} conns (req/s) | p99 (ms) | warm {} MiB blob, 4 clients (GB/s) | CPU-s/GB | req/s vs plain wharf | GB/s vs plain wharf |",
        args.connections, args.warm_blob_mib
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, rate, p99, gbps, cpu) in &rows {
        println!(
            "| {name} | {rate:.0} | {p99:.2} | {gbps:.2} | {cpu:.3} | {:.2}x | {:.2}x |",
            rate / base.1,
            gbps / base.3
        );
    }
    Ok(())
}

fn write_private(dir: &Path, name: &str, text: &str) -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(path)
}

fn bcrypt_hash(password: &str) -> anyhow::Result<String> {
    Ok(bcrypt::hash(password, 10)?)
}
