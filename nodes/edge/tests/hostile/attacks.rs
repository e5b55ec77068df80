//! wharf attacked the way the world will: an upstream that lies, stalls, floods and sends
//! absurd headers, and clients that send garbage, dribble headers or hold idle connections.
//! The node stays up, answers with documented errors, caches nothing unverified, and keeps
//! serving what it has.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use wharf_testkit::sha256;

use crate::common::*;

/// What the fake upstream does for a path.
#[derive(Clone)]
enum Misbehaviour {
    /// A well-behaved blob.
    Good(Vec<u8>),
    /// 429 with this Retry-After.
    RateLimited(&'static str),
    /// Claims this Content-Length, sends these bytes, closes.
    LyingLength(u64, Vec<u8>),
    /// Chunked, never ending.
    Endless,
    /// Headers and some bytes, then nothing, forever.
    Stall(u64),
    /// A redirect to the same path.
    Loop,
    /// 200 with bytes that do not match the digest asked for.
    WrongBytes(Vec<u8>),
    /// A manifest announced as 1 GiB.
    HugeManifest,
    /// Headers no one can parse.
    Garbage,
    /// A refusal (403) after a pause.
    SlowDenied(Duration),
}

/// A raw-TCP upstream registry that demands a bearer token from a realm on plain HTTP whose
/// `expires_in` is absurd, then misbehaves per path.
async fn hostile_upstream(routes: BTreeMap<String, Misbehaviour>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let routes = routes.clone();
            tokio::spawn(async move {
                let _ = answer(socket, addr, &routes).await;
            });
        }
    });
    format!("http://{addr}")
}

async fn answer(
    mut socket: TcpStream,
    addr: std::net::SocketAddr,
    routes: &BTreeMap<String, Misbehaviour>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if socket.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
    let path = path.split('?').next().unwrap_or("/").to_string();
    let authorized = head.to_ascii_lowercase().contains("authorization: bearer");
    if path == "/token" {
        let body = r#"{"token":"t","expires_in":18446744073709551615}"#;
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        return socket.write_all(reply.as_bytes()).await;
    }
    if !authorized {
        let reply = format!(
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://{addr}/token\",service=\"hostile\"\r\nContent-Length: 0\r\n\r\n"
        );
        return socket.write_all(reply.as_bytes()).await;
    }
    let Some(behaviour) = routes.get(&path) else {
        let body = r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"unknown"}]}"#;
        let reply = format!(
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        return socket.write_all(reply.as_bytes()).await;
    };
    let head_only = head.starts_with("HEAD");
    match behaviour.clone() {
        Misbehaviour::Good(data) | Misbehaviour::WrongBytes(data) => {
            socket
                .write_all(
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", data.len()).as_bytes(),
                )
                .await?;
            if !head_only {
                socket.write_all(&data).await?;
            }
        }
        Misbehaviour::RateLimited(after) => {
            socket
                .write_all(format!("HTTP/1.1 429 Too Many Requests\r\nRetry-After: {after}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                .await?;
        }
        Misbehaviour::LyingLength(claimed, data) => {
            socket
                .write_all(
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {claimed}\r\n\r\n").as_bytes(),
                )
                .await?;
            socket.write_all(&data).await?;
        }
        Misbehaviour::Endless => {
            socket
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await?;
            let chunk = vec![b'x'; 64 * 1024];
            loop {
                socket
                    .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await?;
                socket.write_all(&chunk).await?;
                socket.write_all(b"\r\n").await?;
            }
        }
        Misbehaviour::Stall(claimed) => {
            socket
                .write_all(
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {claimed}\r\n\r\nsome bytes")
                        .as_bytes(),
                )
                .await?;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Misbehaviour::Loop => {
            socket
                .write_all(format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{addr}{path}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                .await?;
        }
        Misbehaviour::HugeManifest => {
            socket
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 1073741824\r\n\r\n{")
                .await?;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Misbehaviour::SlowDenied(pause) => {
            tokio::time::sleep(pause).await;
            socket
                .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                .await?;
        }
        Misbehaviour::Garbage => {
            socket
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: banana\r\n\x00\xff\r\n\r\n")
                .await?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_hostile_upstream_cannot_wedge_crash_or_poison_the_node() {
    let good = b"a good blob".repeat(1000);
    let good_digest = sha256(&good);
    let digest_of = |seed: &str| sha256(seed.as_bytes());
    let cases: Vec<(&str, String, Misbehaviour)> = vec![
        (
            "lying length",
            digest_of("lie"),
            Misbehaviour::LyingLength(100_000, vec![1; 5000]),
        ),
        (
            "endless chunked",
            digest_of("endless"),
            Misbehaviour::Endless,
        ),
        (
            "stall mid-body",
            digest_of("stall"),
            Misbehaviour::Stall(1_000_000),
        ),
        ("redirect loop", digest_of("loop"), Misbehaviour::Loop),
        (
            "wrong bytes",
            digest_of("right"),
            Misbehaviour::WrongBytes(b"wrong".to_vec()),
        ),
        (
            "garbage headers",
            digest_of("garbage"),
            Misbehaviour::Garbage,
        ),
    ];
    let mut routes = BTreeMap::new();
    routes.insert(
        format!("/v2/evil/repo/blobs/{good_digest}"),
        Misbehaviour::Good(good.clone()),
    );
    for (_, digest, behaviour) in &cases {
        routes.insert(format!("/v2/evil/repo/blobs/{digest}"), behaviour.clone());
    }
    routes.insert(
        "/v2/evil/repo/manifests/limited".into(),
        Misbehaviour::RateLimited("99999999999999999999999"),
    );
    routes.insert(
        "/v2/evil/repo/manifests/huge".into(),
        Misbehaviour::HugeManifest,
    );
    let url = hostile_upstream(routes).await;
    let mut config = test_config(vec![upstream("evil.example", &url, true)]);
    config.upstream_client.idle_timeout_secs = 2;
    config.upstream_client.first_byte_timeout_secs = 3;
    config.limits.max_blob_mib = 1;
    let wharf = Wharf::start(config).await;
    let http = reqwest::Client::new();
    let blob = |digest: &str| format!("{}/v2/evil/repo/blobs/{digest}", wharf.url);

    // Cached before the upstream turns hostile: the absurd expires_in neither panics nor sticks.
    let r = http.get(blob(&good_digest)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(hash_body(r).await.unwrap().0, good_digest);

    for (what, digest, _) in &cases {
        let started = Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(30), async {
            let r = http.get(blob(digest)).send().await?;
            let status = r.status();
            let body = hash_body(r).await;
            Ok::<_, reqwest::Error>((status, body.map(|b| b.0)))
        })
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 30 s"));
        // An error status, or a body cut off: never the whole blob, never a wedge.
        match outcome {
            Ok((status, body)) => {
                assert!(
                    !status.is_success()
                        || body.as_ref().is_err()
                        || body.as_ref().is_ok_and(|d| d != digest),
                    "{what}: {status} with a complete body"
                );
                if !status.is_success() {
                    assert_ne!(
                        status,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "{what}: an upstream's mistake is not a 500"
                    );
                }
            }
            Err(e) => assert!(
                e.is_body() || e.is_decode() || e.is_request(),
                "{what}: {e}"
            ),
        }
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "{what} took {:?}",
            started.elapsed()
        );
        // Nothing unverified was kept.
        assert_eq!(
            wharf
                .mirror
                .store
                .stat(&wharf_storage::ObjectKey::Blob(digest.parse().unwrap()))
                .await
                .unwrap(),
            None,
            "{what}: cached"
        );
    }

    // A Retry-After past u64: a bounded cool-down, passed on.
    let r = http
        .get(format!("{}/v2/evil/repo/manifests/limited", wharf.url))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(after <= 3600, "Retry-After {after}");
    let _ = tokio::time::sleep(Duration::from_millis(10)).await;

    // What is cached is still served, from the cache (the upstream is in its cool-down).
    let r = http.get(blob(&good_digest)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(hash_body(r).await.unwrap().0, good_digest);
    let health: serde_json::Value = http
        .get(format!("{}/health", wharf.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(
        wharf.mirror.blobs.downloads_in_flight(),
        0,
        "no download left hanging"
    );
}

#[tokio::test]
async fn another_registrys_refusal_does_not_reach_a_request_that_joined_its_download() {
    let (registry, seeds) = seeded_registry().await;
    let layer = &seeds.docker.layers[0];
    let mut routes = BTreeMap::new();
    routes.insert(
        format!("/v2/test/docker/blobs/{}", layer.digest),
        Misbehaviour::SlowDenied(Duration::from_millis(1500)),
    );
    let other = hostile_upstream(routes).await;
    let wharf = Wharf::start(test_config(vec![
        upstream("docker.io", &registry.url(), true),
        upstream("other.example", &other, false),
    ]))
    .await;
    let url = format!("{}/v2/test/docker/blobs/{}", wharf.url, layer.digest);
    // The other registry's request starts the download; ours joins it while it waits.
    let theirs = tokio::spawn(reqwest::get(format!("{url}?ns=other.example")));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let ours = reqwest::get(&url).await.unwrap();
    assert_eq!(
        ours.status(),
        StatusCode::OK,
        "the refusal was the other registry's"
    );
    assert_eq!(hash_body(ours).await.unwrap().0, layer.digest);
    let theirs = theirs.await.unwrap().unwrap();
    assert_eq!(theirs.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(theirs).await, "DENIED");
    assert_eq!(
        wharf_mirror::stats::Stats::get(&wharf.mirror.stats.coalesced_blob_requests),
        1,
        "ours joined theirs"
    );
}

#[tokio::test]
async fn a_gigabyte_manifest_is_refused_without_reading_it() {
    let mut routes = BTreeMap::new();
    routes.insert(
        "/v2/evil/repo/manifests/huge".into(),
        Misbehaviour::HugeManifest,
    );
    let url = hostile_upstream(routes).await;
    let wharf = Wharf::start(test_config(vec![upstream("evil.example", &url, true)])).await;
    let started = Instant::now();
    let r = reqwest::Client::new()
        .get(format!("{}/v2/evil/repo/manifests/huge", wharf.url))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Held by the tests that hold much memory (thousands of connections, the flood), so the
/// flood's memory figures are its own.
pub(crate) static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// This process's resident memory (the node runs in it), KiB.
pub(crate) fn rss_kib() -> u64 {
    wharf_testkit::registry::rss_kib(std::process::id()).unwrap_or(0)
}

/// Malformed and adversarial requests, generated from a seed.
fn adversarial_request(rng: &mut u64) -> Vec<u8> {
    let mut next = || {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    };
    let pick = |n: u64, r: u64| (r % n) as usize;
    let paths = [
        "/v2/",
        "/v2/../../etc/passwd",
        "/v2/%2e%2e/%2e%2e/blobs/sha256:00",
        "/v2/a/blobs/sha256:zz",
        "/v2/a/blobs/md5:abc",
        "/v2/UPPER/manifests/v1",
        "/v2/a//b/manifests/v1",
        "/v2/a/manifests/",
        "/v2/a/manifests/-tag",
        "/v2/a/tags/list?n=-1&last=%ff%fe",
        "/v2/a/tags/list?n=99999999999999999999999",
        "/v2/a/referrers/sha256:0",
        "/v2/_catalog?n=1",
        "/v2/a/blobs/uploads/",
        "/v2/a%00b/manifests/v1",
        "/v2/a/manifests/v1?ns=%",
        "/v2/a/manifests/v1?ns=evil.example",
        "/%",
        "*",
        "/v2/a/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000",
    ];
    let methods = [
        "GET", "HEAD", "POST", "DELETE", "PUT", "OPTIONS", "TRACE", "G\u{1}T", "CONNECT",
    ];
    let versions = [
        "HTTP/1.1",
        "HTTP/1.0",
        "HTTP/2.0",
        "HTTP/9",
        "",
        "HTTP/1.1 extra",
    ];
    let mut path = paths[pick(paths.len() as u64, next())].to_string();
    match next() % 6 {
        0 => path.push_str(&"a/".repeat(pick(600, next()))),
        1 => path.push_str(&"%".repeat(pick(50, next()))),
        2 => path = format!("/v2/{}/manifests/latest", "x".repeat(pick(9000, next()))),
        _ => {}
    }
    let mut out = format!(
        "{} {} {}\r\nHost: wharf\r\n",
        methods[pick(methods.len() as u64, next())],
        path,
        versions[pick(versions.len() as u64, next())]
    )
    .into_bytes();
    match next() % 8 {
        0 => out.extend_from_slice(b"Range: bytes=99999999999999999999-1\r\n"),
        1 => out.extend_from_slice(b"Range: bytes=-0,5-3,abc\r\n"),
        2 => out.extend_from_slice(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
        3 => out.extend_from_slice(b"Content-Length: 1\r\nContent-Length: 2\r\n"),
        4 => out.extend_from_slice(
            format!("X-Big: {}\r\n", "y".repeat(pick(20_000, next()))).as_bytes(),
        ),
        5 => out.extend_from_slice(b"Authorization: Basic \xff\xfe\r\n"),
        6 => out.extend_from_slice(b"Accept: \x80\x81\r\n"),
        _ => {}
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

#[tokio::test]
async fn a_hundred_thousand_adversarial_requests_cause_no_panic_and_no_500() {
    let _heavy = HEAVY.lock().await;
    let (registry, seeds) = seeded_registry().await;
    let wharf = Wharf::mirroring(&registry).await;
    let total: usize = 100_000;
    let rss_before = rss_kib();
    let mut rss_warm = 0;
    let statuses = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::<String, usize>::new()));
    let server_errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let started = Instant::now();
    // Two rounds: the first warms allocator and caches up, the second must not grow further.
    for round in 0..2u64 {
        let workers: Vec<_> = (0..16u64)
            .map(|w| {
                let (addr, statuses, server_errors) =
                    (wharf.host(), statuses.clone(), server_errors.clone());
                tokio::spawn(async move {
                    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (w + 1 + 16 * round);
                    for _ in 0..total / 32 {
                        let request = adversarial_request(&mut rng);
                        let Ok(mut socket) = TcpStream::connect(&addr).await else {
                            continue;
                        };
                        let _ = socket.write_all(&request).await;
                        let mut head = [0u8; 12];
                        let status = match tokio::time::timeout(
                            Duration::from_secs(10),
                            socket.read(&mut head),
                        )
                        .await
                        {
                            Ok(Ok(n)) if n >= 12 => {
                                String::from_utf8_lossy(&head[9..12]).to_string()
                            }
                            Ok(_) => "closed".into(),
                            Err(_) => "timeout".into(),
                        };
                        if status.starts_with('5') {
                            let line = String::from_utf8_lossy(&request);
                            let mut errors = server_errors.lock().unwrap();
                            if errors.len() < 10 {
                                errors
                                    .push(format!("{status} for {}", &line[..line.len().min(300)]));
                            }
                        }
                        *statuses.lock().unwrap().entry(status).or_default() += 1;
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.unwrap();
        }
        if round == 0 {
            rss_warm = rss_kib();
        }
    }
    let statuses = statuses.lock().unwrap().clone();
    println!(
        "{} adversarial requests in {:?}: {statuses:?}",
        total,
        started.elapsed()
    );
    assert_eq!(statuses.values().sum::<usize>(), total);
    let rss_after = rss_kib();
    let grown = rss_after.saturating_sub(rss_warm);
    println!(
        "RSS {} → {} → {} MiB over two rounds of 50,000 requests",
        rss_before / 1024,
        rss_warm / 1024,
        rss_after / 1024
    );
    assert!(rss_before > 0 && rss_after > 0, "RSS is read");
    assert!(
        grown < 64 * 1024,
        "RSS grew by {} MiB after warming up",
        grown / 1024
    );
    for (status, n) in &statuses {
        assert!(
            !status.starts_with('5'),
            "{n} answers with {status}: {:#?}",
            server_errors.lock().unwrap()
        );
        assert_ne!(status, "timeout", "{n} requests got no answer");
    }
    // Still a working mirror.
    let layer = &seeds.docker.layers[0];
    let r = reqwest::get(format!(
        "{}/v2/test/docker/blobs/{}",
        wharf.url, layer.digest
    ))
    .await
    .unwrap();
    assert_eq!(hash_body(r).await.unwrap().0, layer.digest);
}

#[tokio::test]
async fn slowloris_and_idle_connections_do_not_starve_real_clients() {
    let _heavy = HEAVY.lock().await;
    let (registry, seeds) = seeded_registry().await;
    let mut config = test_config(vec![upstream("docker.io", &registry.url(), true)]);
    config.limits.header_read_timeout_secs = 2;
    let wharf = Wharf::start(config).await;
    // Thousands of idle connections and a slowloris dribbling a header a byte at a time.
    let mut idle = Vec::new();
    for _ in 0..4000 {
        idle.push(TcpStream::connect(wharf.host()).await.unwrap());
    }
    let mut slow = TcpStream::connect(wharf.host()).await.unwrap();
    let dribble = tokio::spawn(async move {
        let started = Instant::now();
        for byte in b"GET /v2/ HTTP/1.1\r\nX-Slow: "
            .iter()
            .chain(b"z".repeat(100).iter())
        {
            if slow.write_all(&[*byte]).await.is_err() {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Duration::MAX
    });
    let layer = &seeds.docker.layers[0];
    let started = Instant::now();
    let r = reqwest::get(format!(
        "{}/v2/test/docker/blobs/{}",
        wharf.url, layer.digest
    ))
    .await
    .unwrap();
    assert_eq!(hash_body(r).await.unwrap().0, layer.digest);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "served in {:?}",
        started.elapsed()
    );
    let cut_after = dribble.await.unwrap();
    assert!(
        cut_after < Duration::from_secs(10),
        "slowloris kept its connection for {cut_after:?}"
    );
    // The idle connections were closed by the header timeout too.
    let closed = futures::future::join_all(idle.into_iter().map(|mut socket| async move {
        let mut buf = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }))
    .await;
    assert_eq!(
        closed.iter().filter(|c| **c).count(),
        4000,
        "idle connections closed by the server"
    );
}

#[tokio::test]
async fn pipelined_requests_on_one_connection_are_all_answered_in_order() {
    let (registry, seeds) = seeded_registry().await;
    let wharf = Wharf::mirroring(&registry).await;
    let layer = &seeds.docker.layers[0];
    let mut batch = Vec::new();
    let paths = [
        "/v2/".to_string(),
        format!("/v2/test/docker/blobs/{}", layer.digest),
        "/v2/test/docker/manifests/v1".to_string(),
        "/v2/UPPER/manifests/v1".to_string(),
        "/v2/test/docker/blobs/sha256:zz".to_string(),
    ];
    for i in 0..50 {
        let path = &paths[i % paths.len()];
        batch.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: wharf\r\n\r\n").as_bytes());
    }
    let mut socket = TcpStream::connect(wharf.host()).await.unwrap();
    socket.write_all(&batch).await.unwrap();
    // Read until the fiftieth status line has arrived (and its response is complete enough).
    let mut answers = Vec::new();
    let count = |a: &[u8]| String::from_utf8_lossy(a).matches("HTTP/1.1 ").count();
    let all = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = vec![0u8; 1 << 16];
        while count(&answers) < 50 {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answers.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(all.is_ok(), "not all 50 answered within 30 s");
    let text = String::from_utf8_lossy(&answers);
    let statuses: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| &text[at + 9..at + 12])
        .collect();
    assert_eq!(statuses.len(), 50, "{statuses:?}");
    for (i, status) in statuses.iter().enumerate() {
        let want = match i % paths.len() {
            0..=2 => "200",
            _ => "400",
        };
        assert_eq!(*status, want, "request {i} ({})", paths[i % paths.len()]);
    }
}

/// Review #4: HTTP/2 holders cannot starve the node. With every connection slot taken by h2c
/// connections that only answer PINGs, or that hold a stream at a zero flow-control window,
/// a normal client is still served within 2 s: idle ones are closed after the header
/// timeout, stalled ones after the send timeout.
#[tokio::test]
async fn idle_and_zero_window_http2_connections_do_not_starve_real_clients() {
    let (registry, seeds) = seeded_registry().await;
    let mut config = test_config(vec![upstream("docker.io", &registry.url(), true)]);
    config.limits.max_connections = 4;
    config.limits.header_read_timeout_secs = 1;
    config.limits.send_timeout_secs = 1;
    let wharf = Wharf::start(config).await;
    let layer = &seeds.docker.layers[0];
    let blob = format!("/v2/test/docker/blobs/{}", layer.digest);
    let warm = reqwest::get(format!("{}{blob}", wharf.url)).await.unwrap();
    assert_eq!(hash_body(warm).await.unwrap().0, layer.digest);

    let mut held = Vec::new();
    // Two h2c connections that say nothing after the preface and SETTINGS.
    for _ in 0..2 {
        let tcp = TcpStream::connect(wharf.host()).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        held.push((client, tokio::spawn(connection)));
    }
    // Two that ask for the blob and never open their window.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let tcp = TcpStream::connect(wharf.host()).await.unwrap();
        let (client, connection) = h2::client::Builder::new()
            .initial_window_size(0)
            .handshake::<_, bytes::Bytes>(tcp)
            .await
            .unwrap();
        let connection = tokio::spawn(connection);
        let mut client = client.ready().await.unwrap();
        let request = http::Request::get(format!("http://{}{blob}", wharf.host()))
            .body(())
            .unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        stalled.push((client, connection, response));
    }
    // Let all four be accepted and start their streams before the client comes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        reqwest::get(format!("{}/v2/", wharf.url)),
    )
    .await
    .expect("served at all")
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "served after {:?}",
        started.elapsed()
    );
    // Every holder was cut off by the server.
    for (_, connection) in held {
        let ended = tokio::time::timeout(Duration::from_secs(5), connection).await;
        assert!(ended.is_ok(), "an idle h2c connection is still open");
    }
    for (_, connection, _) in stalled {
        let ended = tokio::time::timeout(Duration::from_secs(5), connection).await;
        assert!(ended.is_ok(), "a zero-window connection is still open");
    }
}
