//! Outgoing cluster RPCs: one HTTP/2 channel per peer address, shared by Raft replication,
//! lease forwarding and blob streaming.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use wharf_proto::v1::RaftMessage;
use wharf_proto::v1::admin_client::AdminClient;
use wharf_proto::v1::blobs_client::BlobsClient;
use wharf_proto::v1::leases_client::LeasesClient;
use wharf_proto::v1::raft_client::RaftClient;

use crate::auth::{ClusterKey, Prove};
use crate::faults::Faults;
use crate::types::{NodeId, TypeConfig};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A dead peer's stream is noticed within about this long even without a TCP reset.
const KEEPALIVE: Duration = Duration::from_secs(2);

/// A channel to a peer whose every request carries proof of the cluster key.
pub type PeerChannel = InterceptedService<Channel, Prove>;

/// Channels to peers, by `host:port`.
#[derive(Clone)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    faults: Faults,
    prove: Prove,
    /// mTLS towards peers (`[cluster.tls]`), when on.
    tls: Option<ClientTlsConfig>,
    /// When each member last answered one of this node's Raft calls (see `autopilot`);
    /// pruned to the membership by the autopilot.
    contacts: Arc<Mutex<HashMap<NodeId, Instant>>>,
    /// Where Raft round trips are recorded (`wharf_cluster_raft_rtt_seconds`).
    metrics: Arc<wharf_metrics::Metrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cluster network cut off (fault injection)")]
    Isolated,
    #[error("bad peer address {addr:?}: {source}")]
    Address {
        addr: String,
        source: tonic::transport::Error,
    },
}

impl Peers {
    /// Peers proving `key` (none: a cluster without a key) on every call, over mTLS when
    /// `tls` is given.
    pub fn new(faults: Faults, key: Option<ClusterKey>, tls: Option<ClientTlsConfig>) -> Peers {
        Peers {
            channels: Arc::default(),
            faults,
            prove: Prove(key),
            tls,
            contacts: Arc::default(),
            metrics: wharf_metrics::Metrics::detached(),
        }
    }

    /// Record the round trip of every append-entries call (replication and heartbeats) in
    /// `metrics`: the figure `[cluster] heartbeat_ms` is scaled from.
    pub fn with_metrics(mut self, metrics: Arc<wharf_metrics::Metrics>) -> Peers {
        self.metrics = metrics;
        self
    }

    /// When member `id` last answered a Raft call of this node.
    pub fn last_contact(&self, id: NodeId) -> Option<Instant> {
        self.contacts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .copied()
    }

    /// Forget the contacts of nodes no longer members.
    pub fn retain_contacts(&self, members: impl Fn(NodeId) -> bool) {
        self.contacts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, _| members(*id));
    }

    fn contacted(&self, id: NodeId) {
        self.contacts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Instant::now());
    }

    /// Whether fault injection cut this node off.
    pub fn isolated(&self) -> bool {
        self.faults.isolated()
    }

    /// A lazily connecting channel to `addr`, reused across calls.
    pub fn channel(&self, addr: &str) -> Result<PeerChannel, PeerError> {
        if self.faults.isolated() {
            return Err(PeerError::Isolated);
        }
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(InterceptedService::new(channel.clone(), self.prove.clone()));
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let bad_address = |source| PeerError::Address {
            addr: addr.to_string(),
            source,
        };
        let mut endpoint =
            Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(bad_address)?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(bad_address)?;
        }
        let endpoint = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE)
            .keep_alive_timeout(KEEPALIVE)
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(InterceptedService::new(channel, self.prove.clone()))
    }

    pub fn admin(&self, addr: &str) -> Result<AdminClient<PeerChannel>, PeerError> {
        Ok(AdminClient::new(self.channel(addr)?))
    }

    pub fn leases(&self, addr: &str) -> Result<LeasesClient<PeerChannel>, PeerError> {
        Ok(LeasesClient::new(self.channel(addr)?))
    }

    pub fn blobs(&self, addr: &str) -> Result<BlobsClient<PeerChannel>, PeerError> {
        Ok(BlobsClient::new(self.channel(addr)?).max_decoding_message_size(8 * 1024 * 1024))
    }
}

impl RaftNetworkFactory<TypeConfig> for Peers {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            peers: self.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

/// Raft's view of one peer.
pub struct Connection {
    peers: Peers,
    target: NodeId,
    addr: String,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, E>>;

impl Connection {
    /// Send one openraft message as JSON within openraft's deadline for it; decode
    /// `Result<Resp, Err>` from the peer.
    async fn call<Req, Resp, Err>(
        &self,
        kind: Kind,
        request: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, Err>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        Err: std::error::Error + DeserializeOwned,
    {
        let channel = self
            .peers
            .channel(&self.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let json =
            serde_json::to_vec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut client = RaftClient::new(channel);
        let message = RaftMessage { json: json.into() };
        let started = Instant::now();
        let reply = match kind {
            // openraft times append-entries out itself, at the heartbeat interval, and reports
            // a `Timeout`, after which it simply sends the next one. A timeout of ours would
            // be `Unreachable`, which pauses replication to the peer for 500 ms: longer than
            // a follower waits before it calls an election.
            Kind::Append => client.append_entries(message).await,
            Kind::Vote | Kind::Snapshot => {
                let call = async {
                    match kind {
                        Kind::Vote => client.vote(message).await,
                        _ => client.install_snapshot(message).await,
                    }
                };
                let deadline = option.hard_ttl();
                tokio::time::timeout(deadline, call).await.map_err(|_| {
                    let why = std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {deadline:?}"),
                    );
                    RPCError::Unreachable(Unreachable::new(&why))
                })?
            }
        }
        .map_err(|status| match status.code() {
            tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&status)),
            _ => RPCError::Network(NetworkError::new(&status)),
        })?;
        if matches!(kind, Kind::Append) {
            self.peers.metrics.raft_round_trip(started.elapsed());
        }
        // It answered: alive, whatever it said.
        self.peers.contacted(self.target);
        let result: Result<Resp, Err> = serde_json::from_slice(&reply.into_inner().json)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

enum Kind {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        self.call(Kind::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        self.call(Kind::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, RaftError<NodeId>> {
        self.call(Kind::Vote, &rpc, &option).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use openraft::raft::VoteRequest;
    use openraft::{RaftNetwork, Vote};

    use super::*;

    #[tokio::test]
    async fn a_peer_that_accepts_and_never_answers_costs_one_deadline() {
        let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = hung.local_addr().unwrap().to_string();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = hung.accept().await {
                open.push(socket);
            }
        });
        let mut connection = Connection {
            peers: Peers::new(Faults::default(), None, None),
            target: 2,
            addr,
        };
        let started = Instant::now();
        let result = connection
            .vote(
                VoteRequest::new(Vote::new(1, 1), None),
                RPCOption::new(Duration::from_millis(300)),
            )
            .await;
        assert!(result.is_err());
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "took {:?}",
            started.elapsed()
        );
        held.abort();
    }
}
