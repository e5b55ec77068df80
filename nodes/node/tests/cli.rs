//! The `wharf` binary as users run it: flags, environment credentials, distribution's config.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use wharf_testkit::image::{Format, image};
use wharf_testkit::push::{PushAuth, Pusher};
use wharf_testkit::registry::{Registry, RegistryAuth, RegistryOptions};
use wharf_testkit::{free_port, wait_until};

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start the `wharf` binary with these arguments and extra environment; killed on drop.
/// With `WHARF_TEST_LOG_FILE` set (`./test.sh` sets it), the node logs at debug level into
/// that file, which `./test.sh` searches for the tests' passwords.
fn spawn_wharf(args: &[&std::ffi::OsStr], env: &[(&str, String)]) -> Running {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wharf"));
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(file) = std::env::var_os("WHARF_TEST_LOG_FILE").and_then(|path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
    }) && let Ok(copy) = file.try_clone()
    {
        command.env("WHARF_LOG", "debug").stdout(file).stderr(copy);
    }
    Running(command.spawn().unwrap())
}

/// `serve` on a loopback port with `--upstream` and `--data-dir`, plus `extra` flags.
fn serve(
    port: u16,
    upstream: &str,
    data: &std::path::Path,
    extra: &[&str],
    env: &[(&str, String)],
) -> Running {
    let listen = format!("127.0.0.1:{port}");
    let mut args: Vec<&std::ffi::OsStr> = [
        "serve",
        "--listen",
        &listen,
        "--upstream",
        upstream,
        "--data-dir",
    ]
    .iter()
    .map(|a| std::ffi::OsStr::new(*a))
    .collect();
    args.push(data.as_os_str());
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    spawn_wharf(&args, env)
}

async fn wait_ready(port: u16) {
    let url = format!("http://127.0.0.1:{port}/v2/");
    let up = wait_until(Duration::from_secs(20), || {
        let request = reqwest::get(url.clone());
        async move { request.await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;
    assert!(up, "wharf did not start on port {port}");
}

async fn manifest_status(port: u16, repo: &str) -> reqwest::StatusCode {
    reqwest::get(format!("http://127.0.0.1:{port}/v2/{repo}/manifests/v1"))
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn serve_with_flags_and_credentials_from_the_environment() {
    let (user, password) = ("cli-user", "cli-pass");
    let registry = Registry::start(RegistryOptions {
        auth: RegistryAuth::Htpasswd {
            username: user.into(),
            password: password.into(),
        },
        proxy: None,
        root_dir: None,
    })
    .await
    .unwrap();
    let img = image(Format::Oci, "cli", "amd64", 1);
    Pusher::new(
        &registry.url(),
        PushAuth::Basic {
            username: user.into(),
            password: password.into(),
        },
    )
    .push_image("team/app", "v1", &img)
    .await
    .unwrap();

    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let env = [
        ("WHARF_UPSTREAM_USERNAME", user.to_string()),
        ("WHARF_UPSTREAM_PASSWORD", password.to_string()),
    ];
    let _wharf = serve(port, &registry.url(), data.path(), &[], &env);
    wait_ready(port).await;
    assert_eq!(manifest_status(port, "team/app").await, 200);
    assert!(
        data.path().join("manifests").is_dir(),
        "cached under --data-dir"
    );
}

#[tokio::test]
async fn serve_reads_distributions_config_yml() {
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let img = image(Format::Docker, "yml", "amd64", 1);
    Pusher::new(&registry.url(), PushAuth::None)
        .push_image("team/app", "v1", &img)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: info\nhttp:\n  addr: 127.0.0.1:{port}\nstorage:\n  filesystem:\n    rootdirectory: {}\nproxy:\n  remoteurl: {}\n",
            dir.path().join("cache").display(),
            registry.url()
        ),
    )
    .unwrap();
    let _wharf = spawn_wharf(
        &["serve".as_ref(), "--config".as_ref(), config.as_os_str()],
        &[],
    );
    wait_ready(port).await;
    assert_eq!(manifest_status(port, "team/app").await, 200);
    assert!(dir.path().join("cache/manifests").is_dir());
}

#[tokio::test]
async fn serve_on_s3_with_the_standard_aws_environment() {
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let img = image(Format::Oci, "s3-cli", "amd64", 1);
    Pusher::new(&registry.url(), PushAuth::None)
        .push_image("team/app", "v1", &img)
        .await
        .unwrap();
    let s3 = wharf_testkit::s3::S3Server::start().await.unwrap();
    s3.create_bucket("wharf-cache").await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let storage = ["--storage", "s3://wharf-cache/mirror", "--s3-path-style"];
    let _wharf = serve(port, &registry.url(), data.path(), &storage, &s3.env());
    wait_ready(port).await;
    let layer = &img.layers[0];
    let r = reqwest::get(format!(
        "http://127.0.0.1:{port}/v2/team/app/blobs/{}",
        layer.digest
    ))
    .await
    .unwrap();
    assert_eq!(r.bytes().await.unwrap(), layer.data);
    let hex = layer.digest.trim_start_matches("sha256:");
    let key = format!("mirror/blobs/sha256/{}/{hex}", &hex[..2]);
    let stored = wait_until(Duration::from_secs(20), || async {
        s3.keys("wharf-cache")
            .await
            .is_ok_and(|keys| keys.contains(&key))
    })
    .await;
    assert!(stored, "{key} in the bucket");
}

fn wharf_on_s3(
    port: u16,
    registry: &Registry,
    s3: &wharf_testkit::s3::S3Server,
    data: &std::path::Path,
) -> Running {
    let storage = ["--storage", "s3://killed", "--s3-path-style"];
    serve(port, &registry.url(), data, &storage, &s3.env())
}

#[tokio::test]
async fn a_node_killed_mid_upload_leaves_nothing_and_the_next_refetches() {
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let img = wharf_testkit::image::big_image(31, 200 * 1024 * 1024);
    Pusher::new(&registry.url(), PushAuth::None)
        .push_image("team/big", "v1", &img)
        .await
        .unwrap();
    let s3 = wharf_testkit::s3::S3Server::start().await.unwrap();
    s3.create_bucket("killed").await.unwrap();
    let layer = &img.layers[0];
    let hex = layer.digest.trim_start_matches("sha256:");
    let key = format!("blobs/sha256/{}/{hex}", &hex[..2]);

    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut first = wharf_on_s3(port, &registry, &s3, data.path());
    wait_ready(port).await;
    let url = format!("http://127.0.0.1:{port}/v2/team/big/blobs/{}", layer.digest);
    let client = tokio::spawn(reqwest::get(url));
    let uploading = wait_until(Duration::from_secs(30), || async {
        s3.pending_uploads("killed").await.is_ok_and(|n| n > 0)
    })
    .await;
    assert!(uploading, "a multipart upload began");
    let _ = first.0.kill();
    let _ = first.0.wait();
    let _ = client.await;
    assert!(
        !s3.keys("killed").await.unwrap().contains(&key),
        "no object from a killed node"
    );

    // A replacement node (same spool directory) fetches it again and stores it whole.
    let port = free_port();
    let _second = wharf_on_s3(port, &registry, &s3, data.path());
    wait_ready(port).await;
    let body = reqwest::get(format!(
        "http://127.0.0.1:{port}/v2/team/big/blobs/{}",
        layer.digest
    ))
    .await
    .unwrap()
    .bytes()
    .await
    .unwrap();
    assert_eq!(wharf_testkit::sha256(&body), layer.digest);
    let stored = wait_until(Duration::from_secs(30), || async {
        s3.keys("killed")
            .await
            .is_ok_and(|keys| keys.contains(&key))
    })
    .await;
    assert!(stored, "refetched and stored");
    let object = s3
        .client()
        .get_object()
        .bucket("killed")
        .key(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(object.content_length(), Some(layer.data.len() as i64));
}

#[test]
fn invalid_configuration_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wharf.toml");
    std::fs::write(&config, "listen = \"0.0.0.0:5000\"\nunknown_key = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown_key"), "{stderr}");
}

/// The container way: every setting from `WHARF_*` variables, and `wharf health` as the health
/// check, finding the node from the same variables (its operator listener here).
#[tokio::test]
async fn settings_from_the_environment_and_the_health_subcommand() {
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let env = vec![
        ("WHARF_LISTEN", format!("127.0.0.1:{port}")),
        (
            "WHARF_DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
        ("WHARF_METRICS__LISTEN", format!("127.0.0.1:{metrics_port}")),
        ("WHARF_CACHE__TAG_TTL_SECS", "5".to_string()),
    ];
    let upstream = registry.url();
    let _wharf = spawn_wharf(
        &["serve".as_ref(), "--upstream".as_ref(), upstream.as_ref()],
        &env,
    );
    assert!(
        wait_until(Duration::from_secs(20), || {
            let url = format!("http://127.0.0.1:{metrics_port}/health");
            async move { reqwest::get(url).await.is_ok() }
        })
        .await,
        "the node listens where WHARF_LISTEN and WHARF_METRICS__LISTEN say"
    );
    assert!(
        reqwest::get(format!("http://127.0.0.1:{port}/v2/"))
            .await
            .unwrap()
            .status()
            .is_success()
    );
    assert!(dir.path().join("data").exists(), "WHARF_DATA_DIR");

    let health = |extra: &[&str], env: &[(&str, String)]| {
        Command::new(env!("CARGO_BIN_EXE_wharf"))
            .arg("health")
            .args(extra)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap()
    };
    let ok = health(&[], &env);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "ok");
    let down = health(&["--url", "http://127.0.0.1:1/health"], &[]);
    assert!(!down.status.success(), "nothing listens there");
    let typo = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("WHARF_CACHE__TAG_TTL", "5")
        .output()
        .unwrap();
    assert!(!typo.status.success(), "a misspelt section key is refused");
    assert!(String::from_utf8_lossy(&typo.stderr).contains("WHARF_CACHE__TAG_TTL"));
}

/// `wharf warm`: a cold multi-platform image cached through a running node, one upstream GET
/// per blob, progress printed per image, exit 0; `--platform` picks one; a missing image fails.
#[tokio::test]
async fn warm_fills_the_cache_before_a_rollout() {
    use wharf_testkit::image::index;
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let multi = index(Format::Oci, "warm");
    let single = image(Format::Docker, "warm-single", "amd64", 1);
    let pusher = Pusher::new(&registry.url(), PushAuth::None);
    pusher.push_index("team/multi", "v1", &multi).await.unwrap();
    pusher
        .push_image("team/single", "v2", &single)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let upstream = registry.url();
    let data = dir.path().join("data");
    let _wharf = spawn_wharf(
        &[
            "serve".as_ref(),
            "--listen".as_ref(),
            listen.as_ref(),
            "--upstream".as_ref(),
            upstream.as_ref(),
            "--data-dir".as_ref(),
            data.as_os_str(),
        ],
        &[],
    );
    let node = format!("http://{listen}");
    assert!(
        wait_until(Duration::from_secs(20), || {
            let url = format!("{node}/v2/");
            async move { reqwest::get(url).await.is_ok() }
        })
        .await
    );
    let warm = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args(["warm", "--node", &node])
            .args(args)
            .output()
            .unwrap()
    };
    let out = warm(&["team/multi:v1", "team/single:v2"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("team/multi:v1: 2 manifest(s), 6 blobs"),
        "{stdout}"
    );
    assert!(stdout.contains(" of "), "progress lines: {stdout}");
    assert!(stdout.contains("team/multi:v1: cached"), "{stdout}");
    assert!(stdout.contains("team/single:v2: cached"), "{stdout}");
    // Every blob of every platform is now in the node's store, each fetched once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for img in &multi.images {
        for blob in img.blobs() {
            let path = format!("/v2/team/multi/blobs/{}", blob.digest);
            assert_eq!(registry.count_requests("GET", &path), 1, "{path}");
        }
    }
    // Warm again: all from the cache, no upstream GET of a blob.
    let before = registry.count_matching("GET", "/blobs/");
    let again = warm(&["--platform", "linux/arm64", "team/multi:v1"]);
    let stdout = String::from_utf8_lossy(&again.stdout).to_string();
    assert!(again.status.success(), "{stdout}");
    assert!(stdout.contains("1 manifest(s), 3 blobs"), "{stdout}");
    assert_eq!(registry.count_matching("GET", "/blobs/"), before);
    // A missing image: reported, exit code not 0.
    let missing = warm(&["team/nope:v1", "team/single:v2"]);
    let stdout = String::from_utf8_lossy(&missing.stdout).to_string();
    assert!(!missing.status.success());
    assert!(stdout.contains("team/nope:v1: FAILED"), "{stdout}");
    assert!(stdout.contains("team/single:v2: cached"), "{stdout}");
}
