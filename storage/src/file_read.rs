//! Positioned file reads for streamed responses, cheap when the bytes are in the page cache.
//!
//! tokio's `File` sends every read to its blocking pool (two thread hand-offs) and copies from
//! its own buffer into the chunk that is sent (a third copy). Here a read first tries
//! `preadv2(RWF_NOWAIT)` on the calling worker thread, which the kernel answers only from the
//! page cache, and goes to the blocking pool only when the bytes would come from the disk.
//! Reads land in pooled buffers that become the sent [`Bytes`] and return to the pool once
//! hyper has written them: no copy in user space, no fresh allocation per chunk.

use std::fs::File;
use std::io::{self, IoSliceMut};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::Stream;
use rustix::io::{Errno, ReadWriteFlags};

/// Size of one read and one pooled buffer. 1 MiB: fewer reads and wake-ups per GB (A/B runs in
/// BENCHMARKS.md), and still a short stretch of work on a runtime thread (tens of µs).
pub const CHUNK: usize = 1024 * 1024;

/// Idle buffers kept for reuse: beyond this, returned buffers are freed, so a burst of readers
/// does not leave its memory behind.
const MAX_IDLE: usize = 16;

/// Set once the kernel or filesystem refuses `RWF_NOWAIT`: every read then uses the blocking
/// pool, as tokio's `File` would.
static NOWAIT_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

static IDLE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// The bytes of `file` from `start` for `len` bytes, in chunks of at most [`CHUNK`]. A file
/// shorter than announced ends the stream with `UnexpectedEof`.
pub fn chunks(
    file: Arc<File>,
    start: u64,
    len: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let state = (file, start, start.saturating_add(len));
    futures::stream::try_unfold(state, |(file, pos, end)| async move {
        if pos >= end {
            return Ok(None);
        }
        let chunk = read_at(&file, pos, end - pos).await?;
        if chunk.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shorter than announced",
            ));
        }
        let next = pos + chunk.len() as u64;
        Ok(Some((chunk, (file, next, end))))
    })
}

/// Up to `max` bytes (at most [`CHUNK`]) of `file` at `offset`; empty at the end of the file.
pub async fn read_at(file: &Arc<File>, offset: u64, max: u64) -> io::Result<Bytes> {
    let mut buf = PooledBuf::take();
    let max = usize::try_from(max).map_or(CHUNK, |max| max.min(CHUNK));
    if !NOWAIT_UNSUPPORTED.load(Ordering::Relaxed) {
        let cached = rustix::io::preadv2(
            &**file,
            &mut [IoSliceMut::new(&mut buf.bytes[..max])],
            offset,
            ReadWriteFlags::NOWAIT,
        );
        match cached {
            Ok(n) => {
                buf.filled = n;
                return Ok(buf.into_bytes());
            }
            // Not (all) in the page cache: the disk has to be waited for.
            Err(Errno::AGAIN) => {}
            Err(Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => {
                NOWAIT_UNSUPPORTED.store(true, Ordering::Relaxed);
            }
            Err(e) => return Err(e.into()),
        }
    }
    let file = Arc::clone(file);
    tokio::task::spawn_blocking(move || {
        let n = file.read_at(&mut buf.bytes[..max], offset)?;
        buf.filled = n;
        Ok(buf.into_bytes())
    })
    .await
    .map_err(io::Error::other)?
}

/// Whether the first and last byte of `len` bytes at `offset` are in the page cache: a cheap
/// guess that sending them will not wait for the disk (readahead fills a range in order).
/// False when the kernel cannot tell (no `RWF_NOWAIT`).
pub fn is_cached(file: &File, offset: u64, len: u64) -> bool {
    if len == 0 || NOWAIT_UNSUPPORTED.load(Ordering::Relaxed) {
        return false;
    }
    let mut byte = [0u8; 1];
    [offset, offset + (len - 1)].into_iter().all(|at| {
        matches!(
            rustix::io::preadv2(
                file,
                &mut [IoSliceMut::new(&mut byte)],
                at,
                ReadWriteFlags::NOWAIT,
            ),
            Ok(1)
        )
    })
}

/// A [`CHUNK`]-sized buffer that goes back to the pool when the last `Bytes` of it is dropped.
struct PooledBuf {
    bytes: Vec<u8>,
    filled: usize,
}

impl PooledBuf {
    fn take() -> PooledBuf {
        let reused = IDLE.lock().ok().and_then(|mut idle| idle.pop());
        PooledBuf {
            bytes: reused.unwrap_or_else(|| vec![0; CHUNK]),
            filled: 0,
        }
    }

    fn into_bytes(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.filled]
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if self.bytes.len() != CHUNK {
            return;
        }
        if let Ok(mut idle) = IDLE.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(std::mem::take(&mut self.bytes));
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;

    use super::*;

    fn file_with(content: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut tmp = tempfile::NamedTempFile::new().expect("temp file");
        std::io::Write::write_all(&mut tmp, content).expect("write");
        let file = File::open(tmp.path()).expect("open");
        (tmp, file)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn chunks_return_exactly_the_range_asked_for() {
        let content = pattern(3 * CHUNK + 123);
        for (start, len) in [
            (0, content.len()),
            (5, CHUNK),
            (CHUNK - 1, 2),
            (content.len() - 1, 1),
            (7, 0),
        ] {
            let (_tmp, file) = file_with(&content);
            let got: Vec<Bytes> = chunks(Arc::new(file), start as u64, len as u64)
                .try_collect()
                .await
                .expect("read");
            assert!(got.iter().all(|c| !c.is_empty() && c.len() <= CHUNK));
            assert_eq!(got.concat(), content[start..start + len], "{start}+{len}");
        }
    }

    #[tokio::test]
    async fn a_file_shorter_than_announced_is_an_error_not_a_short_body() {
        let content = pattern(1000);
        let (_tmp, file) = file_with(&content);
        let got: Result<Vec<Bytes>, _> = chunks(Arc::new(file), 0, 2000).try_collect().await;
        let err = got.expect_err("short file must fail");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn buffers_kept_by_a_slow_consumer_are_not_overwritten_by_later_reads() {
        let content = pattern(4 * CHUNK);
        let (_tmp, file) = file_with(&content);
        // Hold every chunk: each must own its buffer while later reads reuse the pool.
        let held: Vec<Bytes> = chunks(Arc::new(file), 0, content.len() as u64)
            .try_collect()
            .await
            .expect("read");
        let (_tmp2, other) = file_with(&vec![0xee; 2 * CHUNK]);
        let _reused: Vec<Bytes> = chunks(Arc::new(other), 0, 2 * CHUNK as u64)
            .try_collect()
            .await
            .expect("read");
        assert_eq!(held.concat(), content);
    }
}
