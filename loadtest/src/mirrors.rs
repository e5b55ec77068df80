//! The two mirrors under test and the upstream they share.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use wharf_testkit::registry::{ProxyMode, Registry, RegistryOptions, rss_kib};
use wharf_testkit::s3::S3Server;
use wharf_testkit::{free_port, wait_until};

/// A mirror process under test.
pub enum Mirror {
    Wharf {
        child: Child,
        port: u16,
        on_s3: bool,
        tls: bool,
        _data: tempfile::TempDir,
    },
    Distribution(Registry),
}

impl Mirror {
    /// wharf on local disk, or on `bucket` of an S3 server.
    pub async fn wharf(
        bin: &Path,
        upstream_url: &str,
        s3: Option<(&S3Server, &str)>,
    ) -> anyhow::Result<Mirror> {
        Mirror::wharf_with_env(bin, upstream_url, s3, &[]).await
    }

    /// As [`Mirror::wharf`], with settings given as `WHARF_*` variables.
    pub async fn wharf_with_env(
        bin: &Path,
        upstream_url: &str,
        s3: Option<(&S3Server, &str)>,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Mirror> {
        let data = tempfile::tempdir()?;
        let port = free_port();
        let mut command = Command::new(bin);
        command
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--upstream", upstream_url])
            .arg("--data-dir")
            .arg(data.path());
        if let Some((server, bucket)) = s3 {
            command
                .args(["--storage", &format!("s3://{bucket}"), "--s3-path-style"])
                .envs(server.env());
        }
        command.envs(env.iter().copied());
        Mirror::spawn_wharf(command, port, s3.is_some(), false, "warn", data).await
    }

    /// wharf on local disk with a config file (TLS, auth), `tls` saying whether it speaks TLS,
    /// logging at `log` (`WHARF_LOG`; "info" writes an access line per request). An empty
    /// `upstream_url` leaves the upstreams to the config file.
    pub async fn wharf_configured(
        bin: &Path,
        upstream_url: &str,
        config: &Path,
        tls: bool,
        log: &str,
    ) -> anyhow::Result<Mirror> {
        let data = tempfile::tempdir()?;
        let port = free_port();
        let mut command = Command::new(bin);
        command
            .args(["serve", "--config"])
            .arg(config)
            .args(["--listen", &format!("127.0.0.1:{port}")]);
        // Empty: the config names the upstreams.
        if !upstream_url.is_empty() {
            command.args(["--upstream", upstream_url]);
        }
        command.arg("--data-dir").arg(data.path());
        Mirror::spawn_wharf(command, port, false, tls, log, data).await
    }

    async fn spawn_wharf(
        mut command: Command,
        port: u16,
        on_s3: bool,
        tls: bool,
        log: &str,
        data: tempfile::TempDir,
    ) -> anyhow::Result<Mirror> {
        let child = command
            .env("WHARF_LOG", log)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let up = wait_until(Duration::from_secs(20), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        anyhow::ensure!(up, "wharf did not start");
        Ok(Mirror::Wharf {
            child,
            port,
            on_s3,
            tls,
            _data: data,
        })
    }

    pub async fn distribution(upstream_url: &str) -> anyhow::Result<Mirror> {
        Ok(Mirror::Distribution(
            Registry::start(RegistryOptions {
                proxy: Some(ProxyMode {
                    remote_url: upstream_url.to_string(),
                    username: None,
                    password: None,
                }),
                ..RegistryOptions::default()
            })
            .await?,
        ))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Mirror::Wharf { on_s3: true, .. } => "wharf (S3)",
            Mirror::Wharf { .. } => "wharf",
            Mirror::Distribution(_) => "distribution",
        }
    }

    pub fn url(&self) -> String {
        match self {
            Mirror::Wharf { port, tls, .. } => {
                let scheme = if *tls { "https" } else { "http" };
                format!("{scheme}://127.0.0.1:{port}")
            }
            Mirror::Distribution(r) => r.url(),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        match self {
            Mirror::Wharf { child, .. } => Some(child.id()),
            Mirror::Distribution(r) => r.pid(),
        }
    }

    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid()?)
    }

    /// User + system CPU time of the process, seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        // Fields after the parenthesised command name; utime and stime are 14th and 15th.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some(ticks / 100.0)
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        if let Mirror::Wharf { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
