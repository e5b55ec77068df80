//! The auth layer as the API edge sees it: who sent a request, may it pull this repository,
//! what challenge to answer with, and the token endpoint's work.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use wharf_core::config::{AccessRule, Config};

use crate::credentials::{self, Presented};
use crate::htpasswd::PasswordChecker;
use crate::jwt::{self, JwtIssuer};
use crate::policy::Policy;
use crate::reload::Reload;
use crate::token::{IssuedToken, TokenIssuer};
use crate::{AuthError, Identity};

/// A request's proven identity, and (for wharf's own tokens) the repositories its token
/// names: a token for one repository does not open another.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub identity: Identity,
    pub token_repositories: Option<Vec<String>>,
}

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No (usable) credentials: 401 with a challenge.
    Unauthenticated,
    /// Authenticated, and the policy says no: 403 DENIED.
    Forbidden,
}

struct Rules {
    policy: Policy,
    groups: BTreeMap<String, Vec<String>>,
}

/// Client authentication and repository policy of one node.
pub struct Authenticator {
    passwords: Option<PasswordChecker>,
    tokens: Option<TokenIssuer>,
    issuers: Vec<Arc<JwtIssuer>>,
    rules: RwLock<Arc<Rules>>,
    anonymous: bool,
    restricted: bool,
    realm: String,
}

impl Authenticator {
    /// Open the files `[auth]` names and compile `[[access]]`.
    pub async fn from_config(config: &Config) -> Result<Authenticator, AuthError> {
        let auth = &config.auth;
        let set = |p: &std::path::Path| !p.as_os_str().is_empty();
        let passwords = if set(&auth.htpasswd_file) {
            Some(PasswordChecker::open(
                &auth.htpasswd_file,
                auth.max_concurrent_hashes,
                config.allow_world_readable_secrets,
            )?)
        } else {
            None
        };
        let tokens = if set(&auth.token_key_file) {
            Some(TokenIssuer::from_key_file(
                &auth.token_key_file,
                config.allow_world_readable_secrets,
                &auth.service,
                Duration::from_secs(auth.token_ttl_secs),
            )?)
        } else {
            None
        };
        let mut issuers = Vec::new();
        for issuer in &auth.jwt {
            let issuer = Arc::new(JwtIssuer::open(issuer).await?);
            issuer.spawn_refresh();
            issuers.push(issuer);
        }
        Ok(Authenticator {
            passwords,
            tokens,
            issuers,
            rules: RwLock::new(Arc::new(Rules {
                policy: Policy::new(&config.access)?,
                groups: auth.groups.clone(),
            })),
            anonymous: auth.anonymous || !auth.has_mechanism(),
            restricted: config.restricted(),
            realm: auth.realm.clone(),
        })
    }

    /// Whether requests are checked at all (any mechanism or rule configured).
    pub fn restricted(&self) -> bool {
        self.restricted
    }

    /// Whether wharf has logins of its own (htpasswd, its tokens, an external issuer): then
    /// an `Authorization` header is wharf's, and never passed on to an upstream.
    pub fn has_logins(&self) -> bool {
        self.passwords.is_some() || self.tokens.is_some() || !self.issuers.is_empty()
    }

    /// Whether `token` names wharf or one of its `[[auth.jwt]]` issuers as its issuer (checked
    /// or not): a credential meant for wharf, never to be passed on to an upstream.
    pub fn is_own_token(&self, token: &str) -> bool {
        let Some(issuer) = jwt::unverified_issuer(token) else {
            return false;
        };
        self.tokens.as_ref().is_some_and(|t| t.issuer() == issuer)
            || self.issuers.iter().any(|i| i.issuer() == issuer)
    }

    /// May a caller whom an upstream authenticated (`credentials = "client"`: the upstream
    /// judged the login) pull `full` (`<upstream>/<repository>`)? Only `[[access]]` applies.
    pub fn authorize_by_rules(&self, identity: &Identity, full: &str) -> Decision {
        if !self.restricted || self.rules().policy.allows(identity, full) {
            Decision::Allow
        } else {
            Decision::Forbidden
        }
    }

    /// Whether wharf runs the token flow (`/token`).
    pub fn issues_tokens(&self) -> bool {
        self.tokens.is_some()
    }

    /// Replace `[[access]]` and `[auth.groups]` (config file reloaded).
    pub fn set_rules(
        &self,
        access: &[AccessRule],
        groups: BTreeMap<String, Vec<String>>,
    ) -> Result<(), AuthError> {
        let rules = Arc::new(Rules {
            policy: Policy::new(access)?,
            groups,
        });
        match self.rules.write() {
            Ok(mut r) => *r = rules,
            Err(p) => *p.into_inner() = rules,
        }
        Ok(())
    }

    fn rules(&self) -> Arc<Rules> {
        match self.rules.read() {
            Ok(r) => Arc::clone(&r),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Files to watch for changes.
    pub fn watched(&self) -> Vec<Arc<dyn Reload>> {
        let mut out: Vec<Arc<dyn Reload>> = Vec::new();
        if let Some(p) = &self.passwords {
            out.push(p.watched());
        }
        out.extend(self.issuers.iter().filter_map(|i| i.watched()));
        out
    }

    /// Check the credentials of a request's `Authorization` header; `client` is the caller's
    /// address (its share of password hashing).
    pub async fn identify(
        &self,
        header: Option<&[u8]>,
        client: Option<std::net::IpAddr>,
    ) -> Result<Authenticated, AuthError> {
        match credentials::parse(header)? {
            Presented::Nothing => Ok(Authenticated {
                identity: Identity::Anonymous,
                token_repositories: None,
            }),
            Presented::Basic { user, password } => {
                let identity = self.check_password(&user, &password, client).await?;
                Ok(Authenticated {
                    identity,
                    token_repositories: None,
                })
            }
            Presented::Bearer(token) => self.check_bearer(&token).await,
        }
    }

    async fn check_password(
        &self,
        user: &str,
        password: &str,
        client: Option<std::net::IpAddr>,
    ) -> Result<Identity, AuthError> {
        if let Some(passwords) = &self.passwords
            && passwords.has_user(user)
        {
            return if passwords.verify(user, password, client).await? {
                Ok(self.htpasswd_user(user))
            } else {
                Err(AuthError::BadCredentials)
            };
        }
        // `docker login -u anything -p $JWT`: an external issuer's token as the password.
        if !self.issuers.is_empty() && jwt::looks_like_jwt(password) {
            return self
                .external(password)
                .await
                .map_err(|_| AuthError::BadCredentials);
        }
        // An unknown name costs what a known one does: timing tells no one which exist.
        if let Some(passwords) = &self.passwords {
            passwords.verify(user, password, client).await?;
        }
        Err(AuthError::BadCredentials)
    }

    fn htpasswd_user(&self, user: &str) -> Identity {
        let rules = self.rules();
        Identity::User {
            name: user.to_string(),
            groups: rules
                .groups
                .iter()
                .filter(|(_, members)| members.iter().any(|m| m == user))
                .map(|(g, _)| g.clone())
                .collect(),
        }
    }

    /// A wharf token's identity as of now: an htpasswd user (no `:` in the name) must still
    /// be in the file and gets the groups `[auth.groups]` gives them today, so removals apply
    /// at once, not at the token's expiry. External identities keep the groups their issuer
    /// vouched for until the token expires.
    fn current(&self, identity: Identity) -> Result<Identity, AuthError> {
        match identity {
            Identity::User { name, .. } if !name.contains(':') => match &self.passwords {
                Some(passwords) if passwords.has_user(&name) => Ok(self.htpasswd_user(&name)),
                _ => Err(AuthError::InvalidToken(
                    "the token's user is no longer known".into(),
                )),
            },
            other => Ok(other),
        }
    }

    async fn external(&self, token: &str) -> Result<Identity, AuthError> {
        let iss = jwt::unverified_issuer(token)
            .ok_or_else(|| AuthError::InvalidToken("no readable iss claim".into()))?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.issuer() == iss)
            .ok_or_else(|| AuthError::InvalidToken("issued by an unknown issuer".into()))?;
        issuer.verify(token).await
    }

    async fn check_bearer(&self, token: &str) -> Result<Authenticated, AuthError> {
        if let Some(tokens) = &self.tokens
            && jwt::unverified_issuer(token).as_deref() == Some(tokens.issuer())
        {
            let verified = tokens.verify(token)?;
            return Ok(Authenticated {
                identity: self.current(verified.identity)?,
                token_repositories: Some(verified.repositories),
            });
        }
        Ok(Authenticated {
            identity: self.external(token).await?,
            token_repositories: None,
        })
    }

    /// May `who` pull a repository? `names` are the names the client may have used for it
    /// (as in its path, and as stored upstream, e.g. with `library/`), `full` is
    /// `<upstream>/<repository>` as rules name it.
    pub fn authorize(&self, who: &Authenticated, names: &[&str], full: &str) -> Decision {
        if !self.restricted {
            return Decision::Allow;
        }
        if who.identity == Identity::Anonymous && !self.anonymous {
            return Decision::Unauthenticated;
        }
        // A token for another scope: the client fetches one for this scope.
        if let Some(granted) = &who.token_repositories
            && !granted.iter().any(|g| names.contains(&g.as_str()))
        {
            return Decision::Unauthenticated;
        }
        if self.rules().policy.allows(&who.identity, full) {
            Decision::Allow
        } else if who.identity == Identity::Anonymous {
            Decision::Unauthenticated
        } else {
            Decision::Forbidden
        }
    }

    /// `/v2/`: may this caller use the API at all? Anonymous callers are asked to log in
    /// when anonymous access is off, and always in the token flow (so that `docker login`
    /// is checked, and anonymous clients fetch an anonymous token).
    pub fn admits(&self, who: &Authenticated) -> bool {
        !self.restricted
            || who.identity != Identity::Anonymous
            || (self.anonymous && self.tokens.is_none())
    }

    /// The token endpoint: a token for the caller (anonymous only where allowed) and the
    /// requested pull scopes.
    pub fn issue_token(
        &self,
        who: &Authenticated,
        repositories: &[String],
    ) -> Result<IssuedToken, AuthError> {
        let tokens = self
            .tokens
            .as_ref()
            .ok_or_else(|| AuthError::Config("no token_key_file: wharf issues no tokens".into()))?;
        if who.token_repositories.is_some() {
            return Err(AuthError::InvalidToken(
                "log in with a password, not with a wharf token".into(),
            ));
        }
        if who.identity == Identity::Anonymous && !self.anonymous {
            return Err(AuthError::BadCredentials);
        }
        tokens.issue(&who.identity, repositories)
    }

    /// The `WWW-Authenticate` value for a 401. `origin` is `<scheme>://<host>` of the request,
    /// used for the realm unless one is configured.
    pub fn challenge(&self, origin: &str, repository: Option<&str>) -> String {
        match &self.tokens {
            Some(tokens) => {
                let realm = if self.realm.is_empty() {
                    format!("{origin}/token")
                } else {
                    self.realm.clone()
                };
                let mut value = format!(
                    "Bearer realm=\"{}\",service=\"{}\"",
                    quote_safe(&realm),
                    quote_safe(tokens.service())
                );
                if let Some(repository) = repository {
                    value.push_str(&format!(
                        ",scope=\"repository:{}:pull\"",
                        quote_safe(repository)
                    ));
                }
                value
            }
            None => "Basic realm=\"wharf\"".to_string(),
        }
    }
}

/// Characters that would end a quoted-string are dropped (names and hosts never hold them).
fn quote_safe(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect()
}
