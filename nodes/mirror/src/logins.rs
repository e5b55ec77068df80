//! The upstream's verdicts on clients' own logins (`credentials = "client"`): may this login
//! pull this repository? Asked once per login, repository and `login_verdict_secs`, shared by
//! concurrent requests of the same login, and bounded in entries and in checks under way
//! (they take the metadata fetch slots). Keys hold a salted hash of the login, never the login.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use wharf_core::{OciCode, RepoName};
use wharf_metrics::upstream::LoginCheck;
use wharf_upstream::login::ClientLogin;
use wharf_upstream::{LoginVerdict, UpstreamClient};

use crate::error::MirrorError;
use crate::slots::DownloadSlots;

/// Verdicts kept at most (each well under 200 bytes).
pub const MAX_VERDICTS: u64 = 50_000;

/// Upstream, repository (`None`: the API itself, `/v2/`), login fingerprint (`None`: anonymous).
type Key = (Arc<str>, Option<RepoName>, Option<[u8; 32]>);

/// A verdict and how long it holds (the upstream's `login_verdict_secs`).
#[derive(Clone, Copy)]
struct Held {
    verdict: LoginVerdict,
    lifetime: Duration,
}

struct HeldFor;

impl Expiry<Key, Held> for HeldFor {
    fn expire_after_create(&self, _: &Key, held: &Held, _: Instant) -> Option<Duration> {
        Some(held.lifetime)
    }
}

/// Verdicts of every upstream that takes clients' logins.
pub struct LoginVerdicts {
    verdicts: Cache<Key, Held>,
    checks: Arc<DownloadSlots>,
}

impl LoginVerdicts {
    /// Checks take `checks` (the node's metadata fetch slots): a flood of logins queues there
    /// and is turned away with `503` past its bound, like any other upstream lookup.
    pub fn new(checks: Arc<DownloadSlots>) -> LoginVerdicts {
        LoginVerdicts {
            verdicts: Cache::builder()
                .max_capacity(MAX_VERDICTS)
                .expire_after(HeldFor)
                .build(),
            checks,
        }
    }

    /// The upstream's verdict on `login` for `repo` (or its API: `None`), asked if not known.
    /// An upstream that cannot answer is an error (`503`/`502`): without its word nobody is
    /// let in, even to content already cached.
    pub async fn verdict(
        &self,
        upstream: &Arc<UpstreamClient>,
        repo: Option<&RepoName>,
        login: Option<&Arc<ClientLogin>>,
    ) -> Result<LoginVerdict, MirrorError> {
        let key = (
            upstream.shared_name(),
            repo.cloned(),
            login.map(|l| l.fingerprint()),
        );
        let ask = async {
            let _slot = self.checks.acquire().await?;
            let asked =
                wharf_upstream::login::acting_for(login.cloned(), upstream.check_login(repo)).await;
            upstream.metrics().login_check(match &asked {
                Ok(LoginVerdict::Accepted) => LoginCheck::Accepted,
                Ok(LoginVerdict::Refused { .. }) => LoginCheck::Refused,
                Ok(LoginVerdict::Unknown) => LoginCheck::Unknown,
                Err(_) => LoginCheck::Failed,
            });
            let verdict = asked
                .map_err(|e| MirrorError::upstream(upstream.name(), e, OciCode::NameUnknown))?;
            Ok::<_, MirrorError>(Held {
                verdict,
                lifetime: upstream.login_verdict_lifetime(),
            })
        };
        self.verdicts
            .try_get_with(key, ask)
            .await
            .map(|held| held.verdict)
            .map_err(|e| (*e).clone())
    }
}
