//! A client's own login for an upstream with `credentials = "client"`: taken from the client's
//! `Authorization` header at the API edge and carried, for the work done on that request's
//! behalf, in a task-local ([`acting_for`]) rather than through every pipeline signature.
//! Work that outlives the request (a coalesced fetch, a download) is spawned with
//! [`carried`], so it goes on with the login of the request that started it.
//!
//! A login is never stored, logged or printed: `Debug` shows the username only, and caches
//! key on a salted hash ([`ClientLogin::fingerprint`]).

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use crate::auth::Credentials;

/// What a client presented to log in to the upstream.
#[derive(Clone)]
pub enum ClientLogin {
    /// HTTP Basic: exchanged for the upstream's tokens, or sent as is to a Basic upstream.
    Basic(Credentials),
    /// A bearer token the upstream (or its token service) issued to the client, sent as is.
    Bearer(String),
}

impl std::fmt::Debug for ClientLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientLogin::Basic(c) => write!(f, "ClientLogin::Basic({}, ***)", c.username),
            ClientLogin::Bearer(_) => f.write_str("ClientLogin::Bearer(***)"),
        }
    }
}

/// Why an `Authorization` header is no login.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("the Authorization header is not Basic or Bearer")]
    UnknownScheme,
    #[error("the Authorization header's Basic credentials are not base64 of user:password")]
    MalformedBasic,
    #[error("the Authorization header is longer than {MAX_AUTHORIZATION} bytes")]
    TooLong,
}

/// Longer headers are refused: no login needs more (Docker Hub's tokens are ~2 KiB).
pub const MAX_AUTHORIZATION: usize = 16 * 1024;

impl ClientLogin {
    /// The login in an `Authorization` header value; `Ok(None)` for no header.
    pub fn from_authorization(header: Option<&[u8]>) -> Result<Option<ClientLogin>, LoginError> {
        let Some(header) = header else {
            return Ok(None);
        };
        if header.len() > MAX_AUTHORIZATION {
            return Err(LoginError::TooLong);
        }
        let text = std::str::from_utf8(header).map_err(|_| LoginError::UnknownScheme)?;
        let (scheme, value) = text
            .trim()
            .split_once(' ')
            .ok_or(LoginError::UnknownScheme)?;
        let value = value.trim();
        if scheme.eq_ignore_ascii_case("bearer") && !value.is_empty() {
            return Ok(Some(ClientLogin::Bearer(value.to_string())));
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(LoginError::UnknownScheme);
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|_| LoginError::MalformedBasic)?;
        let decoded = String::from_utf8(decoded).map_err(|_| LoginError::MalformedBasic)?;
        let (username, password) = decoded.split_once(':').ok_or(LoginError::MalformedBasic)?;
        if username.is_empty() {
            return Err(LoginError::MalformedBasic);
        }
        Ok(Some(ClientLogin::Basic(Credentials {
            username: username.to_string(),
            password: password.to_string(),
        })))
    }

    /// The user, as access lines and `[[access]]` rules name it; a bearer token has none.
    pub fn username(&self) -> Option<&str> {
        match self {
            ClientLogin::Basic(c) => Some(&c.username),
            ClientLogin::Bearer(_) => None,
        }
    }

    /// The `Authorization` value this login sends as is (Basic, or the bearer token).
    pub fn header(&self) -> String {
        match self {
            ClientLogin::Basic(c) => c.basic_header(),
            ClientLogin::Bearer(token) => format!("Bearer {token}"),
        }
    }

    /// A salted SHA-256 of the login, for cache keys: equal for equal logins within this
    /// process, and telling nothing of the password (the salt is random per process).
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(salt());
        match self {
            ClientLogin::Basic(c) => {
                hash.update(b"basic\0");
                hash.update(c.username.as_bytes());
                hash.update(b"\0");
                hash.update(c.password.as_bytes());
            }
            ClientLogin::Bearer(token) => {
                hash.update(b"bearer\0");
                hash.update(token.as_bytes());
            }
        }
        hash.finalize().into()
    }
}

/// Sixteen random bytes, drawn once per process (from the standard library's hasher keys).
fn salt() -> &'static [u8; 16] {
    static SALT: OnceLock<[u8; 16]> = OnceLock::new();
    SALT.get_or_init(|| {
        let mut bytes = [0u8; 16];
        for half in bytes.chunks_mut(8) {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u8(0);
            half.copy_from_slice(&hasher.finish().to_le_bytes());
        }
        bytes
    })
}

tokio::task_local! {
    static ACTING_FOR: Option<Arc<ClientLogin>>;
}

/// Run `work` on behalf of `login` (or of an anonymous client: `None`): the requests it makes
/// to an upstream with `credentials = "client"` carry that login.
pub async fn acting_for<F: Future>(login: Option<Arc<ClientLogin>>, work: F) -> F::Output {
    ACTING_FOR.scope(login, work).await
}

/// The login of the client the current task works for, if any.
pub fn current() -> Option<Arc<ClientLogin>> {
    ACTING_FOR.try_with(Clone::clone).ok().flatten()
}

/// `work`, made to run with the current task's login wherever it is later spawned.
pub fn carried<F: Future>(work: F) -> impl Future<Output = F::Output> {
    ACTING_FOR.scope(current(), work)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(raw: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
        .into_bytes()
    }

    #[test]
    fn headers_parse_or_are_refused() {
        let alice = ClientLogin::from_authorization(Some(&basic("alice:pw:with:colons")))
            .unwrap()
            .unwrap();
        assert_eq!(alice.username(), Some("alice"));
        assert_eq!(format!("{alice:?}"), "ClientLogin::Basic(alice, ***)");
        assert!(matches!(
            ClientLogin::from_authorization(Some(b"Bearer abc")).unwrap(),
            Some(ClientLogin::Bearer(t)) if t == "abc"
        ));
        assert!(ClientLogin::from_authorization(None).unwrap().is_none());
        for bad in [
            b"Negotiate xyz".to_vec(),
            b"Basic !!!".to_vec(),
            basic("no-colon"),
            basic(":password-only"),
            b"Bearer ".to_vec(),
            vec![b'x'; MAX_AUTHORIZATION + 1],
        ] {
            assert!(ClientLogin::from_authorization(Some(&bad)).is_err());
        }
    }

    #[test]
    fn fingerprints_tell_logins_apart() {
        let login = |raw: &str| {
            ClientLogin::from_authorization(Some(&basic(raw)))
                .unwrap()
                .unwrap()
        };
        assert_eq!(login("a:b").fingerprint(), login("a:b").fingerprint());
        assert_ne!(login("a:b").fingerprint(), login("a:c").fingerprint());
        assert_ne!(login("ab:").fingerprint(), login("a:b").fingerprint());
        assert_ne!(
            login("a:b").fingerprint(),
            ClientLogin::Bearer("a:b".into()).fingerprint()
        );
    }

    #[tokio::test]
    async fn spawned_work_keeps_the_login_it_was_made_with() {
        let alice = Arc::new(ClientLogin::Bearer("t".into()));
        assert!(current().is_none());
        let (carried_along, spawned_bare) = acting_for(Some(alice), async {
            let carried_along = tokio::spawn(carried(async { current() })).await;
            let spawned_bare = tokio::spawn(async { current() }).await;
            (carried_along.unwrap(), spawned_bare.unwrap())
        })
        .await;
        assert!(matches!(
            carried_along.as_deref(),
            Some(ClientLogin::Bearer(t)) if t == "t"
        ));
        assert!(
            spawned_bare.is_none(),
            "a task-local does not cross a spawn"
        );
    }
}
