//! The spool writer: a download's bytes batched into its local file and announced to readers.

use std::path::Path;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::*;

/// The spool file being written: bytes batched, then written and announced to readers.
pub(super) struct SpoolWriter<'a> {
    file: tokio::fs::File,
    batch: BytesMut,
    written: u64,
    progress: &'a watch::Sender<Progress>,
}

impl<'a> SpoolWriter<'a> {
    pub(super) async fn create(
        path: &Path,
        progress: &'a watch::Sender<Progress>,
    ) -> std::io::Result<SpoolWriter<'a>> {
        Ok(SpoolWriter {
            file: tokio::fs::File::create(path).await?,
            batch: BytesMut::with_capacity(WRITE_BATCH),
            written: 0,
            progress,
        })
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
        let written = self.written;
        self.progress.send_modify(|p| p.written = written);
        Ok(())
    }
}
