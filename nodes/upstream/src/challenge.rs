//! Answering an upstream's `401`: which credentials may go where. An endpoint's login goes to
//! that endpoint's origin and to the token realm it names (over HTTPS, or plain HTTP on the
//! same host), never to a fallback URL or to a host a redirect led to. Token realms are asked
//! without following redirects, and their answers are read within a bound.

use std::time::Duration;

use http::{StatusCode, header};
use tracing::{debug, warn};

use crate::auth::{Challenge, TokenResponse};
use crate::body::{MAX_ERROR_BODY, read_limited};
use crate::endpoints::Endpoint;
use crate::error::UpstreamError;

/// Fetches tokens and builds `Authorization` headers for one upstream's endpoints.
pub struct Authorizer {
    upstream: String,
    /// A client that follows no redirect: a realm that redirects gets no second request.
    http: reqwest::Client,
    first_byte: Duration,
}

impl Authorizer {
    pub fn new(
        upstream: &str,
        connect_timeout: Duration,
        first_byte: Duration,
    ) -> Result<Authorizer, UpstreamError> {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .read_timeout(first_byte)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("wharf/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| UpstreamError::Failed(format!("building HTTP client: {e}")))?;
        Ok(Authorizer {
            upstream: upstream.to_string(),
            http,
            first_byte,
        })
    }

    /// The `Authorization` header for a request to `endpoint`, from what it asked before.
    pub fn authorization(&self, endpoint: &Endpoint, scope: &str) -> Option<String> {
        match endpoint.auth.challenge()? {
            Challenge::Basic => endpoint.login.as_ref().map(|l| l.basic_header()),
            Challenge::Bearer { .. } => endpoint.auth.token(scope).map(|t| format!("Bearer {t}")),
        }
    }

    /// Learn the auth scheme from a 401 and get what it asks for. `Ok(true)`: retry now.
    /// A 401 from any origin but the endpoint's own (a redirect's target: a blob CDN, a
    /// storage host) is not answered: its realm could be anyone's.
    pub async fn answer(
        &self,
        endpoint: &Endpoint,
        response: &reqwest::Response,
        scope: &str,
    ) -> Result<bool, UpstreamError> {
        if !same_origin(&endpoint.base, response.url().as_str()) {
            warn!(upstream = %self.upstream, host = response.url().host_str().unwrap_or_default(), "a host the upstream redirected to asked for credentials: not answered");
            return Ok(false);
        }
        let Some(challenge) = response
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(Challenge::parse)
        else {
            return Ok(false);
        };
        endpoint.auth.learn(challenge.clone());
        match challenge {
            Challenge::Basic => Ok(endpoint.login.is_some()),
            Challenge::Bearer { realm, service } => {
                endpoint.auth.forget_token(scope);
                self.fetch_token(endpoint, &realm, service.as_deref(), scope)
                    .await?;
                Ok(true)
            }
        }
    }

    async fn fetch_token(
        &self,
        endpoint: &Endpoint,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<(), UpstreamError> {
        let mut query = vec![("scope", scope)];
        if let Some(service) = service {
            query.push(("service", service));
        }
        let mut request = self.http.get(realm).query(&query);
        if let Some(login) = &endpoint.login {
            if credentials_may_go_to(&endpoint.base, realm) {
                request = request.header(header::AUTHORIZATION, login.basic_header());
            } else {
                warn!(upstream = %self.upstream, %realm, "token realm is another host over plain HTTP: asking it without the upstream's credentials");
            }
        }
        let response = tokio::time::timeout(self.first_byte, request.send())
            .await
            .map_err(|_| UpstreamError::Timeout("token endpoint did not answer".into()))?
            .map_err(|e| UpstreamError::from_reqwest(&e))?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(UpstreamError::Denied {
                status: status.as_u16(),
            });
        }
        if !status.is_success() {
            return Err(UpstreamError::Failed(format!(
                "token endpoint answered {status}"
            )));
        }
        let body = tokio::time::timeout(
            self.first_byte,
            read_limited(response, MAX_ERROR_BODY as u64),
        )
        .await
        .map_err(|_| UpstreamError::Timeout("token endpoint answer stalled".into()))?
        .map_err(|e| match e {
            UpstreamError::ManifestTooLarge { limit } => {
                UpstreamError::Failed(format!("token endpoint answer is over {limit} bytes"))
            }
            other => other,
        })?;
        let token: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| UpstreamError::Failed(format!("token endpoint answer: {e}")))?;
        let value = token
            .token
            .or(token.access_token)
            .ok_or_else(|| UpstreamError::Failed("token endpoint sent no token".into()))?;
        debug!(upstream = %self.upstream, %scope, "fetched upstream token");
        endpoint
            .auth
            .store_token(scope, value, token.expires_in.map(Duration::from_secs));
        Ok(())
    }
}

/// Whether an endpoint's credentials may be sent to a token `realm`: over HTTPS to any
/// host (Docker Hub's realm is auth.docker.io), over plain HTTP only to the endpoint's own
/// host (any port: a registry and its token server often share one), so that a challenge
/// cannot lure them to another machine in clear text.
pub fn credentials_may_go_to(endpoint_base: &str, realm: &str) -> bool {
    let (Ok(base), Ok(realm)) = (
        reqwest::Url::parse(endpoint_base),
        reqwest::Url::parse(realm),
    ) else {
        return false;
    };
    match realm.scheme() {
        "https" => true,
        "http" => realm.host_str() == base.host_str(),
        _ => false,
    }
}

/// Scheme, host and port equal.
pub fn same_origin(a: &str, b: &str) -> bool {
    match (reqwest::Url::parse(a), reqwest::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert!(same_origin(
            "https://r.example",
            "https://r.example:443/v2/x"
        ));
        assert!(!same_origin(
            "https://r.example",
            "https://cdn.example/v2/x"
        ));
        assert!(!same_origin("http://r.example", "https://r.example/v2/x"));
        assert!(!same_origin(
            "http://r.example:5000",
            "http://r.example:5001/"
        ));
        assert!(!same_origin("not a url", "not a url"));
    }
}
