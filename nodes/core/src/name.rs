//! Repository names and tags, validated by the grammar of the OCI distribution spec.

use std::fmt;
use std::str::FromStr;

/// Longest repository name accepted; distribution uses the same bound.
pub const MAX_NAME_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("repository name {0:?} does not match the OCI grammar")]
    InvalidName(String),
    #[error("tag {0:?} does not match the OCI grammar")]
    InvalidTag(String),
}

/// A repository name such as `library/ubuntu` or `a/b/c/d`; safe to use as a relative path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Docker Hub keeps official images under `library/`: `ubuntu` means `library/ubuntu` there.
    /// Docker Hub's name for a single-segment repository; an error when `library/` makes it
    /// longer than a name may be.
    pub fn with_docker_hub_library(self) -> Result<RepoName, NameError> {
        if self.0.contains('/') {
            Ok(self)
        } else {
            format!("library/{}", self.0).parse()
        }
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator run: `.`, `_`, `__`, or one or more `-`.
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl FromStr for RepoName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_NAME_LEN || !s.split('/').all(valid_component) {
            return Err(NameError::InvalidName(s.to_string()));
        }
        Ok(RepoName(s.to_string()))
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`; never starts with `.` so it is path-safe.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        let first_ok = bytes
            .first()
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
        let rest_ok = bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !first_ok || !rest_ok || bytes.len() > 128 {
            return Err(NameError::InvalidTag(s.to_string()));
        }
        Ok(Tag(s.to_string()))
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_of_any_depth() {
        for ok in [
            "ubuntu",
            "library/ubuntu",
            "a/b/c/d",
            "my-org/my__repo.x",
            "a--b/c_d",
            "0/1",
        ] {
            assert!(ok.parse::<RepoName>().is_ok(), "{ok} refused");
        }
    }

    #[test]
    fn refuses_bad_names() {
        for bad in [
            "", "Ubuntu", "a//b", "/a", "a/", "../etc", "a/./b", "a___b", "-a", "a-", "a b",
            "a%2fb",
        ] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad} accepted");
        }
        assert!("a".repeat(256).parse::<RepoName>().is_err());
    }

    #[test]
    fn library_prefix_only_for_single_segment() {
        let n: RepoName = "ubuntu".parse().unwrap();
        assert_eq!(
            n.with_docker_hub_library().unwrap().as_str(),
            "library/ubuntu"
        );
        let n: RepoName = "org/app".parse().unwrap();
        assert_eq!(n.with_docker_hub_library().unwrap().as_str(), "org/app");
        let longest: RepoName = "x".repeat(MAX_NAME_LEN).parse().unwrap();
        assert!(
            longest.with_docker_hub_library().is_err(),
            "too long with library/"
        );
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.2.3-rc_1", "_x", "A"] {
            assert!(ok.parse::<Tag>().is_ok(), "{ok} refused");
        }
        for bad in ["", ".hidden", "-x", "a/b", "a:b", &"x".repeat(129)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad} accepted");
        }
    }
}
