//! Observing the `wharf` binary from outside: access logs (one JSON line per request with
//! `WHARF_LOG_FORMAT=json`: bytes, status, duration, cache result, upstream, client, request id),
//! a real Prometheus server scraping the operator listener and computing the hit ratio, the
//! Grafana dashboard's queries checked against `/metrics`, and the status page rendered by
//! headless Chromium while a download is in flight.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use wharf_testkit::image::{Format, image};
use wharf_testkit::push::{PushAuth, Pusher};
use wharf_testkit::registry::{Registry, RegistryOptions};
use wharf_testkit::{free_port, wait_until};

#[tokio::test]
async fn json_access_lines_tell_what_each_request_got() {
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let img = image(Format::Docker, "access-log", "amd64", 1);
    Pusher::new(&registry.url(), PushAuth::None)
        .push_image("team/app", "v1", &img)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (wharf, base) = start_wharf(
        dir.path(),
        &["--upstream", &registry.url()],
        &[("WHARF_LOG_FORMAT", "json"), ("WHARF_LOG", "info")],
    )
    .await;
    let log = dir.path().join("wharf.log");
    let http = reqwest::Client::new();
    let layer = &img.layers[0];
    let blob = format!("{base}/v2/team/app/blobs/{}", layer.digest);
    let mut ids = Vec::new();
    for given in [Some("trace-abc.123"), None] {
        let mut request = http
            .get(&blob)
            .header("authorization", "Basic c2VjcmV0OnBhc3N3b3Jk");
        if let Some(id) = given {
            request = request.header("x-request-id", id);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 200);
        let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
        if let Some(given) = given {
            assert_eq!(id, given, "a sane client request id is kept");
        }
        assert_eq!(r.bytes().await.unwrap().len(), layer.data.len());
        ids.push(id);
        // Let the download finish storing the blob: a request meanwhile would join it.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let missing = http
        .get(format!("{base}/v2/team/app/manifests/nope"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let generated = missing.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        !generated.contains(' '),
        "an unusable client id is replaced"
    );
    ids.push(generated);
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(wharf);

    let text = std::fs::read_to_string(&log).unwrap();
    let access: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "wharf::access")
        .collect();
    let line = |id: &str| {
        access
            .iter()
            .find(|v| v["fields"]["request_id"] == id)
            .unwrap_or_else(|| panic!("an access line for {id} in:\n{text}"))
            .clone()
    };
    let cold = line(&ids[0]);
    let f = &cold["fields"];
    assert_eq!(f["method"], "GET");
    assert_eq!(f["path"], format!("/v2/team/app/blobs/{}", layer.digest));
    assert_eq!(f["status"], 200);
    assert_eq!(f["bytes"], layer.data.len() as u64);
    assert_eq!(f["cache"], "miss");
    assert_eq!(f["upstream"], registry.host());
    assert!(f["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(f["duration_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(f["complete"], true);
    assert!(cold["timestamp"].is_string());
    let warm = line(&ids[1]);
    assert_eq!(warm["fields"]["cache"], "hit");
    assert_eq!(warm["fields"]["bytes"], layer.data.len() as u64);
    let missing = line(&ids[2]);
    assert_eq!(missing["fields"]["status"], 404);
    assert!(
        !text.contains("c2VjcmV0OnBhc3N3b3Jk"),
        "no credentials in the log"
    );
}

/// A `wharf serve` child process, killed when dropped.
struct Node(std::process::Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `wharf serve` with `args` and `envs`, logging to `dir/wharf.log`, and wait until its
/// v2 API answers.
async fn start_wharf(
    dir: &std::path::Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> (Node, String) {
    let port = free_port();
    let log = std::fs::File::create(dir.join("wharf.log")).unwrap();
    let node = Node(
        Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir.join("data"))
            .args(args)
            .envs(envs.iter().copied())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    assert!(
        wait_until(Duration::from_secs(20), || {
            let url = format!("{base}/v2/");
            async move { reqwest::get(url).await.is_ok() }
        })
        .await,
        "wharf did not start"
    );
    (node, base)
}

/// The metric families a `/metrics` text names in its `# TYPE` lines.
fn families(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Every `wharf_*` metric name in a PromQL expression.
fn queried_metrics(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("wharf_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_hit_ratio_and_the_dashboard_queries_exist() {
    let prometheus = "/usr/bin/prometheus";
    assert!(
        std::path::Path::new(prometheus).exists(),
        "Debian's prometheus package is needed (./test.sh installs it)"
    );
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let img = image(Format::Docker, "observe", "amd64", 1);
    Pusher::new(&registry.url(), PushAuth::None)
        .push_image("team/app", "v1", &img)
        .await
        .unwrap();
    // A Docker Hub stand-in that announces its pull allowance (and has nothing).
    let hub = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hub_url = format!("http://{}", hub.local_addr().unwrap());
    tokio::spawn(async move {
        let app = axum::Router::new().fallback(|| async {
            (
                axum::http::StatusCode::NOT_FOUND,
                [
                    ("ratelimit-limit", "100;w=21600"),
                    ("ratelimit-remaining", "99;w=21600"),
                ],
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}"#,
            )
        });
        axum::serve(hub, app).await
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "[[upstream]]\nname = \"local\"\nurl = \"{}\"\ndefault = true\n\n[[upstream]]\nname = \"hub\"\nurl = \"{hub_url}\"\n",
            registry.url()
        ),
    )
    .unwrap();
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let (_wharf, base) = start_wharf(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--metrics-listen",
            &metrics_addr,
        ],
        &[],
    )
    .await;
    let r = reqwest::get(format!("{base}/v2/library/alpine/manifests/3?ns=hub"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Cold, then warm: 3 misses (manifest, config, layer), then 3 hits.
    for _ in 0..2 {
        let r = reqwest::Client::new()
            .get(format!("{base}/v2/team/app/manifests/v1"))
            .header(
                "accept",
                "application/vnd.docker.distribution.manifest.v2+json",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        for blob in img.blobs() {
            let r = reqwest::get(format!("{base}/v2/team/app/blobs/{}", blob.digest))
                .await
                .unwrap();
            assert_eq!(r.bytes().await.unwrap().len(), blob.data.len());
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    let prom_port = free_port();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: wharf\n    static_configs:\n      - targets: ['{metrics_addr}']\n"
        ),
    )
    .unwrap();
    let prom_log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prom = Node(
        Command::new(prometheus)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(prom_log.try_clone().unwrap())
            .stderr(prom_log)
            .spawn()
            .unwrap(),
    );
    let query =
        r#"sum(wharf_cache_requests_total{result="hit"}) / sum(wharf_cache_requests_total)"#;
    let url = format!("http://127.0.0.1:{prom_port}/api/v1/query");
    let answer = std::sync::Arc::new(std::sync::Mutex::new(serde_json::Value::Null));
    let got = wait_until(Duration::from_secs(60), || {
        let url = url.clone();
        let answer = answer.clone();
        async move {
            let Ok(r) = reqwest::Client::new()
                .get(&url)
                .query(&[("query", query)])
                .send()
                .await
            else {
                return false;
            };
            let Ok(v) = r.json::<serde_json::Value>().await else {
                return false;
            };
            *answer.lock().unwrap() = v.clone();
            v["data"]["result"][0]["value"][1] == "0.5"
        }
    })
    .await;
    assert!(
        got,
        "Prometheus's hit ratio: {}\n{}",
        answer.lock().unwrap(),
        std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
    );
    println!("Prometheus computed the hit ratio from wharf's counters: 0.5 (3 hits of 6)");

    // Every metric the dashboard queries is one wharf exposes.
    let text = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exposed = families(&text);
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../../deploy/grafana/wharf.json")).unwrap();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            for name in queried_metrics(target["expr"].as_str().unwrap()) {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|base| exposed.contains(*base))
                    .unwrap_or(&name);
                assert!(
                    exposed.contains(family),
                    "panel {:?} queries {name}, which /metrics does not have",
                    panel["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 30, "{checked} metric references checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_renders_the_status_page_during_a_herd() {
    let chromium = "/usr/bin/chromium";
    assert!(
        std::path::Path::new(chromium).exists(),
        "Debian's chromium package is needed (./test.sh installs it)"
    );
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let big = wharf_testkit::image::big_image(73, 16 * 1024 * 1024);
    Pusher::new(&registry.url(), PushAuth::None)
        .push_image("test/big", "v1", &big)
        .await
        .unwrap();
    let link = wharf_testkit::wan::WanLink::start(
        registry.host(),
        wharf_testkit::wan::LinkShape {
            // 32 s for the blob: Chromium has time to start twice while it downloads.
            bytes_per_sec: 512 * 1024,
            rtt: Duration::from_millis(20),
            cut_every: None,
            per_connection: None,
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_wharf, base) = start_wharf(dir.path(), &["--upstream", &link.url()], &[]).await;
    let layer = big.layers[0].clone();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let url = format!("{base}/v2/test/big/blobs/{}", layer.digest);
            tokio::spawn(async move {
                let r = reqwest::get(url).await.unwrap();
                r.bytes().await.unwrap().len()
            })
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(20), || {
            let url = format!("{base}/status.json");
            async move {
                let Ok(r) = reqwest::get(url).await else {
                    return false;
                };
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                v["downloads"][0]["received"].as_u64().unwrap_or(0) > 0
            }
        })
        .await,
        "a download in flight"
    );
    let profile = dir.path().join("chromium");
    let run = |args: Vec<String>| {
        let mut command = tokio::process::Command::new(chromium);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(args)
            .kill_on_drop(true);
        async move {
            tokio::time::timeout(Duration::from_secs(90), command.output())
                .await
                .expect("chromium finished within 90 s")
                .expect("chromium runs")
        }
    };
    let dom = run(vec!["--dump-dom".into(), format!("{base}/")]).await;
    let dom = String::from_utf8_lossy(&dom.stdout).to_string();
    assert!(dom.contains("Downloads in flight (1)"), "{dom}");
    assert!(
        dom.contains("of 16.0 MiB"),
        "progress of the download: {dom}"
    );
    assert!(dom.contains("test/big"), "the download's repository: {dom}");
    assert!(dom.contains(&link.url()), "the upstream's row: {dom}");
    assert!(dom.contains("this node"), "{dom}");
    let shot = dir.path().join("status.png");
    let out = run(vec![
        format!("--screenshot={}", shot.display()),
        "--window-size=1200,1000".into(),
        "--hide-scrollbars".into(),
        format!("{base}/"),
    ])
    .await;
    let png = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let after: serde_json::Value = reqwest::get(format!("{base}/status.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        after["downloads"].as_array().map(Vec::len),
        Some(1),
        "the screenshot was taken while the download was in flight"
    );
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    assert!(png.len() > 10_000, "{} bytes", png.len());
    println!(
        "status page rendered by Chromium during a herd: {} byte screenshot",
        png.len()
    );
    if let Some(to) = std::env::var_os("WHARF_SCREENSHOT_OUT") {
        std::fs::write(to, &png).unwrap();
    }
    for client in clients {
        assert_eq!(client.await.unwrap(), layer.data.len());
    }
}
