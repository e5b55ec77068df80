//! `ApiError`: every failure as the OCI error body and HTTP status a client receives.
//! The mapping from pipeline failures ([`MirrorError`]) lives here and nowhere else.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use wharf_core::OciCode;
use wharf_core::error::error_body;
use wharf_mirror::MirrorError;
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

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(OciCode::Unknown, message)
    }
}

impl From<MirrorError> for ApiError {
    /// The one mapping from pipeline failures to what a client is told: code, status,
    /// message and `Retry-After`. What failed inside goes to the log, not to clients.
    fn from(e: MirrorError) -> ApiError {
        let status = match &e {
            MirrorError::NotFound { .. }
            | MirrorError::Invalid { .. }
            | MirrorError::Denied { .. } => status_of(e.code()),
            MirrorError::Upstream { source, .. } => {
                if matches!(
                    source,
                    UpstreamError::Unreachable(_)
                        | UpstreamError::Timeout(_)
                        | UpstreamError::Failed(_)
                ) {
                    tracing::debug!(error = %e, "upstream could not answer");
                }
                upstream_status(source)
            }
            MirrorError::DigestMismatch { .. }
            | MirrorError::BadAnswer { .. }
            | MirrorError::TooLarge { .. } => StatusCode::BAD_GATEWAY,
            MirrorError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            MirrorError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            MirrorError::TimedOut { .. } => StatusCode::GATEWAY_TIMEOUT,
            MirrorError::Storage(_) | MirrorError::Internal { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError {
            code: e.code(),
            status,
            message: e.public_message(),
            retry_after_secs: e.retry_after().map(|d| d.as_secs().max(1)),
            challenge: None,
        }
    }
}

fn status_of(code: OciCode) -> StatusCode {
    StatusCode::from_u16(code.default_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The status an upstream's failure is passed on with.
fn upstream_status(e: &UpstreamError) -> StatusCode {
    match e {
        UpstreamError::NotFound { .. } => StatusCode::NOT_FOUND,
        UpstreamError::Rejected { .. } => StatusCode::BAD_REQUEST,
        UpstreamError::Denied { .. } => StatusCode::FORBIDDEN,
        UpstreamError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        UpstreamError::Unreachable(_) => StatusCode::SERVICE_UNAVAILABLE,
        UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        UpstreamError::Failed(_)
        | UpstreamError::Inconsistent(_)
        | UpstreamError::ManifestTooLarge { .. } => StatusCode::BAD_GATEWAY,
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
