//! `[cluster]` and `[cluster.tls]`: how a node joins the others, and how the cluster port is
//! secured (the shared key, mTLS).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Clustering: nodes agree by Raft which of them fetches each cold blob.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// host:port of this node's gRPC endpoint; empty = no cluster (a single node).
    pub listen: String,
    /// host:port other members dial; defaults to `listen` (which then must not be 0.0.0.0).
    pub advertise: String,
    /// Members to join through (any of them). Empty with no earlier state: bootstrap a cluster.
    pub join: Vec<String>,
    /// A fetch lease not renewed for this long passes to the next node that asks.
    pub lease_ttl_secs: u64,
    /// Raft heartbeat interval. A follower campaigns after 10–12 heartbeats without one
    /// (openraft's leader lease of 6 plus an election timeout of 4–6), which is also how long a
    /// crashed leader stalls cold fetches. Keep 10 heartbeats at least 5× the slowest
    /// `wharf_cluster_raft_rtt_seconds` seen under load (the measured Raft round trip): 50 ms
    /// suits members in one region; raise it for members far apart.
    pub heartbeat_ms: u64,
    /// The leader removes a member it has not reached for this long, when the voters left
    /// still form a quorum (a member lost for good would otherwise count towards the quorum
    /// forever); a removed member that comes back rejoins by itself. 0: never.
    pub dead_member_timeout_secs: u64,
    /// At most this many members vote (odd: 1, 3, 5, ...); members beyond it join as
    /// learners, which serve, stream and fetch through leases like voters but do not vote, so
    /// consensus stays small however many nodes run. When a voter leaves or is removed, the
    /// leader promotes the most up-to-date learner. Lowering it demotes nobody: it takes
    /// effect as voters leave.
    pub max_voters: usize,
    /// A node streams one blob to at most this many peers at once; further peers asking for it
    /// are sent to nodes already streaming it from this one (a relay tree), so the node that
    /// fetched a cold blob sends it out at most this many times however many nodes want it.
    /// 0: no limit.
    pub max_peer_streams: usize,
    /// A shared key (at least 32 bytes, mode 0600, the same file on every member): every
    /// cluster RPC carries proof of it, and calls without it are refused.
    pub secret_file: PathBuf,
    /// The same key inline, for platforms that hand secrets over as environment variables
    /// (`WHARF_CLUSTER__SECRET`, a compose file); `secret_file` is preferred.
    pub secret: String,
    /// Run a cluster listener on a non-loopback address without `secret_file`: anyone who
    /// reaches the port can then read any cached blob and change the membership.
    pub insecure: bool,
    /// mTLS between members: peers must present a certificate from `ca_file`.
    pub tls: ClusterTlsConfig,
}

/// `[cluster.tls]`: every member's certificate (serverAuth and clientAuth, naming the address
/// it advertises, or `server_name`) and the CA that signed them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterTlsConfig {
    pub cert_file: PathBuf,
    /// A secret file (owner-only, or wharf's own group).
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
    /// The name peers' certificates are checked against; empty: the host each peer is dialled
    /// at (its advertised address).
    pub server_name: String,
}

impl ClusterTlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert_file.as_os_str().is_empty()
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            listen: String::new(),
            advertise: String::new(),
            join: Vec::new(),
            lease_ttl_secs: 5,
            heartbeat_ms: 50,
            dead_member_timeout_secs: 600,
            max_voters: 5,
            max_peer_streams: 4,
            secret_file: PathBuf::new(),
            secret: String::new(),
            insecure: false,
            tls: ClusterTlsConfig::default(),
        }
    }
}

/// By hand, so that no log line or error ever prints the inline key.
impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("join", &self.join)
            .field("lease_ttl_secs", &self.lease_ttl_secs)
            .field("heartbeat_ms", &self.heartbeat_ms)
            .field("dead_member_timeout_secs", &self.dead_member_timeout_secs)
            .field("max_voters", &self.max_voters)
            .field("max_peer_streams", &self.max_peer_streams)
            .field("secret_file", &self.secret_file)
            .field("secret", &(!self.secret.is_empty()).then_some("<redacted>"))
            .field("insecure", &self.insecure)
            .field("tls", &self.tls)
            .finish()
    }
}

impl ClusterConfig {
    pub fn enabled(&self) -> bool {
        !self.listen.is_empty()
    }

    /// Whether the cluster listener takes connections from loopback only (a development
    /// cluster on one machine), where an unauthenticated port reaches no one else.
    pub fn loopback_only(&self) -> bool {
        let host = self
            .listen
            .rsplit_once(':')
            .map_or(self.listen.as_str(), |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// The address peers dial.
    pub fn advertised(&self) -> &str {
        if self.advertise.is_empty() {
            &self.listen
        } else {
            &self.advertise
        }
    }
}

impl ClusterConfig {
    /// The cluster port must be dialable and secured (a key, mTLS, or an explicit
    /// `insecure`) unless it listens on loopback only.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if !self.enabled() {
            return Ok(());
        }
        let advertised = self.advertised();
        if is_wildcard(advertised) {
            return invalid(
                "cluster.advertise is needed when cluster.listen is a wildcard address".into(),
            );
        }
        let has_file = !self.secret_file.as_os_str().is_empty();
        if has_file && !self.secret.is_empty() {
            return invalid("set cluster.secret_file or cluster.secret, not both".into());
        }
        let tls = &self.tls;
        let set = |p: &Path| !p.as_os_str().is_empty();
        if set(&tls.cert_file) != set(&tls.key_file) || set(&tls.cert_file) != set(&tls.ca_file) {
            return invalid("cluster.tls needs cert_file, key_file and ca_file together".into());
        }
        let secured = has_file || !self.secret.is_empty() || tls.enabled();
        if !secured && !self.insecure && !self.loopback_only() {
            return invalid(format!(
                "cluster.listen {:?} is reachable from other hosts, and the cluster port serves every cached blob and the membership: set cluster.secret_file (a shared key of at least 32 bytes, e.g. `openssl rand -hex 32`, mode 0600, on every member), or cluster.insecure = true on a network only the members reach",
                self.listen
            ));
        }
        if self.lease_ttl_secs == 0 || self.heartbeat_ms == 0 {
            return invalid(
                "cluster.lease_ttl_secs and cluster.heartbeat_ms must be positive".into(),
            );
        }
        if self.max_voters.is_multiple_of(2) {
            return invalid(format!(
                "cluster.max_voters must be odd (1, 3, 5, ...), not {}: an even number of voters tolerates no more failures than one fewer",
                self.max_voters
            ));
        }
        Ok(())
    }
}

/// Whether `host:port` names no particular address (`0.0.0.0`, `[::]`, `0`, ...): peers
/// cannot dial it.
fn is_wildcard(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_unspecified(),
        // `0` (and `0.0`...) is what inet_aton reads as 0.0.0.0.
        Err(_) => host.bytes().all(|b| b == b'0' || b == b'.'),
    }
}
