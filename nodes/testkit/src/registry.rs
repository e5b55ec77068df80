//! CNCF distribution (`docker-registry`, Debian) as a real process on loopback.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::{free_port, wait_for_http};

/// How clients must authenticate to the registry.
#[derive(Clone, Debug)]
pub enum RegistryAuth {
    None,
    /// HTTP basic against an htpasswd file (bcrypt, made with `htpasswd -B`).
    Htpasswd {
        username: String,
        password: String,
    },
    /// HTTP basic for several users (each sees every repository: htpasswd has no grants).
    Users(Vec<(String, String)>),
    /// Bearer tokens from a token issuer whose certificate the registry trusts.
    Token {
        realm: String,
        service: String,
        issuer: String,
        cert_pem: PathBuf,
    },
}

#[derive(Clone, Debug)]
pub struct ProxyMode {
    pub remote_url: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

pub struct RegistryOptions {
    pub auth: RegistryAuth,
    /// Run as a pull-through cache (distribution's `proxy:` mode) of this upstream.
    pub proxy: Option<ProxyMode>,
    /// Storage root, when several registries share one (default: a private directory).
    pub root_dir: Option<PathBuf>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            auth: RegistryAuth::None,
            proxy: None,
            root_dir: None,
        }
    }
}

/// A running `docker-registry serve`. Killed on drop.
pub struct Registry {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Registry {
    pub async fn start(options: RegistryOptions) -> anyhow::Result<Registry> {
        if !crate::have_program("docker-registry") {
            bail!(
                "docker-registry is not installed (apt-get install docker-registry); run the README's test command"
            );
        }
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let config = config_yaml(dir.path(), port, &options)?;
        fs::write(dir.path().join("config.yml"), config)?;
        let mut registry = Registry {
            port,
            dir,
            child: None,
        };
        registry.launch().await?;
        Ok(registry)
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let log = |name: &str| {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join(name))
        };
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log("access.log")?)
            .stderr(log("registry.log")?)
            .spawn()
            .context("starting docker-registry")?;
        self.child = Some(child);
        if !wait_for_http(&format!("{}/v2/", self.url()), Duration::from_secs(15)).await {
            bail!(
                "docker-registry did not come up on port {}: {}",
                self.port,
                fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
            );
        }
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`, as an image reference host.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stop the process (SIGKILL): the upstream is down.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port and storage.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.launch().await
    }

    /// Lines of the access log (combined log format), one per finished request.
    pub fn access_log(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\" ") && l.contains(" HTTP/"))
            .map(str::to_string)
            .collect()
    }

    /// The registry's own log (one line per request with `auth.user.name` of whoever made it,
    /// where a login was checked).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// How many `METHOD <path>` requests the registry served, whatever their status.
    pub fn count_requests(&self, method: &str, path: &str) -> usize {
        let needle = format!("\"{method} {path} HTTP/");
        self.access_log()
            .iter()
            .filter(|l| l.contains(&needle))
            .count()
    }

    /// Body bytes the registry sent for `METHOD <path>` requests (the combined log's size
    /// field: what was written, also for a response cut short).
    pub fn bytes_sent(&self, method: &str, path: &str) -> u64 {
        let needle = format!("\"{method} {path} HTTP/");
        self.access_log()
            .iter()
            .filter_map(|l| {
                let (_, after) = l.split_once(&needle)?;
                let mut fields = after.split_once("\" ")?.1.split_whitespace();
                fields.next()?;
                fields.next()?.parse::<u64>().ok()
            })
            .sum()
    }

    /// Requests of `method` whose path contains `fragment`.
    pub fn count_matching(&self, method: &str, fragment: &str) -> usize {
        let prefix = format!("\"{method} ");
        self.access_log()
            .iter()
            .filter(|l| l.contains(&prefix) && l.contains(fragment))
            .count()
    }

    /// Resident memory of the registry process, in KiB (Linux).
    pub fn rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        rss_kib(pid)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// VmRSS of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn config_yaml(dir: &Path, port: u16, options: &RegistryOptions) -> anyhow::Result<String> {
    let mut yaml = format!(
        r#"version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  secret: wharf-test-secret
"#,
        root = options
            .root_dir
            .clone()
            .unwrap_or_else(|| dir.join("data"))
            .display()
    );
    match &options.auth {
        RegistryAuth::None => {}
        RegistryAuth::Htpasswd { .. } | RegistryAuth::Users(_) => {
            let users = match &options.auth {
                RegistryAuth::Htpasswd { username, password } => {
                    vec![(username.clone(), password.clone())]
                }
                RegistryAuth::Users(users) => users.clone(),
                _ => Vec::new(),
            };
            let mut lines = Vec::new();
            for (username, password) in &users {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", username, password])
                    .output()
                    .context("running htpasswd (apt-get install apache2-utils)")?;
                if !out.status.success() {
                    bail!("htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
                }
                lines.extend_from_slice(out.stdout.trim_ascii_end());
                lines.push(b'\n');
            }
            let file = dir.join("htpasswd");
            fs::write(&file, lines)?;
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: wharf-test\n    path: {}\n",
                file.display()
            ));
        }
        RegistryAuth::Token {
            realm,
            service,
            issuer,
            cert_pem,
        } => {
            yaml.push_str(&format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                cert_pem.display()
            ));
        }
    }
    if let Some(proxy) = &options.proxy {
        yaml.push_str(&format!("proxy:\n  remoteurl: {}\n", proxy.remote_url));
        if let (Some(u), Some(p)) = (&proxy.username, &proxy.password) {
            yaml.push_str(&format!("  username: {u}\n  password: {p}\n"));
        }
    }
    Ok(yaml)
}
