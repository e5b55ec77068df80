//! `wharf`: a pull-through cache for container registries.
//!
//! `wharf serve` with no arguments mirrors Docker Hub on 0.0.0.0:5000 with its cache under
//! `./wharf-data`. Flags override the config file, which overrides the defaults.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use wharf_core::config::Config;

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
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let mirror = wharf_edge::Mirror::open(&config)
        .await
        .context("starting the mirror")?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
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
