//! Node configuration: typed, with defaults, read from wharf's TOML or from distribution's
//! `config.yml` so users can migrate by pointing wharf at the file they already have.
//!
//! Precedence, lowest first: built-in defaults, the config file, the environment
//! (`WHARF_UPSTREAM_USERNAME`/`WHARF_UPSTREAM_PASSWORD`), command-line flags. Every key is
//! documented in `deploy/wharf.example.toml`, which a test parses against these structs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Docker Hub's registry API host; mirrored by default.
pub const DOCKER_HUB_URL: &str = "https://registry-1.docker.io";
/// The `ns=` name containerd sends for Docker Hub.
pub const DOCKER_HUB_NAME: &str = "docker.io";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid TOML configuration: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("invalid distribution config.yml: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Everything one node needs to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the v2 API listens on.
    pub listen: String,
    /// Root of the local-disk cache (blobs, manifests, tag records) and of the download spool,
    /// which stays on local disk whatever the store.
    pub data_dir: PathBuf,
    /// Where cached content lives: empty for local disk under `data_dir`, `file:///DIR` for
    /// local disk elsewhere, `s3://BUCKET[/PREFIX]` for S3 (shared by any number of nodes).
    pub storage: String,
    pub s3: S3Config,
    pub cache: CacheConfig,
    pub eviction: EvictionConfig,
    pub upstream_client: UpstreamClientConfig,
    pub cluster: ClusterConfig,
    pub limits: LimitsConfig,
    #[serde(rename = "upstream")]
    pub upstreams: Vec<UpstreamConfig>,
}

/// What clients can make one node do at once: every queue and connection count has a bound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Upstream blob downloads under way at once on this node (S3 uploads run alongside them).
    pub max_downloads: usize,
    /// Requests for cold blobs waiting for a download slot, at most; beyond it, `503` at once.
    pub download_queue: usize,
    /// Seconds a request waits for a download slot before `503` with `Retry-After`.
    pub queue_timeout_secs: u64,
    /// Seconds an upstream's "no such content" (404) is remembered; 0 turns it off.
    pub negative_ttl_secs: u64,
    /// Largest blob fetched, in MiB: a bigger `Content-Length` is refused, a body without one
    /// is cut off there. 0: no limit.
    pub max_blob_mib: u64,
    /// Client connections open at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Seconds a client may take to send a request's headers (and an idle keep-alive
    /// connection may wait for its next request).
    pub header_read_timeout_secs: u64,
    /// Seconds a response may make no progress because its client does not read.
    pub send_timeout_secs: u64,
    /// Seconds a storage call may take (for streams: each chunk; for a streamed upload: how
    /// long the store may sit on a chunk it was handed).
    pub storage_timeout_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_downloads: 64,
            download_queue: 1024,
            queue_timeout_secs: 30,
            negative_ttl_secs: 10,
            max_blob_mib: 100 * 1024,
            max_connections: 16_384,
            header_read_timeout_secs: 10,
            send_timeout_secs: 60,
            storage_timeout_secs: 30,
        }
    }
}

/// Clustering: nodes agree by Raft which of them fetches each cold blob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// host:port of this node's gRPC endpoint; empty = no cluster (a single node).
    pub listen: String,
    /// host:port other members dial; defaults to `listen` (which then must not be 0.0.0.0).
    pub advertise: String,
    /// Members to join through (any of them). Empty with no earlier state: bootstrap a cluster.
    pub join: Vec<String>,
    /// A fetch lease not renewed for this long passes to the next node that asks.
    pub lease_ttl_secs: u64,
    /// Raft heartbeat interval; elections start after 4–8 missed heartbeats.
    pub heartbeat_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            listen: String::new(),
            advertise: String::new(),
            join: Vec::new(),
            lease_ttl_secs: 5,
            heartbeat_ms: 250,
        }
    }
}

impl ClusterConfig {
    pub fn enabled(&self) -> bool {
        !self.listen.is_empty()
    }

    /// The address peers dial.
    pub fn advertised(&self) -> &str {
        if self.advertise.is_empty() {
            &self.listen
        } else {
            &self.advertise
        }
    }
}

/// S3 settings; credentials, region and endpoint come from the standard AWS chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// Path-style addressing, for S3-compatible servers (Garage, MinIO, Ceph, moto).
    pub path_style: bool,
    /// CDN-origin mode: answer cached blob GETs with 307 to a presigned S3 URL.
    pub redirect_blobs: bool,
    /// Lifetime of those presigned URLs.
    pub presign_expiry_secs: u64,
}

/// Keeping the store within bounds: least recently used blobs go first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvictionConfig {
    /// Blob bytes kept at most, in MiB; 0 = no quota.
    pub max_size_mib: u64,
    /// Blobs not requested for this long are deleted; 0 = never.
    pub max_idle_secs: u64,
    /// How often eviction runs (and access times are persisted).
    pub interval_secs: u64,
    /// Blobs written more recently than this are never deleted.
    pub min_age_secs: u64,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            path_style: false,
            redirect_blobs: false,
            presign_expiry_secs: 600,
        }
    }
}

impl Default for EvictionConfig {
    fn default() -> Self {
        EvictionConfig {
            max_size_mib: 0,
            max_idle_secs: 0,
            interval_secs: 300,
            min_age_secs: 600,
        }
    }
}

/// What `storage` selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageTarget {
    LocalDisk(PathBuf),
    S3 { bucket: String, prefix: String },
}

/// How long mutable answers may be served without asking the upstream again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// A tag's digest is served without revalidation for this long.
    pub tag_ttl_secs: u64,
    /// A `tags/list` answer is served from memory for this long.
    pub tags_list_ttl_secs: u64,
    /// Memory for manifest bodies and the content index, in MiB.
    pub memory_index_mib: u64,
}

/// Timeouts and retries for every request to an upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamClientConfig {
    pub connect_timeout_secs: u64,
    /// From sending the request to the response headers.
    pub first_byte_timeout_secs: u64,
    /// Longest silence while a body streams.
    pub idle_timeout_secs: u64,
    /// Extra attempts for idempotent requests that fail before any body byte was received.
    pub retries: u32,
    /// First retry delay; doubled on each further attempt.
    pub retry_backoff_ms: u64,
}

/// One registry wharf mirrors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The registry host clients name in containerd's `?ns=` parameter (`docker.io`, `ghcr.io`).
    pub name: String,
    /// Base URL of its v2 API.
    pub url: String,
    /// Serves clients that send no `ns=` (Docker's `registry-mirrors`, skopeo, podman).
    #[serde(default)]
    pub default: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Read the password from this file instead (Kubernetes/Docker secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "0.0.0.0:5000".to_string(),
            data_dir: PathBuf::from("./wharf-data"),
            storage: String::new(),
            s3: S3Config::default(),
            cache: CacheConfig::default(),
            eviction: EvictionConfig::default(),
            upstream_client: UpstreamClientConfig::default(),
            cluster: ClusterConfig::default(),
            limits: LimitsConfig::default(),
            upstreams: vec![UpstreamConfig::new(DOCKER_HUB_NAME, DOCKER_HUB_URL, true)],
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            tag_ttl_secs: 60,
            tags_list_ttl_secs: 30,
            memory_index_mib: 128,
        }
    }
}

impl Default for UpstreamClientConfig {
    fn default() -> Self {
        UpstreamClientConfig {
            connect_timeout_secs: 10,
            first_byte_timeout_secs: 30,
            idle_timeout_secs: 60,
            retries: 2,
            retry_backoff_ms: 200,
        }
    }
}

impl UpstreamConfig {
    pub fn new(name: &str, url: &str, default: bool) -> Self {
        UpstreamConfig {
            name: name.to_string(),
            url: url.trim_end_matches('/').to_string(),
            default,
            username: None,
            password: None,
            password_file: None,
        }
    }

    /// `ns=` name for a URL given on the command line: Docker Hub's API host maps to `docker.io`.
    pub fn name_for_url(url: &str) -> String {
        let host = url
            .split_once("://")
            .map_or(url, |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or_default();
        if host == "registry-1.docker.io" || host == "index.docker.io" {
            DOCKER_HUB_NAME.to_string()
        } else {
            host.to_string()
        }
    }

    /// Docker Hub stores single-segment names under `library/`.
    pub fn is_docker_hub(&self) -> bool {
        self.name == DOCKER_HUB_NAME
    }

    /// The password, from the file if one is named. Read once at start-up.
    pub fn resolved_password(&self) -> Result<Option<String>, ConfigError> {
        match &self.password_file {
            None => Ok(self.password.clone()),
            Some(path) => std::fs::read_to_string(path)
                .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                }),
        }
    }
}

impl Config {
    /// Read a config file: `.yml`/`.yaml` is distribution's format, anything else wharf's TOML.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let is_yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yml" | "yaml")
        );
        if is_yaml {
            Config::from_distribution_yaml(&text)
        } else {
            Config::from_toml(&text)
        }
    }

    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Ok(toml::from_str(text)?)
    }

    /// Map distribution's `http.addr`, `storage.filesystem.rootdirectory` and
    /// `proxy.{remoteurl,username,password}` onto a wharf config; other keys are ignored.
    pub fn from_distribution_yaml(text: &str) -> Result<Config, ConfigError> {
        let dist: distribution::DistConfig = serde_yaml_ng::from_str(text)?;
        dist.into_config()
    }

    /// Apply `WHARF_UPSTREAM_USERNAME` / `WHARF_UPSTREAM_PASSWORD` to the default upstream.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) {
        let Some(upstream) = self.default_upstream_mut() else {
            return;
        };
        if let Some(user) = var("WHARF_UPSTREAM_USERNAME") {
            upstream.username = Some(user);
        }
        if let Some(password) = var("WHARF_UPSTREAM_PASSWORD") {
            upstream.password = Some(password);
            upstream.password_file = None;
        }
    }

    /// `--upstream URL`: replace the default upstream's URL (and its `ns=` name).
    pub fn set_default_upstream_url(&mut self, url: &str) {
        let name = UpstreamConfig::name_for_url(url);
        match self.default_upstream_mut() {
            Some(upstream) => {
                upstream.url = url.trim_end_matches('/').to_string();
                upstream.name = name;
            }
            None => self.upstreams.push(UpstreamConfig::new(&name, url, true)),
        }
    }

    fn default_upstream_mut(&mut self) -> Option<&mut UpstreamConfig> {
        let index =
            self.upstreams
                .iter()
                .position(|u| u.default)
                .or(if self.upstreams.len() == 1 {
                    Some(0)
                } else {
                    None
                })?;
        let upstream = &mut self.upstreams[index];
        upstream.default = true;
        Some(upstream)
    }

    /// Where cached content lives, from `storage`.
    pub fn storage_target(&self) -> Result<StorageTarget, ConfigError> {
        let s = self.storage.trim();
        if s.is_empty() {
            return Ok(StorageTarget::LocalDisk(self.data_dir.clone()));
        }
        if let Some(path) = s.strip_prefix("file://") {
            if path.is_empty() {
                return Err(ConfigError::Invalid(
                    "storage file:// needs a directory".into(),
                ));
            }
            return Ok(StorageTarget::LocalDisk(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(ConfigError::Invalid("storage s3:// needs a bucket".into()));
            }
            return Ok(StorageTarget::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        Err(ConfigError::Invalid(format!(
            "storage {s:?}: expected file://DIR or s3://BUCKET[/PREFIX]"
        )))
    }

    /// Check what serde cannot: one default upstream at most, unique names, usable URLs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        self.storage_target()?;
        if self.s3.redirect_blobs && !matches!(self.storage_target()?, StorageTarget::S3 { .. }) {
            return invalid("s3.redirect_blobs needs s3:// storage".into());
        }
        if self.cluster.enabled() {
            let advertised = self.cluster.advertised();
            if is_wildcard(advertised) {
                return invalid(
                    "cluster.advertise is needed when cluster.listen is a wildcard address".into(),
                );
            }
            if self.cluster.lease_ttl_secs == 0 || self.cluster.heartbeat_ms == 0 {
                return invalid(
                    "cluster.lease_ttl_secs and cluster.heartbeat_ms must be positive".into(),
                );
            }
        }
        let l = &self.limits;
        if l.max_downloads == 0
            || l.max_connections == 0
            || l.header_read_timeout_secs == 0
            || l.send_timeout_secs == 0
            || l.storage_timeout_secs == 0
        {
            return invalid(
                "limits.max_downloads, max_connections and the limits' timeouts must be positive"
                    .into(),
            );
        }
        if self.eviction.interval_secs == 0 {
            return invalid("eviction.interval_secs must be at least 1".into());
        }
        if self.upstreams.is_empty() {
            return invalid("at least one [[upstream]] is required".into());
        }
        if self.upstreams.iter().filter(|u| u.default).count() > 1 {
            return invalid("only one upstream may be the default".into());
        }
        for (i, u) in self.upstreams.iter().enumerate() {
            if self.upstreams[..i].iter().any(|o| o.name == u.name) {
                return invalid(format!("upstream name {:?} is used twice", u.name));
            }
            if u.name.is_empty() || u.name.contains(['/', ' ']) {
                return invalid(format!(
                    "upstream name {:?} must be a registry host",
                    u.name
                ));
            }
            if !(u.url.starts_with("http://") || u.url.starts_with("https://")) {
                return invalid(format!("upstream {:?}: url must be http(s)://", u.name));
            }
            if u.password.is_some() && u.password_file.is_some() {
                return invalid(format!(
                    "upstream {:?}: set password or password_file, not both",
                    u.name
                ));
            }
            if u.password.is_some() != u.username.is_some() && u.password_file.is_none() {
                return invalid(format!(
                    "upstream {:?}: username and password go together",
                    u.name
                ));
            }
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return invalid(format!("listen {:?} is not an address:port", self.listen));
        }
        Ok(())
    }
}

/// Whether `host:port` names no particular address (`0.0.0.0`, `[::]`, `0`, ...): peers
/// cannot dial it.
fn is_wildcard(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_unspecified(),
        // `0` (and `0.0`...) is what inet_aton reads as 0.0.0.0.
        Err(_) => host.bytes().all(|b| b == b'0' || b == b'.'),
    }
}

mod distribution {
    //! The subset of distribution's `config.yml` a proxy-mode deployment uses.

    use serde::Deserialize;

    use super::{Config, ConfigError, UpstreamConfig};

    #[derive(Deserialize)]
    pub struct DistConfig {
        http: Option<Http>,
        storage: Option<serde_yaml_ng::Mapping>,
        proxy: Option<Proxy>,
    }

    #[derive(Deserialize)]
    struct Http {
        addr: Option<String>,
    }

    #[derive(Deserialize)]
    struct Proxy {
        remoteurl: String,
        username: Option<String>,
        password: Option<String>,
    }

    impl DistConfig {
        pub fn into_config(self) -> Result<Config, ConfigError> {
            let mut config = Config::default();
            if let Some(addr) = self.http.and_then(|h| h.addr) {
                // distribution accepts ":5000" for all interfaces.
                config.listen = match addr.strip_prefix(':') {
                    Some(port) => format!("0.0.0.0:{port}"),
                    None => addr,
                };
            }
            if let Some(storage) = self.storage {
                for (driver, params) in storage {
                    let driver = driver.as_str().unwrap_or_default();
                    match driver {
                        "filesystem" => {
                            if let Some(dir) = params
                                .get("rootdirectory")
                                .and_then(serde_yaml_ng::Value::as_str)
                            {
                                config.data_dir = dir.into();
                            }
                        }
                        // Settings of distribution's own that have no meaning for wharf.
                        "cache" | "delete" | "maintenance" | "redirect" | "tag" => {}
                        other => {
                            return Err(ConfigError::Invalid(format!(
                                "storage driver {other:?} is not supported; use filesystem"
                            )));
                        }
                    }
                }
            }
            let proxy = self.proxy.ok_or_else(|| {
                ConfigError::Invalid("config.yml has no proxy: section; wharf is a mirror".into())
            })?;
            let name = UpstreamConfig::name_for_url(&proxy.remoteurl);
            let mut upstream = UpstreamConfig::new(&name, &proxy.remoteurl, true);
            upstream.username = proxy.username.filter(|u| !u.is_empty());
            upstream.password = proxy.password.filter(|p| !p.is_empty());
            config.upstreams = vec![upstream];
            config.validate()?;
            Ok(config)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn wildcard_cluster_addresses_need_an_advertised_one() {
        for wildcard in [
            "0.0.0.0:6000",
            "[::]:6000",
            "0:6000",
            ":6000",
            "[0:0::0]:6000",
        ] {
            let mut c = Config::default();
            c.cluster.listen = wildcard.into();
            assert!(
                c.validate().is_err(),
                "{wildcard} accepted without advertise"
            );
            c.cluster.advertise = "10.0.0.1:6000".into();
            assert!(c.validate().is_ok(), "{wildcard} with advertise");
        }
        for dialable in ["10.0.0.1:6000", "[::1]:6000", "wharf-0.wharf:6000"] {
            let mut c = Config::default();
            c.cluster.listen = dialable.into();
            assert!(c.validate().is_ok(), "{dialable}");
        }
    }

    use super::*;

    #[test]
    fn default_is_valid_docker_hub_mirror() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.upstreams[0].name, "docker.io");
        assert!(c.upstreams[0].is_docker_hub());
    }

    #[test]
    fn storage_targets() {
        let mut c = Config::default();
        assert_eq!(
            c.storage_target().unwrap(),
            StorageTarget::LocalDisk("./wharf-data".into())
        );
        c.storage = "s3://bucket/some/prefix/".into();
        assert_eq!(
            c.storage_target().unwrap(),
            StorageTarget::S3 {
                bucket: "bucket".into(),
                prefix: "some/prefix".into()
            }
        );
        c.storage = "file:///var/cache/wharf".into();
        assert_eq!(
            c.storage_target().unwrap(),
            StorageTarget::LocalDisk("/var/cache/wharf".into())
        );
        for bad in ["s3://", "gs://x", "file://"] {
            c.storage = bad.into();
            assert!(c.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(Config::from_toml("listen = \"0.0.0.0:1\"\nlisen = 1").is_err());
    }

    #[test]
    fn reads_distribution_config() {
        let c = Config::from_distribution_yaml(
            r#"
version: 0.1
log:
  level: info
http:
  addr: :5000
storage:
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
proxy:
  remoteurl: https://registry-1.docker.io
  username: alice
  password: s3cret
"#,
        )
        .unwrap();
        assert_eq!(c.listen, "0.0.0.0:5000");
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/registry"));
        assert_eq!(c.upstreams.len(), 1);
        assert_eq!(c.upstreams[0].name, "docker.io");
        assert_eq!(c.upstreams[0].username.as_deref(), Some("alice"));
        assert_eq!(c.upstreams[0].password.as_deref(), Some("s3cret"));
    }

    #[test]
    fn distribution_config_without_proxy_is_refused() {
        let err = Config::from_distribution_yaml("version: 0.1\nhttp:\n  addr: :5000\n");
        assert!(matches!(err, Err(ConfigError::Invalid(_))));
    }

    #[test]
    fn env_and_flag_override_default_upstream() {
        let mut c = Config::default();
        c.set_default_upstream_url("http://127.0.0.1:5001/");
        c.apply_env(|k| match k {
            "WHARF_UPSTREAM_USERNAME" => Some("u".into()),
            "WHARF_UPSTREAM_PASSWORD" => Some("p".into()),
            _ => None,
        });
        c.validate().unwrap();
        assert_eq!(c.upstreams[0].url, "http://127.0.0.1:5001");
        assert_eq!(c.upstreams[0].name, "127.0.0.1:5001");
        assert_eq!(
            c.upstreams[0].resolved_password().unwrap().as_deref(),
            Some("p")
        );
    }

    #[test]
    fn validation_catches_mistakes() {
        let mut c = Config::default();
        c.upstreams
            .push(UpstreamConfig::new("docker.io", "https://x", false));
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.upstreams[0].password = Some("p".into());
        assert!(c.validate().is_err(), "password without username");
        let c = Config {
            listen: "nope".into(),
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn password_file_is_read_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("wharf-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "hunter2\n").unwrap();
        let mut u = UpstreamConfig::new("r", "https://r", true);
        u.username = Some("me".into());
        u.password_file = Some(file);
        assert_eq!(u.resolved_password().unwrap().as_deref(), Some("hunter2"));
    }
}
