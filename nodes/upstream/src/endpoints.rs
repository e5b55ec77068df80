//! The URLs one upstream is reached at (`url`, then `fallback_urls`), tried in order with
//! health tracking: a URL that failed to answer is passed over for [`DOWN_FOR`], then tried
//! again first, so a region falls over to its next parent (or the registry itself) when its
//! parent is down and comes back once it is up.
//!
//! For a parent tier (`parent = true`: the URLs are wharf nodes) every request carries
//! `ns=<upstream name>`, so one parent serves every registry it mirrors; registries ignore the
//! parameter (containerd sends it to any mirror), so a plain registry may sit in the list too.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use wharf_core::config::EndpointConfig;
use wharf_core::query::percent_encode;

use crate::auth::{AuthState, Credentials};

/// How long a URL that failed is passed over while another is listed.
pub const DOWN_FOR: Duration = Duration::from_secs(30);

/// One URL of an upstream, with the login that goes to it and to no other URL.
pub struct Endpoint {
    pub base: String,
    /// Sent to this URL (and the token realm it names) only; `None`: asked anonymously.
    pub login: Option<Credentials>,
    /// Challenges and tokens are per URL: a token one host issued never goes to another.
    pub auth: AuthState,
    down_until: Mutex<Option<Instant>>,
}

/// One URL's state, for the status page.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointStatus {
    pub url: String,
    /// False while it is passed over after a failure.
    pub healthy: bool,
}

pub struct Endpoints {
    list: Vec<Endpoint>,
    /// `ns=` value sent to parents.
    forward_ns: Option<String>,
}

impl Endpoints {
    /// `urls` in order of preference (at least one), each with its own login.
    pub fn new(
        urls: impl IntoIterator<Item = EndpointConfig>,
        forward_ns: Option<String>,
    ) -> Endpoints {
        Endpoints {
            list: urls
                .into_iter()
                .map(|u| Endpoint {
                    base: u.url.trim_end_matches('/').to_string(),
                    login: u
                        .login
                        .map(|(username, password)| Credentials { username, password }),
                    auth: AuthState::default(),
                    down_until: Mutex::new(None),
                })
                .collect(),
            forward_ns,
        }
    }

    /// `url`, the upstream's own URL.
    pub fn first(&self) -> Option<&Endpoint> {
        self.list.first()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn is_down(&self, endpoint: &Endpoint, now: Instant) -> bool {
        endpoint
            .down_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|until| now < until)
    }

    /// The first URL not passed over; when all are, the first (it may have recovered).
    pub fn pick(&self) -> Option<(usize, &Endpoint)> {
        let now = Instant::now();
        self.list
            .iter()
            .enumerate()
            .find(|(_, e)| !self.is_down(e, now))
            .or_else(|| self.list.first().map(|e| (0, e)))
    }

    /// URL `i` did not answer (or failed): pass it over while another is listed. True when
    /// another URL is now preferred (the caller may try it at once).
    pub fn failed(&self, i: usize) -> bool {
        if self.list.len() < 2 {
            return false;
        }
        let Some(endpoint) = self.list.get(i) else {
            return false;
        };
        *endpoint
            .down_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + DOWN_FOR);
        self.pick().is_some_and(|(next, _)| next != i)
    }

    pub fn succeeded(&self, i: usize) {
        if let Some(endpoint) = self.list.get(i) {
            let mut down = endpoint
                .down_until
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if down.is_some() {
                *down = None;
            }
        }
    }

    /// The full URL of `path` (which may hold a query) at `endpoint`.
    pub fn url(&self, endpoint: &Endpoint, path: &str) -> String {
        match &self.forward_ns {
            Some(ns) => {
                let separator = if path.contains('?') { '&' } else { '?' };
                format!(
                    "{}{path}{separator}ns={}",
                    endpoint.base,
                    percent_encode(ns)
                )
            }
            None => format!("{}{path}", endpoint.base),
        }
    }

    /// The preferred URL now.
    pub fn current(&self) -> &str {
        self.pick().map_or("", |(_, e)| e.base.as_str())
    }

    pub fn statuses(&self) -> Vec<EndpointStatus> {
        let now = Instant::now();
        self.list
            .iter()
            .map(|e| EndpointStatus {
                url: e.base.clone(),
                healthy: !self.is_down(e, now),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anonymous(urls: &[&str]) -> Vec<EndpointConfig> {
        urls.iter()
            .map(|u| EndpointConfig {
                url: u.to_string(),
                login: None,
            })
            .collect()
    }

    #[test]
    fn fails_over_in_order_and_prefers_the_first_again_once_it_answers() {
        let e = Endpoints::new(anonymous(&["http://a/", "http://b"]), None);
        assert_eq!(e.current(), "http://a");
        assert!(e.failed(0), "b takes over");
        assert_eq!(e.current(), "http://b");
        assert!(e.failed(1), "both down: a, the first, is tried again");
        assert!(
            !e.failed(0),
            "and once it fails too, there is nothing else to try"
        );
        assert_eq!(e.current(), "http://a");
        e.succeeded(0);
        assert_eq!(e.statuses().iter().filter(|s| s.healthy).count(), 1);
        let single = Endpoints::new(anonymous(&["http://only"]), None);
        assert!(!single.failed(0));
        assert_eq!(single.current(), "http://only");
    }

    #[test]
    fn parents_get_the_registry_name() {
        let e = Endpoints::new(anonymous(&["http://p"]), Some("127.0.0.1:5000".into()));
        let (_, first) = e.pick().unwrap_or_else(|| panic!("one endpoint"));
        assert_eq!(
            e.url(first, "/v2/a/tags/list?n=1"),
            "http://p/v2/a/tags/list?n=1&ns=127.0.0.1%3A5000"
        );
        assert_eq!(
            e.url(first, "/v2/a/manifests/v1"),
            "http://p/v2/a/manifests/v1?ns=127.0.0.1%3A5000"
        );
    }
}
