//! The cluster's answer to "who fetches this cold blob": the node holding the digest's lease
//! fetches from the upstream; the others stream its in-flight bytes over gRPC.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use wharf_core::Digest;
use wharf_mirror::singleflight::{
    Claim, CoordinatorHealth, FetchCoordinator, FetchLease, MemberHealth,
};

use wharf_metrics::{LeaseResult, Metrics};

use crate::node::ClusterNode;
use crate::peer_stream::{PeerFailure, fetch_from_peer};
use crate::types::LeaseOp;

/// Pause between attempts while the lease holder cannot serve the blob yet (or any more).
const RETRY_PAUSE: Duration = Duration::from_millis(250);

pub struct Coordinator {
    node: Arc<ClusterNode>,
    metrics: Arc<Metrics>,
}

impl Coordinator {
    /// Coordinates through `node`, counting lease answers and fallbacks in `metrics`.
    pub fn new(node: Arc<ClusterNode>, metrics: Arc<Metrics>) -> Coordinator {
        Coordinator { node, metrics }
    }

    fn fell_back(&self) {
        self.node.record_fallback();
        self.metrics.fallback();
        self.metrics.lease_request(LeaseResult::Failed);
    }

    fn ttl_ms(&self) -> u64 {
        self.node.lease_ttl.as_millis() as u64
    }
}

#[async_trait]
impl FetchCoordinator for Coordinator {
    async fn claim(&self, digest: &Digest) -> Claim {
        let key = digest.to_string();
        // A dead holder's lease expires within one TTL; past that, stop waiting for it.
        let give_up = Instant::now() + self.node.lease_ttl * 2 + Duration::from_secs(1);
        if self.node.fell_back_recently() && !self.node.leader_reachable() {
            // Still without a quorum: don't make every cold request wait to find out again.
            self.fell_back();
            return Claim::Fetch(None);
        }
        loop {
            let op = LeaseOp::Acquire {
                addr: self.node.addr.clone(),
                ttl_ms: self.ttl_ms(),
            };
            let answer = match self.node.lease(&key, op).await {
                Ok(answer) => answer,
                Err(e) => {
                    warn!(%digest, error = %e, "no quorum: fetching without the cluster's lease");
                    self.fell_back();
                    return Claim::Fetch(None);
                }
            };
            if answer.held {
                debug!(%digest, token = answer.token, "lease acquired: fetching from upstream");
                self.metrics.lease_request(LeaseResult::Granted);
                let lease = HeldLease::start(self.node.clone(), key, answer.token);
                return Claim::Fetch(Some(Box::new(lease)));
            }
            match fetch_from_peer(&self.node, &answer.owner_addr, digest).await {
                Ok(response) => {
                    debug!(%digest, owner = answer.owner, "streaming from the lease holder");
                    self.metrics.lease_request(LeaseResult::Held);
                    return Claim::Peer(Ok(response));
                }
                Err(PeerFailure::Refused(e)) => return Claim::Peer(Err(e)),
                Err(PeerFailure::Retry(why)) => {
                    if Instant::now() >= give_up {
                        warn!(%digest, owner = answer.owner, why, "lease holder unusable; fetching without the lease");
                        return Claim::Fetch(None);
                    }
                    debug!(%digest, owner = answer.owner, why, "lease holder cannot serve yet");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    fn health(&self) -> CoordinatorHealth {
        let metrics = self.node.raft.metrics().borrow().clone();
        CoordinatorHealth {
            ok: self.node.has_quorum(),
            node_id: self.node.id,
            leader_id: metrics.current_leader,
            members: metrics.membership_config.membership().nodes().count(),
            fallbacks: self.node.fallbacks(),
            term: metrics.current_term,
            leases_held: self
                .node
                .state
                .read()
                .table
                .leases
                .values()
                .filter(|l| l.owner == self.node.id && l.expires_ms > now_ms())
                .count(),
            roster: self
                .node
                .members()
                .into_iter()
                .map(|(id, addr, voter)| {
                    let last_contact_ms = self.node.millis_since_contact(id);
                    MemberHealth {
                        id,
                        addr,
                        role: if voter { "voter" } else { "learner" },
                        last_contact_ms,
                        health: crate::member_health(id == self.node.id, last_contact_ms),
                    }
                })
                .collect(),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// This node's lease on one digest: renewed every quarter of its TTL while held, released when
/// dropped (after the blob is stored, or the fetch failed). A renewal that fails (an election
/// under way) is retried until shortly before the lease would lapse, never past it: the
/// deadline is the lease's own expiry, not the generic proposal timeout.
struct HeldLease {
    node: Arc<ClusterNode>,
    digest: String,
    token: u64,
    renewer: JoinHandle<()>,
}

impl HeldLease {
    fn start(node: Arc<ClusterNode>, digest: String, token: u64) -> HeldLease {
        let renewer = tokio::spawn({
            let (node, digest) = (node.clone(), digest.clone());
            async move {
                let ttl = node.lease_ttl;
                let ttl_ms = ttl.as_millis() as u64;
                // Counted from just after the acquiring command committed; the margin below
                // covers the difference to the expiry the leader stamped.
                let mut expires = tokio::time::Instant::now() + ttl;
                loop {
                    tokio::time::sleep(ttl / 4).await;
                    let sent = tokio::time::Instant::now();
                    let deadline = expires.checked_sub(ttl / 10).unwrap_or(expires);
                    if deadline <= sent {
                        warn!(
                            digest,
                            "fetch lease lapsed before it could be renewed; finishing the fetch anyway"
                        );
                        return;
                    }
                    match node
                        .lease_until(&digest, LeaseOp::Renew { token, ttl_ms }, deadline)
                        .await
                    {
                        Ok(answer) if answer.held => expires = sent + ttl,
                        Ok(answer) => {
                            warn!(
                                digest,
                                owner = answer.owner,
                                "fetch lease lost; finishing the fetch anyway"
                            );
                            return;
                        }
                        Err(e) => {
                            warn!(digest, error = %e, "renewing the fetch lease failed; retrying until it lapses")
                        }
                    }
                }
            }
        });
        HeldLease {
            node,
            digest,
            token,
            renewer,
        }
    }
}

impl FetchLease for HeldLease {}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.renewer.abort();
        let (node, digest, token) = (self.node.clone(), self.digest.clone(), self.token);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                match node.lease(&digest, LeaseOp::Release { token }).await {
                    Ok(_) => info!(digest, "fetch lease released"),
                    // It expires by itself within one TTL.
                    Err(e) => warn!(digest, error = %e, "releasing the fetch lease failed"),
                }
            });
        }
    }
}
