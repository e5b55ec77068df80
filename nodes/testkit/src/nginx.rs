//! Debian's nginx as a caching reverse proxy (`proxy_cache`) in front of wharf: what a CDN
//! does, on loopback, with its cache-status of every request in its access log.

use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::{free_port, wait_for_http};

pub struct NginxCache {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

const NGINX: &str = "/usr/sbin/nginx";

impl NginxCache {
    /// Cache everything `origin` (`host:port`) allows, revalidating expired entries with
    /// conditional requests, as a CDN does.
    pub async fn start(origin: &str) -> anyhow::Result<NginxCache> {
        if !std::path::Path::new(NGINX).exists() {
            bail!("nginx is not installed (apt-get install nginx); run the README's test command");
        }
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let d = dir.path().display();
        let config = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
  log_format cache '$request_method $uri $status $upstream_cache_status';
  access_log {d}/access.log cache;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  proxy_cache_path {d}/cache levels=1:2 keys_zone=wharf:4m max_size=1g inactive=1h use_temp_path=off;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://{origin};
      proxy_http_version 1.1;
      proxy_set_header Host $http_host;
      proxy_cache wharf;
      proxy_cache_revalidate on;
      proxy_cache_lock on;
      add_header X-Cache-Status $upstream_cache_status always;
    }}
  }}
}}
"#
        );
        fs::write(dir.path().join("nginx.conf"), config)?;
        let child = Command::new(NGINX)
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-p")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("stderr.log"))?)
            .spawn()
            .context("starting nginx")?;
        let nginx = NginxCache { port, dir, child };
        // Any answer (the origin's 200 for /v2/) means nginx listens.
        if !wait_for_http(&format!("{}/v2/", nginx.url()), Duration::from_secs(10)).await {
            bail!(
                "nginx did not come up: {}{}",
                fs::read_to_string(nginx.dir.path().join("stderr.log")).unwrap_or_default(),
                fs::read_to_string(nginx.dir.path().join("error.log")).unwrap_or_default()
            );
        }
        Ok(nginx)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `METHOD URI STATUS CACHE-STATUS` per request served.
    pub fn access_log(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for NginxCache {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
