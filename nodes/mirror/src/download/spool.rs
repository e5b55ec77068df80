//! The spool writer: a download's bytes (or one piece's) batched into its local file and
//! announced to readers.

use std::path::Path;

use bytes::BytesMut;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::*;

/// The spool file being written from one offset on: bytes batched, then written and announced
/// (`announce` gets how many bytes from that offset on are in the file).
pub(super) struct SpoolWriter<A: FnMut(u64)> {
    file: tokio::fs::File,
    batch: BytesMut,
    written: u64,
    announce: A,
}

impl<A: FnMut(u64)> SpoolWriter<A> {
    /// A new, empty spool file written from its start.
    pub(super) async fn create(path: &Path, announce: A) -> std::io::Result<SpoolWriter<A>> {
        Ok(SpoolWriter::new(
            tokio::fs::File::create(path).await?,
            announce,
        ))
    }

    /// The existing spool file, written from `offset` on (a piece of a ranged fill).
    pub(super) async fn at(
        path: &Path,
        offset: u64,
        announce: A,
    ) -> std::io::Result<SpoolWriter<A>> {
        let mut file = tokio::fs::OpenOptions::new().write(true).open(path).await?;
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        Ok(SpoolWriter::new(file, announce))
    }

    fn new(file: tokio::fs::File, announce: A) -> SpoolWriter<A> {
        SpoolWriter {
            file,
            batch: BytesMut::with_capacity(WRITE_BATCH),
            written: 0,
            announce,
        }
    }

    /// Bytes received: written and batched.
    pub(super) fn received(&self) -> u64 {
        self.written + self.batch.len() as u64
    }

    pub(super) async fn push(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.batch.extend_from_slice(chunk);
        if self.batch.len() >= WRITE_BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    /// Write the batch and tell readers it is there.
    pub(super) async fn flush(&mut self) -> std::io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.file.write_all(&self.batch).await?;
        self.file.flush().await?;
        self.written += self.batch.len() as u64;
        self.batch.clear();
        (self.announce)(self.written);
        Ok(())
    }
}
