//! S3 backend (aws-sdk-s3): one object per blob, manifest and tag record under an optional
//! prefix, so any number of stateless nodes share one copy of everything.
//!
//! Blobs are written by multipart upload while they download, from owned 8 MiB parts (the SDK
//! can retry a part); the upload is completed only when the body stream ends cleanly — after
//! the caller verified the digest — and aborted otherwise, so no partial or unverified object
//! is ever visible under a final key. Reads stream, with ranged GETs for `Range` requests.
//! Credentials, region and endpoint follow the standard AWS chain (`AWS_ENDPOINT_URL`,
//! `AWS_REGION`, `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, profiles, instance and IRSA roles).

use std::path::Path;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use tokio_util::io::ReaderStream;
use tracing::warn;
use wharf_core::ByteRange;

use crate::{BlobStore, ByteSource, ObjectInfo, ObjectKey, ObjectReader, StoreError};

/// Multipart part size: memory per upload in flight. S3's minimum is 5 MiB.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Where the objects go: `s3://BUCKET[/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// Empty, or ends with `/`.
    pub prefix: String,
}

impl S3Location {
    /// Parse `s3://bucket` or `s3://bucket/some/prefix`.
    pub fn parse(url: &str) -> Option<S3Location> {
        let rest = url.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return None;
        }
        let prefix = prefix.trim_matches('/');
        Some(S3Location {
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        })
    }
}

pub struct S3Store {
    client: Client,
    location: S3Location,
}

fn s3_error(operation: &'static str, key: &str, e: impl std::error::Error) -> StoreError {
    // The SDK's Display is terse ("service error"); the chain says what happened.
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    StoreError::S3 {
        operation,
        key: key.to_string(),
        message,
    }
}

impl S3Store {
    /// Build a client from the standard AWS configuration chain.
    pub async fn connect(location: S3Location, force_path_style: bool) -> S3Store {
        let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(force_path_style)
            // Range GETs against some S3-compatible servers return whole-object checksums.
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            // Each attempt of each call is bounded; the edge's TimeoutStore bounds the rest.
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(std::time::Duration::from_secs(5))
                    .operation_attempt_timeout(std::time::Duration::from_secs(120))
                    .build(),
            )
            .build();
        S3Store {
            client: Client::from_conf(config),
            location,
        }
    }

    /// Over a client configured elsewhere (tests, embedding).
    pub fn from_client(client: Client, location: S3Location) -> S3Store {
        S3Store { client, location }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn location(&self) -> &S3Location {
        &self.location
    }

    fn object(&self, key: &ObjectKey) -> String {
        format!("{}{}", self.location.prefix, key.path())
    }

    async fn put_whole(&self, object: &str, body: Bytes) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.location.bucket)
            .key(object)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| s3_error("PutObject", object, e))?;
        Ok(())
    }

    async fn multipart(
        &self,
        object: &str,
        first: Bytes,
        mut body: ByteSource,
    ) -> Result<(), StoreError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.location.bucket)
            .key(object)
            .send()
            .await
            .map_err(|e| s3_error("CreateMultipartUpload", object, e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| StoreError::S3 {
                operation: "CreateMultipartUpload",
                key: object.to_string(),
                message: "no upload id".into(),
            })?
            .to_string();
        let result = self
            .upload_parts(object, &upload_id, first, &mut body)
            .await;
        if result.is_err() {
            // Never leave an unverified upload around; bucket lifecycle rules catch the rest.
            if let Err(e) = self
                .client
                .abort_multipart_upload()
                .bucket(&self.location.bucket)
                .key(object)
                .upload_id(&upload_id)
                .send()
                .await
            {
                warn!(object, error = %e, "aborting a multipart upload failed");
            }
        }
        result
    }

    async fn upload_part(
        &self,
        object: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<CompletedPart, StoreError> {
        let uploaded = self
            .client
            .upload_part()
            .bucket(&self.location.bucket)
            .key(object)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| s3_error("UploadPart", object, e))?;
        Ok(CompletedPart::builder()
            .set_e_tag(uploaded.e_tag().map(str::to_string))
            .part_number(number)
            .build())
    }

    async fn upload_parts(
        &self,
        object: &str,
        upload_id: &str,
        first: Bytes,
        body: &mut ByteSource,
    ) -> Result<(), StoreError> {
        let mut parts = vec![self.upload_part(object, upload_id, 1, first).await?];
        let mut buffer = BytesMut::with_capacity(PART_SIZE);
        loop {
            while buffer.len() < PART_SIZE {
                match body.next().await {
                    Some(Ok(chunk)) => buffer.extend_from_slice(&chunk),
                    Some(Err(e)) => {
                        return Err(StoreError::Source {
                            key: object.to_string(),
                            message: e.to_string(),
                        });
                    }
                    None => break,
                }
            }
            // Every part but the last is at least PART_SIZE, as S3 requires.
            let last = buffer.len() < PART_SIZE;
            if !buffer.is_empty() {
                let number = i32::try_from(parts.len() + 1).unwrap_or(i32::MAX);
                let part = buffer.split().freeze();
                parts.push(self.upload_part(object, upload_id, number, part).await?);
            }
            if last {
                break;
            }
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.location.bucket)
            .key(object)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| s3_error("CompleteMultipartUpload", object, e))?;
        Ok(())
    }
}

fn byte_stream(
    body: ByteStream,
    object: String,
) -> futures::stream::BoxStream<'static, Result<Bytes, StoreError>> {
    futures::stream::unfold(Some(body), move |state| {
        let object = object.clone();
        async move {
            let mut body = state?;
            match body.next().await {
                None => None,
                Some(Ok(bytes)) => Some((Ok(bytes), Some(body))),
                Some(Err(e)) => Some((Err(s3_error("GetObject body", &object, e)), None)),
            }
        }
    })
    .boxed()
}

#[async_trait]
impl BlobStore for S3Store {
    async fn stat(&self, key: &ObjectKey) -> Result<Option<u64>, StoreError> {
        let object = self.object(key);
        match self
            .client
            .head_object()
            .bucket(&self.location.bucket)
            .key(&object)
            .send()
            .await
        {
            Ok(head) => Ok(Some(head.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(s3_error("HeadObject", &object, e)),
        }
    }

    async fn read(
        &self,
        key: &ObjectKey,
        range: Option<ByteRange>,
    ) -> Result<Option<ObjectReader>, StoreError> {
        let object = self.object(key);
        let mut request = self
            .client
            .get_object()
            .bucket(&self.location.bucket)
            .key(&object);
        if let Some(r) = range {
            request = request.range(format!("bytes={}-{}", r.start, r.end));
        }
        let output = match request.send().await {
            Ok(output) => output,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(s3_error("GetObject", &object, e)),
        };
        // A ranged answer says the full size in Content-Range: "bytes a-b/size".
        let size = output
            .content_range()
            .and_then(|r| r.rsplit_once('/'))
            .and_then(|(_, size)| size.parse().ok())
            .unwrap_or_else(|| output.content_length().unwrap_or(0).max(0) as u64);
        Ok(Some(ObjectReader {
            size,
            stream: byte_stream(output.body, object),
            file: None,
        }))
    }

    async fn read_small(&self, key: &ObjectKey) -> Result<Option<Bytes>, StoreError> {
        let Some(reader) = self.read(key, None).await? else {
            return Ok(None);
        };
        let chunks: Vec<Bytes> = reader.stream.try_collect().await?;
        Ok(Some(chunks.concat().into()))
    }

    async fn put_small(&self, key: &ObjectKey, body: Bytes) -> Result<(), StoreError> {
        self.put_whole(&self.object(key), body).await
    }

    async fn put_file(&self, key: &ObjectKey, file: &Path) -> Result<(), StoreError> {
        let opened = tokio::fs::File::open(file)
            .await
            .map_err(|e| StoreError::io(key, e))?;
        let body = ReaderStream::with_capacity(opened, 1024 * 1024).boxed();
        self.put_stream(key, body).await?;
        let _ = tokio::fs::remove_file(file).await;
        Ok(())
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        let object = self.object(key);
        self.client
            .delete_object()
            .bucket(&self.location.bucket)
            .key(&object)
            .send()
            .await
            .map_err(|e| s3_error("DeleteObject", &object, e))?;
        Ok(())
    }

    fn streams_writes(&self) -> bool {
        true
    }

    fn shared(&self) -> bool {
        true
    }

    async fn put_stream(&self, key: &ObjectKey, mut body: ByteSource) -> Result<(), StoreError> {
        let object = self.object(key);
        // Small objects (under one part) go up in one PutObject once the stream has ended.
        let mut first = BytesMut::new();
        while first.len() < PART_SIZE {
            match body.next().await {
                Some(Ok(chunk)) => first.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    return Err(StoreError::Source {
                        key: object,
                        message: e.to_string(),
                    });
                }
                None => return self.put_whole(&object, first.freeze()).await,
            }
        }
        self.multipart(&object, first.freeze(), body).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        crate::collect_pages(self.list_pages(prefix)).await
    }

    fn list_pages<'a>(&'a self, prefix: &'a str) -> crate::ListPages<'a> {
        let full_prefix = format!("{}{prefix}", self.location.prefix);
        let pages = self
            .client
            .list_objects_v2()
            .bucket(&self.location.bucket)
            .prefix(&full_prefix)
            .into_paginator()
            .send();
        let store_prefix = self.location.prefix.clone();
        futures::stream::unfold(pages, |mut pages| async move {
            let page = pages.next().await?;
            Some((page, pages))
        })
        .map(move |page| {
            let page = page.map_err(|e| s3_error("ListObjectsV2", &full_prefix, e))?;
            Ok(page
                .contents()
                .iter()
                .filter_map(|object| {
                    let key = object.key()?;
                    let modified = object
                        .last_modified()
                        .and_then(|t| SystemTime::try_from(*t).ok())
                        .unwrap_or(SystemTime::UNIX_EPOCH);
                    Some(ObjectInfo {
                        path: key.strip_prefix(&store_prefix).unwrap_or(key).to_string(),
                        size: u64::try_from(object.size().unwrap_or(0)).unwrap_or(0),
                        modified,
                    })
                })
                .collect())
        })
        .boxed()
    }

    async fn presigned_url(
        &self,
        key: &ObjectKey,
        expires: Duration,
    ) -> Result<Option<String>, StoreError> {
        let object = self.object(key);
        let config =
            PresigningConfig::expires_in(expires).map_err(|e| s3_error("presign", &object, e))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.location.bucket)
            .key(&object)
            .presigned(config)
            .await
            .map_err(|e| s3_error("presign", &object, e))?;
        Ok(Some(request.uri().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            S3Location::parse("s3://b"),
            Some(S3Location {
                bucket: "b".into(),
                prefix: String::new()
            })
        );
        assert_eq!(
            S3Location::parse("s3://b/x/y/"),
            Some(S3Location {
                bucket: "b".into(),
                prefix: "x/y/".into()
            })
        );
        assert_eq!(S3Location::parse("s3:///x"), None);
        assert_eq!(S3Location::parse("file:///x"), None);
    }
}
