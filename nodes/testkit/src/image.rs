//! Deterministic synthetic images: real gzip'd tar layers with matching `diff_ids`, so the
//! Docker Engine and skopeo accept them as they would any image.

use std::io::Write;

use bytes::Bytes;
use serde_json::json;

use crate::sha256;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Docker,
    Oci,
}

#[derive(Clone, Debug)]
pub struct Blob {
    pub digest: String,
    pub data: Bytes,
    pub media_type: String,
}

impl Blob {
    pub fn new(data: impl Into<Bytes>, media_type: &str) -> Blob {
        let data = data.into();
        Blob {
            digest: sha256(&data),
            data,
            media_type: media_type.to_string(),
        }
    }

    fn descriptor(&self) -> serde_json::Value {
        json!({ "mediaType": self.media_type, "size": self.data.len(), "digest": self.digest })
    }
}

/// Something addressable by a manifest: its bytes, type and digest.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub body: Bytes,
    pub media_type: String,
    pub digest: String,
}

impl Manifest {
    fn new(value: serde_json::Value, media_type: &str) -> Manifest {
        let body = Bytes::from(serde_json::to_vec_pretty(&value).unwrap());
        Manifest {
            digest: sha256(&body),
            body,
            media_type: media_type.to_string(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Image {
    pub manifest: Manifest,
    pub config: Blob,
    pub layers: Vec<Blob>,
}

impl Image {
    /// Config first, then layers.
    pub fn blobs(&self) -> Vec<&Blob> {
        std::iter::once(&self.config).chain(&self.layers).collect()
    }
}

#[derive(Clone, Debug)]
pub struct Index {
    pub manifest: Manifest,
    pub images: Vec<Image>,
}

/// A gzip'd tar holding one file, plus the digest of the uncompressed tar (its `diff_id`).
pub fn layer(name: &str, content: &[u8], media_type: &str) -> (Blob, String) {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, name, content).unwrap();
    let tar = tar.into_inner().unwrap();
    let diff_id = sha256(&tar);
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    (Blob::new(gz.finish().unwrap(), media_type), diff_id)
}

/// An image for one platform, with `layer_count` small layers unique to `seed`.
pub fn image(format: Format, seed: &str, arch: &str, layer_count: usize) -> Image {
    let (layer_type, config_type, manifest_type) = match format {
        Format::Docker => (DOCKER_LAYER, DOCKER_CONFIG, DOCKER_MANIFEST),
        Format::Oci => (OCI_LAYER, OCI_CONFIG, OCI_MANIFEST),
    };
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for i in 0..layer_count {
        let content = format!("wharf test layer {seed} {arch} {i}\n").repeat(64);
        let (blob, diff_id) = layer(
            &format!("wharf/{seed}-{arch}-{i}.txt"),
            content.as_bytes(),
            layer_type,
        );
        layers.push(blob);
        diff_ids.push(diff_id);
    }
    let config = json!({
        "architecture": arch,
        "os": "linux",
        "config": { "Cmd": ["/bin/true"], "Labels": { "wharf.test.seed": seed } },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": layers.iter().map(|_| json!({"created_by": "wharf testkit"})).collect::<Vec<_>>(),
    });
    let config = Blob::new(serde_json::to_vec(&config).unwrap(), config_type);
    let manifest = Manifest::new(
        json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": config.descriptor(),
            "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        }),
        manifest_type,
    );
    Image {
        manifest,
        config,
        layers,
    }
}

/// A two-platform (linux/amd64, linux/arm64) index or manifest list.
pub fn index(format: Format, seed: &str) -> Index {
    let images: Vec<Image> = ["amd64", "arm64"]
        .iter()
        .map(|arch| image(format, seed, arch, 2))
        .collect();
    let index_type = match format {
        Format::Docker => DOCKER_LIST,
        Format::Oci => OCI_INDEX,
    };
    let manifests: Vec<_> = images
        .iter()
        .zip(["amd64", "arm64"])
        .map(|(img, arch)| {
            json!({
                "mediaType": img.manifest.media_type,
                "size": img.manifest.body.len(),
                "digest": img.manifest.digest,
                "platform": { "architecture": arch, "os": "linux" },
            })
        })
        .collect();
    let manifest = Manifest::new(
        json!({ "schemaVersion": 2, "mediaType": index_type, "manifests": manifests }),
        index_type,
    );
    Index { manifest, images }
}

/// `len` pseudo-random (incompressible) bytes, the same for the same `seed`.
pub fn random_bytes(len: usize, seed: u64) -> Bytes {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// An image with one large incompressible layer (not a valid tar; for cache tests only).
pub fn big_image(seed: u64, layer_len: usize) -> Image {
    let layer = Blob::new(random_bytes(layer_len, seed), OCI_LAYER);
    let config = Blob::new(
        serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
        }))
        .unwrap(),
        OCI_CONFIG,
    );
    let manifest = Manifest::new(
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": [layer.descriptor()],
        }),
        OCI_MANIFEST,
    );
    Image {
        manifest,
        config,
        layers: vec![layer],
    }
}

/// An OCI artifact referring to `subject` (a signature, an SBOM): an image manifest with an
/// `artifactType`, the empty config, one layer of `payload`, and the `subject` descriptor.
pub struct Artifact {
    pub manifest: Manifest,
    pub artifact_type: String,
    pub blobs: Vec<Blob>,
    pub annotations: serde_json::Value,
}

impl Artifact {
    pub fn new(
        subject: &Manifest,
        artifact_type: &str,
        payload: &[u8],
        payload_type: &str,
    ) -> Artifact {
        let empty = Blob::new(
            Bytes::from_static(b"{}"),
            "application/vnd.oci.empty.v1+json",
        );
        let layer = Blob::new(Bytes::copy_from_slice(payload), payload_type);
        let annotations = json!({ "org.opencontainers.image.created": "2026-12-03T00:00:00Z" });
        let manifest = Manifest::new(
            json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": artifact_type,
                "config": empty.descriptor(),
                "layers": [layer.descriptor()],
                "subject": {
                    "mediaType": subject.media_type,
                    "size": subject.body.len(),
                    "digest": subject.digest,
                },
                "annotations": annotations,
            }),
            "application/vnd.oci.image.manifest.v1+json",
        );
        Artifact {
            manifest,
            artifact_type: artifact_type.to_string(),
            blobs: vec![empty, layer],
            annotations,
        }
    }

    /// Its descriptor in a referrers index.
    pub fn descriptor(&self) -> serde_json::Value {
        json!({
            "mediaType": self.manifest.media_type,
            "size": self.manifest.body.len(),
            "digest": self.manifest.digest,
            "artifactType": self.artifact_type,
            "annotations": self.annotations,
        })
    }
}

/// The OCI 1.1 fallback for registries without the referrers API: an index of the artifacts,
/// to be pushed under the tag `sha256-<subject hex>`.
pub fn referrers_index(artifacts: &[&Artifact]) -> Manifest {
    Manifest::new(
        json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": artifacts.iter().map(|a| a.descriptor()).collect::<Vec<_>>(),
        }),
        "application/vnd.oci.image.index.v1+json",
    )
}
