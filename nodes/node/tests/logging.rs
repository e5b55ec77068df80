//! The node's log writer: a thread of its own behind a bounded queue, so requests never wait
//! for stdout, a full queue drops (and counts) lines, and shutdown writes what is queued.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wharf_testkit::{free_port, wait_until};

struct Node {
    child: Child,
    url: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `wharf serve` on a free port logging at `level` to `stdout`.
async fn start(level: &str, stdout: Stdio, data: &std::path::Path) -> Node {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--upstream", "http://127.0.0.1:9"])
        .arg("--data-dir")
        .arg(data)
        .env("WHARF_LOG", level)
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let probe = format!("{url}/v2/");
    let up = wait_until(Duration::from_secs(20), || {
        let request = reqwest::get(probe.clone());
        async move { request.await.is_ok() }
    })
    .await;
    assert!(up, "wharf did not start");
    Node { child, url }
}

/// `n` requests for `/v2/` over `clients` connections; every one must succeed.
async fn requests(url: &str, n: usize, clients: usize) {
    let per_client = n / clients;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let url = format!("{url}/v2/");
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                for _ in 0..per_client {
                    let status = http.get(&url).send().await.unwrap().status();
                    assert!(status.is_success(), "{status}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// stdout is a pipe nobody reads (a stuck log shipper): once it is full, a node writing its
/// lines on the request path would stop answering. It answers on, and counts what it drops.
#[tokio::test]
async fn a_stuck_stdout_never_stalls_requests_and_dropped_lines_are_counted() {
    let data = tempfile::tempdir().unwrap();
    // Trace level: dozens of lines a request, far past the pipe's 64 KiB and the queue.
    let node = start("trace", Stdio::piped(), data.path()).await;
    let started = Instant::now();
    let done = tokio::time::timeout(Duration::from_secs(60), requests(&node.url, 20_000, 8)).await;
    assert!(
        done.is_ok(),
        "requests stalled behind a stdout nobody reads ({:?})",
        started.elapsed()
    );
    let metrics = reqwest::get(format!("{}/metrics", node.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wharf_log_lines_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("wharf_log_lines_dropped_total");
    eprintln!(
        "20,000 requests in {:?} with stdout stuck; {dropped} log lines dropped",
        started.elapsed()
    );
    assert!(dropped > 0, "nothing counted as dropped");
}

/// Lines queued when the node is told to stop (SIGTERM) are written before it exits.
#[tokio::test]
async fn every_access_line_is_written_by_shutdown() {
    let data = tempfile::tempdir().unwrap();
    let log_path = data.path().join("wharf.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut node = start("warn,wharf::access=info", Stdio::from(log), data.path()).await;
    requests(&node.url, 2_000, 4).await;
    let stopped = Command::new("kill")
        .args(["-TERM", &node.child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let exited = tokio::task::spawn_blocking(move || {
        let status = node.child.wait();
        (node, status)
    })
    .await
    .unwrap();
    assert!(exited.1.is_ok());
    let text = std::fs::read_to_string(&log_path).unwrap();
    let lines = text
        .lines()
        .filter(|l| l.contains("wharf::access") && l.contains("path=/v2/ "))
        .count();
    // The start-up probe's requests are logged too.
    assert!(lines >= 2_000, "{lines} access lines of 2,000 requests");
}
