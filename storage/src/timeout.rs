//! A store decorator that bounds every call: a backend that stops answering (an S3 endpoint
//! that accepts connections and never replies, a hung network filesystem) fails the call with
//! [`StoreError::Timeout`] instead of holding a request, a download and its cluster lease
//! forever. Streams are bounded per chunk, and a streamed upload by how long the backend holds
//! a chunk it was handed (time spent waiting for the source's bytes does not count).

use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use wharf_core::ByteRange;

use crate::{BlobStore, ByteSource, ObjectInfo, ObjectKey, ObjectReader, StoreError};

pub struct TimeoutStore {
    inner: Arc<dyn BlobStore>,
    limit: Duration,
}

impl TimeoutStore {
    pub fn new(inner: Arc<dyn BlobStore>, limit: Duration) -> TimeoutStore {
        TimeoutStore { inner, limit }
    }

    async fn bounded<T>(
        &self,
        operation: &'static str,
        key: impl std::fmt::Display,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.limit, call)
            .await
            .unwrap_or_else(|_| Err(self.timeout(operation, key)))
    }

    fn timeout(&self, operation: &'static str, key: impl std::fmt::Display) -> StoreError {
        StoreError::Timeout {
            operation,
            key: key.to_string(),
            after: self.limit,
        }
    }
}

#[async_trait]
impl BlobStore for TimeoutStore {
    async fn stat(&self, key: &ObjectKey) -> Result<Option<u64>, StoreError> {
        self.bounded("stat", key, self.inner.stat(key)).await
    }

    async fn read(
        &self,
        key: &ObjectKey,
        range: Option<ByteRange>,
    ) -> Result<Option<ObjectReader>, StoreError> {
        let reader = self
            .bounded("read", key, self.inner.read(key, range))
            .await?;
        let (limit, name) = (self.limit, key.to_string());
        Ok(reader.map(|r| ObjectReader {
            stream: ChunkDeadline::new(r.stream, limit, name).boxed(),
            ..r
        }))
    }

    async fn read_small(&self, key: &ObjectKey) -> Result<Option<Bytes>, StoreError> {
        self.bounded("read", key, self.inner.read_small(key)).await
    }

    async fn put_small(&self, key: &ObjectKey, body: Bytes) -> Result<(), StoreError> {
        self.bounded("put", key, self.inner.put_small(key, body))
            .await
    }

    async fn put_file(&self, key: &ObjectKey, file: &Path) -> Result<(), StoreError> {
        // A local rename, or an upload of a whole file: bounded by the backend's own progress
        // (the S3 client's per-attempt timeouts), not by a deadline on the whole blob.
        self.inner.put_file(key, file).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        self.bounded("delete", key, self.inner.delete(key)).await
    }

    fn shared(&self) -> bool {
        self.inner.shared()
    }

    fn streams_writes(&self) -> bool {
        self.inner.streams_writes()
    }

    async fn put_stream(&self, key: &ObjectKey, body: ByteSource) -> Result<(), StoreError> {
        let turn = Arc::new(Mutex::new(StoreTurn::default()));
        let body = Watched {
            inner: body,
            turn: turn.clone(),
        }
        .boxed();
        let upload = self.inner.put_stream(key, body);
        let watchdog = async {
            loop {
                tokio::time::sleep(self.limit / 4).await;
                let held = turn.lock().unwrap_or_else(|p| p.into_inner()).held_for();
                if held.is_some_and(|held| held >= self.limit) {
                    return self.timeout("upload", key);
                }
            }
        };
        tokio::select! {
            result = upload => result,
            timeout = watchdog => Err(timeout),
        }
    }

    /// Each page within the limit, not the whole listing: a bucket of millions of blobs lists
    /// as long as it takes while every page keeps coming.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        crate::collect_pages(self.list_pages(prefix)).await
    }

    fn list_pages<'a>(&'a self, prefix: &'a str) -> crate::ListPages<'a> {
        let limit = self.limit;
        futures::stream::unfold(self.inner.list_pages(prefix), move |mut pages| async move {
            match tokio::time::timeout(limit, pages.next()).await {
                Ok(Some(page)) => Some((page, pages)),
                Ok(None) => None,
                Err(_) => {
                    let timeout = StoreError::Timeout {
                        operation: "list page",
                        key: prefix.to_string(),
                        after: limit,
                    };
                    // End the listing after reporting it: one error, no endless retry.
                    let ended: crate::ListPages<'a> = futures::stream::empty().boxed();
                    Some((Err(timeout), ended))
                }
            }
        })
        .boxed()
    }

    async fn presigned_url(
        &self,
        key: &ObjectKey,
        expires: Duration,
    ) -> Result<Option<String>, StoreError> {
        self.bounded("presign", key, self.inner.presigned_url(key, expires))
            .await
    }
}

/// Whose move it is in a streamed upload: the backend's since it took a chunk (or the end),
/// the source's while the backend waits for bytes.
#[derive(Default)]
struct StoreTurn {
    /// When the backend last took something from the body and has not asked again since.
    since: Option<Instant>,
}

impl StoreTurn {
    fn held_for(&self) -> Option<Duration> {
        self.since.map(|t| t.elapsed())
    }
}

struct Watched {
    inner: ByteSource,
    turn: Arc<Mutex<StoreTurn>>,
}

impl Stream for Watched {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let poll = self.inner.poll_next_unpin(cx);
        let mut turn = self.turn.lock().unwrap_or_else(|p| p.into_inner());
        turn.since = poll.is_ready().then(Instant::now);
        drop(turn);
        poll
    }
}

/// A read stream whose every chunk must come within `limit`.
struct ChunkDeadline {
    inner: futures::stream::BoxStream<'static, Result<Bytes, StoreError>>,
    limit: Duration,
    key: String,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl ChunkDeadline {
    fn new(
        inner: futures::stream::BoxStream<'static, Result<Bytes, StoreError>>,
        limit: Duration,
        key: String,
    ) -> ChunkDeadline {
        ChunkDeadline {
            inner,
            limit,
            key,
            sleep: None,
        }
    }
}

impl Stream for ChunkDeadline {
    type Item = Result<Bytes, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Poll::Ready(item) = self.inner.poll_next_unpin(cx) {
            self.sleep = None;
            return Poll::Ready(item);
        }
        let limit = self.limit;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if sleep.as_mut().poll(cx).is_ready() {
            self.sleep = None;
            return Poll::Ready(Some(Err(StoreError::Timeout {
                operation: "read",
                key: self.key.clone(),
                after: limit,
            })));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::MemStore;

    /// A backend whose every call hangs.
    struct Hung;

    #[async_trait]
    impl BlobStore for Hung {
        async fn stat(&self, _: &ObjectKey) -> Result<Option<u64>, StoreError> {
            std::future::pending().await
        }
        async fn read(
            &self,
            _: &ObjectKey,
            _: Option<ByteRange>,
        ) -> Result<Option<ObjectReader>, StoreError> {
            std::future::pending().await
        }
        async fn read_small(&self, _: &ObjectKey) -> Result<Option<Bytes>, StoreError> {
            std::future::pending().await
        }
        async fn put_small(&self, _: &ObjectKey, _: Bytes) -> Result<(), StoreError> {
            std::future::pending().await
        }
        async fn put_file(&self, _: &ObjectKey, _: &Path) -> Result<(), StoreError> {
            std::future::pending().await
        }
        async fn delete(&self, _: &ObjectKey) -> Result<(), StoreError> {
            std::future::pending().await
        }
        async fn put_stream(&self, _: &ObjectKey, mut body: ByteSource) -> Result<(), StoreError> {
            // Takes one chunk, then hangs like an UploadPart that never returns.
            let _ = body.next().await;
            std::future::pending().await
        }
        async fn list(&self, _: &str) -> Result<Vec<ObjectInfo>, StoreError> {
            std::future::pending().await
        }
        async fn presigned_url(
            &self,
            _: &ObjectKey,
            _: Duration,
        ) -> Result<Option<String>, StoreError> {
            std::future::pending().await
        }
    }

    fn key() -> ObjectKey {
        ObjectKey::Blob(wharf_core::Digest::sha256_of(b"k"))
    }

    /// Pages of 10 objects, each page 50 ms apart; the 4th page never comes when `hang`.
    struct Paged {
        pages: usize,
        hang: bool,
    }

    #[async_trait]
    impl BlobStore for Paged {
        async fn stat(&self, _: &ObjectKey) -> Result<Option<u64>, StoreError> {
            Ok(None)
        }
        async fn read(
            &self,
            _: &ObjectKey,
            _: Option<ByteRange>,
        ) -> Result<Option<ObjectReader>, StoreError> {
            Ok(None)
        }
        async fn read_small(&self, _: &ObjectKey) -> Result<Option<Bytes>, StoreError> {
            Ok(None)
        }
        async fn put_small(&self, _: &ObjectKey, _: Bytes) -> Result<(), StoreError> {
            Ok(())
        }
        async fn put_file(&self, _: &ObjectKey, _: &Path) -> Result<(), StoreError> {
            Ok(())
        }
        async fn delete(&self, _: &ObjectKey) -> Result<(), StoreError> {
            Ok(())
        }
        async fn put_stream(&self, _: &ObjectKey, _: ByteSource) -> Result<(), StoreError> {
            Ok(())
        }
        async fn list(&self, _: &str) -> Result<Vec<ObjectInfo>, StoreError> {
            unreachable!("listed by pages")
        }
        fn list_pages<'a>(&'a self, _: &'a str) -> crate::ListPages<'a> {
            let hang = self.hang;
            futures::stream::iter(0..self.pages)
                .then(move |page| async move {
                    if hang && page == 3 {
                        std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok((0..10)
                        .map(|i| ObjectInfo {
                            path: format!("blobs/{page}-{i}"),
                            size: 1,
                            modified: std::time::SystemTime::UNIX_EPOCH,
                        })
                        .collect())
                })
                .boxed()
        }
    }

    /// Review #5: the deadline is per page: a listing far longer than the limit completes
    /// while pages keep coming, and a page that never comes fails the listing.
    #[tokio::test]
    async fn listings_are_bounded_per_page_not_in_total() {
        let slow = TimeoutStore::new(
            Arc::new(Paged {
                pages: 12,
                hang: false,
            }),
            Duration::from_millis(200),
        );
        let listed = slow.list("blobs/").await.unwrap();
        assert_eq!(listed.len(), 120, "600 ms of pages under a 200 ms limit");
        let hung = TimeoutStore::new(
            Arc::new(Paged {
                pages: 12,
                hang: true,
            }),
            Duration::from_millis(200),
        );
        assert!(matches!(
            hung.list("blobs/").await,
            Err(StoreError::Timeout { .. })
        ));
    }

    #[tokio::test]
    async fn hung_calls_time_out() {
        let store = TimeoutStore::new(Arc::new(Hung), Duration::from_millis(200));
        assert!(matches!(
            store.stat(&key()).await,
            Err(StoreError::Timeout { .. })
        ));
        assert!(matches!(
            store.list("blobs/").await,
            Err(StoreError::Timeout { .. })
        ));
        let body = futures::stream::iter(vec![Ok(Bytes::from_static(b"part"))]).boxed();
        let started = Instant::now();
        let upload = store.put_stream(&key(), body).await;
        assert!(
            matches!(upload, Err(StoreError::Timeout { .. })),
            "{upload:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_slow_source_is_not_the_stores_fault() {
        let store = TimeoutStore::new(Arc::new(MemStore::default()), Duration::from_millis(200));
        let data = Bytes::from_static(b"slow source");
        let key = ObjectKey::Blob(wharf_core::Digest::sha256_of(&data));
        // The source takes longer than the limit between chunks: the upload still succeeds.
        let body = futures::stream::iter(vec![data.slice(..4), data.slice(4..)])
            .then(|chunk| async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                Ok(chunk)
            })
            .boxed();
        store.put_stream(&key, body).await.unwrap();
        assert_eq!(store.stat(&key).await.unwrap(), Some(data.len() as u64));
    }
}
