//! Real clients pull through wharf: skopeo (via a registries.conf mirror entry) and the
//! Docker Engine (explicit reference, then as a `registry-mirrors` entry).

use std::path::Path;

use serde_json::Value;
use wharf_testkit::have_program;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copies_through_a_registries_conf_mirror() {
    assert!(
        have_program("skopeo"),
        "skopeo is not installed: run the README's test command (it installs it)"
    );
    let (registry, seeds) = seeded_registry().await;
    let wharf = Wharf::mirroring(&registry).await;
    let work = tempfile::tempdir().unwrap();
    let conf = work.path().join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "unqualified-search-registries = []\n\n[[registry]]\nprefix = \"docker.io\"\nlocation = \"docker.io\"\n\n[[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\n",
            wharf.host()
        ),
    )
    .unwrap();
    let policy = work.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let out = work.path().join("hello");
    let (ok, text) = run(
        "skopeo",
        &[
            "--registries-conf",
            conf.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
            "copy",
            "--retry-times",
            "0",
            "docker://docker.io/library/hello:latest",
            &format!("dir:{}", out.display()),
        ],
    )
    .await;
    assert!(ok, "skopeo copy through the mirror failed:\n{text}");
    let expected: Vec<String> = seeds
        .docker
        .blobs()
        .iter()
        .map(|b| b.digest.clone())
        .collect();
    assert_dir_verified(&out, &expected);
    // It came through wharf (docker.io itself is unreachable from here).
    for digest in &expected {
        assert_eq!(
            registry.count_requests("GET", &format!("/v2/library/hello/blobs/{digest}")),
            1
        );
    }

    // A multi-platform OCI index, every platform, by explicit reference.
    let (ok, text) = run(
        "skopeo",
        &[
            "--policy",
            policy.to_str().unwrap(),
            "copy",
            "--all",
            "--src-tls-verify=false",
            &format!("docker://{}/test/oci-index:v1", wharf.host()),
            &format!("dir:{}", work.path().join("index").display()),
        ],
    )
    .await;
    assert!(ok, "skopeo copy --all of an OCI index failed:\n{text}");
    let all: Vec<String> = seeds
        .oci_index
        .images
        .iter()
        .flat_map(|i| i.blobs().into_iter().map(|b| b.digest.clone()))
        .collect();
    assert_dir_verified(&work.path().join("index"), &all);
}

/// Restores the daemon's configuration (and reloads it) when the test ends, however it ends.
struct DaemonConfigGuard {
    original: Option<String>,
}

const DAEMON_JSON: &str = "/etc/docker/daemon.json";

impl DaemonConfigGuard {
    fn set_mirror(mirror: &str) -> Option<DaemonConfigGuard> {
        let original = std::fs::read_to_string(DAEMON_JSON).ok();
        let mut config: Value = original
            .as_deref()
            .map_or(Value::Object(Default::default()), |s| {
                serde_json::from_str(s).unwrap_or(Value::Object(Default::default()))
            });
        config["registry-mirrors"] = serde_json::json!([mirror]);
        std::fs::write(DAEMON_JSON, serde_json::to_vec_pretty(&config).ok()?).ok()?;
        reload_dockerd().then_some(DaemonConfigGuard { original })
    }
}

impl Drop for DaemonConfigGuard {
    fn drop(&mut self) {
        match &self.original {
            Some(original) => {
                let _ = std::fs::write(DAEMON_JSON, original);
            }
            None => {
                let _ = std::fs::remove_file(DAEMON_JSON);
            }
        }
        reload_dockerd();
    }
}

/// dockerd reloads `registry-mirrors` on SIGHUP, without a restart.
fn reload_dockerd() -> bool {
    let ok = std::process::Command::new("pkill")
        .args(["-HUP", "-x", "dockerd"])
        .status()
        .is_ok_and(|s| s.success());
    std::thread::sleep(std::time::Duration::from_millis(500));
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_engine_pulls_through_wharf() {
    let (running, _) = run("docker", &["info", "--format", "{{.ServerVersion}}"]).await;
    if !have_program("docker") || !running {
        eprintln!("SKIPPED: no Docker Engine runs on this machine");
        return;
    }
    let (registry, seeds) = seeded_registry().await;
    let wharf = Wharf::mirroring(&registry).await;

    // Explicit reference: a Docker manifest list, the daemon picks its platform.
    let reference = format!("{}/test/docker-list:v1", wharf.host());
    let (ok, text) = run("docker", &["pull", &reference]).await;
    assert!(ok, "docker pull {reference} failed:\n{text}");
    let (ok, text) = run("docker", &["image", "inspect", &reference]).await;
    assert!(ok, "{text}");
    let _ = run("docker", &["image", "rm", "-f", &reference]).await;

    // An OCI image manifest.
    let reference = format!("{}/test/oci:v1", wharf.host());
    let (ok, text) = run("docker", &["pull", &reference]).await;
    assert!(ok, "docker pull {reference} failed:\n{text}");
    let _ = run("docker", &["image", "rm", "-f", &reference]).await;

    // As a registry mirror for Docker Hub names.
    let is_root = std::env::var("USER").is_ok_and(|u| u == "root")
        || std::fs::metadata("/etc/docker").is_ok_and(|m| !m.permissions().readonly());
    if !is_root || !Path::new("/etc/docker").exists() {
        eprintln!("SKIPPED (mirror part): /etc/docker/daemon.json is not writable here");
        return;
    }
    let Some(_guard) = DaemonConfigGuard::set_mirror(&wharf.url) else {
        eprintln!("SKIPPED (mirror part): could not reload dockerd's configuration");
        return;
    };
    let (ok, text) = run("docker", &["pull", "hello:latest"]).await;
    let _ = run("docker", &["image", "rm", "-f", "hello:latest"]).await;
    assert!(
        ok,
        "docker pull hello:latest via registry-mirrors failed:\n{text}"
    );
    for blob in seeds.docker.layers.iter() {
        assert_eq!(
            registry.count_requests("GET", &format!("/v2/library/hello/blobs/{}", blob.digest)),
            1,
            "layer fetched through wharf"
        );
    }
}
