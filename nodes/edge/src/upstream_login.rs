//! Upstreams with `credentials = "client"` at the API edge: the client's own login is checked
//! by the upstream (once per login, repository and `login_verdict_secs`, see
//! `wharf_mirror::logins`) before anything is served, cached content included, and is what
//! the requests made on the client's behalf carry.
//!
//! Whose login an `Authorization` header is: the upstream's when wharf has no logins of its own,
//! or when the request came by one of the upstream's `hosts` (a client keeps one login per
//! host); otherwise it is wharf's (`[auth]`), never passed on, and the upstream is asked as for
//! an anonymous client.

use std::sync::Arc;

use axum::http::{HeaderMap, header};
use wharf_auth::{Decision, Identity};
use wharf_core::{OciCode, RepoName};
use wharf_upstream::login::ClientLogin;
use wharf_upstream::{LoginVerdict, UpstreamClient};

use crate::Edge;
use crate::error::ApiError;

/// Whether a request's `Authorization` is `upstream`'s login rather than wharf's.
pub fn goes_upstream(edge: &Edge, upstream: &UpstreamClient, by_host: bool) -> bool {
    upstream.takes_client_logins() && (by_host || !edge.auth.has_logins())
}

/// The login in `headers`, for `upstream`; a header that is no login is refused with the
/// upstream's challenge.
pub fn login_of(
    upstream: &UpstreamClient,
    headers: &HeaderMap,
) -> Result<Option<Arc<ClientLogin>>, ApiError> {
    let header = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    ClientLogin::from_authorization(header)
        .map(|login| login.map(Arc::new))
        .map_err(|e| challenge(upstream, e.to_string()))
}

/// Who a login is, as access lines and `[[access]]` rules name it: `<upstream>:<user>`
/// (`<upstream>:token` for a bearer token the upstream issued), or anonymous.
pub fn identity_of(upstream: &UpstreamClient, login: Option<&ClientLogin>) -> Identity {
    match login {
        None => Identity::Anonymous,
        Some(login) => Identity::User {
            name: format!(
                "{}:{}",
                upstream.name(),
                login.username().unwrap_or("token")
            ),
            groups: Vec::new(),
        },
    }
}

/// May the caller the upstream will judge pull `repo` by `[[access]]`? (Rules may narrow
/// what the upstream grants, never widen it.)
pub fn authorize(
    edge: &Edge,
    upstream: &UpstreamClient,
    identity: &Identity,
    repo: &RepoName,
) -> Result<(), ApiError> {
    let full = format!("{}/{repo}", upstream.name());
    match edge.auth.authorize_by_rules(identity, &full) {
        Decision::Allow => Ok(()),
        _ => Err(ApiError::new(
            OciCode::Denied,
            format!(
                "{} may not pull {full}",
                identity.name().unwrap_or("anonymous")
            ),
        )),
    }
}

/// The upstream's verdict on `login` for `repo` (`None`: its API, for `/v2/`): `Ok` to go on,
/// or the refusal the client gets. `answerable`: the client can answer a challenge with a
/// login for the upstream (else it holds wharf's login, and a refusal is a 403).
pub async fn check(
    edge: &Edge,
    upstream: &Arc<UpstreamClient>,
    repo: Option<&RepoName>,
    login: Option<&Arc<ClientLogin>>,
    answerable: bool,
) -> Result<(), ApiError> {
    let verdict = edge.mirror.logins.verdict(upstream, repo, login).await?;
    let what = repo.map_or_else(|| "its API".to_string(), |r| r.to_string());
    match verdict {
        LoginVerdict::Accepted => Ok(()),
        LoginVerdict::Unknown => Err(ApiError::new(
            OciCode::NameUnknown,
            format!(
                "upstream {} has no repository {what} for this login",
                upstream.name()
            ),
        )),
        LoginVerdict::Refused { .. } if answerable => Err(challenge(
            upstream,
            match login {
                Some(_) => format!("upstream {} refused this login for {what}", upstream.name()),
                None => format!(
                    "upstream {} asks for a login to pull {what}",
                    upstream.name()
                ),
            },
        )),
        LoginVerdict::Refused { .. } => Err(ApiError::new(
            OciCode::Denied,
            format!(
                "upstream {} does not serve {what} anonymously; reach it through its own host name with your login for it",
                upstream.name()
            ),
        )),
    }
}

/// A `401` with the upstream's challenge, which the client answers with its login.
fn challenge(upstream: &UpstreamClient, message: String) -> ApiError {
    let mut e = ApiError::new(OciCode::Unauthorized, message);
    e.challenge = Some(upstream.challenge_for_clients());
    e
}
