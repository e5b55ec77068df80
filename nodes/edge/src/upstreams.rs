//! Which upstream a request goes to: containerd's `?ns=<registry host>`, else the default.
//! Only configured upstreams are ever contacted: wharf is not an open proxy. A regional tier
//! may name its parent once for every registry (`name = "*"`, `parent = true`): any other
//! `ns=` then goes to that parent, which decides whether it mirrors that registry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wharf_core::OciCode;
use wharf_core::config::{Config, UpstreamClientConfig, UpstreamConfig};
use wharf_metrics::Metrics;
use wharf_upstream::{UpstreamClient, UpstreamError};

use crate::error::ApiError;

/// Registries forwarded through a `"*"` parent at most; past it, others are refused.
pub const MAX_FORWARDED_REGISTRIES: usize = 64;

pub struct Upstreams {
    clients: Vec<Arc<UpstreamClient>>,
    default: Option<usize>,
    any: Option<AnyRegistry>,
}

/// The `name = "*"` parent: one client per registry named in `ns=`, made on first use (each
/// keeps its own tokens, health and cache namespace).
struct AnyRegistry {
    template: UpstreamConfig,
    password: Option<String>,
    settings: UpstreamClientConfig,
    metrics: Arc<Metrics>,
    clients: Mutex<HashMap<String, Arc<UpstreamClient>>>,
}

/// A registry host as `ns=` names it: `[A-Za-z0-9.-]` with an optional `:port`.
fn is_registry_host(ns: &str) -> bool {
    !ns.is_empty()
        && ns.len() <= 253
        && ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
}

impl AnyRegistry {
    fn client(&self, ns: &str) -> Result<Arc<UpstreamClient>, ApiError> {
        let refused =
            |why: &str| ApiError::new(OciCode::Denied, format!("upstream registry {ns:?} {why}"));
        if !is_registry_host(ns) {
            return Err(refused("is not a registry host"));
        }
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(ns) {
            return Ok(client.clone());
        }
        if clients.len() >= MAX_FORWARDED_REGISTRIES {
            return Err(refused("is one registry too many for this mirror's parent"));
        }
        let mut config = self.template.clone();
        config.name = ns.to_string();
        let client = UpstreamClient::new(&config, self.password.clone(), &self.settings)
            .map_err(|e| ApiError::from_upstream(ns, e, OciCode::NameUnknown))?;
        let client = Arc::new(client.with_metrics(self.metrics.upstream(ns)));
        clients.insert(ns.to_string(), client.clone());
        Ok(client)
    }
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
        let mut any = None;
        for upstream in &config.upstreams {
            let password = upstream.resolved_password(config.allow_world_readable_secrets)?;
            if upstream.name == "*" {
                any = Some(AnyRegistry {
                    template: upstream.clone(),
                    password,
                    settings: config.upstream_client.clone(),
                    metrics: metrics.clone(),
                    clients: Mutex::default(),
                });
                continue;
            }
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
        let named: Vec<_> = config.upstreams.iter().filter(|u| u.name != "*").collect();
        let default = named
            .iter()
            .position(|u| u.default)
            .or((named.len() == 1).then_some(0));
        Ok(Upstreams {
            clients,
            default,
            any,
        })
    }

    /// Every configured upstream's client, in configuration order.
    pub fn clients(&self) -> &[Arc<UpstreamClient>] {
        &self.clients
    }

    /// The client for `ns` (a configured upstream, else one forwarded to the `"*"` parent),
    /// or the default upstream's without `ns`.
    pub fn select(&self, ns: Option<&str>) -> Result<Arc<UpstreamClient>, ApiError> {
        match ns {
            Some(ns) => match self.clients.iter().find(|c| c.name() == ns) {
                Some(client) => Ok(client.clone()),
                None => match &self.any {
                    Some(any) => any.client(ns),
                    None => Err(ApiError::new(
                        OciCode::Denied,
                        format!("upstream registry {ns:?} is not configured on this mirror"),
                    )),
                },
            },
            None => self
                .default
                .and_then(|i| self.clients.get(i))
                .cloned()
                .ok_or_else(|| {
                    ApiError::new(
                        OciCode::Denied,
                        "this mirror has no default upstream: name one with ?ns=<registry host>",
                    )
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstreams(names: &[(&str, bool)]) -> Upstreams {
        let config = Config {
            upstreams: names
                .iter()
                .map(|(name, parent)| {
                    let mut u = UpstreamConfig::new(name, "http://parent:5000", false);
                    u.parent = *parent;
                    u
                })
                .collect(),
            ..Config::default()
        };
        Upstreams::from_config(&config, &Metrics::detached()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_star_parent_takes_every_other_registry_within_a_bound() {
        let u = upstreams(&[("ghcr.io", false), ("*", true)]);
        let name = |ns: &str| u.select(Some(ns)).map(|c| c.name().to_string());
        assert_eq!(name("ghcr.io").ok().as_deref(), Some("ghcr.io"));
        assert_eq!(name("quay.io").ok().as_deref(), Some("quay.io"));
        let first = u.select(Some("quay.io")).ok();
        let again = u.select(Some("quay.io")).ok();
        assert!(first.zip(again).is_some_and(|(a, b)| Arc::ptr_eq(&a, &b)));
        assert!(name("bad/host").is_err() && name("").is_err());
        for i in 0..MAX_FORWARDED_REGISTRIES {
            let _ = u.select(Some(&format!("r{i}.example")));
        }
        assert!(name("one-more.example").is_err());
        assert_eq!(
            name("quay.io").ok().as_deref(),
            Some("quay.io"),
            "known ones still served"
        );
        // Only "ghcr.io" is named: the default without ns=.
        assert_eq!(
            u.select(None).map(|c| c.name().to_string()).ok().as_deref(),
            Some("ghcr.io")
        );
        let without = upstreams(&[("ghcr.io", false), ("docker.io", false)]);
        assert!(without.select(Some("quay.io")).is_err());
    }
}
