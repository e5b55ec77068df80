//! Why authentication failed, and whether asking again can help.

use std::path::PathBuf;

/// Errors of the auth layer. None of them carries a password or a token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The client's `Authorization` header cannot be read (not Basic/Bearer, bad base64,
    /// too long). The client's mistake; repeating it fails again.
    #[error("malformed Authorization header: {0}")]
    Malformed(&'static str),
    /// Unknown user or wrong password.
    #[error("invalid username or password")]
    BadCredentials,
    /// A bearer token that is expired, forged, for another audience or otherwise refused.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// Too many password checks are running; a retry a little later can succeed.
    #[error("too many logins at once; retry shortly")]
    Busy,
    /// A file the configuration names could not be used (at start-up or on reload).
    #[error("{what} {path}: {reason}")]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// A configuration value the auth layer cannot use (a bad glob, a short key).
    #[error("invalid auth configuration: {0}")]
    Config(String),
}

impl AuthError {
    /// Whether the same request may succeed later without the client changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(self, AuthError::Busy)
    }
}
