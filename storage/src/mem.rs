//! In-memory backend for unit tests of the layers above the store.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use wharf_core::ByteRange;

use crate::{BlobStore, ByteSource, ObjectInfo, ObjectKey, ObjectReader, StoreError};

#[derive(Default)]
pub struct MemStore {
    objects: Mutex<HashMap<String, Bytes>>,
}

impl MemStore {
    fn get(&self, key: &ObjectKey) -> Option<Bytes> {
        let objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        objects.get(&key.path()).cloned()
    }

    fn set(&self, key: &ObjectKey, body: Option<Bytes>) {
        let mut objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        match body {
            Some(b) => objects.insert(key.path(), b),
            None => objects.remove(&key.path()),
        };
    }
}

#[async_trait]
impl BlobStore for MemStore {
    async fn stat(&self, key: &ObjectKey) -> Result<Option<u64>, StoreError> {
        Ok(self.get(key).map(|b| b.len() as u64))
    }

    async fn read(
        &self,
        key: &ObjectKey,
        range: Option<ByteRange>,
    ) -> Result<Option<ObjectReader>, StoreError> {
        Ok(self.get(key).map(|body| {
            let size = body.len() as u64;
            let part = match range {
                Some(r) => body.slice(r.start as usize..=r.end as usize),
                None => body,
            };
            ObjectReader {
                size,
                stream: futures::stream::once(async move { Ok(part) }).boxed(),
            }
        }))
    }

    async fn read_small(&self, key: &ObjectKey) -> Result<Option<Bytes>, StoreError> {
        Ok(self.get(key))
    }

    async fn put_small(&self, key: &ObjectKey, body: Bytes) -> Result<(), StoreError> {
        self.set(key, Some(body));
        Ok(())
    }

    async fn put_file(&self, key: &ObjectKey, file: &Path) -> Result<(), StoreError> {
        let body = tokio::fs::read(file)
            .await
            .map_err(|e| StoreError::io(key, e))?;
        let _ = tokio::fs::remove_file(file).await;
        self.set(key, Some(body.into()));
        Ok(())
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        self.set(key, None);
        Ok(())
    }

    async fn put_stream(&self, key: &ObjectKey, body: ByteSource) -> Result<(), StoreError> {
        let chunks: Vec<Bytes> = body.try_collect().await.map_err(|e| StoreError::Source {
            key: key.to_string(),
            message: e.to_string(),
        })?;
        self.set(key, Some(chunks.concat().into()));
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        Ok(objects
            .iter()
            .filter(|(path, _)| path.starts_with(prefix))
            .map(|(path, body)| ObjectInfo {
                path: path.clone(),
                size: body.len() as u64,
                modified: std::time::SystemTime::now(),
            })
            .collect())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use futures::TryStreamExt;
    use wharf_core::Digest;

    use super::*;

    async fn read_all(store: &dyn BlobStore, key: &ObjectKey, range: Option<ByteRange>) -> Vec<u8> {
        let reader = store.read(key, range).await.unwrap().unwrap();
        let chunks: Vec<Bytes> = reader.stream.try_collect().await.unwrap();
        chunks.concat()
    }

    /// The behaviour every backend must show; run by each backend's tests.
    pub(crate) async fn exercise_store(store: &dyn BlobStore, spool_file: &Path) {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let key = ObjectKey::Blob(Digest::sha256_of(&data));
        assert_eq!(store.stat(&key).await.unwrap(), None);
        assert!(store.read(&key, None).await.unwrap().is_none());

        tokio::fs::write(spool_file, &data).await.unwrap();
        store.put_file(&key, spool_file).await.unwrap();
        assert!(!spool_file.exists(), "spool file consumed");
        assert_eq!(store.stat(&key).await.unwrap(), Some(data.len() as u64));
        assert_eq!(read_all(store, &key, None).await, data);
        let range = ByteRange {
            start: 10,
            end: 500_009,
        };
        assert_eq!(
            read_all(store, &key, Some(range)).await,
            &data[10..=500_009]
        );

        let tag = ObjectKey::Tag {
            upstream: "docker.io".into(),
            repo: "library/x".parse().unwrap(),
            tag: "latest".parse().unwrap(),
        };
        store
            .put_small(&tag, Bytes::from_static(b"one"))
            .await
            .unwrap();
        store
            .put_small(&tag, Bytes::from_static(b"two"))
            .await
            .unwrap();
        assert_eq!(store.read_small(&tag).await.unwrap().unwrap(), "two");

        let listed = store.list("blobs/").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].path, key.path());
        assert_eq!(listed[0].size, data.len() as u64);

        store.delete(&key).await.unwrap();
        store.delete(&key).await.unwrap();
        assert_eq!(store.stat(&key).await.unwrap(), None);

        // Streamed writes: visible only when the stream ends cleanly.
        let streamed = ObjectKey::Blob(Digest::sha256_of(b"streamed"));
        let failing: ByteSource = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"part")),
            Err(std::io::Error::other("digest mismatch")),
        ])
        .boxed();
        assert!(store.put_stream(&streamed, failing).await.is_err());
        assert_eq!(store.stat(&streamed).await.unwrap(), None);
        let chunks: Vec<Result<Bytes, std::io::Error>> = data
            .chunks(100_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        store
            .put_stream(&streamed, futures::stream::iter(chunks).boxed())
            .await
            .unwrap();
        assert_eq!(read_all(store, &streamed, None).await, data);
        store.delete(&streamed).await.unwrap();
    }

    #[tokio::test]
    async fn mem_store_contract() {
        let dir = tempfile::tempdir().unwrap();
        exercise_store(&MemStore::default(), &dir.path().join("f")).await;
    }
}
