//! The cluster: membership, leadership, leases, bytes from peers, fetches without a lease.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::histogram::{AtomicHistogram, STORE_BUCKETS};
use crate::labels::LeaseResult;
use crate::slots::Slots;
use crate::{Metrics, counters, reg};

/// The cluster's families; the gauges are set from the cluster when `/metrics` is scraped.
#[derive(Debug)]
pub struct ClusterMetrics {
    pub members: Gauge,
    pub is_leader: Gauge,
    pub term: Gauge,
    pub leases_held: Gauge,
    lease_requests: Slots<Counter>,
    peer_bytes: Counter,
    fallbacks: Counter,
    removals: Counter,
    promotions: Counter,
    raft_rtt: AtomicHistogram,
    peer_bytes_served: Counter,
    peer_redirects: Counter,
    peer_resumes: Counter,
}

impl ClusterMetrics {
    pub(crate) fn register(registry: &mut Registry) -> ClusterMetrics {
        ClusterMetrics {
            members: reg(
                registry,
                "wharf_cluster_members",
                "Members of this node's cluster (0: not clustered)",
                Gauge::default(),
            ),
            is_leader: reg(
                registry,
                "wharf_cluster_is_leader",
                "1 on the cluster's Raft leader",
                Gauge::default(),
            ),
            term: reg(
                registry,
                "wharf_cluster_term",
                "The Raft term this node is in",
                Gauge::default(),
            ),
            leases_held: reg(
                registry,
                "wharf_cluster_leases_held",
                "Fetch leases this node holds",
                Gauge::default(),
            ),
            lease_requests: Slots::new(
                reg(
                    registry,
                    "wharf_cluster_lease_requests",
                    "Cold blobs this node asked the cluster about, by answer",
                    counters(),
                ),
                LeaseResult::ALL,
            ),
            peer_bytes: reg(
                registry,
                "wharf_cluster_peer_bytes",
                "Bytes streamed from cluster peers fetching a blob",
                Counter::default(),
            ),
            fallbacks: reg(
                registry,
                "wharf_cluster_fallbacks",
                "Cold blobs fetched without a lease because the cluster had no quorum",
                Counter::default(),
            ),
            removals: reg(
                registry,
                "wharf_cluster_members_removed",
                "Members this node (as leader) removed after dead_member_timeout_secs unreachable",
                Counter::default(),
            ),
            promotions: reg(
                registry,
                "wharf_cluster_members_promoted",
                "Learners this node (as leader) promoted to voters, up to max_voters",
                Counter::default(),
            ),
            raft_rtt: reg(
                registry,
                "wharf_cluster_raft_rtt_seconds",
                "Round trips of this node's Raft append-entries calls (replication, heartbeats): what cluster.heartbeat_ms is scaled from",
                AtomicHistogram::new(STORE_BUCKETS),
            ),
            peer_bytes_served: reg(
                registry,
                "wharf_cluster_peer_bytes_served",
                "Blob bytes this node streamed to cluster peers (as fetcher or relay)",
                Counter::default(),
            ),
            peer_redirects: reg(
                registry,
                "wharf_cluster_peer_redirects",
                "Peer blob streams this node sent to a relay (it served max_peer_streams already)",
                Counter::default(),
            ),
            peer_resumes: reg(
                registry,
                "wharf_cluster_peer_resumes",
                "Broken peer blob streams this node resumed from their offset at another node",
                Counter::default(),
            ),
        }
    }

    /// Every lease answer's counter starts at 0.
    pub(crate) fn start_at_zero(&self) {
        for result in LeaseResult::VALUES {
            self.lease_requests.get(result as usize, || {
                vec![("result", result.as_str().to_string())]
            });
        }
    }
}

impl Metrics {
    pub fn lease_request(&self, result: LeaseResult) {
        if !self.enabled {
            return;
        }
        self.cluster.lease_requests.with(
            result as usize,
            || vec![("result", result.as_str().to_string())],
            |c| {
                c.inc();
            },
        );
    }

    pub fn peer_bytes(&self, bytes: u64) {
        if self.enabled {
            self.cluster.peer_bytes.inc_by(bytes);
        }
    }

    pub fn fallback(&self) {
        if self.enabled {
            self.cluster.fallbacks.inc();
        }
    }

    /// The autopilot removed a member unreachable past `dead_member_timeout_secs`.
    pub fn member_removed(&self) {
        if self.enabled {
            self.cluster.removals.inc();
        }
    }

    /// `bytes` of a blob streamed to a peer.
    pub fn peer_bytes_served(&self, bytes: u64) {
        if self.enabled {
            self.cluster.peer_bytes_served.inc_by(bytes);
        }
    }

    /// A peer asking for a blob was sent to a relay.
    pub fn peer_redirect(&self) {
        if self.enabled {
            self.cluster.peer_redirects.inc();
        }
    }

    /// A broken peer stream was resumed at another node.
    pub fn peer_resume(&self) {
        if self.enabled {
            self.cluster.peer_resumes.inc();
        }
    }

    /// One Raft append-entries call answered after `elapsed`.
    pub fn raft_round_trip(&self, elapsed: std::time::Duration) {
        if self.enabled {
            self.cluster.raft_rtt.observe(elapsed.as_secs_f64());
        }
    }

    /// The autopilot promoted a learner to fill a voter's place (`max_voters`).
    pub fn member_promoted(&self) {
        if self.enabled {
            self.cluster.promotions.inc();
        }
    }
}
