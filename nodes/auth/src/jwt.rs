//! Tokens of an external issuer (a company IdP, GitHub Actions or GitLab OIDC): verified
//! against the issuer's public keys (JWKS), its `iss` and our `aud`, their claims mapped to a
//! user name and groups. `alg: none` cannot be expressed by the decoder, and HMAC algorithms
//! are refused: a JWKS holds public keys, and accepting HS* would let anyone sign with them.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tracing::warn;
use wharf_core::config::JwtIssuerConfig;

use crate::reload::{Reload, Watched};
use crate::{AuthError, Identity};

const MAX_JWKS_BYTES: u64 = 1024 * 1024;
const REFRESH_EVERY: Duration = Duration::from_secs(300);
const REFETCH_AT_MOST_EVERY: Duration = Duration::from_secs(30);
/// Groups kept from one token, at most.
const MAX_GROUPS: usize = 256;

enum Keys {
    File(Arc<Watched<JwkSet>>),
    Url {
        url: String,
        http: reqwest::Client,
        keys: RwLock<Arc<JwkSet>>,
        fetched: Mutex<Option<Instant>>,
    },
}

/// One configured external issuer.
pub struct JwtIssuer {
    config: JwtIssuerConfig,
    /// The prefix of every identity this issuer vouches for.
    namespace: String,
    keys: Keys,
}

fn parse_jwks(bytes: &[u8]) -> Result<JwkSet, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS document: {e}"))
}

impl JwtIssuer {
    /// Load the key file, or fetch the key URL (a failed first fetch is logged and retried
    /// when a token arrives, so an IdP outage does not stop the mirror from starting).
    pub async fn open(config: &JwtIssuerConfig) -> Result<JwtIssuer, AuthError> {
        let keys = if config.jwks_url.is_empty() {
            Keys::File(Watched::open(
                "JWKS file",
                &config.jwks_file,
                MAX_JWKS_BYTES,
                parse_jwks,
            )?)
        } else {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| AuthError::Config(format!("JWKS client: {e}")))?;
            Keys::Url {
                url: config.jwks_url.clone(),
                http,
                keys: RwLock::new(Arc::new(JwkSet { keys: Vec::new() })),
                fetched: Mutex::new(None),
            }
        };
        let issuer = JwtIssuer {
            config: config.clone(),
            namespace: config.identity_namespace(),
            keys,
        };
        issuer.refetch(true).await;
        Ok(issuer)
    }

    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// The key file to watch, if keys come from a file.
    pub fn watched(&self) -> Option<Arc<dyn Reload>> {
        match &self.keys {
            Keys::File(w) => Some(w.clone() as Arc<dyn Reload>),
            Keys::Url { .. } => None,
        }
    }

    fn current(&self) -> Arc<JwkSet> {
        match &self.keys {
            Keys::File(w) => w.get(),
            Keys::Url { keys, .. } => match keys.read() {
                Ok(k) => Arc::clone(&k),
                Err(p) => Arc::clone(&p.into_inner()),
            },
        }
    }

    /// Fetch the URL's keys: always when `force`d (start-up, the 5-minute refresh), else only
    /// if no key-triggered fetch happened in the last 30 s.
    async fn refetch(&self, force: bool) {
        let Keys::Url {
            url,
            http,
            keys,
            fetched,
        } = &self.keys
        else {
            return;
        };
        // Scheduled fetches always run; fetches for an unknown key id at most every 30 s.
        if !force {
            let mut last = match fetched.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            if last.is_some_and(|t| t.elapsed() < REFETCH_AT_MOST_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let fetched = async {
            let response = http.get(url).send().await.map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("answered {}", response.status()));
            }
            if response
                .content_length()
                .is_some_and(|l| l > MAX_JWKS_BYTES)
            {
                return Err("too large".to_string());
            }
            // Read within the bound whatever the headers say (a chunked body has no length).
            let mut response = response;
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
                if (body.len() + chunk.len()) as u64 > MAX_JWKS_BYTES {
                    return Err("too large".to_string());
                }
                body.extend_from_slice(&chunk);
            }
            parse_jwks(&body)
        };
        match fetched.await {
            Ok(set) => match keys.write() {
                Ok(mut k) => *k = Arc::new(set),
                Err(p) => *p.into_inner() = Arc::new(set),
            },
            Err(reason) => {
                warn!(issuer = %self.config.issuer, %url, %reason, "fetching the issuer's JWKS failed")
            }
        }
    }

    /// Keep the URL's keys fresh (rotation) until the runtime stops.
    pub fn spawn_refresh(self: &Arc<Self>) {
        if matches!(self.keys, Keys::File(_)) {
            return;
        }
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH_EVERY).await;
                let Some(me) = me.upgrade() else { return };
                me.refetch(true).await;
            }
        });
    }

    fn key_for(&self, kid: Option<&str>) -> Option<Jwk> {
        let set = self.current();
        match kid {
            Some(kid) => set.find(kid).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        }
    }

    /// Verify `token` (already known to name this issuer) and map its claims.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::InvalidToken(format!("header: {e}")))?;
        if matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(AuthError::InvalidToken(
                "HMAC-signed tokens are not accepted from an external issuer".into(),
            ));
        }
        let kid = header.kid.as_deref();
        let jwk = match self.key_for(kid) {
            Some(jwk) => jwk,
            None => {
                // Keys rotate: look again (at most every 30 s) before refusing.
                self.refetch(false).await;
                self.key_for(kid)
                    .ok_or_else(|| AuthError::InvalidToken("signed by an unknown key".into()))?
            }
        };
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|e| AuthError::InvalidToken(format!("issuer key unusable: {e}")))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key,
            &validation,
        )
        .map_err(|e| AuthError::InvalidToken(e.to_string()))?;
        let claims = data.claims;
        for (claim, wanted) in &self.config.required_claims {
            let holds = match claims.get(claim) {
                Some(serde_json::Value::String(v)) => v == wanted,
                Some(serde_json::Value::Array(items)) => {
                    items.iter().any(|i| i.as_str() == Some(wanted.as_str()))
                }
                _ => false,
            };
            if !holds {
                return Err(AuthError::InvalidToken(format!(
                    "the token's {claim:?} claim is not the one this issuer requires"
                )));
            }
        }
        let namespace = &self.namespace;
        let name = claims
            .get(&self.config.username_claim)
            .and_then(serde_json::Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                AuthError::InvalidToken(format!(
                    "no {:?} claim to name the user",
                    self.config.username_claim
                ))
            })?;
        let groups = match claims.get(&self.config.groups_claim) {
            Some(serde_json::Value::String(g)) => vec![format!("{namespace}:{g}")],
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(serde_json::Value::as_str)
                .take(MAX_GROUPS)
                .map(|g| format!("{namespace}:{g}"))
                .collect(),
            _ => Vec::new(),
        };
        Ok(Identity::User {
            name: format!("{namespace}:{name}"),
            groups,
        })
    }
}

/// The `iss` claim of a token, read without verifying it, to pick the issuer that will.
pub fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_string)
}

/// Whether a Basic password looks like a JWT (three base64url parts), so it may be checked
/// as one: `docker login -u ci -p $OIDC_TOKEN`.
pub fn looks_like_jwt(password: &str) -> bool {
    let parts: Vec<&str> = password.split('.').collect();
    parts.len() == 3
        && parts[..2].iter().all(|p| !p.is_empty())
        && parts.iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}
