//! Client authentication and repository policy at the API edge: every `/v2/` request is
//! checked here before any cache, store or upstream work, and `/token` runs Docker's token
//! flow. The decisions are [`wharf_auth`]'s; this module turns them into OCI answers. For an
//! upstream that judges each client's own login, [`upstream_login`] asks it instead.

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

pub mod upstream_login {
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

    /// The login in `headers`, for `upstream`; a header that is no login, or a token wharf or
    /// one of its issuers made (a credential for wharf, never passed on), is refused with the
    /// upstream's challenge.
    pub fn login_of(
        edge: &Edge,
        upstream: &UpstreamClient,
        headers: &HeaderMap,
    ) -> Result<Option<Arc<ClientLogin>>, ApiError> {
        let header = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
        let login = ClientLogin::from_authorization(header)
            .map_err(|e| challenge(upstream, e.to_string()))?;
        if let Some(ClientLogin::Bearer(token)) = &login
            && edge.auth.is_own_token(token)
        {
            return Err(challenge(
                upstream,
                format!(
                    "a token for this mirror is no login for upstream {}",
                    upstream.name()
                ),
            ));
        }
        Ok(login.map(Arc::new))
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
                    Some(_) => {
                        format!("upstream {} refused this login for {what}", upstream.name())
                    }
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
}
