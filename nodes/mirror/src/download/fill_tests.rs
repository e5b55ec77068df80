//! The ranged fill with an in-memory store and a scripted ranged source.

use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use wharf_core::ByteRange;
use wharf_storage::ObjectKey;

use super::tests::{blob, origin, setup};
use super::*;

/// The ranges a source was asked for, `(first, last)`.
type AskedRanges = Arc<Mutex<Vec<(u64, u64)>>>;

/// A source serving `data`'s ranges, each after `delay`, recording what it was asked; with
/// `corrupt`, the piece starting there comes with a flipped byte.
fn source(data: Arc<Vec<u8>>, delay: Duration, corrupt: Option<u64>) -> (RangeFetch, AskedRanges) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    let fetch: RangeFetch = Arc::new(move |first, last| {
        log.lock().unwrap().push((first, last));
        let mut piece = data[first as usize..=last as usize].to_vec();
        if corrupt == Some(first) {
            piece[0] ^= 0xff;
        }
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            let stream: BoxStream<'static, UpstreamBody> =
                futures::stream::iter([Ok(Bytes::from(piece))]).boxed();
            Ok(stream)
        })
    });
    (fetch, asked)
}

fn ranged(fetch: RangeFetch, chunk: u64, parallel: usize) -> Ranged {
    Ranged {
        first_end: chunk,
        chunk,
        parallel,
        fetch,
        connections: Arc::new(tokio::sync::Semaphore::new(64)),
    }
}

/// Start a ranged download of `data` whose first piece comes from `fetch` too.
fn start(downloads: &Downloads, data: &Arc<Vec<u8>>, ranged: Ranged) -> Arc<Download> {
    let digest = Digest::sha256_of(data);
    let size = data.len() as u64;
    let first_last = ranged.first_end - 1;
    downloads
        .join_or_start(&digest, origin(), None, async move {
            let first = (ranged.fetch)(0, first_last).await?;
            Ok(Fetched {
                ranged: Some(ranged),
                ..Fetched::alone(BlobResponse {
                    size: Some(size),
                    stream: first,
                })
            })
        })
        .0
}

#[tokio::test]
async fn pieces_fill_side_by_side_each_byte_asked_once_and_the_blob_is_stored() {
    let (_dir, downloads, store, _stats) = setup().await;
    let data = Arc::new(blob(1_000_000));
    let (fetch, asked) = source(data.clone(), Duration::from_millis(50), None);
    let started = Instant::now();
    let download = start(&downloads, &data, ranged(fetch, 100_000, 4));
    let body: Vec<Bytes> = tail(download.clone(), None, store.clone())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(body.concat(), *data);
    // Ten pieces of 50 ms each, four at a time: three rounds, not ten.
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    let mut asked = asked.lock().unwrap().clone();
    asked.sort();
    let expected: Vec<(u64, u64)> = (0..10)
        .map(|i| (i * 100_000, i * 100_000 + 99_999))
        .collect();
    assert_eq!(asked, expected, "each byte asked once");
    let mut progress = download.progress();
    progress.wait_for(Phase::is_final).await.unwrap();
    let key = ObjectKey::Blob(Digest::sha256_of(&data));
    assert!(store.read(&key, None).await.unwrap().is_some(), "stored");
}

#[tokio::test]
async fn a_reader_ahead_of_the_fill_gets_its_bytes_with_a_request_of_their_own() {
    let (_dir, downloads, store, _stats) = setup().await;
    let data = Arc::new(blob(2_000_000));
    let (fetch, asked) = source(data.clone(), Duration::from_millis(150), None);
    let download = start(&downloads, &data, ranged(fetch, 100_000, 2));
    let started = Instant::now();
    let range = ByteRange {
        start: 1_900_000,
        end: 1_900_999,
    };
    let body: Vec<Bytes> = tail(download, Some(range), store.clone())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(body.concat(), data[1_900_000..1_901_000]);
    // The fill alone would reach it after ten rounds of 150 ms.
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    assert!(asked.lock().unwrap().contains(&(1_900_000, 1_999_999)));
}

#[tokio::test]
async fn a_corrupt_piece_fails_the_digest_and_nothing_is_stored() {
    let (_dir, downloads, store, stats) = setup().await;
    let data = Arc::new(blob(500_000));
    let (fetch, _) = source(data.clone(), Duration::from_millis(5), Some(300_000));
    let download = start(&downloads, &data, ranged(fetch, 100_000, 3));
    let read: Result<Vec<Bytes>, _> = tail(download.clone(), None, store.clone())
        .try_collect()
        .await;
    assert!(read.is_err(), "the reader never gets a complete body");
    let mut progress = download.progress();
    let last = progress.wait_for(Phase::is_final).await.unwrap().clone();
    assert!(matches!(last.phase, Phase::Failed(_)));
    let key = ObjectKey::Blob(Digest::sha256_of(&data));
    assert!(store.read(&key, None).await.unwrap().is_none());
    assert_eq!(stats.digest_mismatches.load(Ordering::Relaxed), 1);
}
