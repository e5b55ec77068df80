//! openraft's storage conformance suite on wharf's on-disk log and state machine, and a
//! restart check: what was acknowledged as durable is there after reopening.

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, StorageError, Vote};
use tempfile::TempDir;
use wharf_cluster::store::{LogStore, StateMachine};
use wharf_cluster::types::{LeaseCommand, LeaseOp, NodeId, TypeConfig};

struct OnDisk;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for OnDisk {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = LogStore::open(dir.path()).expect("log store");
        let state = StateMachine::open(dir.path()).expect("state machine");
        Ok((dir, log, state))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(OnDisk).expect("openraft's storage suite");
}

fn entry(term: u64, index: u64, digest: &str) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(LeaseCommand {
            digest: digest.into(),
            node: 1,
            now_ms: index,
            op: LeaseOp::Acquire {
                addr: "a:1".into(),
                ttl_ms: 10,
            },
        }),
    }
}

#[tokio::test]
async fn vote_and_log_survive_a_restart_including_truncation_and_purge() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        log.save_vote(&Vote::new(3, 7)).await.unwrap();
        let entries: Vec<_> = (1..=6).map(|i| entry(1, i, &format!("d{i}"))).collect();
        log.blocking_append(entries).await.unwrap();
        log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 5))
            .await
            .unwrap();
        log.purge(LogId::new(CommittedLeaderId::new(1, 1), 2))
            .await
            .unwrap();
        log.blocking_append([entry(2, 5, "new")]).await.unwrap();
    }
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 7)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(2));
    assert_eq!(
        state.last_log_id.map(|l| (l.leader_id.term, l.index)),
        Some((2, 5))
    );
    let entries = log.try_get_log_entries(0..100).await.unwrap();
    let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
    assert_eq!(indexes, vec![3, 4, 5]);

    // The state machine restarts from its last snapshot.
    let mut sm = StateMachine::open(dir.path()).unwrap();
    sm.apply([entry(2, 5, "sha256:x")]).await.unwrap();
    let mut builder = sm.get_snapshot_builder().await;
    openraft::RaftSnapshotBuilder::build_snapshot(&mut builder)
        .await
        .unwrap();
    let mut reopened = StateMachine::open(dir.path()).unwrap();
    let (applied, _) = reopened.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(5));
    assert!(reopened.read().table.leases.contains_key("sha256:x"));
}
