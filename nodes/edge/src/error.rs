//! `ApiError`: every failure as the OCI error body and HTTP status a client receives.
//! The mapping from upstream and storage failures lives here and nowhere else.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use wharf_core::OciCode;
use wharf_core::error::error_body;
use wharf_storage::StoreError;
use wharf_upstream::UpstreamError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: OciCode,
    pub status: StatusCode,
    pub message: String,
    pub retry_after_secs: Option<u64>,
    /// `WWW-Authenticate` of a 401: how to log in.
    pub challenge: Option<String>,
}

impl ApiError {
    pub fn new(code: OciCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            status: StatusCode::from_u16(code.default_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: message.into(),
            retry_after_secs: None,
            challenge: None,
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }

    /// Map an upstream failure; `missing` is the code for "the upstream has no such thing".
    pub fn from_upstream(upstream: &str, e: UpstreamError, missing: OciCode) -> ApiError {
        match e {
            UpstreamError::NotFound { code, message } => {
                ApiError::new(code.unwrap_or(missing), message).with_status(StatusCode::NOT_FOUND)
            }
            UpstreamError::Rejected { code, message } => ApiError::new(
                code.unwrap_or(OciCode::NameInvalid),
                format!("upstream registry {upstream} rejected the request: {message}"),
            )
            .with_status(StatusCode::BAD_REQUEST),
            UpstreamError::Denied { status } => ApiError::new(
                OciCode::Denied,
                format!(
                    "upstream registry {upstream} denied access (HTTP {status}): the repository may not exist, or wharf's credentials for it are missing or lack access"
                ),
            ),
            UpstreamError::RateLimited { retry_after } => {
                let mut err = ApiError::new(
                    OciCode::TooManyRequests,
                    format!(
                        "upstream registry {upstream} is rate limiting wharf and nothing is cached for this request"
                    ),
                );
                err.retry_after_secs = retry_after.map(|d| d.as_secs().max(1));
                err
            }
            // What failed inside (an internal URL, a parent's address, a TLS detail) goes to
            // the log and the status page, not to clients.
            UpstreamError::Unreachable(why) => unavailable(
                upstream,
                &why,
                "is unreachable",
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            UpstreamError::Timeout(why) => {
                unavailable(upstream, &why, "timed out", StatusCode::GATEWAY_TIMEOUT)
            }
            UpstreamError::Failed(why) => {
                unavailable(upstream, &why, "failed to answer", StatusCode::BAD_GATEWAY)
            }
            UpstreamError::Inconsistent(why) => ApiError::new(
                OciCode::ManifestInvalid,
                format!("upstream registry {upstream} sent an inconsistent manifest: {why}"),
            )
            .with_status(StatusCode::BAD_GATEWAY),
            UpstreamError::ManifestTooLarge { limit } => ApiError::new(
                OciCode::ManifestInvalid,
                format!("upstream manifest exceeds wharf's limit of {limit} bytes"),
            )
            .with_status(StatusCode::BAD_GATEWAY),
        }
    }

    /// The upstream sent bytes that do not hash to what was asked for: never cached.
    pub fn digest_mismatch(upstream: &str, what: &str) -> ApiError {
        ApiError::new(
            OciCode::Unavailable,
            format!("upstream registry {upstream} sent {what} that does not match its digest; nothing was cached"),
        )
        .with_status(StatusCode::BAD_GATEWAY)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(OciCode::Unknown, message)
    }
}

/// An upstream that could not answer, as clients see it: which upstream and how, with the
/// detail (`why`: a URL, an address, a TLS error) kept for the log.
fn unavailable(upstream: &str, why: &str, what: &str, status: StatusCode) -> ApiError {
    tracing::debug!(%upstream, %why, "upstream {what}");
    ApiError::new(
        OciCode::Unavailable,
        format!("upstream registry {upstream} {what}"),
    )
    .with_status(status)
}

impl From<StoreError> for ApiError {
    /// The details (object keys, paths, the backend's words) go to the log, not to clients.
    fn from(e: StoreError) -> ApiError {
        tracing::error!(error = %e, "storage failure");
        ApiError::internal("the mirror's cache storage failed")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code.as_str(),
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = error_body(self.code, &self.message, None);
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            "docker-distribution-api-version",
            HeaderValue::from_static("registry/2.0"),
        );
        if let Some(challenge) = self
            .challenge
            .as_deref()
            .and_then(|c| HeaderValue::from_str(c).ok())
        {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.code == OciCode::Unsupported {
            headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        response
    }
}
