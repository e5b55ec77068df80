//! `wharf health`: the container health check (a scratch image has no shell or curl). Probes
//! the local node's `/health` and exits 0 when it answers `ok` or `degraded` (a degraded node
//! still serves, passing content through: restarting it would not mend its store).

use std::time::Duration;

use anyhow::{Context, bail};
use wharf_core::config::Config;

/// Bodies of `/health` are small; a larger answer is not wharf's.
const MAX_BODY: usize = 64 * 1024;

/// Where the local node answers `/health`: the operator listener when there is one (plain
/// HTTP, no client auth), else the main listener; a wildcard address is probed on loopback.
pub fn url_for(config: &Config) -> String {
    let (listen, scheme) = if config.metrics.listen.is_empty() {
        let scheme = if config.tls.enabled() {
            "https"
        } else {
            "http"
        };
        (config.listen.as_str(), scheme)
    } else {
        (config.metrics.listen.as_str(), "http")
    };
    let port = listen.rsplit_once(':').map_or("5000", |(_, port)| port);
    let host = match listen.rsplit_once(':').map(|(host, _)| host) {
        None | Some("" | "0.0.0.0" | "[::]" | "::") => "127.0.0.1",
        Some(host) => host,
    };
    format!("{scheme}://{host}:{port}/health")
}

/// Probe `url`; the node's status on success.
pub async fn probe(url: &str) -> anyhow::Result<String> {
    // A loopback probe of this node: its own certificate need not name 127.0.0.1.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(4))
        .tls_danger_accept_invalid_certs(true)
        .build()
        .context("building the HTTP client")?;
    let mut response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("{url} did not answer"))?;
    if !response.status().is_success() {
        bail!("{url} answered {}", response.status());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.context("reading /health")? {
        if body.len() + chunk.len() > MAX_BODY {
            bail!("{url} sent more than {MAX_BODY} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    let report: serde_json::Value =
        serde_json::from_slice(&body).with_context(|| format!("{url} did not send JSON"))?;
    match report["status"].as_str() {
        Some(status @ ("ok" | "degraded")) => Ok(status.to_string()),
        other => bail!("{url}: status {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_goes_to_loopback_on_the_right_listener() {
        let mut config = Config {
            listen: "0.0.0.0:5000".into(),
            ..Config::default()
        };
        assert_eq!(url_for(&config), "http://127.0.0.1:5000/health");
        config.listen = "10.1.2.3:5443".into();
        config.tls.cert_file = "/tls/cert.pem".into();
        assert_eq!(url_for(&config), "https://10.1.2.3:5443/health");
        config.metrics.listen = "0.0.0.0:9090".into();
        assert_eq!(url_for(&config), "http://127.0.0.1:9090/health");
    }
}
