//! `wharf cluster status` output: a table for people, JSON for scripts.

use wharf_proto::v1::StatusReply;

pub fn to_text(status: &StatusReply) -> String {
    let mut out = format!(
        "node {}  state {}  leader {}  term {}  log {}  applied {}  fallbacks {}\n",
        status.node_id,
        status.state,
        match status.leader_id {
            0 => "none".to_string(),
            id => id.to_string(),
        },
        status.term,
        status.last_log_index,
        status.applied_index,
        status.fallbacks,
    );
    out.push_str("members:\n");
    for m in &status.members {
        let role = if m.voter { "voter" } else { "learner" };
        let leader = if m.id == status.leader_id {
            " (leader)"
        } else {
            ""
        };
        let contact = match m.last_contact_ms {
            ms if ms < 0 => String::new(),
            ms => format!("  last contact {ms} ms ago"),
        };
        let health = health_of(status, m);
        out.push_str(&format!(
            "  {:<20} {:<24} {role:<8} {health:<12}{leader}{contact}\n",
            m.id, m.addr
        ));
    }
    out.push_str(&format!("leases: {}\n", status.leases.len()));
    for l in &status.leases {
        out.push_str(&format!(
            "  {}  owner {}  token {}  expires in {} ms\n",
            l.digest, l.owner, l.token, l.expires_in_ms
        ));
    }
    out
}

/// `ok`, `unreachable` or `unknown`, as the node that answered sees the member.
fn health_of(status: &StatusReply, member: &wharf_proto::v1::Member) -> &'static str {
    let last_contact = u64::try_from(member.last_contact_ms).ok();
    wharf_cluster::member_health(member.id == status.node_id, last_contact)
}

pub fn to_json(status: &StatusReply) -> String {
    let members: Vec<serde_json::Value> = status
        .members
        .iter()
        .map(|m| {
            serde_json::json!({
                "id": m.id,
                "addr": m.addr,
                "voter": m.voter,
                "role": if m.voter { "voter" } else { "learner" },
                "last_contact_ms": (m.last_contact_ms >= 0).then_some(m.last_contact_ms),
                "health": health_of(status, m),
            })
        })
        .collect();
    let leases: Vec<serde_json::Value> = status
        .leases
        .iter()
        .map(|l| {
            serde_json::json!({"digest": l.digest, "owner": l.owner, "token": l.token, "expires_in_ms": l.expires_in_ms})
        })
        .collect();
    serde_json::json!({
        "node_id": status.node_id,
        "leader_id": (status.leader_id != 0).then_some(status.leader_id),
        "term": status.term,
        "state": status.state,
        "last_log_index": status.last_log_index,
        "applied_index": status.applied_index,
        "fallbacks": status.fallbacks,
        "members": members,
        "leases": leases,
    })
    .to_string()
}
