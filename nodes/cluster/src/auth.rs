//! Authentication of every cluster RPC (Raft, leases, peer blob streams, admin): each request
//! carries proof of the shared cluster key, an HMAC-SHA256 of the current time under the key
//! (`x-wharf-cluster-proof: v1.<unix seconds>.<hex>`), checked in constant time and within
//! [`MAX_SKEW`] of the receiver's clock. Without the key, a caller gets `UNAUTHENTICATED`
//! before any service code runs: no cached digest, no membership change, no status.
//!
//! The key never crosses the wire; a proof seen on the network is good for [`MAX_SKEW`] and
//! the traffic itself is not encrypted, so the cluster network should still be private (the
//! deploy recipes keep it so).

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use tonic::metadata::MetadataValue;
use tonic::{Request, Status};
use wharf_core::config::{ClusterConfig, ConfigError, read_secret_file};

/// The metadata key that carries the proof.
pub const PROOF_HEADER: &str = "x-wharf-cluster-proof";
/// How far the sender's clock may be from the receiver's, in seconds.
pub const MAX_SKEW: u64 = 60;
/// The shortest key accepted.
pub const MIN_KEY_BYTES: usize = 32;
const CONTEXT: &[u8] = b"wharf-cluster-rpc-v1:";

/// The shared key of a cluster (`[cluster] secret_file`), the same on every member.
#[derive(Clone)]
pub struct ClusterKey {
    key: Arc<hmac::Key>,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(<redacted>)")
    }
}

impl ClusterKey {
    /// A key from its secret bytes (at least [`MIN_KEY_BYTES`], surrounding whitespace
    /// ignored).
    pub fn from_secret(secret: &[u8]) -> Result<ClusterKey, ConfigError> {
        let secret = secret.trim_ascii();
        if secret.len() < MIN_KEY_BYTES {
            return Err(ConfigError::Invalid(format!(
                "cluster.secret_file holds {} bytes; at least {MIN_KEY_BYTES} are needed (e.g. `openssl rand -hex 32`)",
                secret.len()
            )));
        }
        Ok(ClusterKey {
            key: Arc::new(hmac::Key::new(hmac::HMAC_SHA256, secret)),
        })
    }

    /// `[cluster] secret_file`, read once (mode 0600 unless `allow_world_readable`), or the
    /// inline `secret`; `None` when neither is set.
    pub fn load(
        config: &ClusterConfig,
        allow_world_readable: bool,
    ) -> Result<Option<ClusterKey>, ConfigError> {
        if config.secret_file.as_os_str().is_empty() {
            if config.secret.is_empty() {
                return Ok(None);
            }
            return ClusterKey::from_secret(config.secret.as_bytes()).map(Some);
        }
        let secret = read_secret_file(Path::new(&config.secret_file), allow_world_readable)?;
        ClusterKey::from_secret(&secret).map(Some)
    }

    fn tag(&self, secs: u64) -> hmac::Tag {
        let mut message = CONTEXT.to_vec();
        message.extend_from_slice(secs.to_string().as_bytes());
        hmac::sign(&self.key, &message)
    }

    /// The proof a request sent at `secs` carries.
    pub fn proof(&self, secs: u64) -> String {
        format!("v1.{secs}.{}", hex::encode(self.tag(secs).as_ref()))
    }

    /// Whether `value` proves the key at a time within [`MAX_SKEW`] of `now`.
    pub fn verify(&self, value: &str, now: u64) -> bool {
        let mut parts = value.splitn(3, '.');
        let (Some("v1"), Some(secs), Some(mac)) = (parts.next(), parts.next(), parts.next()) else {
            return false;
        };
        let (Ok(secs), Ok(mac)) = (secs.parse::<u64>(), hex::decode(mac)) else {
            return false;
        };
        if secs.abs_diff(now) > MAX_SKEW {
            return false;
        }
        let mut message = CONTEXT.to_vec();
        message.extend_from_slice(secs.to_string().as_bytes());
        hmac::verify(&self.key, &message, &mac).is_ok()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Adds this node's proof to every outgoing cluster request (nothing without a key).
#[derive(Clone, Default)]
pub struct Prove(pub Option<ClusterKey>);

impl tonic::service::Interceptor for Prove {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(key) = &self.0
            && let Ok(value) = MetadataValue::try_from(key.proof(now_secs()))
        {
            request.metadata_mut().insert(PROOF_HEADER, value);
        }
        Ok(request)
    }
}

/// Refuses incoming cluster requests without a valid proof (accepts all without a key: a
/// loopback development cluster, or `[cluster] insecure = true`).
#[derive(Clone, Default)]
pub struct Verify(pub Option<ClusterKey>);

impl tonic::service::Interceptor for Verify {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(key) = &self.0 else {
            return Ok(request);
        };
        let proven = request
            .metadata()
            .get(PROOF_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| key.verify(v, now_secs()));
        if proven {
            Ok(request)
        } else {
            Err(Status::unauthenticated(
                "cluster RPCs need proof of the cluster key ([cluster] secret_file)",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_verify_only_under_the_same_key_and_near_in_time() {
        let key = ClusterKey::from_secret(&[7u8; 32]).unwrap_or_else(|e| panic!("{e}"));
        let other = ClusterKey::from_secret(&[8u8; 32]).unwrap_or_else(|e| panic!("{e}"));
        let proof = key.proof(1_000_000);
        assert!(key.verify(&proof, 1_000_000));
        assert!(key.verify(&proof, 1_000_000 + MAX_SKEW));
        assert!(!key.verify(&proof, 1_000_000 + MAX_SKEW + 1), "too old");
        assert!(!other.verify(&proof, 1_000_000), "another key");
        let forged = proof.replace("v1.1000000.", "v1.1000030.");
        assert!(!key.verify(&forged, 1_000_000), "time changed");
        for junk in ["", "v1", "v1.x.y", "v2.1000000.00", "v1.1000000.zz"] {
            assert!(!key.verify(junk, 1_000_000), "{junk:?}");
        }
        assert!(ClusterKey::from_secret(b"short").is_err());
        assert!(!format!("{key:?}").contains('7'));
    }
}
