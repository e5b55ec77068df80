//! Download slots: how many upstream blob downloads one node runs at once, and how many
//! requests may wait for one. Past both, a request is refused at once (`503` with
//! `Retry-After`) instead of adding a task, a spool file and an upload buffer to the node.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::MirrorError;

/// What a client is told to wait before asking again when the node is busy.
const RETRY_AFTER_SECS: u64 = 5;

pub struct DownloadSlots {
    /// What the slots are for, in the busy message.
    what: &'static str,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue: usize,
    timeout: Duration,
}

impl DownloadSlots {
    pub fn new(slots: usize, queue: usize, timeout: Duration) -> DownloadSlots {
        DownloadSlots::named("blobs", slots, queue, timeout)
    }

    /// Slots for upstream fetches of manifests, tags, tag lists and referrers.
    pub fn for_metadata(slots: usize, queue: usize, timeout: Duration) -> DownloadSlots {
        DownloadSlots::named("manifests, tags and referrers", slots, queue, timeout)
    }

    fn named(what: &'static str, slots: usize, queue: usize, timeout: Duration) -> DownloadSlots {
        DownloadSlots {
            what,
            slots: Arc::new(Semaphore::new(slots)),
            waiting: AtomicUsize::new(0),
            queue,
            timeout,
        }
    }

    /// A slot for one download, held until the download ends; waits in a bounded queue.
    pub async fn acquire(&self) -> Result<OwnedSemaphorePermit, MirrorError> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(permit);
        }
        let ahead = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        if ahead >= self.queue {
            return Err(busy(self.what, "the queue for fetch slots is full"));
        }
        match tokio::time::timeout(self.timeout, Arc::clone(&self.slots).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(busy(self.what, "fetch slots are closed")),
            Err(_) => Err(busy(self.what, "no fetch slot came free in time")),
        }
    }

    /// Every slot is taken and requests wait for one: downloads nobody reads should yield.
    pub fn contended(&self) -> bool {
        self.slots.available_permits() == 0 && self.waiting.load(Ordering::Acquire) > 0
    }

    /// Requests waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn busy(what: &str, why: &str) -> MirrorError {
    MirrorError::busy(
        format!("wharf is fetching as many {what} as it may at once and {why}; retry shortly"),
        Some(Duration::from_secs(RETRY_AFTER_SECS)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_queue_then_refuse() {
        let slots = Arc::new(DownloadSlots::new(1, 1, Duration::from_millis(200)));
        let held = slots.acquire().await.unwrap();
        assert!(!slots.contended());
        let queued = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire().await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(slots.contended());
        // The queue holds one: the next is refused at once.
        let refused = slots.acquire().await.unwrap_err();
        assert!(matches!(refused, MirrorError::Busy { .. }), "{refused:?}");
        assert_eq!(
            refused.retry_after(),
            Some(Duration::from_secs(RETRY_AFTER_SECS))
        );
        // The queued one times out while the slot stays held.
        assert!(queued.await.unwrap().is_err());
        drop(held);
        assert!(slots.acquire().await.is_ok());
        assert_eq!(slots.waiting(), 0);
    }
}
