//! Store health: a decorator that watches every store call, so the node can say it is degraded
//! (serving pass-through from the upstream, uncached) while its store fails, and recover by
//! itself when the store answers again.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;
use wharf_core::ByteRange;
use wharf_metrics::{Metrics, StoreOp};
use wharf_storage::{BlobStore, ByteSource, ObjectInfo, ObjectKey, ObjectReader, StoreError};

#[derive(Default)]
struct State {
    last_success: Option<Instant>,
    last_failure: Option<(Instant, String, &'static str)>,
}

/// A store failure as `/health` may say it to anyone: its kind, never its words (those name
/// object keys, private repositories and tags, local paths, account ids).
pub fn failure_class(e: &StoreError) -> &'static str {
    match e {
        StoreError::Timeout { .. } => "timeout",
        StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
            "denied"
        }
        StoreError::S3 { message, .. }
            if message.contains("AccessDenied") || message.contains("Forbidden") =>
        {
            "denied"
        }
        _ => "io",
    }
}

/// What `/health` reports.
#[derive(Debug, Serialize)]
pub struct HealthReport {
    /// `ok`, or `degraded` while the store's latest call failed or the cluster has no quorum.
    pub status: &'static str,
    pub store: &'static str,
    /// The latest failure in full, for `/status.json` (guarded like the status page) only.
    pub store_error: Option<String>,
    /// Its kind: `timeout`, `denied` or `io`.
    pub store_error_class: Option<&'static str>,
    pub store_error_secs_ago: Option<u64>,
    /// Cluster coordination, on a clustered node: not ok while it has no quorum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::singleflight::CoordinatorHealth>,
}

/// `/health`: no detail a stranger could use (it needs no authentication).
#[derive(Debug, Serialize)]
pub struct PublicHealth {
    /// `ok`, or `degraded`.
    pub status: &'static str,
    /// `ok`, or `failing`.
    pub store: &'static str,
    /// Why it is degraded: `timeout`, `denied`, `io` (the store), `no_quorum` (the cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterHealth>,
}

/// The cluster's part of `/health`.
#[derive(Debug, Serialize)]
pub struct ClusterHealth {
    /// False while cold blobs are fetched without the cluster's agreement (no quorum).
    pub ok: bool,
    /// Cold blobs fetched without a lease since start.
    pub fallbacks: u64,
}

#[derive(Default, Clone)]
pub struct Health {
    state: Arc<Mutex<State>>,
}

impl Health {
    /// A failure counts from when its call began: a call that began before the store last
    /// answered (one retried through an outage, failing late) does not make it degraded again.
    fn record<T>(&self, result: &Result<T, StoreError>, started: Instant) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(_) => state.last_success = Some(Instant::now()),
            // A failed body (aborted download) says nothing about the store.
            Err(StoreError::Source { .. }) => {}
            Err(e) => state.last_failure = Some((started, e.to_string(), failure_class(e))),
        }
    }

    pub fn report(&self) -> HealthReport {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let failing = match (&state.last_failure, state.last_success) {
            (Some((failed, _, _)), Some(ok)) => *failed > ok,
            (Some(_), None) => true,
            _ => false,
        };
        HealthReport {
            status: if failing { "degraded" } else { "ok" },
            store: if failing { "failing" } else { "ok" },
            store_error: state.last_failure.as_ref().map(|(_, e, _)| e.clone()),
            store_error_class: state.last_failure.as_ref().map(|(_, _, class)| *class),
            store_error_secs_ago: state
                .last_failure
                .as_ref()
                .map(|(t, _, _)| t.elapsed().as_secs()),
            cluster: None,
        }
    }

    /// What `/health` tells anyone who asks: `ok` or `degraded`, and a coarse reason.
    pub fn public(&self) -> PublicHealth {
        let report = self.report();
        PublicHealth {
            status: report.status,
            store: report.store,
            reason: (report.store == "failing")
                .then_some(report.store_error_class)
                .flatten(),
            cluster: None,
        }
    }

    pub fn is_degraded(&self) -> bool {
        self.report().status != "ok"
    }
}

/// Forwards to the real store and records each outcome in [`Health`].
pub struct MonitoredStore {
    inner: Arc<dyn BlobStore>,
    health: Health,
    metrics: Arc<Metrics>,
}

impl MonitoredStore {
    pub fn new(inner: Arc<dyn BlobStore>, health: Health, metrics: Arc<Metrics>) -> MonitoredStore {
        MonitoredStore {
            inner,
            health,
            metrics,
        }
    }

    async fn seen<T>(
        &self,
        op: StoreOp,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        self.health.record(&result, started);
        let failed = matches!(&result, Err(e) if !matches!(e, StoreError::Source { .. }));
        self.metrics
            .store_call(op, started.elapsed().as_secs_f64(), failed);
        result
    }
}

#[async_trait]
impl BlobStore for MonitoredStore {
    async fn stat(&self, key: &ObjectKey) -> Result<Option<u64>, StoreError> {
        self.seen(StoreOp::Stat, self.inner.stat(key)).await
    }

    async fn read(
        &self,
        key: &ObjectKey,
        range: Option<ByteRange>,
    ) -> Result<Option<ObjectReader>, StoreError> {
        self.seen(StoreOp::Read, self.inner.read(key, range)).await
    }

    async fn read_small(&self, key: &ObjectKey) -> Result<Option<Bytes>, StoreError> {
        self.seen(StoreOp::Read, self.inner.read_small(key)).await
    }

    async fn put_small(&self, key: &ObjectKey, body: Bytes) -> Result<(), StoreError> {
        self.seen(StoreOp::Write, self.inner.put_small(key, body))
            .await
    }

    async fn put_file(&self, key: &ObjectKey, file: &Path) -> Result<(), StoreError> {
        self.seen(StoreOp::Write, self.inner.put_file(key, file))
            .await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        self.seen(StoreOp::Delete, self.inner.delete(key)).await
    }

    fn streams_writes(&self) -> bool {
        self.inner.streams_writes()
    }

    fn shared(&self) -> bool {
        self.inner.shared()
    }

    async fn put_stream(&self, key: &ObjectKey, body: ByteSource) -> Result<(), StoreError> {
        self.seen(StoreOp::Write, self.inner.put_stream(key, body))
            .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.seen(StoreOp::List, self.inner.list(prefix)).await
    }

    fn list_pages<'a>(&'a self, prefix: &'a str) -> wharf_storage::ListPages<'a> {
        self.inner.list_pages(prefix)
    }

    async fn presigned_url(
        &self,
        key: &ObjectKey,
        expires: Duration,
    ) -> Result<Option<String>, StoreError> {
        self.seen(StoreOp::Presign, self.inner.presigned_url(key, expires))
            .await
    }
}
