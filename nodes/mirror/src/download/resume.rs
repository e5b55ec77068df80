//! The resuming upstream body: a body that broke off is asked for again from the next byte.

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use tracing::warn;
use wharf_core::Digest;

use super::*;

/// An upstream body that, when it breaks off, asks its source for the rest with a range
/// request, as long as each attempt brings bytes ([`MAX_RESUMES`] breaks in a row without
/// any fail it).
pub(super) struct ResumingBody {
    stream: BoxStream<'static, UpstreamBody>,
    resume: Option<Resume>,
    /// Breaks since bytes last came.
    resumes: u32,
    resumed_at: u64,
}

impl ResumingBody {
    pub(super) fn new(
        stream: BoxStream<'static, UpstreamBody>,
        resume: Option<Resume>,
    ) -> ResumingBody {
        ResumingBody {
            stream,
            resume,
            resumes: 0,
            resumed_at: 0,
        }
    }

    /// The next chunk; `received` is how many bytes came before it.
    pub(super) async fn next_chunk(
        &mut self,
        received: u64,
        digest: &Digest,
    ) -> Result<Option<Bytes>, wharf_upstream::UpstreamError> {
        loop {
            let e = match self.stream.next().await {
                None => return Ok(None),
                Some(Ok(chunk)) => return Ok(Some(chunk)),
                Some(Err(e)) => e,
            };
            if received > self.resumed_at {
                // Bytes came since the last break: a flaky link, not a dead one.
                self.resumes = 0;
            }
            let Some(resume) = self.resume.as_ref().filter(|_| self.resumes < MAX_RESUMES) else {
                return Err(e);
            };
            self.resumes += 1;
            self.resumed_at = received;
            warn!(%digest, offset = received, error = %e, attempt = self.resumes, "blob download broke off; resuming");
            self.stream = match resume(received).await {
                Ok(stream) => stream,
                Err(resumed) => {
                    warn!(%digest, error = %resumed, "resuming failed");
                    return Err(e);
                }
            };
        }
    }
}
