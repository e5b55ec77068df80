//! The store and the downloads that fill it: calls and their latency, failures, whether the
//! store answers, downloads under way and why downloads failed; reloads of watched files.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::labels::{FailureReason, StoreOp};
use crate::slots::Slots;
use crate::{Histograms, Metrics, counters, histograms, reg, store_latency};

/// The store's and the downloads' families.
#[derive(Debug)]
pub struct StoreMetrics {
    pub downloads_in_flight: Gauge,
    pub download_waiters: Gauge,
    download_failures: Slots<Counter>,
    duration: Histograms,
    errors: Counter,
    /// 1 while the store's latest call succeeded.
    pub up: Gauge,
    /// Reloaded files (TLS, htpasswd, JWKS, the config file) whose latest reload failed.
    pub reloads_failing: Gauge,
}

impl StoreMetrics {
    pub(crate) fn register(registry: &mut Registry) -> StoreMetrics {
        StoreMetrics {
            downloads_in_flight: reg(
                registry,
                "wharf_downloads_in_flight",
                "Blob downloads under way on this node",
                Gauge::default(),
            ),
            download_waiters: reg(
                registry,
                "wharf_download_waiters",
                "Clients and peers streaming in-flight downloads",
                Gauge::default(),
            ),
            download_failures: Slots::new(
                reg(
                    registry,
                    "wharf_download_failures",
                    "Blob downloads that failed, by reason",
                    counters(),
                ),
                FailureReason::ALL,
            ),
            duration: Slots::new(
                reg(
                    registry,
                    "wharf_store_operation_duration_seconds",
                    "Time of store calls (a read: until the object is open)",
                    histograms(store_latency),
                ),
                StoreOp::ALL,
            ),
            errors: reg(
                registry,
                "wharf_store_errors",
                "Store calls that failed",
                Counter::default(),
            ),
            up: reg(
                registry,
                "wharf_store_up",
                "1 while the store's latest call succeeded, 0 while it fails",
                Gauge::default(),
            ),
            reloads_failing: reg(
                registry,
                "wharf_reloads_failing",
                "Reloaded files (TLS, htpasswd, JWKS, config) whose latest reload failed: the previous version is in force",
                Gauge::default(),
            ),
        }
    }

    /// Every failure reason's counter starts at 0.
    pub(crate) fn start_at_zero(&self) {
        for reason in FailureReason::VALUES {
            self.download_failures.get(reason as usize, || {
                vec![("reason", reason.as_str().to_string())]
            });
        }
    }
}

impl Metrics {
    pub fn download_failed(&self, reason: FailureReason) {
        if !self.enabled {
            return;
        }
        self.store.download_failures.with(
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
        self.store.duration.with(
            op as usize,
            || vec![("op", op.as_str().to_string())],
            |h| h.observe(seconds),
        );
        if failed {
            self.store.errors.inc();
        }
    }
}
