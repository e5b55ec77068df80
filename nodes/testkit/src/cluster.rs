//! A wharf cluster of real processes on loopback, sharing one S3 bucket: start, stop, kill,
//! restart and partition members, and read each member's `wharf cluster status`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::Context;

use crate::s3::S3Server;
use crate::{free_port, wait_until};

/// One member: its ports, data directory and process (when running).
pub struct Member {
    pub http_port: u16,
    pub cluster_port: u16,
    pub data_dir: PathBuf,
    fault_file: PathBuf,
    log: PathBuf,
    process: Option<Child>,
    /// Flags the member was first started with (`--join` for all but the first).
    join: Vec<String>,
}

impl Member {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn cluster_addr(&self) -> String {
        format!("127.0.0.1:{}", self.cluster_port)
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }
}

pub struct WharfCluster {
    binary: PathBuf,
    upstream: String,
    bucket: String,
    s3_env: Vec<(&'static str, String)>,
    /// A config file every member reads (`--config`), when the test needs one.
    config_file: Option<PathBuf>,
    /// The cluster key every member (and `wharf cluster ...`) proves, mode 0600.
    secret_file: PathBuf,
    pub members: Vec<Member>,
    /// Holds data directories and logs.
    dir: tempfile::TempDir,
}

impl WharfCluster {
    /// Start `n` members of the `wharf` at `binary`, mirroring `upstream` into `bucket` on
    /// `s3`, and wait until all are voters with one leader.
    pub async fn start(
        binary: &Path,
        n: usize,
        upstream: &str,
        s3: &S3Server,
        bucket: &str,
    ) -> anyhow::Result<WharfCluster> {
        WharfCluster::start_configured(binary, n, upstream, s3, bucket, "").await
    }

    /// As [`WharfCluster::start`], every member also reading the TOML `config` (flags win; an
    /// empty `upstream` leaves the upstreams to `config`).
    pub async fn start_configured(
        binary: &Path,
        n: usize,
        upstream: &str,
        s3: &S3Server,
        bucket: &str,
        config: &str,
    ) -> anyhow::Result<WharfCluster> {
        let dir = tempfile::tempdir()?;
        let config_file = if config.is_empty() {
            None
        } else {
            let path = dir.path().join("wharf.toml");
            std::fs::write(&path, config)?;
            Some(path)
        };
        let secret_file = dir.path().join("cluster.key");
        {
            use std::os::unix::fs::PermissionsExt;
            let secret: String = (0..64)
                .map(|i| char::from(b'a' + ((i * 7 + std::process::id() as usize) % 26) as u8))
                .collect();
            std::fs::write(&secret_file, secret)?;
            std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600))?;
        }
        let mut cluster = WharfCluster {
            secret_file,
            binary: binary.to_path_buf(),
            upstream: upstream.to_string(),
            bucket: bucket.to_string(),
            s3_env: s3.env(),
            config_file,
            members: Vec::new(),
            dir,
        };
        for i in 0..n {
            let join = match cluster.members.first() {
                Some(first) => vec![first.cluster_addr()],
                None => Vec::new(),
            };
            cluster.members.push(Member {
                http_port: free_port(),
                cluster_port: free_port(),
                data_dir: cluster.dir.path().join(format!("node{i}")),
                fault_file: cluster.dir.path().join(format!("node{i}.partitioned")),
                log: cluster.dir.path().join(format!("node{i}.log")),
                process: None,
                join,
            });
            cluster.launch(i)?;
            // The first member bootstraps before the others ask to join it.
            cluster.wait_http(i).await?;
        }
        // Members past `[cluster] max_voters` (the config's, or its default 5) learn; the rest vote.
        let max_voters = config
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("max_voters")?
                    .trim()
                    .strip_prefix('=')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(5);
        cluster
            .wait_roles(n.min(max_voters), n.saturating_sub(max_voters))
            .await?;
        Ok(cluster)
    }

    fn launch(&mut self, i: usize) -> anyhow::Result<()> {
        let member = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log)?;
        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .env("WHARF_CLUSTER__SECRET_FILE", &self.secret_file);
        if let Some(config) = &self.config_file {
            command.arg("--config").arg(config);
        }
        command
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", member.http_port));
        // No URL: the config file names the upstreams.
        if !self.upstream.is_empty() {
            command.args(["--upstream", &self.upstream]);
        }
        command
            .arg("--data-dir")
            .arg(&member.data_dir)
            .args([
                "--storage",
                &format!("s3://{}", self.bucket),
                "--s3-path-style",
            ])
            .args(["--cluster-listen", &member.cluster_addr()]);
        for join in &member.join {
            command.args(["--join", join]);
        }
        let child = command
            .envs(self.s3_env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("WHARF_CLUSTER_FAULT_FILE", &member.fault_file)
            .env(
                "WHARF_LOG",
                std::env::var("WHARF_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting wharf")?;
        self.members[i].process = Some(child);
        Ok(())
    }

    async fn wait_http(&self, i: usize) -> anyhow::Result<()> {
        let url = format!("{}/v2/", self.members[i].url());
        let up = wait_until(Duration::from_secs(30), || {
            let request = reqwest::get(url.clone());
            async move { request.await.is_ok_and(|r| r.status().is_success()) }
        })
        .await;
        anyhow::ensure!(up, "member {i} did not start; log:\n{}", self.log(i));
        Ok(())
    }

    /// Wait until every running member sees `n` voters, no learner and a leader.
    pub async fn wait_members(&self, n: usize) -> anyhow::Result<()> {
        self.wait_roles(n, 0).await
    }

    /// Wait until every running member sees `voters` voters, `learners` learners and a leader.
    pub async fn wait_roles(&self, voters: usize, learners: usize) -> anyhow::Result<()> {
        let ok = wait_until(Duration::from_secs(30), || async {
            self.running().all(|i| {
                self.status(i).is_some_and(|s| {
                    let members = s["members"].as_array().cloned().unwrap_or_default();
                    let voting = members.iter().filter(|m| m["voter"] == true).count();
                    s["leader_id"].is_u64()
                        && voting == voters
                        && members.len() - voting == learners
                })
            })
        })
        .await;
        anyhow::ensure!(
            ok,
            "cluster did not settle on {voters} voters and {learners} learners: {:?}",
            self.statuses()
        );
        Ok(())
    }

    /// Indexes of running members.
    pub fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.members.len()).filter(|i| self.members[*i].is_running())
    }

    /// The cluster key file the members share (for `wharf cluster ...` calls of a test).
    pub fn secret_file(&self) -> &Path {
        &self.secret_file
    }

    /// Resident memory of member `i`'s process, in KiB (Linux), while it runs.
    pub fn rss_kib(&self, i: usize) -> Option<u64> {
        crate::registry::rss_kib(self.members[i].process.as_ref()?.id())
    }

    /// `wharf cluster status --json` of member `i`, if it answers.
    pub fn status(&self, i: usize) -> Option<serde_json::Value> {
        let out = Command::new(&self.binary)
            .env("WHARF_CLUSTER__SECRET_FILE", &self.secret_file)
            .args(["cluster", "status", "--json", "--node"])
            .arg(self.members[i].cluster_addr())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn statuses(&self) -> Vec<Option<serde_json::Value>> {
        (0..self.members.len()).map(|i| self.status(i)).collect()
    }

    /// Member `i`'s node id.
    pub fn node_id(&self, i: usize) -> Option<u64> {
        self.status(i)?["node_id"].as_u64()
    }

    /// The index of the member whose node id is `id`.
    pub fn index_of(&self, id: u64) -> Option<usize> {
        self.running().find(|i| self.node_id(*i) == Some(id))
    }

    /// The index of the leader, as the running members agree.
    pub fn leader(&self) -> Option<usize> {
        let id = self
            .running()
            .find_map(|i| self.status(i)?["leader_id"].as_u64())?;
        self.index_of(id)
    }

    /// SIGKILL member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM member `i` (graceful: drain, leave) and wait for it to exit.
    pub async fn stop(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.members[i].process.take() {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()?;
            let exited = wait_until(Duration::from_secs(90), || {
                let done = child.try_wait().ok().flatten().is_some();
                async move { done }
            })
            .await;
            if !exited {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("member {i} did not stop on SIGTERM; log:\n{}", self.log(i));
            }
        }
        Ok(())
    }

    /// Start member `i` again with its data directory and first flags.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.launch(i)?;
        self.wait_http(i).await
    }

    /// Cut member `i` off from the other members (fault injection at the transport seam).
    pub fn partition(&self, i: usize) -> anyhow::Result<()> {
        std::fs::write(&self.members[i].fault_file, b"partitioned")?;
        Ok(())
    }

    pub fn heal(&self, i: usize) -> anyhow::Result<()> {
        std::fs::remove_file(&self.members[i].fault_file)?;
        Ok(())
    }

    /// `/health` of member `i`.
    pub async fn health(&self, i: usize) -> Option<serde_json::Value> {
        let r = reqwest::get(format!("{}/health", self.members[i].url()))
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// Member `i`'s whole log.
    pub fn full_log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log).unwrap_or_default()
    }

    /// The tail of member `i`'s log, for failure messages.
    pub fn log(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.members[i].log).unwrap_or_default();
        let wanted: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("WARN") && !l.contains("openraft"))
            .collect();
        let start = wanted.len().saturating_sub(40);
        wanted[start..].join("\n")
    }
}

impl Drop for WharfCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
