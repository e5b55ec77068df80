//! Local-disk backend: one file per object under `<root>/`, written to `<root>/.tmp` first and
//! renamed into place, so a crash never leaves a partial object under a final name.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;
use wharf_core::ByteRange;

use crate::{
    BlobStore, ByteSource, FileSpan, ObjectInfo, ObjectKey, ObjectReader, StoreError, file_read,
};

pub struct FsStore {
    root: PathBuf,
    tmp: PathBuf,
    counter: AtomicU64,
}

impl FsStore {
    /// Open (creating) a store rooted at `root`. `.tmp` is emptied: what a crash left there
    /// was never placed under a final name.
    pub async fn open(root: impl Into<PathBuf>) -> Result<FsStore, StoreError> {
        let root = root.into();
        let tmp = root.join(".tmp");
        if tokio::fs::try_exists(&tmp).await.unwrap_or(false) {
            tokio::fs::remove_dir_all(&tmp)
                .await
                .map_err(|e| StoreError::io(tmp.display(), e))?;
        }
        tokio::fs::create_dir_all(&tmp)
            .await
            .map_err(|e| StoreError::io(tmp.display(), e))?;
        Ok(FsStore {
            root,
            tmp,
            counter: AtomicU64::new(0),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn file(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.path())
    }

    fn temp_name(&self) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.tmp.join(format!("{}-{n}", std::process::id()))
    }

    async fn place(&self, key: &ObjectKey, from: &Path) -> Result<(), StoreError> {
        let dest = self.file(key);
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| StoreError::io(key, e))?;
        }
        match tokio::fs::rename(from, &dest).await {
            Ok(()) => Ok(()),
            // The spool may sit on another filesystem: copy beside the target, then rename.
            Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
                let tmp = self.temp_name();
                let (source, copy) = (from.to_path_buf(), tmp.clone());
                // Copied and made durable before it gets its final name.
                tokio::task::spawn_blocking(move || {
                    std::fs::copy(&source, &copy)?;
                    std::fs::File::open(&copy)?.sync_all()
                })
                .await
                .map_err(|e| StoreError::io(key, std::io::Error::other(e)))?
                .map_err(|e| StoreError::io(key, e))?;
                tokio::fs::rename(&tmp, &dest)
                    .await
                    .map_err(|e| StoreError::io(key, e))?;
                let _ = tokio::fs::remove_file(from).await;
                Ok(())
            }
            Err(e) => Err(StoreError::io(key, e)),
        }
    }
}

fn not_found_is_none<T>(r: std::io::Result<T>) -> std::io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl BlobStore for FsStore {
    async fn stat(&self, key: &ObjectKey) -> Result<Option<u64>, StoreError> {
        let meta = not_found_is_none(tokio::fs::metadata(self.file(key)).await)
            .map_err(|e| StoreError::io(key, e))?;
        Ok(meta.map(|m| m.len()))
    }

    async fn read(
        &self,
        key: &ObjectKey,
        range: Option<ByteRange>,
    ) -> Result<Option<ObjectReader>, StoreError> {
        let path = self.file(key);
        // One blocking-pool hand-off for open and size together.
        let opened = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(path)?;
            let size = file.metadata()?.len();
            Ok((file, size))
        })
        .await
        .map_err(|e| StoreError::io(key, std::io::Error::other(e)))?;
        let Some((file, size)) = not_found_is_none(opened).map_err(|e| StoreError::io(key, e))?
        else {
            return Ok(None);
        };
        let (start, len) = match range {
            Some(r) => (r.start, r.len()),
            None => (0, size),
        };
        let file = Arc::new(file);
        let name = key.to_string();
        let stream = file_read::chunks(Arc::clone(&file), start, len)
            .map_err(move |e| StoreError::io(&name, e))
            .boxed();
        Ok(Some(ObjectReader {
            size,
            stream,
            file: Some(FileSpan { file, start, len }),
        }))
    }

    async fn read_small(&self, key: &ObjectKey) -> Result<Option<Bytes>, StoreError> {
        let body = not_found_is_none(tokio::fs::read(self.file(key)).await)
            .map_err(|e| StoreError::io(key, e))?;
        Ok(body.map(Bytes::from))
    }

    async fn put_small(&self, key: &ObjectKey, body: Bytes) -> Result<(), StoreError> {
        let tmp = self.temp_name();
        tokio::fs::write(&tmp, &body)
            .await
            .map_err(|e| StoreError::io(key, e))?;
        let placed = self.place(key, &tmp).await;
        if placed.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        placed
    }

    async fn put_file(&self, key: &ObjectKey, file: &Path) -> Result<(), StoreError> {
        self.place(key, file).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        not_found_is_none(tokio::fs::remove_file(self.file(key)).await)
            .map_err(|e| StoreError::io(key, e))?;
        Ok(())
    }

    async fn put_stream(&self, key: &ObjectKey, mut body: ByteSource) -> Result<(), StoreError> {
        let tmp = self.temp_name();
        let written = async {
            let mut file = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| StoreError::io(key, e))?;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| StoreError::Source {
                    key: key.to_string(),
                    message: e.to_string(),
                })?;
                file.write_all(&chunk)
                    .await
                    .map_err(|e| StoreError::io(key, e))?;
            }
            file.sync_data().await.map_err(|e| StoreError::io(key, e))
        }
        .await;
        let placed = match written {
            Ok(()) => self.place(key, &tmp).await,
            Err(e) => Err(e),
        };
        if placed.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        placed
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let root = self.root.clone();
        let start = root.join(prefix);
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut dirs = vec![start];
            while let Some(dir) = dirs.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(StoreError::io(dir.display(), e)),
                };
                for entry in entries.flatten() {
                    let Ok(meta) = entry.metadata() else { continue };
                    let path = entry.path();
                    if meta.is_dir() {
                        dirs.push(path);
                    } else if let Ok(relative) = path.strip_prefix(&root) {
                        out.push(ObjectInfo {
                            path: relative.to_string_lossy().into_owned(),
                            size: meta.len(),
                            modified: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
                        });
                    }
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::io(prefix, std::io::Error::other(e)))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::exercise_store;

    #[tokio::test]
    async fn fs_store_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path().join("store")).await.unwrap();
        let spool = dir.path().join("spool-file");
        exercise_store(&store, &spool).await;
        // Nothing is left behind in the temp area.
        let mut tmp = tokio::fs::read_dir(dir.path().join("store/.tmp"))
            .await
            .unwrap();
        assert!(tmp.next_entry().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn leftovers_in_tmp_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        std::fs::create_dir_all(root.join(".tmp")).unwrap();
        std::fs::write(root.join(".tmp/123-0"), b"half an object").unwrap();
        let _store = FsStore::open(&root).await.unwrap();
        assert_eq!(std::fs::read_dir(root.join(".tmp")).unwrap().count(), 0);
    }
}
