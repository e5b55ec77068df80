//! Settings from the environment, the container way: `WHARF_<KEY>` for a top-level key and
//! `WHARF_<SECTION>__<KEY>` for a key of a section (`WHARF_DATA_DIR=/data`,
//! `WHARF_S3__PATH_STYLE=true`, `WHARF_CLUSTER__JOIN=wharf-0:6000,wharf-1:6000`). They
//! override the config file and are overridden by flags. Values are parsed as the key's type
//! (booleans, integers, strings; lists comma-separated). A `WHARF_<SECTION>__<KEY>` naming no
//! setting is an error, so a typo in a section key does not pass silently; a `WHARF_<NAME>`
//! that is no top-level key is returned to the caller to warn about (such names are also used
//! by other tools, e.g. compose files' `WHARF_PORT`). The variables wharf reads otherwise
//! ([`OTHER_VARIABLES`]) are left alone. Lists of tables (`[[upstream]]`, `[[access]]`) come
//! from the config file only.

use toml::Value;

use crate::config::{Config, ConfigError};

/// `WHARF_` variables that are not settings.
pub const OTHER_VARIABLES: &[&str] = &[
    "WHARF_CONFIG",
    "WHARF_LOG",
    "WHARF_LOG_FORMAT",
    "WHARF_UPSTREAM_USERNAME",
    "WHARF_UPSTREAM_PASSWORD",
    "WHARF_COMMIT",
    "WHARF_CLUSTER_FAULT_FILE",
    "WHARF_WARM_PASSWORD",
];

/// The setting a variable name addresses: `["data_dir"]`, `["s3", "path_style"]`.
fn path_of(name: &str) -> Option<Vec<String>> {
    let rest = name.strip_prefix("WHARF_")?;
    let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    (!path.iter().any(String::is_empty) && path.len() <= 2).then_some(path)
}

/// `raw` as a value of the same type as `like`.
fn parse_like(like: &Value, raw: &str, name: &str) -> Result<Value, ConfigError> {
    let bad = |what: &str| ConfigError::Invalid(format!("{name}={raw:?}: expected {what}"));
    Ok(match like {
        Value::Boolean(_) => Value::Boolean(match raw.trim() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(bad("true or false")),
        }),
        Value::Integer(_) => Value::Integer(raw.trim().parse().map_err(|_| bad("an integer"))?),
        Value::Float(_) => Value::Float(raw.trim().parse().map_err(|_| bad("a number"))?),
        Value::Array(_) => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
        Value::Table(_) | Value::Datetime(_) => {
            return Err(bad("a key of the section, as WHARF_SECTION__KEY"));
        }
        Value::String(_) => Value::String(raw.to_string()),
    })
}

impl Config {
    /// Apply `WHARF_*` settings from `vars` (name, value) on top of this config; the
    /// `WHARF_<NAME>` variables that name no setting are returned, for a warning.
    pub fn apply_env_settings(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Vec<String>, ConfigError> {
        let mut tree = Value::try_from(&*self)
            .map_err(|e| ConfigError::Invalid(format!("config as TOML: {e}")))?;
        let mut changed = false;
        let mut ignored = Vec::new();
        for (name, raw) in vars {
            if !name.starts_with("WHARF_")
                || OTHER_VARIABLES.contains(&name.as_str())
                || name.starts_with("WHARF_TEST_")
            {
                continue;
            }
            let unknown = || ConfigError::Invalid(format!("{name}: no such setting"));
            let path = path_of(&name).ok_or_else(unknown)?;
            if path.len() == 1 && tree.get(&path[0]).is_none_or(Value::is_table) {
                ignored.push(name);
                continue;
            }
            let mut slot = &mut tree;
            for key in &path {
                slot = slot
                    .as_table_mut()
                    .and_then(|t| t.get_mut(key))
                    .ok_or_else(unknown)?;
            }
            *slot = parse_like(slot, &raw, &name)?;
            changed = true;
        }
        if changed {
            *self = tree
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        }
        Ok(ignored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn settings_of_every_type_come_from_the_environment() {
        let mut config = Config::default();
        config
            .apply_env_settings(vars(&[
                ("WHARF_DATA_DIR", "/data"),
                ("WHARF_LISTEN", "0.0.0.0:5001"),
                ("WHARF_S3__PATH_STYLE", "true"),
                ("WHARF_CACHE__TAG_TTL_SECS", "90"),
                ("WHARF_CLUSTER__JOIN", "wharf-0:6000, wharf-1:6000"),
                ("WHARF_METRICS__LISTEN", "0.0.0.0:9090"),
                ("WHARF_LOG", "debug"),
                ("WHARF_TEST_ANYTHING", "x"),
                ("HOME", "/root"),
            ]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.data_dir, std::path::PathBuf::from("/data"));
        assert_eq!(config.listen, "0.0.0.0:5001");
        assert!(config.s3.path_style);
        assert_eq!(config.cache.tag_ttl_secs, 90);
        assert_eq!(config.cluster.join, vec!["wharf-0:6000", "wharf-1:6000"]);
        assert_eq!(config.metrics.listen, "0.0.0.0:9090");
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        let mut config = Config::default();
        let ignored = config
            .apply_env_settings(vars(&[("WHARF_DATA_DIRR", "/x"), ("WHARF_S3", "x")]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            ignored,
            vec!["WHARF_DATA_DIRR", "WHARF_S3"],
            "to warn about"
        );
        assert_eq!(config, Config::default());
        for (name, value) in [
            ("WHARF_S3__PATHSTYLE", "true"),
            ("WHARF_S3__PATH_STYLE", "maybe"),
            ("WHARF_CACHE__TAG_TTL_SECS", "-x"),
            ("WHARF_", "x"),
            ("WHARF_A__B__C", "x"),
        ] {
            let mut config = Config::default();
            assert!(
                config.apply_env_settings(vars(&[(name, value)])).is_err(),
                "{name}={value}"
            );
        }
    }
}
