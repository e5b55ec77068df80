//! Who fetches a cold blob from the upstream: the seam between a node and its cluster.
//!
//! Within a node, [`crate::download::Downloads`] already makes one fetch per digest. A cluster
//! adds a [`FetchCoordinator`] in front of it, so that one *node* fetches and the others stream
//! its in-flight bytes. A single node has none and always fetches itself.

use async_trait::async_trait;
use serde::Serialize;
use wharf_core::Digest;
use wharf_upstream::BlobResponse;

use crate::error::MirrorError;

/// Held by the node fetching a blob for the cluster; dropping it gives the claim up (after the
/// blob was stored, or when the fetch failed).
pub trait FetchLease: Send + Sync {}

/// The outcome of asking the cluster for a cold blob.
pub enum Claim {
    /// Fetch it from the upstream. `Some` while this node holds the cluster's lease; `None` when
    /// there is no cluster, or no quorum to ask (each node then fetches for itself).
    Fetch(Option<Box<dyn FetchLease>>),
    /// Another node fetches it: its bytes as they arrive there, or why it could not be had.
    /// They are verified here again before anything is released or stored.
    Peer(Result<BlobResponse, MirrorError>),
}

/// A cluster's view of coordination, for `/health`.
#[derive(Debug, Clone, Serialize)]
pub struct CoordinatorHealth {
    /// False while cold blobs are fetched without the cluster's agreement (no quorum).
    pub ok: bool,
    pub node_id: u64,
    pub leader_id: Option<u64>,
    pub members: usize,
    /// Cold blobs fetched without a lease because the cluster had no quorum.
    pub fallbacks: u64,
    /// The Raft term this node is in.
    pub term: u64,
    /// Fetch leases this node holds now.
    pub leases_held: usize,
    /// Every member: its role and when it last answered this node.
    pub roster: Vec<MemberHealth>,
}

/// One member as this node sees it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberHealth {
    pub id: u64,
    pub addr: String,
    /// `voter` or `learner`.
    pub role: &'static str,
    /// Milliseconds since it last answered one of this node's Raft calls; `None` for this node
    /// and for members it does not call (a follower calls only when it campaigns).
    pub last_contact_ms: Option<u64>,
    /// `ok`, `unreachable` (silent past the autopilot's reachability window) or `unknown`.
    pub health: &'static str,
}

/// Decides which node fetches a cold blob.
#[async_trait]
pub trait FetchCoordinator: Send + Sync {
    async fn claim(&self, digest: &Digest) -> Claim;
    fn health(&self) -> CoordinatorHealth;
}
