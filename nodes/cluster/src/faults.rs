//! Fault injection at the transport seam, for partition tests of real processes.
//!
//! When `WHARF_CLUSTER_FAULT_FILE` names a file and that file exists, the node is cut off: it
//! refuses every incoming cluster RPC and fails every outgoing one, as if its network to the
//! other members were gone (its HTTP API, S3 and the upstream are unaffected). Removing the
//! file heals the partition. Unset in production.

use std::path::PathBuf;

#[derive(Clone, Default)]
pub struct Faults {
    file: Option<PathBuf>,
}

impl Faults {
    pub fn from_env() -> Faults {
        Faults {
            file: std::env::var_os("WHARF_CLUSTER_FAULT_FILE").map(PathBuf::from),
        }
    }

    /// Whether the node is partitioned away right now.
    pub fn isolated(&self) -> bool {
        self.file.as_ref().is_some_and(|f| f.exists())
    }

    /// `Err(UNAVAILABLE)` while partitioned.
    pub fn check(&self) -> Result<(), tonic::Status> {
        if self.isolated() {
            Err(tonic::Status::unavailable("partitioned (fault injection)"))
        } else {
            Ok(())
        }
    }
}
