//! HTTP Basic users from an htpasswd file (bcrypt only, as distribution and zot accept).
//!
//! bcrypt is slow on purpose, which makes it a lever for a flood of logins. So: at most
//! `max_concurrent_hashes` verifications run at once, on the blocking pool; a login that
//! cannot get a turn within a second is answered `Busy`; and every verdict (right or wrong) is
//! remembered for a minute in a bounded cache, so clients that send Basic on every request
//! and guessers that repeat themselves cost one hash.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::AuthError;
use crate::reload::{Reload, Watched};

/// Verdicts remembered at most; 32-byte keys, so about a megabyte.
const REMEMBERED: u64 = 20_000;
const REMEMBER_FOR: Duration = Duration::from_secs(60);
const WAIT_FOR_A_TURN: Duration = Duration::from_secs(1);

/// The users of one htpasswd file.
#[derive(Debug, Default)]
pub struct HtpasswdTable {
    hashes: HashMap<String, String>,
}

impl HtpasswdTable {
    /// `user:$2y$...` lines; blank lines and `#` comments are skipped. Any other hash kind is
    /// an error naming its line, so a file meant for another server is not half-used.
    pub fn parse(text: &[u8]) -> Result<HtpasswdTable, String> {
        let text = std::str::from_utf8(text).map_err(|_| "not UTF-8".to_string())?;
        let mut hashes = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| format!("line {}: expected user:hash", n + 1))?;
            if !["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p)) {
                return Err(format!(
                    "line {}: user {user:?} has no bcrypt hash (htpasswd -B)",
                    n + 1
                ));
            }
            hashes.insert(user.to_string(), hash.to_string());
        }
        Ok(HtpasswdTable { hashes })
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    pub fn has_user(&self, user: &str) -> bool {
        self.hashes.contains_key(user)
    }
}

/// Checks Basic passwords against a watched htpasswd file, within a bound on bcrypt work.
pub struct PasswordChecker {
    table: Arc<Watched<HtpasswdTable>>,
    remembered: moka::future::Cache<[u8; 32], bool>,
    hashing: Arc<Semaphore>,
}

impl PasswordChecker {
    pub fn open(path: &Path, max_concurrent_hashes: usize) -> Result<PasswordChecker, AuthError> {
        let table = Watched::open(
            "htpasswd file",
            path,
            16 * 1024 * 1024,
            HtpasswdTable::parse,
        )?;
        Ok(PasswordChecker {
            table,
            remembered: moka::future::Cache::builder()
                .max_capacity(REMEMBERED)
                .time_to_live(REMEMBER_FOR)
                .build(),
            hashing: Arc::new(Semaphore::new(max_concurrent_hashes.max(1))),
        })
    }

    pub fn watched(&self) -> Arc<dyn Reload> {
        self.table.clone()
    }

    pub fn has_user(&self, user: &str) -> bool {
        self.table.get().has_user(user)
    }

    /// Whether `password` is `user`'s. Unknown users are answered at once (no hash).
    pub async fn verify(&self, user: &str, password: &str) -> Result<bool, AuthError> {
        let Some(hash) = self.table.get().hashes.get(user).cloned() else {
            return Ok(false);
        };
        // The stored hash is part of the key: a changed password forgets old verdicts.
        let mut key = Sha256::new();
        for part in [user, password, &hash] {
            key.update(part.as_bytes());
            key.update([0]);
        }
        let key: [u8; 32] = key.finalize().into();
        if let Some(verdict) = self.remembered.get(&key).await {
            return Ok(verdict);
        }
        let turn = tokio::time::timeout(WAIT_FOR_A_TURN, Arc::clone(&self.hashing).acquire_owned())
            .await
            .map_err(|_| AuthError::Busy)?
            .map_err(|_| AuthError::Busy)?;
        let password = password.to_string();
        let verdict = tokio::task::spawn_blocking(move || {
            let verdict = bcrypt::verify(password, &hash).unwrap_or(false);
            drop(turn);
            verdict
        })
        .await
        .map_err(|_| AuthError::Busy)?;
        self.remembered.insert(key, verdict).await;
        Ok(verdict)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_bcrypt_lines_are_accepted() {
        let t = HtpasswdTable::parse(b"# users\n\nalice:$2y$05$abc\nbob:$2b$04$def\n").unwrap();
        assert_eq!(t.len(), 2);
        let err = HtpasswdTable::parse(b"alice:$apr1$xyz\n").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
        assert!(HtpasswdTable::parse(b"nocolon\n").is_err());
    }

    #[tokio::test]
    async fn right_and_wrong_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        std::fs::write(&path, format!("alice:{hash}\n")).unwrap();
        let checker = PasswordChecker::open(&path, 1).unwrap();
        assert!(checker.verify("alice", "s3cret").await.unwrap());
        assert!(!checker.verify("alice", "wrong").await.unwrap());
        assert!(!checker.verify("mallory", "s3cret").await.unwrap());
        // Remembered verdicts: many repeats of one wrong password cost one hash.
        let started = std::time::Instant::now();
        for _ in 0..2000 {
            assert!(!checker.verify("alice", "wrong").await.unwrap());
        }
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
