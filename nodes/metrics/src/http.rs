//! Client requests: counts by method, route and code, time to headers, bodies, in flight.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::labels::{Method, Route, slot2};
use crate::slots::{CODES, Slots, code_slot};
use crate::{Histograms, Metrics, counters, histograms, latency, reg};

/// The HTTP edge's families.
#[derive(Debug)]
pub struct HttpMetrics {
    requests: Slots<Counter>,
    duration: Histograms,
    in_flight: Gauge,
    bytes: Slots<Counter>,
}

impl HttpMetrics {
    pub(crate) fn register(registry: &mut Registry) -> HttpMetrics {
        HttpMetrics {
            requests: Slots::new(
                reg(
                    registry,
                    "wharf_http_requests",
                    "Client requests answered",
                    counters(),
                ),
                Method::ALL * Route::ALL * CODES,
            ),
            duration: Slots::new(
                reg(
                    registry,
                    "wharf_http_request_duration_seconds",
                    "Time from a request to its response headers (time to first byte)",
                    histograms(latency),
                ),
                Route::ALL,
            ),
            in_flight: reg(
                registry,
                "wharf_http_in_flight_requests",
                "Client requests received and not yet answered with headers",
                Gauge::default(),
            ),
            bytes: Slots::new(
                reg(
                    registry,
                    "wharf_http_response_bytes",
                    "Body bytes of responses (as declared in Content-Length)",
                    counters(),
                ),
                Route::ALL,
            ),
        }
    }
}

impl Metrics {
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
        self.http.requests.with(
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
        self.http
            .duration
            .with(route as usize, labels, |h| h.observe(seconds));
        if bytes > 0 {
            self.http.bytes.with(route as usize, labels, |c| {
                c.inc_by(bytes);
            });
        }
    }

    /// A request came in (`+1`) or got its headers (`-1`).
    pub fn http_in_flight(&self, delta: i64) {
        if self.enabled {
            self.http.in_flight.inc_by(delta);
        }
    }
}
