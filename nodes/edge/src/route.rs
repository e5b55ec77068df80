//! Parsing of `/v2/...` paths and their query. Repository names contain slashes, so axum's
//! router cannot split them; one catch-all route hands the rest of the path to
//! [`Route::parse`].

use wharf_core::query::percent_decode;
use wharf_core::reference::ReferenceError;
use wharf_core::{Digest, OciCode, Reference, RepoName};

use crate::error::ApiError;

/// What a request under `/v2/` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: the API version check.
    Base,
    /// `/v2/_catalog`: the repositories held (answered when `[catalog] enabled`).
    Catalog,
    Manifest {
        name: RepoName,
        reference: Reference,
    },
    Blob {
        name: RepoName,
        digest: Digest,
    },
    TagsList {
        name: RepoName,
    },
    /// OCI 1.1 `/v2/<name>/referrers/<digest>`: the artifacts (signatures, SBOMs) of a subject.
    Referrers {
        name: RepoName,
        digest: Digest,
    },
}

/// Uploads, the catalog and anything else a read-only mirror does not do: 405.
fn unsupported(why: &str) -> ApiError {
    ApiError::new(OciCode::Unsupported, why)
}

impl Route {
    /// `path` is what follows `/v2/` (no leading slash). Validation errors become OCI errors.
    pub fn parse(path: &str) -> Result<Route, ApiError> {
        if path.is_empty() {
            return Ok(Route::Base);
        }
        if path == "_catalog" {
            return Ok(Route::Catalog);
        }
        if let Some(name) = path.strip_suffix("/tags/list") {
            return Ok(Route::TagsList {
                name: parse_name(name)?,
            });
        }
        if let Some((name, _)) = split_last(path, "/blobs/uploads") {
            parse_name(name)?;
            return Err(unsupported(
                "wharf is a read-only mirror: pushes are not accepted",
            ));
        }
        if let Some((name, reference)) = split_last(path, "/manifests/") {
            let name = parse_name(name)?;
            let reference = Reference::parse(reference).map_err(|e| match e {
                ReferenceError::Digest(e) => ApiError::new(OciCode::DigestInvalid, e.to_string()),
                // No manifest can have an invalid tag: 404, as the OCI conformance suite's pull
                // tests expect (distribution answers 400 TAG_INVALID only on push).
                ReferenceError::Tag(e) => ApiError::new(
                    OciCode::ManifestUnknown,
                    format!("no manifest can be tagged so: {e}"),
                ),
            })?;
            return Ok(Route::Manifest { name, reference });
        }
        if let Some((name, digest)) = split_last(path, "/blobs/") {
            let name = parse_name(name)?;
            let digest = digest.parse().map_err(|e: wharf_core::DigestError| {
                ApiError::new(OciCode::DigestInvalid, e.to_string())
            })?;
            return Ok(Route::Blob { name, digest });
        }
        if let Some((name, digest)) = split_last(path, "/referrers/") {
            let name = parse_name(name)?;
            let digest = digest.parse().map_err(|e: wharf_core::DigestError| {
                ApiError::new(OciCode::DigestInvalid, e.to_string())
            })?;
            return Ok(Route::Referrers { name, digest });
        }
        Err(ApiError::new(
            OciCode::NameUnknown,
            format!("no v2 API endpoint at /v2/{path}"),
        ))
    }
}

/// `path.rsplit_once(marker)` for a marker that starts with `/`: only the slashes are tried,
/// by a plain loop over the bytes (a substring searcher set up per marker, or `rfind` per
/// slash, cost more than the whole search on a path this short).
fn split_last<'a>(path: &'a str, marker: &str) -> Option<(&'a str, &'a str)> {
    let bytes = path.as_bytes();
    let at = (0..bytes.len())
        .rev()
        .find(|&at| bytes[at] == b'/' && bytes[at..].starts_with(marker.as_bytes()))?;
    // A slash, and the ASCII marker after it, are on character boundaries.
    Some((path.get(..at)?, path.get(at + marker.len()..)?))
}

/// A repository name, or a `NAME_INVALID` error.
pub(crate) fn parse_name(name: &str) -> Result<RepoName, ApiError> {
    name.parse()
        .map_err(|e: wharf_core::NameError| ApiError::new(OciCode::NameInvalid, e.to_string()))
}

/// The query parameters wharf reads: containerd's `ns`, and the rest for `tags/list`.
pub struct Query {
    pub ns: Option<String>,
    pub passthrough: String,
    /// The referrers filter.
    pub artifact_type: Option<String>,
}

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        let mut ns = None;
        let mut artifact_type = None;
        let mut passthrough = Vec::new();
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "ns" => ns = Some(percent_decode(value)),
                "artifactType" => artifact_type = Some(percent_decode(value)),
                "n" | "last" => passthrough.push(pair),
                _ => {}
            }
        }
        Query {
            ns,
            passthrough: passthrough.join("&"),
            artifact_type,
        }
    }
}

#[cfg(test)]
mod prop {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// The slash-anchored search finds what `rsplit_once` finds.
        #[test]
        fn split_last_is_rsplit_once(
            path in "([a-z/]{0,6}(/manifests/|/blobs/|/blobs/uploads|/referrers/)?){0,4}",
            marker in prop_oneof![Just("/manifests/"), Just("/blobs/"), Just("/blobs/uploads"), Just("/referrers/")],
        ) {
            prop_assert_eq!(split_last(&path, marker), path.rsplit_once(marker));
        }

        /// Any path answers a route or an OCI client error: never a panic, never a 5xx.
        #[test]
        fn any_path_routes_or_is_a_client_error(path in prop_oneof![
            any::<String>(),
            "([a-z0-9._%-]{0,12}/){0,8}(manifests|blobs|tags|referrers|uploads)/[a-zA-Z0-9:._/%-]{0,80}",
        ]) {
            match Route::parse(&path) {
                Ok(_) => {}
                Err(e) => prop_assert!(e.status.is_client_error(), "{} for {:?}", e.status, path),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        let q = Query::parse(Some("ns=127.0.0.1%3A5000&n=10&last=v1&x=y"));
        assert_eq!(q.ns.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(q.passthrough, "n=10&last=v1");
        let q = Query::parse(None);
        assert!(q.ns.is_none() && q.passthrough.is_empty());
    }

    fn digest() -> String {
        format!("sha256:{}", "ab".repeat(32))
    }

    #[test]
    fn parses_endpoints() {
        assert_eq!(Route::parse("").unwrap(), Route::Base);
        match Route::parse("a/b/c/d/manifests/latest").unwrap() {
            Route::Manifest { name, reference } => {
                assert_eq!(name.as_str(), "a/b/c/d");
                assert_eq!(reference.to_string(), "latest");
            }
            other => panic!("{other:?}"),
        }
        match Route::parse(&format!("library/x/blobs/{}", digest())).unwrap() {
            Route::Blob { name, digest: d } => {
                assert_eq!(name.as_str(), "library/x");
                assert_eq!(d.to_string(), digest());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Route::parse("x/tags/list").unwrap(),
            Route::TagsList { .. }
        ));
        assert!(matches!(
            Route::parse(&format!("a/b/referrers/{}", digest())).unwrap(),
            Route::Referrers { .. }
        ));
        // A repository may itself be called "manifests" or "blobs".
        assert!(matches!(
            Route::parse("manifests/manifests/v1").unwrap(),
            Route::Manifest { .. }
        ));
        assert_eq!(Route::parse("_catalog").unwrap(), Route::Catalog);
        for upload in ["x/blobs/uploads/", "x/blobs/uploads/1234-uuid"] {
            assert_eq!(Route::parse(upload).unwrap_err().code, OciCode::Unsupported);
        }
    }

    #[test]
    fn client_mistakes_are_4xx() {
        let code = |p: &str| Route::parse(p).unwrap_err().code;
        assert_eq!(code("UPPER/manifests/latest"), OciCode::NameInvalid);
        assert_eq!(code("x/manifests/sha256:123"), OciCode::DigestInvalid);
        assert_eq!(code("x/manifests/.bad"), OciCode::ManifestUnknown);
        assert_eq!(code("x/blobs/latest"), OciCode::DigestInvalid);
        assert_eq!(code("x/referrers/sha256:12"), OciCode::DigestInvalid);
        assert_eq!(code("x/nothing"), OciCode::NameUnknown);
        assert_eq!(code("../../etc/passwd/manifests/x"), OciCode::NameInvalid);
        for p in ["UPPER/manifests/latest", "x/blobs/nope", "x/nothing"] {
            assert!(Route::parse(p).unwrap_err().status.is_client_error());
        }
    }
}
