//! The Raft log: entries kept in memory and appended to `raft-log.jsonl`, fsynced before
//! openraft is told they are durable. The vote is its own small file. All file work is done
//! by the [`LogWriter`] thread, never on a runtime thread.
//!
//! Each line of the log file is one [`Record`]; replaying them rebuilds the log. Purging
//! rewrites the file with what remains, so it never grows beyond the snapshot interval.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use serde::{Deserialize, Serialize};

use super::files::{read_optional, write_atomic};
use super::log_writer::LogWriter;
use crate::types::{NodeId, StorageResult, TypeConfig};

const LOG_FILE: &str = "raft-log.jsonl";
const VOTE_FILE: &str = "raft-vote.json";

#[derive(Serialize, Deserialize)]
enum Record {
    Append(Entry<TypeConfig>),
    /// Delete entries from this index on (a conflicting suffix).
    Truncate(u64),
    /// Entries up to and including this id are in a snapshot.
    Purged(LogId<NodeId>),
}

#[derive(Default)]
struct Entries {
    log: BTreeMap<u64, Entry<TypeConfig>>,
    last_purged: Option<LogId<NodeId>>,
}

/// openraft's log storage. Entries are shared with [`LogReader`]s; the file and vote are owned
/// here, as openraft calls storage methods one at a time.
pub struct LogStore {
    dir: PathBuf,
    writer: LogWriter,
    entries: Arc<Mutex<Entries>>,
    vote: Option<Vote<NodeId>>,
}

/// A read handle for openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    entries: Arc<Mutex<Entries>>,
}

fn io_error(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

impl LogStore {
    /// Open (or create) the log in `dir`, replaying what a previous run wrote.
    pub fn open(dir: &Path) -> std::io::Result<LogStore> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(LOG_FILE);
        let mut entries = Entries::default();
        if let Ok(file) = File::open(&path) {
            for line in BufReader::new(file).lines() {
                let line = line?;
                // A torn last line (crash mid-append) was never acknowledged: stop there.
                let Ok(record) = serde_json::from_str::<Record>(&line) else {
                    break;
                };
                match record {
                    Record::Append(entry) => {
                        entries.log.insert(entry.log_id.index, entry);
                    }
                    Record::Truncate(index) => {
                        entries.log.split_off(&index);
                    }
                    Record::Purged(id) => {
                        entries.log = entries.log.split_off(&(id.index + 1));
                        entries.last_purged = Some(id);
                    }
                }
            }
        }
        let vote = match read_optional(&dir.join(VOTE_FILE))? {
            Some(bytes) => Some(serde_json::from_slice(&bytes).map_err(std::io::Error::other)?),
            None => None,
        };
        let file = write_fresh(dir, &entries)?;
        Ok(LogStore {
            dir: dir.to_path_buf(),
            writer: LogWriter::start(path, file)?,
            entries: Arc::new(Mutex::new(entries)),
            vote,
        })
    }

    /// The log's disk writer (its `fsync` count shows group commit at work).
    pub fn writer(&self) -> &LogWriter {
        &self.writer
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn encode(records: &[Record]) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    for record in records {
        push_record(&mut bytes, record)?;
    }
    Ok(bytes)
}

/// The log file's bytes holding exactly `entries`.
fn fresh_bytes(entries: &Entries) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if let Some(id) = entries.last_purged {
        push_record(&mut bytes, &Record::Purged(id))?;
    }
    for entry in entries.log.values() {
        push_record(&mut bytes, &Record::Append(entry.clone()))?;
    }
    Ok(bytes)
}

/// Replace the log file with exactly `entries` (at start-up); the handle appends after them.
fn write_fresh(dir: &Path, entries: &Entries) -> std::io::Result<File> {
    let path = dir.join(LOG_FILE);
    write_atomic(&path, &fresh_bytes(entries)?)?;
    OpenOptions::new().append(true).open(&path)
}

fn push_record(bytes: &mut Vec<u8>, record: &Record) -> std::io::Result<()> {
    serde_json::to_writer(&mut *bytes, record).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    Ok(())
}

fn read_range<RB: RangeBounds<u64>>(entries: &Mutex<Entries>, range: RB) -> Vec<Entry<TypeConfig>> {
    let entries = entries.lock().unwrap_or_else(|p| p.into_inner());
    entries.log.range(range).map(|(_, e)| e.clone()).collect()
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        Ok(read_range(&self.entries, range))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        Ok(read_range(&self.entries, range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let entries = self.entries();
        let last = entries.log.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: entries.last_purged,
            last_log_id: last.or(entries.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            entries: self.entries.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let bytes = serde_json::to_vec(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        self.writer
            .replace(self.dir.join(VOTE_FILE), bytes)
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        self.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        Ok(self.vote)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        {
            let mut shared = self.entries();
            for entry in &entries {
                shared.log.insert(entry.log_id.index, entry.clone());
            }
        }
        let records: Vec<Record> = entries.into_iter().map(Record::Append).collect();
        // Readable now; durable when the writer thread says so (grouped with other appends).
        let bytes = encode(&records).map_err(io_error)?;
        self.writer
            .append(
                bytes,
                Box::new(move |result| callback.log_io_completed(result)),
            )
            .await;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.entries().log.split_off(&log_id.index);
        let bytes = encode(&[Record::Truncate(log_id.index)]).map_err(io_error)?;
        self.writer.append_durable(bytes).await.map_err(io_error)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let bytes = {
            let mut entries = self.entries();
            entries.log = entries.log.split_off(&(log_id.index + 1));
            entries.last_purged = Some(log_id);
            fresh_bytes(&entries).map_err(io_error)?
        };
        self.writer.rewrite(bytes).await.map_err(io_error)
    }
}
