//! Node configuration: typed, with defaults, read from wharf's TOML or from distribution's
//! `config.yml` so users can migrate by pointing wharf at the file they already have.
//!
//! Precedence, lowest first: built-in defaults, the config file, the environment
//! (`WHARF_UPSTREAM_USERNAME`/`WHARF_UPSTREAM_PASSWORD`), command-line flags. Every key is
//! documented in `deploy/wharf.example.toml`, which a test parses against these structs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod cluster;
mod upstream;
pub use cluster::{ClusterConfig, ClusterTlsConfig};
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

/// `GET /v2/_catalog`: the repositories this mirror holds a tag of.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// Off by default: which images a company pulls is not for every client to list.
    pub enabled: bool,
}

/// The operator's view: Prometheus metrics at `/metrics`, the status page at `/` and
/// `/status.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Record metrics. Off, `/metrics` still answers, with nothing counted.
    pub enabled: bool,
    /// A second listener for `/metrics`, `/`, `/status.json` and `/health` only, with no client
    /// authentication, to keep them off the public port (e.g. `127.0.0.1:9090`). Empty: none.
    pub listen: String,
    /// Also serve them on the main listener. With `[auth]` on, they follow the `[[access]]`
    /// rule for the repository `_wharf/status` there.
    pub main_listener: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: String::new(),
            main_listener: true,
        }
    }
}

/// TLS on the client listener: on when `cert_file` is set. Files are PEM and are reloaded
/// when they change (or on SIGHUP), so certificate renewals need no restart.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The server certificate, followed by its intermediates.
    pub cert_file: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by one of these CAs (mTLS).
    pub client_ca_file: PathBuf,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert_file.as_os_str().is_empty()
    }
}

/// How clients prove who they are. Off (everyone is anonymous) unless a mechanism or an
/// `[[access]]` rule is configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Users and bcrypt password hashes, one `user:hash` a line (`htpasswd -B`, or
    /// `wharf auth hash-password`); HTTP Basic, and the token endpoint's login. Reloaded on
    /// change.
    pub htpasswd_file: PathBuf,
    /// A secret of at least 32 bytes: wharf then runs Docker's token flow (`docker login`),
    /// signing its tokens (HS256) with it. Every node of a cluster needs the same file.
    pub token_key_file: PathBuf,
    /// Lifetime of the tokens wharf issues.
    pub token_ttl_secs: u64,
    /// Whether a request without credentials is served (as the anonymous identity, which
    /// `[[access]]` rules may then allow or deny).
    pub anonymous: bool,
    /// The `service` named in challenges and tokens.
    pub service: String,
    /// Token endpoint URL put in challenges; empty: `<scheme>://<Host header>/token`.
    pub realm: String,
    /// Groups of htpasswd users, for `[[access]]` rules: `admins = ["alice"]`.
    pub groups: std::collections::BTreeMap<String, Vec<String>>,
    /// External token issuers (company IdP, CI OIDC) whose JWTs are accepted as Bearer
    /// tokens or as a Basic password.
    pub jwt: Vec<JwtIssuerConfig>,
    /// bcrypt verifications running at once, at most; further logins wait briefly, then 429.
    pub max_concurrent_hashes: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            htpasswd_file: PathBuf::new(),
            token_key_file: PathBuf::new(),
            token_ttl_secs: 300,
            anonymous: false,
            service: "wharf".to_string(),
            realm: String::new(),
            groups: Default::default(),
            jwt: Vec::new(),
            max_concurrent_hashes: 2,
        }
    }
}

impl AuthConfig {
    /// Whether any way of proving an identity is configured.
    pub fn has_mechanism(&self) -> bool {
        !self.htpasswd_file.as_os_str().is_empty()
            || !self.token_key_file.as_os_str().is_empty()
            || !self.jwt.is_empty()
    }
}

/// A JWT issuer whose tokens wharf accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtIssuerConfig {
    /// Must equal the token's `iss`.
    pub issuer: String,
    /// Must be among the token's `aud`.
    pub audience: String,
    /// Its public keys as a JWKS document on disk (reloaded on change)...
    pub jwks_file: PathBuf,
    /// ...or at a URL (fetched at start, every 5 minutes, and on an unknown key id); https://
    /// only, since whoever can change the keys can sign any identity.
    pub jwks_url: String,
    /// Accept an `http://` `jwks_url` (a test IdP on loopback; never across a network).
    pub allow_http_jwks: bool,
    /// The claim holding the user's groups (a list of strings, or one string).
    pub groups_claim: String,
    /// The claim naming the user.
    pub username_claim: String,
    /// Prefix of this issuer's user and group names (`<namespace>:<name>`), so its identities
    /// never meet htpasswd users, `users = ["*"]`, or another issuer's; empty: the issuer's
    /// host. Rules name them as `"<namespace>:<user>"`, `"<namespace>:*"` (any of its users),
    /// groups as `"<namespace>:<group>"`.
    pub namespace: String,
    /// Claims a token must carry with exactly these values (a string claim, or a list holding
    /// the value), e.g. `{ repository_owner = "acme" }`: who may mint the issuer's tokens is
    /// often wider than who may pull (any GitHub workflow can ask for any audience).
    pub required_claims: std::collections::BTreeMap<String, String>,
}

impl JwtIssuerConfig {
    /// The prefix of this issuer's identities: `namespace`, else the issuer URL's host.
    pub fn identity_namespace(&self) -> String {
        if !self.namespace.is_empty() {
            return self.namespace.clone();
        }
        let rest = self
            .issuer
            .split_once("://")
            .map_or(self.issuer.as_str(), |(_, rest)| rest);
        rest.split(['/', ':', '?', '#'])
            .next()
            .filter(|h| !h.is_empty())
            .unwrap_or(&self.issuer)
            .to_string()
    }
}

/// One `[[access]]` rule. It matches a request when a repository pattern matches
/// `<upstream>/<repository>` and the identity is among those named; with no `users`, `groups`
/// or `anonymous`, it matches everyone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    /// Globs: `*` within one path segment, `**` across segments.
    pub repositories: Vec<String>,
    /// User names; `"*"` is any authenticated user.
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Whether the rule applies to requests without credentials.
    #[serde(default)]
    pub anonymous: bool,
    #[serde(default = "yes")]
    pub allow: bool,
}

fn yes() -> bool {
    true
}

/// One `[[prefetch]]` rule: the tags of `image` matching `tags` (a regex) or `semver` (a
/// version requirement) are pulled into the cache every `interval_secs`, before any client asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefetchRule {
    /// As `docker pull` names it: `docker.io/library/nginx`, `ghcr.io/org/app`; no registry
    /// host means the default upstream.
    pub image: String,
    /// A regular expression the whole tag is searched with (`^1\\.2[0-9]\\.`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tags: String,
    /// A semantic-version requirement (`>=1.25, <2`); tags that are no version (after an
    /// optional `v`, with missing minor/patch taken as 0) never match.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub semver: String,
    /// `os/arch[/variant]` of an index to pull; empty: every platform.
    #[serde(default)]
    pub platforms: Vec<String>,
    #[serde(default = "default_prefetch_interval")]
    pub interval_secs: u64,
    /// Also pull the images' referrers (signatures, SBOMs, attestations).
    #[serde(default)]
    pub referrers: bool,
    /// Never evict what this rule pulled (while the rule is configured).
    #[serde(default)]
    pub pin: bool,
    /// The most tags pulled per pass: the highest versions (else the last, lexically).
    #[serde(default = "default_prefetch_max_tags")]
    pub max_tags: usize,
}

fn default_prefetch_interval() -> u64 {
    3600
}

fn default_prefetch_max_tags() -> usize {
    20
}

impl AccessRule {
    /// A rule for `repositories` naming `users`, `groups` and (if `anonymous`) callers without
    /// credentials; `allow` or deny.
    pub fn new(
        repositories: &[&str],
        users: &[&str],
        groups: &[&str],
        anonymous: bool,
        allow: bool,
    ) -> AccessRule {
        let owned = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
        AccessRule {
            repositories: owned(repositories),
            users: owned(users),
            groups: owned(groups),
            anonymous,
            allow,
        }
    }
}

impl Default for JwtIssuerConfig {
    fn default() -> Self {
        JwtIssuerConfig {
            issuer: String::new(),
            audience: String::new(),
            jwks_file: PathBuf::new(),
            jwks_url: String::new(),
            allow_http_jwks: false,
            groups_claim: "groups".to_string(),
            username_claim: "sub".to_string(),
            namespace: String::new(),
            required_claims: Default::default(),
        }
    }
}

/// What clients can make one node do at once: every queue and connection count has a bound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Upstream blob downloads under way at once on this node (S3 uploads run alongside them).
    pub max_downloads: usize,
    /// Requests for cold blobs waiting for a download slot, at most; beyond it, `503` at once.
    pub download_queue: usize,
    /// Seconds a request waits for a download (or metadata fetch) slot before `503` with
    /// `Retry-After`.
    pub queue_timeout_secs: u64,
    /// Upstream fetches of manifests, tags, tag lists and referrers under way at once (each
    /// shared by every request for the same thing, and stopped when no request waits).
    pub max_metadata_fetches: usize,
    /// Requests waiting for a metadata fetch slot, at most; beyond it, `503` at once.
    pub metadata_queue: usize,
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
            max_metadata_fetches: 64,
            metadata_queue: 1024,
            negative_ttl_secs: 10,
            max_blob_mib: 100 * 1024,
            max_connections: 16_384,
            header_read_timeout_secs: 10,
            send_timeout_secs: 60,
            storage_timeout_secs: 30,
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
    /// Redirect to `<this>/<object key>` instead of a presigned URL: a CDN over the bucket
    /// that signs (or needs no) URLs of its own, e.g. a CloudFront distribution with OAC.
    pub redirect_base_url: String,
}

/// A bounded local-disk copy of warm S3 blobs on each node, sent with `sendfile`; never the
/// source of truth (deleting it loses nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HotCacheConfig {
    /// MiB of local copies at most, least recently used dropped first; 0: off.
    pub max_size_mib: u64,
    /// Where the copies live; relative paths are under `data_dir`.
    pub dir: PathBuf,
    /// How often copies of blobs deleted from S3 by another node are looked for (one listing
    /// of the bucket's blobs); the longest a node may serve a blob evicted elsewhere.
    pub check_interval_secs: u64,
}

impl Default for HotCacheConfig {
    fn default() -> Self {
        HotCacheConfig {
            max_size_mib: 0,
            dir: PathBuf::from("hot"),
            check_interval_secs: 60,
        }
    }
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
            redirect_base_url: String::new(),
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
    /// `max-age` of `404` answers for caches in front of wharf (a CDN); 0: `no-store`, like
    /// every other error.
    pub not_found_max_age_secs: u64,
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
    /// Requests to one upstream waiting for their response headers at once; further ones wait
    /// (up to `first_byte_timeout_secs`), so no flood of distinct names opens a connection each.
    pub max_concurrent_requests: usize,
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

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            tag_ttl_secs: 60,
            tags_list_ttl_secs: 30,
            memory_index_mib: 128,
            not_found_max_age_secs: 0,
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
            max_concurrent_requests: 32,
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
        let base = &self.s3.redirect_base_url;
        if !base.is_empty()
            && (!self.s3.redirect_blobs
                || !(base.starts_with("https://") || base.starts_with("http://")))
        {
            return invalid(
                "s3.redirect_base_url is an http(s):// URL and needs redirect_blobs".into(),
            );
        }
        if !base.is_empty() && (self.auth.has_mechanism() || !self.access.is_empty()) {
            // wharf cannot sign CDN URLs: anyone holding a digest would get a private blob.
            return invalid(
                "s3.redirect_base_url hands out unsigned URLs, which would bypass [auth] and [[access]]: with auth on, use presigned redirects (redirect_blobs without redirect_base_url) or none".into(),
            );
        }
        if self.cluster.enabled() {
            let advertised = self.cluster.advertised();
            if is_wildcard(advertised) {
                return invalid(
                    "cluster.advertise is needed when cluster.listen is a wildcard address".into(),
                );
            }
            let has_file = !self.cluster.secret_file.as_os_str().is_empty();
            if has_file && !self.cluster.secret.is_empty() {
                return invalid("set cluster.secret_file or cluster.secret, not both".into());
            }
            let tls = &self.cluster.tls;
            let set = |p: &Path| !p.as_os_str().is_empty();
            if set(&tls.cert_file) != set(&tls.key_file) || set(&tls.cert_file) != set(&tls.ca_file)
            {
                return invalid(
                    "cluster.tls needs cert_file, key_file and ca_file together".into(),
                );
            }
            let secured = has_file || !self.cluster.secret.is_empty() || tls.enabled();
            if !secured && !self.cluster.insecure && !self.cluster.loopback_only() {
                return invalid(format!(
                    "cluster.listen {:?} is reachable from other hosts, and the cluster port serves every cached blob and the membership: set cluster.secret_file (a shared key of at least 32 bytes, e.g. `openssl rand -hex 32`, mode 0600, on every member), or cluster.insecure = true on a network only the members reach",
                    self.cluster.listen
                ));
            }
            if self.cluster.lease_ttl_secs == 0 || self.cluster.heartbeat_ms == 0 {
                return invalid(
                    "cluster.lease_ttl_secs and cluster.heartbeat_ms must be positive".into(),
                );
            }
        }
        let l = &self.limits;
        if l.max_downloads == 0
            || l.max_metadata_fetches == 0
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
        if self.hot_cache.max_size_mib > 0 {
            if !matches!(self.storage_target()?, StorageTarget::S3 { .. }) {
                return invalid("hot_cache needs s3:// storage (local disk is hot already)".into());
            }
            if self.hot_cache.check_interval_secs == 0 {
                return invalid("hot_cache.check_interval_secs must be at least 1".into());
            }
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
        for rule in &self.prefetch {
            if rule.image.is_empty() || rule.tags.is_empty() == rule.semver.is_empty() {
                return invalid(format!(
                    "[[prefetch]] {:?}: name the image and exactly one of tags and semver",
                    rule.image
                ));
            }
            if rule.interval_secs == 0 || rule.max_tags == 0 {
                return invalid(format!(
                    "[[prefetch]] {:?}: interval_secs and max_tags must be positive",
                    rule.image
                ));
            }
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return invalid(format!("listen {:?} is not an address:port", self.listen));
        }
        self.validate_security()
    }

    /// `[tls]`, `[auth]` and `[[access]]`: complete pairs, one key source per issuer.
    fn validate_security(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let set = |p: &Path| !p.as_os_str().is_empty();
        let tls = &self.tls;
        if set(&tls.cert_file) != set(&tls.key_file) {
            return invalid("tls.cert_file and tls.key_file go together".into());
        }
        if set(&tls.client_ca_file) && !tls.enabled() {
            return invalid("tls.client_ca_file needs tls.cert_file and tls.key_file".into());
        }
        let auth = &self.auth;
        if auth.token_ttl_secs == 0 || auth.max_concurrent_hashes == 0 {
            return invalid(
                "auth.token_ttl_secs and auth.max_concurrent_hashes must be positive".into(),
            );
        }
        for jwt in &auth.jwt {
            if jwt.issuer.is_empty() || jwt.audience.is_empty() {
                return invalid("every [[auth.jwt]] needs an issuer and an audience".into());
            }
            if set(&jwt.jwks_file) != jwt.jwks_url.is_empty() {
                return invalid(format!(
                    "[[auth.jwt]] {:?}: set exactly one of jwks_file and jwks_url",
                    jwt.issuer
                ));
            }
            let jwks_transport_ok = jwt.jwks_url.is_empty()
                || jwt.jwks_url.starts_with("https://")
                || (jwt.allow_http_jwks && jwt.jwks_url.starts_with("http://"));
            if !jwks_transport_ok {
                return invalid(format!(
                    "[[auth.jwt]] {:?}: jwks_url must be https:// (anyone on the path of plain HTTP could swap the keys and sign any identity; allow_http_jwks = true accepts http:// for a test IdP)",
                    jwt.issuer
                ));
            }
        }
        for rule in &self.access {
            if rule.repositories.is_empty() {
                return invalid("every [[access]] rule names its repositories".into());
            }
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
            c.cluster.insecure = true;
            assert!(c.validate().is_ok(), "{wildcard} with advertise");
        }
        for dialable in ["10.0.0.1:6000", "[::1]:6000", "wharf-0.wharf:6000"] {
            let mut c = Config::default();
            c.cluster.listen = dialable.into();
            c.cluster.secret_file = "/run/secrets/cluster-key".into();
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
            c.upstreams[0].resolved_password(true).unwrap().as_deref(),
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
        assert_eq!(
            u.resolved_password(true).unwrap().as_deref(),
            Some("hunter2")
        );
    }

    #[test]
    fn a_secret_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile_dir("wharf-secret");
        let file = dir.join("pw");
        std::fs::write(&file, "hunter2\n").unwrap();
        let mut u = UpstreamConfig::new("r", "https://r", true);
        u.username = Some("me".into());
        u.password_file = Some(file.clone());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = u.resolved_password(false).unwrap_err().to_string();
        assert!(err.contains("other users can read it"), "{err}");
        assert!(!err.contains("hunter2"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            u.resolved_password(false).unwrap().as_deref(),
            Some("hunter2")
        );
        // Group read for wharf's own group (the file was created with it): a Kubernetes
        // secret volume with fsGroup. Group write, or world read, never.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o440)).unwrap();
        assert!(u.resolved_password(false).is_ok());
        for exposed in [0o460, 0o604, 0o620] {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(exposed)).unwrap();
            assert!(u.resolved_password(false).is_err(), "{exposed:o}");
        }
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let mut c = Config::default();
        c.upstreams[0].username = Some("robot".into());
        c.upstreams[0].password = Some("hunter2-secret".into());
        let printed = format!("{c:?} {c:#?}");
        assert!(!printed.contains("hunter2-secret"), "{printed}");
        assert!(printed.contains("robot") && printed.contains("<redacted>"));
    }

    #[test]
    fn security_sections_are_checked() {
        let mut c = Config::default();
        c.tls.cert_file = "/c.pem".into();
        assert!(c.validate().is_err(), "cert without key");
        c.tls.key_file = "/k.pem".into();
        c.validate().unwrap();
        c.auth.jwt.push(JwtIssuerConfig {
            issuer: "https://idp".into(),
            audience: "wharf".into(),
            ..JwtIssuerConfig::default()
        });
        assert!(c.validate().is_err(), "issuer without keys");
        c.auth.jwt[0].jwks_url = "http://idp/jwks".into();
        assert!(c.validate().is_err(), "keys over plain HTTP");
        c.auth.jwt[0].allow_http_jwks = true;
        c.validate().unwrap();
        c.auth.jwt[0].allow_http_jwks = false;
        c.auth.jwt[0].jwks_url = "https://idp/jwks".into();
        c.validate().unwrap();
        // A cluster port reachable from other hosts needs the key, or an explicit waiver.
        let mut clustered = Config::default();
        clustered.cluster.listen = "127.0.0.1:6000".into();
        clustered.validate().unwrap();
        clustered.cluster.listen = "[::1]:6000".into();
        clustered.validate().unwrap();
        clustered.cluster.listen = "10.0.0.5:6000".into();
        let err = clustered.validate().unwrap_err().to_string();
        assert!(err.contains("secret_file"), "{err}");
        clustered.cluster.advertise = "wharf1:6000".into();
        clustered.cluster.listen = "0.0.0.0:6000".into();
        assert!(clustered.validate().is_err());
        clustered.cluster.secret_file = "/run/secrets/cluster-key".into();
        clustered.validate().unwrap();
        clustered.cluster.secret_file = PathBuf::new();
        clustered.cluster.insecure = true;
        clustered.validate().unwrap();
        // Review #3: unsigned CDN URLs and client auth do not go together.
        let mut cdn = Config {
            storage: "s3://bucket".into(),
            ..Config::default()
        };
        cdn.s3.redirect_blobs = true;
        cdn.s3.redirect_base_url = "https://cdn.example".into();
        cdn.validate().unwrap();
        cdn.auth.htpasswd_file = "/etc/wharf/htpasswd".into();
        let err = cdn.validate().unwrap_err().to_string();
        assert!(err.contains("redirect_base_url"), "{err}");
        c.access.push(AccessRule {
            repositories: vec![],
            users: vec![],
            groups: vec![],
            anonymous: true,
            allow: true,
        });
        assert!(c.validate().is_err(), "rule without repositories");
    }

    fn tempfile_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
