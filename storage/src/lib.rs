//! The content-addressed object store behind wharf's cache.
//!
//! Objects are immutable blobs and manifests named by digest, plus small mutable tag records.
//! Backends: [`fs::FsStore`] (local disk, the embedded default) and [`mem::MemStore`] (unit
//! tests); the S3 backend implements the same [`BlobStore`] trait, and [`hot::HotCache`] keeps
//! a bounded local-disk copy of warm S3 blobs in front of it. Callers only ever put
//! content they have verified, so every object under a final key is trusted when read back.

pub mod contract;
pub mod file_read;
pub mod fs;
pub mod hot;
pub mod key;
pub mod mem;
pub mod s3;
pub mod timeout;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use wharf_core::ByteRange;

pub use key::ObjectKey;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage I/O on {key}: {source}")]
    Io {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("S3 {operation} {key}: {message}")]
    S3 {
        operation: &'static str,
        key: String,
        message: String,
    },
    /// The body handed to `put_stream` failed (download aborted, digest mismatch): not stored.
    #[error("source of {key} failed: {message}")]
    Source { key: String, message: String },
    /// The backend did not answer (or stopped making progress) in time; a retry may help.
    #[error("storage {operation} {key}: no answer within {after:?}")]
    Timeout {
        operation: &'static str,
        key: String,
        after: std::time::Duration,
    },
}

impl StoreError {
    /// Whether asking again later may succeed (the backend was slow or unreachable), as
    /// opposed to a refusal that will repeat.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Timeout { .. } | StoreError::S3 { .. } | StoreError::Io { .. }
        )
    }

    pub fn io(key: impl std::fmt::Display, source: std::io::Error) -> StoreError {
        StoreError::Io {
            key: key.to_string(),
            source,
        }
    }
}

/// A streamed object body; `size` is the full object size, whatever range was asked for.
pub struct ObjectReader {
    pub size: u64,
    pub stream: BoxStream<'static, Result<Bytes, StoreError>>,
    /// The same bytes as a range of an open local file, when the backend keeps objects as
    /// files: the edge can then send them with `sendfile` instead of reading `stream`.
    pub file: Option<FileSpan>,
}

/// A byte range of an open, immutable local file.
#[derive(Clone, Debug)]
pub struct FileSpan {
    pub file: Arc<std::fs::File>,
    pub start: u64,
    pub len: u64,
}

/// Where cached content lives. Implementations must make every put atomic: a reader sees the
/// whole object or none of it, never a part.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Size of an object, or `None` when it is not stored.
    async fn stat(&self, key: &ObjectKey) -> Result<Option<u64>, StoreError>;

    /// Stream an object, or the inclusive `range` of it.
    async fn read(
        &self,
        key: &ObjectKey,
        range: Option<ByteRange>,
    ) -> Result<Option<ObjectReader>, StoreError>;

    /// Read a small object (manifest, tag record) whole.
    async fn read_small(&self, key: &ObjectKey) -> Result<Option<Bytes>, StoreError>;

    /// Store a small object, replacing any earlier one atomically.
    async fn put_small(&self, key: &ObjectKey, body: Bytes) -> Result<(), StoreError>;

    /// Take a verified file from the local download spool and store it under `key`.
    /// The file is consumed (moved, or uploaded then removed).
    async fn put_file(&self, key: &ObjectKey, file: &Path) -> Result<(), StoreError>;

    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError>;

    /// Whether every node of a cluster sees the same objects (S3), so that a blob one node
    /// stores need not be stored again by the others.
    fn shared(&self) -> bool {
        false
    }

    /// Remote stores take blobs while they download ([`BlobStore::put_stream`]); local disk
    /// takes the verified spool file at the end ([`BlobStore::put_file`], a rename).
    fn streams_writes(&self) -> bool {
        false
    }

    /// Store a body as it streams. The object becomes visible only if the stream ends without
    /// error; callers end it only after verifying the digest, so an error aborts the write.
    async fn put_stream(&self, key: &ObjectKey, body: ByteSource) -> Result<(), StoreError>;

    /// Every stored object under `prefix` (a layout folder such as `blobs/`), for eviction.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError>;

    /// The same objects a page at a time, as the backend returns them (S3: 1,000 keys), so a
    /// deadline can apply to each page rather than to a listing of millions. By default one
    /// page holding everything [`BlobStore::list`] returns.
    fn list_pages<'a>(&'a self, prefix: &'a str) -> ListPages<'a> {
        futures::stream::once(self.list(prefix)).boxed()
    }

    /// A time-limited URL a client may fetch the object from directly (CDN-origin mode).
    async fn presigned_url(
        &self,
        _key: &ObjectKey,
        _expires: std::time::Duration,
    ) -> Result<Option<String>, StoreError> {
        Ok(None)
    }
}

/// A body for [`BlobStore::put_stream`].
pub type ByteSource = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// A listing, page by page.
pub type ListPages<'a> = BoxStream<'a, Result<Vec<ObjectInfo>, StoreError>>;

/// Every page of a listing, in one list.
pub async fn collect_pages(mut pages: ListPages<'_>) -> Result<Vec<ObjectInfo>, StoreError> {
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        out.extend(page?);
    }
    Ok(out)
}

/// What [`BlobStore::list`] reports of an object.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    /// Path relative to the store's root or prefix, as [`ObjectKey::path`] makes it.
    pub path: String,
    pub size: u64,
    /// When it was written.
    pub modified: std::time::SystemTime,
}
