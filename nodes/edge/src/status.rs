//! The operator's view of a node: `/metrics` (Prometheus), `/status.json` and the status page
//! at `/` (server-rendered HTML, refreshed every 2 s, no script, no external asset). They show
//! no secrets: upstream URLs without credentials, errors as messages, digests of downloads.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use wharf_metrics::{CacheOutcome, Format};
use wharf_upstream::state::UpstreamStatus;

use crate::Edge;
use crate::access;
use crate::error::ApiError;
use wharf_mirror::download::DownloadStatus;
use wharf_mirror::singleflight::CoordinatorHealth;

/// Errors kept for the status page.
const RECENT_ERRORS: usize = 20;

/// The latest server-side errors answered to clients (a bounded ring).
#[derive(Default)]
pub struct RecentErrors {
    ring: Mutex<VecDeque<RecentError>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecentError {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl RecentErrors {
    pub fn push(&self, error: &ApiError) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() >= RECENT_ERRORS {
            ring.pop_front();
        }
        ring.push_back(RecentError {
            at: now_secs(),
            status: error.status.as_u16(),
            code: error.code.as_str(),
            message: error.message.chars().take(300).collect(),
        });
    }

    pub fn list(&self) -> Vec<RecentError> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter().rev().cloned().collect()
    }
}

/// Who the node is: for `wharf_build_info`, the status page and its uptime.
pub struct NodeInfo {
    pub version: &'static str,
    pub commit: &'static str,
    pub started: Instant,
    /// `file` or `s3`.
    pub backend: &'static str,
    /// Serve `/metrics`, `/` and `/status.json` on the main listener too.
    pub on_main_listener: bool,
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub version: &'static str,
    pub commit: &'static str,
    pub uptime_secs: u64,
    pub cache: CacheReport,
    pub store: StoreReport,
    pub upstreams: Vec<UpstreamReport>,
    pub downloads: Vec<DownloadStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<CoordinatorHealth>,
    /// `[[prefetch]]` rules as this node ran them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prefetch: Vec<wharf_mirror::prefetch::RuleStatus>,
    /// Reloaded files and the config file: a failing one keeps its previous version.
    pub reloads: Vec<wharf_auth::reload::ReloadStatus>,
    pub recent_errors: Vec<RecentError>,
}

#[derive(Debug, Serialize)]
pub struct CacheReport {
    /// Content requests answered from the cache (hits and stale tags) over all content requests.
    pub hit_ratio: Option<f64>,
    pub requests: std::collections::BTreeMap<&'static str, u64>,
    /// Bytes served from the cache: what the upstream did not have to send again.
    pub bytes_from_cache: u64,
    /// Bytes served as they were fetched (misses, joined downloads, peers).
    pub bytes_fetched: u64,
}

#[derive(Debug, Serialize)]
pub struct StoreReport {
    pub backend: &'static str,
    pub status: &'static str,
    pub error: Option<String>,
    pub bytes: u64,
    pub blobs: u64,
    /// From the last eviction pass (`pass`), or the blobs this node knows of (`index`).
    pub counted_by: &'static str,
    /// `eviction.max_size_mib` in bytes; 0: no quota.
    pub quota_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hot_cache: Option<HotCacheReport>,
}

/// This node's local copies of warm S3 blobs.
#[derive(Debug, Serialize)]
pub struct HotCacheReport {
    pub copies: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    /// Reads served from a local copy, and from S3.
    pub hits: u64,
    pub misses: u64,
    pub fills: u64,
    /// Copies dropped because their blob left S3 (evicted on another node).
    pub dropped: u64,
}

#[derive(Debug, Serialize)]
pub struct UpstreamReport {
    pub name: String,
    /// The URL requests go to now.
    pub url: String,
    /// Every URL (`url`, then `fallback_urls`) and whether it answers.
    pub endpoints: Vec<wharf_upstream::endpoints::EndpointStatus>,
    #[serde(flatten)]
    pub status: UpstreamStatus,
}

/// Gather the report, and set the metrics' state gauges from the same sources.
pub fn report(edge: &Edge) -> StatusReport {
    let metrics = &edge.mirror.stats.metrics;
    let downloads = edge.mirror.blobs.download_statuses();
    metrics
        .store
        .downloads_in_flight
        .set(i64::try_from(downloads.len()).unwrap_or(i64::MAX));
    metrics
        .store
        .download_waiters
        .set(downloads.iter().map(|d| d.waiters as i64).sum());
    let health = edge.mirror.health.report();
    metrics.store.up.set(i64::from(health.status == "ok"));
    let failing = edge.reload_statuses().iter().filter(|r| r.failing).count();
    metrics
        .store
        .reloads_failing
        .set(i64::try_from(failing).unwrap_or(i64::MAX));
    let evictor = edge.mirror.blobs.evictor();
    let (bytes, blobs, counted_by) = match evictor.last_report() {
        Some(r) => (r.kept_bytes, r.kept as u64, "pass"),
        None => {
            let (bytes, blobs) = edge.mirror.blobs.indexed();
            (bytes, blobs, "index")
        }
    };
    metrics
        .cache
        .store_bytes
        .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    metrics
        .cache
        .store_blobs
        .set(i64::try_from(blobs).unwrap_or(i64::MAX));
    let cluster = edge.mirror.blobs.coordinator().map(|c| c.health());
    if let Some(c) = &cluster {
        metrics.cluster.members.set(c.members as i64);
        metrics
            .cluster
            .is_leader
            .set(i64::from(c.leader_id == Some(c.node_id)));
        metrics
            .cluster
            .term
            .set(i64::try_from(c.term).unwrap_or(i64::MAX));
        metrics.cluster.leases_held.set(c.leases_held as i64);
    }
    let totals = metrics.cache_totals();
    let count = |o: CacheOutcome| totals.requests[o as usize];
    let all: u64 = totals.requests.iter().sum();
    let from_cache = count(CacheOutcome::Hit) + count(CacheOutcome::Stale);
    let requests = [
        CacheOutcome::Hit,
        CacheOutcome::Miss,
        CacheOutcome::Stale,
        CacheOutcome::Coalesced,
        CacheOutcome::Peer,
    ]
    .into_iter()
    .map(|o| (o.as_str(), count(o)))
    .collect();
    let bytes_of = |o: CacheOutcome| totals.bytes[o as usize];
    StatusReport {
        version: edge.info.version,
        commit: edge.info.commit,
        uptime_secs: edge.info.started.elapsed().as_secs(),
        cache: CacheReport {
            hit_ratio: (all > 0).then(|| from_cache as f64 / all as f64),
            requests,
            bytes_from_cache: bytes_of(CacheOutcome::Hit) + bytes_of(CacheOutcome::Stale),
            bytes_fetched: bytes_of(CacheOutcome::Miss)
                + bytes_of(CacheOutcome::Coalesced)
                + bytes_of(CacheOutcome::Peer),
        },
        store: StoreReport {
            backend: edge.info.backend,
            status: health.status,
            error: health.store_error,
            bytes,
            blobs,
            counted_by,
            quota_bytes: evictor.quota_bytes(),
            hot_cache: edge.mirror.hot_cache.as_ref().map(|hot| {
                let (copies, bytes) = hot.held();
                let n =
                    |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
                HotCacheReport {
                    copies,
                    bytes,
                    max_bytes: hot.max_bytes(),
                    hits: n(&hot.stats.hits),
                    misses: n(&hot.stats.misses),
                    fills: n(&hot.stats.fills),
                    dropped: n(&hot.stats.dropped),
                }
            }),
        },
        upstreams: edge
            .mirror
            .upstreams
            .clients()
            .iter()
            .map(|c| UpstreamReport {
                name: c.name().to_string(),
                url: c.base_url().to_string(),
                endpoints: c.endpoints(),
                status: c.status(),
            })
            .collect(),
        downloads,
        cluster,
        prefetch: edge.mirror.prefetch.status(),
        reloads: edge.reload_statuses(),
        recent_errors: edge.recent_errors.list(),
    }
}

/// `GET /metrics`: text format 0.0.4, or OpenMetrics when the scraper asks for it.
pub async fn metrics(State(edge): State<Arc<Edge>>, request: Request) -> Response {
    let format = Format::from_accept(
        request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    if let Err(e) = operator_allowed(&edge, request).await {
        return e.into_response();
    }
    let _ = report(&edge);
    match edge.mirror.stats.metrics.encode(format) {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            )],
            body,
        )
            .into_response(),
        Err(_) => ApiError::internal("encoding metrics").into_response(),
    }
}

/// `GET /status.json`.
pub async fn status_json(State(edge): State<Arc<Edge>>, request: Request) -> Response {
    if let Err(e) = operator_allowed(&edge, request).await {
        return e.into_response();
    }
    let body = serde_json::to_string_pretty(&report(&edge)).unwrap_or_else(|_| "{}".into());
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`: the status page.
pub async fn status_page(State(edge): State<Arc<Edge>>, request: Request) -> Response {
    if let Err(e) = operator_allowed(&edge, request).await {
        return e.into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        crate::status_page::render(&report(&edge)),
    )
        .into_response()
}

/// On the main listener: only when configured there, and with auth on, only for callers the
/// `[[access]]` rules let pull `_wharf/status`. The operator listener serves everyone.
async fn operator_allowed(edge: &Edge, request: Request) -> Result<(), ApiError> {
    let asked = Asked {
        operator: request.extensions().get::<OperatorListener>().is_some(),
        origin: access::Origin::of(&request, edge.tls),
        headers: request.headers().clone(),
    };
    allowed(edge, asked).await
}

/// What the gate needs of a request (the request itself is not `Sync`).
struct Asked {
    operator: bool,
    origin: access::Origin,
    headers: axum::http::HeaderMap,
}

async fn allowed(edge: &Edge, asked: Asked) -> Result<(), ApiError> {
    if asked.operator {
        return Ok(());
    }
    if !edge.info.on_main_listener {
        return Err(ApiError::new(
            wharf_core::OciCode::NameUnknown,
            "not served on this listener",
        ));
    }
    if !edge.auth.restricted() {
        return Ok(());
    }
    let who = access::identify(&edge.auth, &asked.headers, &asked.origin).await?;
    access::authorize(
        &edge.auth,
        &who,
        &asked.origin,
        "_wharf",
        "status",
        "status",
    )
}

/// Marks requests that came in on the operator listener (`[metrics] listen`).
#[derive(Debug, Clone, Copy)]
pub struct OperatorListener;

/// Liveness and degradation: 200 with `"status":"ok"` or `"degraded"` (the store is failing
/// and content is passed through uncached); load balancers should keep a degraded node.
/// It needs no authentication, so it says nothing but `ok`/`degraded` and a coarse reason; the
/// details are on `/status.json`.
pub async fn health(State(edge): State<Arc<Edge>>) -> Response {
    let mut report = edge.mirror.health.public();
    if let Some(coordinator) = edge.mirror.blobs.coordinator() {
        let cluster = coordinator.health();
        if !cluster.ok {
            report.status = "degraded";
            report.reason = report.reason.or(Some("no_quorum"));
        }
        report.cluster = Some(wharf_mirror::health::ClusterHealth {
            ok: cluster.ok,
            fallbacks: cluster.fallbacks,
        });
    }
    let body = serde_json::to_string(&report).unwrap_or_else(|_| "{}".into());
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
