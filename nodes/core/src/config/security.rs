//! `[tls]`, `[auth]` (with `[[auth.jwt]]`) and `[[access]]`: how clients connect, prove who
//! they are, and what each may pull.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// TLS on the client listener: on when `cert_file` is set. Files are PEM and are reloaded
/// when they change (or on SIGHUP), so certificate renewals need no restart.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The server certificate, followed by its intermediates.
    pub cert_file: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by one of these CAs (mTLS).
    pub client_ca_file: PathBuf,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert_file.as_os_str().is_empty()
    }
}

/// How clients prove who they are. Off (everyone is anonymous) unless a mechanism or an
/// `[[access]]` rule is configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Users and bcrypt password hashes, one `user:hash` a line (`htpasswd -B`, or
    /// `wharf auth hash-password`); HTTP Basic, and the token endpoint's login. Reloaded on
    /// change.
    pub htpasswd_file: PathBuf,
    /// A secret of at least 32 bytes: wharf then runs Docker's token flow (`docker login`),
    /// signing its tokens (HS256) with it. Every node of a cluster needs the same file.
    pub token_key_file: PathBuf,
    /// Lifetime of the tokens wharf issues.
    pub token_ttl_secs: u64,
    /// Whether a request without credentials is served (as the anonymous identity, which
    /// `[[access]]` rules may then allow or deny).
    pub anonymous: bool,
    /// The `service` named in challenges and tokens.
    pub service: String,
    /// Token endpoint URL put in challenges; empty: `<scheme>://<Host header>/token`.
    pub realm: String,
    /// Groups of htpasswd users, for `[[access]]` rules: `admins = ["alice"]`.
    pub groups: std::collections::BTreeMap<String, Vec<String>>,
    /// External token issuers (company IdP, CI OIDC) whose JWTs are accepted as Bearer
    /// tokens or as a Basic password.
    pub jwt: Vec<JwtIssuerConfig>,
    /// bcrypt verifications running at once, at most; further logins wait briefly, then 429.
    pub max_concurrent_hashes: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            htpasswd_file: PathBuf::new(),
            token_key_file: PathBuf::new(),
            token_ttl_secs: 300,
            anonymous: false,
            service: "wharf".to_string(),
            realm: String::new(),
            groups: Default::default(),
            jwt: Vec::new(),
            max_concurrent_hashes: 2,
        }
    }
}

impl AuthConfig {
    /// Whether any way of proving an identity is configured.
    pub fn has_mechanism(&self) -> bool {
        !self.htpasswd_file.as_os_str().is_empty()
            || !self.token_key_file.as_os_str().is_empty()
            || !self.jwt.is_empty()
    }
}

/// A JWT issuer whose tokens wharf accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtIssuerConfig {
    /// Must equal the token's `iss`.
    pub issuer: String,
    /// Must be among the token's `aud`.
    pub audience: String,
    /// Its public keys as a JWKS document on disk (reloaded on change)...
    pub jwks_file: PathBuf,
    /// ...or at a URL (fetched at start, every 5 minutes, and on an unknown key id); https://
    /// only, since whoever can change the keys can sign any identity.
    pub jwks_url: String,
    /// Accept an `http://` `jwks_url` (a test IdP on loopback; never across a network).
    pub allow_http_jwks: bool,
    /// The claim holding the user's groups (a list of strings, or one string).
    pub groups_claim: String,
    /// The claim naming the user.
    pub username_claim: String,
    /// Prefix of this issuer's user and group names (`<namespace>:<name>`), so its identities
    /// never meet htpasswd users, `users = ["*"]`, or another issuer's; empty: the issuer's
    /// host. Rules name them as `"<namespace>:<user>"`, `"<namespace>:*"` (any of its users),
    /// groups as `"<namespace>:<group>"`.
    pub namespace: String,
    /// Claims a token must carry with exactly these values (a string claim, or a list holding
    /// the value), e.g. `{ repository_owner = "acme" }`: who may mint the issuer's tokens is
    /// often wider than who may pull (any GitHub workflow can ask for any audience).
    pub required_claims: std::collections::BTreeMap<String, String>,
}

impl JwtIssuerConfig {
    /// The prefix of this issuer's identities: `namespace`, else the issuer URL's host.
    pub fn identity_namespace(&self) -> String {
        if !self.namespace.is_empty() {
            return self.namespace.clone();
        }
        let rest = self
            .issuer
            .split_once("://")
            .map_or(self.issuer.as_str(), |(_, rest)| rest);
        rest.split(['/', ':', '?', '#'])
            .next()
            .filter(|h| !h.is_empty())
            .unwrap_or(&self.issuer)
            .to_string()
    }
}

/// One `[[access]]` rule. It matches a request when a repository pattern matches
/// `<upstream>/<repository>` and the identity is among those named; with no `users`, `groups`
/// or `anonymous`, it matches everyone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    /// Globs: `*` within one path segment, `**` across segments.
    pub repositories: Vec<String>,
    /// User names; `"*"` is any authenticated user.
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Whether the rule applies to requests without credentials.
    #[serde(default)]
    pub anonymous: bool,
    #[serde(default = "yes")]
    pub allow: bool,
}

fn yes() -> bool {
    true
}

impl AccessRule {
    /// A rule for `repositories` naming `users`, `groups` and (if `anonymous`) callers without
    /// credentials; `allow` or deny.
    pub fn new(
        repositories: &[&str],
        users: &[&str],
        groups: &[&str],
        anonymous: bool,
        allow: bool,
    ) -> AccessRule {
        let owned = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
        AccessRule {
            repositories: owned(repositories),
            users: owned(users),
            groups: owned(groups),
            anonymous,
            allow,
        }
    }
}

impl Default for JwtIssuerConfig {
    fn default() -> Self {
        JwtIssuerConfig {
            issuer: String::new(),
            audience: String::new(),
            jwks_file: PathBuf::new(),
            jwks_url: String::new(),
            allow_http_jwks: false,
            groups_claim: "groups".to_string(),
            username_claim: "sub".to_string(),
            namespace: String::new(),
            required_claims: Default::default(),
        }
    }
}

fn is_set(p: &Path) -> bool {
    !p.as_os_str().is_empty()
}

impl TlsConfig {
    /// A certificate and its key together; client CAs only with them.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if is_set(&self.cert_file) != is_set(&self.key_file) {
            return invalid("tls.cert_file and tls.key_file go together");
        }
        if is_set(&self.client_ca_file) && !self.enabled() {
            return invalid("tls.client_ca_file needs tls.cert_file and tls.key_file");
        }
        Ok(())
    }
}

impl AuthConfig {
    /// Positive lifetimes and bounds; every issuer complete, with one key source, over https.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.token_ttl_secs == 0 || self.max_concurrent_hashes == 0 {
            return invalid(
                "auth.token_ttl_secs and auth.max_concurrent_hashes must be positive".into(),
            );
        }
        for jwt in &self.jwt {
            if jwt.issuer.is_empty() || jwt.audience.is_empty() {
                return invalid("every [[auth.jwt]] needs an issuer and an audience".into());
            }
            if is_set(&jwt.jwks_file) != jwt.jwks_url.is_empty() {
                return invalid(format!(
                    "[[auth.jwt]] {:?}: set exactly one of jwks_file and jwks_url",
                    jwt.issuer
                ));
            }
            let jwks_transport_ok = jwt.jwks_url.is_empty()
                || jwt.jwks_url.starts_with("https://")
                || (jwt.allow_http_jwks && jwt.jwks_url.starts_with("http://"));
            if !jwks_transport_ok {
                return invalid(format!(
                    "[[auth.jwt]] {:?}: jwks_url must be https:// (anyone on the path of plain HTTP could swap the keys and sign any identity; allow_http_jwks = true accepts http:// for a test IdP)",
                    jwt.issuer
                ));
            }
        }
        Ok(())
    }
}

impl AccessRule {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.repositories.is_empty() {
            return Err(ConfigError::Invalid(
                "every [[access]] rule names its repositories".into(),
            ));
        }
        Ok(())
    }
}
