//! Two tiers on loopback, as a multi-region deployment runs them: a regional cluster (two
//! `wharf` processes over one S3 bucket) whose upstream is a parent `wharf` (with client
//! authentication on) that mirrors the registry; each hop behind the testkit's WAN emulator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use futures::StreamExt;
use wharf_testkit::cluster::WharfCluster;
use wharf_testkit::image::{Blob, Format, image, random_bytes};
use wharf_testkit::push::{PushAuth, Pusher};
use wharf_testkit::registry::{Registry, RegistryOptions};
use wharf_testkit::s3::S3Server;
use wharf_testkit::wan::{LinkShape, WanLink};
use wharf_testkit::{free_port, sha256, wait_for_http};

mod support;
use support::{basic, hash_password};

const REPO: &str = "team/tiered";
const REGISTRY: &str = "registry.test";
/// A second registry the parent mirrors, which the region reaches through its `"*"` upstream.
const OTHER_REGISTRY: &str = "other.test";
const REGION_USER: &str = "region-eu";
const REGION_PASSWORD: &str = "region-parent-pw-4471";
const MIB: usize = 1024 * 1024;

/// The central tier: one `wharf` mirroring `upstream` as `registry.test`, logins required.
struct Parent {
    port: u16,
    process: Child,
    _dir: tempfile::TempDir,
}

impl Parent {
    async fn start(upstream: &str) -> Parent {
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, hash_password(REGION_USER, REGION_PASSWORD)).unwrap();
        // A secret like the others: wharf refuses one other users may read.
        std::fs::set_permissions(
            &htpasswd,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let config = dir.path().join("wharf.toml");
        std::fs::write(
            &config,
            format!(
                "[auth]\nhtpasswd_file = {htpasswd:?}\nanonymous = false\n\n\
                 [[upstream]]\nname = \"{REGISTRY}\"\nurl = \"{upstream}\"\ndefault = true\n\n\
                 [[upstream]]\nname = \"{OTHER_REGISTRY}\"\nurl = \"{upstream}\"\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("wharf.log")).unwrap();
        let process = Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(dir.path().join("data"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}/v2/");
        assert!(
            wait_for_http(&url, Duration::from_secs(20)).await,
            "parent up"
        );
        Parent {
            port,
            process,
            _dir: dir,
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// GETs of `path` the parent answered 200, from its metrics.
    async fn blob_gets(&self) -> u64 {
        let text = reqwest::Client::new()
            .get(format!("http://{}/metrics", self.host()))
            .header("authorization", basic(REGION_USER, REGION_PASSWORD))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| {
                l.starts_with("wharf_http_requests_total{")
                    && l.contains("route=\"blob\"")
                    && l.contains("method=\"GET\"")
                    // 206: a ranged fill's pieces (one for a blob within the first).
                    && (l.contains("code=\"200\"") || l.contains("code=\"206\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
            .sum()
    }

    fn stop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for Parent {
    fn drop(&mut self) {
        self.stop();
    }
}

fn blob_url(base: &str, digest: &str) -> String {
    format!("{base}/v2/{REPO}/blobs/{digest}")
}

/// GET a blob; its time to first byte and total time, after checking its digest.
async fn timed_pull(base: &str, digest: &str) -> (Duration, Duration) {
    let started = Instant::now();
    let response = reqwest::get(blob_url(base, digest)).await.unwrap();
    assert_eq!(response.status(), 200, "{digest}");
    let mut stream = response.bytes_stream();
    let mut first_byte = None;
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        first_byte.get_or_insert_with(|| started.elapsed());
        body.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(sha256(&body), digest);
    (first_byte.unwrap_or_default(), started.elapsed())
}

#[tokio::test]
async fn a_regional_cluster_pulls_through_its_parent_once_and_falls_over_when_it_is_down() {
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let pusher = Pusher::new(&registry.url(), PushAuth::None);
    let big = Blob::new(random_bytes(16 * MIB, 77), "application/octet-stream");
    let headed = Blob::new(random_bytes(MIB, 78), "application/octet-stream");
    let later = Blob::new(random_bytes(MIB, 79), "application/octet-stream");
    pusher
        .push_blobs(REPO, &[&big, &headed, &later])
        .await
        .unwrap();
    let img = image(Format::Oci, "tiered", "amd64", 1);
    pusher.push_image(REPO, "v1", &img).await.unwrap();

    // registry → (20 MB/s, 20 ms) → parent → (100 MB/s, 20 ms) → regional cluster.
    let to_parent = WanLink::start(
        registry.host(),
        LinkShape {
            bytes_per_sec: 20_000_000,
            rtt: Duration::from_millis(20),
            cut_every: None,
            per_connection: None,
        },
    )
    .await
    .unwrap();
    let mut parent = Parent::start(&to_parent.url()).await;
    let to_region = WanLink::start(
        parent.host(),
        LinkShape {
            bytes_per_sec: 100_000_000,
            rtt: Duration::from_millis(20),
            cut_every: None,
            per_connection: None,
        },
    )
    .await
    .unwrap();
    // Unauthenticated, the parent refuses: the region's credentials are what let it in.
    let anonymous = reqwest::get(format!("http://{}/v2/{REPO}/manifests/v1", parent.host()))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    let s3 = S3Server::start().await.unwrap();
    s3.create_bucket("region").await.unwrap();
    let config = format!(
        "[[upstream]]\nname = \"{REGISTRY}\"\nurl = \"{}\"\nparent = true\n\
         fallback_urls = [\"{}\"]\ndefault = true\nusername = \"{REGION_USER}\"\n\
         password = \"{REGION_PASSWORD}\"\n\n\
         [[upstream]]\nname = \"*\"\nurl = \"{}\"\nparent = true\n\
         username = \"{REGION_USER}\"\npassword = \"{REGION_PASSWORD}\"\n",
        to_region.url(),
        registry.url(),
        to_region.url(),
    );
    let binary = Path::new(env!("CARGO_BIN_EXE_wharf"));
    let region = WharfCluster::start_configured(binary, 2, "", &s3, "region", &config)
        .await
        .unwrap();
    let nodes: Vec<String> = region.members.iter().map(|m| m.url()).collect();

    // A herd on both regional nodes for a cold 16 MiB blob: one GET at the registry, one at
    // the parent, and bytes flowing to clients while the parent is still fetching them.
    let herd: Vec<_> = (0..8)
        .map(|i| {
            let (base, digest) = (nodes[i % 2].clone(), big.digest.clone());
            tokio::spawn(async move { timed_pull(&base, &digest).await })
        })
        .collect();
    let mut timings = Vec::new();
    for client in herd {
        timings.push(client.await.unwrap());
    }
    let upstream_path = format!("/v2/{REPO}/blobs/{}", big.digest);
    assert_eq!(registry.count_requests("GET", &upstream_path), 1);
    assert_eq!(parent.blob_gets().await, 1);
    let (first_byte, total) = timings.iter().min_by_key(|t| t.0).copied().unwrap();
    eprintln!("two tiers, 8 clients on 16 MiB cold: first byte {first_byte:?}, done {total:?}");
    // 16 MiB at 20 MB/s is some 0.85 s at the registry hop alone.
    assert!(total >= Duration::from_millis(800), "{timings:?}");
    assert!(
        first_byte < total / 2,
        "store-and-forward somewhere: first byte after {first_byte:?} of {total:?}"
    );

    // Cold HEADs through the chain: the right size and digest, nothing downloaded.
    let http = reqwest::Client::new();
    let head = http
        .head(blob_url(&nodes[1], &headed.digest))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        (MIB as u64).to_string().as_str()
    );
    assert_eq!(
        head.headers()["docker-content-digest"],
        headed.digest.as_str()
    );
    let head = http
        .head(format!("{}/v2/{REPO}/manifests/v1", nodes[0]))
        .header("accept", img.manifest.media_type.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["docker-content-digest"],
        img.manifest.digest.as_str()
    );
    assert_eq!(
        head.headers()["content-length"],
        img.manifest.body.len().to_string().as_str()
    );
    assert_eq!(
        registry.count_requests("GET", &format!("/v2/{REPO}/blobs/{}", headed.digest)),
        0
    );
    // Range requests through the chain.
    let range = http
        .get(blob_url(&nodes[0], &big.digest))
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(range.status(), 206);
    assert_eq!(range.bytes().await.unwrap(), big.data.slice(1000..2000));

    // Any other registry goes to the parent through the "*" upstream: one it mirrors is
    // served, one it does not is its 403 DENIED, passed on as such.
    let other = http
        .get(format!(
            "{}/v2/{REPO}/manifests/v1?ns={OTHER_REGISTRY}",
            nodes[1]
        ))
        .header("accept", img.manifest.media_type.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    assert_eq!(other.bytes().await.unwrap(), img.manifest.body);
    let denied = http
        .get(format!("{}/v2/{REPO}/manifests/v1?ns=quay.io", nodes[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let body: serde_json::Value = denied.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "DENIED");

    // The parent goes down: the region serves what it holds and fetches cold content from the
    // next URL (the registry itself).
    parent.stop();
    timed_pull(&nodes[1], &big.digest).await;
    timed_pull(&nodes[0], &later.digest).await;
    // (It asked with ?ns=registry.test, which the registry ignores.)
    assert_eq!(registry.count_matching("GET", &later.digest), 1);
    assert_eq!(registry.count_matching("GET", &big.digest), 1);
}
