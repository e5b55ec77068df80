//! Shared fixtures: wharf served in-process on a loopback port, seeded upstreams, helpers.

use std::sync::Arc;

use futures::StreamExt;
use sha2::Digest as _;
use tokio::sync::oneshot;
use wharf_core::config::{Config, UpstreamConfig};
use wharf_edge::Edge;
use wharf_mirror::Mirror;
use wharf_storage::BlobStore;
use wharf_storage::s3::{S3Location, S3Store};
use wharf_testkit::image::{self, Format, Image, Index};
use wharf_testkit::push::{PushAuth, Pusher};
use wharf_testkit::registry::{Registry, RegistryOptions};
use wharf_testkit::s3::S3Server;

#[allow(dead_code)] // each test binary uses a part of the fixture
pub struct Wharf {
    pub url: String,
    pub port: u16,
    pub mirror: Arc<Mirror>,
    pub edge: Arc<Edge>,
    pub data_dir: tempfile::TempDir,
    _shutdown: oneshot::Sender<()>,
}

/// Logs go to the test's captured output, or, with `WHARF_TEST_LOG_FILE` set (`./test.sh`
/// sets it), at debug level to that file, which `./test.sh` then searches for the tests'
/// passwords: none may ever be logged.
pub fn init_tracing() {
    if let Some(path) = std::env::var_os("WHARF_TEST_LOG_FILE")
        && let Ok(file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,wharf_edge=debug,wharf_mirror=debug,wharf_upstream=debug,wharf_auth=debug,wharf_storage=debug",
            ))
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .try_init();
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WHARF_TEST_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A config for tests: short timeouts, one retry, the given upstreams.
pub fn test_config(upstreams: Vec<UpstreamConfig>) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        upstreams,
        ..Config::default()
    };
    config.upstream_client.connect_timeout_secs = 2;
    config.upstream_client.first_byte_timeout_secs = 10;
    config.upstream_client.idle_timeout_secs = 10;
    config.upstream_client.retries = 1;
    config.upstream_client.retry_backoff_ms = 50;
    config
}

pub fn upstream(name: &str, url: &str, default: bool) -> UpstreamConfig {
    UpstreamConfig::new(name, url, default)
}

impl Wharf {
    pub async fn start(config: Config) -> Wharf {
        Wharf::start_with(config, None).await
    }

    /// A wharf whose store is `bucket` on a real S3 server process.
    pub async fn on_s3(config: Config, s3: &S3Server, bucket: &str) -> Wharf {
        let location = S3Location::parse(&format!("s3://{bucket}")).unwrap();
        let store: Arc<dyn BlobStore> = Arc::new(S3Store::from_client(s3.client(), location));
        Wharf::start_with(config, Some(store)).await
    }

    pub async fn start_with(mut config: Config, store: Option<Arc<dyn BlobStore>>) -> Wharf {
        init_tracing();
        let data_dir = tempfile::tempdir().unwrap();
        config.data_dir = data_dir.path().to_path_buf();
        let edge = match store {
            Some(store) => Edge::with_store(&config, store).await,
            None => Edge::open(&config).await,
        }
        .expect("mirror opens");
        let mirror = edge.mirror.clone();
        let listener = tokio::net::TcpListener::bind(&config.listen).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let scheme = if config.tls.enabled() {
            "https"
        } else {
            "http"
        };
        let (tx, rx) = oneshot::channel::<()>();
        let serving = edge.clone();
        tokio::spawn(async move {
            wharf_edge::serve(listener, serving, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Wharf {
            url: format!("{scheme}://127.0.0.1:{port}"),
            port,
            mirror,
            edge,
            data_dir,
            _shutdown: tx,
        }
    }

    /// A single-upstream wharf mirroring `registry` as the default.
    pub async fn mirroring(registry: &Registry) -> Wharf {
        Wharf::start(test_config(vec![upstream(
            "docker.io",
            &registry.url(),
            true,
        )]))
        .await
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Wait (at most 60 s) until no download is under way: a client has every byte of a cold
    /// blob a moment before its download has put it in the store and the index.
    pub async fn settled(&self) {
        for _ in 0..600 {
            if self.mirror.blobs.downloads_in_flight() == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("downloads still under way after 60 s");
    }
}

/// A fresh upstream holding `test/big:v1`, one layer of `layer_len` random bytes from `seed`.
pub async fn big_image_registry(seed: u64, layer_len: usize) -> (Registry, Image) {
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let image = image::big_image(seed, layer_len);
    Pusher::new(&registry.url(), PushAuth::None)
        .push_image("test/big", "v1", &image)
        .await
        .unwrap();
    (registry, image)
}

/// What [`seed`] pushed.
pub struct Seeds {
    pub docker: Image,
    pub oci: Image,
    pub oci_index: Index,
    pub docker_list: Index,
}

/// One of each manifest kind, under `test/<kind>:v1`, plus `library/hello:latest`.
pub async fn seed(registry: &Registry) -> Seeds {
    let pusher = Pusher::new(&registry.url(), PushAuth::None);
    let seeds = Seeds {
        docker: image::image(Format::Docker, "docker", "amd64", 2),
        oci: image::image(Format::Oci, "oci", "amd64", 2),
        oci_index: image::index(Format::Oci, "oci-index"),
        docker_list: image::index(Format::Docker, "docker-list"),
    };
    pusher
        .push_image("test/docker", "v1", &seeds.docker)
        .await
        .unwrap();
    pusher
        .push_image("test/oci", "v1", &seeds.oci)
        .await
        .unwrap();
    pusher
        .push_index("test/oci-index", "v1", &seeds.oci_index)
        .await
        .unwrap();
    pusher
        .push_index("test/docker-list", "v1", &seeds.docker_list)
        .await
        .unwrap();
    pusher
        .push_image("library/hello", "latest", &seeds.docker)
        .await
        .unwrap();
    seeds
}

pub async fn seeded_registry() -> (Registry, Seeds) {
    let registry = Registry::start(RegistryOptions::default())
        .await
        .expect("docker-registry starts");
    let seeds = seed(&registry).await;
    (registry, seeds)
}

/// `/status.json`.
pub async fn status_json(wharf: &Wharf) -> serde_json::Value {
    reqwest::get(format!("{}/status.json", wharf.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The status page's HTML.
pub async fn status_page(wharf: &Wharf) -> String {
    reqwest::get(format!("{}/", wharf.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Every manifest type wharf negotiates.
pub const ACCEPT_ALL: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Stream a response body, returning its sha256 digest and length, or the error that cut it.
pub async fn hash_body(response: reqwest::Response) -> Result<(String, u64), reqwest::Error> {
    let mut hasher = sha2::Sha256::new();
    let mut len = 0u64;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        len += chunk.len() as u64;
        hasher.update(&chunk);
    }
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), len))
}

/// A counter's value on wharf's `/metrics` (0 when absent).
pub async fn metric(wharf: &Wharf, name: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", wharf.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .parse::<f64>()
                .ok()
        })
        .map_or(0, |v| v as u64)
}

/// The `code` of the first entry of an OCI error body.
pub async fn error_code(response: reqwest::Response) -> String {
    let body: serde_json::Value = response.json().await.expect("OCI error body is JSON");
    body["errors"][0]["code"]
        .as_str()
        .expect("errors[0].code")
        .to_string()
}

/// Count regular files under a directory (the store), ignoring the temp areas.
pub fn stored_files(dir: &std::path::Path, kind: &str) -> usize {
    fn walk(p: &std::path::Path) -> usize {
        std::fs::read_dir(p).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| {
                    let path = e.path();
                    if path.is_dir() { walk(&path) } else { 1 }
                })
                .sum()
        })
    }
    walk(&dir.join(kind))
}

/// Run a client program to its end: whether it succeeded, and what it printed.
pub async fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every blob skopeo's `dir:` transport wrote must hash to its file name.
pub fn assert_dir_verified(dir: &std::path::Path, expected: &[String]) {
    for digest in expected {
        let hex = digest.trim_start_matches("sha256:");
        let data = std::fs::read(dir.join(hex)).unwrap_or_else(|_| panic!("{digest} copied"));
        assert_eq!(wharf_testkit::sha256(&data), *digest);
    }
}
