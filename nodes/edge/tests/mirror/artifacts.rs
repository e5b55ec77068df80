//! OCI artifacts through the mirror with a real client, PyPI's `oras`: a Helm chart (Helm's
//! config and chart media types) and a generic artifact (its own `artifactType`, an empty
//! config, a layer that is no tar), pulled by the registry's name as a prefix and by a host
//! route, and the same content by `ns=`; every file checked against its digest.

use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::json;
use wharf_testkit::image::{Blob, Manifest, layer};
use wharf_testkit::push::{PushAuth, Pusher};
use wharf_testkit::registry::{Registry, RegistryOptions};
use wharf_testkit::sha256;

use crate::common::*;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const TITLE: &str = "org.opencontainers.image.title";

/// An OCI manifest of `config` and titled `layers`, with `artifact_type` when given.
fn manifest(artifact_type: Option<&str>, config: &Blob, layers: &[(&Blob, &str)]) -> Manifest {
    let descriptor =
        |b: &Blob| json!({"mediaType": b.media_type, "digest": b.digest, "size": b.data.len()});
    let mut value = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(config),
        "layers": layers.iter().map(|(b, title)| {
            let mut d = descriptor(b);
            d["annotations"] = json!({TITLE: title});
            d
        }).collect::<Vec<_>>(),
    });
    if let Some(t) = artifact_type {
        value["artifactType"] = json!(t);
    }
    let body = Bytes::from(serde_json::to_vec(&value).unwrap());
    Manifest {
        digest: sha256(&body),
        body,
        media_type: OCI_MANIFEST.into(),
    }
}

/// Pull `target` with oras into a fresh directory; the files it wrote.
async fn oras_pull(target: &str) -> (tempfile::TempDir, Vec<(String, Vec<u8>)>) {
    let python = std::env::var("WHARF_TEST_ORAS_PYTHON").unwrap_or_else(|_| {
        panic!("WHARF_TEST_ORAS_PYTHON is unset: run the README's test command (it installs oras)")
    });
    let out = tempfile::tempdir().unwrap();
    let script = "import sys, oras.client\n\
        c = oras.client.OrasClient(insecure=True)\n\
        for f in c.pull(target=sys.argv[1], outdir=sys.argv[2]): print(f)\n";
    let result = tokio::process::Command::new(python)
        .args(["-c", script, target, out.path().to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(
        result.status.success(),
        "oras pull {target}: {}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    let mut files = Vec::new();
    for entry in std::fs::read_dir(out.path()).unwrap() {
        let entry = entry.unwrap();
        files.push((
            entry.file_name().to_string_lossy().into_owned(),
            std::fs::read(entry.path()).unwrap(),
        ));
    }
    files.sort();
    (out, files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oras_pulls_a_helm_chart_and_a_custom_artifact_by_prefix_host_and_ns() {
    let (hub, _) = seeded_registry().await;
    let ghcr = Registry::start(RegistryOptions::default())
        .await
        .expect("docker-registry starts");
    let pusher = Pusher::new(&ghcr.url(), PushAuth::None);

    // A Helm chart as `helm push` stores it.
    let chart_config = Blob::new(
        r#"{"apiVersion":"v2","name":"app","version":"1.2.0"}"#,
        "application/vnd.cncf.helm.config.v1+json",
    );
    let (chart, _) = layer(
        "app/Chart.yaml",
        b"apiVersion: v2\nname: app\nversion: 1.2.0\n",
        "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
    );
    let chart_manifest = manifest(None, &chart_config, &[(&chart, "app-1.2.0.tgz")]);
    pusher
        .push_blobs("charts/app", &[&chart_config, &chart])
        .await
        .unwrap();
    pusher
        .push_manifest("charts/app", "1.2.0", &chart_manifest)
        .await
        .unwrap();

    // A generic artifact: its own artifactType, the empty config, a JSON layer.
    let empty = Blob::new("{}", "application/vnd.oci.empty.v1+json");
    let sbom = Blob::new(
        r#"{"spdxVersion":"SPDX-2.3","name":"app"}"#,
        "application/spdx+json",
    );
    let sbom_manifest = manifest(
        Some("application/vnd.example.sbom.v1"),
        &empty,
        &[(&sbom, "sbom.spdx.json")],
    );
    pusher
        .push_blobs("org/sbom", &[&empty, &sbom])
        .await
        .unwrap();
    pusher
        .push_manifest("org/sbom", "v1", &sbom_manifest)
        .await
        .unwrap();

    let mut gh = upstream("ghcr.io", &ghcr.url(), false);
    gh.hosts = vec!["localhost".into()];
    let wharf = Wharf::start(test_config(vec![
        upstream("docker.io", &hub.url(), true),
        gh,
    ]))
    .await;

    for (target, name, blob) in [
        (
            format!("{}/ghcr.io/charts/app:1.2.0", wharf.host()),
            "app-1.2.0.tgz",
            &chart,
        ),
        (
            format!("localhost:{}/charts/app:1.2.0", wharf.port),
            "app-1.2.0.tgz",
            &chart,
        ),
        (
            format!("{}/ghcr.io/org/sbom:v1", wharf.host()),
            "sbom.spdx.json",
            &sbom,
        ),
        (
            format!("localhost:{}/org/sbom:v1", wharf.port),
            "sbom.spdx.json",
            &sbom,
        ),
    ] {
        let (_dir, files) = oras_pull(&target).await;
        assert_eq!(
            files.len(),
            1,
            "{target}: {:?}",
            files.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
        assert_eq!(files[0].0, name, "{target}");
        assert_eq!(
            sha256(&files[0].1),
            blob.digest,
            "{target}: the file's digest"
        );
    }

    // The same content by ns=, manifest and every blob, as stored upstream.
    let http = reqwest::Client::new();
    for (repo, reference, m, blobs) in [
        (
            "charts/app",
            "1.2.0",
            &chart_manifest,
            [&chart_config, &chart],
        ),
        ("org/sbom", "v1", &sbom_manifest, [&empty, &sbom]),
    ] {
        let r = http
            .get(format!(
                "{}/v2/{repo}/manifests/{reference}?ns=ghcr.io",
                wharf.url
            ))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.bytes().await.unwrap(),
            m.body,
            "{repo}: the manifest, byte for byte"
        );
        for blob in blobs {
            let r = http
                .get(format!(
                    "{}/v2/{repo}/blobs/{}?ns=ghcr.io",
                    wharf.url, blob.digest
                ))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(hash_body(r).await.unwrap().0, blob.digest);
        }
        // Each blob came from the upstream once, whichever route asked first.
        for blob in blobs {
            assert_eq!(
                ghcr.count_requests("GET", &format!("/v2/{repo}/blobs/{}", blob.digest)),
                1,
                "{repo} {}",
                blob.digest
            );
        }
    }
}
