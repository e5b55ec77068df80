//! `credentials = "client"`: an upstream that each client reaches with its own login (a private
//! registry where every user has an account) instead of one configured account that all
//! clients would share.
//!
//! The client's `Authorization` goes to the upstream's `url` (and the token realm it names)
//! only, so such an upstream has no fallback URLs and no configured account; a parent tier
//! is not supported (its logins are wharf's own).

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::upstream::UpstreamConfig;

/// Whose login goes to an upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamCredentials {
    /// `username` and `password_file` (or none: anonymous), the same for every client.
    #[default]
    Configured,
    /// Each client's own Basic login (or a bearer token the upstream issued), passed on per
    /// request; a client is served a repository only once the upstream accepted its login
    /// for it.
    Client,
}

impl UpstreamCredentials {
    /// Serde's `skip_serializing_if`: the default is left out of written configs.
    pub fn is_configured(&self) -> bool {
        *self == UpstreamCredentials::Configured
    }
}

/// Default of `login_verdict_secs`: a revoked login or permission is noticed within a minute.
pub fn default_login_verdict_secs() -> u64 {
    60
}

/// What `credentials = "client"` rules out: a configured account, further URLs, a parent.
pub(super) fn validate_upstream(upstream: &UpstreamConfig) -> Result<(), ConfigError> {
    if upstream.login_verdict_secs == 0 || upstream.login_verdict_secs > 3600 {
        return Err(ConfigError::Invalid(format!(
            "upstream {:?}: login_verdict_secs must be 1 to 3600",
            upstream.name
        )));
    }
    if !upstream.takes_client_logins() {
        return Ok(());
    }
    let conflict = if upstream.username.is_some()
        || upstream.password.is_some()
        || upstream.password_file.is_some()
    {
        Some("a configured username or password (each client brings its own)")
    } else if !upstream.fallback_urls.is_empty() || !upstream.fallback.is_empty() {
        Some("fallback URLs (a client's login goes to url only)")
    } else if upstream.parent {
        Some("parent = true (a parent tier is reached with the node's own login)")
    } else {
        None
    };
    match conflict {
        Some(what) => Err(ConfigError::Invalid(format!(
            "upstream {:?}: credentials = \"client\" cannot be combined with {what}",
            upstream.name
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(name: &str) -> UpstreamConfig {
        let mut u = UpstreamConfig::new(name, "https://registry.example", true);
        u.credentials = UpstreamCredentials::Client;
        u
    }

    #[test]
    fn client_logins_stand_alone() {
        assert!(validate_upstream(&client("private")).is_ok());
        let mut with_account = client("private");
        with_account.username = Some("robot".into());
        let mut with_fallback = client("private");
        with_fallback.fallback_urls = vec!["https://other.example".into()];
        let mut parent = client("private");
        parent.parent = true;
        for (bad, words) in [
            (with_account, "username"),
            (with_fallback, "fallback"),
            (parent, "parent"),
        ] {
            let e = validate_upstream(&bad).unwrap_err().to_string();
            assert!(e.contains(words), "{e}");
        }
        let mut forever = client("private");
        forever.login_verdict_secs = 0;
        assert!(validate_upstream(&forever).is_err());
    }

    #[test]
    fn the_setting_reads_from_toml() {
        let u: UpstreamConfig = toml::from_str(
            "name = \"private\"\nurl = \"https://r.example\"\ncredentials = \"client\"\nlogin_verdict_secs = 30\n",
        )
        .unwrap();
        assert!(u.takes_client_logins());
        assert_eq!(u.login_verdict_secs, 30);
        assert!(
            toml::from_str::<UpstreamConfig>(
                "name = \"p\"\nurl = \"https://r.example\"\ncredentials = \"everyone\"\n"
            )
            .is_err()
        );
    }
}
