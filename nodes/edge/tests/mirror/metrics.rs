//! `/metrics` after a known sequence (cold pull, warm pull, herd, upstream outage, a 429 with
//! Docker Hub's `ratelimit-*` headers): exact counter values, the whole output parsed by a
//! Prometheus text parser, bounded labels; and `/status.json` and `/` during a download.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use wharf_testkit::wan::{LinkShape, WanLink};

use crate::common::*;

struct Scrape {
    text: String,
    parsed: prometheus_parse::Scrape,
}

impl Scrape {
    async fn of(wharf: &Wharf) -> Scrape {
        let r = reqwest::get(format!("{}/metrics", wharf.url))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = r.text().await.unwrap();
        let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{text}"));
        Scrape { text, parsed }
    }

    /// The sum of the samples of `name` carrying all of `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.parsed
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    }

    fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.parsed
            .samples
            .iter()
            .any(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
    }
}

/// `test/big:v1`, one layer of `mib` MiB from `seed`, pushed to `registry`, and a link to the
/// registry carrying `mib_per_sec`, so that clients of one cold blob overlap.
async fn big_image_behind_a_slow_link(
    registry: &wharf_testkit::registry::Registry,
    seed: u64,
    mib: usize,
    mib_per_sec: u64,
) -> (wharf_testkit::image::Image, WanLink) {
    let big = wharf_testkit::image::big_image(seed, mib * 1024 * 1024);
    wharf_testkit::push::Pusher::new(&registry.url(), wharf_testkit::push::PushAuth::None)
        .push_image("test/big", "v1", &big)
        .await
        .unwrap();
    let link = WanLink::start(
        registry.host(),
        LinkShape {
            bytes_per_sec: mib_per_sec * 1024 * 1024,
            rtt: Duration::from_millis(10),
            cut_every: None,
            per_connection: None,
        },
    )
    .await
    .unwrap();
    (big, link)
}

/// A Docker Hub stand-in that answers every request with 429 and its rate-limit headers.
async fn throttling_upstream() -> (String, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    let app = axum::Router::new().fallback(move || {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            (
                StatusCode::TOO_MANY_REQUESTS,
                [
                    ("ratelimit-limit", "100;w=21600"),
                    ("ratelimit-remaining", "0;w=21600"),
                    ("retry-after", "30"),
                    ("content-type", "application/json"),
                ],
                r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"pull rate limit"}]}"#,
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_sequence_exactly() {
    let (mut registry, seeds) = seeded_registry().await;
    // The herd's upstream: the same registry behind a slow link, so the clients overlap.
    let (big, link) = big_image_behind_a_slow_link(&registry, 71, 4, 8).await;
    let (hub_url, hub_requests) = throttling_upstream().await;
    // The pushes' own requests, logged before wharf sends any.
    let upstream_requests =
        || registry.count_matching("GET", "/v2/") + registry.count_matching("HEAD", "/v2/");
    let pushed = upstream_requests();
    let mut config = test_config(vec![
        upstream("docker.io", &registry.url(), true),
        upstream("slow", &link.url(), false),
        upstream("hub", &hub_url, false),
    ]);
    config.cache.tag_ttl_secs = 1;
    let wharf = Wharf::start(config).await;
    let http = reqwest::Client::new();
    let get = |path: String| {
        let request = http
            .get(format!("{}{path}", wharf.url))
            .header("accept", ACCEPT_ALL)
            .send();
        async move { request.await.unwrap() }
    };
    let image = &seeds.docker;
    let blob_bytes: u64 = image.blobs().iter().map(|b| b.data.len() as u64).sum();
    let manifest_bytes = image.manifest.body.len() as u64;

    // Cold, then warm: the same image twice, the second pass once every download is stored.
    for _ in 0..2 {
        wharf.settled().await;
        let r = get("/v2/test/docker/manifests/v1".into()).await;
        assert_eq!(r.status(), StatusCode::OK);
        r.bytes().await.unwrap();
        for blob in image.blobs() {
            let r = get(format!("/v2/test/docker/blobs/{}", blob.digest)).await;
            assert_eq!(hash_body(r).await.unwrap().0, blob.digest);
        }
    }
    let s = Scrape::of(&wharf).await;
    let cache = |kind: &str, result: &str| {
        s.sum(
            "wharf_cache_requests_total",
            &[
                ("upstream", "docker.io"),
                ("type", kind),
                ("result", result),
            ],
        )
    };
    assert_eq!(cache("manifest", "miss"), 1.0, "{}", s.text);
    assert_eq!(cache("manifest", "hit"), 1.0);
    assert_eq!(cache("blob", "miss"), 3.0);
    assert_eq!(cache("blob", "hit"), 3.0);
    assert_eq!(
        s.sum(
            "wharf_cache_served_bytes_total",
            &[("upstream", "docker.io"), ("result", "hit")]
        ),
        (manifest_bytes + blob_bytes) as f64,
        "bytes served from the cache"
    );
    assert_eq!(
        s.sum(
            "wharf_http_requests_total",
            &[("method", "GET"), ("route", "blob"), ("code", "200")]
        ),
        6.0
    );
    assert_eq!(
        s.sum("wharf_http_response_bytes_total", &[("route", "blob")]),
        (2 * blob_bytes) as f64
    );
    // Every upstream request the registry logged, and no other, is counted.
    assert!(
        wharf_testkit::wait_until(Duration::from_secs(5), || async {
            upstream_requests() >= pushed + 4
        })
        .await
    );
    let logged = upstream_requests() - pushed;
    assert_eq!(
        s.sum(
            "wharf_upstream_requests_total",
            &[("upstream", "docker.io")]
        ),
        logged as f64
    );
    assert_eq!(
        s.sum("wharf_upstream_bytes_total", &[("upstream", "docker.io")]),
        (manifest_bytes + blob_bytes) as f64
    );
    assert!(
        s.text
            .contains("# TYPE wharf_http_request_duration_seconds histogram")
    );
    assert_eq!(
        s.sum("wharf_store_up", &[]),
        1.0,
        "the store answered every call"
    );
    assert!(s.has(
        "wharf_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))]
    ));

    // A herd of 8 on one cold blob over the slow link: one miss, the rest joined it.
    let layer = &big.layers[0];
    let herd: Vec<_> = (0..8)
        .map(|_| {
            let (http, url) = (
                http.clone(),
                format!("{}/v2/test/big/blobs/{}?ns=slow", wharf.url, layer.digest),
            );
            tokio::spawn(async move { hash_body(http.get(url).send().await.unwrap()).await })
        })
        .collect();
    for client in herd {
        assert_eq!(client.await.unwrap().unwrap().0, layer.digest);
    }
    let s = Scrape::of(&wharf).await;
    let slow = |result: &str| {
        s.sum(
            "wharf_cache_requests_total",
            &[("upstream", "slow"), ("type", "blob"), ("result", result)],
        )
    };
    assert_eq!(slow("miss"), 1.0, "{}", s.text);
    assert_eq!(slow("coalesced") + slow("hit"), 7.0);
    assert!(slow("coalesced") >= 1.0, "the herd overlapped");
    assert_eq!(
        s.sum("wharf_upstream_bytes_total", &[("upstream", "slow")]),
        layer.data.len() as f64,
        "the blob crossed the link once"
    );
    // The download leaves the registry once the blob is stored, just after its last byte.
    let mut in_flight = 1.0;
    for _ in 0..50 {
        in_flight = Scrape::of(&wharf)
            .await
            .sum("wharf_downloads_in_flight", &[]);
        if in_flight == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(in_flight, 0.0, "the gauge comes back to 0");

    // The upstream goes down: the expired tag is served stale, an uncached blob fails.
    registry.stop();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = get("/v2/test/docker/manifests/v1".into()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = get(format!("/v2/test/oci/blobs/{}", seeds.oci.layers[0].digest)).await;
    assert!(r.status().is_server_error(), "{}", r.status());
    let code = r.status().as_u16().to_string();
    let s = Scrape::of(&wharf).await;
    assert_eq!(
        s.sum(
            "wharf_cache_requests_total",
            &[
                ("upstream", "docker.io"),
                ("type", "manifest"),
                ("result", "stale")
            ]
        ),
        1.0
    );
    assert_eq!(
        s.sum("wharf_download_failures_total", &[("reason", "upstream")]),
        1.0
    );
    assert_eq!(
        s.sum(
            "wharf_http_requests_total",
            &[("route", "blob"), ("code", code.as_str())]
        ),
        1.0
    );
    assert!(
        s.sum(
            "wharf_upstream_requests_total",
            &[("upstream", "docker.io"), ("code", "0")]
        ) >= 1.0,
        "requests that got no answer count as code 0"
    );

    // Docker Hub says no: the 429s and the allowance it announced.
    let r = get("/v2/library/alpine/manifests/3?ns=hub".into()).await;
    assert!(!r.status().is_success());
    let s = Scrape::of(&wharf).await;
    let throttled = hub_requests.load(Ordering::SeqCst);
    assert!(throttled >= 1);
    assert_eq!(
        s.sum("wharf_upstream_throttled_total", &[("upstream", "hub")]),
        throttled as f64
    );
    assert_eq!(
        s.sum("wharf_upstream_ratelimit_limit", &[("upstream", "hub")]),
        100.0
    );
    assert_eq!(
        s.sum("wharf_upstream_ratelimit_remaining", &[("upstream", "hub")]),
        0.0
    );
    assert!(
        !s.has(
            "wharf_upstream_ratelimit_remaining",
            &[("upstream", "docker.io")]
        ),
        "absent where the upstream sends none"
    );

    // Bounded labels: no repository, digest or client address anywhere.
    for sample in &s.parsed.samples {
        for (k, v) in sample.labels.iter() {
            assert!(
                !v.contains("test/") && !v.contains("sha256") && !v.contains("127.0.0.1"),
                "{} has {k}={v}",
                sample.metric
            );
        }
    }
    let series = s.parsed.samples.len();
    assert!(series < 400, "{series} series");

    // OpenMetrics when asked.
    let r = http
        .get(format!("{}/metrics", wharf.url))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(r.text().await.unwrap().ends_with("# EOF\n"));

    // The status page's data agrees, and shows the failing upstream and the error.
    let status = status_json(&wharf).await;
    let hub = status["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "hub")
        .unwrap();
    assert_eq!(hub["ratelimit_remaining"], 0);
    assert_eq!(hub["healthy"], false);
    assert!(!status["recent_errors"].as_array().unwrap().is_empty());
    assert!(status["cache"]["hit_ratio"].as_f64().unwrap() > 0.0);
    assert!(!status.to_string().contains("password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_a_download_in_flight() {
    let (registry, _seeds) = seeded_registry().await;
    let (big, link) = big_image_behind_a_slow_link(&registry, 72, 8, 2).await;
    let wharf = Wharf::start(test_config(vec![upstream("docker.io", &link.url(), true)])).await;
    let layer = big.layers[0].clone();
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let url = format!("{}/v2/test/big/blobs/{}", wharf.url, layer.digest);
            tokio::spawn(async move { hash_body(reqwest::get(url).await.unwrap()).await })
        })
        .collect();
    let mut seen = None;
    for _ in 0..100 {
        let status = status_json(&wharf).await;
        if let Some(d) = status["downloads"].as_array().and_then(|d| d.first())
            && d["received"].as_u64().unwrap_or(0) > 0
            && d["waiters"].as_u64().unwrap_or(0) >= 1
        {
            seen = Some(d.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let d = seen.expect("a download in flight with bytes and waiting clients");
    assert_eq!(d["digest"], layer.digest.as_str());
    assert_eq!(d["size"], layer.data.len() as u64);
    assert_eq!(d["source"], "upstream");
    let page = reqwest::get(format!("{}/", wharf.url)).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("Downloads in flight (1)"), "{html}");
    assert!(html.contains("of 8.0 MiB"), "{html}");
    assert!(html.contains("test/big"), "{html}");
    for client in clients {
        assert_eq!(client.await.unwrap().unwrap().0, layer.digest);
    }
}
