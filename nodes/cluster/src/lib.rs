//! The wharf cluster: nodes agree by Raft which of them fetches each cold blob, and stream
//! its in-flight bytes to each other over gRPC, so the upstream serves every blob once per
//! cluster however many nodes and clients ask at once.
//!
//! Module map: [`types`] (openraft config, lease commands) → [`leases`] (the replicated lease
//! table, pure) → [`store`] (Raft log, vote and snapshots on local disk) → [`network`]
//! (outgoing RPCs) and [`server`] (the gRPC endpoint) → [`node`] (one member: leases,
//! membership, forwarding to the leader; `handoff` and `autopilot` extend it) →
//! [`coordinator`] (the pipeline's
//! [`FetchCoordinator`](wharf_mirror::singleflight::FetchCoordinator)), which streams from
//! peers through `peer_stream` (redirects to relays, resumes); `fanout` decides which peers
//! a node serves itself. [`faults`] cuts a node off for partition tests.

pub mod auth;
mod autopilot;
pub mod coordinator;
pub mod error;
mod fanout;
pub mod faults;
mod handoff;
pub mod leases;
pub mod network;
pub mod node;
mod peer_stream;
mod runoff;
pub mod server;
pub mod store;
pub mod tls;
pub mod types;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::{info, warn};
use wharf_core::config::ClusterConfig;
use wharf_mirror::Mirror;
use wharf_proto::v1::admin_server::AdminServer;
use wharf_proto::v1::blobs_server::BlobsServer;
use wharf_proto::v1::leases_server::LeasesServer;
use wharf_proto::v1::raft_server::RaftServer;
use wharf_proto::v1::{StatusReply, StatusRequest};

pub use crate::auth::ClusterKey;
use crate::auth::Verify;
pub use crate::autopilot::member_health;
pub use crate::error::ClusterError;
use crate::faults::Faults;
use crate::network::Peers;
use crate::node::ClusterNode;
use crate::server::Endpoint;
use crate::store::{LogStore, StateMachine};
pub use crate::tls::ClusterTls;
use crate::types::{NodeId, Raft};

/// The lease table is snapshotted, and the log compacted, after this many entries.
pub const SNAPSHOT_EVERY: u64 = 1000;
const NODE_FILE: &str = "node.json";
/// How long a stopping node waits for its in-flight fetches.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping leader waits for its successor to catch up and take over, beyond the
/// leader lease (a leader younger than that must wait it out first).
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a stopping node tries to leave (the last members of a cluster stopping together
/// cannot: no quorum is left to commit it, and they stay members for their restart).
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Raft's timers, all scaled from the heartbeat (`[cluster] heartbeat_ms`, itself chosen from
/// the measured round trip, `wharf_cluster_raft_rtt_seconds`; see ARCHITECTURE.md).
///
/// openraft 0.9 has a follower that knows a leader wait the leader lease (the longest election
/// timeout) *plus* an election timeout after the leader's last heartbeat before it campaigns,
/// and refuse other candidates' votes for the lease. So a crashed leader is replaced
/// 10–12 heartbeats after its last one, and only a silence that long causes an election:
/// with the default 50 ms, 0.5–0.6 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
}

impl RaftTiming {
    /// Election timeouts of 4–6 heartbeats (at least 10 ms each).
    pub fn from_heartbeat(heartbeat_ms: u64) -> RaftTiming {
        let heartbeat_ms = heartbeat_ms.max(10);
        RaftTiming {
            heartbeat_ms,
            election_timeout_min_ms: heartbeat_ms.saturating_mul(4),
            election_timeout_max_ms: heartbeat_ms.saturating_mul(6),
        }
    }

    /// How long a member refuses votes after it last heard from a leader (openraft: the
    /// longest election timeout).
    pub fn leader_lease(&self) -> Duration {
        Duration::from_millis(self.election_timeout_max_ms)
    }
}

#[derive(Serialize, Deserialize)]
struct NodeIdentity {
    id: NodeId,
}

/// A running cluster member.
pub struct Cluster {
    pub node: Arc<ClusterNode>,
    mirror: Arc<Mirror>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    stop_server: oneshot::Sender<()>,
    autopilot: JoinHandle<()>,
}

impl Cluster {
    /// Start this node's Raft member and gRPC endpoint on `listener`, bootstrap or join the
    /// cluster, and make `mirror` coordinate cold fetches through it.
    /// `key` (from [`ClusterKey::load`]) is proven on every call this node makes and
    /// demanded of every call it answers.
    pub async fn start(
        config: &ClusterConfig,
        key: Option<ClusterKey>,
        tls: Option<ClusterTls>,
        data_dir: &Path,
        listener: TcpListener,
        mirror: Arc<Mirror>,
    ) -> Result<Cluster, ClusterError> {
        let dir = data_dir.join("cluster");
        let state_error = |source| ClusterError::State {
            path: dir.clone(),
            source,
        };
        let id = node_identity(&dir).map_err(state_error)?;
        let log = LogStore::open(&dir).map_err(state_error)?;
        let state = StateMachine::open(&dir).map_err(state_error)?;
        let faults = Faults::from_env();
        let peers = Peers::new(
            faults.clone(),
            key.clone(),
            tls.as_ref().map(|t| t.client.clone()),
        )
        .with_metrics(mirror.stats.metrics.clone());
        let timing = RaftTiming::from_heartbeat(config.heartbeat_ms);
        let raft_config = openraft::Config {
            cluster_name: "wharf".into(),
            heartbeat_interval: timing.heartbeat_ms,
            election_timeout_min: timing.election_timeout_min_ms,
            election_timeout_max: timing.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY),
            max_in_snapshot_log_to_keep: 100,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ClusterError::Start(e.to_string()))?;
        let raft = Raft::new(id, Arc::new(raft_config), peers.clone(), log, state.clone())
            .await
            .map_err(|e| ClusterError::Start(e.to_string()))?;
        let addr = config.advertised().to_string();
        let node = Arc::new(
            ClusterNode::new(
                id,
                addr.clone(),
                raft.clone(),
                state,
                peers,
                Duration::from_secs(config.lease_ttl_secs),
            )
            .with_leader_lease(timing.leader_lease())
            .with_max_voters(config.max_voters)
            .with_metrics(mirror.stats.metrics.clone()),
        );

        let endpoint = Endpoint {
            node: node.clone(),
            mirror: mirror.clone(),
            faults,
            fanout: fanout::Fanout::new(config.max_peer_streams),
        };
        let (stop_server, stopped) = oneshot::channel::<()>();
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &tls {
            builder = builder
                .tls_config(tls.server.clone())
                .map_err(|e| ClusterError::Start(format!("cluster TLS: {e}")))?;
        }
        let server = tokio::spawn(
            builder
                .tcp_nodelay(true)
                .trace_fn(|request| tracing::info_span!("grpc", path = %request.uri().path()))
                .add_service(RaftServer::with_interceptor(
                    endpoint.clone(),
                    Verify(key.clone()),
                ))
                .add_service(AdminServer::with_interceptor(
                    endpoint.clone(),
                    Verify(key.clone()),
                ))
                .add_service(LeasesServer::with_interceptor(
                    endpoint.clone(),
                    Verify(key.clone()),
                ))
                .add_service(BlobsServer::with_interceptor(endpoint, Verify(key)))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                }),
        );

        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Start(e.to_string()))?;
        // One join list for every member (a StatefulSet, a compose file) may name the member
        // itself: it is skipped, and the first member listed founds the cluster, unless a
        // cluster answers it already (it lost its state and comes back).
        let others: Vec<String> = config
            .join
            .iter()
            .filter(|t| **t != addr)
            .cloned()
            .collect();
        let founder = config.join.first().is_some_and(|first| *first == addr);
        let bootstrap =
            !initialized && (others.is_empty() || (founder && !node.join_once(&others).await));
        if bootstrap {
            info!(node = id, %addr, "bootstrapping a new cluster");
            let members = BTreeMap::from([(id, BasicNode::new(&addr))]);
            if let Err(e) = raft.initialize(members).await {
                warn!(error = %e, "initializing the cluster failed");
            }
        } else {
            // Join (again) through the given members and the ones this node remembers; a
            // member that already counts us is a no-op, one that removed us adds us back.
            let mut targets = others;
            for (_, member_addr, _) in node.members() {
                if member_addr != addr && !targets.contains(&member_addr) {
                    targets.push(member_addr);
                }
            }
            if !targets.is_empty() {
                info!(node = id, %addr, through = ?targets, "joining the cluster");
                tokio::spawn(node.clone().join_through(targets));
            }
        }
        let dead_after = (config.dead_member_timeout_secs > 0)
            .then(|| Duration::from_secs(config.dead_member_timeout_secs));
        let autopilot = tokio::spawn(node.clone().run_autopilot(dead_after));
        mirror
            .blobs
            .set_coordinator(Arc::new(coordinator::Coordinator::new(
                node.clone(),
                mirror.stats.metrics.clone(),
            )));
        Ok(Cluster {
            node,
            mirror,
            server,
            stop_server,
            autopilot,
        })
    }

    /// Finish the fetches peers may be streaming from this node, hand leadership over when
    /// this node leads, leave the membership (so the others need no quorum with this node
    /// while it is away), then stop Raft and the endpoint.
    pub async fn shutdown(self) {
        self.autopilot.abort();
        if !self.mirror.blobs.drain_downloads(DRAIN_TIMEOUT).await {
            warn!("downloads still under way at shutdown; peers streaming them will retry");
        }
        self.node
            .hand_over(self.node.leader_lease + HANDOFF_TIMEOUT)
            .await;
        if let Err(e) = self.node.leave(self.node.id, LEAVE_TIMEOUT).await {
            warn!(error = %e, "leaving the cluster failed; the others keep counting this node");
        }
        if let Err(e) = self.node.raft.shutdown().await {
            warn!(error = %e, "raft shutdown");
        }
        let _ = self.stop_server.send(());
        let _ = self.server.await;
    }
}

/// This node's id: kept in `dir`, created at random on first start.
fn node_identity(dir: &Path) -> std::io::Result<NodeId> {
    use std::hash::{BuildHasher, Hasher};
    std::fs::create_dir_all(dir)?;
    let path = dir.join(NODE_FILE);
    if let Some(bytes) = store::read_optional(&path)? {
        let identity: NodeIdentity =
            serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
        return Ok(identity.id);
    }
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.write_u32(std::process::id());
    // Ids stay below 2^53 so JSON tools show them exactly; 0 means "none" on the wire.
    let id = (hasher.finish() >> 11).max(1);
    let bytes = serde_json::to_vec(&NodeIdentity { id }).map_err(std::io::Error::other)?;
    store::write_atomic(&path, &bytes)?;
    Ok(id)
}

/// Remove node `id` from the membership through the member at `addr` (for a node lost for
/// good: until removed it counts towards the quorum).
pub async fn remove(
    addr: &str,
    key: Option<ClusterKey>,
    tls: Option<ClusterTls>,
    id: NodeId,
) -> Result<(), ClusterError> {
    let peers = Peers::new(Faults::default(), key, tls.map(|t| t.client));
    let mut client = peers.admin(addr).map_err(|e| ClusterError::peer(addr, e))?;
    client
        .leave(wharf_proto::v1::LeaveRequest { node_id: id })
        .await
        .map_err(|s| ClusterError::peer(addr, s.message()))?;
    Ok(())
}

/// Ask the member at `addr` for its view of the cluster (for `wharf cluster status`).
pub async fn status(
    addr: &str,
    key: Option<ClusterKey>,
    tls: Option<ClusterTls>,
) -> Result<StatusReply, ClusterError> {
    let peers = Peers::new(Faults::default(), key, tls.map(|t| t.client));
    let mut client = peers.admin(addr).map_err(|e| ClusterError::peer(addr, e))?;
    let reply = client
        .status(StatusRequest {})
        .await
        .map_err(|s| ClusterError::peer(addr, s.message()))?;
    Ok(reply.into_inner())
}
