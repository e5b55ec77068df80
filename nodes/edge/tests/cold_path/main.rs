//! Cold blobs at the speed of the network: a real registry behind the testkit's WAN link (a
//! shared bandwidth, a cap per connection and a round trip, as a long path gives one TCP
//! stream), fetched as ranges side by side (also through a parent tier still fetching it),
//! read anywhere while still cold, and from upstreams that ignore ranges, cut connections or
//! corrupt bytes. The times are compared with one plain stream over the same link. One test at
//! a time: they time the link, and two at once would share the machine's cores.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../mirror/common.rs"]
mod common;

mod faults;
mod timing;

use std::sync::LazyLock;

use bytes::Bytes;
use wharf_testkit::push::{PushAuth, Pusher};
use wharf_testkit::registry::{Registry, RegistryOptions};
use wharf_testkit::wan::{LinkShape, WanLink};

/// Held by each test for its whole run.
static ONE_AT_A_TIME: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(Default::default);

const MIB: usize = 1024 * 1024;

/// The long path: 200 MB/s in all, 25 MB/s for one connection, 20 ms a round trip.
fn long_path() -> LinkShape {
    LinkShape::long_path()
}

/// A blob of random bytes in a real registry.
struct ColdBlob {
    registry: Registry,
    data: Bytes,
    digest: String,
}

const REPO: &str = "test/cold";

impl ColdBlob {
    async fn push(len: usize, seed: u64) -> ColdBlob {
        let registry = Registry::start(RegistryOptions::default()).await.unwrap();
        let data = wharf_testkit::image::random_bytes(len, seed);
        let digest = wharf_testkit::sha256(&data);
        Pusher::new(&registry.url(), PushAuth::None)
            .push_blob(REPO, data.clone(), &digest)
            .await
            .unwrap();
        ColdBlob {
            registry,
            data,
            digest,
        }
    }

    /// Its path under `/v2/`.
    fn path(&self) -> String {
        format!("/v2/{REPO}/blobs/{}", self.digest)
    }

    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    /// GET it whole from `base` and check every byte.
    async fn pull_from(&self, base: &str) {
        let response = reqwest::get(format!("{base}{}", self.path()))
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        assert_eq!(
            common::hash_body(response).await.unwrap(),
            (self.digest.clone(), self.len())
        );
    }

    /// The upstream sent about one copy: `sent` bytes, at most 1.1 times the size.
    fn sent_about_once(&self, sent: u64, hop: &str) {
        assert!(
            sent as f64 <= 1.1 * self.len() as f64,
            "{hop} sent {sent} bytes for a blob of {}",
            self.len()
        );
    }

    /// Through `shape` to the registry.
    async fn link(&self, shape: LinkShape) -> WanLink {
        WanLink::start(self.registry.host(), shape).await.unwrap()
    }
}
