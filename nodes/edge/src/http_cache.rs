//! HTTP caching as a CDN or proxy cache in front of wharf needs it (RFC 9111): validators,
//! lifetimes and conditional requests.
//!
//! Content addressed by digest never changes: `ETag` is the digest, it is `immutable` for a
//! year, and any `If-None-Match` naming it or any `If-Modified-Since` is answered `304`.
//! A tag may move: its `max-age` is what is left of the tag TTL, with `stale-if-error` as long as
//! wharf itself would serve it stale. Errors are `no-store` (404s may be kept briefly when
//! configured). With client authentication on, everything is `private`: a shared cache must
//! not hand one user's answer to another.

use std::cell::RefCell;
use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use wharf_core::Digest;

/// A year: the longest lifetime caches honour.
const IMMUTABLE_MAX_AGE: u64 = 31_536_000;
/// How long wharf serves a tag stale while its upstream is down (tag records never expire; a
/// day is what a cache in front may assume).
const STALE_IF_ERROR: u64 = 86_400;

pub struct HttpCaching {
    /// `private` instead of `public` (client authentication on).
    private: bool,
    not_found_max_age: u64,
    /// `Cache-Control` of content by digest, made once.
    immutable: HeaderValue,
    /// `Last-Modified` of content by digest: when this node started (content never changes,
    /// so any later date is true of it).
    last_modified: HeaderValue,
}

impl HttpCaching {
    pub fn new(private: bool, not_found_max_age: Duration) -> HttpCaching {
        let started = httpdate::fmt_http_date(SystemTime::now());
        let scope = if private { "private" } else { "public" };
        HttpCaching {
            private,
            not_found_max_age: not_found_max_age.as_secs(),
            immutable: HeaderValue::from_str(&format!(
                "{scope}, max-age={IMMUTABLE_MAX_AGE}, immutable"
            ))
            .unwrap_or_else(|_| HeaderValue::from_static("no-store")),
            last_modified: HeaderValue::from_str(&started)
                .unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT")),
        }
    }

    fn scope(&self) -> &'static str {
        if self.private { "private" } else { "public" }
    }

    /// Headers of content by digest (blobs, manifests by digest).
    pub fn immutable(&self, h: &mut HeaderMap, digest: &Digest) {
        set_etag(h, digest);
        self.immutable_lifetime(h);
    }

    /// As [`Self::immutable`], with an `ETag` value made beforehand (a cached manifest's).
    pub fn immutable_with(&self, h: &mut HeaderMap, etag: HeaderValue) {
        h.insert(header::ETAG, etag);
        self.immutable_lifetime(h);
    }

    fn immutable_lifetime(&self, h: &mut HeaderMap) {
        h.insert(header::CACHE_CONTROL, self.immutable.clone());
        h.insert(header::LAST_MODIFIED, self.last_modified.clone());
    }

    /// Headers of a manifest by tag, trusted `fresh_for` more seconds; `etag` made beforehand.
    pub fn tag(&self, h: &mut HeaderMap, etag: HeaderValue, fresh_for: u64) {
        h.insert(header::ETAG, etag);
        // `fresh_for` changes once a second: each thread keeps the value it made last.
        thread_local! {
            static LAST: RefCell<Option<(bool, u64, HeaderValue)>> = const { RefCell::new(None) };
        }
        let value = LAST.with(|last| {
            let mut last = last.borrow_mut();
            match &*last {
                Some((private, age, value)) if *private == self.private && *age == fresh_for => {
                    Some(value.clone())
                }
                _ => {
                    let text = format!(
                        "{}, max-age={fresh_for}, stale-if-error={STALE_IF_ERROR}",
                        self.scope()
                    );
                    let value = HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).ok()?;
                    *last = Some((self.private, fresh_for, value.clone()));
                    Some(value)
                }
            }
        });
        if let Some(value) = value {
            h.insert(header::CACHE_CONTROL, value);
        }
    }

    /// `Cache-Control` of an error answer, unless the handler set one.
    pub fn error(&self, response: &mut Response) {
        let status = response.status();
        if !(status.is_client_error() || status.is_server_error())
            || response.headers().contains_key(header::CACHE_CONTROL)
        {
            return;
        }
        let value = if status == StatusCode::NOT_FOUND && self.not_found_max_age > 0 {
            format!("{}, max-age={}", self.scope(), self.not_found_max_age)
        } else {
            "no-store".to_string()
        };
        set(response.headers_mut(), header::CACHE_CONTROL, &value);
    }
}

/// Whether a request's validators say the client holds `digest` already. `If-None-Match`
/// decides when present; otherwise, for `immutable` content, any valid `If-Modified-Since`.
pub fn not_modified(request: &HeaderMap, digest: &Digest, immutable: bool) -> bool {
    let matches: Vec<&str> = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if !matches.is_empty() {
        return matches.iter().any(|tag| {
            let tag = tag.strip_prefix("W/").unwrap_or(tag);
            tag == "*"
                || tag
                    .strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .is_some_and(|t| t == digest.to_string())
        });
    }
    immutable
        && request
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| httpdate::parse_http_date(v).is_ok())
}

/// A `304` carrying what the `200` would have, minus the body and its length.
pub fn not_modified_response(mut headers: HeaderMap) -> Response {
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::CONTENT_TYPE);
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    *response.headers_mut() = headers;
    response
}

fn set_etag(h: &mut HeaderMap, digest: &Digest) {
    set_owned(h, header::ETAG, format!("\"{digest}\""));
}

/// As [`set`], taking the string's buffer instead of copying it.
fn set_owned(h: &mut HeaderMap, key: header::HeaderName, value: String) {
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
        h.insert(key, v);
    }
}

fn set(h: &mut HeaderMap, key: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(key, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap_or(header::ACCEPT),
                HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")),
            );
        }
        h
    }

    #[test]
    fn validators_match_the_digest_only() {
        let d = Digest::sha256_of(b"x");
        let other = Digest::sha256_of(b"y");
        let tag = format!("\"{d}\"");
        assert!(not_modified(
            &headers(&[("if-none-match", &tag)]),
            &d,
            false
        ));
        let list = format!("\"{other}\", W/{tag}");
        assert!(not_modified(
            &headers(&[("if-none-match", &list)]),
            &d,
            false
        ));
        assert!(not_modified(&headers(&[("if-none-match", "*")]), &d, false));
        let wrong = format!("\"{other}\"");
        assert!(!not_modified(
            &headers(&[("if-none-match", &wrong)]),
            &d,
            true
        ));
        // If-None-Match wins over If-Modified-Since.
        let both = headers(&[
            ("if-none-match", &wrong),
            ("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        assert!(!not_modified(&both, &d, true));
        let since = headers(&[("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")]);
        assert!(not_modified(&since, &d, true));
        assert!(!not_modified(&since, &d, false), "a tag may have moved");
        let garbage = headers(&[("if-modified-since", "yesterday")]);
        assert!(!not_modified(&garbage, &d, true));
        assert!(!not_modified(&HeaderMap::new(), &d, true));
    }

    #[test]
    fn errors_are_not_stored_unless_404s_may_be() {
        let mut r = Response::new(axum::body::Body::empty());
        *r.status_mut() = StatusCode::NOT_FOUND;
        HttpCaching::new(false, Duration::ZERO).error(&mut r);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        let mut r = Response::new(axum::body::Body::empty());
        *r.status_mut() = StatusCode::NOT_FOUND;
        HttpCaching::new(true, Duration::from_secs(5)).error(&mut r);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "private, max-age=5");
        let mut ok = Response::new(axum::body::Body::empty());
        HttpCaching::new(false, Duration::ZERO).error(&mut ok);
        assert!(!ok.headers().contains_key(header::CACHE_CONTROL));
    }
}
