//! What can go wrong in the cluster layer.

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster state in {path}: {source}")]
    State {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("starting Raft: {0}")]
    Start(String),
    /// No leader is known, or it could not be reached in time: there is no quorum to ask.
    #[error("no quorum: {0}")]
    NoQuorum(String),
    /// Another membership change is being committed; try again shortly.
    #[error("membership change in progress: {0}")]
    Busy(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("peer {addr}: {message}")]
    Peer { addr: String, message: String },
}

impl ClusterError {
    pub fn peer(addr: &str, message: impl std::fmt::Display) -> ClusterError {
        ClusterError::Peer {
            addr: addr.to_string(),
            message: message.to_string(),
        }
    }
}
