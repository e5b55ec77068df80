//! `wharf`: a pull-through cache for container registries.
//!
//! `wharf serve` with no arguments mirrors Docker Hub on 0.0.0.0:5000 with its cache under
//! `./wharf-data`. Flags override the config file, which overrides the defaults.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use wharf_core::config::Config;

mod status;

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
    },
    /// Remove a member lost for good (it counts towards the quorum until removed). A stopped
    /// node leaves by itself; a removed node that comes back rejoins.
    Remove {
        /// Any live member's cluster address.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:5001")]
        node: String,
        /// The node id to remove (from `wharf cluster status`).
        id: u64,
    },
}

#[derive(clap::Args)]
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
    #[arg(long, value_name = "FILE")]
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
        config.validate()?;
        Ok(config)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("WHARF_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
        Command::Cluster(ClusterCommand::Status { node, json }) => {
            cluster_status(&node, json).await
        }
        Command::Cluster(ClusterCommand::Remove { node, id }) => {
            wharf_cluster::remove(&node, id)
                .await
                .with_context(|| format!("removing node {id} through {node}"))?;
            println!("node {id} removed");
            Ok(())
        }
    }
}

async fn cluster_status(node: &str, json: bool) -> anyhow::Result<()> {
    let status = wharf_cluster::status(node)
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
    let mirror = wharf_edge::Mirror::open(&config)
        .await
        .context("starting the mirror")?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let cluster = if config.cluster.enabled() {
        let cluster_listener = tokio::net::TcpListener::bind(&config.cluster.listen)
            .await
            .with_context(|| format!("listening on {}", config.cluster.listen))?;
        let cluster = wharf_cluster::Cluster::start(
            &config.cluster,
            &config.data_dir,
            cluster_listener,
            mirror.clone(),
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
    wharf_edge::serve(listener, mirror, shutdown_signal()).await?;
    if let Some(cluster) = cluster {
        cluster.shutdown().await;
    }
    tracing::info!("wharf stopped");
    Ok(())
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
