//! Relay fan-out, receiving side: stream a blob from the node holding its lease, following
//! its redirect to a relay (a node already streaming it from there) for a few hops at most,
//! and resume a stream that breaks from the byte it broke at, at another of the nodes known to
//! have the blob (the holder last asked must serve: it never redirects a resume). The bytes
//! are the same wherever they come from; this node's download verifies the digest over all
//! of them before anything is stored, as it does for one unbroken stream.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tonic::Streaming;
use tracing::{debug, info};
use wharf_core::{Digest, OciCode};
use wharf_mirror::MirrorError;
use wharf_proto::v1::{BlobChunk, FetchRequest};
use wharf_upstream::{BlobResponse, UpstreamError};

use crate::node::ClusterNode;

/// Redirects followed before the holder is asked to serve itself.
const MAX_HOPS: usize = 3;
/// A broken stream is resumed at most this many times.
const MAX_RESUMES: usize = 4;

/// Why the lease holder did not give us a stream.
pub(crate) enum PeerFailure {
    /// The blob cannot be had (the upstream refused it there): tell the client.
    Refused(MirrorError),
    /// The holder is unreachable, or not (yet, or any more) fetching: ask again.
    Retry(String),
}

/// What a node answered a fetch with.
enum Opened {
    Stream {
        size: Option<u64>,
        first: Bytes,
        rest: Box<Streaming<BlobChunk>>,
    },
    Redirect(Vec<String>),
}

/// Ask the node at `addr` for `digest` from `offset`.
async fn open(
    node: &ClusterNode,
    addr: &str,
    digest: &Digest,
    offset: u64,
    accept_relay: bool,
) -> Result<Opened, PeerFailure> {
    let mut client = node
        .peers
        .blobs(addr)
        .map_err(|e| PeerFailure::Retry(e.to_string()))?;
    let request = FetchRequest {
        digest: digest.to_string(),
        offset,
        relay_addr: node.addr.clone(),
        accept_relay,
    };
    let mut stream = client.fetch(request).await.map_err(classify)?.into_inner();
    let head = stream
        .message()
        .await
        .map_err(classify)?
        .ok_or_else(|| PeerFailure::Retry("empty stream".into()))?;
    if !head.relays.is_empty() {
        return Ok(Opened::Redirect(head.relays));
    }
    Ok(Opened::Stream {
        size: head.size,
        first: head.data,
        rest: Box::new(stream),
    })
}

/// Stream `digest` from the lease holder at `holder`, or from the relay it sends us to.
pub(crate) async fn fetch_from_peer(
    node: &Arc<ClusterNode>,
    holder: &str,
    digest: &Digest,
) -> Result<BlobResponse, PeerFailure> {
    // Every node known to have the blob, the holder first: where a broken stream resumes.
    let mut sources = vec![holder.to_string()];
    let mut target = holder.to_string();
    let mut hops = 0;
    let (size, first, rest) = loop {
        let accept_relay = hops < MAX_HOPS;
        match open(node, &target, digest, 0, accept_relay).await {
            Ok(Opened::Stream { size, first, rest }) => break (size, first, rest),
            Ok(Opened::Redirect(relays)) => {
                hops += 1;
                let relays: Vec<String> = relays.into_iter().filter(|r| *r != node.addr).collect();
                for relay in &relays {
                    if !sources.contains(relay) {
                        sources.push(relay.clone());
                    }
                }
                debug!(%digest, from = %target, relays = ?relays, "sent to a relay");
                target = match relays.first() {
                    Some(relay) => relay.clone(),
                    // Only ourselves named: the holder serves.
                    None => {
                        hops = MAX_HOPS;
                        holder.to_string()
                    }
                };
            }
            Err(failure) if target != holder => {
                // The relay cannot serve (done, gone, failed): the holder serves.
                let why = match failure {
                    PeerFailure::Refused(e) => e.to_string(),
                    PeerFailure::Retry(why) => why,
                };
                debug!(%digest, relay = %target, why, "relay unusable; back to the holder");
                hops = MAX_HOPS;
                target = holder.to_string();
            }
            Err(e) => return Err(e),
        }
    };
    let offset = first.len() as u64;
    let resuming = Resuming {
        node: node.clone(),
        digest: digest.clone(),
        sources,
        from: target,
        rest,
        offset,
        resumes: 0,
        pending: None,
        done: false,
    };
    let body = futures::stream::iter([Ok(first)])
        .chain(futures::stream::unfold(resuming, Resuming::next))
        .filter(|chunk| futures::future::ready(!matches!(chunk, Ok(b) if b.is_empty())));
    Ok(BlobResponse {
        size,
        stream: body.boxed(),
    })
}

/// A peer stream that resumes at another source when it breaks.
struct Resuming {
    node: Arc<ClusterNode>,
    digest: Digest,
    sources: Vec<String>,
    /// The node streaming now.
    from: String,
    rest: Box<Streaming<BlobChunk>>,
    /// Bytes received so far.
    offset: u64,
    resumes: usize,
    /// Bytes a resumed stream's first message carried, yielded next.
    pending: Option<Bytes>,
    done: bool,
}

impl Resuming {
    async fn next(mut self) -> Option<(Result<Bytes, UpstreamError>, Resuming)> {
        if self.done {
            return None;
        }
        loop {
            if let Some(bytes) = self.pending.take() {
                return Some((Ok(bytes), self));
            }
            let failure = match self.rest.message().await {
                Ok(Some(chunk)) => {
                    self.offset = self.offset.saturating_add(chunk.data.len() as u64);
                    return Some((Ok(chunk.data), self));
                }
                Ok(None) => return None,
                Err(status) => status,
            };
            if self.resumes >= MAX_RESUMES || !self.resume().await {
                self.done = true;
                let error = UpstreamError::Failed(format!(
                    "peer {} stopped streaming: {}",
                    self.from,
                    failure.message()
                ));
                return Some((Err(error), self));
            }
        }
    }

    /// Reopen at the byte the stream broke at, at the first other source that serves it (the
    /// one that broke last). Whether one did.
    async fn resume(&mut self) -> bool {
        self.resumes += 1;
        let mut order: Vec<String> = self
            .sources
            .iter()
            .filter(|s| **s != self.from)
            .cloned()
            .collect();
        order.push(self.from.clone());
        for source in order {
            match open(&self.node, &source, &self.digest, self.offset, false).await {
                Ok(Opened::Stream { first, rest, .. }) => {
                    info!(digest = %self.digest, broken = %self.from, resumed = %source, offset = self.offset, "peer stream resumed at another node");
                    self.node.metrics.peer_resume();
                    self.offset = self.offset.saturating_add(first.len() as u64);
                    self.from = source;
                    self.rest = rest;
                    if !first.is_empty() {
                        self.pending = Some(first);
                    }
                    return true;
                }
                Ok(Opened::Redirect(_)) | Err(_) => continue,
            }
        }
        false
    }
}

fn classify(status: tonic::Status) -> PeerFailure {
    let message = status.message().to_string();
    match status.code() {
        tonic::Code::NotFound => {
            PeerFailure::Refused(MirrorError::not_found(OciCode::BlobUnknown, message))
        }
        tonic::Code::PermissionDenied => PeerFailure::Refused(MirrorError::denied(message)),
        tonic::Code::ResourceExhausted => PeerFailure::Refused(MirrorError::RateLimited {
            message,
            retry_after: None,
        }),
        tonic::Code::DeadlineExceeded => PeerFailure::Refused(MirrorError::TimedOut { message }),
        _ => PeerFailure::Retry(format!("{:?}: {}", status.code(), status.message())),
    }
}
