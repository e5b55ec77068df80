//! Which configured upstream a request's `Host` or its repository name's first component
//! leads to, for clients that cannot send containerd's `?ns=` (the Docker Engine for any
//! registry but Docker Hub, Helm, Flux, Kaniko, explicit references). The rules and their
//! order are in `wharf_core::config::routing`.

use wharf_core::config::UpstreamConfig;
use wharf_core::config::routing::route_keys;

/// Route keys and hosts, each to the index of a configured upstream's client.
#[derive(Default)]
pub struct RouteTable {
    components: Vec<(String, usize)>,
    hosts: Vec<(String, usize)>,
}

impl RouteTable {
    /// From the configured upstreams other than `"*"`, in the order their clients are kept.
    pub fn new<'a>(upstreams: impl Iterator<Item = &'a UpstreamConfig>) -> RouteTable {
        let mut table = RouteTable::default();
        for (i, upstream) in upstreams.enumerate() {
            table
                .components
                .extend(route_keys(upstream).map(|k| (k.to_string(), i)));
            table
                .hosts
                .extend(upstream.hosts.iter().map(|h| (h.clone(), i)));
        }
        table
    }

    /// Whether any upstream is reached by host (only then is a request's host looked at).
    pub fn has_hosts(&self) -> bool {
        !self.hosts.is_empty()
    }

    /// The upstream `host` (a `Host` header or URI authority, port and trailing dot ignored,
    /// any case) routes to.
    pub fn host(&self, host: &str) -> Option<usize> {
        let host = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        self.hosts
            .iter()
            .find(|(h, _)| h.eq_ignore_ascii_case(host))
            .map(|(_, i)| *i)
    }

    /// The upstream the first component of `name` routes to, and the rest of the name; none
    /// when that component is no route key or nothing follows it.
    pub fn prefix<'a>(&self, name: &'a str) -> Option<(usize, &'a str)> {
        let (first, rest) = name.split_once('/')?;
        if rest.is_empty() {
            return None;
        }
        self.components
            .iter()
            .find(|(k, _)| k == first)
            .map(|(_, i)| (*i, rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let mut ghcr = UpstreamConfig::new("ghcr.io", "http://127.0.0.1:1", false);
        ghcr.prefixes = vec!["gh".into()];
        ghcr.hosts = vec!["ghcr.mirror.example".into()];
        let hub = UpstreamConfig::new("docker.io", "http://127.0.0.1:2", true);
        let local = UpstreamConfig::new("localhost:5000", "http://127.0.0.1:3", false);
        RouteTable::new([ghcr, hub, local].iter())
    }

    #[test]
    fn the_first_component_routes_when_more_follows() {
        let t = table();
        assert_eq!(t.prefix("ghcr.io/org/app"), Some((0, "org/app")));
        assert_eq!(t.prefix("gh/org/app"), Some((0, "org/app")));
        assert_eq!(t.prefix("docker.io/nginx"), Some((1, "nginx")));
        assert_eq!(t.prefix("ghcr.io"), None, "nothing follows");
        assert_eq!(t.prefix("library/nginx"), None, "no route key");
        assert_eq!(t.prefix("ghcr.iox/app"), None);
        assert_eq!(t.prefix("localhost:5000/app"), None, "not a component");
    }

    #[test]
    fn hosts_match_without_port_case_or_final_dot() {
        let t = table();
        assert!(t.has_hosts());
        for host in [
            "ghcr.mirror.example",
            "GHCR.mirror.example:8443",
            "ghcr.mirror.example.",
        ] {
            assert_eq!(t.host(host), Some(0), "{host}");
        }
        assert_eq!(t.host("other.example"), None);
        assert_eq!(t.host("127.0.0.1:5000"), None);
        assert!(!RouteTable::default().has_hosts());
    }
}
