//! The Prometheus metrics of a wharf node.
//!
//! One [`Metrics`] per node owns every metric family, its name and its labels. Labels are
//! bounded by construction: enums, the configured upstreams and status codes, never a
//! repository, digest or client address. Request-path recordings are atomic adds on handles
//! resolved once ([`slots`]); gauges that describe state (store size, downloads, cluster) are
//! set from their sources when `/metrics` is scraped.

pub mod histogram;
pub mod slots;

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::histogram::{AtomicHistogram, LATENCY_BUCKETS, STORE_BUCKETS};
use crate::slots::{CODES, Labels, Slots, code_slot};

/// The route of a client request, as the `route` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Manifest,
    Blob,
    Tags,
    Referrers,
    Other,
}

impl Route {
    const ALL: usize = 5;

    /// The route of a request path (no allocation; used on every request).
    pub fn of_path(path: &str) -> Route {
        let Some(rest) = path.strip_prefix("/v2/") else {
            return Route::Other;
        };
        if rest.contains("/blobs/") {
            Route::Blob
        } else if rest.contains("/manifests/") {
            Route::Manifest
        } else if rest.ends_with("/tags/list") {
            Route::Tags
        } else if rest.contains("/referrers/") {
            Route::Referrers
        } else {
            Route::Other
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Route::Manifest => "manifest",
            Route::Blob => "blob",
            Route::Tags => "tags",
            Route::Referrers => "referrers",
            Route::Other => "other",
        }
    }
}

/// HTTP methods as a label: a read-only mirror sees GET and HEAD; the rest are one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Other,
}

impl Method {
    const ALL: usize = 3;

    pub fn of(method: &str) -> Method {
        match method {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            _ => Method::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Other => "other",
        }
    }
}

/// What kind of content a cache result concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    Manifest,
    Blob,
    Tags,
}

impl Content {
    const ALL: usize = 3;

    pub fn as_str(self) -> &'static str {
        match self {
            Content::Manifest => "manifest",
            Content::Blob => "blob",
            Content::Tags => "tags",
        }
    }
}

/// What the cache did for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
    Stale,
    Coalesced,
    /// Streamed from the cluster peer that fetched it.
    Peer,
}

impl CacheOutcome {
    pub const ALL: usize = 5;

    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Stale => "stale",
            CacheOutcome::Coalesced => "coalesced",
            CacheOutcome::Peer => "peer",
        }
    }
}

/// Why a download failed, as the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// The upstream refused or failed (status, connection, timeout).
    Upstream,
    /// The bytes did not match the digest or the announced size.
    Mismatch,
    /// Larger than `limits.max_blob_mib`.
    TooLarge,
    /// The spool or the store failed.
    Storage,
    /// The cluster peer streaming it failed.
    Peer,
    Other,
}

impl FailureReason {
    const ALL: usize = 6;
    const VALUES: [FailureReason; 6] = [
        FailureReason::Upstream,
        FailureReason::Mismatch,
        FailureReason::TooLarge,
        FailureReason::Storage,
        FailureReason::Peer,
        FailureReason::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Upstream => "upstream",
            FailureReason::Mismatch => "mismatch",
            FailureReason::TooLarge => "too_large",
            FailureReason::Storage => "storage",
            FailureReason::Peer => "peer",
            FailureReason::Other => "other",
        }
    }
}

/// A store call, as the `op` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    Stat,
    Read,
    Write,
    Delete,
    List,
    Presign,
}

impl StoreOp {
    const ALL: usize = 6;

    pub fn as_str(self) -> &'static str {
        match self {
            StoreOp::Stat => "stat",
            StoreOp::Read => "read",
            StoreOp::Write => "write",
            StoreOp::Delete => "delete",
            StoreOp::List => "list",
            StoreOp::Presign => "presign",
        }
    }
}

/// The answer a node got when it asked the cluster for a blob's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseResult {
    /// This node fetches.
    Granted,
    /// Another node fetches; this one streams from it.
    Held,
    /// No quorum: this node fetches without a lease.
    Failed,
}

impl LeaseResult {
    const ALL: usize = 3;
    const VALUES: [LeaseResult; 3] = [LeaseResult::Granted, LeaseResult::Held, LeaseResult::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            LeaseResult::Granted => "granted",
            LeaseResult::Held => "held",
            LeaseResult::Failed => "failed",
        }
    }
}

fn slot2(a: usize, b: usize, b_len: usize) -> usize {
    a * b_len + b
}

fn latency() -> AtomicHistogram {
    AtomicHistogram::new(LATENCY_BUCKETS)
}

fn store_latency() -> AtomicHistogram {
    AtomicHistogram::new(STORE_BUCKETS)
}

type Histograms = Slots<AtomicHistogram, fn() -> AtomicHistogram>;

/// Every metric of one node. Build one with [`Metrics::new`], hand clones of the `Arc` to the
/// layers that record, scrape with [`Metrics::encode`].
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Recording on (`[metrics] enabled`); off, every record call returns at once.
    enabled: bool,
    /// Label values of the configured upstreams; slot `len` is `other`.
    upstreams: Vec<String>,

    http_requests: Slots<Counter>,
    http_duration: Histograms,
    http_in_flight: Gauge,
    http_bytes: Slots<Counter>,

    cache_requests: Slots<Counter>,
    cache_bytes: Slots<Counter>,
    pub store_bytes: Gauge,
    pub store_blobs: Gauge,
    evicted_blobs: Counter,
    evicted_bytes: Counter,

    upstream_requests: Slots<Counter>,
    upstream_bytes: Slots<Counter>,
    upstream_duration: Histograms,
    upstream_retries: Slots<Counter>,
    upstream_resumes: Counter,
    upstream_throttled: Slots<Counter>,
    ratelimit_limit: Family<Labels, Gauge>,
    ratelimit_remaining: Family<Labels, Gauge>,

    pub downloads_in_flight: Gauge,
    pub download_waiters: Gauge,
    download_failures: Slots<Counter>,

    store_duration: Histograms,
    store_errors: Counter,
    pub store_up: Gauge,
    /// Reloaded files (TLS, htpasswd, JWKS, the config file) whose latest reload failed.
    pub reloads_failing: Gauge,

    pub cluster_members: Gauge,
    pub cluster_is_leader: Gauge,
    pub cluster_term: Gauge,
    pub cluster_leases_held: Gauge,
    lease_requests: Slots<Counter>,
    peer_bytes: Counter,
    fallbacks: Counter,
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
        macro_rules! reg {
            ($name:expr, $help:expr, $metric:expr) => {{
                let metric = $metric;
                registry.register($name, $help, metric.clone());
                metric
            }};
        }
        let counters = || Family::<Labels, Counter>::default();
        let histograms = |c: fn() -> AtomicHistogram| {
            Family::<Labels, AtomicHistogram, _>::new_with_constructor(c)
        };

        let build = reg!(
            "wharf_build_info",
            "The running version and commit; always 1",
            Family::<Labels, Gauge>::default()
        );
        build
            .get_or_create(&vec![
                ("version", version.to_string()),
                ("commit", commit.to_string()),
            ])
            .set(1);

        let metrics = Metrics {
            enabled,
            upstreams: upstreams.to_vec(),
            http_requests: Slots::new(
                reg!(
                    "wharf_http_requests",
                    "Client requests answered",
                    counters()
                ),
                Method::ALL * Route::ALL * CODES,
            ),
            http_duration: Slots::new(
                reg!(
                    "wharf_http_request_duration_seconds",
                    "Time from a request to its response headers (time to first byte)",
                    histograms(latency)
                ),
                Route::ALL,
            ),
            http_in_flight: reg!(
                "wharf_http_in_flight_requests",
                "Client requests received and not yet answered with headers",
                Gauge::default()
            ),
            http_bytes: Slots::new(
                reg!(
                    "wharf_http_response_bytes",
                    "Body bytes of responses (as declared in Content-Length)",
                    counters()
                ),
                Route::ALL,
            ),
            cache_requests: Slots::new(
                reg!(
                    "wharf_cache_requests",
                    "Content requests by what the cache did for them",
                    counters()
                ),
                up * Content::ALL * CacheOutcome::ALL,
            ),
            cache_bytes: Slots::new(
                reg!(
                    "wharf_cache_served_bytes",
                    "Bytes served, by where they came from (hit: the cache; miss: fetched upstream)",
                    counters()
                ),
                up * CacheOutcome::ALL,
            ),
            store_bytes: reg!(
                "wharf_store_bytes",
                "Bytes of blobs in the store (last eviction pass, else the blobs this node knows)",
                Gauge::default()
            ),
            store_blobs: reg!(
                "wharf_store_blobs",
                "Blobs in the store (last eviction pass, else the blobs this node knows)",
                Gauge::default()
            ),
            evicted_blobs: reg!(
                "wharf_evicted_blobs",
                "Blobs deleted by eviction passes of this node",
                Counter::default()
            ),
            evicted_bytes: reg!(
                "wharf_evicted_bytes",
                "Bytes deleted by eviction passes of this node",
                Counter::default()
            ),
            upstream_requests: Slots::new(
                reg!(
                    "wharf_upstream_requests",
                    "Requests sent to upstream registries, by answer (code 0: no answer)",
                    counters()
                ),
                up * Method::ALL * CODES,
            ),
            upstream_bytes: Slots::new(
                reg!(
                    "wharf_upstream_bytes",
                    "Body bytes received from upstream registries",
                    counters()
                ),
                up,
            ),
            upstream_duration: Slots::new(
                reg!(
                    "wharf_upstream_request_duration_seconds",
                    "Time from an upstream request to its response headers",
                    histograms(latency)
                ),
                up,
            ),
            upstream_retries: Slots::new(
                reg!(
                    "wharf_upstream_retries",
                    "Upstream requests sent again after a transient failure",
                    counters()
                ),
                up,
            ),
            upstream_resumes: reg!(
                "wharf_upstream_resumes",
                "Blob downloads continued with a range request after the body broke off",
                Counter::default()
            ),
            upstream_throttled: Slots::new(
                reg!(
                    "wharf_upstream_throttled",
                    "429 Too Many Requests answers from upstreams",
                    counters()
                ),
                up,
            ),
            ratelimit_limit: reg!(
                "wharf_upstream_ratelimit_limit",
                "The pull allowance the upstream announced (ratelimit-limit), when it sends one",
                Family::<Labels, Gauge>::default()
            ),
            ratelimit_remaining: reg!(
                "wharf_upstream_ratelimit_remaining",
                "Pulls left in the upstream's window (ratelimit-remaining), when it sends one",
                Family::<Labels, Gauge>::default()
            ),
            downloads_in_flight: reg!(
                "wharf_downloads_in_flight",
                "Blob downloads under way on this node",
                Gauge::default()
            ),
            download_waiters: reg!(
                "wharf_download_waiters",
                "Clients and peers streaming in-flight downloads",
                Gauge::default()
            ),
            download_failures: Slots::new(
                reg!(
                    "wharf_download_failures",
                    "Blob downloads that failed, by reason",
                    counters()
                ),
                FailureReason::ALL,
            ),
            store_duration: Slots::new(
                reg!(
                    "wharf_store_operation_duration_seconds",
                    "Time of store calls (a read: until the object is open)",
                    histograms(store_latency)
                ),
                StoreOp::ALL,
            ),
            store_errors: reg!(
                "wharf_store_errors",
                "Store calls that failed",
                Counter::default()
            ),
            store_up: reg!(
                "wharf_store_up",
                "1 while the store's latest call succeeded, 0 while it fails",
                Gauge::default()
            ),
            reloads_failing: reg!(
                "wharf_reloads_failing",
                "Reloaded files (TLS, htpasswd, JWKS, config) whose latest reload failed: the previous version is in force",
                Gauge::default()
            ),
            cluster_members: reg!(
                "wharf_cluster_members",
                "Members of this node's cluster (0: not clustered)",
                Gauge::default()
            ),
            cluster_is_leader: reg!(
                "wharf_cluster_is_leader",
                "1 on the cluster's Raft leader",
                Gauge::default()
            ),
            cluster_term: reg!(
                "wharf_cluster_term",
                "The Raft term this node is in",
                Gauge::default()
            ),
            cluster_leases_held: reg!(
                "wharf_cluster_leases_held",
                "Fetch leases this node holds",
                Gauge::default()
            ),
            lease_requests: Slots::new(
                reg!(
                    "wharf_cluster_lease_requests",
                    "Cold blobs this node asked the cluster about, by answer",
                    counters()
                ),
                LeaseResult::ALL,
            ),
            peer_bytes: reg!(
                "wharf_cluster_peer_bytes",
                "Bytes streamed from cluster peers fetching a blob",
                Counter::default()
            ),
            fallbacks: reg!(
                "wharf_cluster_fallbacks",
                "Cold blobs fetched without a lease because the cluster had no quorum",
                Counter::default()
            ),
            registry,
        };
        metrics.start_at_zero();
        Arc::new(metrics)
    }

    /// Counters whose label values are known up front start at 0, so they are in every scrape
    /// and `rate()` sees their first increment (Prometheus's advice for bounded label sets).
    fn start_at_zero(&self) {
        for reason in FailureReason::VALUES {
            self.download_failures.get(reason as usize, || {
                vec![("reason", reason.as_str().to_string())]
            });
        }
        for result in LeaseResult::VALUES {
            self.lease_requests.get(result as usize, || {
                vec![("result", result.as_str().to_string())]
            });
        }
        for slot in 0..self.upstreams.len() {
            let labels = || vec![("upstream", self.upstream_label(slot))];
            self.upstream_retries.get(slot, labels);
            self.upstream_throttled.get(slot, labels);
            self.upstream_bytes.get(slot, labels);
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

    /// The recorder for one upstream's client.
    pub fn upstream(self: &Arc<Self>, name: &str) -> UpstreamMetrics {
        UpstreamMetrics {
            slot: self.upstream_slot(name),
            metrics: self.clone(),
        }
    }

    /// A request's headers are out: count it and its latency; `bytes` is its declared body.
    pub fn http_response(&self, method: Method, route: Route, code: u16, seconds: f64, bytes: u64) {
        if !self.enabled {
            return;
        }
        let slot = slot2(
            slot2(method as usize, route as usize, Route::ALL),
            code_slot(code),
            CODES,
        );
        self.http_requests.with(
            slot,
            || {
                vec![
                    ("method", method.as_str().to_string()),
                    ("route", route.as_str().to_string()),
                    ("code", code.to_string()),
                ]
            },
            |c| {
                c.inc();
            },
        );
        let labels = || vec![("route", route.as_str().to_string())];
        self.http_duration
            .with(route as usize, labels, |h| h.observe(seconds));
        if bytes > 0 {
            self.http_bytes.with(route as usize, labels, |c| {
                c.inc_by(bytes);
            });
        }
    }

    /// A request came in (`+1`) or got its headers (`-1`).
    pub fn http_in_flight(&self, delta: i64) {
        if self.enabled {
            self.http_in_flight.inc_by(delta);
        }
    }

    /// What the cache did for one content request, and the bytes it answered with.
    pub fn cache_result(
        &self,
        upstream: &str,
        content: Content,
        outcome: CacheOutcome,
        bytes: u64,
    ) {
        if !self.enabled {
            return;
        }
        let up = self.upstream_slot(upstream);
        let slot = slot2(
            slot2(up, content as usize, Content::ALL),
            outcome as usize,
            CacheOutcome::ALL,
        );
        self.cache_requests.with(
            slot,
            || {
                vec![
                    ("upstream", self.upstream_label(up)),
                    ("type", content.as_str().to_string()),
                    ("result", outcome.as_str().to_string()),
                ]
            },
            |c| {
                c.inc();
            },
        );
        if bytes > 0 {
            self.cache_bytes.with(
                slot2(up, outcome as usize, CacheOutcome::ALL),
                || {
                    vec![
                        ("upstream", self.upstream_label(up)),
                        ("result", outcome.as_str().to_string()),
                    ]
                },
                |c| {
                    c.inc_by(bytes);
                },
            );
        }
    }

    /// An eviction pass deleted `blobs` blobs of `bytes` bytes.
    pub fn evicted(&self, blobs: u64, bytes: u64) {
        if self.enabled {
            self.evicted_blobs.inc_by(blobs);
            self.evicted_bytes.inc_by(bytes);
        }
    }

    pub fn upstream_resume(&self) {
        if self.enabled {
            self.upstream_resumes.inc();
        }
    }

    pub fn download_failed(&self, reason: FailureReason) {
        if !self.enabled {
            return;
        }
        self.download_failures.with(
            reason as usize,
            || vec![("reason", reason.as_str().to_string())],
            |c| {
                c.inc();
            },
        );
    }

    /// A store call of `backend` ended after `seconds`, failed or not.
    pub fn store_call(&self, op: StoreOp, seconds: f64, failed: bool) {
        if !self.enabled {
            return;
        }
        self.store_duration.with(
            op as usize,
            || vec![("op", op.as_str().to_string())],
            |h| h.observe(seconds),
        );
        if failed {
            self.store_errors.inc();
        }
    }

    pub fn lease_request(&self, result: LeaseResult) {
        if !self.enabled {
            return;
        }
        self.lease_requests.with(
            result as usize,
            || vec![("result", result.as_str().to_string())],
            |c| {
                c.inc();
            },
        );
    }

    pub fn peer_bytes(&self, bytes: u64) {
        if self.enabled {
            self.peer_bytes.inc_by(bytes);
        }
    }

    pub fn fallback(&self) {
        if self.enabled {
            self.fallbacks.inc();
        }
    }
}

/// Cache requests and served bytes by outcome (indexed by `CacheOutcome as usize`), summed
/// over upstreams and content types.
#[derive(Debug, Default, Clone)]
pub struct CacheTotals {
    pub requests: [u64; CacheOutcome::ALL],
    pub bytes: [u64; CacheOutcome::ALL],
}

impl Metrics {
    pub fn cache_totals(&self) -> CacheTotals {
        let mut totals = CacheTotals::default();
        self.cache_requests.for_each(|slot, c| {
            if let Some(t) = totals.requests.get_mut(slot % CacheOutcome::ALL) {
                *t += c.get();
            }
        });
        self.cache_bytes.for_each(|slot, c| {
            if let Some(t) = totals.bytes.get_mut(slot % CacheOutcome::ALL) {
                *t += c.get();
            }
        });
        totals
    }
}

/// Records one upstream's requests; held by its client.
#[derive(Debug, Clone)]
pub struct UpstreamMetrics {
    metrics: Arc<Metrics>,
    slot: usize,
}

impl UpstreamMetrics {
    /// For a client built outside a node: records nowhere anyone scrapes.
    pub fn detached() -> UpstreamMetrics {
        Metrics::detached().upstream("")
    }

    fn label(&self) -> Labels {
        vec![("upstream", self.metrics.upstream_label(self.slot))]
    }

    /// An upstream request got an answer `code` (0 when none came) after `seconds`.
    pub fn request(&self, method: Method, code: u16, seconds: f64) {
        let m = &self.metrics;
        if !m.enabled {
            return;
        }
        let code_index = if code == 0 {
            CODES - 1
        } else {
            code_slot(code)
        };
        m.upstream_requests.with(
            slot2(
                slot2(self.slot, method as usize, Method::ALL),
                code_index,
                CODES,
            ),
            || {
                let mut labels = self.label();
                labels.push(("method", method.as_str().to_string()));
                labels.push(("code", code.to_string()));
                labels
            },
            |c| {
                c.inc();
            },
        );
        m.upstream_duration
            .with(self.slot, || self.label(), |h| h.observe(seconds));
        if code == 429 {
            m.upstream_throttled.with(
                self.slot,
                || self.label(),
                |c| {
                    c.inc();
                },
            );
        }
    }

    pub fn retry(&self) {
        if self.metrics.enabled {
            self.metrics.upstream_retries.with(
                self.slot,
                || self.label(),
                |c| {
                    c.inc();
                },
            );
        }
    }

    pub fn bytes(&self, n: u64) {
        if self.metrics.enabled && n > 0 {
            self.metrics.upstream_bytes.with(
                self.slot,
                || self.label(),
                |c| {
                    c.inc_by(n);
                },
            );
        }
    }

    /// Docker Hub's `ratelimit-limit` / `ratelimit-remaining`, as the upstream sent them.
    pub fn ratelimit(&self, limit: Option<i64>, remaining: Option<i64>) {
        if !self.metrics.enabled {
            return;
        }
        if let Some(limit) = limit {
            self.metrics
                .ratelimit_limit
                .get_or_create(&self.label())
                .set(limit);
        }
        if let Some(remaining) = remaining {
            self.metrics
                .ratelimit_remaining
                .get_or_create(&self.label())
                .set(remaining);
        }
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
    }
}
