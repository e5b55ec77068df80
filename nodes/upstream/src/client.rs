//! Requests to one upstream registry.

mod login_check;
mod ranged;

pub use login_check::LoginVerdict;
pub use ranged::{RangeAnswer, parse_content_range};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use http::{HeaderMap, Method, StatusCode, header};
use tracing::warn;
use wharf_core::config::{UpstreamClientConfig, UpstreamConfig, UpstreamPasswords};
use wharf_core::{Digest, OciCode, RepoName, media};
use wharf_metrics::{Method as MetricMethod, UpstreamMetrics};

use crate::MAX_MANIFEST_BYTES;
use crate::body::{clip_message, read_error_body, read_limited};
use crate::challenge::{Authorizer, Login};
use crate::endpoints::{EndpointStatus, Endpoints};
use crate::error::UpstreamError;
use crate::state::{UpstreamState, UpstreamStatus, ratelimit_value};

/// A manifest as the upstream sent it: exact bytes and type, which wharf echoes unchanged.
#[derive(Debug, Clone)]
pub struct ManifestResponse {
    pub body: Bytes,
    pub media_type: String,
    /// `Docker-Content-Digest`, when the upstream sent one.
    pub digest: Option<Digest>,
}

/// What a `HEAD` on a manifest says: enough to tell whether a cached tag is still current.
#[derive(Debug, Clone)]
pub struct ManifestHead {
    pub digest: Option<Digest>,
    pub media_type: Option<String>,
}

/// A blob body as it streams from the upstream.
pub struct BlobResponse {
    /// `Content-Length`, when sent.
    pub size: Option<u64>,
    pub stream: BoxStream<'static, Result<Bytes, UpstreamError>>,
}

#[derive(Debug, Clone)]
pub struct TagsListResponse {
    pub body: Bytes,
    pub content_type: Option<String>,
    /// The next page (`Link: <...>; rel="next"`), when the upstream paginates.
    pub link: Option<String>,
}

/// A client for one configured upstream.
pub struct UpstreamClient {
    name: Arc<str>,
    /// `url`, then `fallback_urls`, with their health and auth state.
    endpoints: Endpoints,
    docker_hub: bool,
    /// `credentials = "client"`: requests carry the login of the client they are made for
    /// ([`crate::login::current`]), never a configured one.
    client_logins: bool,
    /// How long the upstream's verdict on a client's login is trusted (`login_verdict_secs`).
    login_verdict: Duration,
    http: reqwest::Client,
    authorizer: Authorizer,
    settings: UpstreamClientConfig,
    /// Requests waiting for response headers at once (`max_concurrent_requests`).
    requests: Arc<tokio::sync::Semaphore>,
    /// After a 429, no request is sent until this instant; cached content is served meanwhile.
    cooldown_until: Mutex<Option<(Instant, Option<Duration>)>>,
    metrics: UpstreamMetrics,
    state: UpstreamState,
}

impl UpstreamClient {
    /// A client for `upstream`; `passwords` are its URLs' (see
    /// [`UpstreamConfig::resolved_passwords`]), each sent to its own URL only.
    pub fn new(
        upstream: &UpstreamConfig,
        passwords: UpstreamPasswords,
        settings: &UpstreamClientConfig,
    ) -> Result<UpstreamClient, UpstreamError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(settings.connect_timeout_secs))
            .read_timeout(Duration::from_secs(settings.idle_timeout_secs))
            .user_agent(concat!("wharf/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| UpstreamError::Failed(format!("building HTTP client: {e}")))?;
        let authorizer = Authorizer::new(
            &upstream.name,
            Duration::from_secs(settings.connect_timeout_secs),
            Duration::from_secs(settings.first_byte_timeout_secs),
        )?;
        Ok(UpstreamClient {
            name: Arc::from(upstream.name.as_str()),
            endpoints: Endpoints::new(
                upstream.endpoints(&passwords),
                upstream.parent.then(|| upstream.name.clone()),
            ),
            docker_hub: upstream.is_docker_hub(),
            client_logins: upstream.takes_client_logins(),
            login_verdict: Duration::from_secs(upstream.login_verdict_secs),
            http,
            authorizer,
            requests: Arc::new(tokio::sync::Semaphore::new(
                settings.max_concurrent_requests.max(1),
            )),
            settings: settings.clone(),
            cooldown_until: Mutex::new(None),
            metrics: UpstreamMetrics::detached(),
            state: UpstreamState::default(),
        })
    }

    /// Record this client's requests in a node's metrics.
    pub fn with_metrics(mut self, metrics: UpstreamMetrics) -> UpstreamClient {
        self.metrics = metrics;
        self
    }

    /// The node's recorder for this upstream (bytes are counted where bodies are read).
    pub fn metrics(&self) -> &UpstreamMetrics {
        &self.metrics
    }

    /// Health, last error and pull allowance, for the status page.
    pub fn status(&self) -> UpstreamStatus {
        self.state.snapshot()
    }

    /// The OCI 1.1 referrers of `digest` as the upstream's referrers API answers them (an image
    /// index), or `None` when it has no such API (distribution 2.8 answers 404).
    pub async fn referrers(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<Bytes>, UpstreamError> {
        let path = format!("/v2/{repo}/referrers/{digest}");
        let response = match self
            .send(Method::GET, &path, repo, Some(media::OCI_INDEX))
            .await
        {
            Ok(response) => response,
            Err(UpstreamError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let index = header_str(response.headers(), header::CONTENT_TYPE)
            .is_some_and(|t| t.starts_with(media::OCI_INDEX));
        let body = read_limited(response, MAX_MANIFEST_BYTES).await?;
        self.metrics.bytes(body.len() as u64);
        // A 200 that is no index (a catch-all page) is no referrers API either.
        Ok(index.then_some(body))
    }

    /// The base URL requests go to now (never holds credentials: they come from separate
    /// settings).
    pub fn base_url(&self) -> &str {
        self.endpoints.current()
    }

    /// Every URL of this upstream and whether it is answering.
    pub fn endpoints(&self) -> Vec<EndpointStatus> {
        self.endpoints.statuses()
    }

    /// The `ns=` name of this upstream.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name, shared: per-request records (access lines, metrics) keep it without a copy.
    pub fn shared_name(&self) -> Arc<str> {
        self.name.clone()
    }

    /// Whether each client's own login goes to this upstream (`credentials = "client"`).
    pub fn takes_client_logins(&self) -> bool {
        self.client_logins
    }

    /// How long its verdict on a client's login holds before it is asked again.
    pub fn login_verdict_lifetime(&self) -> Duration {
        self.login_verdict
    }

    /// Docker Hub keeps single-segment names under `library/`.
    pub fn is_docker_hub(&self) -> bool {
        self.docker_hub
    }

    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
    ) -> Result<ManifestResponse, UpstreamError> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let response = self
            .send(
                Method::GET,
                &path,
                repo,
                Some(&media::upstream_accept_header()),
            )
            .await?;
        let headers = response.headers().clone();
        if response
            .content_length()
            .is_some_and(|len| len > MAX_MANIFEST_BYTES)
        {
            return Err(UpstreamError::ManifestTooLarge {
                limit: MAX_MANIFEST_BYTES,
            });
        }
        let body = read_limited(response, MAX_MANIFEST_BYTES).await?;
        self.metrics.bytes(body.len() as u64);
        let sent = header_str(&headers, header::CONTENT_TYPE)
            .map(|t| t.split(';').next().unwrap_or(t).trim().to_string())
            .filter(|t| !t.is_empty() && t != "application/json" && t != "text/plain");
        // The type is the one the bytes (and so the digest) establish: a Content-Type learned
        // from one repository must never decide how another is served the same digest.
        if let (Some(declared), Some(sent)) = (media::declared_media_type(&body), &sent)
            && declared != *sent
        {
            return Err(UpstreamError::Inconsistent(format!(
                "Content-Type {sent} but mediaType {declared}"
            )));
        }
        let media_type = media::media_type_of(&body)
            .or(sent)
            .unwrap_or_else(|| media::OCI_MANIFEST.to_string());
        Ok(ManifestResponse {
            body,
            media_type,
            digest: content_digest(&headers),
        })
    }

    pub async fn head_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
    ) -> Result<ManifestHead, UpstreamError> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let response = self
            .send(
                Method::HEAD,
                &path,
                repo,
                Some(&media::upstream_accept_header()),
            )
            .await?;
        let headers = response.headers();
        Ok(ManifestHead {
            digest: content_digest(headers),
            media_type: header_str(headers, header::CONTENT_TYPE).map(str::to_string),
        })
    }

    /// Start streaming a blob; the body is not verified here (the caller hashes it).
    pub async fn get_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<BlobResponse, UpstreamError> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let response = self.send(Method::GET, &path, repo, None).await?;
        Ok(blob_response(response, self.metrics.clone()))
    }

    /// The blob's size, without downloading it.
    pub async fn head_blob(&self, repo: &RepoName, digest: &Digest) -> Result<u64, UpstreamError> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let response = self.send(Method::HEAD, &path, repo, None).await?;
        header_str(response.headers(), header::CONTENT_LENGTH)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| UpstreamError::Failed("blob HEAD without Content-Length".into()))
    }

    pub async fn tags_list(
        &self,
        repo: &RepoName,
        query: Option<&str>,
    ) -> Result<TagsListResponse, UpstreamError> {
        let path = match query {
            Some(q) if !q.is_empty() => format!("/v2/{repo}/tags/list?{q}"),
            _ => format!("/v2/{repo}/tags/list"),
        };
        let response = self.send(Method::GET, &path, repo, None).await?;
        let headers = response.headers().clone();
        let body = read_limited(response, MAX_MANIFEST_BYTES).await?;
        self.metrics.bytes(body.len() as u64);
        Ok(TagsListResponse {
            body,
            content_type: header_str(&headers, header::CONTENT_TYPE).map(str::to_string),
            link: header_str(&headers, header::LINK).map(str::to_string),
        })
    }

    /// While a 429's `Retry-After` runs, answer at once instead of asking again.
    fn check_cooldown(&self) -> Result<(), UpstreamError> {
        let mut cooldown = self
            .cooldown_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match *cooldown {
            Some((until, _)) if Instant::now() >= until => {
                *cooldown = None;
                Ok(())
            }
            Some((until, _)) => Err(UpstreamError::RateLimited {
                retry_after: Some(until.saturating_duration_since(Instant::now())),
            }),
            None => Ok(()),
        }
    }

    fn start_cooldown(&self, retry_after: Option<Duration>) {
        // Without a Retry-After, back off briefly rather than hammer a limited upstream.
        let wait = retry_after.unwrap_or(Duration::from_secs(5));
        let mut cooldown = self
            .cooldown_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let until = now.checked_add(wait.min(MAX_RETRY_AFTER)).unwrap_or(now);
        *cooldown = Some((until, retry_after));
    }

    /// Send an idempotent request with auth, timeouts and retries; a 2xx response or a typed error.
    async fn send(
        &self,
        method: Method,
        path: &str,
        repo: &RepoName,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let scope = format!("repository:{repo}:pull");
        self.send_with(method, path, &scope, accept, None).await
    }

    /// As [`Self::send`], for a token `scope` (empty: none) and an optional `Range`.
    pub(crate) async fn send_with(
        &self,
        method: Method,
        path: &str,
        scope: &str,
        accept: Option<&str>,
        range: Option<&str>,
    ) -> Result<reqwest::Response, UpstreamError> {
        self.check_cooldown()?;
        let client_login = if self.client_logins {
            crate::login::current()
        } else {
            None
        };
        let login = if self.client_logins {
            Login::Client(client_login.as_deref())
        } else {
            Login::Configured
        };
        let mut attempt = 0u32;
        let mut authenticated_retry = false;
        // Each further URL is worth one more attempt.
        let attempts = self
            .settings
            .retries
            .saturating_add(u32::try_from(self.endpoints.len().saturating_sub(1)).unwrap_or(0));
        loop {
            let Some((index, endpoint)) = self.endpoints.pick() else {
                return Err(UpstreamError::Unreachable("no URL configured".into()));
            };
            let url = self.endpoints.url(endpoint, path);
            let mut request = self.http.request(method.clone(), &url);
            if let Some(accept) = accept {
                request = request.header(header::ACCEPT, accept);
            }
            if let Some(range) = range {
                request = request.header(header::RANGE, range);
            }
            if let Some(auth) = self.authorizer.authorization(endpoint, scope, login) {
                request = request.header(header::AUTHORIZATION, auth);
            }
            let first_byte = Duration::from_secs(self.settings.first_byte_timeout_secs);
            let sent = Instant::now();
            // One of this upstream's request turns, until its headers arrive (or not).
            let turn = tokio::time::timeout(first_byte, Arc::clone(&self.requests).acquire_owned());
            let Ok(Ok(turn)) = turn.await else {
                return Err(UpstreamError::Timeout(format!(
                    "all {} request turns for this upstream stayed busy",
                    self.settings.max_concurrent_requests
                )));
            };
            let result = match tokio::time::timeout(first_byte, request.send()).await {
                Err(_) => Err(UpstreamError::Timeout(format!(
                    "no response within {}s",
                    first_byte.as_secs()
                ))),
                Ok(Err(e)) => Err(UpstreamError::from_reqwest(&e)),
                Ok(Ok(response)) => Ok(response),
            };
            drop(turn);
            self.observe(&method, path, &result, sent);
            let error = match result {
                Ok(response) if response.status().is_success() => {
                    self.endpoints.succeeded(index);
                    return Ok(response);
                }
                Ok(response) => {
                    if response.status() == StatusCode::UNAUTHORIZED && !authenticated_retry {
                        authenticated_retry = true;
                        if self
                            .authorizer
                            .answer(endpoint, &response, scope, login)
                            .await?
                        {
                            continue;
                        }
                    }
                    self.status_error(response).await
                }
                Err(e) => e,
            };
            if error.is_transient() && attempt < attempts {
                let failed_over = self.endpoints.failed(index);
                attempt += 1;
                self.metrics.retry();
                if failed_over {
                    warn!(upstream = %self.name, %path, %error, next = self.endpoints.current(), "upstream URL failed, trying the next");
                    continue;
                }
                let delay = self
                    .settings
                    .retry_backoff_ms
                    .saturating_mul(1 << attempt.saturating_sub(1).min(10));
                warn!(upstream = %self.name, %path, %error, attempt, "upstream request failed, retrying");
                tokio::time::sleep(Duration::from_millis(delay)).await;
                continue;
            }
            if error.is_transient() {
                self.endpoints.failed(index);
            } else if !matches!(error, UpstreamError::RateLimited { .. }) {
                // It answered, if only "no": the URL works.
                self.endpoints.succeeded(index);
            }
            return Err(error);
        }
    }

    /// Metrics and state of one attempt: its answer (or why none came), its latency, and the
    /// pull allowance on manifest answers (Docker Hub counts manifest requests, HEAD included).
    fn observe(
        &self,
        method: &Method,
        path: &str,
        result: &Result<reqwest::Response, UpstreamError>,
        sent: Instant,
    ) {
        let seconds = sent.elapsed().as_secs_f64();
        let method = MetricMethod::of(method.as_str());
        match result {
            Ok(response) => {
                let status = response.status().as_u16();
                self.metrics.request(method, status, seconds);
                self.state.answered(status);
                if path.contains("/manifests/") {
                    let headers = response.headers();
                    let limit = ratelimit_value(headers, "ratelimit-limit");
                    let remaining = ratelimit_value(headers, "ratelimit-remaining");
                    if limit.is_some() || remaining.is_some() {
                        self.metrics.ratelimit(limit, remaining);
                        self.state.ratelimit(limit, remaining);
                    }
                }
            }
            Err(e) => {
                self.metrics.request(method, 0, seconds);
                self.state.failed(&e.to_string());
            }
        }
    }

    async fn status_error(&self, response: reqwest::Response) -> UpstreamError {
        let status = response.status();
        let retry_after = retry_after(response.headers());
        match status {
            StatusCode::NOT_FOUND => {
                let body = read_error_body(response).await.unwrap_or_default();
                let (code, message) = first_error(&body);
                UpstreamError::NotFound {
                    code,
                    message: message.unwrap_or_else(|| "not found".into()),
                }
            }
            StatusCode::BAD_REQUEST | StatusCode::URI_TOO_LONG => {
                let body = read_error_body(response).await.unwrap_or_default();
                let (code, message) = first_error(&body);
                UpstreamError::Rejected {
                    code,
                    message: message.unwrap_or_else(|| format!("upstream answered {status}")),
                }
            }
            // Asked for bytes a blob does not have (an empty blob's first piece).
            StatusCode::RANGE_NOT_SATISFIABLE => UpstreamError::Rejected {
                code: None,
                message: "range not satisfiable".into(),
            },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => UpstreamError::Denied {
                status: status.as_u16(),
            },
            StatusCode::TOO_MANY_REQUESTS => {
                self.start_cooldown(retry_after);
                UpstreamError::RateLimited { retry_after }
            }
            other => UpstreamError::Failed(format!("upstream answered {other}")),
        }
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn content_digest(headers: &HeaderMap) -> Option<Digest> {
    headers
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The longest cool-down an upstream's `Retry-After` can impose: beyond it, a typo or a hostile
/// header would turn the upstream off for good.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `Retry-After`: delay-seconds or an HTTP date, at most [`MAX_RETRY_AFTER`].
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = header_str(headers, header::RETRY_AFTER)?.trim();
    let wait = if value.bytes().all(|b| b.is_ascii_digit()) && !value.is_empty() {
        // Any run of digits, even past u64: the clamp applies.
        value
            .parse::<u64>()
            .map_or(MAX_RETRY_AFTER, Duration::from_secs)
    } else {
        let when = httpdate::parse_http_date(value).ok()?;
        when.duration_since(SystemTime::now()).unwrap_or_default()
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The first `{"errors":[{"code","message"}]}` entry of an upstream error body.
fn first_error(body: &[u8]) -> (Option<OciCode>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: String,
        message: Option<String>,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(b) => match b.errors.into_iter().next() {
            Some(e) => (
                OciCode::from_code(&e.code),
                e.message.as_deref().map(clip_message),
            ),
            None => (None, None),
        },
        Err(_) => (None, None),
    }
}

/// A blob body as it streams, with its `Content-Length`.
fn blob_response(response: reqwest::Response, metrics: UpstreamMetrics) -> BlobResponse {
    let size = response.content_length();
    let stream = response
        .bytes_stream()
        .map_err(|e| UpstreamError::from_reqwest(&e))
        .inspect_ok(move |chunk| metrics.bytes(chunk.len() as u64))
        .boxed();
    BlobResponse { size, stream }
}

pub use crate::challenge::credentials_may_go_to;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = SystemTime::now() + Duration::from_secs(120);
        h.insert(
            header::RETRY_AFTER,
            httpdate::fmt_http_date(later).parse().unwrap(),
        );
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120));
        h.insert(header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
        for huge in ["18446744073709551615", "99999999999999999999999", "86400"] {
            h.insert(header::RETRY_AFTER, huge.parse().unwrap());
            assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER), "{huge}");
        }
        h.insert(header::RETRY_AFTER, "-5".parse().unwrap());
        assert_eq!(retry_after(&h), None);
        h.insert(
            header::RETRY_AFTER,
            "Fri, 31 Dec 9999 23:59:59 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn a_huge_retry_after_cools_down_an_hour_at_most() {
        let upstream = UpstreamConfig::new("up", "http://127.0.0.1:9", true);
        let client = UpstreamClient::new(
            &upstream,
            UpstreamPasswords::default(),
            &UpstreamClientConfig::default(),
        )
        .unwrap();
        client.start_cooldown(Some(Duration::MAX));
        match client.check_cooldown() {
            Err(UpstreamError::RateLimited {
                retry_after: Some(wait),
            }) => assert!(wait <= MAX_RETRY_AFTER),
            other => panic!("expected a cool-down, got {other:?}"),
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

        #[test]
        fn any_retry_after_is_bounded(value in proptest::prelude::any::<String>(), digits in "[0-9]{1,40}") {
            for v in [value, digits] {
                let mut h = HeaderMap::new();
                if let Ok(v) = v.parse() {
                    h.insert(header::RETRY_AFTER, v);
                    if let Some(wait) = retry_after(&h) {
                        proptest::prop_assert!(wait <= MAX_RETRY_AFTER);
                    }
                }
            }
        }

        #[test]
        fn error_bodies_never_panic(body in proptest::prelude::any::<Vec<u8>>()) {
            let _ = first_error(&body);
        }
    }

    #[test]
    fn upstream_error_bodies() {
        let (code, msg) = first_error(
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        );
        assert_eq!(code, Some(OciCode::ManifestUnknown));
        assert_eq!(msg.as_deref(), Some("manifest unknown"));
        assert_eq!(first_error(b"<html>"), (None, None));
    }
}
