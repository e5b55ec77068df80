//! Which upstream and repository a request names, and whether its caller may pull there:
//! routing first (a lookup, no work), then either wharf's own login and `[[access]]`
//! ([`crate::access`]) or, for an upstream that judges each client's own login, that
//! upstream's verdict ([`crate::access::upstream_login`]). Nothing reaches the cache, the store or an
//! upstream client of a `"*"` parent before this says yes.

use std::sync::Arc;

use axum::http::HeaderMap;
use wharf_auth::Authenticated;
use wharf_core::{OciCode, RepoName};
use wharf_upstream::UpstreamClient;
use wharf_upstream::login::ClientLogin;

use crate::Edge;
use crate::access::upstream_login;
use crate::access::{self, Origin};
use crate::error::ApiError;
use crate::route::parse_name;

/// The upstream a request goes to, and the repository as that upstream names it.
pub type Target = (Arc<UpstreamClient>, RepoName);

/// What a request brings to be let in; wharf's own caller is identified at most once.
pub struct Asker<'a> {
    pub edge: &'a Arc<Edge>,
    pub headers: &'a HeaderMap,
    pub host: Option<&'a str>,
    pub ns: Option<&'a str>,
    /// Set when anything is restricted (for challenges' realms and password-check shares).
    pub origin: Option<Origin>,
    caller: Option<Authenticated>,
    /// Who the caller turned out to be, for the access line.
    pub principal: Option<String>,
}

impl<'a> Asker<'a> {
    pub fn new(
        edge: &'a Arc<Edge>,
        headers: &'a HeaderMap,
        host: Option<&'a str>,
        ns: Option<&'a str>,
        origin: Option<Origin>,
    ) -> Asker<'a> {
        Asker {
            edge,
            headers,
            host,
            ns,
            origin,
            caller: None,
            principal: None,
        }
    }

    /// wharf's caller and the request's origin, checked once; `None` when nothing is
    /// restricted. Where wharf has no logins but an upstream takes clients' own, a header is
    /// that upstream's login and the caller counts as anonymous here.
    pub async fn caller(&mut self) -> Result<Option<(&Authenticated, &Origin)>, ApiError> {
        let Some(origin) = &self.origin else {
            return Ok(None);
        };
        if self.caller.is_none() {
            let auth = &self.edge.auth;
            let who = if !auth.has_logins() && self.edge.mirror.upstreams.any_take_client_logins() {
                Authenticated {
                    identity: wharf_auth::Identity::Anonymous,
                    token_repositories: None,
                }
            } else {
                // Boxed: checking a login or token is the larger future, and is not every
                // request's (see `api::answer`).
                Box::pin(access::identify(auth, self.headers, origin)).await?
            };
            self.principal = Some(who.identity.name().unwrap_or("anonymous").to_string());
            self.caller = Some(who);
        }
        Ok(self.caller.as_ref().map(|who| (who, origin)))
    }

    /// The target of a repository request, once its caller may pull there, and the login to
    /// act for towards the upstream (`credentials = "client"`).
    pub async fn admit(
        &mut self,
        name: RepoName,
    ) -> Result<(Target, Option<Arc<ClientLogin>>), ApiError> {
        let edge = self.edge;
        let (resolved, within) = edge
            .mirror
            .upstreams
            .route(self.ns, self.host, name.as_str())?;
        // An upstream that judges the client's own login (not wharf's rules) on this route.
        let judged_upstream = resolved
            .configured()
            .filter(|u| upstream_login::goes_upstream(edge, u, resolved.by_host))
            .cloned();
        // The name as the client wrote it, for wharf's policy (no copy when nothing is checked).
        let asked =
            (self.origin.is_some() && judged_upstream.is_none()).then(|| name.as_str().to_string());
        let name = if within.len() == name.as_str().len() {
            name
        } else {
            parse_name(within)?
        };
        let repo = if resolved.docker_hub {
            name.with_docker_hub_library()
                .map_err(|e| ApiError::new(OciCode::NameInvalid, e.to_string()))?
        } else {
            name
        };
        if let Some(upstream) = judged_upstream {
            let login = upstream_login::login_of(edge, &upstream, self.headers)?;
            let identity = upstream_login::identity_of(&upstream, login.as_deref());
            upstream_login::authorize(edge, &upstream, &identity, &repo)?;
            self.principal = Some(identity.name().unwrap_or("anonymous").to_string());
            // Boxed, as the upstream request it may make is a large future.
            Box::pin(upstream_login::check(
                edge,
                &upstream,
                Some(&repo),
                login.as_ref(),
                true,
            ))
            .await?;
            return Ok(((upstream, repo), login));
        }
        if let Some((who, origin)) = self.caller().await? {
            access::authorize(
                &edge.auth,
                who,
                origin,
                &resolved.name,
                asked.as_deref().unwrap_or_default(),
                repo.as_str(),
            )?;
        }
        let upstream = edge.mirror.upstreams.client(&resolved)?;
        if upstream.takes_client_logins() {
            // The request holds wharf's login, which is not passed on: asked as anonymous.
            Box::pin(upstream_login::check(
                edge,
                &upstream,
                Some(&repo),
                None,
                false,
            ))
            .await?;
        }
        Ok(((upstream, repo), None))
    }

    /// `/v2/` on a host (or, where wharf has no logins, a default upstream) whose upstream
    /// judges clients' own logins: `Some(result)` answers it, `None` leaves it to wharf's rules.
    pub async fn admit_base(&mut self) -> Option<Result<(), ApiError>> {
        let edge = self.edge;
        let upstreams = &edge.mirror.upstreams;
        let (upstream, by_host) = match upstreams.for_host(self.host) {
            Some(upstream) => (upstream, true),
            None => (upstreams.select(None).ok()?, false),
        };
        if !upstream_login::goes_upstream(edge, &upstream, by_host) {
            return None;
        }
        let login = match upstream_login::login_of(edge, &upstream, self.headers) {
            Ok(login) => login,
            Err(e) => return Some(Err(e)),
        };
        let identity = upstream_login::identity_of(&upstream, login.as_deref());
        self.principal = Some(identity.name().unwrap_or("anonymous").to_string());
        Some(upstream_login::check(edge, &upstream, None, login.as_ref(), true).await)
    }
}
