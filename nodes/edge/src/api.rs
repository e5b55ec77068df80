//! HTTP handlers of the OCI distribution v2 read API.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use wharf_core::query::percent_encode;
use wharf_core::{ByteRange, Digest, OciCode, Reference, media};

use crate::Edge;
use crate::access::{self, Origin};
use crate::access_log::{self, CacheResult, Served};
use crate::error::ApiError;
use crate::route::{Query, Route};
use crate::sendfile::SendfileConn;
use crate::target::{Asker, Target};
use crate::{http_cache, status};
use wharf_mirror::blobs::{BlobBody, BlobReply};
use wharf_upstream::login::ClientLogin;

/// The main listener's service: the registry API and the operator pages behind one layer that
/// gives every request its id, access line, metrics, tracing span and panic guard.
///
/// One service with one boxed future, rather than a stack of tower and axum layers (a panic
/// catcher, a trace layer, a `from_fn` middleware, a router around them): each layer boxes or
/// clones on every request. `/v2` goes straight to the API handler, which parses its own paths
/// (names have slashes); only other paths pay for the pages' route table.
#[derive(Clone)]
pub struct Api {
    edge: Arc<Edge>,
    pages: Router,
}

impl Api {
    pub fn new(edge: Arc<Edge>) -> Api {
        let pages = Router::new()
            .route("/health", axum::routing::get(status::health))
            .route("/token", axum::routing::get(access::token_endpoint))
            .route("/metrics", axum::routing::get(status::metrics))
            .route("/status.json", axum::routing::get(status::status_json))
            .route("/", axum::routing::get(status::status_page))
            .fallback(not_found)
            .with_state(edge.clone());
        Api { edge, pages }
    }
}

impl<B> tower::Service<axum::http::Request<B>> for Api
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let request = request.map(Body::new);
        let edge = self.edge.clone();
        let path = request.uri().path();
        let pages = (path != "/v2" && !path.starts_with("/v2/")).then(|| self.pages.clone());
        Box::pin(futures::FutureExt::map(respond(edge, pages, request), Ok))
    }
}

/// One request's answer with its id, access line, metrics, span and panic guard.
///
/// The future is boxed once per request, so its size is copied once per request: only the
/// warm manifest path is inline in it, everything larger is boxed where it starts
/// (`answer`; `a_request_future_stays_small` holds the bound).
async fn respond(edge: Arc<Edge>, pages: Option<Router>, request: Request) -> Response {
    let access = access_log::Started::of(&request);
    let metrics = crate::http_metrics::Started::of(&edge.mirror.stats.metrics, &request);
    let span = tracing::debug_span!(
        "request",
        method = %request.method(),
        uri = %request.uri(),
        version = ?request.version(),
    );
    // The handler's future is made inside the awaited expression: bound to a name first, it
    // would take its room in this future twice (a moved-from local keeps its place until the
    // end of its scope).
    let response = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
        tracing::Instrument::instrument(
            async {
                match pages {
                    Some(pages) => Box::pin(tower::ServiceExt::oneshot(pages, request))
                        .await
                        .unwrap_or_else(|e| match e {}),
                    None => v2(State(edge.clone()), request).await,
                }
            },
            span,
        ),
    ))
    .await
    .unwrap_or_else(|_| {
        tracing::error!("a request handler panicked");
        ApiError::internal("internal error").into_response()
    });
    if let Some(metrics) = metrics {
        metrics.finish(&response);
    }
    access.finish(response)
}

/// The operator listener's pages: no v2 API, no client authentication.
pub fn operator_router(edge: Arc<Edge>) -> Router {
    Router::new()
        .route("/health", axum::routing::get(status::health))
        .route("/metrics", axum::routing::get(status::metrics))
        .route("/status.json", axum::routing::get(status::status_json))
        .route("/", axum::routing::get(status::status_page))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(
            |mut request: Request, next: axum::middleware::Next| async move {
                request.extensions_mut().insert(status::OperatorListener);
                next.run(request).await
            },
        ))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("internal error").into_response()
        }))
        .with_state(edge)
}

async fn not_found() -> ApiError {
    ApiError::new(OciCode::NameUnknown, "not a registry API path")
}

async fn v2(State(edge): State<Arc<Edge>>, request: Request) -> Response {
    let mut principal = None;
    let mut response = match handle(&edge, request, &mut principal).await {
        Ok(response) => response,
        Err(e) => {
            if e.status.is_server_error() {
                tracing::warn!(status = e.status.as_u16(), code = e.code.as_str(), message = %e.message, "request failed");
                edge.recent_errors.push(&e);
            }
            e.into_response()
        }
    };
    edge.http_cache.error(&mut response);
    if let Some(principal) = principal {
        response
            .extensions_mut()
            .insert(access_log::Principal(principal));
    }
    response.with_api_version()
}

trait WithApiVersion {
    fn with_api_version(self) -> Self;
}

impl WithApiVersion for Response {
    fn with_api_version(mut self) -> Self {
        self.headers_mut()
            .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
        self
    }
}

/// `principal` is set to who the caller is, once authentication established it.
async fn handle(
    edge: &Arc<Edge>,
    request: Request,
    principal: &mut Option<String>,
) -> Result<Response, ApiError> {
    let path = request.uri().path();
    let rest = path
        .strip_prefix("/v2/")
        .or_else(|| path.strip_prefix("/v2"))
        .unwrap_or_default();
    let route = Route::parse(rest)?;
    let method = request.method().clone();
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError::new(
            OciCode::Unsupported,
            format!("{method} is not supported: wharf is a read-only mirror"),
        ));
    }
    let head = method == Method::HEAD;
    let query = Query::parse(request.uri().query());
    let headers = request.headers();
    let host = request
        .uri()
        .host()
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()));
    let origin = edge
        .auth
        .restricted()
        .then(|| Origin::of(&request, edge.tls));
    let mut asker = Asker::new(edge, headers, host, query.ns.as_deref(), origin);
    let parts = Parts {
        headers,
        extensions: request.extensions(),
        version: request.version(),
    };
    let answer = answer(&mut asker, route, parts, &query, head).await;
    *principal = asker.principal.take();
    answer
}

/// What answering reads of a request (a `Request` is not `Sync`: it cannot be held across an
/// `.await` by reference).
struct Parts<'a> {
    headers: &'a HeaderMap,
    extensions: &'a axum::http::Extensions,
    version: Version,
}

/// The answer to one parsed `/v2/` route, once `asker` may have it.
///
/// Every route but a manifest's is boxed: a future is as large as its largest state, and the
/// blob, listing and login paths (S3 reads, upstream requests) would make every request's
/// future tens of KiB, copied into its box on every request. The warm manifest path stays
/// inline.
async fn answer(
    asker: &mut Asker<'_>,
    route: Route,
    request: Parts<'_>,
    query: &Query,
    head: bool,
) -> Result<Response, ApiError> {
    let edge = asker.edge;
    let headers = request.headers;
    match route {
        Route::Base => Box::pin(base(asker)).await,
        Route::Catalog => Box::pin(catalog(asker, query)).await,
        Route::Manifest { name, reference } => {
            let (target, login) = asker.admit(name).await?;
            match login {
                None => manifest(edge, target, reference, headers, head).await,
                Some(login) => {
                    Box::pin(as_client(
                        Some(login),
                        manifest(edge, target, reference, headers, head),
                    ))
                    .await
                }
            }
        }
        Route::Blob { name, digest } => {
            let (target, login) = asker.admit(name).await?;
            // sendfile only where hyper writes the body bytes straight to the socket: HTTP/1.
            let sendfile = request
                .extensions
                .get::<ConnectInfo<SendfileConn>>()
                .filter(|_| !head && request.version <= Version::HTTP_11)
                .map(|info| &info.0);
            Box::pin(as_client(
                login,
                blob(edge, target, digest, headers, head, sendfile),
            ))
            .await
        }
        Route::TagsList { name } => {
            let asked = name.as_str().to_string();
            let (target, login) = asker.admit(name).await?;
            Box::pin(as_client(login, tags_list(edge, target, query, &asked))).await
        }
        Route::Referrers { name, digest } => {
            let (target, login) = asker.admit(name).await?;
            let artifact_type = query.artifact_type.as_deref();
            Box::pin(as_client(
                login,
                referrers(edge, target, &digest, artifact_type),
            ))
            .await
        }
    }
}

/// `/v2/`: whether the caller may use the registry at all.
async fn base(asker: &mut Asker<'_>) -> Result<Response, ApiError> {
    let edge = asker.edge;
    match asker.admit_base().await {
        Some(verdict) => verdict?,
        None => {
            if let Some((who, origin)) = asker.caller().await? {
                access::admit(&edge.auth, who, origin)?;
            }
        }
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        "{}",
    )
        .into_response())
}

/// `/v2/_catalog`: the repositories this mirror holds that the caller may pull.
async fn catalog(asker: &mut Asker<'_>, query: &Query) -> Result<Response, ApiError> {
    let edge = asker.edge;
    if !edge.mirror.catalog.enabled {
        return Err(ApiError::new(
            OciCode::Unsupported,
            "this mirror does not list its repositories ([catalog] enabled = false)",
        ));
    }
    let caller = asker.caller().await?;
    if let Some((who, origin)) = caller {
        access::authorize(&edge.auth, who, origin, "_wharf", "catalog", "catalog")?;
    }
    let upstream = edge.mirror.upstreams.select(query.ns.as_deref())?;
    let name = upstream.name();
    // Only the repositories the caller may pull are named to it; an upstream that
    // judges each client's login lists none (it alone knows who may see what).
    let private = upstream.takes_client_logins();
    let visible = |repo: &str| match caller {
        _ if private => false,
        None => true,
        Some((who, _)) => {
            edge.auth.authorize(who, &[repo], &format!("{name}/{repo}"))
                == wharf_auth::Decision::Allow
        }
    };
    let page = edge
        .mirror
        .catalog
        .page(&edge.mirror.store, name, &query.passthrough, visible)
        .await?;
    let mut response = Body::from(page.body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(link) = next_link("_catalog", page.next, query) {
        insert(h, header::LINK, &link);
    }
    Ok(response)
}

/// Run `work` for a client whose own login goes to the upstream (`credentials = "client"`);
/// other work runs as it is.
async fn as_client<F: std::future::Future>(login: Option<Arc<ClientLogin>>, work: F) -> F::Output {
    match login {
        Some(login) => wharf_upstream::login::acting_for(Some(login), work).await,
        None => work.await,
    }
}

async fn referrers(
    edge: &Arc<Edge>,
    (upstream, repo): Target,
    digest: &Digest,
    artifact_type: Option<&str>,
) -> Result<Response, ApiError> {
    let upstream = &upstream;
    let answer = edge
        .mirror
        .referrers
        .get(upstream, &repo, digest, artifact_type)
        .await?;
    let mut response = Body::from(answer.index).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(media::OCI_INDEX),
    );
    if answer.filtered {
        h.insert(
            "oci-filters-applied",
            HeaderValue::from_static("artifactType"),
        );
    }
    response.extensions_mut().insert(Served {
        cache: answer.cache,
        upstream: upstream.shared_name(),
    });
    Ok(response)
}

async fn manifest(
    edge: &Arc<Edge>,
    (upstream, repo): Target,
    reference: Reference,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, ApiError> {
    let upstream = &upstream;
    // With auth on, content is served for a repository only if it belongs to it.
    let isolate = edge.auth.restricted();
    // The repository's name is needed after the lookup only to note the manifest's links.
    let linked = isolate.then(|| repo.clone());
    let (manifest, cache, fresh_for) = match reference {
        Reference::Digest(d) => {
            if isolate {
                edge.mirror.links.ensure(upstream, &repo, &d, true).await?;
            }
            let (m, cache) = edge.mirror.manifests.by_digest(upstream, &repo, &d).await?;
            (m, cache, None)
        }
        Reference::Tag(t) => {
            let tagged = edge.mirror.manifests.by_tag(upstream, repo, t).await?;
            (tagged.manifest, tagged.cache, Some(tagged.fresh_for))
        }
    };
    if let Some(repo) = linked {
        edge.mirror
            .links
            .note_manifest(upstream.name(), &repo, &manifest.digest, &manifest.body);
    }
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok());
    if !media::accepts(accept, &manifest.media_type) {
        return Err(ApiError::new(
            OciCode::ManifestUnknown,
            format!(
                "the manifest is of type {} which the request's Accept header does not list",
                manifest.media_type
            ),
        ));
    }
    let not_modified = http_cache::not_modified(headers, &manifest.digest, fresh_for.is_none());
    let mut response = if head || not_modified {
        Body::empty().into_response()
    } else {
        Body::from(manifest.body.clone()).into_response()
    };
    let h = response.headers_mut();
    // Room for every header of the answer at once (growing the map rehashes it).
    h.reserve(MANIFEST_HEADERS);
    // The values were made when the manifest was cached: each is a shared buffer here.
    let values = &manifest.headers;
    if let Some(media_type) = &values.media_type {
        h.insert(header::CONTENT_TYPE, media_type.clone());
    }
    h.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(manifest.body.len()),
    );
    if let Some(digest) = &values.digest {
        h.insert(DOCKER_CONTENT_DIGEST, digest.clone());
    }
    // The answer depends on Accept (a type the client does not take is a 404).
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    if let Some(etag) = values.etag.clone() {
        match fresh_for {
            Some(fresh_for) => edge.http_cache.tag(h, etag, fresh_for),
            None => edge.http_cache.immutable_with(h, etag),
        }
    }
    if not_modified {
        response = http_cache::not_modified_response(std::mem::take(response.headers_mut()));
    }
    response.extensions_mut().insert(Served {
        cache,
        upstream: upstream.shared_name(),
    });
    Ok(response)
}

async fn blob(
    edge: &Arc<Edge>,
    (upstream, repo): Target,
    digest: Digest,
    headers: &HeaderMap,
    head: bool,
    sendfile: Option<&SendfileConn>,
) -> Result<Response, ApiError> {
    let upstream = &upstream;
    if edge.auth.restricted() {
        edge.mirror
            .links
            .ensure(upstream, &repo, &digest, false)
            .await?;
    }
    // The client (a CDN revalidating) holds these bytes already: they cannot have changed.
    // Only for a blob that exists (RFC 9110: `*` matches a current representation only):
    // cached, or confirmed by an upstream HEAD (which costs no download).
    if http_cache::not_modified(headers, &digest, true) {
        if !edge.mirror.blobs.contains(&digest).await? {
            edge.mirror
                .blobs
                .get(upstream, &repo, &digest, None, true, None)
                .await?;
        }
        let mut validators = HeaderMap::new();
        blob_validators(edge, &mut validators, &digest);
        let mut response = http_cache::not_modified_response(validators);
        response.extensions_mut().insert(Served {
            cache: CacheResult::Hit,
            upstream: upstream.shared_name(),
        });
        return Ok(response);
    }
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let reply = edge
        .mirror
        .blobs
        .get(
            upstream,
            &repo,
            &digest,
            range_header,
            head,
            edge.mirror.redirect_blobs,
        )
        .await?;
    let found = match reply {
        BlobReply::RangeNotSatisfiable { size } => {
            let mut response = ApiError::new(
                OciCode::RangeInvalid,
                format!("requested range is outside the blob's {size} bytes"),
            )
            .into_response();
            insert(
                response.headers_mut(),
                header::CONTENT_RANGE,
                &format!("bytes */{size}"),
            );
            return Ok(response);
        }
        BlobReply::Redirect { location } => {
            let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
            response.extensions_mut().insert(Served {
                cache: CacheResult::Hit,
                upstream: upstream.shared_name(),
            });
            let h = response.headers_mut();
            insert(h, header::LOCATION, &location);
            insert(h, DOCKER_CONTENT_DIGEST, &digest.to_string());
            // The redirect itself must not outlive the presigned URL in a CDN.
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=60"),
            );
            return Ok(response);
        }
        BlobReply::Found {
            cache,
            size,
            range,
            body,
        } => (cache, size, range, body),
    };
    let (cache, size, range, body) = found;
    let mut response = match (body, sendfile) {
        (
            Some(BlobBody {
                file: Some(span), ..
            }),
            Some(conn),
        ) => {
            let stats = Arc::clone(&edge.mirror.stats);
            conn.body(span, move |n| {
                stats.sendfile_bytes.fetch_add(n, Ordering::Relaxed);
            })
            .into_response()
        }
        (Some(body), _) => Body::from_stream(body.stream).into_response(),
        (None, _) => Body::empty().into_response(),
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    blob_validators(edge, h, &digest);
    response.extensions_mut().insert(Served {
        cache,
        upstream: upstream.shared_name(),
    });
    match (range, size) {
        (Some(r), Some(size)) => {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            set_length_and_range(response.headers_mut(), r, size);
            // A piece of a blob still being fetched is sent unverified: no shared cache keeps it.
            if r.start > 0 && cache != CacheResult::Hit {
                let h = response.headers_mut();
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
        }
        (None, Some(size)) => {
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        }
        _ => {}
    }
    Ok(response)
}

/// What a blob answer (200, 206 or 304) says of the blob: its digest, ranges, lifetime.
fn blob_validators(edge: &Edge, h: &mut HeaderMap, digest: &Digest) {
    insert(h, DOCKER_CONTENT_DIGEST, &digest.to_string());
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    edge.http_cache.immutable(h, digest);
}

fn set_length_and_range(h: &mut HeaderMap, r: ByteRange, size: u64) {
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(r.len()));
    insert(h, header::CONTENT_RANGE, &r.content_range(size));
}

async fn tags_list(
    edge: &Arc<Edge>,
    (upstream, repo): Target,
    query: &Query,
    asked: &str,
) -> Result<Response, ApiError> {
    let upstream = &upstream;
    let page = edge
        .mirror
        .tags_lists
        .get(upstream, &repo, &query.passthrough)
        .await?;
    let mut response = Body::from(page.body).into_response();
    response.extensions_mut().insert(Served {
        cache: page.cache,
        upstream: upstream.shared_name(),
    });
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(link) = next_link(&format!("{asked}/tags/list"), page.next, query) {
        insert(h, header::LINK, &link);
    }
    Ok(response)
}

/// `Link: </v2/<path>?n=..&last=..[&ns=..]>; rel="next"` for the page after this one.
fn next_link(path: &str, next: Option<(u64, String)>, query: &Query) -> Option<String> {
    let (n, last) = next?;
    let ns = query
        .ns
        .as_deref()
        .map(|ns| format!("&ns={}", percent_encode(ns)))
        .unwrap_or_default();
    Some(format!(
        "</v2/{path}?n={n}&last={}{ns}>; rel=\"next\"",
        percent_encode(&last)
    ))
}

/// Insert a header whose value came from elsewhere; an unrepresentable value is skipped.
fn insert<K: header::IntoHeaderName>(h: &mut HeaderMap, key: K, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(key, v);
    }
}

/// Headers of a manifest answer: its own seven, the request id and the API version.
const MANIFEST_HEADERS: usize = 10;

/// `Docker-Content-Digest`: a name made once (a `&str` name is copied on every insert).
const DOCKER_CONTENT_DIGEST: header::HeaderName =
    header::HeaderName::from_static("docker-content-digest");
/// `Docker-Distribution-API-Version`, on every `/v2/` answer.
const API_VERSION: header::HeaderName =
    header::HeaderName::from_static("docker-distribution-api-version");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_future_stays_small() {
        // The size of the future an async fn returns, without calling it.
        fn size_of_future<F, Fut>(_: F) -> usize
        where
            F: FnOnce(Arc<Edge>, Option<Router>, Request) -> Fut,
        {
            std::mem::size_of::<Fut>()
        }
        let size = size_of_future(respond);
        // Every request's future is copied into its box. It was ~100 KB (release) before the
        // blob, listing and login paths were boxed where they start; now ~4.5 KB in a debug
        // build, where futures are larger than in release.
        assert!(size <= 8 * 1024, "a request's future is {size} bytes");
    }
}
