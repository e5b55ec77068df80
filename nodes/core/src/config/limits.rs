//! `[limits]` and `[upstream_client]`: the bounds on what a node takes on at once, and the
//! timeouts of every request to an upstream.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// What clients can make one node do at once: every queue and connection count has a bound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Upstream blob downloads under way at once on this node (S3 uploads run alongside them).
    pub max_downloads: usize,
    /// Requests for cold blobs waiting for a download slot, at most; beyond it, `503` at once.
    pub download_queue: usize,
    /// Seconds a request waits for a download (or metadata fetch) slot before `503` with
    /// `Retry-After`.
    pub queue_timeout_secs: u64,
    /// Upstream fetches of manifests, tags, tag lists and referrers under way at once (each
    /// shared by every request for the same thing, and stopped when no request waits).
    pub max_metadata_fetches: usize,
    /// Requests waiting for a metadata fetch slot, at most; beyond it, `503` at once.
    pub metadata_queue: usize,
    /// Seconds an upstream's "no such content" (404) is remembered; 0 turns it off.
    pub negative_ttl_secs: u64,
    /// Largest blob fetched, in MiB: a bigger `Content-Length` is refused, a body without one
    /// is cut off there. 0: no limit.
    pub max_blob_mib: u64,
    /// Client connections open at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Seconds a client may take to send a request's headers (and an idle keep-alive
    /// connection may wait for its next request).
    pub header_read_timeout_secs: u64,
    /// Seconds a response may make no progress because its client does not read.
    pub send_timeout_secs: u64,
    /// Seconds a storage call may take (for streams: each chunk; for a streamed upload: how
    /// long the store may sit on a chunk it was handed).
    pub storage_timeout_secs: u64,
    /// Threads that serve client connections, each an event loop of its own that keeps the
    /// connections it was given (as nginx's workers do): no request's work moves between
    /// threads. 0: one per CPU the node may use.
    pub serving_threads: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_downloads: 64,
            download_queue: 1024,
            queue_timeout_secs: 30,
            max_metadata_fetches: 64,
            metadata_queue: 1024,
            negative_ttl_secs: 10,
            max_blob_mib: 100 * 1024,
            max_connections: 16_384,
            header_read_timeout_secs: 10,
            send_timeout_secs: 60,
            storage_timeout_secs: 30,
            serving_threads: 0,
        }
    }
}

impl LimitsConfig {
    /// Every bound and timeout must be positive.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let l = self;
        if l.max_downloads == 0
            || l.max_metadata_fetches == 0
            || l.max_connections == 0
            || l.header_read_timeout_secs == 0
            || l.send_timeout_secs == 0
            || l.storage_timeout_secs == 0
        {
            return invalid(
                "limits.max_downloads, max_connections and the limits' timeouts must be positive"
                    .into(),
            );
        }
        if l.serving_threads > MAX_SERVING_THREADS {
            return invalid(format!(
                "limits.serving_threads is at most {MAX_SERVING_THREADS}"
            ));
        }
        Ok(())
    }

    /// How many serving threads `serving_threads` asks for on this machine.
    pub fn serving_threads(&self) -> usize {
        match self.serving_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
        .min(MAX_SERVING_THREADS)
    }
}

/// More serving threads than this is a typo, not a machine.
const MAX_SERVING_THREADS: usize = 256;

/// Timeouts and retries for every request to an upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamClientConfig {
    pub connect_timeout_secs: u64,
    /// From sending the request to the response headers.
    pub first_byte_timeout_secs: u64,
    /// Longest silence while a body streams.
    pub idle_timeout_secs: u64,
    /// Extra attempts for idempotent requests that fail before any body byte was received.
    pub retries: u32,
    /// First retry delay; doubled on each further attempt.
    pub retry_backoff_ms: u64,
    /// Requests to one upstream waiting for their response headers at once; further ones wait
    /// (up to `first_byte_timeout_secs`), so no flood of distinct names opens a connection each.
    pub max_concurrent_requests: usize,
}

impl Default for UpstreamClientConfig {
    fn default() -> Self {
        UpstreamClientConfig {
            connect_timeout_secs: 10,
            first_byte_timeout_secs: 30,
            idle_timeout_secs: 60,
            retries: 2,
            retry_backoff_ms: 200,
            max_concurrent_requests: 32,
        }
    }
}
