//! Leadership handoff: a leader that stops (SIGTERM: a rolling restart, a Helm upgrade, an
//! instance refresh) hands leadership to its most up-to-date voter before it leaves, so cold
//! fetches wait one round trip instead of an election timeout plus the leader lease.
//!
//! openraft 0.9 has no leadership-transfer API (0.10, which has one, is still alpha), so the
//! handoff is built from what 0.9 offers: the leader stops committing lease commands (callers
//! retry, and find the new leader), waits until the successor's log matches its own, then asks
//! it (`Admin/Campaign`) to start an election at once (`Raft::trigger().elect()`). The old
//! leader grants that vote (its own vote is older than the leader lease, and the successor's
//! log is as long as its own), which with the successor's own vote is a quorum of three; the
//! successor leads before any follower's election timer would have fired. A leader younger than
//! the lease (just elected) serves on until it is old enough to grant that vote.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};
use wharf_proto::v1::CampaignRequest;

use crate::node::ClusterNode;
use crate::types::NodeId;

/// Past the leader lease, so that the stopping leader grants its successor's vote.
const LEASE_MARGIN: Duration = Duration::from_millis(50);
/// How often the leader checks whether its successor has caught up.
const CATCH_UP_POLL: Duration = Duration::from_millis(10);

impl ClusterNode {
    /// When this node leads, hand leadership to the most up-to-date other voter and wait for
    /// it to take over, for at most `timeout`. Whether leadership moved; when it did not (no
    /// other voter, none caught up, the election lost), the others elect one as after a crash.
    pub async fn hand_over(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let metrics = self.raft.metrics().borrow().clone();
        let others = metrics
            .membership_config
            .membership()
            .voter_ids()
            .filter(|id| *id != self.id)
            .count();
        if metrics.current_leader != Some(self.id) || others == 0 {
            return false;
        }
        // A leader refuses votes while its own vote is younger than the leader lease (it
        // counts as a lease it granted itself): serve on until it is older.
        if let Ok(Some(since)) = self
            .raft
            .with_raft_state(|state| state.vote_last_modified())
            .await
        {
            let mature = since + self.leader_lease + LEASE_MARGIN;
            if mature > Instant::now() {
                tokio::time::sleep_until(mature.min(deadline)).await;
            }
        }
        // No new lease commands from here on: callers retry and reach the successor.
        self.handing_over.store(true, Ordering::Release);
        let moved = self.hand_over_until(deadline).await;
        if !moved {
            // Still leading (or nobody is): keep serving until the node actually stops.
            self.handing_over.store(false, Ordering::Release);
        }
        moved
    }

    async fn hand_over_until(&self, deadline: Instant) -> bool {
        // The same successor at the same log position in two polls in a row: the log is still.
        let mut previous = None;
        loop {
            let found = self.caught_up_successor();
            let settled = found.is_some() && found == previous;
            previous = found.clone();
            let (Some((successor, addr, term, _)), true) = (found, settled) else {
                if Instant::now() >= deadline {
                    warn!("no voter caught up with the leader in time; leaving without a handoff");
                    return false;
                }
                let _ = self.raft.trigger().heartbeat().await;
                tokio::time::sleep(CATCH_UP_POLL).await;
                continue;
            };
            info!(successor, %addr, term, "handing cluster leadership over");
            let asked = async {
                let mut admin = self.peers.admin(&addr).map_err(|e| e.to_string())?;
                admin
                    .campaign(CampaignRequest { term })
                    .await
                    .map_err(|s| s.message().to_string())
            };
            if let Err(e) = tokio::time::timeout_at(deadline, asked)
                .await
                .unwrap_or_else(|_| Err("timed out".into()))
            {
                warn!(successor, error = %e, "the successor did not take the campaign request");
                return false;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let moved = self
                .raft
                .wait(Some(remaining))
                .metrics(
                    |m| m.current_leader.is_some_and(|leader| leader != self.id),
                    "leadership moved",
                )
                .await
                .is_ok();
            if moved {
                info!(successor, "cluster leadership handed over");
            } else {
                warn!(successor, "leadership did not move in time");
            }
            return moved;
        }
    }

    /// The other voter whose replicated log matches this leader's, with its address, the
    /// leader's term and its last log index. `None` while none has caught up, or while this
    /// leader still has entries in flight (a lease command that started before the pause): its
    /// log must be still, or it would refuse the successor's vote for a shorter log.
    fn caught_up_successor(&self) -> Option<(NodeId, String, u64, Option<u64>)> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(self.id) {
            return None;
        }
        let last = metrics.last_log_index;
        if metrics.last_applied.map(|l| l.index) < last {
            return None;
        }
        let membership = metrics.membership_config.membership().clone();
        let replication = metrics.replication.as_ref()?;
        let successor = membership
            .voter_ids()
            .filter(|id| *id != self.id)
            .filter(|id| {
                replication
                    .get(id)
                    .is_some_and(|matched| matched.map(|l| l.index) >= last)
            })
            .min()?;
        let addr = membership.get_node(&successor)?.addr.clone();
        Some((successor, addr, metrics.current_term, last))
    }

    /// Milliseconds since member `id` last answered one of this node's Raft calls; `None` for
    /// this node and for members it has not called.
    pub fn millis_since_contact(&self, id: NodeId) -> Option<u64> {
        self.peers
            .last_contact(id)
            .filter(|_| id != self.id)
            .map(|at| u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// Whether this node is the Raft leader now.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    /// Start an election at once, when asked by the leader of `term` (or an earlier one).
    pub async fn campaign(&self, term: u64) -> Result<(), crate::ClusterError> {
        let current = self.raft.metrics().borrow().current_term;
        if term < current {
            return Ok(());
        }
        info!(
            term,
            "campaigning for leadership at the stopping leader's request"
        );
        self.raft
            .trigger()
            .elect()
            .await
            .map_err(|e| crate::ClusterError::Raft(e.to_string()))
    }
}
