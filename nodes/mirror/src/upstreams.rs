//! Which upstream a request goes to: containerd's `?ns=<registry host>`, else a host or
//! name-prefix route ([`crate::routes`]), else the default.
//! Only configured upstreams are ever contacted: wharf is not an open proxy. A regional tier
//! may name its parent once for every registry (`name = "*"`, `parent = true`): any other
//! `ns=` then goes to that parent, which decides whether it mirrors that registry.

use std::sync::Arc;

use wharf_core::OciCode;
use wharf_core::config::{
    Config, DOCKER_HUB_NAME, UpstreamClientConfig, UpstreamConfig, UpstreamPasswords,
};
use wharf_metrics::Metrics;
use wharf_upstream::{UpstreamClient, UpstreamError};

use crate::error::MirrorError;
use crate::routes::RouteTable;

/// Registries forwarded through a `"*"` parent kept at once; past it, the least recently used
/// registry's client is dropped (and made again when next asked), so junk `ns=` values can
/// never lock a real registry out.
pub const MAX_FORWARDED_REGISTRIES: u64 = 64;

pub struct Upstreams {
    clients: Vec<Arc<UpstreamClient>>,
    default: Option<usize>,
    any: Option<AnyRegistry>,
    routes: RouteTable,
}

/// Where a request goes, decided before anything is made for it: the policy is checked on
/// `name` first, and only then is a client looked up or created ([`Upstreams::client`]).
#[derive(Clone)]
pub struct Resolved {
    /// The upstream's `ns=` name, normalised (lowercase, no trailing dot).
    pub name: Arc<str>,
    /// Docker Hub keeps single-segment names under `library/`.
    pub docker_hub: bool,
    /// Reached through one of its `hosts` (where a client's login is that upstream's).
    pub by_host: bool,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Configured(Arc<UpstreamClient>),
    /// Through the `"*"` parent, whose client for `name` is made on first use.
    Forwarded,
    /// No upstream has this name: refused once the caller may know it.
    Unknown,
}

impl Resolved {
    /// The configured upstream's client, if the name is one (never made for this call).
    pub fn configured(&self) -> Option<&Arc<UpstreamClient>> {
        match &self.kind {
            Kind::Configured(client) => Some(client),
            _ => None,
        }
    }
}

/// The `name = "*"` parent: one client per registry named in `ns=`, made on first use (each
/// keeps its own tokens, health and cache namespace), the least recently used dropped first.
struct AnyRegistry {
    template: UpstreamConfig,
    passwords: UpstreamPasswords,
    settings: UpstreamClientConfig,
    metrics: Arc<Metrics>,
    clients: moka::sync::Cache<String, Arc<UpstreamClient>>,
}

/// A registry host as `ns=` names it: `[a-z0-9.-]` with an optional `:port`.
fn is_registry_host(ns: &str) -> bool {
    !ns.is_empty()
        && ns.len() <= 253
        && ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
}

/// `ns=` as one registry: hosts are case-insensitive and `docker.io.` is `docker.io`.
pub fn normalise_ns(ns: &str) -> String {
    let lower = ns.to_ascii_lowercase();
    match lower.rsplit_once(':') {
        Some((host, port)) => format!("{}:{port}", host.trim_end_matches('.')),
        None => lower.trim_end_matches('.').to_string(),
    }
}

impl AnyRegistry {
    fn client(&self, ns: &str) -> Result<Arc<UpstreamClient>, MirrorError> {
        self.clients
            .try_get_with(ns.to_string(), || {
                let mut config = self.template.clone();
                config.name = ns.to_string();
                UpstreamClient::new(&config, self.passwords.clone(), &self.settings)
                    .map(|c| Arc::new(c.with_metrics(self.metrics.upstream(ns))))
            })
            .map_err(|e| MirrorError::upstream(ns, (*e).clone(), OciCode::NameUnknown))
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
            let passwords = upstream.resolved_passwords(config.allow_world_readable_secrets)?;
            if upstream.name == "*" {
                any = Some(AnyRegistry {
                    template: upstream.clone(),
                    passwords,
                    settings: config.upstream_client.clone(),
                    metrics: metrics.clone(),
                    clients: moka::sync::Cache::new(MAX_FORWARDED_REGISTRIES),
                });
                continue;
            }
            let client = UpstreamClient::new(upstream, passwords, &config.upstream_client)
                .map_err(|source| UpstreamsError::Client {
                    name: upstream.name.clone(),
                    source,
                })?;
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
            routes: RouteTable::new(named.into_iter()),
        })
    }

    /// Every configured upstream's client, in configuration order.
    pub fn clients(&self) -> &[Arc<UpstreamClient>] {
        &self.clients
    }

    /// Where a request goes, and the repository name within that upstream: `ns=` when given
    /// (the name unchanged), else the upstream whose `hosts` list `host`, else the one the
    /// name's first component names (the name without it), else the default. Nothing is
    /// created (see [`Upstreams::resolve`]).
    pub fn route<'a>(
        &self,
        ns: Option<&str>,
        host: Option<&str>,
        name: &'a str,
    ) -> Result<(Resolved, &'a str), MirrorError> {
        if ns.is_some() {
            return Ok((self.resolve(ns)?, name));
        }
        let by_host = host
            .filter(|_| self.routes.has_hosts())
            .and_then(|h| self.routes.host(h));
        if let Some(resolved) = by_host.and_then(|i| self.configured(i)) {
            return Ok((
                Resolved {
                    by_host: true,
                    ..resolved
                },
                name,
            ));
        }
        if let Some((resolved, rest)) = self
            .routes
            .prefix(name)
            .and_then(|(i, rest)| Some((self.configured(i)?, rest)))
        {
            return Ok((resolved, rest));
        }
        Ok((self.resolve(None)?, name))
    }

    fn configured(&self, i: usize) -> Option<Resolved> {
        self.clients.get(i).map(|client| Resolved {
            name: client.shared_name(),
            docker_hub: client.is_docker_hub(),
            by_host: false,
            kind: Kind::Configured(client.clone()),
        })
    }

    /// Where `ns` leads (the default upstream without it), without creating anything: a
    /// malformed `ns=` is refused here, an unknown one only by [`Upstreams::client`], after
    /// the caller was authorized, so that no one learns the configuration unasked.
    pub fn resolve(&self, ns: Option<&str>) -> Result<Resolved, MirrorError> {
        let Some(ns) = ns else {
            return self
                .default
                .and_then(|i| self.configured(i))
                .ok_or_else(|| {
                    MirrorError::denied(
                        "this mirror has no default upstream: name one with ?ns=<registry host>",
                    )
                });
        };
        let name = normalise_ns(ns);
        if !is_registry_host(&name) {
            return Err(MirrorError::invalid(
                OciCode::NameInvalid,
                "ns= must name a registry host",
            ));
        }
        let kind = match self
            .clients
            .iter()
            .find(|c| c.name().eq_ignore_ascii_case(&name))
        {
            Some(client) => Kind::Configured(client.clone()),
            None if self.any.is_some() => Kind::Forwarded,
            None => Kind::Unknown,
        };
        Ok(Resolved {
            docker_hub: match &kind {
                Kind::Configured(client) => client.is_docker_hub(),
                _ => name == DOCKER_HUB_NAME,
            },
            name: name.into(),
            by_host: false,
            kind,
        })
    }

    /// The client a resolved request goes to; for a registry forwarded to the `"*"` parent,
    /// made on first use. Call only for callers the policy admitted.
    pub fn client(&self, resolved: &Resolved) -> Result<Arc<UpstreamClient>, MirrorError> {
        match (&resolved.kind, &self.any) {
            (Kind::Configured(client), _) => Ok(client.clone()),
            (Kind::Forwarded, Some(any)) => any.client(&resolved.name),
            _ => Err(MirrorError::denied(format!(
                "upstream registry {:?} is not configured on this mirror",
                resolved.name
            ))),
        }
    }

    /// The upstream whose `hosts` list `host`, if any (`/v2/` on a registry's own mirror host).
    pub fn for_host(&self, host: Option<&str>) -> Option<Arc<UpstreamClient>> {
        let i = self
            .routes
            .host(host.filter(|_| self.routes.has_hosts())?)?;
        self.clients.get(i).cloned()
    }

    /// Whether any upstream takes each client's own login (`credentials = "client"`).
    pub fn any_take_client_logins(&self) -> bool {
        self.clients.iter().any(|c| c.takes_client_logins())
    }

    /// [`Upstreams::resolve`] then [`Upstreams::client`], for callers already authorized.
    pub fn select(&self, ns: Option<&str>) -> Result<Arc<UpstreamClient>, MirrorError> {
        self.client(&self.resolve(ns)?)
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
    fn a_star_parent_takes_every_other_registry_and_junk_cannot_lock_one_out() {
        let u = upstreams(&[("ghcr.io", false), ("*", true)]);
        let name = |ns: &str| u.select(Some(ns)).map(|c| c.name().to_string());
        assert_eq!(name("ghcr.io").ok().as_deref(), Some("ghcr.io"));
        assert_eq!(
            name("GHCR.io.").ok().as_deref(),
            Some("ghcr.io"),
            "normalised"
        );
        assert_eq!(name("quay.io").ok().as_deref(), Some("quay.io"));
        assert_eq!(name("Quay.IO.").ok().as_deref(), Some("quay.io"));
        let first = u.select(Some("quay.io")).ok();
        let again = u.select(Some("quay.io")).ok();
        assert!(first.zip(again).is_some_and(|(a, b)| Arc::ptr_eq(&a, &b)));
        assert!(name("bad/host").is_err() && name("").is_err());
        // Ten times the bound of junk registries: a real one is still served after them.
        for i in 0..10 * MAX_FORWARDED_REGISTRIES {
            let _ = u.select(Some(&format!("junk{i}.invalid")));
        }
        assert_eq!(
            name("one-more.example").ok().as_deref(),
            Some("one-more.example")
        );
        assert_eq!(name("quay.io").ok().as_deref(), Some("quay.io"));
        let any = u.any.as_ref().map(|a| {
            a.clients.run_pending_tasks();
            a.clients.entry_count()
        });
        assert!(
            any.is_some_and(|n| n <= MAX_FORWARDED_REGISTRIES),
            "{any:?}"
        );
        // Only "ghcr.io" is named: the default without ns=.
        assert_eq!(
            u.select(None).map(|c| c.name().to_string()).ok().as_deref(),
            Some("ghcr.io")
        );
        let without = upstreams(&[("ghcr.io", false), ("docker.io", false)]);
        let unknown = without.resolve(Some("quay.io"));
        assert!(
            unknown.is_ok(),
            "an unknown registry is resolved, to be authorized first"
        );
        assert!(unknown.and_then(|r| without.client(&r)).is_err());
    }
}
