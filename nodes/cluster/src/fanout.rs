//! Relay fan-out, serving side: which peers stream each blob from this node, and whether the
//! next one is served or sent to one of them (`[cluster] max_peer_streams`). A node streaming
//! a blob has its own download of it, which it serves to peers the same way (tailing its
//! spool, releasing the last byte only after the digest verified), so redirected peers form a
//! relay tree and the node that fetched the blob sends it out at most `max_peer_streams` times.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Blobs tracked at once; streams of further blobs are served untracked (never redirected).
const MAX_TRACKED_BLOBS: usize = 4096;
/// Relays named in one redirect.
const RELAYS_PER_REDIRECT: usize = 4;
/// Streams tracked per blob; further ones are served untracked.
const MAX_TRACKED_STREAMS: usize = 1024;
/// A longer relay address than this is not a `host:port`: never offered.
const MAX_ADDR_LEN: usize = 256;

/// This node's peer streams, by digest.
pub struct Fanout {
    /// Peers served per blob before the next is redirected; 0: no limit.
    max_per_blob: usize,
    streams: Mutex<HashMap<String, Vec<Serving>>>,
    next_id: AtomicU64,
}

struct Serving {
    id: u64,
    /// Where the peer being served can be dialled (empty: it offered no relay).
    relay_addr: String,
}

/// Whether a peer's stream is served here or redirected.
pub enum Admission {
    /// Served: the stream counts towards the limit until the guard drops.
    Serve(ServingGuard),
    /// Stream from one of these nodes instead.
    Redirect(Vec<String>),
}

/// One counted peer stream; dropping it (the stream ended or broke) frees its place.
pub struct ServingGuard {
    fanout: Option<Arc<Fanout>>,
    digest: String,
    id: u64,
}

impl Fanout {
    pub fn new(max_per_blob: usize) -> Arc<Fanout> {
        Arc::new(Fanout {
            max_per_blob,
            streams: Mutex::default(),
            next_id: AtomicU64::new(1),
        })
    }

    /// Admit the peer at `asker` (its relay address) to a stream of `digest`: served while
    /// fewer than `max_per_blob` peers stream it from here, or when it does not `accept_relay`;
    /// otherwise sent to up to four of the peers being served (not itself), rotating.
    pub fn admit(self: &Arc<Self>, digest: &str, asker: &str, accept_relay: bool) -> Admission {
        let untracked = || {
            Admission::Serve(ServingGuard {
                fanout: None,
                digest: String::new(),
                id: 0,
            })
        };
        if self.max_per_blob == 0 {
            return untracked();
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if !streams.contains_key(digest) && streams.len() >= MAX_TRACKED_BLOBS {
            return untracked();
        }
        let serving = streams.entry(digest.to_string()).or_default();
        if serving.len() >= MAX_TRACKED_STREAMS {
            return untracked();
        }
        let asker = if asker.len() > MAX_ADDR_LEN {
            ""
        } else {
            asker
        };
        if accept_relay && serving.len() >= self.max_per_blob {
            let relays: Vec<&Serving> = serving
                .iter()
                .filter(|s| !s.relay_addr.is_empty() && s.relay_addr != asker)
                .collect();
            if !relays.is_empty() {
                let start = usize::try_from(id).unwrap_or(0) % relays.len();
                let chosen = relays
                    .iter()
                    .cycle()
                    .skip(start)
                    .take(relays.len().min(RELAYS_PER_REDIRECT))
                    .map(|s| s.relay_addr.clone())
                    .collect();
                return Admission::Redirect(chosen);
            }
        }
        serving.push(Serving {
            id,
            relay_addr: asker.to_string(),
        });
        Admission::Serve(ServingGuard {
            fanout: Some(self.clone()),
            digest: digest.to_string(),
            id,
        })
    }

    /// Peers streaming `digest` from this node now.
    pub fn serving(&self, digest: &str) -> usize {
        self.streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)
            .map_or(0, Vec::len)
    }
}

impl Drop for ServingGuard {
    fn drop(&mut self) {
        let Some(fanout) = &self.fanout else {
            return;
        };
        let mut streams = fanout.streams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(serving) = streams.get_mut(&self.digest) {
            serving.retain(|s| s.id != self.id);
            if serving.is_empty() {
                streams.remove(&self.digest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_limit_peers_are_sent_to_the_ones_served_and_places_free_on_drop() {
        let fanout = Fanout::new(2);
        let Admission::Serve(a) = fanout.admit("d", "a:1", true) else {
            panic!("first peer redirected");
        };
        let Admission::Serve(_b) = fanout.admit("d", "b:1", true) else {
            panic!("second peer redirected");
        };
        match fanout.admit("d", "c:1", true) {
            Admission::Redirect(relays) => {
                assert_eq!(relays.len(), 2);
                assert!(relays.contains(&"a:1".to_string()) && relays.contains(&"b:1".to_string()));
            }
            Admission::Serve(_) => panic!("third peer served past the limit"),
        }
        // A peer that must be served here (the last hop, a resume) is.
        let Admission::Serve(_forced) = fanout.admit("d", "c:1", false) else {
            panic!("a forced stream was redirected");
        };
        assert_eq!(fanout.serving("d"), 3);
        // Another blob has its own count.
        assert!(matches!(
            fanout.admit("e", "c:1", true),
            Admission::Serve(_)
        ));
        drop(a);
        assert_eq!(fanout.serving("d"), 2);
    }

    #[test]
    fn a_peer_is_never_sent_to_itself_nor_to_one_without_an_address() {
        let fanout = Fanout::new(1);
        let Admission::Serve(_a) = fanout.admit("d", "a:1", true) else {
            panic!("first peer redirected");
        };
        // The only relay is the asker itself: served here.
        assert!(matches!(
            fanout.admit("d", "a:1", true),
            Admission::Serve(_)
        ));
        let fanout = Fanout::new(1);
        let Admission::Serve(_anonymous) = fanout.admit("d", "", true) else {
            panic!("first peer redirected");
        };
        assert!(matches!(
            fanout.admit("d", "b:1", true),
            Admission::Serve(_)
        ));
    }

    #[test]
    fn no_limit_tracks_nothing() {
        let fanout = Fanout::new(0);
        for _ in 0..10 {
            assert!(matches!(
                fanout.admit("d", "a:1", true),
                Admission::Serve(_)
            ));
        }
        assert_eq!(fanout.serving("d"), 0);
    }
}
