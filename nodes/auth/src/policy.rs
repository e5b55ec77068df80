//! Repository policy: `[[access]]` rules, the first match decides; no match denies. With no
//! rules at all, the policy is open (any identity the authenticator admits may pull).

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use wharf_core::config::AccessRule;

use crate::{AuthError, Identity};

struct Rule {
    repositories: GlobSet,
    users: Vec<String>,
    groups: Vec<String>,
    anonymous: bool,
    allow: bool,
}

impl Rule {
    fn names(&self, identity: &Identity) -> bool {
        let everyone = self.users.is_empty() && self.groups.is_empty() && !self.anonymous;
        if everyone {
            return true;
        }
        match identity {
            Identity::Anonymous => self.anonymous,
            Identity::User { name, groups } => {
                self.users.iter().any(|u| u == "*" || u == name)
                    || self.groups.iter().any(|g| groups.contains(g))
            }
        }
    }
}

/// Compiled `[[access]]` rules.
pub struct Policy {
    rules: Vec<Rule>,
}

impl Policy {
    /// Compile the rules; a bad glob is a configuration error naming it.
    pub fn new(rules: &[AccessRule]) -> Result<Policy, AuthError> {
        let mut compiled = Vec::with_capacity(rules.len());
        for rule in rules {
            let mut set = GlobSetBuilder::new();
            for pattern in &rule.repositories {
                let glob = GlobBuilder::new(pattern)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| AuthError::Config(format!("[[access]] {pattern:?}: {e}")))?;
                set.add(glob);
            }
            compiled.push(Rule {
                repositories: set
                    .build()
                    .map_err(|e| AuthError::Config(format!("[[access]]: {e}")))?,
                users: rule.users.clone(),
                groups: rule.groups.clone(),
                anonymous: rule.anonymous,
                allow: rule.allow,
            });
        }
        Ok(Policy { rules: compiled })
    }

    /// No rules: every admitted identity may pull everything.
    pub fn is_open(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether `identity` may pull `repository` (`<upstream name>/<repository path>`).
    pub fn allows(&self, identity: &Identity, repository: &str) -> bool {
        if self.rules.is_empty() {
            return true;
        }
        self.rules
            .iter()
            .find(|r| r.repositories.is_match(repository) && r.names(identity))
            .is_some_and(|r| r.allow)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rule(r: &[&str], u: &[&str], g: &[&str], anonymous: bool, allow: bool) -> AccessRule {
        AccessRule::new(r, u, g, anonymous, allow)
    }

    fn user(name: &str, groups: &[&str]) -> Identity {
        Identity::User {
            name: name.into(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn first_match_wins_and_no_match_denies() {
        let p = Policy::new(&[
            rule(&["ghcr.io/acme/secret/**"], &[], &["security"], false, true),
            rule(&["ghcr.io/acme/**"], &["mallory"], &[], false, false),
            rule(&["ghcr.io/acme/**"], &["*"], &[], false, true),
            rule(&["docker.io/library/*"], &[], &[], true, true),
        ])
        .unwrap();
        let alice = user("alice", &[]);
        assert!(p.allows(&alice, "ghcr.io/acme/app"));
        assert!(
            p.allows(&alice, "ghcr.io/acme/team/app"),
            "** crosses segments"
        );
        assert!(!p.allows(&user("mallory", &[]), "ghcr.io/acme/app"));
        assert!(p.allows(&user("sec", &["security"]), "ghcr.io/acme/secret/x"));
        assert!(p.allows(&Identity::Anonymous, "docker.io/library/alpine"));
        assert!(
            !p.allows(&Identity::Anonymous, "docker.io/library/a/b"),
            "* stays in a segment"
        );
        assert!(!p.allows(&Identity::Anonymous, "ghcr.io/acme/app"));
        assert!(!p.allows(&alice, "quay.io/x/y"), "no rule matches");
        assert!(
            Policy::new(&[])
                .unwrap()
                .allows(&Identity::Anonymous, "a/b")
        );
        assert!(Policy::new(&[rule(&["a/[b"], &[], &[], false, true)]).is_err());
    }

    #[test]
    fn a_rule_naming_nobody_matches_everyone() {
        let p = Policy::new(&[rule(&["**"], &[], &[], false, false)]).unwrap();
        assert!(!p.allows(&Identity::Anonymous, "docker.io/library/alpine"));
        assert!(!p.allows(&user("alice", &[]), "docker.io/library/alpine"));
    }
}
