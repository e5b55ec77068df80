//! The lease table: which node fetches which blob, replicated by Raft.
//!
//! Pure and deterministic: applying the same commands yields the same table on every node,
//! because time enters only as the `now_ms` each command carries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::{LeaseAnswer, LeaseCommand, LeaseOp, NodeId};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Lease {
    pub owner: NodeId,
    pub owner_addr: String,
    /// Distinguishes successive holders of one digest: a stale renew or release is refused.
    pub token: u64,
    pub expires_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LeaseTable {
    pub leases: BTreeMap<String, Lease>,
    pub next_token: u64,
}

impl LeaseTable {
    pub fn apply(&mut self, command: &LeaseCommand) -> LeaseAnswer {
        let now = command.now_ms;
        self.leases.retain(|_, lease| lease.expires_ms > now);
        let current = self.leases.get(&command.digest).cloned();
        match &command.op {
            LeaseOp::Acquire { addr, ttl_ms } => match current {
                Some(lease) if lease.owner != command.node => answer(false, &lease),
                // Free, or asked again by its holder (a retried request): (re)grant.
                _ => {
                    self.next_token += 1;
                    let lease = Lease {
                        owner: command.node,
                        owner_addr: addr.clone(),
                        token: self.next_token,
                        expires_ms: now.saturating_add(*ttl_ms),
                    };
                    self.leases.insert(command.digest.clone(), lease.clone());
                    answer(true, &lease)
                }
            },
            LeaseOp::Renew { token, ttl_ms } => match current {
                Some(mut lease) if lease.token == *token => {
                    lease.expires_ms = now.saturating_add(*ttl_ms);
                    self.leases.insert(command.digest.clone(), lease.clone());
                    answer(true, &lease)
                }
                Some(lease) => answer(false, &lease),
                None => LeaseAnswer::default(),
            },
            LeaseOp::Release { token } => match current {
                Some(lease) if lease.token == *token => {
                    self.leases.remove(&command.digest);
                    answer(true, &lease)
                }
                Some(lease) => answer(false, &lease),
                None => LeaseAnswer::default(),
            },
        }
    }
}

fn answer(held: bool, lease: &Lease) -> LeaseAnswer {
    LeaseAnswer {
        held,
        owner: lease.owner,
        owner_addr: lease.owner_addr.clone(),
        token: lease.token,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(node: NodeId, now_ms: u64, op: LeaseOp) -> LeaseCommand {
        LeaseCommand {
            digest: "sha256:aa".into(),
            node,
            now_ms,
            op,
        }
    }

    fn acquire(node: NodeId, now_ms: u64) -> LeaseCommand {
        cmd(
            node,
            now_ms,
            LeaseOp::Acquire {
                addr: format!("n{node}"),
                ttl_ms: 1000,
            },
        )
    }

    #[test]
    fn first_asker_owns_others_learn_the_owner() {
        let mut table = LeaseTable::default();
        let first = table.apply(&acquire(1, 0));
        assert!(first.held);
        let second = table.apply(&acquire(2, 10));
        assert!(!second.held);
        assert_eq!((second.owner, second.owner_addr.as_str()), (1, "n1"));
    }

    #[test]
    fn an_expired_lease_passes_to_the_next_asker_and_the_old_token_is_refused() {
        let mut table = LeaseTable::default();
        let old = table.apply(&acquire(1, 0));
        assert!(!table.apply(&acquire(2, 999)).held, "still valid at 999 ms");
        let new = table.apply(&acquire(2, 1000));
        assert!(new.held && new.token != old.token);
        let renew = table.apply(&cmd(
            1,
            1001,
            LeaseOp::Renew {
                token: old.token,
                ttl_ms: 1000,
            },
        ));
        assert!(!renew.held && renew.owner == 2);
        assert!(
            !table
                .apply(&cmd(1, 1002, LeaseOp::Release { token: old.token }))
                .held
        );
        assert_eq!(table.leases["sha256:aa"].owner, 2);
    }

    #[test]
    fn renew_extends_and_release_frees() {
        let mut table = LeaseTable::default();
        let lease = table.apply(&acquire(1, 0));
        let renewed = table.apply(&cmd(
            1,
            900,
            LeaseOp::Renew {
                token: lease.token,
                ttl_ms: 1000,
            },
        ));
        assert!(renewed.held);
        assert!(!table.apply(&acquire(2, 1500)).held, "renewed until 1900");
        assert!(
            table
                .apply(&cmd(1, 1600, LeaseOp::Release { token: lease.token }))
                .held
        );
        assert!(table.apply(&acquire(2, 1601)).held);
    }

    #[test]
    fn replicas_applying_the_same_commands_agree() {
        let commands = [
            acquire(1, 0),
            acquire(2, 500),
            acquire(3, 1200),
            acquire(1, 1300),
        ];
        let mut a = LeaseTable::default();
        let mut b = LeaseTable::default();
        let answers_a: Vec<_> = commands.iter().map(|c| a.apply(c)).collect();
        let answers_b: Vec<_> = commands.iter().map(|c| b.apply(c)).collect();
        assert_eq!(answers_a, answers_b);
        assert_eq!(a, b);
        assert_eq!(a.leases["sha256:aa"].owner, 3);
    }
}
