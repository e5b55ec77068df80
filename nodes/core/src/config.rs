//! Node configuration: typed, with defaults, read from wharf's TOML or from distribution's
//! `config.yml` so users can migrate by pointing wharf at the file they already have.
//!
//! Precedence, lowest first: built-in defaults, the config file, the environment
//! (`WHARF_UPSTREAM_USERNAME`/`WHARF_UPSTREAM_PASSWORD`), command-line flags. Every key is
//! documented in `deploy/wharf.example.toml`, which a test parses against these structs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod cluster;
pub mod credentials;
mod distribution;
mod fetch;
mod limits;
mod metrics;
mod prefetch;
pub mod routing;
mod security;
mod storage;
#[cfg(test)]
mod tests;
mod upstream;
pub use cluster::{ClusterConfig, ClusterTlsConfig};
pub use credentials::UpstreamCredentials;
pub use fetch::FetchConfig;
pub use limits::{LimitsConfig, UpstreamClientConfig};
pub use metrics::{CatalogConfig, MetricsConfig};
pub use prefetch::PrefetchRule;
pub use security::{AccessRule, AuthConfig, JwtIssuerConfig, TlsConfig};
pub use storage::{CacheConfig, EvictionConfig, HotCacheConfig, S3Config, StorageTarget};
pub use upstream::{EndpointConfig, FallbackConfig, UpstreamConfig, UpstreamPasswords};

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
    pub hot_cache: HotCacheConfig,
    pub upstream_client: UpstreamClientConfig,
    pub fetch: FetchConfig,
    pub cluster: ClusterConfig,
    pub limits: LimitsConfig,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    pub metrics: MetricsConfig,
    pub catalog: CatalogConfig,
    /// Who may pull which repositories: the first rule that matches decides.
    #[serde(rename = "access")]
    pub access: Vec<AccessRule>,
    /// Images kept warm: re-resolved every interval, new matching tags pulled in.
    #[serde(rename = "prefetch")]
    pub prefetch: Vec<PrefetchRule>,
    /// Accept secret files (`password_file`, `token_key_file`) that other users can read.
    /// Off: such a file is refused, as a secret readable by all is no secret.
    pub allow_world_readable_secrets: bool,
    #[serde(rename = "upstream")]
    pub upstreams: Vec<UpstreamConfig>,
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
            hot_cache: HotCacheConfig::default(),
            upstream_client: UpstreamClientConfig::default(),
            fetch: FetchConfig::default(),
            cluster: ClusterConfig::default(),
            limits: LimitsConfig::default(),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            metrics: MetricsConfig::default(),
            catalog: CatalogConfig::default(),
            access: Vec::new(),
            prefetch: Vec::new(),
            allow_world_readable_secrets: false,
            upstreams: vec![UpstreamConfig::new(DOCKER_HUB_NAME, DOCKER_HUB_URL, true)],
        }
    }
}

impl Config {
    /// Whether who may pull what is restricted (a login mechanism, access rules, or an upstream
    /// that judges each client's own login): then cached digests are served only under
    /// repositories they are known to belong to, and answers are not for shared caches.
    pub fn restricted(&self) -> bool {
        self.auth.has_mechanism()
            || !self.access.is_empty()
            || self
                .upstreams
                .iter()
                .any(UpstreamConfig::takes_client_logins)
    }

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
        self.s3
            .validate(&self.storage_target()?, self.restricted())?;
        self.cluster.validate()?;
        self.limits.validate()?;
        self.fetch.validate()?;
        self.hot_cache.validate(&self.storage_target()?)?;
        self.eviction.validate()?;
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
            if u.name == "*" && (!u.parent || u.default) {
                return invalid(
                    "upstream \"*\" forwards every other ns= to a parent: it needs parent = true and cannot be the default".into(),
                );
            }
            if u.name.is_empty() || u.name.contains(['/', ' ']) {
                return invalid(format!(
                    "upstream name {:?} must be a registry host",
                    u.name
                ));
            }
            u.validate()?;
        }
        routing::validate_routes(&self.upstreams)?;
        for rule in &self.prefetch {
            rule.validate()?;
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return invalid(format!("listen {:?} is not an address:port", self.listen));
        }
        self.tls.validate()?;
        self.auth.validate()?;
        for rule in &self.access {
            rule.validate()?;
        }
        Ok(())
    }
}

/// Read a secret file, refusing one that users other than its owner (and wharf's own group)
/// may read or write, as Garage does: a world-readable secret has leaked already. Group read
/// is accepted only for the group wharf runs as (Kubernetes mounts secrets root:<fsGroup>).
pub fn read_secret_file(path: &Path, allow_world_readable: bool) -> Result<Vec<u8>, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(read_error)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mode = metadata.permissions().mode();
        // Group read is fine for wharf's own group (a Kubernetes secret volume with fsGroup
        // gives root:<fsGroup> 0440); any other group, group write or world access is not.
        let own_group = metadata.gid() == rustix::process::getegid().as_raw();
        let exposed = mode & 0o027 != 0 || (mode & 0o040 != 0 && !own_group);
        if !allow_world_readable && exposed {
            return Err(ConfigError::Invalid(format!(
                "secret file {} has mode {:o}: other users can read it; chmod 600 it (or set \
                 allow_world_readable_secrets = true)",
                path.display(),
                mode & 0o777
            )));
        }
    }
    let _ = metadata;
    std::fs::read(path).map_err(read_error)
}
