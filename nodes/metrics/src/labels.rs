//! The label values of wharf's metrics: closed enums, so every family's series are bounded
//! by construction, and their slot in a family's pre-resolved handles.

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
    pub(crate) const ALL: usize = 5;

    /// The route of a request path (no allocation; used on every request).
    pub fn of_path(path: &str) -> Route {
        let Some(rest) = path.strip_prefix("/v2/") else {
            return Route::Other;
        };
        if holds(rest, "/blobs/") {
            Route::Blob
        } else if holds(rest, "/manifests/") {
            Route::Manifest
        } else if rest.ends_with("/tags/list") {
            Route::Tags
        } else if holds(rest, "/referrers/") {
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

/// `path.contains(marker)` for a marker that starts with `/`: only the slashes are tried, by
/// a plain loop (a substring searcher set up per call cost more than the search).
fn holds(path: &str, marker: &str) -> bool {
    let bytes = path.as_bytes();
    (0..bytes.len()).any(|at| bytes[at] == b'/' && bytes[at..].starts_with(marker.as_bytes()))
}

/// HTTP methods as a label: a read-only mirror sees GET and HEAD; the rest are one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Other,
}

impl Method {
    pub(crate) const ALL: usize = 3;

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
    pub(crate) const ALL: usize = 3;

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
    pub(crate) const ALL: usize = 6;
    pub(crate) const VALUES: [FailureReason; 6] = [
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
    pub(crate) const ALL: usize = 6;

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
    pub(crate) const ALL: usize = 3;
    pub(crate) const VALUES: [LeaseResult; 3] =
        [LeaseResult::Granted, LeaseResult::Held, LeaseResult::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            LeaseResult::Granted => "granted",
            LeaseResult::Held => "held",
            LeaseResult::Failed => "failed",
        }
    }
}

/// The slot of a pair of labels, `b` of `b_len` values.
pub(crate) fn slot2(a: usize, b: usize, b_len: usize) -> usize {
    a * b_len + b
}
