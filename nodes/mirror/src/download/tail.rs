//! The tail reader: a client's view of a download, bytes as they become readable, from the
//! spool file or, once moved, from the store.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::watch;
use wharf_core::ByteRange;
use wharf_storage::{BlobStore, ObjectKey, file_read};

use super::*;

/// Stream `range` (or all) of a download's bytes as they become readable, for a client.
pub fn tail(
    download: Arc<Download>,
    range: Option<ByteRange>,
    store: Arc<dyn BlobStore>,
) -> BoxStream<'static, Result<Bytes, std::io::Error>> {
    tail_reader(download, range, store, true)
}

/// As [`tail`]; `counted`: a client or peer (whose leaving may let the download go), not the
/// store's own upload.
pub(super) fn tail_reader(
    download: Arc<Download>,
    range: Option<ByteRange>,
    store: Arc<dyn BlobStore>,
    counted: bool,
) -> BoxStream<'static, Result<Bytes, std::io::Error>> {
    if counted {
        download.readers.fetch_add(1, Ordering::AcqRel);
    }
    let reader = TailReader {
        counted,
        progress: download.progress(),
        download,
        store,
        file: None,
        pos: range.map_or(0, |r| r.start),
        whole: range.is_none_or(|r| r.start == 0),
        end_exclusive: range.map(|r| r.end + 1),
        fallback: None,
    };
    futures::stream::unfold(reader, |mut reader| async move {
        reader.next_chunk().await.map(|chunk| (chunk, reader))
    })
    .boxed()
}

struct TailReader {
    counted: bool,
    download: Arc<Download>,
    progress: watch::Receiver<Progress>,
    store: Arc<dyn BlobStore>,
    file: Option<Arc<std::fs::File>>,
    pos: u64,
    /// Reads from the blob's first byte on: may be taken for the whole blob, so its last byte
    /// waits for verification. A range from further on is a piece that only the client that
    /// puts all pieces together can verify; it gets every byte as soon as it is there.
    whole: bool,
    end_exclusive: Option<u64>,
    /// Set when the spool file was already moved into the store.
    fallback: Option<BoxStream<'static, Result<Bytes, wharf_storage::StoreError>>>,
}

impl Drop for TailReader {
    fn drop(&mut self) {
        if self.counted {
            self.download.readers.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl TailReader {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        loop {
            if let Some(fallback) = &mut self.fallback {
                return fallback
                    .next()
                    .await
                    .map(|r| r.map_err(std::io::Error::other));
            }
            let progress = self.progress.borrow_and_update().clone();
            let verified = match &progress.phase {
                Phase::Failed(e) => {
                    return Some(Err(std::io::Error::other(e.to_string())));
                }
                Phase::Verified | Phase::Stored { .. } => true,
                _ => false,
            };
            // A ranged fill may have bytes here ahead of the prefix (and is asked for them
            // when it has none).
            let there = match verified {
                true => progress.written,
                false => self
                    .download
                    .readable_from(self.pos)
                    .map_or(progress.written, |end| end.max(progress.written)),
            };
            // Hold back the last byte until the digest has verified.
            let readable = match (verified || !self.whole, progress.size) {
                (true, _) | (false, None) => there,
                (false, Some(size)) => there.min(size.saturating_sub(1)),
            };
            let mut stop = self.end_exclusive.unwrap_or(u64::MAX);
            if verified {
                stop = stop.min(progress.written);
            }
            if self.pos >= stop {
                return None;
            }
            if self.pos < readable {
                return Some(self.read(readable.min(stop)).await);
            }
            if self.progress.changed().await.is_err() {
                // The leader is gone: only a final phase lets the loop go on.
                let phase = self.progress.borrow().phase.clone();
                if !matches!(phase, Phase::Stored { .. } | Phase::Failed(_)) {
                    return Some(Err(std::io::Error::other("download abandoned")));
                }
            }
        }
    }

    async fn read(&mut self, limit: u64) -> Result<Bytes, std::io::Error> {
        let file = match &self.file {
            Some(file) => Arc::clone(file),
            None => {
                let path = self.download.spool_path.clone();
                match tokio::task::spawn_blocking(move || std::fs::File::open(path))
                    .await
                    .map_err(std::io::Error::other)?
                {
                    Ok(file) => Arc::clone(self.file.insert(Arc::new(file))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return self.switch_to_store().await;
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let chunk = file_read::read_at(&file, self.pos, limit - self.pos).await?;
        if chunk.is_empty() {
            return Err(std::io::Error::other("spool file shorter than announced"));
        }
        self.pos += chunk.len() as u64;
        Ok(chunk)
    }

    /// The spool file was renamed into the store between our progress check and opening it.
    async fn switch_to_store(&mut self) -> Result<Bytes, std::io::Error> {
        let progress = self
            .progress
            .wait_for(Phase::is_final)
            .await
            .map_err(|_| std::io::Error::other("download abandoned"))?
            .clone();
        if !matches!(progress.phase, Phase::Stored { ok: true }) {
            return Err(std::io::Error::other("download spool vanished"));
        }
        let end = self
            .end_exclusive
            .unwrap_or(progress.written)
            .min(progress.written);
        let range = ByteRange {
            start: self.pos,
            end: end.saturating_sub(1),
        };
        let key = ObjectKey::Blob(self.download.digest.clone());
        let reader = self
            .store
            .read(&key, Some(range))
            .await
            .map_err(std::io::Error::other)?
            .ok_or_else(|| std::io::Error::other("stored blob vanished"))?;
        self.pos = end;
        let mut stream = reader.stream;
        let first = stream.next().await;
        self.fallback = Some(stream);
        match first {
            Some(chunk) => chunk.map_err(std::io::Error::other),
            None => Ok(Bytes::new()),
        }
    }
}
