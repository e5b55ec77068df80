//! Client authentication and repository policy at the API edge: every `/v2/` request is
//! checked here before any cache, store or upstream work, and `/token` runs Docker's token
//! flow. The decisions are [`wharf_auth`]'s; this module turns them into OCI answers.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use wharf_auth::{AuthError, Authenticated, Authenticator, Decision};
use wharf_core::OciCode;

use crate::Edge;
use crate::error::ApiError;

/// The caller of a request, checked (anonymous when auth is off).
pub async fn identify(
    auth: &Authenticator,
    headers: &HeaderMap,
    origin: &Origin,
) -> Result<Authenticated, ApiError> {
    let header = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    auth.identify(header, origin.client)
        .await
        .map_err(|e| refused(auth, &e, origin))
}

/// `<scheme>://<host>` of a request, for the token realm in challenges.
pub struct Origin {
    base: String,
    /// The caller's address (from the accept loop), for its share of password hashing.
    client: Option<std::net::IpAddr>,
}

impl Origin {
    pub fn of(request: &Request, tls: bool) -> Origin {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().authority().map(|a| a.as_str()))
            .unwrap_or("localhost");
        Origin {
            base: format!("{}://{host}", if tls { "https" } else { "http" }),
            client: request
                .extensions()
                .get::<crate::access_log::ClientAddr>()
                .map(|c| c.0.ip()),
        }
    }
}

/// May `who` pull the repository the client calls `asked` (stored upstream as `stored`, on
/// upstream `upstream`)?
pub fn authorize(
    auth: &Authenticator,
    who: &Authenticated,
    origin: &Origin,
    upstream: &str,
    asked: &str,
    stored: &str,
) -> Result<(), ApiError> {
    let full = format!("{upstream}/{stored}");
    match auth.authorize(who, &[asked, stored], &full) {
        Decision::Allow => Ok(()),
        Decision::Unauthenticated => {
            let mut e = ApiError::new(
                OciCode::Unauthorized,
                format!("authentication required to pull {asked}"),
            );
            e.challenge = Some(auth.challenge(&origin.base, Some(asked)));
            Err(e)
        }
        Decision::Forbidden => Err(ApiError::new(
            OciCode::Denied,
            format!(
                "{} may not pull {full}",
                who.identity.name().unwrap_or("anonymous")
            ),
        )),
    }
}

/// `/v2/`: admitted callers get 200; others a 401 naming how to log in.
pub fn admit(auth: &Authenticator, who: &Authenticated, origin: &Origin) -> Result<(), ApiError> {
    if auth.admits(who) {
        return Ok(());
    }
    let mut e = ApiError::new(OciCode::Unauthorized, "authentication required");
    e.challenge = Some(auth.challenge(&origin.base, None));
    Err(e)
}

/// An authentication failure as the client sees it: 401 with a challenge, or 429 when
/// password checks are saturated. Never the credentials themselves.
fn refused(auth: &Authenticator, e: &AuthError, origin: &Origin) -> ApiError {
    if e.is_retryable() {
        let mut err = ApiError::new(OciCode::TooManyRequests, e.to_string());
        err.retry_after_secs = Some(1);
        return err;
    }
    let mut err = ApiError::new(OciCode::Unauthorized, e.to_string());
    err.challenge = Some(auth.challenge(&origin.base, None));
    err
}

/// `GET /token?service=...&scope=repository:NAME:pull`: Docker's token endpoint. The caller
/// logs in with HTTP Basic (htpasswd, or an external JWT as the password), or comes anonymous
/// where that is allowed; the answer is a short-lived token for the pull scopes asked.
pub async fn token_endpoint(State(edge): State<Arc<Edge>>, request: Request) -> Response {
    let auth = &edge.auth;
    if !auth.issues_tokens() {
        return ApiError::new(OciCode::NameUnknown, "this mirror issues no tokens").into_response();
    }
    let origin = Origin::of(&request, edge.tls);
    let who = match identify(auth, request.headers(), &origin).await {
        Ok(who) => who,
        Err(e) => return e.into_response(),
    };
    let query = request.uri().query().unwrap_or_default();
    let scopes: Vec<String> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| *k == "scope")
        .map(|(_, v)| wharf_core::query::percent_decode(&v.replace('+', " ")))
        .collect();
    let repositories = wharf_auth::token::pull_scopes(scopes.iter().map(String::as_str));
    match auth.issue_token(&who, &repositories) {
        Ok(token) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            serde_json::to_string(&token).unwrap_or_default(),
        )
            .into_response(),
        Err(e) => {
            let mut err = ApiError::new(OciCode::Unauthorized, e.to_string());
            // Basic here: this endpoint is where credentials are sent.
            err.challenge = Some("Basic realm=\"wharf\"".to_string());
            err.into_response()
        }
    }
}
