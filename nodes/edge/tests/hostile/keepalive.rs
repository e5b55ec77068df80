//! Idle keep-alive connections: thousands of them cost little memory, and a connection that
//! went idle between requests serves its next ones exactly as before (split heads, pipelined
//! requests, `HEAD`, `Connection: close`).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::attacks::{HEAVY, rss_kib};
use crate::common::*;

/// Read one HTTP/1.1 response (headers and a `Content-Length` body; none for `HEAD`) from
/// `socket`, keeping bytes past it in `pending`: its status and body.
async fn response(socket: &mut TcpStream, pending: &mut Vec<u8>, head: bool) -> (u16, Vec<u8>) {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&pending[..end]).to_string();
            let status = text[9..12].parse().unwrap();
            let length: usize = text
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            let body_len = if head { 0 } else { length };
            if pending.len() >= end + 4 + body_len {
                let body = pending[end + 4..end + 4 + body_len].to_vec();
                pending.drain(..end + 4 + body_len);
                return (status, body);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buf))
            .await
            .expect("a response within 10 s")
            .expect("read");
        assert!(n > 0, "the connection closed mid-response: {pending:?}");
        pending.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn a_connection_idle_between_requests_serves_its_next_ones_unchanged() {
    let (registry, seeds) = seeded_registry().await;
    let wharf = Wharf::mirroring(&registry).await;
    let layer = &seeds.docker.layers[0];
    let blob = format!("/v2/test/docker/blobs/{}", layer.digest);
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: wharf\r\n\r\n").into_bytes();
    let mut socket = TcpStream::connect(wharf.host()).await.unwrap();
    let mut pending = Vec::new();

    socket.write_all(&get(&blob)).await.unwrap();
    let (status, body) = response(&mut socket, &mut pending, false).await;
    assert_eq!(
        (status, wharf_testkit::sha256(&body)),
        (200, layer.digest.clone())
    );

    // Idle, then a head split mid-line and mid-end across pauses.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let request = get(&blob);
    let (a, rest) = request.split_at(20);
    let (b, c) = rest.split_at(rest.len() - 2);
    for part in [a, b, c] {
        socket.write_all(part).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let (status, body) = response(&mut socket, &mut pending, false).await;
    assert_eq!(
        (status, wharf_testkit::sha256(&body)),
        (200, layer.digest.clone())
    );

    // Idle, then three pipelined requests in one write, one of them HEAD.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut batch = get("/v2/");
    batch.extend(format!("HEAD {blob} HTTP/1.1\r\nHost: wharf\r\n\r\n").into_bytes());
    batch.extend(get(&blob));
    socket.write_all(&batch).await.unwrap();
    assert_eq!(response(&mut socket, &mut pending, false).await.0, 200);
    assert_eq!(
        response(&mut socket, &mut pending, true).await,
        (200, vec![])
    );
    let (status, body) = response(&mut socket, &mut pending, false).await;
    assert_eq!((status, body.len()), (200, layer.data.len()));

    // Idle, then a request that asks to close: answered, then closed by the node.
    tokio::time::sleep(Duration::from_millis(300)).await;
    socket
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: wharf\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(response(&mut socket, &mut pending, false).await.0, 200);
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut rest))
        .await
        .expect("closed within 5 s")
        .unwrap();
    assert!(
        rest.is_empty() && pending.is_empty(),
        "{rest:?} {pending:?}"
    );
}

/// Issue 25: an idle keep-alive connection holds no HTTP state (hyper's two 8 KiB buffers
/// and its connection were 26 KiB a connection).
#[tokio::test]
async fn thousands_of_idle_keep_alive_connections_cost_little_memory() {
    const CONNECTIONS: usize = 4000;
    let _heavy = HEAVY.lock().await;
    let (registry, _seeds) = seeded_registry().await;
    let wharf = Wharf::mirroring(&registry).await;
    let request = b"GET /v2/ HTTP/1.1\r\nHost: wharf\r\n\r\n";
    // A first hundred warms the runtime and the allocator; they stay open, so nothing the
    // measured ones allocate can reuse memory freed by them.
    let mut open = Vec::with_capacity(CONNECTIONS + 100);
    let mut pending = Vec::new();
    let mut connect = async |open: &mut Vec<TcpStream>| {
        let mut socket = TcpStream::connect(wharf.host()).await.unwrap();
        socket.write_all(request).await.unwrap();
        assert_eq!(response(&mut socket, &mut pending, false).await.0, 200);
        open.push(socket);
    };
    for _ in 0..100 {
        connect(&mut open).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib();
    for _ in 0..CONNECTIONS {
        connect(&mut open).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_connection = rss_kib().saturating_sub(before) as f64 / CONNECTIONS as f64;
    eprintln!("{per_connection:.1} KiB per idle keep-alive connection, client side included");
    // The client's own sockets are in this process too (well under 1 KiB each).
    assert!(
        per_connection < 6.0,
        "{per_connection:.1} KiB per idle keep-alive connection"
    );
    // Every one of them still answers.
    for socket in open.iter_mut().step_by(97) {
        socket.write_all(request).await.unwrap();
        assert_eq!(response(socket, &mut pending, false).await.0, 200);
    }
}

/// A client whose HTTP/2 preface arrives in pieces is still recognised as h2c once the rest
/// comes (the accept path looks again after pauses that grow, bounded by the header timeout).
#[tokio::test]
async fn an_h2c_preface_that_arrives_in_pieces_is_still_served_as_http2() {
    let (registry, _seeds) = seeded_registry().await;
    let wharf = Wharf::mirroring(&registry).await;
    let mut socket = TcpStream::connect(wharf.host()).await.unwrap();
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    socket.write_all(&preface[..3]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    socket.write_all(&preface[3..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    socket.write_all(&preface[10..]).await.unwrap();
    // An empty SETTINGS frame: the server answers with its own SETTINGS.
    socket
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut frame = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), socket.read_exact(&mut frame))
        .await
        .expect("an HTTP/2 frame within 5 s")
        .unwrap();
    assert_eq!(
        frame[3], 4,
        "a SETTINGS frame, not an HTTP/1 answer: {frame:?}"
    );
}
