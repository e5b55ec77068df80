//! The gRPC endpoint of a node: Raft transport, admin, leases and blob streaming.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::{Stream, StreamExt};
use openraft::raft::VoteRequest;
use tonic::{Request, Response, Status};
use wharf_core::Digest;
use wharf_mirror::{Mirror, MirrorError};
use wharf_proto::v1::admin_server::Admin;
use wharf_proto::v1::blobs_server::Blobs;
use wharf_proto::v1::leases_server::Leases;
use wharf_proto::v1::raft_server::Raft as RaftService;
use wharf_proto::v1::{
    AcquireRequest, BlobChunk, CampaignReply, CampaignRequest, FetchRequest, JoinReply,
    JoinRequest, Lease, LeaseReply, LeaveReply, LeaveRequest, Member, RaftMessage, ReleaseRequest,
    RenewRequest, StatusReply, StatusRequest,
};

use crate::error::ClusterError;
use crate::fanout::{Admission, Fanout};
use crate::faults::Faults;
use crate::node::{ClusterNode, reply_from_answer};
use crate::types::{LeaseOp, NodeId};

/// Serves every cluster service of one node.
#[derive(Clone)]
pub struct Endpoint {
    pub node: Arc<ClusterNode>,
    pub mirror: Arc<Mirror>,
    pub faults: Faults,
    /// Which peers stream each blob from here; past `max_peer_streams`, the next is redirected.
    pub fanout: Arc<Fanout>,
}

fn decode<T: serde::de::DeserializeOwned>(message: &RaftMessage) -> Result<T, Status> {
    serde_json::from_slice(&message.json)
        .map_err(|e| Status::invalid_argument(format!("bad raft message: {e}")))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Response<RaftMessage>, Status> {
    let json = serde_json::to_vec(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftMessage { json: json.into() }))
}

fn status_of(e: ClusterError) -> Status {
    match e {
        ClusterError::NoQuorum(m) => Status::unavailable(m),
        ClusterError::Busy(m) => Status::aborted(m),
        other => Status::internal(other.to_string()),
    }
}

/// A pipeline failure as a gRPC status the fetching peer maps back (see `coordinator`); the
/// message is the one clients may see.
pub fn status_of_mirror(e: &MirrorError) -> Status {
    use wharf_upstream::UpstreamError;
    let message = e.public_message();
    match e {
        _ if e.is_not_found() => Status::not_found(message),
        MirrorError::Denied { .. }
        | MirrorError::Upstream {
            source: UpstreamError::Denied { .. },
            ..
        } => Status::permission_denied(message),
        MirrorError::Invalid {
            code: wharf_core::OciCode::RangeInvalid,
            ..
        } => Status::out_of_range(message),
        MirrorError::RateLimited { .. }
        | MirrorError::Upstream {
            source: UpstreamError::RateLimited { .. },
            ..
        } => Status::resource_exhausted(message),
        MirrorError::TimedOut { .. }
        | MirrorError::Upstream {
            source: UpstreamError::Timeout(_),
            ..
        } => Status::deadline_exceeded(message),
        _ => Status::unavailable(message),
    }
}

#[tonic::async_trait]
impl RaftService for Endpoint {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.faults.check()?;
        let rpc = decode(request.get_ref())?;
        self.node.runoff.heard_from_leader();
        encode(&self.node.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.faults.check()?;
        let rpc: VoteRequest<NodeId> = decode(request.get_ref())?;
        let reply = self.node.raft.vote(rpc.clone()).await;
        if let Ok(answer) = &reply {
            self.node
                .runoff
                .after_vote(&self.node.raft, &rpc, answer)
                .await;
        }
        encode(&reply)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.faults.check()?;
        let rpc = decode(request.get_ref())?;
        self.node.runoff.heard_from_leader();
        encode(&self.node.raft.install_snapshot(rpc).await)
    }
}

#[tonic::async_trait]
impl Admin for Endpoint {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        self.faults.check()?;
        let request = request.into_inner();
        if request.node_id == 0 || request.addr.is_empty() {
            return Err(Status::invalid_argument("node_id and addr are required"));
        }
        let leader_id = self
            .node
            .join(request.node_id, &request.addr)
            .await
            .map_err(status_of)?;
        Ok(Response::new(JoinReply { leader_id }))
    }

    async fn leave(&self, request: Request<LeaveRequest>) -> Result<Response<LeaveReply>, Status> {
        self.faults.check()?;
        self.node
            .leave_once(request.into_inner().node_id)
            .await
            .map_err(status_of)?;
        Ok(Response::new(LeaveReply {}))
    }

    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignReply>, Status> {
        self.faults.check()?;
        self.node
            .campaign(request.into_inner().term)
            .await
            .map_err(status_of)?;
        Ok(Response::new(CampaignReply {}))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        // Status answers even when partitioned: it is how an operator sees the partition.
        let metrics = self.node.raft.metrics().borrow().clone();
        let applied = self.node.state.read();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Ok(Response::new(StatusReply {
            node_id: self.node.id,
            leader_id: metrics.current_leader.unwrap_or(0),
            term: metrics.current_term,
            state: format!("{:?}", metrics.state),
            last_log_index: metrics.last_log_index.unwrap_or(0),
            applied_index: metrics.last_applied.map_or(0, |l| l.index),
            members: self
                .node
                .members()
                .into_iter()
                .map(|(id, addr, voter)| Member {
                    id,
                    addr,
                    voter,
                    last_contact_ms: self
                        .node
                        .millis_since_contact(id)
                        .map_or(-1, |ms| i64::try_from(ms).unwrap_or(i64::MAX)),
                })
                .collect(),
            leases: applied
                .table
                .leases
                .iter()
                .map(|(digest, lease)| Lease {
                    digest: digest.clone(),
                    owner: lease.owner,
                    token: lease.token,
                    expires_in_ms: lease.expires_ms as i64 - now,
                })
                .collect(),
            fallbacks: self.node.fallbacks(),
        }))
    }
}

impl Endpoint {
    async fn lease(
        &self,
        digest: &str,
        node: u64,
        op: LeaseOp,
    ) -> Result<Response<LeaseReply>, Status> {
        self.faults.check()?;
        if digest.parse::<Digest>().is_err() {
            return Err(Status::invalid_argument("bad digest"));
        }
        let answer = self
            .node
            .lease_from_peer(digest, node, op)
            .await
            .map_err(status_of)?;
        Ok(Response::new(reply_from_answer(answer)))
    }

    fn ttl_ms(&self) -> u64 {
        self.node.lease_ttl.as_millis() as u64
    }
}

#[tonic::async_trait]
impl Leases for Endpoint {
    async fn acquire(
        &self,
        request: Request<AcquireRequest>,
    ) -> Result<Response<LeaseReply>, Status> {
        let r = request.into_inner();
        let op = LeaseOp::Acquire {
            addr: r.addr,
            ttl_ms: self.ttl_ms(),
        };
        self.lease(&r.digest, r.node_id, op).await
    }

    async fn renew(&self, request: Request<RenewRequest>) -> Result<Response<LeaseReply>, Status> {
        let r = request.into_inner();
        let op = LeaseOp::Renew {
            token: r.token,
            ttl_ms: self.ttl_ms(),
        };
        self.lease(&r.digest, r.node_id, op).await
    }

    async fn release(
        &self,
        request: Request<ReleaseRequest>,
    ) -> Result<Response<LeaseReply>, Status> {
        let r = request.into_inner();
        self.lease(&r.digest, r.node_id, LeaseOp::Release { token: r.token })
            .await
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<BlobChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Blobs for Endpoint {
    type FetchStream = ChunkStream;

    async fn fetch(&self, request: Request<FetchRequest>) -> Result<Response<ChunkStream>, Status> {
        self.faults.check()?;
        let request = request.into_inner();
        let digest: Digest = request
            .digest
            .parse()
            .map_err(|_| Status::invalid_argument("bad digest"))?;
        let metrics = self.mirror.stats.metrics.clone();
        let serving =
            match self
                .fanout
                .admit(&request.digest, &request.relay_addr, request.accept_relay)
            {
                Admission::Serve(guard) => guard,
                Admission::Redirect(relays) => {
                    metrics.peer_redirect();
                    let redirect = BlobChunk {
                        size: None,
                        data: Default::default(),
                        relays,
                    };
                    return Ok(Response::new(futures::stream::iter([Ok(redirect)]).boxed()));
                }
            };
        let stream = self
            .mirror
            .blobs
            .peer_stream(&digest, request.offset)
            .await
            .map_err(|e| status_of_mirror(&e))?
            .ok_or_else(|| Status::failed_precondition("not fetching nor storing this blob"))?;
        let size = stream.size;
        let faults = self.faults.clone();
        let chunks = stream.body.map(move |chunk| {
            // The stream counts towards the fan-out limit until it ends or breaks.
            let _serving = &serving;
            // A partition cuts streams already flowing, too.
            faults.check()?;
            let data = chunk.map_err(|e| Status::aborted(e.to_string()))?;
            metrics.peer_bytes_served(data.len() as u64);
            Ok(BlobChunk {
                size: None,
                data,
                relays: Vec::new(),
            })
        });
        // The first message tells the size, so the receiver can answer its clients at once.
        let head = futures::stream::once(async move {
            Ok(BlobChunk {
                size,
                data: Default::default(),
                relays: Vec::new(),
            })
        });
        Ok(Response::new(head.chain(chunks).boxed()))
    }
}
