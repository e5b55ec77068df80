//! The replicated lease table as openraft's state machine.
//!
//! The table lives in memory; snapshots of it persist in `raft-snapshot.json` (written when
//! built or installed), and a restarting node starts from the latest one and re-applies the
//! log after it.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::files::{read_optional, write_atomic};
use crate::leases::LeaseTable;
use crate::types::{LeaseAnswer, NodeId, StorageResult, TypeConfig};

const SNAPSHOT_FILE: &str = "raft-snapshot.json";

/// Everything a snapshot holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Applied {
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, BasicNode>,
    pub table: LeaseTable,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

/// openraft's state machine; clones share the table, so the node can read leases for status.
#[derive(Clone)]
pub struct StateMachine {
    dir: PathBuf,
    applied: Arc<Mutex<Applied>>,
    snapshot: Arc<Mutex<Option<Arc<StoredSnapshot>>>>,
}

impl StateMachine {
    /// Open in `dir`, starting from the snapshot a previous run left there.
    pub fn open(dir: &Path) -> std::io::Result<StateMachine> {
        std::fs::create_dir_all(dir)?;
        let (applied, snapshot) = match read_optional(&dir.join(SNAPSHOT_FILE))? {
            Some(bytes) => {
                let stored: StoredSnapshot =
                    serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
                let applied: Applied =
                    serde_json::from_slice(&stored.data).map_err(std::io::Error::other)?;
                (applied, Some(Arc::new(stored)))
            }
            None => (Applied::default(), None),
        };
        Ok(StateMachine {
            dir: dir.to_path_buf(),
            applied: Arc::new(Mutex::new(applied)),
            snapshot: Arc::new(Mutex::new(snapshot)),
        })
    }

    /// A copy of the current state.
    pub fn read(&self) -> Applied {
        self.applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Persist `stored` as the current snapshot (on the blocking pool: it fsyncs).
    async fn save(&self, stored: StoredSnapshot) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(&stored).map_err(std::io::Error::other)?;
        let path = self.dir.join(SNAPSHOT_FILE);
        tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
            .await
            .map_err(std::io::Error::other)??;
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(stored));
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let applied = self.read();
        let data =
            serde_json::to_vec(&applied).map_err(|e| StorageIOError::read_state_machine(&e))?;
        let snapshot_id = match applied.last_applied {
            Some(id) => format!("{}-{}", id.leader_id, id.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership,
            snapshot_id,
        };
        self.save(StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<LeaseAnswer>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        let mut answers = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => answers.push(LeaseAnswer::default()),
                EntryPayload::Normal(command) => answers.push(applied.table.apply(&command)),
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    answers.push(LeaseAnswer::default());
                }
            }
        }
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let applied: Applied = serde_json::from_slice(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        self.save(StoredSnapshot {
            meta: meta.clone(),
            data,
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = applied;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let stored = self
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok(stored.map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}
