//! Real test fixtures for wharf (used by integration tests and the load test, never by the node):
//!
//! - [`registry`]: CNCF distribution (Debian's `docker-registry`) started as a process on
//!   loopback, as an upstream (anonymous, htpasswd or token auth) or as a `proxy:` mirror,
//!   with its access log readable to count upstream requests.
//! - [`image`]: deterministic synthetic images (Docker schema2, OCI, indexes, large blobs).
//! - [`push`]: seeding through the v2 push API.
//! - [`token`]: a token issuer signing ES256 JWTs that distribution verifies for real.
//! - [`tls`]: a test CA with server and client certificates (openssl).
//! - [`idp`]: an external JWT issuer (ES256 key, JWKS, tokens good and bad).
//! - [`proxy`]: an HTTP proxy that corrupts blob bodies or announces a pull allowance on demand.
//! - [`nginx`]: Debian's nginx as a caching reverse proxy (a CDN stand-in) in front of wharf.
//! - [`s3`]: a real S3-compatible server process (moto) on loopback.
//! - [`wan`]: a bandwidth- and latency-shaped TCP link between a mirror and its upstream.
//! - [`cluster`]: a wharf cluster of real processes over one bucket, with kill, restart and
//!   partition controls.
#![allow(clippy::unwrap_used)]

pub mod cluster;
pub mod idp;
pub mod image;
pub mod nginx;
pub mod proxy;
pub mod push;
pub mod registry;
pub mod s3;
pub mod tls;
pub mod token;
pub mod wan;

use std::time::{Duration, Instant};

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// Poll `check` until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Wait until something answers HTTP at `url` (any status), up to `timeout`.
pub async fn wait_for_http(url: &str, timeout: Duration) -> bool {
    let http = reqwest::Client::new();
    wait_until(timeout, || {
        let request = http.get(url).send();
        async move { request.await.is_ok() }
    })
    .await
}

/// `sha256:<hex>` of some bytes.
pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Is a program on `PATH`?
pub fn have_program(name: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success())
}
