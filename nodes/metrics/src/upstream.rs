//! Requests to upstream registries: answers, latency, bytes, retries, throttling and the pull
//! allowance they announce, labelled by the configured upstream (or `other`).

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::labels::{Method, slot2};
use crate::slots::{CODES, Labels, Slots, code_slot};
use crate::{Histograms, Metrics, counters, histograms, latency, reg};

/// The upstream clients' families.
#[derive(Debug)]
pub struct UpstreamFamilies {
    requests: Slots<Counter>,
    bytes: Slots<Counter>,
    duration: Histograms,
    retries: Slots<Counter>,
    resumes: Counter,
    ranged: RangedFamilies,
    throttled: Slots<Counter>,
    ratelimit_limit: Family<Labels, Gauge>,
    ratelimit_remaining: Family<Labels, Gauge>,
    login_checks: Slots<Counter>,
}

/// What an upstream said of a client's own login (`credentials = "client"`), for
/// `wharf_upstream_login_checks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginCheck {
    Accepted,
    Refused,
    /// No such repository for that login.
    Unknown,
    /// No answer (down, timed out, rate limited): nobody let in.
    Failed,
}

impl LoginCheck {
    const ALL: usize = 4;

    fn as_str(self) -> &'static str {
        match self {
            LoginCheck::Accepted => "accepted",
            LoginCheck::Refused => "refused",
            LoginCheck::Unknown => "unknown",
            LoginCheck::Failed => "failed",
        }
    }
}

impl UpstreamFamilies {
    /// `up`: the configured upstreams and `other`.
    pub(crate) fn register(registry: &mut Registry, up: usize) -> UpstreamFamilies {
        UpstreamFamilies {
            requests: Slots::new(
                reg(
                    registry,
                    "wharf_upstream_requests",
                    "Requests sent to upstream registries, by answer (code 0: no answer)",
                    counters(),
                ),
                up * Method::ALL * CODES,
            ),
            bytes: Slots::new(
                reg(
                    registry,
                    "wharf_upstream_bytes",
                    "Body bytes received from upstream registries",
                    counters(),
                ),
                up,
            ),
            duration: Slots::new(
                reg(
                    registry,
                    "wharf_upstream_request_duration_seconds",
                    "Time from an upstream request to its response headers",
                    histograms(latency),
                ),
                up,
            ),
            retries: Slots::new(
                reg(
                    registry,
                    "wharf_upstream_retries",
                    "Upstream requests sent again after a transient failure",
                    counters(),
                ),
                up,
            ),
            resumes: reg(
                registry,
                "wharf_upstream_resumes",
                "Blob downloads continued with a range request after the body broke off",
                Counter::default(),
            ),
            ranged: RangedFamilies::register(registry),
            throttled: Slots::new(
                reg(
                    registry,
                    "wharf_upstream_throttled",
                    "429 Too Many Requests answers from upstreams",
                    counters(),
                ),
                up,
            ),
            ratelimit_limit: reg(
                registry,
                "wharf_upstream_ratelimit_limit",
                "The pull allowance the upstream announced (ratelimit-limit), when it sends one",
                Family::<Labels, Gauge>::default(),
            ),
            ratelimit_remaining: reg(
                registry,
                "wharf_upstream_ratelimit_remaining",
                "Pulls left in the upstream's window (ratelimit-remaining), when it sends one",
                Family::<Labels, Gauge>::default(),
            ),
            login_checks: Slots::new(
                reg(
                    registry,
                    "wharf_upstream_login_checks",
                    "Clients' own logins checked with an upstream (credentials = client), by verdict",
                    counters(),
                ),
                up * LoginCheck::ALL,
            ),
        }
    }

    /// The configured upstreams' counters start at 0 (see `Metrics::start_at_zero`).
    pub(crate) fn start_at_zero(&self, slot: usize, labels: impl Fn() -> Labels + Copy) {
        self.retries.get(slot, labels);
        self.throttled.get(slot, labels);
        self.bytes.get(slot, labels);
    }
}

impl Metrics {
    /// The recorder for one upstream's client.
    pub fn upstream(self: &Arc<Self>, name: &str) -> UpstreamMetrics {
        UpstreamMetrics {
            slot: self.upstream_slot(name),
            metrics: self.clone(),
        }
    }

    pub fn upstream_resume(&self) {
        if self.enabled {
            self.upstream.resumes.inc();
        }
    }

    /// A cold blob is fetched as ranges side by side.
    pub fn ranged_fill(&self) {
        if self.enabled {
            self.upstream.ranged.fills.inc();
        }
    }

    /// One range request for a piece of a blob (`wanted`: for a reader ahead of the fill).
    pub fn range_piece(&self, wanted: bool) {
        if self.enabled {
            self.upstream.ranged.pieces.inc();
            if wanted {
                self.upstream.ranged.wanted.inc();
            }
        }
    }

    /// An upstream answered a range with the whole blob: fetched as one stream.
    pub fn range_fallback(&self) {
        if self.enabled {
            self.upstream.ranged.fallbacks.inc();
        }
    }
}

/// Cold blobs fetched as ranges (`[fetch]`).
#[derive(Debug)]
struct RangedFamilies {
    fills: Counter,
    pieces: Counter,
    wanted: Counter,
    fallbacks: Counter,
}

impl RangedFamilies {
    fn register(registry: &mut Registry) -> RangedFamilies {
        let mut counter = |name: &str, help: &str| reg(registry, name, help, Counter::default());
        RangedFamilies {
            fills: counter(
                "wharf_upstream_ranged_fills",
                "Cold blob downloads fetched as range requests side by side",
            ),
            pieces: counter(
                "wharf_upstream_range_pieces",
                "Range requests for pieces of cold blobs (the first piece included)",
            ),
            wanted: counter(
                "wharf_upstream_range_pieces_wanted",
                "Range requests sent at once for bytes a reader waited for ahead of the fill",
            ),
            fallbacks: counter(
                "wharf_upstream_range_fallbacks",
                "Range requests the upstream answered with the whole blob: fetched as one stream",
            ),
        }
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
        m.upstream.requests.with(
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
        m.upstream
            .duration
            .with(self.slot, || self.label(), |h| h.observe(seconds));
        if code == 429 {
            m.upstream.throttled.with(
                self.slot,
                || self.label(),
                |c| {
                    c.inc();
                },
            );
        }
    }

    /// The upstream was asked about a client's own login and said `verdict`.
    pub fn login_check(&self, verdict: LoginCheck) {
        if self.metrics.enabled {
            self.metrics.upstream.login_checks.with(
                slot2(self.slot, verdict as usize, LoginCheck::ALL),
                || {
                    let mut labels = self.label();
                    labels.push(("verdict", verdict.as_str().to_string()));
                    labels
                },
                |c| {
                    c.inc();
                },
            );
        }
    }

    pub fn retry(&self) {
        if self.metrics.enabled {
            self.metrics.upstream.retries.with(
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
            self.metrics.upstream.bytes.with(
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
                .upstream
                .ratelimit_limit
                .get_or_create(&self.label())
                .set(limit);
        }
        if let Some(remaining) = remaining {
            self.metrics
                .upstream
                .ratelimit_remaining
                .get_or_create(&self.label())
                .set(remaining);
        }
    }
}
