//! openraft's type configuration for wharf, and the commands its log carries.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// A node's identity in the Raft group; random, kept in `<data_dir>/cluster/node.json`.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// wharf's Raft: lease commands in, lease answers out, members addressed by host:port.
    pub TypeConfig:
        D = LeaseCommand,
        R = LeaseAnswer,
        NodeId = NodeId,
        Node = openraft::BasicNode,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type StorageResult<T> = Result<T, openraft::StorageError<NodeId>>;

/// A change to the lease table. `now_ms` is the leader's wall clock when it proposed the
/// command: every replica applies expiry against the same instant, so they agree on it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LeaseCommand {
    pub digest: String,
    pub node: NodeId,
    pub now_ms: u64,
    pub op: LeaseOp,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum LeaseOp {
    /// Take the lease if free or expired.
    Acquire {
        /// Where peers stream the blob from while this node fetches it.
        addr: String,
        ttl_ms: u64,
    },
    /// Extend the lease if still held with `token`.
    Renew { token: u64, ttl_ms: u64 },
    /// Give the lease up if still held with `token`.
    Release { token: u64 },
}

/// Who holds a lease after a command.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LeaseAnswer {
    /// True when the commanding node holds (or, for a release, held) the lease.
    pub held: bool,
    /// The holder; 0 when nobody does.
    pub owner: NodeId,
    pub owner_addr: String,
    pub token: u64,
}
