//! What can go wrong talking to an upstream.

use std::time::Duration;

use wharf_core::OciCode;

#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream says the content does not exist (its own OCI code, if it sent one).
    #[error("upstream has no such content: {message}")]
    NotFound {
        code: Option<OciCode>,
        message: String,
    },
    /// The upstream found the request itself invalid (400, 414: a name or reference it does not
    /// accept): the client's mistake passed on, not the upstream's failure.
    #[error("upstream rejected the request: {message}")]
    Rejected {
        code: Option<OciCode>,
        message: String,
    },
    /// The upstream refused access even after authenticating (or no credentials were given).
    #[error("upstream denied access (HTTP {status})")]
    Denied { status: u16 },
    #[error("upstream rate limit reached")]
    RateLimited { retry_after: Option<Duration> },
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    #[error("upstream timed out: {0}")]
    Timeout(String),
    /// 5xx, a malformed answer, or a body that broke off.
    #[error("upstream failed: {0}")]
    Failed(String),
    #[error("upstream manifest is larger than the {limit} byte limit")]
    ManifestTooLarge { limit: u64 },
    /// The upstream's answer contradicts itself (a `Content-Type` that is not the manifest's
    /// own `mediaType`): not served, not cached, not retried.
    #[error("upstream sent an inconsistent manifest: {0}")]
    Inconsistent(String),
}

impl UpstreamError {
    /// Failures worth another attempt for an idempotent request.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            UpstreamError::Unreachable(_) | UpstreamError::Timeout(_) | UpstreamError::Failed(_)
        )
    }

    /// The upstream could not answer at all (as opposed to answering "no"); stale cached
    /// content should be served instead when there is any.
    pub fn is_outage(&self) -> bool {
        self.is_transient() || matches!(self, UpstreamError::RateLimited { .. })
    }

    pub(crate) fn from_reqwest(e: &reqwest::Error) -> UpstreamError {
        let text = error_chain(e);
        if e.is_timeout() {
            UpstreamError::Timeout(text)
        } else if e.is_connect() {
            UpstreamError::Unreachable(text)
        } else {
            UpstreamError::Failed(text)
        }
    }
}

/// reqwest's top-level message hides the cause ("error sending request"); keep the chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
