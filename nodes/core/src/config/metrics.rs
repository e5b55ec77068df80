//! `[metrics]` and `[catalog]`: what the operator pages show and where, and whether
//! `/v2/_catalog` lists repositories.

use serde::{Deserialize, Serialize};

/// `GET /v2/_catalog`: the repositories this mirror holds a tag of.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// Off by default: which images a company pulls is not for every client to list.
    pub enabled: bool,
}

/// The operator's view: Prometheus metrics at `/metrics`, the status page at `/` and
/// `/status.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Record metrics. Off, `/metrics` still answers, with nothing counted.
    pub enabled: bool,
    /// A second listener for `/metrics`, `/`, `/status.json` and `/health` only, with no client
    /// authentication, to keep them off the public port (e.g. `127.0.0.1:9090`). Empty: none.
    pub listen: String,
    /// Also serve them on the main listener. With `[auth]` on, they follow the `[[access]]`
    /// rule for the repository `_wharf/status` there.
    pub main_listener: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: String::new(),
            main_listener: true,
        }
    }
}
