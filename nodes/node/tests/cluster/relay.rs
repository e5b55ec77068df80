//! Relay fan-out: many nodes streaming one cold blob form a relay tree instead of all
//! streaming from the node fetching it, and a broken peer stream resumes at another node.

use std::path::Path;
use std::time::Duration;

use wharf_testkit::cluster::WharfCluster;
use wharf_testkit::push::{PushAuth, Pusher};
use wharf_testkit::registry::{Registry, RegistryOptions};
use wharf_testkit::s3::S3Server;
use wharf_testkit::wan::{LinkShape, WanLink};

use super::common::*;

struct Relays {
    registry: Registry,
    _s3: S3Server,
    _link: WanLink,
    cluster: WharfCluster,
}

/// `n` members reading `config`, over a registry holding `blob` behind a link of
/// `bytes_per_sec`, so that its streams overlap.
async fn start(n: usize, blob: &Blob, bytes_per_sec: u64, config: &str) -> Relays {
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    Pusher::new(&registry.url(), PushAuth::None)
        .push_blob(REPO, blob.data.clone(), &blob.digest)
        .await
        .unwrap();
    let shape = LinkShape {
        bytes_per_sec,
        rtt: Duration::from_millis(2),
        cut_every: None,
        per_connection: None,
    };
    let link = WanLink::start(registry.host(), shape).await.unwrap();
    let s3 = S3Server::start().await.unwrap();
    s3.create_bucket("relays").await.unwrap();
    let binary = Path::new(env!("CARGO_BIN_EXE_wharf"));
    let cluster = WharfCluster::start_configured(binary, n, &link.url(), &s3, "relays", config)
        .await
        .unwrap();
    Relays {
        registry,
        _s3: s3,
        _link: link,
        cluster,
    }
}

/// Nine nodes, eighteen clients on one fresh blob: every client gets it verified, the upstream
/// serves it once, and no node streams it to more than `max_peer_streams` (4) peers: the
/// fetching node's outbound peer bytes stay within 4× the blob.
#[tokio::test]
async fn nine_nodes_relay_a_herd_and_no_node_sends_more_than_four_copies() {
    let fresh = blob(16 * MIB, 4100);
    let r = start(9, &fresh, 16_000_000, "").await;
    herd(&r.cluster, 18, &fresh.digest).await;
    assert_eq!(upstream_fetches(&r.registry, &fresh.digest).await, 1);
    let served = metric_per_member(&r.cluster, "wharf_cluster_peer_bytes_served_total").await;
    let redirects = metric_per_member(&r.cluster, "wharf_cluster_peer_redirects_total").await;
    let size = fresh.data.len() as u64;
    eprintln!(
        "peer bytes served per node, in blobs: {:?}; redirects per node: {redirects:?}",
        served
            .iter()
            .map(|b| format!("{:.2}", *b as f64 / size as f64))
            .collect::<Vec<_>>()
    );
    let most = served.iter().copied().max().unwrap_or(0);
    assert!(
        most <= 4 * size,
        "a node streamed {:.2} copies of the blob to its peers (at most 4)",
        most as f64 / size as f64
    );
    assert!(
        redirects.iter().sum::<u64>() > 0,
        "no peer was sent to a relay"
    );
}

/// A node streaming a blob from a relay that dies mid-stream resumes from the byte it had
/// at the node fetching it: its client gets the whole blob, verified, and the upstream still
/// serves it once.
#[tokio::test]
async fn a_peer_stream_broken_by_a_dead_relay_resumes_at_the_fetching_node() {
    let fresh = blob(24 * MIB, 4200);
    // One peer stream per node: the third node is sent to the second as its relay.
    let mut r = start(3, &fresh, 8_000_000, "[cluster]\nmax_peer_streams = 1\n").await;
    let base = |i: usize| r.cluster.members[i].url();
    let (fetcher, relay, last) = (base(0), base(1), base(2));
    let digest = fresh.digest.clone();
    let first = tokio::spawn({
        let digest = digest.clone();
        async move { pull(&reqwest::Client::new(), &fetcher, &digest).await }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let relayed = tokio::spawn({
        let digest = digest.clone();
        async move { pull(&reqwest::Client::new(), &relay, &digest).await }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let resumed = tokio::spawn({
        let digest = digest.clone();
        async move { pull(&reqwest::Client::new(), &last, &digest).await }
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    r.cluster.kill(1);
    let _ = relayed.await;
    assert_eq!(first.await.unwrap(), Ok(()));
    assert_eq!(
        resumed.await.unwrap(),
        Ok(()),
        "the client behind the broken stream failed; its node's log:\n{}",
        r.cluster.log(2)
    );
    let resumes = metric_per_member(&r.cluster, "wharf_cluster_peer_resumes_total").await;
    assert_eq!(
        resumes.iter().sum::<u64>(),
        1,
        "resumes per running node: {resumes:?}"
    );
    assert_eq!(upstream_fetches(&r.registry, &digest).await, 1);
}
