//! HTTP Basic users from an htpasswd file (bcrypt only, as distribution and zot accept).
//!
//! bcrypt is slow on purpose, which makes it a lever for a flood of logins. So: at most
//! `max_concurrent_hashes` verifications run at once, on the blocking pool, and at most one
//! of them per user name and one per client address, so a flood of guesses queues behind
//! itself and only its sender is answered `Busy` (a login that cannot get a turn within a
//! second). Every verdict (right or wrong) is remembered for a minute in a bounded cache, so
//! clients that send Basic on every request and guessers that repeat themselves cost one
//! hash. An unknown user costs a hash like a known one (against a dummy hash of the file's own
//! cost), so the answer's timing does not tell which names exist.

use std::collections::HashMap;
use std::net::IpAddr;
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
/// User names and client addresses whose turns are tracked at most (each a one-permit
/// semaphore; idle ones are dropped first).
const TRACKED_CALLERS: u64 = 10_000;

/// The users of one htpasswd file.
#[derive(Debug, Default)]
pub struct HtpasswdTable {
    hashes: HashMap<String, String>,
    /// Checked for names not in the file, at the cost of the file's first hash.
    dummy: Option<String>,
}

/// A bcrypt hash of a password no one has, at `cost` (`$2y$<cost>$`).
fn dummy_hash(cost: u32) -> Option<String> {
    bcrypt::hash("wharf: no such user", cost).ok()
}

/// The cost of a `$2y$NN$...` hash.
fn cost_of(hash: &str) -> Option<u32> {
    hash.get(4..6)?.parse().ok()
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
        let dummy = hashes
            .values()
            .next()
            .and_then(|h| cost_of(h))
            .and_then(dummy_hash);
        Ok(HtpasswdTable { hashes, dummy })
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
    /// One hash at a time per user name, and per client address.
    per_user: moka::sync::Cache<String, Arc<Semaphore>>,
    per_client: moka::sync::Cache<IpAddr, Arc<Semaphore>>,
}

/// A one-permit turn of `key`, waited for at most [`WAIT_FOR_A_TURN`].
async fn turn_of<K>(
    turns: &moka::sync::Cache<K, Arc<Semaphore>>,
    key: K,
) -> Result<tokio::sync::OwnedSemaphorePermit, AuthError>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
{
    let semaphore = turns.get_with(key, || Arc::new(Semaphore::new(1)));
    tokio::time::timeout(WAIT_FOR_A_TURN, semaphore.acquire_owned())
        .await
        .map_err(|_| AuthError::Busy)?
        .map_err(|_| AuthError::Busy)
}

impl PasswordChecker {
    /// The htpasswd file at `path` is a secret: refused while others may read it, unless
    /// `allow_world_readable`.
    pub fn open(
        path: &Path,
        max_concurrent_hashes: usize,
        allow_world_readable: bool,
    ) -> Result<PasswordChecker, AuthError> {
        let table = Watched::open_secret(
            "htpasswd file",
            path,
            16 * 1024 * 1024,
            allow_world_readable,
            HtpasswdTable::parse,
        )?;
        Ok(PasswordChecker {
            table,
            remembered: moka::future::Cache::builder()
                .max_capacity(REMEMBERED)
                .time_to_live(REMEMBER_FOR)
                .build(),
            hashing: Arc::new(Semaphore::new(max_concurrent_hashes.max(1))),
            per_user: moka::sync::Cache::builder()
                .max_capacity(TRACKED_CALLERS)
                .time_to_idle(REMEMBER_FOR)
                .build(),
            per_client: moka::sync::Cache::builder()
                .max_capacity(TRACKED_CALLERS)
                .time_to_idle(REMEMBER_FOR)
                .build(),
        })
    }

    pub fn watched(&self) -> Arc<dyn Reload> {
        self.table.clone()
    }

    pub fn has_user(&self, user: &str) -> bool {
        self.table.get().has_user(user)
    }

    /// Whether `password` is `user`'s. An unknown user costs a hash too (and is refused).
    /// `client` is the caller's address, for its share of the hashing.
    pub async fn verify(
        &self,
        user: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<bool, AuthError> {
        let table = self.table.get();
        let (hash, known) = match table.hashes.get(user) {
            Some(hash) => (hash.clone(), true),
            None => match &table.dummy {
                Some(dummy) => (dummy.clone(), false),
                None => return Ok(false),
            },
        };
        drop(table);
        // The stored hash is part of the key: a changed password forgets old verdicts.
        let mut key = Sha256::new();
        for part in [user, password, &hash] {
            key.update(part.as_bytes());
            key.update([0]);
        }
        let key: [u8; 32] = key.finalize().into();
        if let Some(verdict) = self.remembered.get(&key).await {
            return Ok(verdict && known);
        }
        // Queue behind this user's and this client's own earlier hashes first, so a flood
        // holds one of the shared turns at most.
        let user_turn = turn_of(&self.per_user, user.to_string()).await?;
        let client_turn = match client {
            Some(ip) => Some(turn_of(&self.per_client, ip).await?),
            None => None,
        };
        let turn = tokio::time::timeout(WAIT_FOR_A_TURN, Arc::clone(&self.hashing).acquire_owned())
            .await
            .map_err(|_| AuthError::Busy)?
            .map_err(|_| AuthError::Busy)?;
        let password = password.to_string();
        let verdict = tokio::task::spawn_blocking(move || {
            let verdict = bcrypt::verify(password, &hash).unwrap_or(false);
            drop((turn, user_turn, client_turn));
            verdict
        })
        .await
        .map_err(|_| AuthError::Busy)?;
        self.remembered.insert(key, verdict).await;
        Ok(verdict && known)
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
        let checker = PasswordChecker::open(&path, 1, true).unwrap();
        assert!(checker.verify("alice", "s3cret", None).await.unwrap());
        assert!(!checker.verify("alice", "wrong", None).await.unwrap());
        assert!(!checker.verify("mallory", "s3cret", None).await.unwrap());
        // Remembered verdicts: many repeats of one wrong password cost one hash.
        let started = std::time::Instant::now();
        for _ in 0..2000 {
            assert!(!checker.verify("alice", "wrong", None).await.unwrap());
        }
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    fn checker_with(
        users: &[(&str, &str)],
        cost: u32,
        hashes: usize,
    ) -> (tempfile::TempDir, PasswordChecker) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let lines: String = users
            .iter()
            .map(|(u, p)| format!("{u}:{}\n", bcrypt::hash(p, cost).unwrap()))
            .collect();
        std::fs::write(&path, lines).unwrap();
        let checker = PasswordChecker::open(&path, hashes, true).unwrap();
        (dir, checker)
    }

    /// Review #21: the htpasswd file is a secret like the others: refused while other users
    /// may read it, at start and on reload (the previous users stay, and the failure shows).
    #[test]
    fn an_htpasswd_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, format!("alice:{}\n", bcrypt::hash("pw", 4).unwrap())).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = PasswordChecker::open(&path, 1, false)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("other users can read it"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let checker = PasswordChecker::open(&path, 1, false).unwrap();
        std::fs::write(&path, "alice:$2y$04$changed\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o604)).unwrap();
        assert!(!checker.watched().reload(true));
        let status = checker.watched().status();
        assert!(status.failing && status.failures == 1, "{status:?}");
        assert!(checker.has_user("alice"));
    }

    /// Review #11: an unknown name costs a hash like a known one, so timing tells no one
    /// which names exist.
    #[tokio::test]
    async fn unknown_users_cost_a_hash_too() {
        let (_dir, checker) = checker_with(&[("alice", "s3cret")], 8, 2);
        let time = |user: &'static str, n: usize| {
            let checker = &checker;
            async move {
                let started = std::time::Instant::now();
                for i in 0..n {
                    assert!(
                        !checker
                            .verify(user, &format!("guess-{i}"), None)
                            .await
                            .unwrap()
                    );
                }
                started.elapsed() / n as u32
            }
        };
        let known = time("alice", 6).await;
        let unknown = time("nobody", 6).await;
        assert!(
            unknown * 2 >= known,
            "unknown user {unknown:?} per answer, known user {known:?}"
        );
    }

    /// Review #11: a flood of guesses for one user from one address takes one of the shared
    /// hashing turns at most: another user's first login from elsewhere is not refused.
    #[tokio::test]
    async fn a_guessing_flood_hurts_only_the_flooder() {
        let (_dir, checker) = checker_with(&[("alice", "a-pass"), ("bob", "b-pass")], 12, 2);
        let checker = Arc::new(checker);
        let flooder: IpAddr = "192.0.2.1".parse().unwrap();
        let flood: Vec<_> = (0..100)
            .map(|i| {
                let checker = Arc::clone(&checker);
                tokio::spawn(async move {
                    checker
                        .verify("alice", &format!("guess-{i}"), Some(flooder))
                        .await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let bob = checker
            .verify("bob", "b-pass", Some("198.51.100.7".parse().unwrap()))
            .await;
        assert!(
            matches!(bob, Ok(true)),
            "bob's login during the flood: {bob:?}"
        );
        let busy = futures_busy(flood).await;
        assert!(busy > 0, "the flooder was told to slow down");
    }

    async fn futures_busy(tasks: Vec<tokio::task::JoinHandle<Result<bool, AuthError>>>) -> usize {
        let mut busy = 0;
        for task in tasks {
            if matches!(task.await.unwrap(), Err(AuthError::Busy)) {
                busy += 1;
            }
        }
        busy
    }
}
