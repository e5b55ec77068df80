//! One member of the Raft group: lease commands, membership changes and status, run here
//! when this node leads and forwarded to the leader otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use tracing::{info, warn};
use wharf_proto::v1::{
    AcquireRequest, JoinRequest, LeaseReply, LeaveRequest, ReleaseRequest, RenewRequest,
};

use crate::error::ClusterError;
use crate::network::Peers;
use crate::runoff::Runoff;
use crate::store::StateMachine;
use crate::types::{LeaseAnswer, LeaseCommand, LeaseOp, NodeId, Raft};

/// A lease command or membership change gets this long before the node concludes there is
/// no quorum and falls back to fetching alone.
/// Long enough to ride out several elections (10–12 heartbeats each).
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// One try of a lease command at most; longer means the leader it went to is gone.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);
/// After a fallback, health says "no quorum" this long, and further cold fetches fall back at
/// once while no leader is reachable, rather than each waiting [`PROPOSE_TIMEOUT`].
const FALLBACK_MEMORY: Duration = Duration::from_secs(10);
const RETRY_PAUSE: Duration = Duration::from_millis(100);
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(15);

pub struct ClusterNode {
    pub id: NodeId,
    /// Where peers dial this node.
    pub addr: String,
    pub raft: Raft,
    pub state: StateMachine,
    pub peers: Peers,
    pub lease_ttl: Duration,
    fallbacks: AtomicU64,
    last_fallback: Mutex<Option<Instant>>,
    /// Set while this leader hands leadership over (see `handoff`): it commits no lease
    /// command then, so its log stays still for the successor to catch up with.
    pub(crate) handing_over: AtomicBool,
    /// How long a member refuses votes after it last heard from a leader (openraft: the
    /// longest election timeout); a leader younger than this refuses a successor's vote too.
    pub(crate) leader_lease: Duration,
    /// Campaigns at once after refusing a candidate that cannot win (see `runoff`).
    pub(crate) runoff: Runoff,
    /// At most this many members vote; the rest join as learners (`[cluster] max_voters`).
    pub(crate) max_voters: usize,
    pub(crate) metrics: Arc<wharf_metrics::Metrics>,
}

type WriteError = RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>;

/// Where a write went when this node does not lead.
enum Routed<T> {
    Done(T),
    Forward(String),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl ClusterNode {
    pub fn new(
        id: NodeId,
        addr: String,
        raft: Raft,
        state: StateMachine,
        peers: Peers,
        lease_ttl: Duration,
    ) -> ClusterNode {
        ClusterNode {
            id,
            addr,
            raft,
            state,
            peers,
            lease_ttl,
            fallbacks: AtomicU64::new(0),
            last_fallback: Mutex::new(None),
            handing_over: AtomicBool::new(false),
            leader_lease: Duration::ZERO,
            runoff: Runoff::new(Duration::ZERO),
            max_voters: usize::MAX,
            metrics: wharf_metrics::Metrics::detached(),
        }
    }

    /// The leader lease of this node's Raft configuration (see `handoff`).
    pub fn with_leader_lease(mut self, lease: Duration) -> ClusterNode {
        self.leader_lease = lease;
        self.runoff = Runoff::new(lease);
        self
    }

    /// Let at most `max_voters` members vote; the others join as learners.
    pub fn with_max_voters(mut self, max_voters: usize) -> ClusterNode {
        self.max_voters = max_voters.max(1);
        self
    }

    /// Record membership changes in the node's metrics.
    pub fn with_metrics(mut self, metrics: Arc<wharf_metrics::Metrics>) -> ClusterNode {
        self.metrics = metrics;
        self
    }

    /// Note a cold fetch made without the cluster's agreement.
    pub fn record_fallback(&self) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        *self.last_fallback.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// Whether this node knows a leader it can reach: another node, or itself with recent
    /// acknowledgements from a quorum; never while cut off.
    pub fn leader_reachable(&self) -> bool {
        let metrics = self.raft.metrics().borrow().clone();
        let leader_ok = match metrics.current_leader {
            Some(leader) if leader == self.id => metrics
                .millis_since_quorum_ack
                .is_some_and(|ms| ms < PROPOSE_TIMEOUT.as_millis() as u64),
            Some(_) => true,
            None => false,
        };
        leader_ok && !self.peers.isolated()
    }

    /// Whether a cold fetch fell back (no quorum) in the last few seconds.
    pub fn fell_back_recently(&self) -> bool {
        self.last_fallback
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() < FALLBACK_MEMORY)
    }

    /// Whether the cluster coordinates this node's fetches now, as far as it knows.
    pub fn has_quorum(&self) -> bool {
        self.leader_reachable() && !self.fell_back_recently()
    }

    fn route<T>(&self, result: Result<T, WriteError>) -> Result<Routed<T>, ClusterError> {
        match result {
            Ok(t) => Ok(Routed::Done(t)),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::InProgress(e),
            ))) => Err(ClusterError::Busy(e.to_string())),
            Err(e) => match e.forward_to_leader::<BasicNode>() {
                Some(forward) => match &forward.leader_node {
                    Some(node) if forward.leader_id != Some(self.id) => {
                        Ok(Routed::Forward(node.addr.clone()))
                    }
                    _ => Err(ClusterError::NoQuorum("no leader known".into())),
                },
                None => Err(ClusterError::Raft(e.to_string())),
            },
        }
    }

    /// Commit a lease command if this node leads (stamped with its clock); `Forward` if not.
    async fn write_here(
        &self,
        digest: &str,
        node: NodeId,
        op: LeaseOp,
    ) -> Result<Routed<LeaseAnswer>, ClusterError> {
        if self.handing_over.load(Ordering::Acquire) && self.is_leader() {
            return Err(ClusterError::NoQuorum(
                "leadership is being handed over".into(),
            ));
        }
        let command = LeaseCommand {
            digest: digest.to_string(),
            node,
            now_ms: now_ms(),
            op,
        };
        let result = self.raft.client_write(command).await.map(|r| r.data);
        self.route(result)
    }

    /// A lease command from a peer: only the leader commits it, nobody forwards it further.
    pub async fn lease_from_peer(
        &self,
        digest: &str,
        node: NodeId,
        op: LeaseOp,
    ) -> Result<LeaseAnswer, ClusterError> {
        match tokio::time::timeout(PROPOSE_TIMEOUT, self.write_here(digest, node, op)).await {
            Ok(Ok(Routed::Done(answer))) => Ok(answer),
            Ok(Ok(Routed::Forward(_))) => Err(ClusterError::NoQuorum("not the leader".into())),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ClusterError::NoQuorum("commit timed out".into())),
        }
    }

    /// Run a lease command for this node through the leader, wherever it is. Retried until
    /// [`PROPOSE_TIMEOUT`], which rides out an election; the last error after that.
    pub async fn lease(&self, digest: &str, op: LeaseOp) -> Result<LeaseAnswer, ClusterError> {
        self.lease_until(digest, op, tokio::time::Instant::now() + PROPOSE_TIMEOUT)
            .await
    }

    /// As [`ClusterNode::lease`], retried until `deadline`. Each attempt gets at most
    /// [`ATTEMPT_TIMEOUT`], so one sent to a leader that is gone (or cut off) does not use the
    /// whole deadline up: the next attempt finds the newly elected one.
    pub async fn lease_until(
        &self,
        digest: &str,
        op: LeaseOp,
        deadline: tokio::time::Instant,
    ) -> Result<LeaseAnswer, ClusterError> {
        let mut last_error = ClusterError::NoQuorum("lease command timed out".into());
        loop {
            let attempt = async {
                match self.write_here(digest, self.id, op.clone()).await? {
                    Routed::Done(answer) => Ok(answer),
                    Routed::Forward(addr) => self.forward_lease(&addr, digest, op.clone()).await,
                }
            };
            let attempt_deadline = deadline.min(tokio::time::Instant::now() + ATTEMPT_TIMEOUT);
            match tokio::time::timeout_at(attempt_deadline, attempt).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(e)) => last_error = e,
                Err(_) if attempt_deadline >= deadline => return Err(last_error),
                Err(_) => last_error = ClusterError::NoQuorum("lease attempt timed out".into()),
            }
            if tokio::time::Instant::now() + RETRY_PAUSE >= deadline {
                return Err(last_error);
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    async fn forward_lease(
        &self,
        addr: &str,
        digest: &str,
        op: LeaseOp,
    ) -> Result<LeaseAnswer, ClusterError> {
        let unreachable =
            |e: &dyn std::fmt::Display| ClusterError::NoQuorum(format!("leader {addr}: {e}"));
        let mut client = self.peers.leases(addr).map_err(|e| unreachable(&e))?;
        let (digest, node_id) = (digest.to_string(), self.id);
        let reply = match op {
            LeaseOp::Acquire { addr, .. } => {
                client
                    .acquire(AcquireRequest {
                        digest,
                        node_id,
                        addr,
                    })
                    .await
            }
            LeaseOp::Renew { token, .. } => {
                client
                    .renew(RenewRequest {
                        digest,
                        node_id,
                        token,
                    })
                    .await
            }
            LeaseOp::Release { token } => {
                client
                    .release(ReleaseRequest {
                        digest,
                        node_id,
                        token,
                    })
                    .await
            }
        }
        .map_err(|status| unreachable(&status.message()))?
        .into_inner();
        Ok(answer_from_reply(reply))
    }

    /// Add `id` at `addr`: as a learner first, so it catches up before it counts, then as a
    /// voter while fewer than `max_voters` members vote.
    pub async fn join(&self, id: NodeId, addr: &str) -> Result<NodeId, ClusterError> {
        let attempt = async {
            // Only the leader's view of the membership counts: a restarted node's own view (a
            // member that left, a leader of an old term) may still list the joiner, and
            // answering from it would tell the joiner it is in when it is not.
            let (state, leader, membership) = {
                let metrics = self.raft.metrics().borrow().clone();
                (
                    metrics.state,
                    metrics.current_leader,
                    metrics.membership_config,
                )
            };
            if state != openraft::ServerState::Leader {
                let leader_addr = leader
                    .filter(|l| *l != self.id)
                    .and_then(|l| membership.membership().get_node(&l).map(|n| n.addr.clone()));
                return match leader_addr {
                    Some(leader) => self.forward_join(&leader, id, addr).await,
                    None => Err(ClusterError::NoQuorum("no leader known".into())),
                };
            }
            let known = membership
                .membership()
                .get_node(&id)
                .map(|n| n.addr.clone());
            let node = BasicNode::new(addr);
            let added = match known {
                Some(old) if old == addr => Ok(None),
                Some(_) => self
                    .raft
                    .change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, node)])), true)
                    .await
                    .map(Some),
                None => self.raft.add_learner(id, node, true).await.map(Some),
            };
            if let Routed::Forward(leader) = self.route(added)? {
                return self.forward_join(&leader, id, addr).await;
            }
            let voters = self.voters();
            let votes = voters.contains(&id) || voters.len() < self.max_voters;
            if !voters.contains(&id) && votes {
                let promoted = self
                    .raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
                    .await;
                if let Routed::Forward(leader) = self.route(promoted)? {
                    return self.forward_join(&leader, id, addr).await;
                }
            }
            info!(node = id, addr, voter = votes, "member joined");
            Ok(self.id)
        };
        tokio::time::timeout(MEMBERSHIP_TIMEOUT, attempt)
            .await
            .map_err(|_| ClusterError::NoQuorum("join timed out".into()))?
    }

    async fn forward_join(
        &self,
        leader: &str,
        id: NodeId,
        addr: &str,
    ) -> Result<NodeId, ClusterError> {
        let reply = self
            .peers
            .admin(leader)
            .map_err(|e| ClusterError::peer(leader, e))?
            .join(JoinRequest {
                node_id: id,
                addr: addr.to_string(),
            })
            .await
            .map_err(|s| ClusterError::peer(leader, s.message()))?;
        Ok(reply.into_inner().leader_id)
    }

    /// Remove `id` from the membership (voter and learner), waiting out other membership
    /// changes (several nodes leaving at once) for up to `timeout`.
    pub async fn leave(&self, id: NodeId, timeout: Duration) -> Result<(), ClusterError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.leave_once(id)).await {
                Ok(Err(ClusterError::Busy(_))) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(RETRY_PAUSE * 2).await;
                }
                Ok(result) => return result,
                Err(_) => return Err(ClusterError::NoQuorum("leave timed out".into())),
            }
        }
    }

    pub async fn leave_once(&self, id: NodeId) -> Result<(), ClusterError> {
        let membership = self.raft.metrics().borrow().membership_config.clone();
        if membership.membership().get_node(&id).is_none() {
            return Ok(());
        }
        let removed = self.remove_member(id).await;
        match self.route(removed)? {
            Routed::Done(_) => {
                info!(node = id, "member left");
                Ok(())
            }
            Routed::Forward(leader) => {
                self.peers
                    .admin(&leader)
                    .map_err(|e| ClusterError::peer(&leader, e))?
                    .leave(LeaveRequest { node_id: id })
                    .await
                    .map_err(|s| match s.code() {
                        tonic::Code::Aborted => ClusterError::Busy(s.message().to_string()),
                        _ => ClusterError::peer(&leader, s.message()),
                    })?;
                Ok(())
            }
        }
    }

    /// Remove `id` from the membership, whether it votes or learns.
    pub(crate) async fn remove_member(
        &self,
        id: NodeId,
    ) -> Result<openraft::raft::ClientWriteResponse<crate::types::TypeConfig>, WriteError> {
        let change = if self.voters().contains(&id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.raft.change_membership(change, false).await
    }

    /// Join through the first of `targets` that answers, retrying until one does.
    pub async fn join_through(self: Arc<Self>, targets: Vec<String>) {
        let mut delay = Duration::from_millis(200);
        loop {
            for target in targets.iter().filter(|t| **t != self.addr) {
                match self.try_join(target).await {
                    Ok(_) => {
                        info!(through = %target, "joined the cluster");
                        return;
                    }
                    Err(e) => warn!(through = %target, error = %e, "joining failed; will retry"),
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Ask `target` once to add this node.
    async fn try_join(&self, target: &str) -> Result<(), String> {
        let mut client = self.peers.admin(target).map_err(|e| e.to_string())?;
        let request = client.join(JoinRequest {
            node_id: self.id,
            addr: self.addr.clone(),
        });
        match tokio::time::timeout(Duration::from_secs(3), request).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(status.message().to_string()),
            Err(_) => Err("no answer within 3 s".into()),
        }
    }

    /// One round of join requests: true when a member added this node (so a cluster exists).
    pub async fn join_once(&self, targets: &[String]) -> bool {
        for target in targets.iter().filter(|t| **t != self.addr) {
            if self.try_join(target).await.is_ok() {
                info!(through = %target, "joined the existing cluster");
                return true;
            }
        }
        false
    }

    /// The voters of the latest membership this node knows.
    pub(crate) fn voters(&self) -> BTreeSet<NodeId> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// Members and whether each votes, from the latest membership this node knows.
    pub fn members(&self) -> Vec<(NodeId, String, bool)> {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone(), voters.contains(id)))
            .collect()
    }
}

pub fn answer_from_reply(reply: LeaseReply) -> LeaseAnswer {
    LeaseAnswer {
        held: reply.held,
        owner: reply.owner,
        owner_addr: reply.owner_addr,
        token: reply.token,
    }
}

pub fn reply_from_answer(answer: LeaseAnswer) -> LeaseReply {
    LeaseReply {
        held: answer.held,
        owner: answer.owner,
        owner_addr: answer.owner_addr,
        token: answer.token,
    }
}
