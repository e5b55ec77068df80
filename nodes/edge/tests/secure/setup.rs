//! Fixtures of the secure tests: users, keys and a log capture that every test checks for
//! leaked secrets.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use wharf_core::config::Config;
use wharf_testkit::registry::Registry;

use crate::common::*;

pub const ALICE_PASSWORD: &str = "alice-correct-horse-3141";
pub const BOB_PASSWORD: &str = "bob-battery-staple-2718";
pub const WRONG_PASSWORD: &str = "mallory-guess-1618";
pub const TOKEN_KEY: &str = "token-key-0123456789abcdef0123456789abcdef";
/// Every secret the tests use: none may appear in any log line.
pub const SECRETS: &[&str] = &[ALICE_PASSWORD, BOB_PASSWORD, WRONG_PASSWORD, TOKEN_KEY];

static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
const MAX_LOG_BYTES: usize = 256 * 1024 * 1024;

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(logs) = LOGS.get() {
            let mut logs = logs.lock().unwrap_or_else(|p| p.into_inner());
            if logs.len() + buf.len() <= MAX_LOG_BYTES {
                logs.extend_from_slice(buf);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Send every log line of this test binary, at debug level, into a buffer.
pub fn capture_logs() {
    if LOGS.set(Mutex::new(Vec::new())).is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_writer(|| Capture)
            .try_init();
    }
}

/// Everything logged so far (by any test of this binary).
pub fn logged() -> String {
    let logs = LOGS.get().expect("capture_logs() ran");
    let logs = logs.lock().unwrap_or_else(|p| p.into_inner());
    // Without the terminal colours the capture carries.
    let text = String::from_utf8_lossy(&logs);
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for end in chars.by_ref() {
                if end == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// No secret appears in anything logged so far (by any test of this binary).
pub fn assert_no_secret_logged() {
    let logs = LOGS.get().expect("capture_logs() ran");
    let logs = logs.lock().unwrap_or_else(|p| p.into_inner());
    assert!(!logs.is_empty(), "the capture saw the logs");
    let text = String::from_utf8_lossy(&logs);
    for secret in SECRETS {
        assert!(
            !text.contains(secret),
            "a secret appeared in the log:\n{}",
            text.lines()
                .filter(|l| l.contains(secret))
                .take(3)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// A private file (mode 600) with `contents`.
pub fn secret_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// htpasswd lines for `users` (bcrypt, the lowest cost: tests need speed, not strength).
pub fn htpasswd(users: &[(&str, &str)]) -> String {
    users
        .iter()
        .map(|(u, p)| format!("{u}:{}\n", bcrypt::hash(p, 4).unwrap()))
        .collect()
}

/// A config mirroring `registry` with alice and bob in an htpasswd file under `dir`.
pub fn auth_config(registry: &Registry, dir: &Path) -> Config {
    let mut config = test_config(vec![upstream("docker.io", &registry.url(), true)]);
    config.auth.htpasswd_file = secret_file(
        dir,
        "htpasswd",
        &htpasswd(&[("alice", ALICE_PASSWORD), ("bob", BOB_PASSWORD)]),
    );
    config
}

pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}
