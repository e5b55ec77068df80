//! `[fetch]`: how a cold blob comes from its upstream: one stream, or ranges fetched side by
//! side (a long path gives one TCP stream only a share of the link).

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// How cold blobs are fetched from an upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FetchConfig {
    /// A blob larger than this many MiB is fetched as ranges of this size (the first one
    /// tells whether the upstream answers ranges at all). Also the size of a random read's
    /// own request when a client asks for bytes the fill has not reached.
    pub chunk_mib: u64,
    /// Range requests in flight for one blob at once (1: one stream, as before).
    pub parallel: usize,
    /// Range requests for pieces after the first in flight to one upstream at once, over all
    /// its blobs (a download's first request counts against `limits.max_downloads`): beyond
    /// it, a download goes on with the ranges it already has under way.
    pub upstream_connections: usize,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            chunk_mib: 16,
            parallel: 4,
            upstream_connections: 32,
        }
    }
}

impl FetchConfig {
    /// The chunk size in bytes.
    pub fn chunk_bytes(&self) -> u64 {
        self.chunk_mib.saturating_mul(1024 * 1024)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=1024).contains(&self.chunk_mib) {
            return Err(ConfigError::Invalid(
                "fetch.chunk_mib must be between 1 and 1024".into(),
            ));
        }
        if !(1..=32).contains(&self.parallel) {
            return Err(ConfigError::Invalid(
                "fetch.parallel must be between 1 and 32".into(),
            ));
        }
        if !(1..=1024).contains(&self.upstream_connections) {
            return Err(ConfigError::Invalid(
                "fetch.upstream_connections must be between 1 and 1024".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_settings_are_refused() {
        assert!(FetchConfig::default().validate().is_ok());
        for bad in [
            FetchConfig {
                chunk_mib: 0,
                ..FetchConfig::default()
            },
            FetchConfig {
                parallel: 0,
                ..FetchConfig::default()
            },
            FetchConfig {
                upstream_connections: 0,
                ..FetchConfig::default()
            },
            FetchConfig {
                parallel: 33,
                ..FetchConfig::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert_eq!(FetchConfig::default().chunk_bytes(), 16 * 1024 * 1024);
    }
}
