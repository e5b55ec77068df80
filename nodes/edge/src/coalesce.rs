//! In-process singleflight: concurrent callers asking for the same key share one execution.
//! The work runs on its own task, so it completes (and fills the cache) even if the caller
//! that started it goes away. However the task ends (a result, a panic, the runtime shutting
//! down), a drop guard takes its key out of the registry, so a failure is never remembered.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use crate::error::ApiError;

type Flight<T> = Shared<BoxFuture<'static, Result<T, ApiError>>>;

pub struct Coalescer<K, T> {
    inflight: Arc<Mutex<HashMap<K, Flight<T>>>>,
}

impl<K, T> Default for Coalescer<K, T> {
    fn default() -> Self {
        Coalescer {
            inflight: Arc::default(),
        }
    }
}

impl<K, T> Coalescer<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    /// Run `work` unless a flight for `key` is already under way; either way, its result.
    /// The boolean is true when this caller joined an existing flight.
    pub async fn run<F>(&self, key: K, work: impl FnOnce() -> F) -> (Result<T, ApiError>, bool)
    where
        F: Future<Output = Result<T, ApiError>> + Send + 'static,
    {
        let (flight, joined) = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match inflight.get(&key) {
                Some(flight) => (flight.clone(), true),
                None => {
                    let guard = Forget {
                        registry: Arc::clone(&self.inflight),
                        key: Some(key.clone()),
                    };
                    let work = work();
                    let task = tokio::spawn(async move {
                        let _guard = guard;
                        work.await
                    });
                    let flight = async move {
                        task.await.unwrap_or_else(|e| {
                            tracing::error!(error = %e, "coalesced work panicked");
                            Err(ApiError::internal("internal error"))
                        })
                    }
                    .boxed()
                    .shared();
                    inflight.insert(key, flight.clone());
                    (flight, false)
                }
            }
        };
        (flight.await, joined)
    }
}

/// Removes a flight's key when its task ends, whether by returning or by unwinding.
struct Forget<K: Hash + Eq, T> {
    registry: Arc<Mutex<HashMap<K, Flight<T>>>>,
    key: Option<K>,
}

impl<K: Hash + Eq, T> Drop for Forget<K, T> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.registry
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let coalescer: Arc<Coalescer<&'static str, usize>> = Arc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (c, runs) = (coalescer.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                c.run("k", || async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(runs.fetch_add(1, Ordering::SeqCst) + 1)
                })
                .await
            }));
        }
        let mut joined = 0;
        for t in tasks {
            let (result, j) = t.await.unwrap();
            assert_eq!(result.unwrap(), 1);
            joined += usize::from(j);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(joined, 15);
        // Once finished, the next call runs again.
        let (again, j) = coalescer.run("k", || async { Ok(99) }).await;
        assert_eq!((again.unwrap(), j), (99, false));
    }

    #[tokio::test]
    async fn a_panicking_flight_is_forgotten() {
        let coalescer: Arc<Coalescer<u8, u8>> = Arc::default();
        let (first, _) = coalescer
            .run(1, || async {
                if std::hint::black_box(true) {
                    panic!("boom");
                }
                Ok(0)
            })
            .await;
        assert_eq!(first.unwrap_err().code, wharf_core::OciCode::Unknown);
        let (again, joined) = coalescer.run(1, || async { Ok(5) }).await;
        assert_eq!(
            (again.unwrap(), joined),
            (5, false),
            "the key is usable again"
        );
    }

    #[tokio::test]
    async fn work_survives_a_cancelled_caller() {
        let coalescer: Arc<Coalescer<u8, u8>> = Arc::default();
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        let first = coalescer.run(1, || async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            d.fetch_add(1, Ordering::SeqCst);
            Ok(7)
        });
        // Poll once then drop the caller.
        let _ = tokio::time::timeout(Duration::from_millis(1), first).await;
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }
}
