//! Raft's durable state on local disk, under `<data_dir>/cluster/`.
//!
//! The log and the vote persist across restarts, so a restarted node rejoins under the same
//! identity without ever voting twice in a term. Files are small: the lease table is
//! snapshotted and the log compacted every [`crate::SNAPSHOT_EVERY`] entries.

mod files;
pub mod log;
pub mod log_writer;
pub mod state_machine;

pub use files::{read_optional, write_atomic};
pub use log::LogStore;
pub use state_machine::StateMachine;
