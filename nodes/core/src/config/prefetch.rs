//! `[[prefetch]]`: images kept warm before any client asks.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// One `[[prefetch]]` rule: the tags of `image` matching `tags` (a regex) or `semver` (a
/// version requirement) are pulled into the cache every `interval_secs`, before any client asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefetchRule {
    /// As `docker pull` names it: `docker.io/library/nginx`, `ghcr.io/org/app`; no registry
    /// host means the default upstream.
    pub image: String,
    /// A regular expression the whole tag is searched with (`^1\\.2[0-9]\\.`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tags: String,
    /// A semantic-version requirement (`>=1.25, <2`); tags that are no version (after an
    /// optional `v`, with missing minor/patch taken as 0) never match.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub semver: String,
    /// `os/arch[/variant]` of an index to pull; empty: every platform.
    #[serde(default)]
    pub platforms: Vec<String>,
    #[serde(default = "default_prefetch_interval")]
    pub interval_secs: u64,
    /// Also pull the images' referrers (signatures, SBOMs, attestations).
    #[serde(default)]
    pub referrers: bool,
    /// Never evict what this rule pulled (while the rule is configured).
    #[serde(default)]
    pub pin: bool,
    /// The most tags pulled per pass: the highest versions (else the last, lexically).
    #[serde(default = "default_prefetch_max_tags")]
    pub max_tags: usize,
}

fn default_prefetch_interval() -> u64 {
    3600
}

fn default_prefetch_max_tags() -> usize {
    20
}

impl PrefetchRule {
    /// An image and exactly one of `tags` and `semver`; positive interval and tag count.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.image.is_empty() || self.tags.is_empty() == self.semver.is_empty() {
            return invalid(format!(
                "[[prefetch]] {:?}: name the image and exactly one of tags and semver",
                self.image
            ));
        }
        if self.interval_secs == 0 || self.max_tags == 0 {
            return invalid(format!(
                "[[prefetch]] {:?}: interval_secs and max_tags must be positive",
                self.image
            ));
        }
        Ok(())
    }
}
