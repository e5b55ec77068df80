//! Blob ranges from an upstream: the rest of a download that broke off, and the pieces of a
//! blob fetched side by side.

use http::{Method, StatusCode, header};
use wharf_core::{Digest, RepoName};

use super::{BlobResponse, UpstreamClient, blob_response};
use crate::error::UpstreamError;

/// An upstream's answer to a range request.
pub enum RangeAnswer {
    /// `206`: the bytes asked for; `total` is the blob's size from `Content-Range`.
    Partial {
        total: Option<u64>,
        response: BlobResponse,
    },
    /// `200`: the upstream ignores ranges and sent the whole blob.
    Whole(BlobResponse),
}

/// `Content-Range: bytes FIRST-LAST/TOTAL` as (first, last, total); `*` as total is `None`.
pub fn parse_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let (first, last) = (first.trim().parse().ok()?, last.trim().parse().ok()?);
    let total = match total.trim() {
        "*" => None,
        n => Some(n.parse().ok()?),
    };
    (first <= last && total.is_none_or(|t| last < t)).then_some((first, last, total))
}

impl UpstreamClient {
    /// The blob from byte `offset` on (`Range: bytes=offset-`), to resume a download that
    /// broke off. An upstream that ignores the range (answers 200) is an error: the caller
    /// then fails the download as it would have without resuming.
    pub async fn get_blob_from(
        &self,
        repo: &RepoName,
        digest: &Digest,
        offset: u64,
    ) -> Result<BlobResponse, UpstreamError> {
        self.get_blob_span(repo, digest, offset, None).await
    }

    /// Bytes `first..=last` of a blob (to its end with `None`). Anything but a `206` that
    /// starts at `first` is an error: a piece must be exactly the piece asked for.
    pub async fn get_blob_span(
        &self,
        repo: &RepoName,
        digest: &Digest,
        first: u64,
        last: Option<u64>,
    ) -> Result<BlobResponse, UpstreamError> {
        match self.get_blob_range(repo, digest, first, last).await? {
            RangeAnswer::Partial { response, .. } => Ok(response),
            RangeAnswer::Whole(_) => Err(UpstreamError::Failed(
                "upstream answered a range request with 200 instead of 206".into(),
            )),
        }
    }

    /// Ask for bytes `first..=last` (to the end with `None`); the upstream may answer with the
    /// range or, ignoring it, with the whole blob. A `206` for other bytes than asked is an
    /// error.
    pub async fn get_blob_range(
        &self,
        repo: &RepoName,
        digest: &Digest,
        first: u64,
        last: Option<u64>,
    ) -> Result<RangeAnswer, UpstreamError> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let range = match last {
            Some(last) => format!("bytes={first}-{last}"),
            None => format!("bytes={first}-"),
        };
        let scope = format!("repository:{repo}:pull");
        let response = self
            .send_with(Method::GET, &path, &scope, None, Some(&range))
            .await?;
        if response.status() != StatusCode::PARTIAL_CONTENT {
            return Ok(RangeAnswer::Whole(blob_response(
                response,
                self.metrics.clone(),
            )));
        }
        let span = response
            .headers()
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_content_range);
        let total = match span {
            Some((start, end, total)) if start == first && last.is_none_or(|last| end <= last) => {
                total
            }
            _ => {
                return Err(UpstreamError::Failed(format!(
                    "upstream answered {range} with a Content-Range for other bytes"
                )));
            }
        };
        Ok(RangeAnswer::Partial {
            total,
            response: blob_response(response, self.metrics.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_forms() {
        assert_eq!(
            parse_content_range("bytes 0-99/1000"),
            Some((0, 99, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9, None)));
        assert_eq!(parse_content_range("bytes 9-5/100"), None);
        assert_eq!(parse_content_range("bytes 0-100/100"), None);
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }
}
