//! The behaviour every backend must show, as one async check that panics on the first
//! deviation. Each backend's tests run it (the S3 one against a real S3 server process).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures::TryStreamExt;
use wharf_core::Digest;

use std::path::Path;

use bytes::Bytes;
use futures::StreamExt;
use wharf_core::ByteRange;

use crate::{BlobStore, ByteSource, ObjectKey};

async fn read_all(store: &dyn BlobStore, key: &ObjectKey, range: Option<ByteRange>) -> Vec<u8> {
    let reader = store.read(key, range).await.unwrap().unwrap();
    let chunks: Vec<Bytes> = reader.stream.try_collect().await.unwrap();
    chunks.concat()
}

/// The behaviour every backend must show; run by each backend's tests.
pub async fn exercise_store(store: &dyn BlobStore, spool_file: &Path) {
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let key = ObjectKey::Blob(Digest::sha256_of(&data));
    assert_eq!(store.stat(&key).await.unwrap(), None);
    assert!(store.read(&key, None).await.unwrap().is_none());

    tokio::fs::write(spool_file, &data).await.unwrap();
    store.put_file(&key, spool_file).await.unwrap();
    assert!(!spool_file.exists(), "spool file consumed");
    assert_eq!(store.stat(&key).await.unwrap(), Some(data.len() as u64));
    assert_eq!(read_all(store, &key, None).await, data);
    let range = ByteRange {
        start: 10,
        end: 500_009,
    };
    assert_eq!(
        read_all(store, &key, Some(range)).await,
        &data[10..=500_009]
    );

    let tag = ObjectKey::Tag {
        upstream: "docker.io".into(),
        repo: "library/x".parse().unwrap(),
        tag: "latest".parse().unwrap(),
    };
    store
        .put_small(&tag, Bytes::from_static(b"one"))
        .await
        .unwrap();
    store
        .put_small(&tag, Bytes::from_static(b"two"))
        .await
        .unwrap();
    assert_eq!(store.read_small(&tag).await.unwrap().unwrap(), "two");

    let listed = store.list("blobs/").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].path, key.path());
    assert_eq!(listed[0].size, data.len() as u64);

    store.delete(&key).await.unwrap();
    store.delete(&key).await.unwrap();
    assert_eq!(store.stat(&key).await.unwrap(), None);

    // Streamed writes: visible only when the stream ends cleanly.
    let streamed = ObjectKey::Blob(Digest::sha256_of(b"streamed"));
    let failing: ByteSource = futures::stream::iter(vec![
        Ok(Bytes::from_static(b"part")),
        Err(std::io::Error::other("digest mismatch")),
    ])
    .boxed();
    assert!(store.put_stream(&streamed, failing).await.is_err());
    assert_eq!(store.stat(&streamed).await.unwrap(), None);
    let chunks: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(100_000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    store
        .put_stream(&streamed, futures::stream::iter(chunks).boxed())
        .await
        .unwrap();
    assert_eq!(read_all(store, &streamed, None).await, data);
    store.delete(&streamed).await.unwrap();
}
