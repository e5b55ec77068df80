//! gRPC contracts between wharf nodes, generated from `proto/wharf/cluster/v1/*.proto`.
//!
//! Kept apart from the cluster logic so that the wire format is reviewed in one place and
//! other tools (a status page, an operator CLI) can speak it without linking openraft.

#![allow(clippy::unwrap_used)] // generated code

/// `wharf.cluster.v1`: Raft transport, admin, leases and blob streaming.
pub mod v1 {
    tonic::include_proto!("wharf.cluster.v1");
}
