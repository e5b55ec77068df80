//! Real clients through a secured wharf: skopeo over TLS with HTTP Basic and with the token
//! flow, and the Docker Engine trusting a test CA (`/etc/docker/certs.d`), logging in with
//! `docker login` and pulling; wrong passwords and denied repositories fail as they should.

use std::path::Path;

use tokio::process::Command;
use wharf_core::config::AccessRule;
use wharf_testkit::have_program;
use wharf_testkit::tls::TestPki;

use crate::common::*;
use crate::setup::*;

async fn run(
    program: &str,
    args: &[&str],
    env: &[(&str, &Path)],
    stdin: Option<&str>,
) -> (bool, String) {
    use tokio::io::AsyncWriteExt;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn only_test_docker() -> Vec<AccessRule> {
    vec![AccessRule::new(
        &["docker.io/test/docker", "docker.io/library/*"],
        &["alice"],
        &[],
        false,
        true,
    )]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pulls_over_tls_with_basic_auth_and_with_tokens() {
    capture_logs();
    assert!(
        have_program("skopeo"),
        "skopeo is not installed: run the README's test command (it installs it)"
    );
    let (registry, seeds) = seeded_registry().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&["127.0.0.1"]).unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::copy(&pki.ca_cert, certs.join("ca.crt")).unwrap();
    for token_flow in [false, true] {
        let mut config = auth_config(&registry, dir.path());
        config.tls.cert_file = pki.server_cert.clone();
        config.tls.key_file = pki.server_key.clone();
        config.access = only_test_docker();
        if token_flow {
            config.auth.token_key_file = secret_file(dir.path(), "token.key", TOKEN_KEY);
        }
        let wharf = Wharf::start(config).await;
        let copy = |repo: &str, creds: String, to: &str| {
            let src = format!("docker://{}/{repo}", wharf.host());
            let dst = format!("dir:{}", dir.path().join(to).display());
            let certs = certs.display().to_string();
            async move {
                run(
                    "skopeo",
                    &[
                        "--tmpdir",
                        "/tmp",
                        "copy",
                        "--src-cert-dir",
                        &certs,
                        "--src-creds",
                        &creds,
                        &src,
                        &dst,
                    ],
                    &[],
                    None,
                )
                .await
            }
        };
        let label = if token_flow { "token" } else { "basic" };
        let (ok, text) = copy(
            "test/docker:v1",
            format!("alice:{ALICE_PASSWORD}"),
            &format!("ok-{label}"),
        )
        .await;
        assert!(ok, "skopeo over TLS ({label}) failed:\n{text}");
        for blob in seeds.docker.blobs() {
            let hex = blob.digest.trim_start_matches("sha256:");
            let data = std::fs::read(dir.path().join(format!("ok-{label}")).join(hex)).unwrap();
            assert_eq!(wharf_testkit::sha256(&data), blob.digest);
        }
        let (ok, text) = copy(
            "test/docker:v1",
            format!("alice:{WRONG_PASSWORD}"),
            &format!("wrong-{label}"),
        )
        .await;
        assert!(!ok, "a wrong password pulled ({label})");
        assert!(
            text.to_lowercase().contains("unauthorized") || text.contains("401"),
            "{text}"
        );
        let (ok, text) = copy(
            "test/oci:v1",
            format!("alice:{ALICE_PASSWORD}"),
            &format!("denied-{label}"),
        )
        .await;
        assert!(!ok, "a denied repository pulled ({label})");
        assert!(
            text.to_lowercase().contains("denied") || text.contains("403"),
            "{text}"
        );
    }
    assert_no_secret_logged();
}

/// The Docker Engine verifies wharf's certificate against `/etc/docker/certs.d/<host:port>/`
/// (127.0.0.0/8 would be treated as insecure and skip that check, so wharf listens on the
/// Docker bridge address), then logs in (through wharf's token endpoint, then against a wharf
/// that asks for HTTP Basic) and pulls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_login_and_pull_over_tls() {
    capture_logs();
    let (running, _) = run(
        "docker",
        &["info", "--format", "{{.ServerVersion}}"],
        &[],
        None,
    )
    .await;
    assert!(
        have_program("docker") && running,
        "this test needs the Docker Engine (the README's test machine has one)"
    );
    let bridge = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "docker0"])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .skip_while(|w| *w != "inet")
                .nth(1)
                .and_then(|a| a.split('/').next().map(str::to_string))
        })
        .expect("the docker0 bridge has an IPv4 address");
    let (registry, seeds) = seeded_registry().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&[&bridge]).unwrap();
    for token_flow in [true, false] {
        docker_session(&bridge, &registry, &seeds, &pki, dir.path(), token_flow).await;
    }
    assert_no_secret_logged();
}

/// One `docker login` + pull session against a fresh wharf: with the token flow, or with
/// HTTP Basic (no token key: challenges ask for Basic).
async fn docker_session(
    bridge: &str,
    registry: &wharf_testkit::registry::Registry,
    seeds: &Seeds,
    pki: &TestPki,
    dir: &Path,
    token_flow: bool,
) {
    let mut config = auth_config(registry, dir);
    config.listen = format!("{bridge}:0");
    config.tls.cert_file = pki.server_cert.clone();
    config.tls.key_file = pki.server_key.clone();
    if token_flow {
        config.auth.token_key_file = secret_file(dir, "token.key", TOKEN_KEY);
    }
    config.access = only_test_docker();
    let wharf = Wharf::start(config).await;
    let host = format!("{bridge}:{}", wharf.port);
    let certs_d = Path::new("/etc/docker/certs.d").join(&host);
    std::fs::create_dir_all(&certs_d).unwrap();
    std::fs::copy(&pki.ca_cert, certs_d.join("ca.crt")).unwrap();
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(certs_d);
    let docker_config = dir.join(format!("docker-config-{token_flow}"));
    std::fs::create_dir(&docker_config).unwrap();
    let env = [("DOCKER_CONFIG", docker_config.as_path())];

    let (ok, text) = run(
        "docker",
        &["login", &host, "-u", "alice", "--password-stdin"],
        &env,
        Some(WRONG_PASSWORD),
    )
    .await;
    assert!(!ok, "docker login with a wrong password succeeded:\n{text}");
    let (ok, text) = run(
        "docker",
        &["login", &host, "-u", "alice", "--password-stdin"],
        &env,
        Some(ALICE_PASSWORD),
    )
    .await;
    assert!(
        ok,
        "docker login (token flow: {token_flow}) failed:\n{text}"
    );

    let reference = format!("{host}/test/docker:v1");
    let (ok, text) = run("docker", &["pull", &reference], &env, None).await;
    assert!(ok, "docker pull {reference} over TLS failed:\n{text}");
    let (ok, inspect) = run(
        "docker",
        &[
            "image",
            "inspect",
            "--format",
            "{{json .RootFS.Layers}}",
            &reference,
        ],
        &env,
        None,
    )
    .await;
    let _ = run("docker", &["image", "rm", "-f", &reference], &env, None).await;
    assert!(ok, "{inspect}");
    assert_eq!(
        serde_json::from_str::<Vec<String>>(inspect.trim())
            .unwrap()
            .len(),
        seeds.docker.layers.len()
    );
    let denied = format!("{host}/test/oci:v1");
    let (ok, text) = run("docker", &["pull", &denied], &env, None).await;
    assert!(!ok, "a denied repository was pulled:\n{text}");
    assert!(text.contains("denied") || text.contains("403"), "{text}");
    let _ = run("docker", &["logout", &host], &env, None).await;
}
