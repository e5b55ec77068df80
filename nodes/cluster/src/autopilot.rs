//! Autopilot membership: the leader removes a member it has not reached for
//! `[cluster] dead_member_timeout_secs` (an instance an Auto Scaling group replaced, a disk
//! lost for good), so dead voters never pile up until the quorum is gone; it promotes the most
//! up-to-date reachable learner while fewer than `[cluster] max_voters` members vote (a voter
//! left, was removed, or more nodes joined); and a member that finds itself without a leader
//! for a while asks the cluster to take it (back) in, so a removed member that returns rejoins
//! by itself.
//!
//! Safety: only the leader removes, one member per check, only a member silent for the whole
//! timeout while this node led (a new leader first waits that long), and only when the voters
//! left still have a reachable majority, so a removal never costs the quorum; a member cut off
//! for less than the timeout (a partition, a restart) is never removed. A learner is promoted
//! only when the leader reached it recently and it holds the leader's whole log but for a few
//! entries, so a new voter never slows the commits it now counts for.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ChangeMembers;
use tracing::{info, warn};

use crate::node::ClusterNode;
use crate::types::NodeId;

/// How often the leader looks for dead members and learners to promote.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// A learner this many log entries (or fewer) behind the leader may be promoted.
const PROMOTE_LAG: u64 = 16;
/// A voter that answered within this long counts as reachable for the quorum check.
const REACHABLE: Duration = Duration::from_secs(5);
/// A member without a leader this long asks its known members to take it in.
const REJOIN_AFTER: Duration = Duration::from_secs(30);

/// A member's health as one node sees it: `ok` for itself and for a member that answered
/// within the reachability window, `unreachable` past it, `unknown` for a member this node
/// does not call (a follower calls only when it campaigns).
pub fn member_health(this_node: bool, last_contact_ms: Option<u64>) -> &'static str {
    match last_contact_ms {
        _ if this_node => "ok",
        None => "unknown",
        Some(ms) if u128::from(ms) < REACHABLE.as_millis() => "ok",
        Some(_) => "unreachable",
    }
}

impl ClusterNode {
    /// Check for dead members (when leading and `dead_after` is set), for learners to
    /// promote (when leading) and for being left out (when not), forever.
    pub async fn run_autopilot(self: Arc<Self>, dead_after: Option<Duration>) {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leading_since: Option<Instant> = None;
        let mut leaderless_since: Option<Instant> = None;
        loop {
            tick.tick().await;
            let leader = self.raft.metrics().borrow().current_leader;
            if leader == Some(self.id) {
                leaderless_since = None;
                let since = *leading_since.get_or_insert_with(Instant::now);
                if let Some(dead_after) = dead_after.filter(|d| since.elapsed() >= *d) {
                    self.remove_one_dead_member(dead_after).await;
                }
                self.promote_one_learner().await;
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
        match self.remove_member(dead).await {
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

    /// While fewer than `max_voters` members vote, make the reachable learner with the most of
    /// the leader's log a voter.
    async fn promote_one_learner(&self) {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if voters.len() >= self.max_voters {
            return;
        }
        let Some(replication) = metrics.replication.as_ref() else {
            return;
        };
        let leader_index = metrics.last_log_index.unwrap_or(0);
        let reachable = |id: NodeId| {
            self.peers
                .last_contact(id)
                .is_some_and(|at| at.elapsed() < REACHABLE)
        };
        let best = membership
            .nodes()
            .map(|(id, _)| *id)
            .filter(|id| !voters.contains(id) && reachable(*id))
            .filter_map(|id| {
                let matched = replication.get(&id)?.map_or(0, |l| l.index);
                (matched.saturating_add(PROMOTE_LAG) >= leader_index).then_some((matched, id))
            })
            // The most of the log; of equals, the lowest id.
            .max_by_key(|(matched, id)| (*matched, std::cmp::Reverse(*id)));
        let Some((matched, learner)) = best else {
            return;
        };
        let promoted = self
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([learner])), false)
            .await;
        match promoted {
            Ok(_) => {
                info!(
                    node = learner,
                    matched,
                    voters = voters.len() + 1,
                    max_voters = self.max_voters,
                    "promoted a learner to voter"
                );
                self.metrics.member_promoted();
            }
            Err(e) => warn!(node = learner, error = %e, "promoting a learner failed"),
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
