//! `MirrorError`: why the pipeline could not give a request its content, said as who failed
//! (the client's request, this mirror's configuration or limits, the upstream, the store) and
//! whether asking again can help. The HTTP edge turns it into an OCI error body and a status,
//! in one place; the cluster turns it into a gRPC status.

use std::sync::Arc;
use std::time::Duration;

use wharf_core::OciCode;
use wharf_storage::StoreError;
use wharf_upstream::UpstreamError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum MirrorError {
    /// The content or repository does not exist where it was asked for (the upstream said so,
    /// a cluster peer did, or the repository does not hold that digest). `code` is the OCI
    /// code that says what was missing.
    #[error("{message}")]
    NotFound { code: OciCode, message: String },
    /// The request itself is malformed (a range past the end, an `ns=` that names no
    /// registry host, an image reference that does not parse). Asking again cannot help.
    #[error("{message}")]
    Invalid { code: OciCode, message: String },
    /// This mirror does not serve what was asked (no default upstream, a registry it does not
    /// forward to), or a cluster peer was refused.
    #[error("{message}")]
    Denied { message: String },
    /// The upstream refused or failed; `missing` is the OCI code for its "no such thing".
    #[error("upstream registry {upstream}: {source}")]
    Upstream {
        upstream: String,
        missing: OciCode,
        #[source]
        source: UpstreamError,
    },
    /// The upstream sent bytes that do not hash to the digest asked for: nothing was cached.
    #[error("upstream registry {upstream} sent {what} that does not match its digest")]
    DigestMismatch { upstream: String, what: String },
    /// The upstream (or a peer relaying it) answered with something unusable: a tag list that
    /// is not JSON, a body that broke off.
    #[error("{message}")]
    BadAnswer { message: String },
    /// The blob is larger than `[limits] max_blob_mib`: never fetched.
    #[error("the blob is larger than this mirror's limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// A bound of this node was reached (fetch slots, repository checks) or a download was
    /// given up for others; `retry_after` says when to ask again, when known.
    #[error("{message}")]
    Busy {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Something the request went through was rate limited (a peer relaying an upstream's).
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Something the request waited on did not answer in time (a peer relaying a timeout).
    #[error("{message}")]
    TimedOut { message: String },
    /// The cache store failed; the details stay in the log.
    #[error("the mirror's cache storage failed: {0}")]
    Storage(Arc<StoreError>),
    /// A failure of wharf itself (a task that ended without a result, a malformed record).
    #[error("{message}")]
    Internal { message: String },
}

impl MirrorError {
    pub fn not_found(code: OciCode, message: impl Into<String>) -> MirrorError {
        MirrorError::NotFound {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(code: OciCode, message: impl Into<String>) -> MirrorError {
        MirrorError::Invalid {
            code,
            message: message.into(),
        }
    }

    pub fn denied(message: impl Into<String>) -> MirrorError {
        MirrorError::Denied {
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> MirrorError {
        MirrorError::Internal {
            message: message.into(),
        }
    }

    pub fn busy(message: impl Into<String>, retry_after: Option<Duration>) -> MirrorError {
        MirrorError::Busy {
            message: message.into(),
            retry_after,
        }
    }

    /// An upstream failure; `missing` is the code for "the upstream has no such thing".
    pub fn upstream(upstream: &str, source: UpstreamError, missing: OciCode) -> MirrorError {
        MirrorError::Upstream {
            upstream: upstream.to_string(),
            missing,
            source,
        }
    }

    /// The OCI error code a client is told.
    pub fn code(&self) -> OciCode {
        match self {
            MirrorError::NotFound { code, .. } | MirrorError::Invalid { code, .. } => *code,
            MirrorError::Denied { .. } => OciCode::Denied,
            MirrorError::Upstream {
                missing, source, ..
            } => match source {
                UpstreamError::NotFound { code, .. } => code.unwrap_or(*missing),
                UpstreamError::Rejected { code, .. } => code.unwrap_or(OciCode::NameInvalid),
                UpstreamError::Denied { .. } => OciCode::Denied,
                UpstreamError::RateLimited { .. } => OciCode::TooManyRequests,
                UpstreamError::Unreachable(_)
                | UpstreamError::Timeout(_)
                | UpstreamError::Failed(_) => OciCode::Unavailable,
                UpstreamError::Inconsistent(_) | UpstreamError::ManifestTooLarge { .. } => {
                    OciCode::ManifestInvalid
                }
            },
            MirrorError::RateLimited { .. } => OciCode::TooManyRequests,
            MirrorError::DigestMismatch { .. }
            | MirrorError::BadAnswer { .. }
            | MirrorError::TooLarge { .. }
            | MirrorError::Busy { .. }
            | MirrorError::TimedOut { .. } => OciCode::Unavailable,
            MirrorError::Storage(_) | MirrorError::Internal { .. } => OciCode::Unknown,
        }
    }

    /// What anyone may be told: which upstream and how it failed, never an internal URL, an
    /// address, a TLS detail or a store's words (those are in the error's `Display`, for the
    /// log).
    pub fn public_message(&self) -> String {
        match self {
            MirrorError::NotFound { message, .. }
            | MirrorError::Invalid { message, .. }
            | MirrorError::Denied { message }
            | MirrorError::BadAnswer { message }
            | MirrorError::Busy { message, .. }
            | MirrorError::RateLimited { message, .. }
            | MirrorError::TimedOut { message }
            | MirrorError::Internal { message } => message.clone(),
            MirrorError::Upstream {
                upstream, source, ..
            } => match source {
                UpstreamError::NotFound { message, .. } => message.clone(),
                UpstreamError::Rejected { message, .. } => {
                    format!("upstream registry {upstream} rejected the request: {message}")
                }
                UpstreamError::Denied { status } => format!(
                    "upstream registry {upstream} denied access (HTTP {status}): the repository may not exist, or wharf's credentials for it are missing or lack access"
                ),
                UpstreamError::RateLimited { .. } => format!(
                    "upstream registry {upstream} is rate limiting wharf and nothing is cached for this request"
                ),
                UpstreamError::Unreachable(_) => {
                    format!("upstream registry {upstream} is unreachable")
                }
                UpstreamError::Timeout(_) => format!("upstream registry {upstream} timed out"),
                UpstreamError::Failed(_) => {
                    format!("upstream registry {upstream} failed to answer")
                }
                UpstreamError::Inconsistent(why) => {
                    format!("upstream registry {upstream} sent an inconsistent manifest: {why}")
                }
                UpstreamError::ManifestTooLarge { limit } => {
                    format!("upstream manifest exceeds wharf's limit of {limit} bytes")
                }
            },
            MirrorError::DigestMismatch { upstream, what } => format!(
                "upstream registry {upstream} sent {what} that does not match its digest; nothing was cached"
            ),
            MirrorError::TooLarge { limit } => {
                format!("the blob is larger than this mirror's limit of {limit} bytes")
            }
            MirrorError::Storage(_) => "the mirror's cache storage failed".to_string(),
        }
    }

    /// The thing does not exist there: worth remembering for a while (negative cache), and
    /// what a repository check treats as "not in this repository".
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            MirrorError::NotFound { .. }
                | MirrorError::Upstream {
                    source: UpstreamError::NotFound { .. },
                    ..
                }
        )
    }

    /// The upstream could not be asked (down, timing out, rate limiting): what cached content
    /// may be served stale for.
    pub fn upstream_unavailable(&self) -> bool {
        matches!(self.code(), OciCode::Unavailable | OciCode::TooManyRequests)
    }

    /// A failure of this node (its store, itself) rather than of the request or the upstream.
    pub fn is_internal(&self) -> bool {
        matches!(self, MirrorError::Storage(_) | MirrorError::Internal { .. })
    }

    /// Whether asking again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            MirrorError::Upstream { source, .. } => matches!(
                source,
                UpstreamError::Unreachable(_)
                    | UpstreamError::Timeout(_)
                    | UpstreamError::Failed(_)
                    | UpstreamError::RateLimited { .. }
            ),
            MirrorError::Busy { .. }
            | MirrorError::RateLimited { .. }
            | MirrorError::TimedOut { .. }
            | MirrorError::BadAnswer { .. }
            | MirrorError::DigestMismatch { .. } => true,
            MirrorError::Storage(e) => e.is_transient(),
            MirrorError::NotFound { .. }
            | MirrorError::Invalid { .. }
            | MirrorError::Denied { .. }
            | MirrorError::TooLarge { .. }
            | MirrorError::Internal { .. } => false,
        }
    }

    /// When to ask again, when the failure says.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            MirrorError::Busy { retry_after, .. }
            | MirrorError::RateLimited { retry_after, .. } => *retry_after,
            MirrorError::Upstream {
                source: UpstreamError::RateLimited { retry_after },
                ..
            } => *retry_after,
            _ => None,
        }
    }
}

impl From<StoreError> for MirrorError {
    /// The details (object keys, paths, the backend's words) go to the log here.
    fn from(e: StoreError) -> MirrorError {
        tracing::error!(error = %e, "storage failure");
        MirrorError::Storage(Arc::new(e))
    }
}
