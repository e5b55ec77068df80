//! Asking an upstream with `credentials = "client"` whether it accepts a client's login for a
//! repository (or at all, for `/v2/`), and what to answer a client it refused.

use http::Method;
use wharf_core::RepoName;

use super::UpstreamClient;
use crate::body::read_limited;
use crate::error::UpstreamError;

/// The upstream's answer on one login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginVerdict {
    /// It serves the repository (or its API, for `/v2/`) to this login.
    Accepted,
    /// It answered `status` (401 or 403) even after the login was presented.
    Refused { status: u16 },
    /// It has no such repository for this login (some registries hide what a login may not
    /// see this way).
    Unknown,
}

/// A tag list is read only to end the request cleanly: one entry is asked for.
const PROBE_BODY_LIMIT: u64 = 64 * 1024;

impl UpstreamClient {
    /// Does the upstream accept the current task's login ([`crate::login::acting_for`]) for
    /// `repo` (`GET /v2/<repo>/tags/list?n=1`, the cheapest read every registry grants with
    /// pull), or for its API at all (`None`: `GET /v2/`, as `docker login` checks)? An upstream
    /// that cannot answer is an error: the caller refuses rather than guesses.
    pub async fn check_login(
        &self,
        repo: Option<&RepoName>,
    ) -> Result<LoginVerdict, UpstreamError> {
        let (path, scope) = match repo {
            Some(repo) => (
                format!("/v2/{repo}/tags/list?n=1"),
                format!("repository:{repo}:pull"),
            ),
            None => ("/v2/".to_string(), String::new()),
        };
        match self.send_with(Method::GET, &path, &scope, None, None).await {
            Ok(response) => {
                // Read (bounded) so the connection is reused; the content does not matter.
                let _ = read_limited(response, PROBE_BODY_LIMIT).await;
                Ok(LoginVerdict::Accepted)
            }
            Err(UpstreamError::Denied { status }) => Ok(LoginVerdict::Refused { status }),
            Err(UpstreamError::NotFound { .. }) => Ok(LoginVerdict::Unknown),
            Err(e) => Err(e),
        }
    }

    /// The `WWW-Authenticate` value for a client this upstream refused: its own Basic
    /// challenge word for word, or, when it asks for tokens (which wharf fetches with the
    /// client's username and password), a Basic challenge naming it.
    pub fn challenge_for_clients(&self) -> String {
        self.endpoints
            .first()
            .and_then(|e| e.auth.basic_challenge())
            .unwrap_or_else(|| {
                let realm: String = self
                    .name
                    .chars()
                    .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
                    .collect();
                format!("Basic realm=\"{realm}\"")
            })
    }
}
