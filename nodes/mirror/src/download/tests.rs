//! The download machinery with an in-memory store and scripted upstream bodies.

use futures::{StreamExt, TryStreamExt};
use wharf_core::OciCode;
use wharf_storage::mem::MemStore;

use wharf_core::ByteRange;
use wharf_storage::ObjectKey;

use super::*;

fn body_stream(
    chunks: Vec<Bytes>,
    delay: Duration,
) -> BoxStream<'static, Result<Bytes, wharf_upstream::UpstreamError>> {
    futures::stream::iter(chunks)
        .then(move |c| async move {
            tokio::time::sleep(delay).await;
            Ok(c)
        })
        .boxed()
}

pub(super) fn blob(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 256) as u8).collect()
}

pub(super) fn origin() -> Origin {
    Origin {
        upstream: "up".into(),
        repo: "test/repo".parse().unwrap(),
    }
}

pub(super) async fn setup() -> (tempfile::TempDir, Downloads, Arc<dyn BlobStore>, Arc<Stats>) {
    setup_with(DownloadSlots::new(8, 8, Duration::from_secs(5)), None).await
}

async fn setup_with(
    slots: DownloadSlots,
    max_blob: Option<u64>,
) -> (tempfile::TempDir, Downloads, Arc<dyn BlobStore>, Arc<Stats>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn BlobStore> = Arc::new(MemStore::default());
    let stats: Arc<Stats> = Arc::default();
    let downloads = Downloads::open(
        dir.path().join("spool"),
        store.clone(),
        Cache::new(100),
        stats.clone(),
        Arc::new(slots),
        max_blob,
    )
    .await
    .unwrap();
    (dir, downloads, store, stats)
}

/// `first`, then nothing for a long time: an upstream that pauses mid-body.
fn pausing_stream(first: Bytes) -> BoxStream<'static, UpstreamBody> {
    futures::stream::iter([Ok(first)])
        .chain(futures::stream::pending())
        .boxed()
}

#[tokio::test]
async fn bytes_before_an_upstream_pause_reach_readers() {
    let (_dir, downloads, store, _stats) = setup().await;
    let digest = Digest::sha256_of(b"whatever");
    let (download, _) = downloads.join_or_start(&digest, origin(), None, async {
        Ok(Fetched::alone(BlobResponse {
            size: Some(2000),
            stream: pausing_stream(Bytes::from(vec![7u8; 1000])),
        }))
    });
    let mut body = tail(download, None, store);
    let first = tokio::time::timeout(Duration::from_secs(1), body.next())
        .await
        .expect("the received bytes are readable while the upstream pauses")
        .unwrap()
        .unwrap();
    assert_eq!(first.len(), 1000);
}

#[tokio::test]
async fn an_unread_download_yields_its_slot_to_a_waiting_request() {
    let slots = DownloadSlots::new(1, 4, Duration::from_secs(10));
    let (_dir, downloads, _store, _stats) = setup_with(slots, None).await;
    let slot = downloads.slots().acquire().await.unwrap();
    let digest = Digest::sha256_of(b"huge");
    // A huge blob trickling in, which its client gave up on: nobody tails it.
    let (download, _) = downloads.join_or_start(&digest, origin(), Some(slot), async {
        Ok(Fetched::alone(BlobResponse {
            size: Some(1 << 40),
            stream: pausing_stream(Bytes::from_static(b"x")),
        }))
    });
    let waited = std::time::Instant::now();
    let next = tokio::time::timeout(Duration::from_secs(8), downloads.slots().acquire())
        .await
        .expect("the unread download gives its slot up");
    assert!(next.is_ok());
    assert!(waited.elapsed() >= ABANDON_GRACE);
    assert!(
        matches!(
            download.started().await.unwrap_err(),
            MirrorError::Busy { .. }
        ),
        "given up"
    );

    // Read downloads keep their slot, whoever waits.
    let (read, _) =
        downloads.join_or_start(&Digest::sha256_of(b"read"), origin(), next.ok(), async {
            Ok(Fetched::alone(BlobResponse {
                size: Some(1 << 40),
                stream: pausing_stream(Bytes::from_static(b"x")),
            }))
        });
    let _reader = tail(read.clone(), None, Arc::new(MemStore::default()));
    let refused = tokio::time::timeout(Duration::from_secs(4), downloads.slots().acquire()).await;
    assert!(refused.is_err(), "still held after the grace period");
    assert!(read.is_live());
}

#[tokio::test]
async fn blobs_over_the_size_limit_are_refused() {
    let (_dir, downloads, store, _stats) =
        setup_with(DownloadSlots::new(8, 8, Duration::from_secs(5)), Some(1000)).await;
    let data = blob(5000);
    let digest = Digest::sha256_of(&data);
    for size in [Some(5000), None] {
        let data = data.clone();
        let (download, _) = downloads.join_or_start(&digest, origin(), None, async move {
            Ok(Fetched::alone(BlobResponse {
                size,
                stream: body_stream(
                    data.chunks(100).map(Bytes::copy_from_slice).collect(),
                    Duration::ZERO,
                ),
            }))
        });
        let result: Result<Vec<Bytes>, _> = tail(download, None, store.clone()).try_collect().await;
        assert!(result.is_err(), "{size:?}");
    }
    assert_eq!(store.stat(&ObjectKey::Blob(digest)).await.unwrap(), None);
}

#[tokio::test]
async fn readers_join_one_download_and_get_every_range() {
    let (_dir, downloads, store, _stats) = setup().await;
    let data = blob(1_000_000);
    let digest = Digest::sha256_of(&data);
    let chunks: Vec<Bytes> = data.chunks(70_000).map(Bytes::copy_from_slice).collect();
    let size = data.len() as u64;
    let start = |d: &Downloads| {
        let chunks = chunks.clone();
        d.join_or_start(&digest, origin(), None, async move {
            Ok(Fetched::alone(BlobResponse {
                size: Some(size),
                stream: body_stream(chunks, Duration::from_millis(2)),
            }))
        })
    };
    let (first, started) = start(&downloads);
    let (second, started_again) = start(&downloads);
    assert!(started && !started_again);
    assert_eq!(first.started().await.unwrap(), Some(size));
    let whole = tail(first, None, store.clone());
    let part = tail(
        second,
        Some(ByteRange {
            start: 999_990,
            end: 999_999,
        }),
        store.clone(),
    );
    let whole: Vec<Bytes> = whole.try_collect().await.unwrap();
    let part: Vec<Bytes> = part.try_collect().await.unwrap();
    assert_eq!(whole.concat(), data);
    assert_eq!(part.concat(), &data[999_990..]);
    // Stored, and the registry forgot the download.
    let mut progress = downloads.find(&digest).map(|d| d.progress());
    if let Some(p) = progress.as_mut() {
        let _ = p.wait_for(Phase::is_final).await;
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(downloads.find(&digest).is_none());
    assert_eq!(
        store.stat(&ObjectKey::Blob(digest.clone())).await.unwrap(),
        Some(size)
    );
    assert_eq!(downloads.index.get(&digest).await, Some(size), "index told");
}

#[tokio::test]
async fn corrupt_download_is_never_completed_nor_stored() {
    let (_dir, downloads, store, stats) = setup().await;
    let data = blob(300_000);
    let digest = Digest::sha256_of(&data);
    let mut corrupt = data.clone();
    corrupt[299_999] ^= 0xff;
    let (download, _) = downloads.join_or_start(&digest, origin(), None, async move {
        Ok(Fetched::alone(BlobResponse {
            size: Some(300_000),
            stream: body_stream(vec![Bytes::from(corrupt)], Duration::ZERO),
        }))
    });
    let result: Result<Vec<Bytes>, _> = tail(download, None, store.clone()).try_collect().await;
    assert!(result.is_err(), "a corrupt body must end in an error");
    assert_eq!(stats.digest_mismatches.load(Ordering::Relaxed), 1);
    assert_eq!(store.stat(&ObjectKey::Blob(digest)).await.unwrap(), None);
}

#[tokio::test]
async fn a_body_that_breaks_off_is_resumed_from_the_next_byte() {
    let (_dir, downloads, store, _stats) = setup().await;
    let data = blob(500_000);
    let digest = Digest::sha256_of(&data);
    let first: Vec<Result<Bytes, wharf_upstream::UpstreamError>> = vec![
        Ok(Bytes::copy_from_slice(&data[..123_456])),
        Err(wharf_upstream::UpstreamError::Failed(
            "connection reset".into(),
        )),
    ];
    let asked = Arc::new(Mutex::new(Vec::new()));
    let resume: Resume = {
        let (data, asked) = (data.clone(), asked.clone());
        Box::new(move |offset| {
            asked.lock().unwrap().push(offset);
            let rest = Bytes::copy_from_slice(&data[offset as usize..]);
            Box::pin(async move { Ok(body_stream(vec![rest], Duration::ZERO)) })
        })
    };
    let (download, _) = downloads.join_or_start(&digest, origin(), None, async move {
        Ok(Fetched {
            peer: false,
            response: BlobResponse {
                size: Some(500_000),
                stream: futures::stream::iter(first).boxed(),
            },
            store: true,
            lease: None,
            resume: Some(resume),
            ranged: None,
        })
    });
    let body: Vec<Bytes> = tail(download, None, store.clone())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(body.concat(), data);
    assert_eq!(*asked.lock().unwrap(), vec![123_456]);
}

#[tokio::test]
async fn breaks_with_progress_keep_resuming_and_breaks_without_fail() {
    let (_dir, downloads, store, _stats) = setup().await;
    let data = blob(100_000);
    let digest = Digest::sha256_of(&data);
    let broken = |part: Bytes, more: bool| -> BoxStream<'static, UpstreamBody> {
        let mut items = vec![Ok(part)];
        if more {
            items.push(Err(wharf_upstream::UpstreamError::Failed("reset".into())));
        }
        futures::stream::iter(items).boxed()
    };
    // Ten breaks, each after 10,000 more bytes: more than MAX_RESUMES, all with progress.
    let resume: Resume = {
        let data = data.clone();
        Box::new(move |offset| {
            let (from, to) = (offset as usize, (offset as usize + 10_000).min(data.len()));
            let stream = broken(Bytes::copy_from_slice(&data[from..to]), to < data.len());
            Box::pin(async move { Ok(stream) })
        })
    };
    let first = broken(Bytes::copy_from_slice(&data[..10_000]), true);
    let (download, _) = downloads.join_or_start(&digest, origin(), None, async move {
        Ok(Fetched {
            peer: false,
            response: BlobResponse {
                size: Some(100_000),
                stream: first,
            },
            store: true,
            lease: None,
            resume: Some(resume),
            ranged: None,
        })
    });
    let body: Vec<Bytes> = tail(download, None, store.clone())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(body.concat(), data);

    // A source that breaks before sending anything, every time, fails the download.
    let stuck = Digest::sha256_of(b"stuck");
    let resume: Resume = Box::new(move |_| {
        let stream = broken(Bytes::new(), true);
        Box::pin(async move { Ok(stream) })
    });
    let first = broken(Bytes::from_static(b"st"), true);
    let (download, _) = downloads.join_or_start(&stuck, origin(), None, async move {
        Ok(Fetched {
            peer: false,
            response: BlobResponse {
                size: Some(5),
                stream: first,
            },
            store: true,
            lease: None,
            resume: Some(resume),
            ranged: None,
        })
    });
    let result: Result<Vec<Bytes>, _> = tail(download, None, store).try_collect().await;
    assert!(result.is_err(), "no progress: the download fails");
}

#[tokio::test]
async fn a_panicking_leader_fails_its_waiters_and_is_forgotten() {
    let (_dir, downloads, store, _stats) = setup().await;
    let data = blob(10_000);
    let digest = Digest::sha256_of(&data);
    let (download, _) = downloads.join_or_start(&digest, origin(), None, async {
        if std::hint::black_box(true) {
            panic!("leader bug");
        }
        Err(MirrorError::internal("unreachable"))
    });
    assert_eq!(
        download.started().await.unwrap_err().code(),
        OciCode::Unknown
    );
    let size = data.len() as u64;
    let (again, started) = downloads.join_or_start(&digest, origin(), None, async move {
        Ok(Fetched::alone(BlobResponse {
            size: Some(size),
            stream: body_stream(vec![Bytes::from(data)], Duration::ZERO),
        }))
    });
    assert!(started, "a new download, not the dead one");
    let body: Vec<Bytes> = tail(again, None, store).try_collect().await.unwrap();
    assert_eq!(body.concat().len(), 10_000);
}

#[tokio::test]
async fn upstream_refusal_reaches_every_waiter() {
    let (_dir, downloads, _store, _stats) = setup().await;
    let digest = Digest::sha256_of(b"missing");
    let (download, _) = downloads.join_or_start(&digest, origin(), None, async {
        Err(MirrorError::not_found(OciCode::BlobUnknown, "no such blob"))
    });
    let err = download.started().await.unwrap_err();
    assert_eq!(err.code(), OciCode::BlobUnknown);
}
