//! In-process singleflight: concurrent callers asking for the same key share one execution.
//! The work runs on its own task, started only once a fetch slot is free (the node's bound on
//! upstream metadata work, like the download slots for blobs: a bounded queue, then `503` with
//! `Retry-After`), and lives only while a caller waits for it: when the last one goes away,
//! the task is aborted, so requests that hang up leave no work behind. However the task ends
//! (a result, a panic, an abort, the runtime shutting down), a drop guard takes its key out of
//! the registry, so a failure is never remembered.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::task::AbortHandle;

use crate::error::MirrorError;
use crate::slots::DownloadSlots;

type Flight<T> = Shared<BoxFuture<'static, Result<T, MirrorError>>>;

/// One flight under way: its shared result, its task, and how many callers wait for it.
struct Entry<T> {
    flight: Flight<T>,
    task: AbortHandle,
    waiters: usize,
    /// Tells this flight's entry from a later one under the same key.
    id: u64,
}

struct Registry<K, T> {
    flights: HashMap<K, Entry<T>>,
    next_id: u64,
}

pub struct Coalescer<K, T> {
    inflight: Arc<Mutex<Registry<K, T>>>,
    /// Slots a new flight must take first; `None`: unbounded (tests).
    slots: Option<Arc<DownloadSlots>>,
}

impl<K, T> Default for Coalescer<K, T> {
    fn default() -> Self {
        Coalescer {
            inflight: Arc::new(Mutex::new(Registry {
                flights: HashMap::new(),
                next_id: 0,
            })),
            slots: None,
        }
    }
}

impl<K, T> Coalescer<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    /// A coalescer whose flights each hold one of `slots` while they run.
    pub fn bounded(slots: Arc<DownloadSlots>) -> Self {
        Coalescer {
            slots: Some(slots),
            ..Coalescer::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry<K, T>> {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Join the flight for `key`, if one is under way.
    fn join(&self, key: &K) -> Option<(Flight<T>, u64)> {
        let mut registry = self.lock();
        let entry = registry.flights.get_mut(key)?;
        entry.waiters = entry.waiters.saturating_add(1);
        Some((entry.flight.clone(), entry.id))
    }

    /// Run `work` unless a flight for `key` is already under way; either way, its result.
    /// The boolean is true when this caller joined an existing flight. A new flight waits for
    /// a slot first (or is refused with `503`), without holding any lock.
    pub async fn run<F>(&self, key: K, work: impl FnOnce() -> F) -> (Result<T, MirrorError>, bool)
    where
        F: Future<Output = Result<T, MirrorError>> + Send + 'static,
    {
        if let Some((flight, id)) = self.join(&key) {
            let _waiting = Waiter::new(self, key, id);
            return (flight.await, true);
        }
        let permit = match &self.slots {
            Some(slots) => match slots.acquire().await {
                Ok(permit) => Some(permit),
                Err(e) => return (Err(e), false),
            },
            None => None,
        };
        let (flight, id, joined) = {
            let mut registry = self.lock();
            if let Some(entry) = registry.flights.get_mut(&key) {
                // Another caller started it while this one waited for a slot.
                entry.waiters = entry.waiters.saturating_add(1);
                (entry.flight.clone(), entry.id, true)
            } else {
                let id = registry.next_id;
                registry.next_id = registry.next_id.wrapping_add(1);
                let guard = Forget {
                    registry: Arc::clone(&self.inflight),
                    key: Some(key.clone()),
                    id,
                };
                // Goes on with the login of the client that started it (`credentials = "client"`).
                let work = wharf_upstream::login::carried(work());
                let task = tokio::spawn(async move {
                    let _guard = guard;
                    let _permit = permit;
                    work.await
                });
                let abort = task.abort_handle();
                let flight = async move {
                    task.await.unwrap_or_else(|e| {
                        if e.is_panic() {
                            tracing::error!(error = %e, "coalesced work panicked");
                        }
                        Err(MirrorError::internal("internal error"))
                    })
                }
                .boxed()
                .shared();
                registry.flights.insert(
                    key.clone(),
                    Entry {
                        flight: flight.clone(),
                        task: abort,
                        waiters: 1,
                        id,
                    },
                );
                (flight, id, false)
            }
        };
        let _waiting = Waiter::new(self, key, id);
        (flight.await, joined)
    }

    /// Flights under way now.
    pub fn in_flight(&self) -> usize {
        self.lock().flights.len()
    }
}

/// One caller's interest in a flight: the last one to leave before it ends aborts it.
struct Waiter<'a, K: Hash + Eq, T> {
    coalescer: &'a Coalescer<K, T>,
    key: Option<K>,
    id: u64,
}

impl<'a, K: Hash + Eq, T> Waiter<'a, K, T> {
    fn new(coalescer: &'a Coalescer<K, T>, key: K, id: u64) -> Self {
        Waiter {
            coalescer,
            key: Some(key),
            id,
        }
    }
}

impl<K: Hash + Eq, T> Drop for Waiter<'_, K, T> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut registry = self
            .coalescer
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Some(entry) = registry.flights.get_mut(&key).filter(|e| e.id == self.id) else {
            return;
        };
        entry.waiters = entry.waiters.saturating_sub(1);
        if entry.waiters == 0 {
            // Nobody waits: stop the work, and let the next caller start afresh.
            entry.task.abort();
            registry.flights.remove(&key);
        }
    }
}

/// Removes a flight's key when its task ends, whether by returning or by unwinding.
struct Forget<K: Hash + Eq, T> {
    registry: Arc<Mutex<Registry<K, T>>>,
    key: Option<K>,
    id: u64,
}

impl<K: Hash + Eq, T> Drop for Forget<K, T> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
            if registry.flights.get(&key).is_some_and(|e| e.id == self.id) {
                registry.flights.remove(&key);
            }
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
        assert_eq!(first.unwrap_err().code(), wharf_core::OciCode::Unknown);
        let (again, joined) = coalescer.run(1, || async { Ok(5) }).await;
        assert_eq!(
            (again.unwrap(), joined),
            (5, false),
            "the key is usable again"
        );
    }

    /// Review #10: work nobody waits for any more is stopped (a caller that hangs up leaves
    /// nothing behind), while one caller leaving does not stop it for the others.
    #[tokio::test]
    async fn work_stops_when_no_caller_waits() {
        let coalescer: Arc<Coalescer<u8, u8>> = Arc::default();
        let done = Arc::new(AtomicUsize::new(0));
        let work = |d: Arc<AtomicUsize>| {
            move || async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                d.fetch_add(1, Ordering::SeqCst);
                Ok(7)
            }
        };
        let first = coalescer.run(1, work(done.clone()));
        // Poll once then drop the only caller.
        let _ = tokio::time::timeout(Duration::from_millis(1), first).await;
        assert_eq!(coalescer.in_flight(), 0, "forgotten at once");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(done.load(Ordering::SeqCst), 0, "aborted");

        // Two callers, one leaves: the other still gets the result.
        let (c1, c2) = (coalescer.clone(), coalescer.clone());
        let leaver = tokio::spawn({
            let d = done.clone();
            async move { c1.run(2, work(d)).await }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let stayer = tokio::spawn({
            let d = done.clone();
            async move { c2.run(2, work(d)).await }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        leaver.abort();
        let (result, joined) = stayer.await.unwrap();
        assert_eq!((result.unwrap(), joined), (7, true));
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }

    /// Review #10: new flights take a slot; past the slots and the queue, `503` at once.
    #[tokio::test]
    async fn flights_are_bounded_by_slots() {
        let slots = Arc::new(DownloadSlots::new(1, 0, Duration::from_millis(50)));
        let coalescer: Arc<Coalescer<u8, u8>> = Arc::new(Coalescer::bounded(slots));
        let c = coalescer.clone();
        let holder = tokio::spawn(async move {
            c.run(1, || async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok(1)
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (refused, _) = coalescer.run(2, || async { Ok(2) }).await;
        let refused = refused.unwrap_err();
        assert!(matches!(refused, MirrorError::Busy { .. }), "{refused:?}");
        assert!(refused.retry_after().is_some());
        // Joining a flight under way needs no slot.
        let (joined, j) = coalescer.run(1, || async { Ok(9) }).await;
        assert_eq!((joined.unwrap(), j), (1, true));
        assert_eq!(holder.await.unwrap().0.unwrap(), 1);
    }
}
