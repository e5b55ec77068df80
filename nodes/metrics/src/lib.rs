//! The Prometheus metrics of a wharf node.
//!
//! One [`Metrics`] per node owns every metric family, its name and its labels, grouped by the
//! subsystem that records them: [`http`] (the edge), [`cache`], [`upstream`], [`store`] (and
//! downloads) and [`cluster`]. Labels are bounded by construction ([`labels`]: enums, the
//! configured upstreams and status codes, never a repository, digest or client address).
//! Request-path recordings are atomic adds on handles resolved once ([`slots`]); gauges that
//! describe state (store size, downloads, cluster) are set from their sources when `/metrics`
//! is scraped.

pub mod cache;
pub mod cluster;
pub mod histogram;
pub mod http;
pub mod labels;
pub mod log;
pub mod slots;
pub mod store;
pub mod upstream;

use std::sync::Arc;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};

pub use crate::cache::{CacheMetrics, CacheTotals};
pub use crate::cluster::ClusterMetrics;
use crate::histogram::{AtomicHistogram, LATENCY_BUCKETS, STORE_BUCKETS};
pub use crate::http::HttpMetrics;
pub use crate::labels::{
    CacheOutcome, Content, FailureReason, LeaseResult, Method, Route, StoreOp,
};
use crate::slots::{Labels, Slots};
pub use crate::store::StoreMetrics;
pub use crate::upstream::{UpstreamFamilies, UpstreamMetrics};

fn latency() -> AtomicHistogram {
    AtomicHistogram::new(LATENCY_BUCKETS)
}

fn store_latency() -> AtomicHistogram {
    AtomicHistogram::new(STORE_BUCKETS)
}

type Histograms = Slots<AtomicHistogram, fn() -> AtomicHistogram>;

/// Register `metric` under `name` and hand it back for recording.
fn reg<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

fn counters() -> Family<Labels, prometheus_client::metrics::counter::Counter> {
    Family::default()
}

fn histograms(
    constructor: fn() -> AtomicHistogram,
) -> Family<Labels, AtomicHistogram, fn() -> AtomicHistogram> {
    Family::new_with_constructor(constructor)
}

/// Every metric of one node. Build one with [`Metrics::new`], hand clones of the `Arc` to the
/// layers that record, scrape with [`Metrics::encode`].
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Recording on (`[metrics] enabled`); off, every record call returns at once.
    enabled: bool,
    /// Label values of the configured upstreams; slot `len` is `other`.
    upstreams: Vec<String>,
    pub http: HttpMetrics,
    pub cache: CacheMetrics,
    pub upstream: UpstreamFamilies,
    pub store: StoreMetrics,
    pub cluster: ClusterMetrics,
}

/// The exposition format a scraper asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Text,
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the `Accept` header asks for it, else text 0.0.4.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

impl Metrics {
    /// Metrics for a node mirroring `upstreams` (their `ns=` names), built `version`/`commit`.
    pub fn new(upstreams: &[String], version: &str, commit: &str, enabled: bool) -> Arc<Metrics> {
        let mut registry = Registry::default();
        let up = upstreams.len() + 1;
        let build = reg(
            &mut registry,
            "wharf_build_info",
            "The running version and commit; always 1",
            Family::<Labels, Gauge>::default(),
        );
        build
            .get_or_create(&vec![
                ("version", version.to_string()),
                ("commit", commit.to_string()),
            ])
            .set(1);
        reg(
            &mut registry,
            "wharf_log_lines_dropped",
            "Log lines dropped because the log writer fell behind (requests never wait for it)",
            log::DroppedLogLines,
        );
        let http = HttpMetrics::register(&mut registry);
        let cache = CacheMetrics::register(&mut registry, up);
        let upstream = UpstreamFamilies::register(&mut registry, up);
        let store = StoreMetrics::register(&mut registry);
        let cluster = ClusterMetrics::register(&mut registry);
        let metrics = Metrics {
            enabled,
            upstreams: upstreams.to_vec(),
            http,
            cache,
            upstream,
            store,
            cluster,
            registry,
        };
        metrics.start_at_zero();
        Arc::new(metrics)
    }

    /// Counters whose label values are known up front start at 0, so they are in every scrape
    /// and `rate()` sees their first increment (Prometheus's advice for bounded label sets).
    fn start_at_zero(&self) {
        self.store.start_at_zero();
        self.cluster.start_at_zero();
        for slot in 0..self.upstreams.len() {
            let label = self.upstream_label(slot);
            let labels = || vec![("upstream", label.clone())];
            self.upstream.start_at_zero(slot, labels);
        }
    }

    /// Metrics nobody scrapes, for components built without a node (tests, tools).
    pub fn detached() -> Arc<Metrics> {
        Metrics::new(&[], "", "", false)
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The families and their series in `format`.
    pub fn encode(&self, format: Format) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        match format {
            Format::Text => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?
            }
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)?
            }
        }
        Ok(out)
    }

    fn upstream_slot(&self, name: &str) -> usize {
        self.upstreams
            .iter()
            .position(|u| u == name)
            .unwrap_or(self.upstreams.len())
    }

    fn upstream_label(&self, slot: usize) -> String {
        self.upstreams
            .get(slot)
            .cloned()
            .unwrap_or_else(|| "other".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(m: &Metrics, format: Format) -> String {
        m.encode(format).unwrap_or_default()
    }

    #[test]
    fn recorded_series_parse_as_prometheus_text_with_bounded_labels() {
        let m = Metrics::new(&["docker.io".into()], "1.0", "abc", true);
        m.http_response(Method::Get, Route::Blob, 200, 0.002, 1000);
        m.http_response(Method::Get, Route::Blob, 200, 0.002, 1000);
        m.http_response(Method::Head, Route::Manifest, 404, 0.001, 0);
        m.cache_result("docker.io", Content::Blob, CacheOutcome::Hit, 1000);
        m.cache_result("unknown.example", Content::Blob, CacheOutcome::Miss, 5);
        let up = m.upstream("docker.io");
        up.request(Method::Get, 429, 0.1);
        up.ratelimit(Some(100), Some(7));
        up.login_check(upstream::LoginCheck::Refused);
        up.login_check(upstream::LoginCheck::Refused);
        up.login_check(upstream::LoginCheck::Accepted);
        let text = scrape(&m, Format::Text);
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let parsed =
            prometheus_parse::Scrape::parse(lines).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let value = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
            parsed
                .samples
                .iter()
                .find(|s| {
                    s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
                })
                .map(|s| match s.value {
                    prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v)
                    | prometheus_parse::Value::Untyped(v) => v,
                    _ => f64::NAN,
                })
        };
        assert_eq!(
            value(
                "wharf_http_requests_total",
                &[("method", "GET"), ("route", "blob"), ("code", "200")]
            ),
            Some(2.0)
        );
        assert_eq!(
            value("wharf_http_response_bytes_total", &[("route", "blob")]),
            Some(2000.0)
        );
        assert_eq!(
            value(
                "wharf_cache_requests_total",
                &[("upstream", "other"), ("result", "miss")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                "wharf_upstream_throttled_total",
                &[("upstream", "docker.io")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                "wharf_upstream_ratelimit_remaining",
                &[("upstream", "docker.io")]
            ),
            Some(7.0)
        );
        assert_eq!(
            value(
                "wharf_upstream_login_checks_total",
                &[("upstream", "docker.io"), ("verdict", "refused")]
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                "wharf_upstream_login_checks_total",
                &[("upstream", "docker.io"), ("verdict", "accepted")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value("wharf_build_info", &[("version", "1.0"), ("commit", "abc")]),
            Some(1.0)
        );
        assert!(text.contains("# TYPE wharf_http_request_duration_seconds histogram"));
        let open = scrape(&m, Format::OpenMetrics);
        assert!(open.ends_with("# EOF\n"), "{open}");
    }

    #[test]
    fn nothing_is_recorded_when_disabled() {
        let m = Metrics::new(&[], "1", "x", false);
        m.http_response(Method::Get, Route::Blob, 200, 0.1, 10);
        assert!(!scrape(&m, Format::Text).contains("wharf_http_requests_total{"));
    }

    #[test]
    fn routes_come_from_paths() {
        assert_eq!(Route::of_path("/v2/a/b/blobs/sha256:00"), Route::Blob);
        assert_eq!(Route::of_path("/v2/a/manifests/latest"), Route::Manifest);
        assert_eq!(Route::of_path("/v2/a/tags/list"), Route::Tags);
        assert_eq!(
            Route::of_path("/v2/a/referrers/sha256:00"),
            Route::Referrers
        );
        assert_eq!(Route::of_path("/v2/"), Route::Other);
        assert_eq!(Route::of_path("/metrics"), Route::Other);
        // A marker is a whole `/word/`, anywhere after `/v2/`, the last slash included.
        assert_eq!(Route::of_path("/v2/a/blobs"), Route::Other);
        assert_eq!(Route::of_path("/v2/a/xblobs/sha256:00"), Route::Other);
        assert_eq!(Route::of_path("/v2/blobs/blobs/"), Route::Blob);
        assert_eq!(Route::of_path("/v2/a/manifests/"), Route::Manifest);
        assert_eq!(Route::of_path("/v2//manifests/x"), Route::Manifest);
    }
}
