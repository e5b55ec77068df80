//! The commit wharf is built from, for `wharf_build_info` and the status page:
//! `WHARF_COMMIT` when set (image builds), else `git rev-parse`, else `unknown`.

fn main() {
    println!("cargo:rerun-if-env-changed=WHARF_COMMIT");
    println!("cargo:rerun-if-changed=../../.git/HEAD");
    println!("cargo:rerun-if-changed=../../.git/refs/heads");
    let commit = std::env::var("WHARF_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            std::process::Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=WHARF_COMMIT={commit}");
}
