//! Which upstream a request goes to: containerd's `?ns=<registry host>`, else the default.
//! Only configured upstreams are ever contacted: wharf is not an open proxy.

use std::sync::Arc;

use wharf_core::OciCode;
use wharf_core::config::Config;
use wharf_metrics::Metrics;
use wharf_upstream::{UpstreamClient, UpstreamError};

use crate::error::ApiError;

pub struct Upstreams {
    clients: Vec<Arc<UpstreamClient>>,
    default: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamsError {
    #[error("upstream {name}: {source}")]
    Client { name: String, source: UpstreamError },
    #[error(transparent)]
    Config(#[from] wharf_core::config::ConfigError),
}

impl Upstreams {
    /// The configured upstreams' clients, recording into `metrics`.
    pub fn from_config(
        config: &Config,
        metrics: &Arc<Metrics>,
    ) -> Result<Upstreams, UpstreamsError> {
        let mut clients = Vec::new();
        for upstream in &config.upstreams {
            let password = upstream.resolved_password(config.allow_world_readable_secrets)?;
            let client = UpstreamClient::new(upstream, password, &config.upstream_client).map_err(
                |source| UpstreamsError::Client {
                    name: upstream.name.clone(),
                    source,
                },
            )?;
            clients.push(Arc::new(
                client.with_metrics(metrics.upstream(&upstream.name)),
            ));
        }
        let default = config
            .upstreams
            .iter()
            .position(|u| u.default)
            .or((config.upstreams.len() == 1).then_some(0));
        Ok(Upstreams { clients, default })
    }

    /// Every configured upstream's client, in configuration order.
    pub fn clients(&self) -> &[Arc<UpstreamClient>] {
        &self.clients
    }

    pub fn select(&self, ns: Option<&str>) -> Result<&Arc<UpstreamClient>, ApiError> {
        match ns {
            Some(ns) => self.clients.iter().find(|c| c.name() == ns).ok_or_else(|| {
                ApiError::new(
                    OciCode::Denied,
                    format!("upstream registry {ns:?} is not configured on this mirror"),
                )
            }),
            None => self
                .default
                .and_then(|i| self.clients.get(i))
                .ok_or_else(|| {
                    ApiError::new(
                        OciCode::Denied,
                        "this mirror has no default upstream: name one with ?ns=<registry host>",
                    )
                }),
        }
    }
}
