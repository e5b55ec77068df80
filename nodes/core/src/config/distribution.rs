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
