//! A real S3-compatible server process on loopback: moto's server mode (PyPI `moto[server]`),
//! an independent implementation of the S3 API, in-memory (a restart empties it).
//!
//! The binary is `$WHARF_TEST_MOTO_SERVER`, else `moto_server` on `PATH`; `./test.sh` installs it
//! into a virtualenv and sets the variable.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

use crate::{free_port, wait_for_http};

pub const ACCESS_KEY: &str = "wharf-test-key";
pub const SECRET_KEY: &str = "wharf-test-secret";
pub const REGION: &str = "us-east-1";

pub struct S3Server {
    pub port: u16,
    child: Option<Child>,
    _logs: tempfile::TempDir,
}

fn moto_binary() -> String {
    std::env::var("WHARF_TEST_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into())
}

impl S3Server {
    pub async fn start() -> anyhow::Result<S3Server> {
        let logs = tempfile::tempdir()?;
        let mut server = S3Server {
            port: free_port(),
            child: None,
            _logs: logs,
        };
        server.launch().await?;
        Ok(server)
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let binary = moto_binary();
        let log = std::fs::File::create(self._logs.path().join("moto.log"))?;
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!("starting {binary} (moto[server]); run the README's test command, which installs it")
            })?;
        self.child = Some(child);
        if !wait_for_http(&format!("{}/", self.url()), Duration::from_secs(30)).await {
            bail!("moto did not come up on port {}", self.port);
        }
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kill the server: S3 is down (and, moto being in-memory, empty when it comes back).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port (empty).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.launch().await
    }

    /// An SDK client with static test credentials, path-style, pointed at this server.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(self.url())
            .force_path_style(true)
            .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    pub async fn create_bucket(&self, name: &str) -> anyhow::Result<()> {
        self.client().create_bucket().bucket(name).send().await?;
        Ok(())
    }

    /// Keys of the objects in a bucket.
    pub async fn keys(&self, bucket: &str) -> anyhow::Result<Vec<String>> {
        let listed = self
            .client()
            .list_objects_v2()
            .bucket(bucket)
            .send()
            .await?;
        Ok(listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect())
    }

    /// Multipart uploads begun and neither completed nor aborted.
    pub async fn pending_uploads(&self, bucket: &str) -> anyhow::Result<usize> {
        let listed = self
            .client()
            .list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await?;
        Ok(listed.uploads().len())
    }

    /// The standard AWS environment for a process (the wharf binary) using this server.
    /// Instance metadata is switched off so nothing beyond loopback is ever asked.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.url()),
            ("AWS_REGION", REGION.into()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
