//! Repository policy: `[[access]]` rules, the first match decides; no match denies. With no
//! rules at all, the policy is open (any identity the authenticator admits may pull).

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use wharf_core::config::AccessRule;

use crate::{AuthError, Identity};

struct Rule {
    repositories: GlobSet,
    /// Patterns that name `_wharf/...` (the operator pages, the catalog) literally: only these
    /// match those names, so `"**"` or `"*/*"` never opens them by accident.
    operator: GlobSet,
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
                self.users.iter().any(|u| user_matches(u, name))
                    || self.groups.iter().any(|g| groups.contains(g))
            }
        }
    }
}

/// Whether a rule's `users` entry names `name`. `"*"` is any htpasswd user (names without
/// `:`); an external issuer's identities (`<namespace>:<name>`) match only by their full
/// name or `"<namespace>:*"`, so a token anyone can mint never matches a rule by accident.
fn user_matches(entry: &str, name: &str) -> bool {
    match entry {
        "*" => !name.contains(':'),
        _ => match entry.strip_suffix(":*") {
            Some(namespace) => name
                .strip_prefix(namespace)
                .is_some_and(|rest| rest.starts_with(':')),
            None => entry == name,
        },
    }
}

/// The names of wharf's own resources (`_wharf/status`, `_wharf/catalog`).
const OPERATOR_PREFIX: &str = "_wharf/";

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
            let mut operator = GlobSetBuilder::new();
            for pattern in &rule.repositories {
                let glob = GlobBuilder::new(pattern)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| AuthError::Config(format!("[[access]] {pattern:?}: {e}")))?;
                if pattern.starts_with(OPERATOR_PREFIX) {
                    operator.add(glob);
                } else {
                    set.add(glob);
                }
            }
            let build = |set: GlobSetBuilder| {
                set.build()
                    .map_err(|e| AuthError::Config(format!("[[access]]: {e}")))
            };
            compiled.push(Rule {
                repositories: build(set)?,
                operator: build(operator)?,
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
        let operator = repository.starts_with(OPERATOR_PREFIX);
        self.rules
            .iter()
            .find(|r| {
                let patterns = if operator {
                    &r.operator
                } else {
                    &r.repositories
                };
                patterns.is_match(repository) && r.names(identity)
            })
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

    /// Review #9: `"*"` is any htpasswd user; an external issuer's identities match only by
    /// their namespaced names.
    #[test]
    fn star_means_local_users_and_external_ones_are_namespaced() {
        let p = Policy::new(&[
            rule(&["docker.io/library/*"], &["*"], &[], false, true),
            rule(&["docker.io/ci/*"], &["gh:*"], &[], false, true),
            rule(
                &["docker.io/one/*"],
                &["gh:repo:acme/app"],
                &[],
                false,
                true,
            ),
        ])
        .unwrap();
        let user = |name: &str| Identity::User {
            name: name.into(),
            groups: vec![],
        };
        assert!(p.allows(&user("alice"), "docker.io/library/alpine"));
        assert!(!p.allows(&user("gh:repo:evil/x"), "docker.io/library/alpine"));
        assert!(p.allows(&user("gh:repo:evil/x"), "docker.io/ci/tool"));
        assert!(!p.allows(&user("ghx:repo:evil/x"), "docker.io/ci/tool"));
        assert!(!p.allows(&user("alice"), "docker.io/ci/tool"));
        assert!(p.allows(&user("gh:repo:acme/app"), "docker.io/one/x"));
        assert!(!p.allows(&user("gh:repo:acme/other"), "docker.io/one/x"));
    }

    /// Review #14: `_wharf/...` is matched only by rules that name it.
    #[test]
    fn operator_names_match_only_literal_rules() {
        let alice = user("alice", &[]);
        let broad = Policy::new(&[
            rule(&["**"], &["*"], &[], false, true),
            rule(&["*/*"], &["*"], &[], false, true),
        ])
        .unwrap();
        assert!(broad.allows(&alice, "docker.io/library/alpine"));
        assert!(!broad.allows(&alice, "_wharf/status"));
        assert!(!broad.allows(&alice, "_wharf/catalog"));
        let named = Policy::new(&[rule(&["_wharf/*"], &["alice"], &[], false, true)]).unwrap();
        assert!(named.allows(&alice, "_wharf/status"));
        assert!(!named.allows(&alice, "docker.io/x"));
    }

    #[test]
    fn a_rule_naming_nobody_matches_everyone() {
        let p = Policy::new(&[rule(&["**"], &[], &[], false, false)]).unwrap();
        assert!(!p.allows(&Identity::Anonymous, "docker.io/library/alpine"));
        assert!(!p.allows(&user("alice", &[]), "docker.io/library/alpine"));
    }
}
