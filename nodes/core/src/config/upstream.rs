//! `[[upstream]]`: one registry wharf mirrors, the URLs it is reached at and the credentials
//! that go to each of them (a URL's credentials are never sent to another URL).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::credentials::{UpstreamCredentials, default_login_verdict_secs};
use super::{ConfigError, DOCKER_HUB_NAME, read_secret_file};

/// One registry wharf mirrors.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The registry host clients name in containerd's `?ns=` parameter (`docker.io`, `ghcr.io`).
    pub name: String,
    /// Base URL of its v2 API.
    pub url: String,
    /// Serves clients that send no `ns=` (Docker's `registry-mirrors`, skopeo, podman).
    #[serde(default)]
    pub default: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Read the password from this file instead (Kubernetes/Docker secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The URLs are wharf nodes of a parent tier: the upstream's name goes with every request
    /// as `ns=`, so the parent picks its upstream of that registry.
    #[serde(default)]
    pub parent: bool,
    /// Tried in order after `url` when it does not answer (another region's parent, the
    /// registry itself). Asked anonymously: `username`/`password` go to `url` only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback_urls: Vec<String>,
    /// Further URLs with credentials of their own (`[[upstream.fallback]]`), tried in order
    /// after `fallback_urls`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback: Vec<FallbackConfig>,
    /// Pulls of the upstream's allowance (Docker Hub's `ratelimit-remaining`) left to clients:
    /// prefetching pauses while fewer remain.
    #[serde(default = "default_prefetch_reserve")]
    pub prefetch_reserve: u64,
    /// Further first path components that route a repository name here
    /// (`prefixes = ["hub"]`: `/v2/hub/library/nginx/...`), beside the upstream's own name
    /// (`/v2/docker.io/library/nginx/...`). See [`super::routing`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<String>,
    /// Host names whose requests go here without a prefix or `ns=`
    /// (`hosts = ["ghcr.mirror.example.com"]`: one mirror host per registry).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Whose login goes to the upstream: the configured account (default) or each client's
    /// own (`"client"`). See [`super::credentials`].
    #[serde(default, skip_serializing_if = "UpstreamCredentials::is_configured")]
    pub credentials: UpstreamCredentials,
    /// With `credentials = "client"`: seconds the upstream's answer on one login for one
    /// repository is trusted before it is asked again.
    #[serde(default = "default_login_verdict_secs")]
    pub login_verdict_secs: u64,
}

/// By hand, so that no log line or error ever prints the password.
impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("default", &self.default)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_file", &self.password_file)
            .field("parent", &self.parent)
            .field("fallback_urls", &self.fallback_urls)
            .field("fallback", &self.fallback)
            .field("prefetch_reserve", &self.prefetch_reserve)
            .field("prefixes", &self.prefixes)
            .field("hosts", &self.hosts)
            .field("credentials", &self.credentials)
            .field("login_verdict_secs", &self.login_verdict_secs)
            .finish()
    }
}

impl UpstreamConfig {
    pub fn new(name: &str, url: &str, default: bool) -> Self {
        UpstreamConfig {
            name: name.to_string(),
            url: url.trim_end_matches('/').to_string(),
            default,
            username: None,
            password: None,
            password_file: None,
            parent: false,
            fallback_urls: Vec::new(),
            fallback: Vec::new(),
            prefetch_reserve: default_prefetch_reserve(),
            prefixes: Vec::new(),
            hosts: Vec::new(),
            credentials: UpstreamCredentials::default(),
            login_verdict_secs: default_login_verdict_secs(),
        }
    }

    /// Whether each client's own login goes to this upstream (`credentials = "client"`).
    pub fn takes_client_logins(&self) -> bool {
        self.credentials == UpstreamCredentials::Client
    }

    /// `ns=` name for a URL given on the command line: Docker Hub's API host maps to `docker.io`.
    pub fn name_for_url(url: &str) -> String {
        let host = url
            .split_once("://")
            .map_or(url, |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or_default();
        if host == "registry-1.docker.io" || host == "index.docker.io" {
            DOCKER_HUB_NAME.to_string()
        } else {
            host.to_string()
        }
    }

    /// Docker Hub stores single-segment names under `library/`.
    pub fn is_docker_hub(&self) -> bool {
        self.name == DOCKER_HUB_NAME
    }

    /// The password, from the file if one is named. Read once at start-up; a file others
    /// may read is refused unless `allow_world_readable` (see [`read_secret_file`]).
    pub fn resolved_password(
        &self,
        allow_world_readable: bool,
    ) -> Result<Option<String>, ConfigError> {
        password_of(&self.password, &self.password_file, allow_world_readable)
    }

    /// The passwords of `url` and of every `[[upstream.fallback]]`, read once at start-up.
    pub fn resolved_passwords(
        &self,
        allow_world_readable: bool,
    ) -> Result<UpstreamPasswords, ConfigError> {
        Ok(UpstreamPasswords {
            url: self.resolved_password(allow_world_readable)?,
            fallback: self
                .fallback
                .iter()
                .map(|f| password_of(&f.password, &f.password_file, allow_world_readable))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Every URL in the order it is tried, with the username and password that go to it and
    /// to no other: `url` with the upstream's own, `fallback_urls` with none, each
    /// `[[upstream.fallback]]` with its own.
    pub fn endpoints(&self, passwords: &UpstreamPasswords) -> Vec<EndpointConfig> {
        let pair =
            |user: &Option<String>, password: Option<&String>| user.clone().zip(password.cloned());
        std::iter::once(EndpointConfig {
            url: self.url.clone(),
            login: pair(&self.username, passwords.url.as_ref()),
        })
        .chain(self.fallback_urls.iter().map(|url| EndpointConfig {
            url: url.clone(),
            login: None,
        }))
        .chain(
            self.fallback
                .iter()
                .enumerate()
                .map(|(i, f)| EndpointConfig {
                    url: f.url.clone(),
                    login: pair(
                        &f.username,
                        passwords.fallback.get(i).and_then(Option::as_ref),
                    ),
                }),
        )
        .collect()
    }

    /// Every URL of this upstream, in the order they are tried.
    pub fn urls(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.url)
            .chain(&self.fallback_urls)
            .chain(self.fallback.iter().map(|f| &f.url))
    }

    /// What `validate` checks of one upstream: usable URLs without credentials in them,
    /// complete credential pairs.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        super::routing::validate_upstream(self)?;
        super::credentials::validate_upstream(self)?;
        for url in self.urls() {
            let Some((_, rest)) = url
                .strip_prefix("http://")
                .map(|r| ("http", r))
                .or_else(|| url.strip_prefix("https://").map(|r| ("https", r)))
            else {
                return invalid(format!(
                    "upstream {:?}: every URL must be http(s)://",
                    self.name
                ));
            };
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            if authority.contains('@') {
                return invalid(format!(
                    "upstream {:?}: a URL holds credentials (user@host): give them as username and password_file, which go to that URL only and are never printed",
                    self.name
                ));
            }
            if authority.is_empty() {
                return invalid(format!("upstream {:?}: a URL names no host", self.name));
            }
        }
        check_login(
            &self.name,
            &self.username,
            &self.password,
            &self.password_file,
        )?;
        for f in &self.fallback {
            check_login(&self.name, &f.username, &f.password, &f.password_file)?;
        }
        Ok(())
    }
}

/// A further URL of an upstream with its own credentials (another region's parent, the
/// registry itself under a different account). Without `username`, it is asked anonymously.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

/// By hand, so that no log line or error ever prints the password.
impl std::fmt::Debug for FallbackConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_file", &self.password_file)
            .finish()
    }
}

/// The passwords of one upstream's URLs, read from their files once.
#[derive(Clone, Default, PartialEq)]
pub struct UpstreamPasswords {
    /// `url`'s.
    pub url: Option<String>,
    /// Each `[[upstream.fallback]]`'s, in order.
    pub fallback: Vec<Option<String>>,
}

impl UpstreamPasswords {
    /// Only `url` has one.
    pub fn for_url(password: Option<String>) -> UpstreamPasswords {
        UpstreamPasswords {
            url: password,
            fallback: Vec::new(),
        }
    }
}

impl std::fmt::Debug for UpstreamPasswords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamPasswords(<redacted>)")
    }
}

/// One URL of an upstream and the login that may go to it.
#[derive(Clone, PartialEq)]
pub struct EndpointConfig {
    pub url: String,
    /// Username and password, sent to this URL (and the token realm it names) only.
    pub login: Option<(String, String)>,
}

impl std::fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("url", &self.url)
            .field("login", &self.login.as_ref().map(|(user, _)| user))
            .finish()
    }
}

fn check_login(
    name: &str,
    username: &Option<String>,
    password: &Option<String>,
    password_file: &Option<PathBuf>,
) -> Result<(), ConfigError> {
    if password.is_some() && password_file.is_some() {
        return Err(ConfigError::Invalid(format!(
            "upstream {name:?}: set password or password_file, not both"
        )));
    }
    if password.is_some() != username.is_some() && password_file.is_none() {
        return Err(ConfigError::Invalid(format!(
            "upstream {name:?}: username and password go together"
        )));
    }
    Ok(())
}

fn password_of(
    password: &Option<String>,
    password_file: &Option<PathBuf>,
    allow_world_readable: bool,
) -> Result<Option<String>, ConfigError> {
    match password_file {
        None => Ok(password.clone()),
        Some(path) => {
            let secret = read_secret_file(path, allow_world_readable)?;
            Ok(Some(
                String::from_utf8_lossy(&secret)
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ))
        }
    }
}

fn default_prefetch_reserve() -> u64 {
    20
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn with_upstream(u: UpstreamConfig) -> Config {
        Config {
            upstreams: vec![u],
            ..Config::default()
        }
    }

    /// Review #20: credentials in a URL would be printed wherever the URL is (status page,
    /// logs, errors); they are refused with a pointer to the keys that keep them secret.
    #[test]
    fn urls_with_userinfo_are_refused() {
        for bad in [
            "https://robot:secret@registry.example",
            "https://robot@registry.example/v2",
        ] {
            let mut u = UpstreamConfig::new("r.example", bad, true);
            let err = with_upstream(u.clone()).validate().unwrap_err().to_string();
            assert!(err.contains("password_file"), "{err}");
            u.url = "https://registry.example".into();
            u.fallback = vec![FallbackConfig {
                url: bad.into(),
                username: None,
                password: None,
                password_file: None,
            }];
            assert!(with_upstream(u).validate().is_err(), "{bad} as a fallback");
        }
        let ok = UpstreamConfig::new("r.example", "https://registry.example/v2?x=a@b", true);
        assert!(with_upstream(ok).validate().is_ok());
    }

    /// Review #1: each URL has the login configured for it, and only that one.
    #[test]
    fn each_url_gets_its_own_login() {
        let mut u = UpstreamConfig::new("docker.io", "https://parent.example", true);
        u.parent = true;
        u.username = Some("region-eu".into());
        u.fallback_urls = vec!["https://registry-1.docker.io".into()];
        u.fallback = vec![
            FallbackConfig {
                url: "https://other-parent.example".into(),
                username: Some("region-us".into()),
                password: None,
                password_file: None,
            },
            FallbackConfig {
                url: "https://anonymous.example".into(),
                username: None,
                password: None,
                password_file: None,
            },
        ];
        let passwords = UpstreamPasswords {
            url: Some("central".into()),
            fallback: vec![Some("other".into()), None],
        };
        let logins: Vec<_> = u
            .endpoints(&passwords)
            .into_iter()
            .map(|e| (e.url, e.login))
            .collect();
        assert_eq!(
            logins,
            vec![
                (
                    "https://parent.example".to_string(),
                    Some(("region-eu".to_string(), "central".to_string()))
                ),
                ("https://registry-1.docker.io".to_string(), None),
                (
                    "https://other-parent.example".to_string(),
                    Some(("region-us".to_string(), "other".to_string()))
                ),
                ("https://anonymous.example".to_string(), None),
            ]
        );
        assert!(!format!("{:?}", u.endpoints(&passwords)).contains("central"));
    }
}
