//! wharf's own tokens: Docker's token flow (`docker login`, then a short-lived bearer token per
//! repository scope), signed with HS256 by a key every node of a cluster shares.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::{AuthError, Identity};

/// Scopes granted in one token at most; a request for more keeps the first ones.
pub const MAX_SCOPES: usize = 16;
const MIN_KEY_BYTES: usize = 32;

/// One `access` entry of a token, as distribution writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    #[serde(default)]
    access: Vec<Access>,
    #[serde(default)]
    groups: Vec<String>,
}

/// What the token endpoint answers.
#[derive(Debug, Serialize)]
pub struct IssuedToken {
    pub token: String,
    pub access_token: String,
    pub expires_in: u64,
    pub issued_at: String,
}

/// A token that verified: who it names, and the repositories it may pull.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub identity: Identity,
    pub repositories: Vec<String>,
}

/// Issues and verifies wharf's tokens.
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    issuer: String,
    service: String,
    ttl: Duration,
}

impl TokenIssuer {
    /// The key file must hold at least 32 bytes and, unless allowed, be private to its owner.
    pub fn from_key_file(
        path: &Path,
        allow_world_readable: bool,
        service: &str,
        ttl: Duration,
    ) -> Result<TokenIssuer, AuthError> {
        let key =
            wharf_core::config::read_secret_file(path, allow_world_readable).map_err(|e| {
                AuthError::File {
                    what: "token key file",
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                }
            })?;
        TokenIssuer::new(&key, service, ttl).map_err(|reason| AuthError::File {
            what: "token key file",
            path: path.to_path_buf(),
            reason,
        })
    }

    pub fn new(key: &[u8], service: &str, ttl: Duration) -> Result<TokenIssuer, String> {
        let key = key.trim_ascii_end();
        if key.len() < MIN_KEY_BYTES {
            return Err(format!(
                "holds {} bytes; a token key needs at least {MIN_KEY_BYTES}",
                key.len()
            ));
        }
        Ok(TokenIssuer {
            encoding: EncodingKey::from_secret(key).map_err(|e| e.to_string())?,
            decoding: DecodingKey::from_secret(key).map_err(|e| e.to_string())?,
            issuer: format!("wharf:{service}"),
            service: service.to_string(),
            ttl,
        })
    }

    /// The `iss` of wharf's tokens, to tell them from external ones.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// A token for `identity` allowing pulls of `repositories` (policy still applies on each
    /// request, so a rule changed after issuing takes effect at once).
    pub fn issue(
        &self,
        identity: &Identity,
        repositories: &[String],
    ) -> Result<IssuedToken, AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let (sub, groups) = match identity {
            Identity::Anonymous => (String::new(), Vec::new()),
            Identity::User { name, groups } => (name.clone(), groups.clone()),
        };
        let claims = Claims {
            iss: self.issuer.clone(),
            sub,
            aud: self.service.clone(),
            exp: now.saturating_add(self.ttl.as_secs()),
            nbf: now.saturating_sub(5),
            iat: now,
            access: repositories
                .iter()
                .take(MAX_SCOPES)
                .map(|name| Access {
                    kind: "repository".into(),
                    name: name.clone(),
                    actions: vec!["pull".into()],
                })
                .collect(),
            groups,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::Config(format!("signing a token: {e}")))?;
        Ok(IssuedToken {
            access_token: token.clone(),
            token,
            expires_in: self.ttl.as_secs(),
            issued_at: httpdate_rfc3339(now),
        })
    }

    /// Check signature, issuer, audience and lifetime.
    pub fn verify(&self, token: &str) -> Result<VerifiedToken, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.service]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|e| AuthError::InvalidToken(e.to_string()))?;
        let claims = data.claims;
        let identity = if claims.sub.is_empty() {
            Identity::Anonymous
        } else {
            Identity::User {
                name: claims.sub,
                groups: claims.groups,
            }
        };
        Ok(VerifiedToken {
            identity,
            repositories: claims
                .access
                .into_iter()
                .filter(|a| a.kind == "repository" && a.actions.iter().any(|x| x == "pull"))
                .map(|a| a.name)
                .collect(),
        })
    }
}

/// Repository names a token request asks to pull: `scope` values (space-separated inside,
/// possibly repeated) of the form `repository:NAME:ACTIONS` whose actions include pull.
pub fn pull_scopes<'a>(scopes: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut names = Vec::new();
    for scope in scopes.into_iter().flat_map(str::split_whitespace) {
        let mut parts = scope.splitn(2, ':');
        let (Some("repository"), Some(rest)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            continue;
        };
        if actions.split(',').any(|a| a == "pull" || a == "*")
            && !name.is_empty()
            && !names.iter().any(|n| n == name)
            && names.len() < MAX_SCOPES
        {
            names.push(name.to_string());
        }
    }
    names
}

/// `issued_at` as RFC 3339 (UTC), which Docker's client reads.
fn httpdate_rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant), for dates after 1970.
    let z = days as i64 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn issuer() -> TokenIssuer {
        TokenIssuer::new(&[7u8; 40], "wharf", Duration::from_secs(300)).unwrap()
    }

    #[test]
    fn issued_tokens_verify_and_name_their_scopes() {
        let alice = Identity::User {
            name: "alice".into(),
            groups: vec!["ci".into()],
        };
        let t = issuer().issue(&alice, &["library/alpine".into()]).unwrap();
        let v = issuer().verify(&t.token).unwrap();
        assert_eq!(v.identity, alice);
        assert_eq!(v.repositories, vec!["library/alpine".to_string()]);
        let anon = issuer().issue(&Identity::Anonymous, &[]).unwrap();
        assert_eq!(
            issuer().verify(&anon.token).unwrap().identity,
            Identity::Anonymous
        );
    }

    #[test]
    fn forged_expired_and_foreign_tokens_are_refused() {
        let t = issuer().issue(&Identity::Anonymous, &[]).unwrap().token;
        let other = TokenIssuer::new(&[8u8; 40], "wharf", Duration::from_secs(300)).unwrap();
        assert!(other.verify(&t).is_err(), "another key");
        let other_service =
            TokenIssuer::new(&[7u8; 40], "elsewhere", Duration::from_secs(300)).unwrap();
        assert!(other_service.verify(&t).is_err(), "another audience");
        let strict = issuer();
        let mut claims: serde_json::Value = serde_json::from_slice(
            &base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                t.split('.').nth(1).unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        claims["exp"] = serde_json::json!(1_000);
        let stale = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&[7u8; 40]).unwrap(),
        )
        .unwrap();
        assert!(strict.verify(&stale).is_err(), "expired");
        // Review #16: a token not valid yet is refused too.
        claims["exp"] = serde_json::json!(4_000_000_000u64);
        claims["nbf"] = serde_json::json!(3_900_000_000u64);
        let early = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&[7u8; 40]).unwrap(),
        )
        .unwrap();
        assert!(strict.verify(&early).is_err(), "not valid before nbf");
        assert!(strict.verify("not.a.token").is_err());
        let none = format!(
            "{}.{}.",
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                r#"{"alg":"none","typ":"JWT"}"#
            ),
            t.split('.').nth(1).unwrap()
        );
        assert!(strict.verify(&none).is_err(), "alg=none");
        assert!(TokenIssuer::new(b"short", "wharf", Duration::from_secs(1)).is_err());
    }

    #[test]
    fn scopes_are_parsed_and_bounded() {
        assert_eq!(
            pull_scopes([
                "repository:library/alpine:pull",
                "repository:a/b:push,pull registry:catalog:*"
            ]),
            vec!["library/alpine".to_string(), "a/b".to_string()]
        );
        assert!(pull_scopes(["repository:x:push", "garbage", "repository::pull"]).is_empty());
        let many: Vec<String> = (0..100).map(|i| format!("repository:r{i}:pull")).collect();
        assert_eq!(
            pull_scopes(many.iter().map(String::as_str)).len(),
            MAX_SCOPES
        );
        assert_eq!(httpdate_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(httpdate_rfc3339(1_798_761_600), "2027-01-01T00:00:00Z");
    }
}
