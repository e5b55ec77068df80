//! How a request names its upstream besides containerd's `?ns=`: the first component of the
//! repository name (`/v2/ghcr.io/org/app/...`, or a configured alias as in
//! `/v2/hub/library/nginx/...`), or the `Host` it was sent to (one mirror host per registry).
//!
//! The order, strongest first: `ns=`, then a `Host` listed in some upstream's `hosts`, then a
//! first name component that is an upstream's name or one of its `prefixes` (followed by at
//! least one more component), then the default upstream. A repository of the default upstream
//! whose first component is also a route key is reached through that upstream's own prefix
//! or `ns=` (`/v2/docker.io/hub/app/...`). Names with a port (`localhost:5000`) are not path
//! components: such an upstream needs a prefix to be reached by path.

use super::ConfigError;
use super::upstream::UpstreamConfig;

/// A valid repository name component: lowercase letters and digits, separated by single
/// `.`, `_` or `-` runs, starting and ending with a letter or digit.
pub fn is_name_component(s: &str) -> bool {
    let bytes = s.as_bytes();
    !s.is_empty()
        && s.len() <= 128
        && bytes.iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// A host name as `hosts` lists it: lowercase `[a-z0-9.-]`, no port.
fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'))
}

/// The keys that route a repository name's first component to `upstream`: its name (when it
/// can be a name component) and its `prefixes`.
pub fn route_keys(upstream: &UpstreamConfig) -> impl Iterator<Item = &str> {
    std::iter::once(upstream.name.as_str())
        .filter(|name| *name != "*" && is_name_component(name))
        .chain(upstream.prefixes.iter().map(String::as_str))
}

/// One upstream's `prefixes` and `hosts`, each well formed.
pub(super) fn validate_upstream(upstream: &UpstreamConfig) -> Result<(), ConfigError> {
    let invalid = |m: String| Err(ConfigError::Invalid(m));
    if upstream.name == "*" && !(upstream.prefixes.is_empty() && upstream.hosts.is_empty()) {
        return invalid(
            "upstream \"*\" takes no prefixes or hosts: it serves the ns= values no other upstream names".into(),
        );
    }
    for prefix in &upstream.prefixes {
        if !is_name_component(prefix) {
            return invalid(format!(
                "upstream {:?}: prefix {prefix:?} must be one repository name component (lowercase letters, digits, and . _ - between them)",
                upstream.name
            ));
        }
    }
    for host in &upstream.hosts {
        if !is_host_name(host) {
            return invalid(format!(
                "upstream {:?}: host {host:?} must be a lowercase host name without a port",
                upstream.name
            ));
        }
    }
    Ok(())
}

/// No route key or host leads to two upstreams.
pub(super) fn validate_routes(upstreams: &[UpstreamConfig]) -> Result<(), ConfigError> {
    let mut keys: Vec<(&str, &str)> = Vec::new();
    let mut hosts: Vec<(&str, &str)> = Vec::new();
    for upstream in upstreams {
        for key in route_keys(upstream) {
            if let Some((_, other)) = keys.iter().find(|(k, _)| *k == key) {
                return Err(ConfigError::Invalid(format!(
                    "prefix {key:?} routes to both upstream {other:?} and upstream {:?}",
                    upstream.name
                )));
            }
            keys.push((key, &upstream.name));
        }
        for host in &upstream.hosts {
            if let Some((_, other)) = hosts.iter().find(|(h, _)| *h == host) {
                return Err(ConfigError::Invalid(format!(
                    "host {host:?} routes to both upstream {other:?} and upstream {:?}",
                    upstream.name
                )));
            }
            hosts.push((host, &upstream.name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(name: &str, prefixes: &[&str], hosts: &[&str]) -> UpstreamConfig {
        let mut u = UpstreamConfig::new(name, "http://127.0.0.1:1", false);
        u.prefixes = prefixes.iter().map(|p| p.to_string()).collect();
        u.hosts = hosts.iter().map(|h| h.to_string()).collect();
        u
    }

    #[test]
    fn keys_are_the_name_when_it_is_a_component_and_the_prefixes() {
        let keys: Vec<_> = route_keys(&upstream("ghcr.io", &["gh"], &[]))
            .map(str::to_string)
            .collect();
        assert_eq!(keys, ["ghcr.io", "gh"]);
        let keys: Vec<_> = route_keys(&upstream("localhost:5000", &["local"], &[]))
            .map(str::to_string)
            .collect();
        assert_eq!(keys, ["local"], "a name with a port is no path component");
    }

    #[test]
    fn malformed_or_clashing_routes_are_refused() {
        for bad in [
            upstream("a.io", &["Hub"], &[]),
            upstream("a.io", &["hub/x"], &[]),
            upstream("a.io", &["-hub"], &[]),
            upstream("a.io", &[""], &[]),
            upstream("a.io", &[], &["Mirror.example.com"]),
            upstream("a.io", &[], &["mirror.example.com:443"]),
            upstream("*", &["any"], &[]),
        ] {
            assert!(validate_upstream(&bad).is_err(), "{bad:?}");
        }
        assert!(validate_upstream(&upstream("a.io", &["hub", "h_1"], &["a.example.com"])).is_ok());
        assert!(
            validate_routes(&[upstream("a.io", &["x"], &[]), upstream("b.io", &["x"], &[])])
                .is_err()
        );
        assert!(
            validate_routes(&[upstream("a.io", &["b.io"], &[]), upstream("b.io", &[], &[])])
                .is_err(),
            "a prefix may not be another upstream's name"
        );
        assert!(
            validate_routes(&[
                upstream("a.io", &[], &["m.example"]),
                upstream("b.io", &[], &["m.example"])
            ])
            .is_err()
        );
        assert!(
            validate_routes(&[
                upstream("a.io", &["a"], &["a.m"]),
                upstream("b.io", &["b"], &["b.m"])
            ])
            .is_ok()
        );
    }
}
