//! The content-addressed object store behind wharf's cache.
//!
//! Objects are immutable blobs and manifests named by digest, plus small mutable tag records.
//! Backends: [`fs::FsStore`] (local disk, the embedded default) and [`mem::MemStore`] (unit
//! tests); the S3 backend implements the same [`BlobStore`] trait. Callers only ever put
//! content they have verified, so every object under a final key is trusted when read back.

pub mod fs;
pub mod key;
pub mod mem;

use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;
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
}

impl StoreError {
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
}
