//! Upstream authentication: parse `WWW-Authenticate` challenges, fetch bearer tokens, and
//! cache them per scope until they expire.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

impl Challenge {
    /// `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="..."`
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(params);
        Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
        })
    }
}

/// `k="v", k2=v2` with quoted commas allowed inside values.
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.insert(key, value.trim().to_string());
        rest = remainder.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// Credentials for an upstream.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

impl Credentials {
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// What one upstream taught us about its authentication, plus cached tokens.
#[derive(Default)]
pub struct AuthState {
    inner: Mutex<AuthInner>,
}

#[derive(Default)]
struct AuthInner {
    challenge: Option<Challenge>,
    /// A Basic challenge as the upstream worded it, to pass on to clients that log in
    /// with their own credentials.
    basic_challenge: Option<String>,
    tokens: HashMap<String, (String, Instant)>,
}

/// Tokens are dropped this long before their stated expiry, so none expires in flight.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// Docker's token spec: `expires_in` defaults to 60 seconds.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// A token is never kept longer than this, whatever `expires_in` says.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Upper bound on the tokens kept; old ones are pruned past it.
const MAX_TOKENS: usize = 4096;

impl AuthState {
    fn lock(&self) -> std::sync::MutexGuard<'_, AuthInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn challenge(&self) -> Option<Challenge> {
        self.lock().challenge.clone()
    }

    /// Remember the scheme an upstream asked for; `raw` is its `WWW-Authenticate` value.
    pub fn learn(&self, challenge: Challenge, raw: &str) {
        let mut inner = self.lock();
        if challenge == Challenge::Basic && raw.len() <= 512 {
            inner.basic_challenge = Some(raw.trim().to_string());
        }
        inner.challenge = Some(challenge);
    }

    /// The Basic challenge the upstream sent, word for word, if it asked for Basic.
    pub fn basic_challenge(&self) -> Option<String> {
        let inner = self.lock();
        match inner.challenge {
            Some(Challenge::Basic) => inner.basic_challenge.clone(),
            _ => None,
        }
    }

    pub fn token(&self, scope: &str) -> Option<String> {
        let inner = self.lock();
        let (token, expires) = inner.tokens.get(scope)?;
        (Instant::now() < *expires).then(|| token.clone())
    }

    pub fn store_token(&self, scope: &str, token: String, lifetime: Option<Duration>) {
        let lifetime = lifetime
            .unwrap_or(DEFAULT_TOKEN_LIFETIME)
            .min(MAX_TOKEN_LIFETIME);
        let now = Instant::now();
        let expires = now
            .checked_add(lifetime.saturating_sub(EXPIRY_MARGIN))
            .unwrap_or(now);
        let mut inner = self.lock();
        if inner.tokens.len() >= MAX_TOKENS {
            let now = Instant::now();
            inner.tokens.retain(|_, (_, e)| *e > now);
            if inner.tokens.len() >= MAX_TOKENS {
                inner.tokens.clear();
            }
        }
        inner.tokens.insert(scope.to_string(), (token, expires));
    }

    pub fn forget_token(&self, scope: &str) {
        self.lock().tokens.remove(scope);
    }
}

/// The token endpoint's answer (Docker's token spec; `access_token` is the OAuth2 spelling).
#[derive(Debug, serde::Deserialize)]
pub struct TokenResponse {
    pub token: Option<String>,
    pub access_token: Option<String>,
    /// Seconds; anything but a non-negative integer (a string, a float, -1) counts as absent.
    #[serde(default, deserialize_with = "lenient_seconds")]
    pub expires_in: Option<u64>,
}

fn lenient_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let value: serde_json::Value = serde::Deserialize::deserialize(d)?;
    Ok(value.as_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_challenge() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
        assert_eq!(Challenge::parse("Bearer service=x"), None);
    }

    #[test]
    fn params_with_commas_in_quotes() {
        let p = parse_params(r#"realm="a,b", service=svc ,scope="x:y:pull,push""#);
        assert_eq!(p["realm"], "a,b");
        assert_eq!(p["service"], "svc");
        assert_eq!(p["scope"], "x:y:pull,push");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

        #[test]
        fn challenges_parse_or_refuse(header in proptest::prop_oneof![
            proptest::prelude::any::<String>(),
            "(Bearer|Basic|bearer|Negotiate) ?([a-z]{0,8}=(\"[^\"]{0,30}\"?|[a-z,]{0,10}),? ?){0,5}",
        ]) {
            if let Some(Challenge::Bearer { realm, .. }) = Challenge::parse(&header) {
                proptest::prop_assert!(header.to_ascii_lowercase().contains("realm"));
                let _ = realm;
            }
        }

        #[test]
        fn token_answers_parse_or_refuse(body in "\\{\"(token|access_token|expires_in)\": ?(\"[a-z]{0,5}\"|-?[0-9.e]{1,30}|null|\\[\\])\\}") {
            let _ = serde_json::from_str::<TokenResponse>(&body);
        }
    }

    #[test]
    fn odd_expires_in_values_are_ignored() {
        for (body, want) in [
            (r#"{"token":"t","expires_in":300}"#, Some(300)),
            (r#"{"token":"t","expires_in":-1}"#, None),
            (r#"{"token":"t","expires_in":"300"}"#, None),
            (r#"{"token":"t","expires_in":1e300}"#, None),
            (r#"{"token":"t"}"#, None),
        ] {
            let parsed: TokenResponse = serde_json::from_str(body).unwrap();
            assert_eq!(parsed.expires_in, want, "{body}");
        }
    }

    #[test]
    fn tokens_expire() {
        let s = AuthState::default();
        s.store_token("a", "t".into(), Some(Duration::from_secs(300)));
        assert_eq!(s.token("a").as_deref(), Some("t"));
        s.store_token("b", "t".into(), Some(Duration::from_secs(5)));
        assert_eq!(s.token("b"), None, "shorter than the margin: never used");
        s.forget_token("a");
        assert_eq!(s.token("a"), None);
        // A hostile expires_in neither panics nor keeps a token beyond a day.
        s.store_token("huge", "t".into(), Some(Duration::from_secs(u64::MAX)));
        assert_eq!(s.token("huge").as_deref(), Some("t"));
        let inner = s.lock();
        let (_, expires) = &inner.tokens["huge"];
        assert!(*expires <= Instant::now() + MAX_TOKEN_LIFETIME);
    }
}
