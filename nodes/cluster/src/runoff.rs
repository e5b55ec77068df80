//! Ends a leaderless election at once when the candidate asking for this member's vote
//! cannot win it because this member holds more of the log.
//!
//! openraft 0.9 refuses such a candidate without taking on its term. When this member then
//! campaigns itself (an election timeout later), it asks at that same term, the first
//! candidate has already voted for itself in it and refuses, and this member waits one more
//! election timeout before asking again at a higher term: a crashed leader was replaced
//! 0.9-1.0 s after its last heartbeat instead of 0.5-0.6 s whenever the member with the
//! shorter log timed out first (about half the crashes under a steady lease load). Here the
//! better-placed member campaigns as soon as it refuses, at a term above the candidate's.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use openraft::raft::{VoteRequest, VoteResponse};
use tracing::info;

use crate::types::{NodeId, Raft};

/// At most this many campaigns are started in a row to climb past a candidate's term; a
/// candidate further ahead is left to the regular election timer.
const MAX_CAMPAIGNS: u64 = 3;

/// When this member last heard from a leader, and what it does with that on a refused vote.
pub struct Runoff {
    last_heard: Mutex<Instant>,
    /// How long a member refuses votes after it last heard from a leader (openraft: the
    /// longest election timeout); a silence shorter than this means a leader is alive.
    leader_lease: Duration,
}

impl Runoff {
    /// A member that has just (re)started counts as having heard a leader now: it does not
    /// campaign early before it has seen one leader lease go by.
    pub fn new(leader_lease: Duration) -> Runoff {
        Runoff {
            last_heard: Mutex::new(Instant::now()),
            leader_lease,
        }
    }

    /// An append or a snapshot arrived from a leader.
    pub fn heard_from_leader(&self) {
        if let Ok(mut last) = self.last_heard.lock() {
            *last = Instant::now();
        }
    }

    /// After this member answered `request` with `response`: campaign at once (at a term
    /// above the candidate's) when it refused a candidate with a shorter log while no leader
    /// has been heard from for a leader lease.
    pub async fn after_vote(
        &self,
        raft: &Raft,
        request: &VoteRequest<NodeId>,
        response: &VoteResponse<NodeId>,
    ) {
        let silence = self
            .last_heard
            .lock()
            .map(|last| last.elapsed())
            .unwrap_or_default();
        let (my_term, leading) = {
            let metrics = raft.metrics();
            let metrics = metrics.borrow();
            (metrics.vote.leader_id().term, metrics.state.is_leader())
        };
        if leading {
            return;
        }
        let campaigns = campaigns_to_start(request, response, my_term, silence > self.leader_lease);
        if campaigns == 0 {
            return;
        }
        info!(
            candidate = %request.vote,
            candidate_log = ?request.last_log_id,
            my_log = ?response.last_log_id,
            campaigns,
            "refused a candidate with a shorter log while leaderless: campaigning now"
        );
        for _ in 0..campaigns {
            if raft.trigger().elect().await.is_err() {
                return;
            }
        }
    }
}

/// How many campaigns to start in a row after answering `request` with `response` (each
/// raises this member's term by one): none unless the vote was refused, this member's log is
/// ahead of the candidate's and no leader was heard from for a lease; otherwise enough to
/// ask at a term above the candidate's, at most [`MAX_CAMPAIGNS`].
fn campaigns_to_start(
    request: &VoteRequest<NodeId>,
    response: &VoteResponse<NodeId>,
    my_term: u64,
    leaderless: bool,
) -> u64 {
    if response.vote_granted || !leaderless || response.last_log_id <= request.last_log_id {
        return 0;
    }
    let candidate_term = request.vote.leader_id().term;
    let needed = candidate_term.saturating_add(1).saturating_sub(my_term);
    if needed > MAX_CAMPAIGNS {
        return 0;
    }
    needed.max(1)
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId, Vote};

    use super::*;

    fn log(term: u64, index: u64) -> Option<LogId<NodeId>> {
        Some(LogId::new(CommittedLeaderId::new(term, 7), index))
    }

    fn request(term: u64, last_log: Option<LogId<NodeId>>) -> VoteRequest<NodeId> {
        VoteRequest::new(Vote::new(term, 2), last_log)
    }

    fn refusal(my_term: u64, my_log: Option<LogId<NodeId>>) -> VoteResponse<NodeId> {
        VoteResponse::new(Vote::new_committed(my_term, 7), my_log, false)
    }

    #[test]
    fn a_refused_shorter_log_while_leaderless_campaigns_above_its_term() {
        // The usual case: the candidate raised the term by one; two campaigns get above it.
        let two = campaigns_to_start(&request(2, log(1, 47)), &refusal(1, log(1, 48)), 1, true);
        assert_eq!(two, 2);
        // A member already at the candidate's term needs one.
        let one = campaigns_to_start(&request(2, log(1, 47)), &refusal(2, log(1, 48)), 2, true);
        assert_eq!(one, 1);
        // A member ahead of the candidate's term still campaigns once.
        let ahead = campaigns_to_start(&request(2, log(1, 47)), &refusal(3, log(1, 48)), 3, true);
        assert_eq!(ahead, 1);
    }

    #[test]
    fn nothing_happens_while_a_leader_is_heard_or_the_candidate_could_win() {
        let shorter = request(2, log(1, 47));
        assert_eq!(
            campaigns_to_start(&shorter, &refusal(1, log(1, 48)), 1, false),
            0,
            "a live leader"
        );
        let granted = VoteResponse::new(Vote::new(2, 2), log(1, 47), true);
        assert_eq!(campaigns_to_start(&shorter, &granted, 1, true), 0);
        assert_eq!(
            campaigns_to_start(&shorter, &refusal(1, log(1, 47)), 1, true),
            0,
            "same log: the candidate may win elsewhere"
        );
        assert_eq!(
            campaigns_to_start(&request(9, log(1, 47)), &refusal(1, log(1, 48)), 1, true),
            0,
            "a candidate far ahead in terms is left to the election timer"
        );
    }
}
