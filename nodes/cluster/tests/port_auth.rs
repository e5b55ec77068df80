//! The cluster port is authenticated: every service (Raft, admin, leases, blob streams)
//! refuses a caller without proof of the cluster key, or with proof of another key, before
//! any of its code runs; a caller with the key is served.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use tonic::Code;
use tonic::transport::Channel;
use wharf_cluster::auth::Prove;
use wharf_cluster::{Cluster, ClusterKey};
use wharf_core::config::Config;
use wharf_proto::v1::admin_client::AdminClient;
use wharf_proto::v1::blobs_client::BlobsClient;
use wharf_proto::v1::leases_client::LeasesClient;
use wharf_proto::v1::raft_client::RaftClient;
use wharf_proto::v1::{
    AcquireRequest, FetchRequest, JoinRequest, LeaveRequest, RaftMessage, StatusRequest,
};

/// Every RPC's status code for a caller proving `key` (`join` and `leave` only with
/// `membership`).
async fn codes(addr: &str, key: Option<ClusterKey>, membership: bool) -> Vec<(&'static str, Code)> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let prove = Prove(key);
    let mut admin = AdminClient::with_interceptor(channel.clone(), prove.clone());
    let mut leases = LeasesClient::with_interceptor(channel.clone(), prove.clone());
    let mut blobs = BlobsClient::with_interceptor(channel.clone(), prove.clone());
    let mut raft = RaftClient::with_interceptor(channel, prove);
    let code = |r: Result<(), tonic::Status>| r.err().map_or(Code::Ok, |s| s.code());
    let digest = format!("sha256:{}", "a".repeat(64));
    let mut codes = Vec::new();
    if membership {
        codes.extend([
            (
                "join",
                code(
                    admin
                        .join(JoinRequest {
                            node_id: 77,
                            addr: "127.0.0.1:9".into(),
                        })
                        .await
                        .map(drop),
                ),
            ),
            (
                "leave",
                code(admin.leave(LeaveRequest { node_id: 77 }).await.map(drop)),
            ),
        ]);
    }
    codes.extend([
        (
            "status",
            code(admin.status(StatusRequest {}).await.map(drop)),
        ),
        (
            "acquire",
            code(
                leases
                    .acquire(AcquireRequest {
                        digest: digest.clone(),
                        node_id: 77,
                        addr: "127.0.0.1:9".into(),
                    })
                    .await
                    .map(drop),
            ),
        ),
        (
            "fetch",
            code(
                match blobs
                    .fetch(FetchRequest {
                        digest,
                        offset: 0,
                        ..Default::default()
                    })
                    .await
                {
                    Ok(mut stream) => stream.get_mut().message().await.map(drop),
                    Err(e) => Err(e),
                },
            ),
        ),
        (
            "vote",
            code(
                raft.vote(RaftMessage {
                    json: b"{}".to_vec().into(),
                })
                .await
                .map(drop),
            ),
        ),
    ]);
    codes
}

#[tokio::test]
async fn every_cluster_service_refuses_callers_without_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut config = Config {
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    config.cluster.listen = addr.clone();
    let mirror = wharf_mirror::Mirror::open(&config, wharf_metrics::Metrics::detached())
        .await
        .unwrap();
    let key = ClusterKey::from_secret(b"0123456789abcdef0123456789abcdef-cluster").unwrap();
    let cluster = Cluster::start(
        &config.cluster,
        Some(key.clone()),
        None,
        &config.data_dir,
        listener,
        Arc::clone(&mirror),
    )
    .await
    .unwrap();

    // The founding member's own membership is applied shortly after start.
    for _ in 0..100 {
        if cluster.node.members().len() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(cluster.node.members().len(), 1, "a cluster of one");
    let wrong = ClusterKey::from_secret(b"another-key-another-key-another-key!!").unwrap();
    for (who, caller) in [("no key", None), ("a wrong key", Some(wrong))] {
        for (rpc, code) in codes(&addr, caller, true).await {
            assert_eq!(code, Code::Unauthenticated, "{rpc} with {who}");
        }
    }
    assert_eq!(
        cluster.node.members().len(),
        1,
        "no caller without the key changed the membership"
    );
    // The key opens every service (what each then answers is its own business).
    for (rpc, code) in codes(&addr, Some(key), false).await {
        assert_ne!(code, Code::Unauthenticated, "{rpc} with the key");
    }
    cluster.shutdown().await;
}

/// A cluster member on `listener` with `config`'s `[cluster.tls]` and no key.
async fn mtls_member(config: &Config, listener: tokio::net::TcpListener) -> Cluster {
    let tls = wharf_cluster::ClusterTls::load(&config.cluster.tls, true)
        .unwrap()
        .expect("[cluster.tls] is set");
    let mirror = wharf_mirror::Mirror::open(config, wharf_metrics::Metrics::detached())
        .await
        .unwrap();
    Cluster::start(
        &config.cluster,
        None,
        Some(tls),
        &config.data_dir,
        listener,
        mirror,
    )
    .await
    .unwrap()
}

/// `[cluster.tls]`: a peer must present a certificate from the cluster's CA. Without one, or
/// with one from another CA, the handshake fails and no service answers; with one, they do.
#[tokio::test]
async fn with_mtls_a_peer_needs_a_certificate_from_the_cluster_ca() {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    use wharf_core::config::ClusterTlsConfig;
    use wharf_testkit::tls::TestPki;

    let pki = TestPki::new(&["127.0.0.1"]).unwrap();
    let other = TestPki::new(&["127.0.0.1"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut config = Config {
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    config.cluster.listen = addr.clone();
    config.cluster.tls = ClusterTlsConfig {
        cert_file: pki.member_cert.clone(),
        key_file: pki.member_key.clone(),
        ca_file: pki.ca_cert.clone(),
        server_name: String::new(),
    };
    let cluster = mtls_member(&config, listener).await;

    let read = |p: &std::path::Path| std::fs::read(p).unwrap();
    let status = |identity: Option<(Vec<u8>, Vec<u8>)>| {
        let addr = addr.clone();
        let ca = Certificate::from_pem(read(&pki.ca_cert));
        async move {
            let mut tls = ClientTlsConfig::new().ca_certificate(ca);
            if let Some((cert, key)) = identity {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            let channel = Channel::from_shared(format!("https://{addr}"))
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .connect()
                .await;
            match channel {
                Err(_) => false,
                Ok(channel) => AdminClient::new(channel)
                    .status(StatusRequest {})
                    .await
                    .is_ok(),
            }
        }
    };
    assert!(!status(None).await, "no client certificate");
    assert!(
        !status(Some((read(&other.client_cert), read(&other.client_key)))).await,
        "a certificate from another CA"
    );
    assert!(
        status(Some((read(&pki.client_cert), read(&pki.client_key)))).await,
        "a certificate from the cluster's CA"
    );
    // Plain HTTP/2 without TLS gets nothing either.
    assert!(
        codes(&addr, None, false)
            .await
            .iter()
            .all(|(_, c)| *c != Code::Ok)
    );

    // A second member with a certificate of the same CA joins over mTLS.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut second = config.clone();
    second.data_dir = dir.path().join("data2");
    second.cluster.listen = listener.local_addr().unwrap().to_string();
    second.cluster.join = vec![addr.clone()];
    let joined = mtls_member(&second, listener).await;
    let mut members = 0;
    for _ in 0..100 {
        members = cluster.node.members().len();
        if members == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(members, 2, "the second member joined over mTLS");
    joined.shutdown().await;
    cluster.shutdown().await;
}
