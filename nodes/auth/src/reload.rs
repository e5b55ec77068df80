//! Files the configuration names (htpasswd, JWKS, TLS certificates) are re-read when they
//! change, so renewals and user changes need no restart. A file that no longer loads leaves
//! the last good value in use and says why in the log.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use crate::AuthError;

/// Something that re-reads its files when they changed (or always, when `force`d by SIGHUP).
pub trait Reload: Send + Sync {
    /// Blocking file I/O: call from a blocking thread. Returns whether a new value took effect.
    fn reload(&self, force: bool) -> bool;
    /// Whether its latest reload failed (the previous version still in force), for the
    /// status page and the `wharf_reloads_failing` gauge.
    fn status(&self) -> ReloadStatus;
}

/// How one reloaded file (or the config file) fares.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadStatus {
    pub what: &'static str,
    pub file: String,
    /// The latest attempt failed: the previous version is still in force.
    pub failing: bool,
    /// Failed attempts since start.
    pub failures: u64,
    pub last_error: Option<String>,
}

/// The outcome of a file's reloads, kept beside it.
#[derive(Default)]
pub struct ReloadRecord {
    inner: Mutex<(bool, u64, Option<String>)>,
}

impl ReloadRecord {
    fn lock(&self) -> std::sync::MutexGuard<'_, (bool, u64, Option<String>)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn succeeded(&self) {
        self.lock().0 = false;
    }

    pub fn failed(&self, reason: &str) {
        let mut inner = self.lock();
        inner.0 = true;
        inner.1 = inner.1.saturating_add(1);
        inner.2 = Some(reason.chars().take(512).collect());
    }

    pub fn status(&self, what: &'static str, file: &Path) -> ReloadStatus {
        let inner = self.lock();
        ReloadStatus {
            what,
            file: file.display().to_string(),
            failing: inner.0,
            failures: inner.1,
            last_error: inner.2.clone(),
        }
    }
}

/// What identifies one version of a file: cert-manager swaps a symlink, editors rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl Stamp {
    pub fn of(path: &Path) -> Option<Stamp> {
        let m = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&m);
        #[cfg(not(unix))]
        let inode = 0;
        Some(Stamp {
            modified: m.modified().ok(),
            len: m.len(),
            inode,
        })
    }
}

type Loader<T> = Box<dyn Fn(&[u8]) -> Result<T, String> + Send + Sync>;

/// A value parsed from one file, current as of the last [`Reload::reload`].
pub struct Watched<T> {
    what: &'static str,
    path: PathBuf,
    max_bytes: u64,
    load: Loader<T>,
    current: RwLock<Arc<T>>,
    stamp: Mutex<Option<Stamp>>,
    record: ReloadRecord,
    /// Refuse the file while users other than its owner may read it (a secret).
    secret: bool,
}

impl<T: Send + Sync + 'static> Watched<T> {
    /// Read and parse the file now; failing here fails start-up.
    pub fn open(
        what: &'static str,
        path: &Path,
        max_bytes: u64,
        load: impl Fn(&[u8]) -> Result<T, String> + Send + Sync + 'static,
    ) -> Result<Arc<Watched<T>>, AuthError> {
        Watched::open_with(what, path, max_bytes, false, load)
    }

    /// As [`Watched::open`], for a secret: refused (at start and on every reload) while users
    /// other than its owner may read it, unless `allow_world_readable`.
    pub fn open_secret(
        what: &'static str,
        path: &Path,
        max_bytes: u64,
        allow_world_readable: bool,
        load: impl Fn(&[u8]) -> Result<T, String> + Send + Sync + 'static,
    ) -> Result<Arc<Watched<T>>, AuthError> {
        Watched::open_with(what, path, max_bytes, !allow_world_readable, load)
    }

    fn open_with(
        what: &'static str,
        path: &Path,
        max_bytes: u64,
        secret: bool,
        load: impl Fn(&[u8]) -> Result<T, String> + Send + Sync + 'static,
    ) -> Result<Arc<Watched<T>>, AuthError> {
        let stamp = Stamp::of(path);
        let bytes = read_checked(path, max_bytes, secret).map_err(|reason| AuthError::File {
            what,
            path: path.to_path_buf(),
            reason,
        })?;
        let value = load(&bytes).map_err(|reason| AuthError::File {
            what,
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(Arc::new(Watched {
            what,
            path: path.to_path_buf(),
            max_bytes,
            load: Box::new(load),
            current: RwLock::new(Arc::new(value)),
            stamp: Mutex::new(stamp),
            record: ReloadRecord::default(),
            secret,
        }))
    }

    /// The value as last loaded.
    pub fn get(&self) -> Arc<T> {
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

impl<T: Send + Sync + 'static> Reload for Watched<T> {
    fn reload(&self, force: bool) -> bool {
        let stamp = Stamp::of(&self.path);
        {
            let mut last = match self.stamp.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            if !force && *last == stamp {
                return false;
            }
            *last = stamp;
        }
        match read_checked(&self.path, self.max_bytes, self.secret)
            .and_then(|bytes| (self.load)(&bytes))
        {
            Ok(value) => {
                match self.current.write() {
                    Ok(mut guard) => *guard = Arc::new(value),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(value),
                }
                self.record.succeeded();
                info!(file = %self.path.display(), what = self.what, "reloaded");
                true
            }
            Err(reason) => {
                self.record.failed(&reason);
                warn!(file = %self.path.display(), what = self.what, %reason, "reload failed: keeping the previous version");
                false
            }
        }
    }

    fn status(&self) -> ReloadStatus {
        self.record.status(self.what, &self.path)
    }
}

/// The file within `max_bytes`; with `secret`, refused while others may read it.
fn read_checked(path: &Path, max_bytes: u64, secret: bool) -> Result<Vec<u8>, String> {
    if !secret {
        return read_bounded(path, max_bytes);
    }
    let bytes = wharf_core::config::read_secret_file(path, false).map_err(|e| e.to_string())?;
    if bytes.len() as u64 > max_bytes {
        return Err(format!("more than the {max_bytes} bytes allowed"));
    }
    Ok(bytes)
}

fn read_bounded(path: &Path, max_bytes: u64) -> Result<Vec<u8>, String> {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if len > max_bytes {
        return Err(format!("{len} bytes, more than the {max_bytes} allowed"));
    }
    std::fs::read(path).map_err(|e| e.to_string())
}

/// Check `items` for changed files every `interval`, on the blocking pool, until the runtime
/// stops. One task for all of them.
pub fn spawn_watcher(items: Vec<Arc<dyn Reload>>, interval: Duration) {
    if items.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let items = items.clone();
            let _ = tokio::task::spawn_blocking(move || {
                for item in &items {
                    item.reload(false);
                }
            })
            .await;
        }
    });
}

/// Re-read every file now (SIGHUP), on the blocking pool.
pub async fn reload_all(items: &[Arc<dyn Reload>]) {
    let items = items.to_vec();
    let _ = tokio::task::spawn_blocking(move || {
        for item in &items {
            item.reload(true);
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_changed_file_is_reloaded_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n");
        std::fs::write(&path, "1").unwrap();
        let parse = |b: &[u8]| {
            std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .ok_or_else(|| "not a number".to_string())
        };
        let watched = Watched::open("number", &path, 100, parse).unwrap();
        assert_eq!(*watched.get(), 1);
        assert!(!watched.reload(false), "unchanged");
        std::fs::write(&path, "22").unwrap();
        assert!(watched.reload(false));
        assert_eq!(*watched.get(), 22);
        std::fs::write(&path, "x!!").unwrap();
        assert!(!watched.reload(false));
        assert_eq!(
            *watched.get(),
            22,
            "a broken file keeps the last good value"
        );
        std::fs::write(&path, vec![b'1'; 200]).unwrap();
        assert!(!watched.reload(true), "oversized");
        assert_eq!(*watched.get(), 22);
    }
}
