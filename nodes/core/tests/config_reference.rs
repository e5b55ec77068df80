//! The config reference (`deploy/wharf.example.toml`) documents every key and no other.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use wharf_core::config::{AccessRule, Config, PrefetchRule, UpstreamConfig};

const REFERENCE: &str = include_str!("../../../deploy/wharf.example.toml");

/// Dotted key paths of a TOML value; array-of-tables entries share their table's path.
fn key_paths(value: &toml::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        toml::Value::Table(table) => {
            for (k, v) in table {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(path.clone());
                key_paths(v, &path, out);
            }
        }
        toml::Value::Array(items) => {
            for item in items {
                key_paths(item, prefix, out);
            }
        }
        _ => {}
    }
}

#[test]
fn reference_parses_and_validates() {
    // deny_unknown_fields: a key the code does not know fails here.
    let config = Config::from_toml(REFERENCE).unwrap();
    config.validate().unwrap();
}

#[test]
fn reference_names_every_key() {
    let mut full = Config::default();
    let mut with_everything = UpstreamConfig::new("x", "https://x", false);
    with_everything.username = Some("u".into());
    with_everything.password = Some("p".into());
    with_everything.password_file = Some(PathBuf::from("/f"));
    with_everything.fallback_urls = vec!["https://y".into()];
    with_everything.prefixes = vec!["p".into()];
    with_everything.hosts = vec!["h.example".into()];
    // Not a valid upstream (a client-login one takes no password), but every key is named.
    with_everything.credentials = wharf_core::config::UpstreamCredentials::Client;
    with_everything.fallback = vec![wharf_core::config::FallbackConfig {
        url: "https://z".into(),
        username: Some("u".into()),
        password: Some("p".into()),
        password_file: Some(PathBuf::from("/f")),
    }];
    full.upstreams.push(with_everything);
    full.auth.jwt.push(wharf_core::config::JwtIssuerConfig {
        required_claims: [("repository_owner".to_string(), "acme".to_string())].into(),
        ..Default::default()
    });
    full.access.push(AccessRule {
        repositories: vec!["docker.io/library/*".into()],
        users: vec!["alice".into()],
        groups: vec!["ci".into()],
        anonymous: true,
        allow: true,
    });
    full.prefetch.push(PrefetchRule {
        image: "nginx".into(),
        tags: "^1".into(),
        semver: ">=1".into(),
        platforms: vec!["linux/amd64".into()],
        interval_secs: 60,
        referrers: true,
        pin: true,
        max_tags: 5,
    });
    let mut known = BTreeSet::new();
    key_paths(&toml::Value::try_from(&full).unwrap(), "", &mut known);

    let mut documented = BTreeSet::new();
    let reference = toml::Value::Table(toml::from_str::<toml::Table>(REFERENCE).unwrap());
    key_paths(&reference, "", &mut documented);
    // Group names are the user's own: `[auth.groups]` documents one as an example.
    documented.retain(|k| !k.starts_with("auth.groups."));

    let missing: Vec<_> = known.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "keys missing from the reference: {missing:?}"
    );
    let extra: Vec<_> = documented.difference(&known).collect();
    assert!(
        extra.is_empty(),
        "keys in the reference the code lacks: {extra:?}"
    );
}
