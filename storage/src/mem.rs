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
                file: None,
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
mod tests {
    use super::*;

    #[tokio::test]
    async fn mem_store_contract() {
        let dir = tempfile::tempdir().unwrap();
        crate::contract::exercise_store(&MemStore::default(), &dir.path().join("f")).await;
    }
}
