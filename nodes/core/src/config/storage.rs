//! `[s3]`, `[hot_cache]`, `[eviction]` and `[cache]`: where content is kept, the local copy of
//! warm S3 blobs, what is deleted when, and how long answers are trusted.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// S3 settings; credentials, region and endpoint come from the standard AWS chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// Path-style addressing, for S3-compatible servers (Garage, MinIO, Ceph, moto).
    pub path_style: bool,
    /// CDN-origin mode: answer cached blob GETs with 307 to a presigned S3 URL.
    pub redirect_blobs: bool,
    /// Lifetime of those presigned URLs.
    pub presign_expiry_secs: u64,
    /// Redirect to `<this>/<object key>` instead of a presigned URL: a CDN over the bucket
    /// that signs (or needs no) URLs of its own, e.g. a CloudFront distribution with OAC.
    pub redirect_base_url: String,
}

/// A bounded local-disk copy of warm S3 blobs on each node, sent with `sendfile`; never the
/// source of truth (deleting it loses nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HotCacheConfig {
    /// MiB of local copies at most, least recently used dropped first; 0: off.
    pub max_size_mib: u64,
    /// Where the copies live; relative paths are under `data_dir`.
    pub dir: PathBuf,
    /// How often copies of blobs deleted from S3 by another node are looked for (one listing
    /// of the bucket's blobs); the longest a node may serve a blob evicted elsewhere.
    pub check_interval_secs: u64,
}

impl Default for HotCacheConfig {
    fn default() -> Self {
        HotCacheConfig {
            max_size_mib: 0,
            dir: PathBuf::from("hot"),
            check_interval_secs: 60,
        }
    }
}

/// Keeping the store within bounds: least recently used blobs go first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvictionConfig {
    /// Blob bytes kept at most, in MiB; 0 = no quota.
    pub max_size_mib: u64,
    /// Blobs not requested for this long are deleted; 0 = never.
    pub max_idle_secs: u64,
    /// How often eviction runs (and access times are persisted).
    pub interval_secs: u64,
    /// Blobs written more recently than this are never deleted.
    pub min_age_secs: u64,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            path_style: false,
            redirect_blobs: false,
            presign_expiry_secs: 600,
            redirect_base_url: String::new(),
        }
    }
}

impl Default for EvictionConfig {
    fn default() -> Self {
        EvictionConfig {
            max_size_mib: 0,
            max_idle_secs: 0,
            interval_secs: 300,
            min_age_secs: 600,
        }
    }
}

/// What `storage` selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageTarget {
    LocalDisk(PathBuf),
    S3 { bucket: String, prefix: String },
}

/// How long mutable answers may be served without asking the upstream again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// A tag's digest is served without revalidation for this long.
    pub tag_ttl_secs: u64,
    /// A `tags/list` answer is served from memory for this long.
    pub tags_list_ttl_secs: u64,
    /// Memory for manifest bodies and the content index, in MiB.
    pub memory_index_mib: u64,
    /// `max-age` of `404` answers for caches in front of wharf (a CDN); 0: `no-store`, like
    /// every other error.
    pub not_found_max_age_secs: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            tag_ttl_secs: 60,
            tags_list_ttl_secs: 30,
            memory_index_mib: 128,
            not_found_max_age_secs: 0,
        }
    }
}

impl S3Config {
    /// Redirects only from S3; a CDN base URL only with redirects, and never with auth
    /// (`restricted`): wharf cannot sign CDN URLs.
    pub(super) fn validate(
        &self,
        target: &StorageTarget,
        restricted: bool,
    ) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.redirect_blobs && !matches!(target, StorageTarget::S3 { .. }) {
            return invalid("s3.redirect_blobs needs s3:// storage".into());
        }
        let base = &self.redirect_base_url;
        if !base.is_empty()
            && (!self.redirect_blobs
                || !(base.starts_with("https://") || base.starts_with("http://")))
        {
            return invalid(
                "s3.redirect_base_url is an http(s):// URL and needs redirect_blobs".into(),
            );
        }
        if !base.is_empty() && restricted {
            // wharf cannot sign CDN URLs: anyone holding a digest would get a private blob.
            return invalid(
                "s3.redirect_base_url hands out unsigned URLs, which would bypass [auth] and [[access]]: with auth on, use presigned redirects (redirect_blobs without redirect_base_url) or none".into(),
            );
        }
        Ok(())
    }
}

impl HotCacheConfig {
    /// A hot tier only in front of S3, and checked at least every second.
    pub(super) fn validate(&self, target: &StorageTarget) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.max_size_mib > 0 {
            if !matches!(target, StorageTarget::S3 { .. }) {
                return invalid("hot_cache needs s3:// storage (local disk is hot already)".into());
            }
            if self.check_interval_secs == 0 {
                return invalid("hot_cache.check_interval_secs must be at least 1".into());
            }
        }
        Ok(())
    }
}

impl EvictionConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.interval_secs == 0 {
            return invalid("eviction.interval_secs must be at least 1".into());
        }
        Ok(())
    }
}
