//! Helpers the binary's test files share.

use std::io::Write;
use std::process::{Command, Stdio};

/// A `user:bcrypt` htpasswd line, made by `wharf auth hash-password` (cost 4: tests).
pub fn hash_password(user: &str, password: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["auth", "hash-password", "--user", user, "--cost", "4"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// An HTTP Basic `Authorization` value.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}
