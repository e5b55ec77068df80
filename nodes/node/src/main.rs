//! `wharf`: a pull-through cache for container registries.
//!
//! `wharf serve` with no arguments mirrors Docker Hub on 0.0.0.0:5000 with its cache under
//! `./wharf-data`. Flags override `WHARF_*` variables, which override the config file
//! (`--config` or `WHARF_CONFIG`), which overrides the defaults.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format;
use wharf_core::config::Config;

use crate::log_format::{LogFormat, Style};

mod health;
mod log_format;
mod log_writer;
mod status;
mod warm;

#[derive(Parser)]
#[command(
    name = "wharf",
    version,
    about = "A pull-through cache for container registries"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry v2 read API as a mirror of the configured upstreams.
    Serve(ServeArgs),
    /// Inspect a running cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Client authentication helpers.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Pull images through a running node so they are cached (all platforms of an index, or
    /// --platform); prints progress per image and exits 0 only when all are cached.
    Warm {
        /// The node's v2 API.
        #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:5000")]
        node: String,
        /// Only this platform of multi-platform images (os/arch[/variant], e.g. linux/amd64).
        #[arg(long, value_name = "PLATFORM")]
        platform: Option<String>,
        /// HTTP Basic user for a node with [auth]; the password comes from WHARF_WARM_PASSWORD.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// Images as docker pull names them: library/nginx:1.27, ghcr.io/org/app:v2, x@sha256:...
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// Exit 0 when the local node's /health answers ok (or degraded): a container health
    /// check. The node is found from the same config, WHARF_* variables and flags as serve.
    Health {
        /// Probe this URL instead.
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// wharf TOML config (as for serve).
        #[arg(long, value_name = "FILE", env = "WHARF_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AuthCommand {
    /// Read a password from stdin and print an htpasswd line (bcrypt) for `[auth] htpasswd_file`.
    HashPassword {
        /// The user name the line is for.
        #[arg(long, default_value = "user")]
        user: String,
        /// bcrypt cost (4-31); each step doubles the work of a login.
        #[arg(long, default_value_t = 10)]
        cost: u32,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Members, leader, term, log positions and fetch leases, as one member sees them.
    Status {
        /// Any member's cluster address (its --cluster-listen / --cluster-advertise).
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:5001")]
        node: String,
        /// Print the raw status as JSON.
        #[arg(long)]
        json: bool,
        /// The config file whose `[cluster] secret_file` proves the cluster key (also
        /// `WHARF_CLUSTER__SECRET_FILE`); a secured member refuses calls without it.
        #[arg(long, value_name = "FILE", env = "WHARF_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Remove a member lost for good (it counts towards the quorum until removed). A stopped
    /// node leaves by itself; a removed node that comes back rejoins.
    Remove {
        /// Any live member's cluster address.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:5001")]
        node: String,
        /// The node id to remove (from `wharf cluster status`).
        id: u64,
        /// As for `status`: where the cluster key comes from.
        #[arg(long, value_name = "FILE", env = "WHARF_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(clap::Args, Clone)]
struct ServeArgs {
    /// Address to listen on [default: 0.0.0.0:5000].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Default upstream registry URL [default: https://registry-1.docker.io].
    /// Credentials come from WHARF_UPSTREAM_USERNAME / WHARF_UPSTREAM_PASSWORD or the config file.
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// Cache directory [default: ./wharf-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// wharf TOML config, or distribution's config.yml (by extension .yml/.yaml).
    #[arg(long, value_name = "FILE", env = "WHARF_CONFIG")]
    config: Option<PathBuf>,
    /// Where cached content lives: file://DIR or s3://BUCKET[/PREFIX] [default: --data-dir].
    #[arg(long, value_name = "URL")]
    storage: Option<String>,
    /// Path-style S3 addressing, for S3-compatible servers (Garage, MinIO, Ceph, moto).
    #[arg(long)]
    s3_path_style: bool,
    /// Join a cluster: this node's gRPC endpoint (HOST:PORT). Without --join, and with no
    /// earlier cluster state in --data-dir, the node bootstraps a new cluster.
    #[arg(long, value_name = "HOST:PORT")]
    cluster_listen: Option<String>,
    /// The address other members dial, when --cluster-listen is a wildcard [default: listen].
    #[arg(long, value_name = "HOST:PORT")]
    cluster_advertise: Option<String>,
    /// A member to join the cluster through (repeatable; any member will do).
    #[arg(long, value_name = "HOST:PORT")]
    join: Vec<String>,
    /// A second listener for /metrics, the status page and /health only, without client
    /// authentication (keep it private) [config: metrics.listen].
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => {
                Config::load(path).with_context(|| format!("loading {}", path.display()))?
            }
            None => Config::default(),
        };
        config.apply_env(|k| std::env::var(k).ok());
        for name in config
            .apply_env_settings(std::env::vars())
            .context("WHARF_* settings")?
        {
            tracing::warn!(variable = %name, "a WHARF_ variable that names no setting; ignored");
        }
        if let Some(url) = &self.upstream {
            config.set_default_upstream_url(url);
        }
        if let Some(listen) = &self.listen {
            config.listen.clone_from(listen);
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir.clone_from(dir);
        }
        if let Some(storage) = &self.storage {
            config.storage.clone_from(storage);
        }
        if self.s3_path_style {
            config.s3.path_style = true;
        }
        if let Some(listen) = &self.cluster_listen {
            config.cluster.listen.clone_from(listen);
        }
        if let Some(advertise) = &self.cluster_advertise {
            config.cluster.advertise.clone_from(advertise);
        }
        if !self.join.is_empty() {
            config.cluster.join.clone_from(&self.join);
        }
        if let Some(listen) = &self.metrics_listen {
            config.metrics.listen.clone_from(listen);
        }
        config.validate()?;
        Ok(config)
    }
}

/// Log bytes held in memory at most; past it lines are dropped and counted
/// (`wharf_log_lines_dropped_total`) rather than making requests wait for stdout.
const LOG_BUFFER_BYTES: usize = 1 << 20;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_env("WHARF_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Lines gather in memory and a thread of their own writes them to stdout in batches: no
    // runtime thread ever blocks on stdout. The guard writes what is left when main returns.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let (writer, log_buffer, _log_guard) = log_writer::start(LOG_BUFFER_BYTES, std::io::stdout())?;
    wharf_metrics::log::count_dropped_log_lines(move || log_buffer.dropped());
    // WHARF_LOG_FORMAT=json: one JSON object a line (access lines included), for log shippers.
    if std::env::var("WHARF_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        tracing_subscriber::fmt()
            .json()
            .with_writer(writer)
            .with_env_filter(filter)
            .event_format(LogFormat::new(format().json(), Style::Json))
            .init();
    } else {
        // Colours only for a terminal: container and journald logs get plain text.
        tracing_subscriber::fmt()
            .with_ansi(terminal)
            .with_writer(writer)
            .with_env_filter(filter)
            .event_format(LogFormat::new(format(), Style::Text))
            .init();
    }
    match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
        Command::Cluster(ClusterCommand::Status { node, json, config }) => {
            let (key, tls) = cluster_credentials(config.as_deref())?;
            cluster_status(&node, json, key, tls).await
        }
        Command::Auth(AuthCommand::HashPassword { user, cost }) => hash_password(&user, cost),
        Command::Warm {
            node,
            platform,
            user,
            images,
        } => {
            if warm::warm(&node, &images, platform.as_deref(), user.as_deref()).await? {
                Ok(())
            } else {
                anyhow::bail!("not every image could be cached")
            }
        }
        Command::Health { url, config } => {
            let url = match url {
                Some(url) => url,
                None => {
                    let mut loaded = match &config {
                        Some(path) => Config::load(path)
                            .with_context(|| format!("loading {}", path.display()))?,
                        None => Config::default(),
                    };
                    loaded
                        .apply_env_settings(std::env::vars())
                        .context("WHARF_* settings")?;
                    health::url_for(&loaded)
                }
            };
            let status = health::probe(&url).await?;
            println!("{status}");
            Ok(())
        }
        Command::Cluster(ClusterCommand::Remove { node, id, config }) => {
            let (key, tls) = cluster_credentials(config.as_deref())?;
            wharf_cluster::remove(&node, key, tls, id)
                .await
                .with_context(|| format!("removing node {id} through {node}"))?;
            println!("node {id} removed");
            Ok(())
        }
    }
}

fn hash_password(user: &str, cost: u32) -> anyhow::Result<()> {
    use std::io::Read;
    anyhow::ensure!(
        !user.is_empty() && !user.contains(':'),
        "the user name must be non-empty and hold no ':'"
    );
    let mut password = String::new();
    std::io::stdin()
        .take(4096)
        .read_to_string(&mut password)
        .context("reading the password from stdin")?;
    let password = password.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!password.is_empty(), "empty password on stdin");
    let hash = bcrypt::hash(password, cost).context("hashing")?;
    println!("{user}:{hash}");
    Ok(())
}

/// The cluster key and mTLS files of the config file (if any) and the environment, for the
/// admin commands.
fn cluster_credentials(
    config: Option<&std::path::Path>,
) -> anyhow::Result<(
    Option<wharf_cluster::ClusterKey>,
    Option<wharf_cluster::ClusterTls>,
)> {
    let mut loaded = match config {
        Some(path) => Config::load(path).with_context(|| format!("loading {}", path.display()))?,
        None => Config::default(),
    };
    loaded
        .apply_env_settings(std::env::vars())
        .context("WHARF_* settings")?;
    let allow = loaded.allow_world_readable_secrets;
    Ok((
        wharf_cluster::ClusterKey::load(&loaded.cluster, allow)
            .context("reading the cluster key")?,
        wharf_cluster::ClusterTls::load(&loaded.cluster.tls, allow)
            .context("reading [cluster.tls]")?,
    ))
}

async fn cluster_status(
    node: &str,
    json: bool,
    key: Option<wharf_cluster::ClusterKey>,
    tls: Option<wharf_cluster::ClusterTls>,
) -> anyhow::Result<()> {
    let status = wharf_cluster::status(node, key, tls)
        .await
        .with_context(|| format!("asking {node} for the cluster status"))?;
    if json {
        println!("{}", status::to_json(&status));
    } else {
        print!("{}", status::to_text(&status));
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let edge = wharf_edge::Edge::open(&config)
        .await
        .context("starting the mirror")?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let cluster = if config.cluster.enabled() {
        let cluster_listener = tokio::net::TcpListener::bind(&config.cluster.listen)
            .await
            .with_context(|| format!("listening on {}", config.cluster.listen))?;
        let key =
            wharf_cluster::ClusterKey::load(&config.cluster, config.allow_world_readable_secrets)
                .context("reading the cluster key")?;
        let tls = wharf_cluster::ClusterTls::load(
            &config.cluster.tls,
            config.allow_world_readable_secrets,
        )
        .context("reading [cluster.tls]")?;
        if key.is_none() && tls.is_none() && !config.cluster.loopback_only() {
            tracing::warn!(cluster_listen = %config.cluster.listen, "cluster.insecure: the cluster port takes calls from anyone who reaches it");
        }
        let cluster = wharf_cluster::Cluster::start(
            &config.cluster,
            key,
            tls,
            &config.data_dir,
            cluster_listener,
            edge.mirror.clone(),
        )
        .await
        .context("starting the cluster member")?;
        tracing::info!(node = cluster.node.id, cluster_listen = %config.cluster.listen, advertise = %config.cluster.advertised(), "cluster member started");
        Some(cluster)
    } else {
        None
    };
    let upstreams: Vec<String> = config
        .upstreams
        .iter()
        .map(|u| {
            format!(
                "{}={}{}",
                u.name,
                u.url,
                if u.default { " (default)" } else { "" }
            )
        })
        .collect();
    tracing::info!(
        listen = %listener.local_addr()?,
        data_dir = %config.data_dir.display(),
        upstreams = ?upstreams,
        "wharf serving"
    );
    watch_files(&edge, &args);
    if !config.metrics.listen.is_empty() {
        let operator = tokio::net::TcpListener::bind(&config.metrics.listen)
            .await
            .with_context(|| format!("listening on {} (metrics.listen)", config.metrics.listen))?;
        tracing::info!(metrics_listen = %operator.local_addr()?, "operator pages (metrics, status) listening");
        let edge = edge.clone();
        tokio::spawn(async move {
            if let Err(e) = wharf_edge::serve_operator(operator, edge, std::future::pending()).await
            {
                tracing::error!(error = %e, "the operator listener failed");
            }
        });
    }
    wharf_edge::serve(listener, edge, shutdown_signal()).await?;
    if let Some(cluster) = cluster {
        cluster.shutdown().await;
    }
    tracing::info!("wharf stopped");
    Ok(())
}

/// Keep certificates, htpasswd, JWKS files and the config file's access rules current: checked
/// every 2 seconds, and re-read at once on SIGHUP.
fn watch_files(edge: &std::sync::Arc<wharf_edge::Edge>, args: &ServeArgs) {
    let config_path = args.config.clone();
    let args = args.clone();
    let files = edge.watched_files();
    wharf_auth::reload::spawn_watcher(files.clone(), std::time::Duration::from_secs(2));
    let edge = edge.clone();
    tokio::spawn(async move {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP");
                return;
            }
        };
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        let mut stamp = config_path
            .as_deref()
            .and_then(wharf_auth::reload::Stamp::of);
        loop {
            let forced = tokio::select! {
                _ = hangup.recv() => true,
                _ = tick.tick() => false,
            };
            if forced {
                tracing::info!("SIGHUP: re-reading certificates, htpasswd, JWKS and access rules");
                wharf_auth::reload::reload_all(&files).await;
            }
            let Some(path) = &config_path else { continue };
            let now = wharf_auth::reload::Stamp::of(path);
            if !forced && now == stamp {
                continue;
            }
            stamp = now;
            // Built as at start-up (file, then WHARF_* variables, then the flags), so a config
            // that needs its environment or flags to validate reloads too.
            let args = args.clone();
            let loaded = tokio::task::spawn_blocking(move || args.config()).await;
            let applied = match loaded {
                Ok(Ok(config)) => edge.reload_rules(&config).map_err(anyhow::Error::from),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow::Error::from(e)),
            };
            match applied {
                Ok(()) => {
                    edge.config_reload.succeeded();
                    tracing::info!(
                        "config file re-read: access rules and groups applied (other changes need a restart)"
                    )
                }
                Err(e) => {
                    let error = format!("{e:#}");
                    edge.config_reload.failed(&error);
                    tracing::warn!(%error, "config file re-read: keeping the previous access rules")
                }
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
