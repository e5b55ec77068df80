//! One `[[prefetch]]` rule, compiled: which image, and which of its tags to keep warm.

use std::cmp::Reverse;

use wharf_core::config::{ConfigError, PrefetchRule};
use wharf_core::image::ImageRef;

enum TagMatcher {
    Regex(regex::Regex),
    Semver(semver::VersionReq),
}

pub struct Rule {
    pub config: PrefetchRule,
    pub image: ImageRef,
    matcher: TagMatcher,
}

impl Rule {
    pub fn compile(config: &PrefetchRule) -> Result<Rule, ConfigError> {
        let invalid =
            |what: String| ConfigError::Invalid(format!("[[prefetch]] {:?}: {what}", config.image));
        let image = ImageRef::parse(&config.image).map_err(|e| invalid(e.to_string()))?;
        if config.image.contains(['@']) || image.reference != "latest" {
            return Err(invalid(
                "name the image without a tag or digest; tags or semver choose the tags".into(),
            ));
        }
        let matcher = if config.semver.is_empty() {
            TagMatcher::Regex(
                regex::RegexBuilder::new(&config.tags)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| invalid(format!("tags: {e}")))?,
            )
        } else {
            TagMatcher::Semver(
                config
                    .semver
                    .parse()
                    .map_err(|e| invalid(format!("semver: {e}")))?,
            )
        };
        Ok(Rule {
            config: config.clone(),
            image,
            matcher,
        })
    }

    /// Names the rule in the pin record: a changed rule is another rule.
    pub fn key(&self) -> String {
        let c = &self.config;
        format!(
            "{} tags={:?} semver={:?} platforms={:?}",
            c.image, c.tags, c.semver, c.platforms
        )
    }

    pub fn matches(&self, tag: &str) -> bool {
        match &self.matcher {
            TagMatcher::Regex(re) => re.is_match(tag),
            TagMatcher::Semver(req) => version_of(tag).is_some_and(|v| req.matches(&v)),
        }
    }

    /// The tags to pull this pass: the matching ones, highest version first (tags that are no
    /// version after them, last lexically first), at most `max_tags`.
    pub fn select(&self, tags: &[String]) -> Vec<String> {
        let mut chosen: Vec<&String> = tags.iter().filter(|t| self.matches(t)).collect();
        chosen.sort_by_cached_key(|t| Reverse((version_of(t), (*t).clone())));
        chosen
            .into_iter()
            .take(self.config.max_tags)
            .cloned()
            .collect()
    }
}

/// A tag read as a version: an optional `v`, then `MAJOR[.MINOR[.PATCH]]` with missing parts
/// taken as 0, then an optional `-pre` (`1.25-alpine` is the pre-release `1.25.0-alpine`, which
/// a requirement without pre-release never matches, as semver intends).
fn version_of(tag: &str) -> Option<semver::Version> {
    let tag = tag.strip_prefix('v').unwrap_or(tag);
    let split = tag.find(['-', '+']).unwrap_or(tag.len());
    let (core, rest) = tag.split_at(split);
    let parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty()
        || parts.len() > 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let mut full = parts.join(".");
    for _ in parts.len()..3 {
        full.push_str(".0");
    }
    full.push_str(rest);
    full.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(image: &str, tags: &str, semver: &str, max_tags: usize) -> PrefetchRule {
        PrefetchRule {
            image: image.into(),
            tags: tags.into(),
            semver: semver.into(),
            platforms: vec![],
            interval_secs: 60,
            referrers: false,
            pin: false,
            max_tags,
        }
    }

    fn rule(tags: &str, semver: &str, max_tags: usize) -> Rule {
        Rule::compile(&config("docker.io/library/nginx", tags, semver, max_tags))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn regex_rules_take_the_highest_matching_versions() {
        let tags = strings(&[
            "1.24.0",
            "1.25.3",
            "1.25.10",
            "1.26.0",
            "latest",
            "1.25.3-alpine",
        ]);
        let r = rule(r"^1\.2[56]\.[0-9]+$", "", 2);
        assert_eq!(r.select(&tags), strings(&["1.26.0", "1.25.10"]));
        let all = rule("alpine", "", 10);
        assert_eq!(all.select(&tags), strings(&["1.25.3-alpine"]));
    }

    #[test]
    fn semver_rules_read_tags_as_versions() {
        let tags = strings(&["v2.0", "2.1", "2.1.5", "2.2-rc1", "3.0.0", "stable", "1.9"]);
        let r = rule("", ">=2.1, <3", 10);
        assert_eq!(r.select(&tags), strings(&["2.1.5", "2.1"]));
        assert_eq!(
            version_of("v1").map(|v| v.to_string()),
            Some("1.0.0".into())
        );
        assert!(version_of("1.2.3.4").is_none() && version_of("x1").is_none());
    }

    #[test]
    fn bad_rules_are_refused() {
        let bad = |tags: &str, semver: &str, image: &str| {
            Rule::compile(&config(image, tags, semver, 1)).is_err()
        };
        assert!(bad("(", "", "nginx"));
        assert!(bad("", ">>1", "nginx"));
        assert!(bad("^1", "", "nginx:1.25"));
        assert!(!bad("^1", "", "localhost:5000/team/app"));
    }
}
