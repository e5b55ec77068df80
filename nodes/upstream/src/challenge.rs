//! Answering an upstream's `401`: which credentials may go where. An endpoint's login goes to
//! that endpoint's origin and to the token realm it names (over HTTPS, or plain HTTP on the
//! same host), never to a fallback URL or to a host a redirect led to. Token realms are asked
//! without following redirects, and their answers are read within a bound.

use std::time::Duration;

use http::{StatusCode, header};
use tracing::{debug, warn};

use crate::auth::{Challenge, Credentials, TokenResponse};
use crate::body::{MAX_ERROR_BODY, read_limited};
use crate::endpoints::Endpoint;
use crate::error::UpstreamError;
use crate::login::ClientLogin;

/// Whose login a request to an endpoint carries.
#[derive(Clone, Copy)]
pub enum Login<'a> {
    /// The endpoint's configured account (or none).
    Configured,
    /// The client's own (`credentials = "client"`); `None`: an anonymous client.
    Client(Option<&'a ClientLogin>),
}

impl Login<'_> {
    /// The username and password to answer a challenge with, if there are any.
    fn basic<'e>(&'e self, endpoint: &'e Endpoint) -> Option<&'e Credentials> {
        match self {
            Login::Configured => endpoint.login.as_ref(),
            Login::Client(Some(ClientLogin::Basic(c))) => Some(c),
            Login::Client(_) => None,
        }
    }

    /// The key of this login's tokens for `scope`: a client's are its own, never another's.
    fn token_key(&self, scope: &str) -> String {
        match self {
            Login::Configured => scope.to_string(),
            Login::Client(None) => format!("anonymous {scope}"),
            Login::Client(Some(login)) => {
                use std::fmt::Write as _;
                let mut key = String::with_capacity(65 + scope.len());
                for b in login.fingerprint() {
                    // Writing into a String cannot fail.
                    let _ = write!(key, "{b:02x}");
                }
                key.push(' ');
                key.push_str(scope);
                key
            }
        }
    }
}

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
    /// A client's bearer token goes as it is.
    pub fn authorization(&self, endpoint: &Endpoint, scope: &str, login: Login) -> Option<String> {
        if let Login::Client(Some(bearer @ ClientLogin::Bearer(_))) = login {
            return Some(bearer.header());
        }
        match endpoint.auth.challenge()? {
            Challenge::Basic => login.basic(endpoint).map(Credentials::basic_header),
            Challenge::Bearer { .. } => endpoint
                .auth
                .token(&login.token_key(scope))
                .map(|t| format!("Bearer {t}")),
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
        login: Login<'_>,
    ) -> Result<bool, UpstreamError> {
        if !same_origin(&endpoint.base, response.url().as_str()) {
            warn!(upstream = %self.upstream, host = response.url().host_str().unwrap_or_default(), "a host the upstream redirected to asked for credentials: not answered");
            return Ok(false);
        }
        let Some((challenge, raw)) = response
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|raw| Challenge::parse(raw).map(|c| (c, raw)))
        else {
            return Ok(false);
        };
        endpoint.auth.learn(challenge.clone(), raw);
        if let Login::Client(Some(ClientLogin::Bearer(_))) = login {
            // The client's own token was refused: nothing to exchange it for.
            return Ok(false);
        }
        match challenge {
            Challenge::Basic => Ok(login.basic(endpoint).is_some()),
            Challenge::Bearer { realm, service } => {
                let key = login.token_key(scope);
                endpoint.auth.forget_token(&key);
                self.fetch_token(endpoint, &realm, service.as_deref(), scope, login)
                    .await?;
                Ok(true)
            }
        }
    }

    /// A token for `scope` (none named: the realm only checks the login, as for
    /// `docker login`), kept under the login's own key.
    async fn fetch_token(
        &self,
        endpoint: &Endpoint,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        login: Login<'_>,
    ) -> Result<(), UpstreamError> {
        let mut query = Vec::with_capacity(2);
        if !scope.is_empty() {
            query.push(("scope", scope));
        }
        if let Some(service) = service {
            query.push(("service", service));
        }
        let mut request = self.http.get(realm).query(&query);
        if let Some(login) = login.basic(endpoint) {
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
        endpoint.auth.store_token(
            &login.token_key(scope),
            value,
            token.expires_in.map(Duration::from_secs),
        );
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
