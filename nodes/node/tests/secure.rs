//! The `wharf` binary secured as users run it: a config file with `[auth]` and `[[access]]`,
//! upstream credentials from a private file, `wharf auth hash-password`, reloads on SIGHUP
//! and on file change, and a debug log that never shows a password.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use wharf_testkit::image::{Format, image};
use wharf_testkit::push::{PushAuth, Pusher};
use wharf_testkit::registry::{Registry, RegistryAuth, RegistryOptions};
use wharf_testkit::{free_port, wait_until};

mod support;
use support::{basic, hash_password};

const UPSTREAM_PASSWORD: &str = "robot-upstream-pw-5772";
const ALICE_PASSWORD: &str = "alice-binary-pw-8841";
const CAROL_PASSWORD: &str = "carol-binary-pw-1123";
const WRONG_PASSWORD: &str = "wrong-binary-pw-9090";

#[test]
fn hash_password_prints_a_line_that_verifies() {
    let line = hash_password("alice", "s3cret pass");
    let (user, hash) = line.trim().split_once(':').unwrap();
    assert_eq!(user, "alice");
    assert!(hash.starts_with("$2"));
    assert!(bcrypt::verify("s3cret pass", hash).unwrap());
    assert!(!bcrypt::verify("other", hash).unwrap());
}

#[tokio::test]
async fn secured_binary_reloads_users_and_rules_and_logs_no_secret() {
    let registry = Registry::start(RegistryOptions {
        auth: RegistryAuth::Htpasswd {
            username: "robot".into(),
            password: UPSTREAM_PASSWORD.into(),
        },
        proxy: None,
        root_dir: None,
    })
    .await
    .unwrap();
    let img = image(Format::Docker, "secured-bin", "amd64", 1);
    Pusher::new(
        &registry.url(),
        PushAuth::Basic {
            username: "robot".into(),
            password: UPSTREAM_PASSWORD.into(),
        },
    )
    .push_image("team/app", "v1", &img)
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let password_file = d.join("upstream.pw");
    std::fs::write(&password_file, UPSTREAM_PASSWORD).unwrap();
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let htpasswd = d.join("htpasswd");
    // carol's line is there from the start, commented out: enabling her keeps the length.
    let alice_line = hash_password("alice", ALICE_PASSWORD);
    let carol_line = hash_password("carol", CAROL_PASSWORD);
    std::fs::write(&htpasswd, format!("{alice_line}#{carol_line}")).unwrap();
    std::fs::set_permissions(&htpasswd, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = free_port();
    let config_file = d.join("wharf.toml");
    // The upstream password from a file, or (`from_env`) from WHARF_UPSTREAM_PASSWORD: the
    // file alone is then incomplete, as with the documented environment variable.
    let config_with = |rules: &str, from_env: bool| {
        let password = if from_env {
            String::new()
        } else {
            format!("password_file = \"{}\"\n", password_file.display())
        };
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{data}\"\n\n[auth]\nhtpasswd_file = \"{htpasswd}\"\n\n{rules}\n[[upstream]]\nname = \"registry.test\"\nurl = \"{url}\"\ndefault = true\nusername = \"robot\"\n{password}",
            data = d.join("data").display(),
            htpasswd = htpasswd.display(),
            url = registry.url(),
        )
    };
    let config = |rules: &str| config_with(rules, false);
    let allow_team = "[[access]]\nrepositories = [\"registry.test/team/*\"]\nusers = [\"*\"]\n";
    std::fs::write(&config_file, config(allow_team)).unwrap();
    let log = d.join("wharf.log");
    let start_with = |env: &[(&str, &str)]| {
        let out = std::fs::File::create(&log).unwrap();
        Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args(["serve", "--config"])
            .arg(&config_file)
            .env("WHARF_LOG", "debug")
            .envs(env.iter().copied())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap()
    };
    let start = || start_with(&[]);

    // A password file others can read is refused, with the reason.
    let status = start().wait().unwrap();
    assert!(!status.success());
    let refused = std::fs::read_to_string(&log).unwrap();
    assert!(refused.contains("other users can read it"), "{refused}");
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    // From here on the password comes from the environment (review #6: reloads must build
    // the config as start-up does, or no rule change ever applies).
    std::fs::write(&config_file, config_with(allow_team, true)).unwrap();
    let start = || start_with(&[("WHARF_UPSTREAM_PASSWORD", UPSTREAM_PASSWORD)]);

    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let wharf = Kill(start());
    let url = format!("http://127.0.0.1:{port}/v2/team/app/manifests/v1");
    let http = reqwest::Client::new();
    let status = |auth: String| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.get(&url)
                .header("authorization", auth)
                .header(
                    "accept",
                    "application/vnd.docker.distribution.manifest.v2+json",
                )
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    assert!(
        wait_until(Duration::from_secs(20), || async {
            status(basic("alice", ALICE_PASSWORD)).await == 200
        })
        .await,
        "alice pulls through the authenticated upstream"
    );
    assert_eq!(status(basic("alice", WRONG_PASSWORD)).await, 401);
    assert_eq!(status(basic("carol", CAROL_PASSWORD)).await, 401);

    // Enable carol in place, same length, same modification time: only SIGHUP can tell.
    let before = std::fs::metadata(&htpasswd).unwrap().modified().unwrap();
    std::fs::write(&htpasswd, format!("{alice_line}{carol_line}#")).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&htpasswd)
        .unwrap()
        .set_modified(before)
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        status(basic("carol", CAROL_PASSWORD)).await,
        401,
        "no change seen"
    );
    let hup = Command::new("kill")
        .args(["-HUP", &wharf.0.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    assert!(
        wait_until(Duration::from_secs(5), || async {
            status(basic("carol", CAROL_PASSWORD)).await == 200
        })
        .await,
        "SIGHUP re-read the htpasswd file"
    );

    // The config file's rules are re-read when it changes.
    std::fs::write(
        &config_file,
        config_with(
            "[[access]]\nrepositories = [\"registry.test/other/*\", \"_wharf/status\"]\nusers = [\"*\"]\n",
            true,
        ),
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            status(basic("alice", ALICE_PASSWORD)).await == 403
        })
        .await,
        "the changed access rules apply without a restart"
    );
    // A config that does not load keeps the rules in force, and says so where an operator
    // looks: /status.json and the wharf_reloads_failing gauge.
    std::fs::write(&config_file, "listen = [not toml").unwrap();
    let page = |path: &'static str| {
        let http = http.clone();
        async move {
            http.get(format!("http://127.0.0.1:{port}{path}"))
                .header("authorization", basic("alice", ALICE_PASSWORD))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    assert!(
        wait_until(Duration::from_secs(10), || async {
            page("/metrics").await.contains("wharf_reloads_failing 1")
        })
        .await,
        "a failed reload shows in the metrics"
    );
    let status_json: serde_json::Value = serde_json::from_str(&page("/status.json").await).unwrap();
    let reloads = status_json["reloads"].as_array().unwrap().clone();
    assert!(
        reloads
            .iter()
            .any(|r| r["what"] == "config file" && r["failing"] == true),
        "{reloads:?}"
    );
    assert_eq!(
        status(basic("alice", ALICE_PASSWORD)).await,
        403,
        "the rules in force stay"
    );
    drop(wharf);

    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("DEBUG"), "debug logging was on:\n{logged}");
    for secret in [
        UPSTREAM_PASSWORD,
        ALICE_PASSWORD,
        CAROL_PASSWORD,
        WRONG_PASSWORD,
    ] {
        assert!(!logged.contains(secret), "a secret reached the log");
    }
}
