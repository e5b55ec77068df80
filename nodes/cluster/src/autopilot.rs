//! Autopilot membership: the leader removes a member it has not reached for
//! `[cluster] dead_member_timeout_secs` (an instance an Auto Scaling group replaced, a disk
//! lost for good), so dead voters never pile up until the quorum is gone; and a member that
//! finds itself without a leader for a while asks the cluster to take it (back) in, so a
//! removed member that returns rejoins by itself.
//!
//! Safety: only the leader removes, one member per check, only a member silent for the whole
//! timeout while this node led (a new leader first waits that long), and only when the voters
//! left still have a reachable majority, so a removal never costs the quorum; a member cut off
//! for less than the timeout (a partition, a restart) is never removed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ChangeMembers;
use tracing::{info, warn};

use crate::node::ClusterNode;
use crate::types::NodeId;

/// How often the leader looks for dead members (at most; shorter timeouts check more often).
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// A voter that answered within this long counts as reachable for the quorum check.
const REACHABLE: Duration = Duration::from_secs(5);
/// A member without a leader this long asks its known members to take it in.
const REJOIN_AFTER: Duration = Duration::from_secs(30);

impl ClusterNode {
    /// Check for dead members (when leading) and for being left out (when not), forever.
    pub async fn run_autopilot(self: Arc<Self>, dead_after: Duration) {
        let every = CHECK_EVERY
            .min(dead_after / 4)
            .max(Duration::from_millis(250));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leading_since: Option<Instant> = None;
        let mut leaderless_since: Option<Instant> = None;
        loop {
            tick.tick().await;
            let leader = self.raft.metrics().borrow().current_leader;
            if leader == Some(self.id) {
                leaderless_since = None;
                let since = *leading_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= dead_after {
                    self.remove_one_dead_member(dead_after).await;
                }
                continue;
            }
            leading_since = None;
            if leader.is_some() {
                leaderless_since = None;
                continue;
            }
            let since = *leaderless_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= REJOIN_AFTER {
                leaderless_since = None;
                self.ask_to_rejoin().await;
            }
        }
    }

    /// Remove the first member silent for `dead_after` whose removal keeps a reachable
    /// majority of voters.
    async fn remove_one_dead_member(&self, dead_after: Duration) {
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let membership = membership.membership();
        let members: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
        self.peers.retain_contacts(|id| members.contains(&id));
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let silent_for = |id: NodeId| {
            self.peers
                .last_contact(id)
                .map_or(Duration::MAX, |at| at.elapsed())
        };
        let Some(dead) = members
            .iter()
            .copied()
            .find(|id| *id != self.id && silent_for(*id) >= dead_after)
        else {
            return;
        };
        let left: Vec<NodeId> = voters.iter().copied().filter(|v| *v != dead).collect();
        let reachable = left
            .iter()
            .filter(|v| **v == self.id || silent_for(**v) < REACHABLE)
            .count();
        if reachable * 2 <= left.len() {
            warn!(
                node = dead,
                reachable,
                voters_left = left.len(),
                "a member is unreachable past dead_member_timeout_secs, but removing it would leave no reachable majority; kept"
            );
            return;
        }
        let removed = self
            .raft
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([dead])), false)
            .await;
        match removed {
            Ok(_) => {
                info!(
                    node = dead,
                    silent_secs = silent_for(dead).as_secs(),
                    "removed a member unreachable past dead_member_timeout_secs"
                );
                self.metrics.member_removed();
            }
            Err(e) => warn!(node = dead, error = %e, "removing a dead member failed"),
        }
    }

    /// Ask the members this node knows to add it; a no-op for a member that counts it.
    async fn ask_to_rejoin(&self) {
        let targets: Vec<String> = self
            .members()
            .into_iter()
            .filter(|(id, _, _)| *id != self.id)
            .map(|(_, addr, _)| addr)
            .collect();
        if targets.is_empty() {
            return;
        }
        info!(through = ?targets, "no leader for a while; asking the cluster to take this member (back) in");
        if self.join_once(&targets).await {
            info!("rejoined the cluster");
        }
    }
}
