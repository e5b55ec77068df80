//! Access logs of the `wharf` binary: one JSON line per request with `WHARF_LOG_FORMAT=json`,
//! carrying what was sent (bytes, status), how long it took, the cache result, the upstream,
//! the client address and the request id the response returned.
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
    let log = dir.path().join("wharf.log");
    let out = std::fs::File::create(&log).unwrap();
    let port = free_port();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let wharf = Kill(
        Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--upstream", &registry.url(), "--data-dir"])
            .arg(dir.path().join("data"))
            .env("WHARF_LOG_FORMAT", "json")
            .env("WHARF_LOG", "info")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    assert!(
        wait_until(Duration::from_secs(20), || {
            let url = format!("{base}/v2/");
            async move { reqwest::get(url).await.is_ok() }
        })
        .await
    );
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
