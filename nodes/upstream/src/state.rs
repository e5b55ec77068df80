//! What an operator wants to know about one upstream: is it answering, what went wrong last,
//! and how much of its pull allowance (Docker Hub's `ratelimit-*` headers) is left. Updated once
//! per upstream request, never per client request.

use std::sync::Mutex;
use std::time::SystemTime;

use http::HeaderMap;
use serde::Serialize;

/// A copy of an upstream's state for the status page.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UpstreamStatus {
    /// Seconds since the Unix epoch of the last answer (any status) and the last failure.
    pub last_answer: Option<u64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<u64>,
    /// Whether the latest request got an answer that was not a server error or a 429.
    pub healthy: bool,
    pub ratelimit_limit: Option<i64>,
    pub ratelimit_remaining: Option<i64>,
    pub requests: u64,
}

#[derive(Debug, Default)]
pub struct UpstreamState {
    inner: Mutex<UpstreamStatus>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The leading integer of a `ratelimit-*` value (`100;w=21600`), if it has one.
pub fn ratelimit_value(headers: &HeaderMap, name: &str) -> Option<i64> {
    let value = headers.get(name)?.to_str().ok()?;
    let digits = value.split(';').next()?.trim();
    digits.parse::<i64>().ok().filter(|v| *v >= 0)
}

impl UpstreamState {
    /// An answer came with `status`; a 5xx or 429 counts as a failure.
    pub fn answered(&self, status: u16) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.requests = s.requests.saturating_add(1);
        s.last_answer = Some(now());
        s.healthy = status < 500 && status != 429;
        if !s.healthy {
            s.last_error = Some(format!("answered {status}"));
            s.last_error_at = s.last_answer;
        }
    }

    /// No answer: `error` says why (never carries a credential: errors hold no headers).
    pub fn failed(&self, error: &str) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.requests = s.requests.saturating_add(1);
        s.healthy = false;
        s.last_error = Some(error.chars().take(200).collect());
        s.last_error_at = Some(now());
    }

    pub fn ratelimit(&self, limit: Option<i64>, remaining: Option<i64>) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if limit.is_some() {
            s.ratelimit_limit = limit;
        }
        if remaining.is_some() {
            s.ratelimit_remaining = remaining;
        }
    }

    pub fn snapshot(&self) -> UpstreamStatus {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratelimit_values_are_the_leading_integer() {
        let mut h = HeaderMap::new();
        h.insert(
            "ratelimit-limit",
            "100;w=21600".parse().unwrap_or_else(|_| unreachable!()),
        );
        h.insert(
            "ratelimit-remaining",
            " 76 ".parse().unwrap_or_else(|_| unreachable!()),
        );
        h.insert("x", "-3".parse().unwrap_or_else(|_| unreachable!()));
        assert_eq!(ratelimit_value(&h, "ratelimit-limit"), Some(100));
        assert_eq!(ratelimit_value(&h, "ratelimit-remaining"), Some(76));
        assert_eq!(ratelimit_value(&h, "x"), None);
        assert_eq!(ratelimit_value(&h, "missing"), None);
    }
}
