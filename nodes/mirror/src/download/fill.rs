//! The ranged fill: a large blob fetched as pieces side by side, each written at its offset in
//! the spool, while the digest is computed over the bytes from 0 on as they close up. Pieces a
//! reader waits for ahead of the fill are fetched at once, as requests of their own.

use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, FuturesUnordered};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::error;
use wharf_core::{DigestHasher, OciCode};
use wharf_storage::file_read;

use super::leader::Leader;
use super::*;

/// Bytes `first..=last` of the blob, from its source.
pub type RangeFetch = Arc<
    dyn Fn(u64, u64) -> BoxFuture<'static, Result<BoxStream<'static, UpstreamBody>, MirrorError>>
        + Send
        + Sync,
>;

/// A source that answers ranges, and how to use it.
pub struct Ranged {
    /// Where the first piece (the first response's body) ends.
    pub first_end: u64,
    /// The size of a piece.
    pub chunk: u64,
    /// Pieces in flight at once for the fill; as many again for readers ahead of it.
    pub parallel: usize,
    pub fetch: RangeFetch,
    /// The source's range requests in flight, over all its blobs.
    pub connections: Arc<Semaphore>,
}

/// Why a piece is fetched: next in line, or because a reader waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Fill = 0,
    Wanted = 1,
}

impl Leader {
    /// Fetch a blob of `size` bytes whose first piece is `first`; its verified size, or why it
    /// is not to be trusted.
    pub(super) async fn fill(
        &self,
        first: BoxStream<'static, UpstreamBody>,
        size: u64,
        ranged: Ranged,
    ) -> Result<u64, MirrorError> {
        if let Some(max) = self.max_blob.filter(|max| size > *max) {
            return Err(self.too_large(max));
        }
        tokio::fs::File::create(&self.download.spool_path)
            .await
            .map_err(|e| self.spool_error(e))?;
        *self.download.plan() = Some(FillPlan::new(size, ranged.chunk, ranged.first_end));
        self.stats.metrics.ranged_fill();
        self.stats.metrics.range_piece(false);
        let mut pieces = FuturesUnordered::new();
        pieces.push(self.piece(Kind::Fill, 0, ranged.first_end, Some(first), None, &ranged));
        let mut in_flight = [1usize, 0];
        let hash = self.hash_spool(size);
        tokio::pin!(hash);
        let mut hashed = false;
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut unread_since = None;
        loop {
            self.schedule(&mut pieces, &mut in_flight, &ranged).await;
            if hashed && pieces.is_empty() {
                return Ok(size);
            }
            tokio::select! {
                Some((kind, result)) = pieces.next() => {
                    in_flight[kind as usize] = in_flight[kind as usize].saturating_sub(1);
                    result?;
                }
                result = &mut hash, if !hashed => {
                    result?;
                    hashed = true;
                }
                _ = self.download.wanted.notified() => {}
                _ = tick.tick() => self.check_wanted(&mut unread_since)?,
            }
        }
    }

    /// Start pieces while there are slots: first those readers wait for, then the next ones.
    async fn schedule<'a>(
        &'a self,
        pieces: &mut FuturesUnordered<PieceFuture<'a>>,
        in_flight: &mut [usize; 2],
        ranged: &'a Ranged,
    ) {
        loop {
            let kind = {
                let plan = self.download.plan();
                let Some(plan) = plan.as_ref() else { return };
                if in_flight[Kind::Wanted as usize] < ranged.parallel && plan.has_wanted() {
                    Kind::Wanted
                } else if in_flight[Kind::Fill as usize] < ranged.parallel && plan.has_pending() {
                    Kind::Fill
                } else {
                    return;
                }
            };
            let permit = match ranged.connections.clone().try_acquire_owned() {
                Ok(permit) => permit,
                // With nothing in flight, wait: the upstream's other downloads give slots back.
                Err(_) if pieces.is_empty() => {
                    match ranged.connections.clone().acquire_owned().await {
                        Ok(permit) => permit,
                        Err(_) => return,
                    }
                }
                Err(_) => return,
            };
            let claimed = {
                let mut plan = self.download.plan();
                let Some(plan) = plan.as_mut() else { return };
                match kind {
                    Kind::Wanted => plan.next_wanted(),
                    Kind::Fill => plan.claim_next(),
                }
            };
            let Some((start, end)) = claimed else {
                continue;
            };
            self.stats.metrics.range_piece(kind == Kind::Wanted);
            in_flight[kind as usize] += 1;
            pieces.push(self.piece(kind, start, end, None, Some(permit), ranged));
        }
    }

    fn piece<'a>(
        &'a self,
        kind: Kind,
        start: u64,
        end: u64,
        first: Option<BoxStream<'static, UpstreamBody>>,
        permit: Option<OwnedSemaphorePermit>,
        ranged: &'a Ranged,
    ) -> PieceFuture<'a> {
        Box::pin(async move {
            let result = self.fetch_piece(start, end, first, ranged).await;
            drop(permit);
            (kind, result)
        })
    }

    /// Fetch `[start, end)` into the spool at `start`, resuming where its body breaks off.
    async fn fetch_piece(
        &self,
        start: u64,
        end: u64,
        first: Option<BoxStream<'static, UpstreamBody>>,
        ranged: &Ranged,
    ) -> Result<(), MirrorError> {
        let digest = &self.download.digest;
        let last = end.saturating_sub(1);
        let stream = match first {
            Some(stream) => stream,
            None => (ranged.fetch)(start, last).await?,
        };
        let (fetch, stats) = (ranged.fetch.clone(), self.stats.clone());
        let resume: Resume = Box::new(move |offset| {
            stats.upstream_resumes.fetch_add(1, Ordering::Relaxed);
            stats.metrics.upstream_resume();
            fetch(offset, last)
        });
        let mut body = ResumingBody::new(stream, Some(resume));
        let announce = |filled| self.announce_piece(start, filled);
        let mut spool = SpoolWriter::at(&self.download.spool_path, start, announce)
            .await
            .map_err(|e| self.spool_error(e))?;
        let len = end.saturating_sub(start);
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = body.next_chunk(start.saturating_add(spool.received()), digest);
            tokio::pin!(next);
            let chunk = loop {
                tokio::select! {
                    biased;
                    chunk = &mut next => break chunk,
                    _ = tick.tick() => spool.flush().await.map_err(|e| self.spool_error(e))?,
                }
            };
            let chunk = match chunk {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    let upstream = &self.download.origin.upstream;
                    return Err(MirrorError::upstream(upstream, e, OciCode::BlobUnknown));
                }
            };
            if spool.received().saturating_add(chunk.len() as u64) > len {
                return Err(self.mismatch("more bytes than the range asked for"));
            }
            spool.push(&chunk).await.map_err(|e| self.spool_error(e))?;
        }
        spool.flush().await.map_err(|e| self.spool_error(e))?;
        if spool.received() != len {
            return Err(self.mismatch("fewer bytes than the range asked for"));
        }
        Ok(())
    }

    /// `filled` bytes of the piece at `start` are in the spool: tell readers and the hasher.
    fn announce_piece(&self, start: u64, filled: u64) {
        let prefix = {
            let mut plan = self.download.plan();
            let Some(plan) = plan.as_mut() else { return };
            plan.filled(start, filled);
            plan.prefix()
        };
        self.tx.send_modify(|p| p.written = prefix);
    }

    /// Hash the spool from 0 on as its bytes close up; fails on a digest mismatch.
    async fn hash_spool(&self, size: u64) -> Result<(), MirrorError> {
        let digest = &self.download.digest;
        let mut progress = self.tx.subscribe();
        let path = self.download.spool_path.clone();
        let file = tokio::task::spawn_blocking(move || std::fs::File::open(path))
            .await
            .map_err(|_| MirrorError::internal("opening the download spool failed"))?
            .map_err(|e| self.spool_error(e))?;
        let file = Arc::new(file);
        let mut hasher = DigestHasher::new(digest.algorithm());
        let mut hashed = 0u64;
        while hashed < size {
            let prefix = progress.borrow_and_update().written;
            if prefix > hashed {
                let bytes = file_read::read_at(&file, hashed, prefix - hashed)
                    .await
                    .map_err(|e| self.spool_error(e))?;
                if bytes.is_empty() {
                    return Err(MirrorError::internal(
                        "download spool shorter than announced",
                    ));
                }
                hasher.update(&bytes);
                hashed = hashed.saturating_add(bytes.len() as u64);
                continue;
            }
            if progress.changed().await.is_err() {
                return Err(MirrorError::internal(
                    "the blob download stopped unexpectedly",
                ));
            }
        }
        if hasher.finish() != *digest {
            return Err(self.mismatch("a blob"));
        }
        Ok(())
    }

    fn spool_error(&self, e: std::io::Error) -> MirrorError {
        error!(digest = %self.download.digest, error = %e, "spool write failed");
        MirrorError::internal("writing the download spool failed")
    }
}

type PieceFuture<'a> = BoxFuture<'a, (Kind, Result<(), MirrorError>)>;
